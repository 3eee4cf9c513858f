"""Properties of the noise schedules, the forward processes and the parameterisation conversions of diffu.schedules,
diffu.sde and diffu.flow, for schedules, times and tensors drawn by Hypothesis.

Tolerances: everything is float64. A conversion divides by √ᾱ or √(1 − ᾱ) (by ``a_t``, ``b_t`` or ``c a_t + b_t``
for flows), which amplifies the unit roundoff 1.1e-16 by at most their inverse; a round trip is checked to 1e-10
times that amplification and the norms of the tensors involved, so only a wrong formula (an O(1) error) can fail.
"""

from __future__ import annotations

import math

import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

from diffu import flow
from diffu.gmm import ExactModel, GaussianMixture
from diffu.schedules import PREDICTIONS, Schedule, make_schedule
from diffu.sde import VESDE, VPSDE, SubVPSDE

SEEDS = st.integers(0, 2**31 - 1)
REL = 1e-10  # see the module docstring
BETA = st.floats(1e-6, 0.999, exclude_max=True)  # any valid β of a constructor


@st.composite
def schedules(draw, max_T: int = 1000, realistic: bool = True) -> Schedule:
    """A named schedule with arbitrary valid parameters, or a custom one from random betas in (0, 1).

    ``realistic`` keeps the betas below ``1 − exp(−30 / T)``, so that ᾱ_{T−1} stays above ~1e-13 and a conversion
    amplifies rounding by at most ~1e7 (see the module docstring); without it ᾱ may underflow (the property of
    :func:`test_schedules_never_reach_alpha_bar_zero`)."""
    kind = draw(st.sampled_from(["linear", "scaled_linear", "sigmoid", "cosine", "custom"]))
    T = draw(st.integers(1, 60 if kind == "custom" else max_T))
    beta = st.floats(1e-6, min(0.999, -math.expm1(-30 / T)) if realistic else 0.999, exclude_max=True)
    if kind == "custom":
        return Schedule(torch.tensor(draw(st.lists(beta, min_size=T, max_size=T)), dtype=torch.float64))
    if kind == "cosine":
        return make_schedule("cosine", T, s=draw(st.floats(0, 0.5)), max_beta=draw(beta))
    return make_schedule(kind, T, beta_start=draw(beta), beta_end=draw(beta))


def randn(seed: int, shape) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


SHAPES = st.lists(st.integers(1, 4), min_size=1, max_size=4)


def close(a: torch.Tensor, b: torch.Tensor, scale: float) -> bool:
    """``‖a − b‖ <= rel · scale``, the difference divided by ``scale`` first (a norm of values near 1e200 would
    overflow); a zero scale asks for equality."""
    if scale == 0:
        return torch.equal(a, b)
    return float(((a - b) / scale).norm()) <= REL


# ----------------------------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------------------------


@given(schedules(max_T=100, realistic=False))  # 100 steps of β < 0.999 keep ᾱ above 1e-300 (underflow: next test)
def test_alpha_bar_is_decreasing_in_the_unit_interval(sched):
    """0 < ᾱ_t <= 1, strictly decreasing in t; ᾱ_{-1} = 1 (the clean end, CONTRIBUTING.md convention 2) and
    ``alpha_bar_prev[t] = alpha_bar_at(t − 1)``; the posterior variance lies in [0, β_t]."""
    ab = sched.alpha_bar
    assert bool(((ab > 0) & (ab <= 1)).all()) and bool((ab[1:] < ab[:-1]).all())
    assert float(sched.alpha_bar_at(-1)) == 1.0
    t = torch.arange(sched.T)
    assert torch.equal(sched.alpha_bar_at(t - 1), sched.alpha_bar_prev)
    assert torch.equal(sched.alpha_bar_at(t), sched.alpha_bar)
    pv = sched.posterior_variance
    assert bool(((pv >= 0) & (pv <= sched.betas * (1 + 1e-12))).all())


@example(kind="linear", T=1100, a=0.5, b=0.5)  # ᾱ underflowed to 0 from t = 1074: x̂_0 = inf (issue 18)
@given(st.sampled_from(["linear", "scaled_linear", "sigmoid", "cosine"]), st.integers(1, 2000), BETA, BETA)
def test_schedules_never_reach_alpha_bar_zero(kind, T, a, b):
    """Every valid constructor argument gives a schedule with ᾱ_{T−1} > 0 in float64, so that
    x̂_0 = (x_t − √(1−ᾱ) ε)/√ᾱ is finite at every step a sampler visits — or a ValueError (a schedule whose ᾱ
    underflows to 0 is refused, not built)."""
    kw = dict(s=a, max_beta=b) if kind == "cosine" else dict(beta_start=a, beta_end=b)
    try:
        sched = make_schedule(kind, T, **kw)
    except ValueError:
        return
    assert float(sched.alpha_bar[-1]) > 0
    x = torch.ones(1, 2, dtype=torch.float64)
    assert torch.isfinite(sched.eps_to_x0(x, x, sched.T - 1)).all()


@given(schedules(max_T=200), st.data())
def test_interp_alpha_bar_is_exact_at_integers_and_monotone(sched, data):
    t = torch.tensor(data.draw(st.lists(st.integers(-1, sched.T - 1), min_size=1, max_size=8)))
    assert torch.allclose(sched.interp_alpha_bar(t.double()), sched.alpha_bar_at(t), rtol=1e-12, atol=0)
    u = torch.tensor(sorted(data.draw(st.lists(st.floats(-1, sched.T - 1), min_size=2, max_size=8))))
    ab = sched.interp_alpha_bar(u)
    assert bool((ab[1:] <= ab[:-1]).all()) and bool(((ab > 0) & (ab <= 1)).all())


@given(schedules(max_T=200), st.data())
def test_respacing_keeps_the_alpha_bar_values(sched, data):
    ts = sorted(set(data.draw(st.lists(st.integers(0, sched.T - 1), min_size=1, max_size=10))))
    sub = sched.respace(ts)
    assert sub.T == len(ts)
    # β' = 1 − ᾱ_i/ᾱ_{i−1} and back: each factor 1 − β' is off by one rounding, so ᾱ' by at most len(ts) roundings
    assert torch.allclose(sub.alpha_bar, sched.alpha_bar[ts], rtol=1e-12, atol=4.4e-16 * len(ts))


# ----------------------------------------------------------------------------------------------------------------
# Discrete conversions and the forward process
# ----------------------------------------------------------------------------------------------------------------


@st.composite
def states(draw):
    """``(schedule, t, a, b)``: a schedule, a timestep (scalar, or one per sample) and two random tensors ``(N, …)``."""
    sched = draw(schedules(max_T=1000))
    shape = draw(SHAPES)
    if draw(st.booleans()):
        t = draw(st.integers(0, sched.T - 1))
    else:
        t = torch.tensor(draw(st.lists(st.integers(0, sched.T - 1), min_size=shape[0], max_size=shape[0])))
    seed = draw(SEEDS)
    scale = draw(st.floats(1e-3, 1e3))
    return sched, t, scale * randn(seed, shape), scale * randn(seed + 1, shape)


def amplification(sched: Schedule, t) -> float:
    """How much a conversion and its inverse amplify rounding: ``1 / (√ᾱ √(1 − ᾱ))`` (≈ 2 mid-schedule)."""
    ab = sched.alpha_bar[torch.as_tensor(t)]
    return float((1 / (ab.sqrt() * (1 - ab).sqrt())).max())


@given(states())
def test_eps_x0_v_score_round_trips(state):
    """ε → x̂_0 → ε, ε → v → ε, ε → score → ε, and from_eps/to_eps for every prediction, are identities."""
    sched, t, eps, x_t = state
    scale = amplification(sched, t) * (float(eps.norm()) + float(x_t.norm()))
    assert close(sched.x0_to_eps(sched.eps_to_x0(eps, x_t, t), x_t, t), eps, scale)
    assert close(sched.v_to_eps(sched.eps_to_v(eps, x_t, t), x_t, t), eps, scale)
    assert close(sched.score_to_eps(sched.eps_to_score(eps, x_t, t), x_t, t), eps, scale)
    for p in PREDICTIONS:
        out = sched.from_eps(eps, x_t, t, p)
        assert out.shape == eps.shape and out.dtype == eps.dtype
        assert close(sched.to_eps(out, x_t, t, p), eps, scale), p


@given(states())
def test_conversions_agree_with_the_forward_process(state):
    """For x_t = √ᾱ x_0 + √(1−ᾱ) ε (q_sample): eps_to_x0 recovers x_0, x0_to_eps recovers ε, and
    v = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho 2022)."""
    sched, t, x0, eps = state
    x_t = sched.q_sample(x0, t, eps)
    ab = sched.at("alpha_bar", t, x_t)
    scale = amplification(sched, t) * (float(eps.norm()) + float(x0.norm()))
    assert close(sched.eps_to_x0(eps, x_t, t), x0, scale)
    assert close(sched.x0_to_eps(x0, x_t, t), eps, scale)
    assert close(sched.eps_to_v(eps, x_t, t), ab.sqrt() * eps - (1 - ab).sqrt() * x0, scale)


@given(states())
def test_q_sample_mean_and_variance(state):
    """q_sample is linear in (x_0, ε) with coefficients √ᾱ_t and √(1−ᾱ_t): its mean (ε = 0) is √ᾱ x_0, its noise
    part (x_0 = 0) is √(1−ᾱ) ε, and the two squared coefficients add up to 1 (variance preserving)."""
    sched, t, x0, eps = state
    zero = torch.zeros_like(x0)
    mean, noise = sched.q_sample(x0, t, zero), sched.q_sample(zero, t, eps)
    ab = sched.at("alpha_bar", t, x0)
    assert close(mean, ab.sqrt() * x0, float(x0.norm())) and close(noise, (1 - ab).sqrt() * eps, float(eps.norm()))
    assert close(sched.q_sample(x0, t, eps), mean + noise, float(x0.norm() + eps.norm()))
    one = torch.ones_like(x0)
    assert close(sched.q_sample(one, t, zero) ** 2 + sched.q_sample(zero, t, one) ** 2, one, float(one.norm()))


@given(states())
def test_posterior_is_consistent_with_the_marginals(state):
    """μ̃_t(x_t, x_0) = c1 x_0 + c2 x_t; a noise-free x_t = √ᾱ_t x_0 gives the mean √ᾱ_{t−1} x_0 (c1 + c2 √ᾱ_t =
    √ᾱ_{t−1}) and the total variance adds up, c2² (1 − ᾱ_t) + β̃_t = 1 − ᾱ_{t−1}; the conversions never modify
    their inputs."""
    sched, t, x0, x_t = state
    before = (x0.clone(), x_t.clone())
    mean, var, logvar = sched.q_posterior(x0, x_t, t)
    c1, c2 = sched.at("posterior_mean_coef1", t, x0), sched.at("posterior_mean_coef2", t, x0)
    ab, ab_prev = sched.at("alpha_bar", t, x0), sched.at("alpha_bar_prev", t, x0)
    assert torch.allclose(c1 + c2 * ab.sqrt(), ab_prev.sqrt(), rtol=1e-10, atol=0)
    assert torch.allclose(c2**2 * (1 - ab) + var, 1 - ab_prev, rtol=1e-10, atol=1e-300)
    assert close(mean, c1 * x0 + c2 * x_t, float(x0.norm() + x_t.norm()))
    assert bool((var >= 0).all()) and bool(torch.isfinite(logvar).all())
    for p in PREDICTIONS:
        sched.to_eps(x0, x_t, t, p)
        sched.from_eps(x0, x_t, t, p)
    assert torch.equal(x0, before[0]) and torch.equal(x_t, before[1])


# ----------------------------------------------------------------------------------------------------------------
# SDEs
# ----------------------------------------------------------------------------------------------------------------


@st.composite
def sdes(draw):
    kind = draw(st.sampled_from(["vp", "subvp", "ve"]))
    if kind == "ve":
        lo = draw(st.floats(1e-3, 10))
        return VESDE(lo, lo * draw(st.floats(1.01, 1e4)))
    lo = draw(st.floats(1e-3, 5))
    hi = lo + draw(st.floats(0, 30))
    return (VPSDE if kind == "vp" else SubVPSDE)(lo, hi)


@given(sdes(), st.lists(st.floats(0, 1), min_size=2, max_size=10), SEEDS)
def test_sde_marginals(sde, times, seed):
    """s(t) ∈ (0, 1], σ(t) >= 0 increasing in t; VP keeps s² + σ² = 1, sub-VP has σ = 1 − s², VE s = 1;
    the VP-equivalent ᾱ = s²/(s² + σ²) is in (0, 1] and decreasing; q_sample = s x_0 + σ ε = marginal's mean + std ε."""
    t = torch.tensor(sorted(times), dtype=torch.float64)
    s, std = sde.marginal_coefficients(t)
    assert bool(((s > 0) & (s <= 1)).all()) and bool((std >= 0).all()) and bool((std[1:] >= std[:-1]).all())
    if type(sde) is VPSDE:
        assert torch.allclose(s**2 + std**2, torch.ones_like(s), rtol=0, atol=1e-12)
    elif isinstance(sde, SubVPSDE):
        assert torch.allclose(std, 1 - s**2, rtol=0, atol=1e-12)
    else:
        assert torch.equal(s, torch.ones_like(s))
    ab = sde.alpha_bar(t)
    assert bool(((ab > 0) & (ab <= 1)).all()) and bool((ab[1:] <= ab[:-1] * (1 + 1e-12)).all())
    x0, eps = randn(seed, (len(t), 3)), randn(seed + 1, (len(t), 3))
    mean, sd = sde.marginal(x0, t)
    assert torch.allclose(sde.q_sample(x0, t, eps), mean + sd * eps, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Flow matching
# ----------------------------------------------------------------------------------------------------------------


@st.composite
def flow_states(draw):
    """``(t, sigma_min, x0, eps)`` with ``t`` a float or one time per sample in [0, 1]."""
    shape = draw(SHAPES)
    if draw(st.booleans()):
        t = draw(st.floats(0, 1))
    else:
        t = torch.tensor(draw(st.lists(st.floats(0, 1), min_size=shape[0], max_size=shape[0])), dtype=torch.float64)
    sigma_min = draw(st.one_of(st.just(0.0), st.floats(0, 0.99)))
    seed = draw(SEEDS)
    return t, sigma_min, randn(seed, shape), randn(seed + 1, shape)


@given(flow_states())
def test_flow_conversions_round_trip(state):
    """On the conditional path x_t = a_t x_0 + b_t ε with velocity u = (1 − σ_min) ε − x_0: velocity_to_x0 and
    velocity_to_eps recover x_0 and ε, eps_to_velocity recovers u (for t < 1), velocity_to_score is −ε/b_t
    (for b_t > 0), and a_t = 1 − t, b_t = σ_min + (1 − σ_min) t."""
    t, sigma_min, x0, eps = state
    x_t = flow.flow_path(x0, eps, t, sigma_min)
    u = flow.target_velocity(x0, eps, sigma_min)
    a, b = flow.flow_coefficients(t, x0, sigma_min)
    tt = torch.as_tensor(t, dtype=torch.float64).reshape(a.shape)
    assert torch.allclose(a, 1 - tt, rtol=0, atol=1e-15)
    assert torch.allclose(b, sigma_min + (1 - sigma_min) * tt, rtol=0, atol=1e-15)
    assert torch.allclose((1 - sigma_min) * a + b, torch.ones_like(a), rtol=0, atol=1e-15)  # the denominators
    scale = float(x0.norm()) + float(eps.norm())
    assert close(flow.velocity_to_x0(u, x_t, t, sigma_min), x0, scale)
    assert close(flow.velocity_to_eps(u, x_t, t, sigma_min), eps, scale)
    if bool((a > 0).all()):
        scale_a = scale * (1 + float(b.max()) / float(a.min()))
        assert close(flow.eps_to_velocity(eps, x_t, t, sigma_min), u, scale_a)
    if bool((b > 0).all()) and bool(torch.isfinite(eps / b).all()):  # ε / b overflows for a subnormal b
        assert close(flow.velocity_to_score(u, x_t, t, sigma_min), -eps / b, scale / float(b.min()))


@given(flow_states())
def test_flow_path_ends(state):
    """The path starts at the data (t = 0, plus σ_min ε) and ends at the noise (t = 1)."""
    _, sigma_min, x0, eps = state
    assert close(flow.flow_path(x0, eps, 0.0, sigma_min), x0 + sigma_min * eps, float(x0.norm() + eps.norm()))
    assert close(flow.flow_path(x0, eps, 1.0, sigma_min), eps, float(eps.norm()))


GMM = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [0.3, 0.6])


@given(schedules(max_T=200), st.data())
def test_flow_as_eps_matches_the_exact_eps_model(sched, data):
    """FlowAsEps turns the exact velocity of a Gaussian mixture into the exact ε of the VP schedule at the same SNR:
    it must agree with ExactModel's ε for that schedule (both closed forms in float64)."""
    n = data.draw(st.integers(1, 4))
    t = torch.tensor(data.draw(st.lists(st.floats(-1, sched.T - 1), min_size=n, max_size=n)), dtype=torch.float64)
    ab = sched.interp_alpha_bar(t)
    assume(bool((ab < 1 - 1e-4).all()) and bool((ab > 1e-4).all()))  # away from the ends, where ε is 0/0
    x = 2 * randn(data.draw(SEEDS), (n, 2))
    wrapped = flow.FlowAsEps(ExactModel(GMM, flow_sigma_min=0.0), sched)(x, t)
    exact = ExactModel(GMM, schedule=sched)(x, t)
    cond = float((1 / (ab * (1 - ab))).max())  # the SNR change of variables divides by √ᾱ and √(1−ᾱ)
    assert float((wrapped - exact).abs().max()) <= 1e-9 * cond * (1 + float(x.abs().max())), (wrapped, exact)


@given(st.floats(0, 1), st.floats(0, 0.99), SEEDS)
def test_flow_coefficients_accept_every_time_in_the_unit_interval(t, sigma_min, seed):
    x = randn(seed, (2, 3))
    a, b = flow.flow_coefficients(t, x, sigma_min)
    assert math.isclose(float(a), 1 - t, abs_tol=1e-15) and float(b) >= sigma_min - 1e-15
