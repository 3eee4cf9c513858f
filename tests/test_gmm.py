"""Tests for diffu.gmm: Gaussian-mixture densities, scores, posterior means, sampling and the exact denoiser."""

import math

import pytest
import torch

from diffu.gmm import ExactClassifier, ExactModel, GaussianMixture
from diffu.schedules import linear_schedule
from diffu.sde import VESDE, VPSDE, SubVPSDE


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _full_cov_mixture(d=2):
    """Three well-separated components with unequal (unnormalised) weights and non-isotropic covariances."""
    g = _gen(0)
    a = torch.randn(3, d, d, generator=g, dtype=torch.float64)
    covs = 0.05 * a @ a.transpose(1, 2) + 0.02 * torch.eye(d, dtype=torch.float64)
    means = torch.zeros(3, d, dtype=torch.float64)
    means[0, 0], means[1, 0], means[2, 1] = 3.0, -3.0, 3.0
    return GaussianMixture(torch.tensor([2.0, 3.0, 5.0]), means, covs)


MIXTURES = {"ring": GaussianMixture.ring, "full2d": _full_cov_mixture, "full3d": lambda: _full_cov_mixture(3)}


@pytest.mark.parametrize("name", sorted(MIXTURES))
def test_score_is_gradient_of_log_prob(name):
    gmm = MIXTURES[name]()
    x = (2 * torch.randn(40, gmm.dim, generator=_gen(1), dtype=torch.float64)).requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob(x).sum(), x)
    torch.testing.assert_close(gmm.score(x.detach()), grad, rtol=1e-10, atol=1e-10)  # float64 algebra


@pytest.mark.parametrize("name", sorted(MIXTURES))
@pytest.mark.parametrize("a,b", [(0.8, 0.6), (math.sqrt(0.1), math.sqrt(0.9)), (0.7, 1.3), (2.0, 0.5), (1.0, 50.0)])
def test_posterior_mean_is_tweedie(name, a, b):
    """E[x_0 | x] = (x + b² ∇log p_noised(x)) / a for x = a x_0 + b ε (VP-type a² + b² = 1 and general a, b)."""
    gmm = MIXTURES[name]()
    x = a * gmm.sample(40, _gen(2)).double() + b * torch.randn(40, gmm.dim, generator=_gen(3), dtype=torch.float64)
    tweedie = (x + b**2 * gmm.noised(a, b).score(x)) / a
    torch.testing.assert_close(gmm.posterior_mean(x, a, b), tweedie, rtol=1e-10, atol=1e-10)


def test_posterior_mean_limits():
    gmm = _full_cov_mixture()
    x = torch.randn(20, 2, generator=_gen(4), dtype=torch.float64)
    # no signal: the posterior mean is the prior mean Σ π_k μ_k
    prior_mean = (gmm.weights[:, None] * gmm.means).sum(0).expand(20, 2)
    torch.testing.assert_close(gmm.posterior_mean(x, 0.0, 1.0), prior_mean, rtol=1e-12, atol=1e-12)
    # almost no noise: E[x_0 | x] ≈ x / a (the shift is b²/a · score = O(1e-8) here)
    torch.testing.assert_close(gmm.posterior_mean(x, 2.0, 1e-4), x / 2.0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["ring", "full2d"])
def test_log_prob_integrates_to_one(name):
    gmm = MIXTURES[name]()
    h = 0.02
    g = torch.arange(-6.0, 6.0 + h / 2, h, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    p = gmm.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).exp()
    # Riemann sum of a smooth density with std ≥ 0.14 on a 0.02 grid is accurate to ≪ 1e-6 and the mass outside
    # [-6, 6]² is < 1e-20; tolerance 1e-4 (a missing log-det or 2π term would be off by ≥ 0.5)
    assert abs(float(p.sum()) * h * h - 1) < 1e-4


def test_full_covariance_log_prob_matches_torch():
    gmm = _full_cov_mixture(3)
    x = 3 * torch.randn(50, 3, generator=_gen(5), dtype=torch.float64)
    comps = torch.stack(
        [torch.distributions.MultivariateNormal(m, c).log_prob(x) for m, c in zip(gmm.means, gmm.covs)], 1
    )  # (N, K)
    ref = torch.logsumexp(comps + gmm.weights.log(), 1)
    torch.testing.assert_close(gmm.log_prob(x), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gmm.weights, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))


def test_noised_mixture():
    gmm = _full_cov_mixture()
    nz = gmm.noised(0.5, 2.0)
    torch.testing.assert_close(nz.means, 0.5 * gmm.means)
    torch.testing.assert_close(nz.covs, 0.25 * gmm.covs + 4.0 * torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(nz.weights, gmm.weights)


def test_sample_statistics():
    gmm = _full_cov_mixture()
    n = 4000
    x = gmm.sample(n, _gen(6))
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert torch.equal(x, gmm.sample(n, _gen(6))) and not torch.equal(x, gmm.sample(n, _gen(7)))
    comp = torch.cdist(x.double(), gmm.means).argmin(1)  # components are ≥ 4 std apart: nearest mean is exact
    for k in range(3):
        p = float(gmm.weights[k])
        frac = float((comp == k).double().mean())
        assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n)  # 4 binomial standard errors
        xk = x[comp == k].double()
        nk, cov = len(xk), gmm.covs[k]
        se_mean = (cov.diagonal() / nk).sqrt()
        assert bool(((xk.mean(0) - gmm.means[k]).abs() < 4 * se_mean).all())
        # standard error of a sample covariance entry: √((Σ_ii Σ_jj + Σ_ij²) / n_k)
        se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None] + cov**2) / nk).sqrt()
        assert bool(((torch.cov(xk.T) - cov).abs() < 4 * se_cov).all())


def test_ring_layout():
    gmm = GaussianMixture.ring(k=6, radius=3.0, std=0.5)
    assert gmm.dim == 2 and len(gmm.weights) == 6
    torch.testing.assert_close(gmm.means.norm(dim=1), torch.full((6,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(gmm.covs, 0.25 * torch.eye(2, dtype=torch.float64).expand(6, 2, 2))
    torch.testing.assert_close(gmm.weights, torch.full((6,), 1 / 6, dtype=torch.float64))


def test_gaussian_mixture_validation():
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixture(torch.ones(2), torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="weights must be"):
        GaussianMixture(torch.ones(3), torch.zeros(2, 2), 1.0)
    for w in ([1.0, 0.0], [1.0, -1.0]):
        with pytest.raises(ValueError, match="weights must be"):
            GaussianMixture(torch.tensor(w), torch.zeros(2, 2), 1.0)
    with pytest.raises(ValueError, match="covs must have shape"):
        GaussianMixture(torch.ones(2), torch.zeros(2, 2), torch.eye(3).expand(2, 3, 3))
    for std in (0.0, torch.tensor([0.1, -0.1])):
        with pytest.raises(ValueError, match="standard deviations"):
            GaussianMixture(torch.ones(2), torch.zeros(2, 2), std)
    # a covariance that is not positive definite is rejected (by the Cholesky factorisation)
    with pytest.raises((ValueError, torch.linalg.LinAlgError)):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]))


def test_gaussian_mixture_std_count_mismatch():
    """K = 8 components but 3 isotropic standard deviations: a bad shape, so ValueError (CONTRIBUTING.md, 8)."""
    with pytest.raises(ValueError, match="standard deviations|covs"):
        GaussianMixture(torch.ones(8), torch.zeros(8, 2), torch.ones(3))


# ----------------------------------------------------------------------------------------------------------------
# ExactModel
# ----------------------------------------------------------------------------------------------------------------


def test_exact_model_needs_exactly_one_time_convention():
    gmm = GaussianMixture.ring()
    s = linear_schedule()
    for kw in ({}, dict(schedule=s, sde=VPSDE()), dict(sde=VPSDE(), flow_sigma_min=0.0), dict(schedule=s,
               flow_sigma_min=0.1), dict(schedule=s, sde=VPSDE(), flow_sigma_min=0.0)):  # fmt: skip
        with pytest.raises(ValueError, match="exactly one"):
            ExactModel(gmm, **kw)
    assert ExactModel(gmm, flow_sigma_min=0.0).prediction == "velocity"
    assert ExactModel(gmm, schedule=s).prediction == "eps" and ExactModel(gmm, sde=VPSDE()).prediction == "eps"


# Times (and σ_min) exactly representable in float32: ExactModel.coefficients builds its time tensor in float32, so
# other values carry a ~1e-7 relative error (pinned separately in test_exact_model_coefficients_are_float64). With
# representable inputs everything is float64 algebra: measured max error 2e-14 on ε of size ~2; tolerance 1e-12.
F64 = dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t", [0.125, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_exact_model_sde_eps_is_scaled_score(sde, t):
    gmm = _full_cov_mixture()
    s, std = (float(v) for v in sde.marginal_coefficients(t))
    x = s * gmm.sample(30, _gen(8)).double() + std * torch.randn(30, 2, generator=_gen(9), dtype=torch.float64)
    eps = ExactModel(gmm, sde=sde)(x, torch.full((30,), t, dtype=torch.float64))
    torch.testing.assert_close(eps, -std * gmm.noised(s, std).score(x), **F64)  # ε̂ = -σ ∇log p_t(x)
    torch.testing.assert_close(ExactModel(gmm, sde=sde).x0_hat(x, t), gmm.posterior_mean(x, s, std), **F64)


@pytest.mark.parametrize("t", [0, 10, 500, 999])
def test_exact_model_schedule_eps_is_scaled_score(t):
    gmm = GaussianMixture.ring()
    sched = linear_schedule()
    ab = float(sched.alpha_bar[t])
    a, b = math.sqrt(ab), math.sqrt(1 - ab)
    x = a * gmm.sample(30, _gen(10)).double() + b * torch.randn(30, 2, generator=_gen(11), dtype=torch.float64)
    eps = ExactModel(gmm, schedule=sched)(x, torch.full((30,), float(t), dtype=torch.float64))
    torch.testing.assert_close(eps, -b * gmm.noised(a, b).score(x), **F64)


@pytest.mark.parametrize("sigma_min", [0.0, 0.25])
@pytest.mark.parametrize("t", [0.0, 0.125, 0.5, 0.875, 1.0])
def test_exact_model_velocity(sigma_min, t):
    gmm = _full_cov_mixture()
    a, b = 1 - t, sigma_min + (1 - sigma_min) * t
    x = a * gmm.sample(30, _gen(12)).double() + b * torch.randn(30, 2, generator=_gen(13), dtype=torch.float64)
    v = ExactModel(gmm, flow_sigma_min=sigma_min)(x, torch.full((30,), t, dtype=torch.float64))
    # v* = c E[ε | x] - E[x_0 | x] with E[ε | x] = -b ∇log p_t(x), c = 1 - σ_min
    ref = -(1 - sigma_min) * b * gmm.noised(a, b).score(x) - gmm.posterior_mean(x, a, b)
    torch.testing.assert_close(v, ref, **F64)


def test_exact_model_coefficients_are_float64():
    """ExactModel is the float64 reference the samplers are measured against, so its noise coefficients must be
    float64 too: at t = 0.3, σ_min = 0.1 or a fractional index 123.4 (not representable in float32) the ε /
    velocity must still match the closed form to 1e-12 (measured today: 1e-7 … 4e-7)."""
    gmm = _full_cov_mixture()
    x = torch.randn(30, 2, generator=_gen(15), dtype=torch.float64)
    t = torch.full((30,), 0.3, dtype=torch.float64)
    s, std = (float(v) for v in VPSDE().marginal_coefficients(0.3))
    torch.testing.assert_close(ExactModel(gmm, sde=VPSDE())(x, t), -std * gmm.noised(s, std).score(x), **F64)
    a, b = 0.7, 0.1 + 0.9 * 0.3
    ref = -0.9 * b * gmm.noised(a, b).score(x) - gmm.posterior_mean(x, a, b)
    torch.testing.assert_close(ExactModel(gmm, flow_sigma_min=0.1)(x, t), ref, **F64)
    sched = linear_schedule()
    ab = float(sched.interp_alpha_bar(torch.tensor(123.4, dtype=torch.float64)))
    a, b = math.sqrt(ab), math.sqrt(1 - ab)
    eps = ExactModel(gmm, schedule=sched)(x, torch.full((30,), 123.4, dtype=torch.float64))
    torch.testing.assert_close(eps, -b * gmm.noised(a, b).score(x), **F64)


def test_exact_model_mixed_times_per_sample():
    """Each sample is processed at its own time: a batch with mixed t equals the per-time evaluations."""
    gmm = GaussianMixture.ring()
    m = ExactModel(gmm, sde=VPSDE())
    x = torch.randn(6, 2, generator=_gen(14), dtype=torch.float64)
    t = torch.tensor([0.25, 0.5, 0.25, 0.75, 0.5, 0.25], dtype=torch.float64)
    out = m(x, t)
    for tv in (0.25, 0.5, 0.75):
        k = t == tv
        torch.testing.assert_close(out[k], m(x[k], torch.full((int(k.sum()),), tv, dtype=torch.float64)))
    assert m(x.float(), t.float()).dtype == torch.float32


def test_exact_classifier_guidance_is_bayes_rule_on_scores():
    """ε_uncond − √(1−ᾱ) ∇log p(k | x_t) equals the ε of component k alone, exactly (chapter §2.3)."""
    from diffu.gmm import ExactClassifier
    from diffu.guidance import ClassifierGuidance
    from diffu.schedules import linear_schedule

    s = linear_schedule()
    gmm = GaussianMixture.ring(8)
    model, clf = ExactModel(gmm, schedule=s), ExactClassifier(gmm, s)
    x = 2 * torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t in (0.0, 250.0, 900.0):
        tt = torch.full((6,), t, dtype=torch.float64)
        logp = clf(x, tt)
        torch.testing.assert_close(logp.exp().sum(1), torch.ones(6, dtype=torch.float64))
        guided = model(x, tt) - (1 - s.interp_alpha_bar(torch.tensor(t)).double()).sqrt() * ClassifierGuidance(
            clf, 1.0, y=3
        )(x, tt)
        alone = ExactModel(GaussianMixture(torch.ones(1), gmm.means[3:4], 0.2), schedule=s)(x, tt)
        torch.testing.assert_close(guided, alone, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# Bad input (CONTRIBUTING.md, convention 8): each error names the argument
# ----------------------------------------------------------------------------------------------------------------


def test_gaussian_mixture_refuses_nonfinite_and_asymmetric_parameters():
    nan, inf = float("nan"), float("inf")
    # NaN weights passed the "> 0" test (NaN compares false) and gave NaN densities
    with pytest.raises(ValueError, match="weights must be 2 finite positive numbers"):
        GaussianMixture([1.0, nan], torch.zeros(2, 2), 1.0)
    with pytest.raises(ValueError, match="means must be finite"):
        GaussianMixture([1.0], [[nan, 0.0]], 1.0)
    with pytest.raises(ValueError, match=r"means must have shape \(K, D\) with K, D >= 1"):
        GaussianMixture([], torch.zeros(0, 2), 1.0)
    for std in (nan, inf):
        with pytest.raises(ValueError, match="covs: standard deviations must be finite and > 0"):
            GaussianMixture([1.0], [[0.0, 0.0]], std)
    with pytest.raises(ValueError, match="covs must be finite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, nan], [nan, 1.0]]])
    # Cholesky reads only the lower triangle: an asymmetric "covariance" was silently replaced by another matrix
    with pytest.raises(ValueError, match="covs must be symmetric"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="covs must be positive definite, component 0 is not"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(TypeError, match="weights must be real numbers"):
        GaussianMixture("a", [[0.0, 0.0]], 1.0)


def test_gaussian_mixture_methods_bad_input():
    gmm = GaussianMixture.ring()
    for kw, match in ((dict(k=0), "k must be an integer >= 1"), (dict(std=0.0), "std must be a finite number > 0"),
                      (dict(radius=float("nan")), "radius must be a finite number >= 0")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            GaussianMixture.ring(**kw)
    for n in (0, 2.5):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            gmm.sample(n)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        gmm.sample(3, 1)
    with pytest.raises(ValueError, match="b must be a finite number >= 0"):
        gmm.noised(1.0, float("nan"))
    with pytest.raises(ValueError, match="a and b must not both be 0"):
        gmm.posterior(torch.zeros(2, 2), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\), got \(2, 3\)"):
        gmm.log_prob(torch.zeros(2, 3))
    for fn in (gmm.log_prob, gmm.score, gmm.component_log_posterior):
        with pytest.raises(ValueError, match="x must be a floating-point tensor"):  # score was cast back to int
            fn(torch.zeros(2, 2, dtype=torch.long))
    x = torch.zeros(3, 2, dtype=torch.float64)
    x[1, 0] = float("nan")
    lp = gmm.log_prob(x)  # documented: NaN stays in its row
    assert torch.isnan(lp[1]) and bool(torch.isfinite(lp[[0, 2]]).all())


def test_exact_models_bad_input():
    gmm = GaussianMixture.ring()
    s = linear_schedule()
    with pytest.raises(TypeError, match="gmm must be a diffu.gmm.GaussianMixture"):
        ExactModel(None, sde=VPSDE())
    with pytest.raises(TypeError, match="sde must be a diffu.sde.SDE"):
        ExactModel(gmm, sde=s)
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        ExactModel(gmm, schedule=VPSDE())
    with pytest.raises(ValueError, match=r"flow_sigma_min must be a finite number in \[0, 1\)"):
        ExactModel(gmm, flow_sigma_min=1.0)
    m = ExactModel(gmm, sde=VPSDE())
    x = torch.zeros(4, 2)
    # t of another batch size failed inside torch.expand
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\), got shape \(3,\)"):
        m(x, torch.full((3,), 0.5))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\)"):
        m(torch.zeros(4, 3), torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="t must lie in"):
        m(x, torch.full((4,), 2.0))
    with pytest.raises(TypeError, match="t must be a finite number"):
        m.coefficients("a")
    with pytest.raises(ValueError, match="t must be a finite number"):
        m.x0_hat(x, float("nan"))
    clf = ExactClassifier(gmm, s)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\)"):
        clf(x, torch.full((3,), 10.0))
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        ExactClassifier(gmm, VPSDE())
