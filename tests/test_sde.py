"""Tests for diffu.sde and diffu.sde_samplers (one file: they share their fixtures): marginals against simulation,
validation, determinism, exactness relations, convergence with the exact score of a Gaussian mixture, and the
PF-ODE likelihood."""

import math

import pytest
import torch

from diffu import sde as S
from diffu import sde_samplers as SS
from diffu.gmm import ExactModel, GaussianMixture
from diffu.metrics import mmd
from diffu.nn import MLPDenoiser
from diffu.samplers import Trajectory, ddim
from diffu.schedules import linear_schedule

SDE_CLASSES = [S.VPSDE, S.SubVPSDE, S.VESDE]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def gmm():
    return GaussianMixture.ring()


@pytest.fixture(scope="module")
def sched():
    return linear_schedule()


# ----------------------------------------------------------------------------------------------------------------
# Marginals
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", SDE_CLASSES)
def test_marginals_match_euler_maruyama_simulation(cls):
    """Simulate the *forward* SDE with the library's drift/diffusion and compare with marginal_coefficients."""
    sde = cls()
    n, k = 4000, 1000
    x0 = torch.tensor([1.5, -1.0], dtype=torch.float64)
    g = _gen(0)
    s0, std0 = sde.marginal_coefficients(0.0)  # VE's kernel has std σ_min at t = 0: start from that law
    x = s0 * x0 + std0 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    dt = 1.0 / k
    checked = 0
    for i in range(k):
        f, gg = sde.drift_diffusion(x, i * dt)
        x = x + f * dt + gg * math.sqrt(dt) * torch.randn(n, 2, generator=g, dtype=torch.float64)
        if i + 1 in (300, 700, 1000):
            s, std = (float(v) for v in sde.marginal_coefficients((i + 1) * dt))
            # Tolerance: 4 Monte-Carlo standard errors (σ/√n for the mean, σ/√(2n) for the std); the Euler bias at
            # 1000 steps is < 2 % of s(t)·x0 and of σ, well inside that (measured |z| ≤ 1.7 over all cases).
            # Confusing VP with sub-VP (std 0.78 vs 0.60 at t = 0.3) would be off by ~20 standard errors.
            se_mean, se_std = std / math.sqrt(n), std / math.sqrt(2 * n)
            assert (x.mean(0) - s * x0).abs().max() < 4 * se_mean
            assert (x.std(0) - std).abs().max() < 4 * se_std
            checked += 1
    assert checked == 3


def test_subvp_std_below_vp_and_vp_preserves_variance():
    t = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)[1:]
    s_vp, std_vp = S.VPSDE().marginal_coefficients(t)
    s_sub, std_sub = S.SubVPSDE().marginal_coefficients(t)
    torch.testing.assert_close(s_vp, s_sub, rtol=0, atol=0)  # same drift → same mean coefficient
    assert bool((std_sub < std_vp).all())
    torch.testing.assert_close(std_vp**2 + s_vp**2, torch.ones_like(t), rtol=0, atol=1e-12)
    # at t = 0 both start from the data exactly
    assert float(S.VPSDE().marginal_coefficients(0.0)[1]) == 0.0


def test_ve_prior_and_coefficients():
    ve = S.VESDE(sigma_min=0.01, sigma_max=50.0)
    assert ve.prior_std == 50.0
    s, std = ve.marginal_coefficients(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(s, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(std, torch.tensor([0.01, math.sqrt(0.01 * 50.0), 50.0], dtype=torch.float64))
    assert S.VPSDE().prior_std == 1.0 and S.SubVPSDE().prior_std == 1.0
    z = ve.prior_sample((4000, 2), generator=_gen(1), dtype=torch.float64)
    assert abs(float(z.std()) - 50.0) < 4 * 50.0 / math.sqrt(2 * 8000)  # 4 standard errors of the std
    # prior_logp is the N(0, 50² I) log density
    ref = torch.distributions.Normal(0.0, torch.tensor(50.0, dtype=torch.float64)).log_prob(z[:5]).sum(1)
    torch.testing.assert_close(ve.prior_logp(z[:5]), ref, rtol=1e-12, atol=1e-12)


def test_make_sde():
    assert isinstance(S.make_sde("vp"), S.VPSDE) and type(S.make_sde("subvp")) is S.SubVPSDE
    ve = S.make_sde("ve", sigma_max=10.0)
    assert isinstance(ve, S.VESDE) and ve.sigma_max == 10.0


def test_vpsde_from_linear_schedule(sched):
    vp = S.VPSDE.from_schedule(sched)
    assert vp.beta_min == pytest.approx(0.1, rel=1e-12) and vp.beta_max == pytest.approx(20.0, rel=1e-12)
    i = torch.arange(sched.T)
    log_c = vp.alpha_bar((i + 1).double() / sched.T).log()
    log_d = sched.alpha_bar.log()
    diff = (log_c - log_d).abs()
    # log ᾱ_discrete = Σ log(1 - β_j) = -Σ β_j - Σ β_j²/2 - …; the continuous ᾱ keeps only the first term, so they
    # drift apart by ≈ Σ β_j²/2 ≈ 0.067 at i = T-1 (measured max 0.0677). Early on (i < 300) that term is small
    # and the grids differ slightly (β_j = β(j/(T-1))/T vs t = (i+1)/T): measured max 1.05e-3, bound 1.5e-3.
    # Absolute ᾱ differences: measured max 8e-4, bound 1e-3.
    assert float(diff.max()) < 0.075
    assert float(diff[:300].max()) < 1.5e-3
    assert float((log_c.exp() - sched.alpha_bar).abs().max()) < 1e-3


@pytest.mark.parametrize("cls", SDE_CLASSES)
def test_dtype_follows_input(cls):
    """CONTRIBUTING.md, convention 6: float32 in → float32 out, also for per-sample (N,) times."""
    sde = cls()
    x = torch.randn(6, 2)
    t = torch.rand(6, generator=_gen(0))
    f, g = sde.drift_diffusion(x, t)
    assert f.dtype == torch.float32 and g.dtype == torch.float32, (f.dtype, g.dtype)
    s, std = sde.marginal_coefficients(t, x)
    assert s.dtype == torch.float32 and std.shape == (6, 1)
    assert sde.q_sample(x, t, x).dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", SDE_CLASSES)
@pytest.mark.parametrize("t", [1.5, -0.1, float("nan")])
def test_time_outside_unit_interval(cls, t):
    with pytest.raises(ValueError, match="t must lie in"):
        cls().marginal_coefficients(t)
    with pytest.raises(ValueError, match="t must lie in"):
        cls().drift_diffusion(torch.zeros(2, 2), torch.tensor([0.5, t]))


@pytest.mark.parametrize("steps", [0, -1, 2.5, True])
def test_bad_steps(gmm, sched, steps):
    vp = S.VPSDE()
    m = ExactModel(gmm, sde=vp)
    x = torch.zeros(2, 2)
    for fn in (SS.euler_maruyama, SS.predictor_corrector, SS.pf_ode):
        with pytest.raises(ValueError, match="steps must be"):
            fn(m, x, vp, steps=steps, progress=False)
    with pytest.raises(ValueError, match="steps must be"):
        SS.pf_ode_sigma(ExactModel(gmm, schedule=sched), x, sched, steps=steps, progress=False)


@pytest.mark.parametrize("t_min", [0.0, 1.0, -0.5])
def test_bad_t_min(gmm, t_min):
    vp = S.VPSDE()
    m = ExactModel(gmm, sde=vp)
    for fn in (SS.euler_maruyama, SS.predictor_corrector, SS.pf_ode):
        with pytest.raises(ValueError, match="t_min must be"):
            fn(m, torch.zeros(2, 2), vp, steps=2, t_min=t_min, progress=False)
    with pytest.raises(ValueError, match="t_min must be"):
        SS.log_likelihood(m, torch.zeros(2, 2), vp, t_min=t_min)


def test_bad_pc_and_solver_arguments(gmm, sched):
    vp = S.VPSDE()
    m = ExactModel(gmm, sde=vp)
    x = torch.zeros(2, 2)
    for snr in (0.0, -0.1):
        with pytest.raises(ValueError, match="snr must be"):
            SS.predictor_corrector(m, x, vp, steps=2, snr=snr, progress=False)
    for cs in (-1, 1.5):
        with pytest.raises(ValueError, match="corrector_steps must be"):
            SS.predictor_corrector(m, x, vp, steps=2, corrector_steps=cs, progress=False)
    with pytest.raises(ValueError, match="solver must be"):
        SS.pf_ode(m, x, vp, steps=2, solver="rk4", progress=False)
    with pytest.raises(ValueError, match="solver must be"):
        SS.pf_ode_sigma(ExactModel(gmm, schedule=sched), x, sched, steps=2, solver="rk45", progress=False)
    with pytest.raises(ValueError, match="name must be one of"):
        S.make_sde("vpsde")


def test_bad_sde_parameters():
    with pytest.raises(ValueError, match="beta_min"):
        S.VPSDE(beta_min=20.0, beta_max=0.1)
    with pytest.raises(ValueError, match="beta_min"):
        S.SubVPSDE(beta_min=0.0)
    with pytest.raises(ValueError, match="sigma_min"):
        S.VESDE(sigma_min=1.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        S.VESDE(sigma_min=50.0, sigma_max=0.01)
    with pytest.raises(ValueError, match="sigma_min"):
        S.VESDE(sigma_min=0.0)


def test_bad_log_likelihood_arguments(gmm):
    vp = S.VPSDE()
    m = ExactModel(gmm, sde=vp)
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="trace must be"):
        SS.log_likelihood(m, x, vp, trace="skilling")
    for probes in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="probes must be"):
            SS.log_likelihood(m, x, vp, probes=probes)


@pytest.mark.parametrize("t", [-1.5, 999.5, 1000, float("nan")])
def test_interp_alpha_bar_range(sched, t):
    with pytest.raises(ValueError, match="t must lie in"):
        sched.interp_alpha_bar(torch.tensor([0.0, t]))


# ----------------------------------------------------------------------------------------------------------------
# Determinism and finiteness of every sampler
# ----------------------------------------------------------------------------------------------------------------

STOCHASTIC = {"euler_maruyama", "predictor_corrector"}
SAMPLERS = ["euler_maruyama", "predictor_corrector", "pf_ode_euler", "pf_ode_heun", "pf_ode_sigma"]


def _sample(name, model, x, seed, callback=None, sched=None, steps=20):
    kw = dict(steps=steps, generator=_gen(seed), progress=False, callback=callback)
    if name == "euler_maruyama":
        return SS.euler_maruyama(model, x, S.VPSDE(), **kw)
    if name == "predictor_corrector":
        return SS.predictor_corrector(model, x, S.VPSDE(), **kw)
    if name in ("pf_ode_euler", "pf_ode_heun"):
        return SS.pf_ode(model, x, S.VPSDE(), solver=name.split("_")[-1], **kw)
    return SS.pf_ode_sigma(model, x, sched, solver="heun", **kw)


def _model(kind, name, gmm, sched):
    if kind == "exact":
        return ExactModel(gmm, schedule=sched) if name == "pf_ode_sigma" else ExactModel(gmm, sde=S.VPSDE())
    torch.manual_seed(0)  # the test (not the library) seeds the untrained weights
    # continuous t ∈ [0, 1] needs time_scale=1000; pf_ode_sigma queries integer timesteps 0 … 999 (time_scale 1)
    return MLPDenoiser(hidden=32, depth=2, time_scale=1.0 if name == "pf_ode_sigma" else 1000.0)


@pytest.mark.parametrize("kind", ["exact", "mlp"])
@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_determinism_and_finite_trajectory(gmm, sched, name, kind):
    model = _model(kind, name, gmm, sched)
    x = torch.randn(64, 2, generator=_gen(10))
    traj = Trajectory()
    a = _sample(name, model, x, 0, callback=traj, sched=sched)
    b = _sample(name, model, x, 0, sched=sched)
    c = _sample(name, model, x, 1, sched=sched)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)  # same generator seed → bit-identical
    if name in STOCHASTIC:
        assert not torch.allclose(a, c)  # a different seed changes the injected noise
    else:
        assert torch.equal(a, c)  # ODE samplers given x_T use no randomness
    # a shape instead of x_T: the generator draws x_T, so seeds matter for every sampler
    d = _sample(name, model, (64, 2), 2, sched=sched)
    e = _sample(name, model, (64, 2), 2, sched=sched)
    f = _sample(name, model, (64, 2), 3, sched=sched)
    assert torch.equal(d, e) and not torch.allclose(d, f)
    assert len(traj) == 20
    for xs, x0s in zip(traj.xs, traj.x0s):
        assert bool(torch.isfinite(xs).all()) and bool(torch.isfinite(x0s).all())
    assert bool(torch.isfinite(a).all())


def test_pc_without_corrector_is_euler_maruyama(gmm):
    """With corrector_steps=0 the PC loop draws exactly the predictor's noise: it must equal EM bit for bit."""
    vp = S.VPSDE()
    m = ExactModel(gmm, sde=vp)
    a = SS.predictor_corrector(m, (64, 2), vp, steps=15, corrector_steps=0, generator=_gen(4), progress=False)
    b = SS.euler_maruyama(m, (64, 2), vp, steps=15, generator=_gen(4), progress=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("cls", SDE_CLASSES)
def test_samplers_start_from_the_prior(gmm, cls):
    """A shape draws x_1 ~ N(0, prior_std² I). Observed through one mean-only EM step with a zero score model."""
    sde = cls()

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    x = SS.euler_maruyama(Zero(), (4000, 1), sde, steps=1, generator=_gen(5), progress=False)
    # with score 0 the single step is x_1 + f(x_1, 1) Δt, Δt = t_min - 1: a factor 1 + ½β(1)(1 - t_min) for VP and
    # sub-VP, 1 for VE (f = 0)
    f, _ = sde.drift_diffusion(torch.ones(1, 1, dtype=torch.float64), 1.0)
    scale = sde.prior_std * (1 + float(f) * (1e-3 - 1.0))
    assert abs(float(x.std()) / scale - 1) < 4 / math.sqrt(2 * 4000)  # 4 standard errors of a std estimate


# ----------------------------------------------------------------------------------------------------------------
# Exactness relations
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("steps", [10, 50])
def test_pf_ode_sigma_euler_is_ddim(gmm, sched, steps, dtype, tol):
    m = ExactModel(gmm, schedule=sched)
    x = torch.randn(64, 2, generator=_gen(1), dtype=dtype)
    a = SS.pf_ode_sigma(m, x, sched, steps=steps, solver="euler", progress=False)
    b = ddim(m, x, sched, steps=steps, eta=0.0, progress=False)
    # the two are algebraically identical (x̄ = x/√ᾱ): only rounding differs (measured 2.7e-6 f32, 1.3e-14 f64)
    assert a.dtype == dtype
    assert float((a - b).abs().max()) <= tol


def test_pf_ode_rk45_agrees_with_sigma_heun(gmm, sched):
    """The continuous VP PF-ODE (RK45, exact continuous score) and the σ-parameterised Heun sampler on the exact
    discrete model solve the same ODE up to the endpoints: they start at ᾱ = 4.32e-5 vs 4.04e-5 and end at
    t_min = 1e-3 vs σ = 0, so they cannot agree exactly. Measured max |Δ| (samples of scale ~2): Heun-50 0.026,
    Heun-100 0.0076, Heun-200 0.0019. Tolerance 5e-3 at 200 steps; 50 steps must be visibly worse (convergence)."""
    vp = S.VPSDE()
    x = torch.randn(64, 2, generator=_gen(2), dtype=torch.float64)
    ref, nfe = SS.pf_ode(ExactModel(gmm, sde=vp), x, vp, solver="rk45", t_min=1e-3, return_nfe=True, progress=False)
    assert nfe > 20
    m = ExactModel(gmm, schedule=sched)
    d200 = float((SS.pf_ode_sigma(m, x, sched, steps=200, solver="heun", progress=False) - ref).abs().max())
    d50 = float((SS.pf_ode_sigma(m, x, sched, steps=50, solver="heun", progress=False) - ref).abs().max())
    assert d200 < 5e-3
    assert d50 > 2 * d200


@pytest.mark.parametrize("cls", SDE_CLASSES)
def test_from_discrete_index_inverts_interp_alpha_bar(sched, cls):
    sde = cls()
    fd = S.FromDiscrete(ExactModel(GaussianMixture.ring(), schedule=sched), sched, sde)
    t = torch.tensor([1e-3, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0], dtype=torch.float64)
    idx = fd.index(t)
    assert bool(((idx > -1) & (idx < sched.T - 1)).all())  # all inside the trained range for the defaults
    assert bool((idx[1:] > idx[:-1]).all())  # more noise → larger index
    # linear interpolation of log ᾱ is inverted exactly (up to float64 rounding)
    torch.testing.assert_close(sched.interp_alpha_bar(idx), sde.alpha_bar(t), rtol=1e-12, atol=0)


def test_from_discrete_index_clamps_outside_trained_range(sched):
    net = ExactModel(GaussianMixture.ring(), schedule=sched)  # index() never calls it; FromDiscrete needs a model
    fd = S.FromDiscrete(net, sched, S.VESDE(sigma_max=1000.0))  # ᾱ(1) = 1e-6 < ᾱ_{T-1} = 4.0e-5
    assert float(fd.index(torch.tensor(1.0, dtype=torch.float64))) == sched.T - 1
    fd = S.FromDiscrete(net, sched, S.VPSDE())
    assert float(fd.index(torch.tensor(0.0, dtype=torch.float64))) == -1.0  # ᾱ = 1: the clean end


@pytest.mark.parametrize("cls", SDE_CLASSES)
def test_from_discrete_equals_continuous_exact_model(gmm, sched, cls):
    """FromDiscrete(exact discrete model) = exact continuous model: the index inversion is exact, so the only error
    is rounding. Tolerance 1e-10 in float64 (measured ≤ 5e-12 with ExactModel's float64 coefficients)."""
    sde = cls()
    fd = S.FromDiscrete(ExactModel(gmm, schedule=sched), sched, sde)
    ex = ExactModel(gmm, sde=sde)
    x0 = gmm.sample(50, _gen(3)).double()
    noise = torch.randn(50, 2, generator=_gen(4), dtype=torch.float64)
    for t in (1e-3, 0.05, 0.3, 0.5, 0.8, 1.0):
        tt = torch.full((50,), t, dtype=torch.float64)
        x = sde.q_sample(x0, tt, noise)
        torch.testing.assert_close(fd(x, tt), ex(x, tt), rtol=1e-10, atol=1e-10)


def test_interp_alpha_bar_exact_at_integers_and_monotone(sched):
    t = torch.arange(sched.T, dtype=torch.float64)
    torch.testing.assert_close(sched.interp_alpha_bar(t), sched.alpha_bar, rtol=1e-14, atol=0)
    assert float(sched.interp_alpha_bar(torch.tensor(-1.0))) == 1.0
    grid = torch.linspace(-1, sched.T - 1, 20001, dtype=torch.float64)
    ab = sched.interp_alpha_bar(grid)
    assert bool((ab[1:] < ab[:-1]).all())  # strictly decreasing (every β > 0)
    # between integers log ᾱ is linear: the midpoint is the geometric mean of its neighbours
    mid = sched.interp_alpha_bar(torch.tensor([-0.5, 0.5, 498.5, 998.5], dtype=torch.float64))
    ext = torch.cat([torch.ones(1, dtype=torch.float64), sched.alpha_bar])  # index -1 … T-1
    geo = (ext[[0, 1, 499, 999]] * ext[[1, 2, 500, 1000]]).sqrt()
    torch.testing.assert_close(mid, geo, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# Convergence with the exact score
# ----------------------------------------------------------------------------------------------------------------

N_MMD = 2000
# MMD² (unbiased, diffu.metrics.mmd) against 2000 fresh ring samples. Measured: two independent ring samples
# -0.0010 (the noise floor is ±0.0015); ring with std 0.25 instead of 0.2: 0.0028; std 0.3 or radius 1.9: 0.011;
# pure N(0, I) noise: 0.44; converged samplers: |MMD²| ≤ 0.0017 over two seeds. Bound 0.004 leaves ~2.5× the
# noise floor and still rejects a 50 % too wide ring; the ratio to the noise MMD must be below 1 %.
MMD_BOUND = 0.004


@pytest.fixture(scope="module")
def ring_ref(gmm):
    ref = gmm.sample(N_MMD, _gen(100))
    noise_mmd = float(mmd(torch.randn(N_MMD, 2, generator=_gen(102)), ref))
    assert noise_mmd > 0.3
    return ref, noise_mmd


@pytest.mark.parametrize("name,steps", [("em", 200), ("pc", 100), ("pf_heun", 20)])
def test_sde_samplers_converge_with_exact_score(gmm, ring_ref, name, steps):
    ref, noise_mmd = ring_ref
    vp = S.VPSDE()
    m = ExactModel(gmm, sde=vp)
    kw = dict(steps=steps, generator=_gen(0), progress=False)
    if name == "em":
        x = SS.euler_maruyama(m, (N_MMD, 2), vp, **kw)
    elif name == "pc":
        x = SS.predictor_corrector(m, (N_MMD, 2), vp, **kw)
    else:
        x = SS.pf_ode(m, (N_MMD, 2), vp, solver="heun", **kw)
    d = float(mmd(x, ref))
    assert d < MMD_BOUND, d
    assert d / noise_mmd < 0.01


# PC vs EM at equal predictor steps (mean MMD² over seeds, measured): VP 10 steps EM 0.0033 / PC 0.0040, 20 steps
# 0.031 / 0.034, 50 steps both at the noise floor; VE 10 steps EM 0.074 / PC 0.064, ≥ 20 steps both at the floor.
# The corrector does not reliably help with the exact score, so no test asserts that it does.


# ----------------------------------------------------------------------------------------------------------------
# Likelihood
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ll_setup(gmm):
    vp = S.VPSDE()
    x = gmm.sample(30, _gen(7)).double()
    s, std = (float(v) for v in vp.marginal_coefficients(1e-3))
    return ExactModel(gmm, sde=vp), x, vp, gmm.noised(s, std).log_prob(x)


def test_log_likelihood_exact_trace(ll_setup):
    m, x, vp, ref = ll_setup
    ll = SS.log_likelihood(m, x, vp, t_min=1e-3, trace="exact")
    assert ll.shape == (30,) and ll.dtype == torch.float64
    # RK45 with rtol = atol = 1e-5 on a divergence integral of size ~10 nats, and the prior N(0, I) vs the true
    # p_1 (ᾱ(1) = 4e-5) differ by ~1e-4 nats: measured max error 1.2e-4. Tolerance 1e-3 nats.
    assert float((ll - ref).abs().max()) < 1e-3


def test_log_likelihood_hutchinson(ll_setup):
    m, x, vp, ref = ll_setup

    def run(seed, probes):
        return SS.log_likelihood(m, x, vp, t_min=1e-3, trace="hutchinson", probes=probes, generator=_gen(seed))

    a, b, c = run(0, 8), run(0, 8), run(1, 8)
    assert torch.equal(a, b) and not torch.allclose(a, c)  # fixed probes per generator
    err = torch.stack([a, c]) - ref
    # Measured with 8 probes: per-point error std 0.28–0.34 nats, mean over 30 points -0.021 … 0.011 (seeds 0–2).
    # The estimator is unbiased, so the mean over 60 estimates must lie within 4 standard errors ≈ 4·0.34/√60.
    assert float(err.std()) < 0.6
    assert abs(float(err.mean())) < 4 * 0.34 / math.sqrt(60)
    # variance falls as 1/probes: one probe must be clearly noisier than eight (expected ratio √8 ≈ 2.8)
    assert float((run(0, 1) - ref).std()) > 1.5 * float((a - ref).std())


# ----------------------------------------------------------------------------------------------------------------
# Bad input and the numerical bugs of issue 18 (CONTRIBUTING.md, convention 8): each error names the argument
# ----------------------------------------------------------------------------------------------------------------


class _Zero(torch.nn.Module):
    def forward(self, x, t):
        return torch.zeros_like(x)


@pytest.mark.parametrize("cls", SDE_CLASSES)
def test_regression_pc_zero_score_gives_no_nan(cls):
    """A score that is exactly zero made the Langevin step ε = 2α(snr ‖z‖/‖∇‖)² infinite and the output all-NaN.
    Now the corrector takes no step there (no direction to move along), and the predictor still runs."""
    sde = cls()
    x = SS.predictor_corrector(_Zero(), (64, 2), sde, steps=5, generator=_gen(0), progress=False)
    assert bool(torch.isfinite(x).all())
    # the Langevin step itself leaves the state unchanged for a zero score
    x_1 = torch.randn(64, 2, generator=_gen(1), dtype=torch.float64)
    z = torch.randn(64, 2, generator=_gen(2), dtype=torch.float64)
    x = SS.langevin_step(sde, x_1, 0.5, torch.zeros_like(x_1), z, 0.16)
    assert torch.equal(x, x_1)


def test_langevin_step_is_the_official_step_for_a_nonzero_score():
    """ε = 2 α (snr ‖z‖ / ‖∇‖)² with per-sample norms averaged over the batch (Song et al.'s LangevinCorrector),
    bit for bit — also when only some rows have a zero score."""
    sde = S.VPSDE()
    x = torch.randn(8, 3, generator=_gen(3), dtype=torch.float64)
    score = torch.randn(8, 3, generator=_gen(4), dtype=torch.float64)
    score[2] = 0.0
    z = torch.randn(8, 3, generator=_gen(5), dtype=torch.float64)
    g_norm, z_norm = score.norm(dim=-1).mean(), z.norm(dim=-1).mean()
    step = 2 * 0.9 * (0.16 * z_norm / g_norm) ** 2
    ref = x + step * score + (2 * step).sqrt() * z
    assert torch.equal(SS.langevin_step(sde, x, 0.5, score, z, 0.16, 0.9), ref)


def test_regression_vpsde_q_sample_shape_mismatch():
    """VPSDE.q_sample broadcast a (1, D) noise over the batch (one draw for every sample) and (N,) times of another
    batch size inside torch."""
    vp = S.VPSDE()
    x0 = torch.randn(4, 2, generator=_gen(6))
    with pytest.raises(ValueError, match=r"noise must have x0's shape \(4, 2\), got \(1, 2\)"):
        vp.q_sample(x0, 0.5, x0[:1])
    for t in (torch.rand(3, generator=_gen(7)), torch.rand(4, 1, generator=_gen(7))):
        with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\) \(one per sample of x\)"):
            vp.q_sample(x0, t, x0)
        with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\)"):
            vp.drift_diffusion(x0, t)
    with pytest.raises(ValueError, match="x0 must be a floating-point tensor"):
        vp.q_sample(x0.long(), 0.5, x0)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        vp.drift_diffusion(x0.long(), 0.5)


def test_regression_sde_parameters_not_finite():
    """VPSDE(beta_max=inf) and NaN parameters were accepted (NaN and inf marginals later)."""
    for cls in (S.VPSDE, S.SubVPSDE):
        for bad in (float("inf"), float("nan")):
            with pytest.raises(ValueError, match="beta_max must be a finite number > 0"):
                cls(beta_max=bad)
            with pytest.raises(ValueError, match="beta_min must be a finite number > 0"):
                cls(beta_min=bad)
        with pytest.raises(TypeError, match="beta_min must be a finite number"):
            cls(beta_min="0.1")
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="sigma_max must be a finite number > 0"):
            S.VESDE(sigma_max=bad)
        with pytest.raises(ValueError, match="sigma_min must be a finite number > 0"):
            S.VESDE(sigma_min=bad)
    with pytest.raises(ValueError, match="name must be one of"):
        S.make_sde(3)


def test_regression_solve_adaptive_end_time_not_finite():
    """solve_adaptive with a NaN or infinite end time never returned (scipy stepped forever)."""
    from diffu.ode import solve_adaptive

    x = torch.ones(3, 2, dtype=torch.float64)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="t1 must be a finite number"):
            solve_adaptive(lambda x, t: -x, x, 0.0, bad)
        with pytest.raises(ValueError, match="t0 must be a finite number"):
            solve_adaptive(lambda x, t: -x, x, bad, 1.0)
    # a drift with NaN made scipy shrink the step without end: refused at the first evaluation
    with pytest.raises(ValueError, match="f returned NaN or infinity at t = 0"):
        solve_adaptive(lambda x, t: x * float("nan"), x, 0.0, 1.0)
    # and every run has an evaluation budget
    with pytest.raises(RuntimeError, match="did not reach t1 = 1 from t0 = 0 within max_nfe = 5 evaluations"):
        solve_adaptive(lambda x, t: -x, x, 0.0, 1.0, max_nfe=5)
    out, nfe = solve_adaptive(lambda x, t: -x, x, 0.0, 1.0)
    torch.testing.assert_close(out, x * math.exp(-1), rtol=1e-4, atol=0)  # RK45 at rtol = atol = 1e-5
    assert nfe < 100


def test_ode_solvers_bad_input():
    from diffu.ode import integrate, solve_adaptive

    x = torch.ones(3, 2)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        solve_adaptive(lambda x, t: -x, x.long(), 0.0, 1.0)
    with pytest.raises(ValueError, match="x must be finite"):
        solve_adaptive(lambda x, t: -x, x * float("nan"), 0.0, 1.0)
    for name in ("rtol", "atol"):
        with pytest.raises(ValueError, match=f"{name} must be a finite number > 0"):
            solve_adaptive(lambda x, t: -x, x, 0.0, 1.0, **{name: 0.0})
    with pytest.raises(ValueError, match="max_nfe must be an integer >= 1"):
        solve_adaptive(lambda x, t: -x, x, 0.0, 1.0, max_nfe=0)
    with pytest.raises(TypeError, match="f must be callable"):
        solve_adaptive(1, x, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"f must return dx/dt as a tensor of x's shape \(3, 2\)"):
        solve_adaptive(lambda x, t: x[:1], x, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"ts\[i\] must be a finite number"):
        integrate(lambda x, t: (-x, x), x, [1.0, float("nan")], progress=False)
    with pytest.raises(TypeError, match="ts must be a sequence of times"):
        integrate(lambda x, t: (-x, x), x, 5, progress=False)
    # a tensor returned where the pair (dx/dt, x0_hat) is expected would be unpacked along its batch dimension
    with pytest.raises(ValueError, match=r"f must return a pair \(dx/dt, x0_hat\), got Tensor"):
        integrate(lambda x, t: -x, torch.ones(2, 2), [1.0, 0.0], progress=False)
    with pytest.raises(ValueError, match="solver must be one of"):
        integrate(lambda x, t: (-x, x), x, [1.0, 0.0], solver="rk4", progress=False)
    with pytest.raises(TypeError, match="callback must be callable"):
        integrate(lambda x, t: (-x, x), x, [1.0, 0.0], callback=3, progress=False)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        integrate(lambda x, t: (-x, x), x.long(), [1.0, 0.0], progress=False)


def test_regression_sampler_numbers_not_finite(gmm, sched):
    """NaN/inf/negative numbers reached the samplers: snr = inf gave an infinite Langevin step, t_min = nan an
    all-NaN grid, rtol/atol <= 0 a scipy error."""
    vp = S.VPSDE()
    m = ExactModel(gmm, sde=vp)
    x = torch.zeros(2, 2)
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="snr must be a finite number > 0"):
            SS.predictor_corrector(m, x, vp, steps=2, snr=bad, progress=False)
        with pytest.raises(ValueError, match=r"t_min must be a finite number in \(0, 1\)"):
            SS.euler_maruyama(m, x, vp, steps=2, t_min=bad, progress=False)
        for name in ("rtol", "atol"):
            with pytest.raises(ValueError, match=f"{name} must be a finite number > 0"):
                SS.pf_ode(m, x, vp, solver="rk45", progress=False, **{name: bad})
            with pytest.raises(ValueError, match=f"{name} must be a finite number > 0"):
                SS.log_likelihood(m, x, vp, **{name: bad})
        with pytest.raises(ValueError, match="rho must be a finite number > 0"):
            SS.karras_timesteps(sched, 5, bad)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        SS.euler_maruyama(m, x, vp, steps=-1, progress=False)


def test_sde_samplers_shared_arguments(gmm, sched):
    vp = S.VPSDE()
    m = ExactModel(gmm, sde=vp)
    x = torch.zeros(2, 2)
    for fn in (SS.euler_maruyama, SS.predictor_corrector, SS.pf_ode):
        with pytest.raises(TypeError, match="generator must be a torch.Generator"):
            fn(m, (2, 2), vp, steps=2, generator=1, progress=False)
        with pytest.raises(TypeError, match="sde must be a diffu.sde.SDE"):
            fn(m, x, sched, steps=2, progress=False)
        with pytest.raises(ValueError, match="x_1 must be a floating-point tensor"):
            fn(m, x.long(), vp, steps=2, progress=False)
        with pytest.raises(ValueError, match="x_1 must be finite"):
            fn(m, x * float("nan"), vp, steps=2, progress=False)
        with pytest.raises(TypeError, match="callback must be callable"):
            fn(m, x, vp, steps=2, callback="traj", progress=False)
    with pytest.raises(TypeError, match="return_nfe must be True or False"):
        SS.pf_ode(m, x, vp, steps=2, return_nfe=1, progress=False)
    ms = ExactModel(gmm, schedule=sched)
    with pytest.raises(ValueError, match="spacing must be one of"):
        SS.pf_ode_sigma(ms, x, sched, steps=2, spacing="quadratic", progress=False)
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        SS.pf_ode_sigma(ms, x, vp, steps=2, progress=False)
    with pytest.raises(ValueError, match="x_T must be a floating-point tensor"):
        SS.pf_ode_sigma(ms, x.long(), sched, steps=2, progress=False)
    for bad in (x * float("nan"), x.long()):
        with pytest.raises(ValueError, match="x must be"):
            SS.log_likelihood(m, bad, vp)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        SS.log_likelihood(m, x, vp, generator=1)


def test_one_step_functions_bad_input():
    vp = S.VPSDE()
    x = torch.randn(4, 2, generator=_gen(8))
    with pytest.raises(ValueError, match="dt must be a finite number < 0"):
        SS.em_step(vp, x, 0.5, 0.1, x, x)
    with pytest.raises(ValueError, match=r"score must have x's shape \(4, 2\)"):
        SS.em_step(vp, x, 0.5, -0.1, x[:1], x)
    with pytest.raises(ValueError, match=r"noise must have x's shape \(4, 2\)"):
        SS.em_step(vp, x, 0.5, -0.1, x, x[:1])
    with pytest.raises(ValueError, match=r"t must be a finite number in \[0, 1\]"):
        SS.em_step(vp, x, 1.5, -0.1, x, x)
    with pytest.raises(ValueError, match=r"noise must have x's shape"):
        SS.langevin_step(vp, x, 0.5, x, x[:1], 0.16)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        SS.langevin_step(vp, x, 0.5, x, x, 0.16, -1.0)
    with pytest.raises(TypeError, match="sde must be a diffu.sde.SDE"):
        SS.langevin_step(None, x, 0.5, x, x, 0.16)


def test_sde_methods_and_models_bad_input(gmm, sched):
    vp = S.VPSDE()
    x = torch.randn(4, 2, generator=_gen(9))
    for bad in ("a", True, None, torch.tensor([True])):
        with pytest.raises(TypeError, match="t must be a real number or a real tensor"):
            vp.marginal_coefficients(bad)
    with pytest.raises(ValueError, match="shape must be a tuple of positive ints"):
        vp.prior_sample((0, 2))
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        vp.prior_sample((2, 2), generator=1)
    with pytest.raises(ValueError, match="dtype must be a floating-point torch.dtype"):
        vp.prior_sample((2, 2), dtype=torch.int64)
    with pytest.raises(ValueError, match="device meta differs from the generator's device cpu"):
        vp.prior_sample((2, 2), device="meta", generator=_gen(0))
    with pytest.raises(ValueError, match="z must be a floating-point tensor"):
        vp.prior_logp(x.long())
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        S.VPSDE.from_schedule(vp)
    m = ExactModel(gmm, sde=vp)
    with pytest.raises(TypeError, match="model must be callable"):
        S.FromDiscrete(None, sched, vp)
    with pytest.raises(TypeError, match="sde must be a diffu.sde.SDE"):
        S.FromDiscrete(m, sched, sched)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\)"):
        S.FromDiscrete(ExactModel(gmm, schedule=sched), sched, vp)(x, torch.rand(3, generator=_gen(0)))
    with pytest.raises(TypeError, match="t must be a finite number"):
        S.model_score(m, x, torch.rand(4), vp)
    with pytest.raises(ValueError, match=r"t must be a finite number in \[0, 1\]"):
        S.model_score(m, x, 2.0, vp)
    with pytest.raises(ValueError, match="model.prediction must be 'eps', 'score' or 'x0'"):
        S.model_score(ExactModel(gmm, flow_sigma_min=0.0), x, 0.5, vp)
    with pytest.raises(ValueError, match=r"model must return a tensor of x's shape \(4, 2\), got \(1, 2\)"):
        S.model_score(lambda x, t: x[:1], x, 0.5, vp)
    with pytest.raises(TypeError, match="model_kwargs must be a dict"):
        S.model_score(m, x, 0.5, vp, model_kwargs=[1])


def test_dsm_loss_bad_input(gmm):
    vp = S.VPSDE()
    m = ExactModel(gmm, sde=vp)
    x = torch.randn(4, 2, generator=_gen(10))
    # t = 0 has σ = 0 for VP: ε is not identifiable there, so t_min must be > 0
    for bad in (0.0, 1.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"t_min must be a finite number in \(0, 1\)"):
            S.dsm_loss(m, vp, x, t_min=bad)
    with pytest.raises(ValueError, match="x0 must be finite"):
        S.dsm_loss(m, vp, x * float("nan"))
    with pytest.raises(ValueError, match="x0 must be a floating-point tensor"):
        S.dsm_loss(m, vp, x.long())
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        S.dsm_loss(m, vp, x, generator=5)
    # a (1, D) output would be broadcast against the (N, D) noise by the loss
    with pytest.raises(ValueError, match=r"model must return a tensor of x's shape \(4, 2\)"):
        S.dsm_loss(lambda x, t: x[:1], vp, x)
    with pytest.raises(ValueError, match="dsm_loss trains 'eps' or 'score' models"):
        S.dsm_loss(ExactModel(gmm, flow_sigma_min=0.0), vp, x)
