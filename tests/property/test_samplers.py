"""Properties of every sampler and solver (diffu.samplers, diffu.sde_samplers, diffu.flow and the diffusion solvers of
diffu.inverse) with exact, analytic models and configurations drawn by Hypothesis: the same generator seed gives the
same output (CONTRIBUTING.md, convention 5), a finite start gives a finite result for any valid number of steps,
spacing and noise share, neither ``x_T`` nor the tensors in ``model_kwargs`` are modified, and torch's global RNG is
left alone. The conjugate-gradient solver under Tikhonov and the HQS data steps gets its own two properties.

The models are exact, so no weights are needed and every call costs microseconds: the Gaussian-mixture denoisers of
:mod:`diffu.gmm` for 2D data, and for images the exact ε of Gaussian data ``x_0 ~ N(0, v I)``,
``E[ε | x_t] = √(1 − ᾱ) x_t / (ᾱ v + 1 − ᾱ)`` (linear in ``x_t``, so differentiable for DPS).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from diffu import flow
from diffu.gmm import ExactModel, GaussianMixture
from diffu.inverse import (
    Bicubic,
    BlockAverage,
    Blur,
    Identity,
    Inpainting,
    cg,
    ddrm,
    diffpir,
    dps,
    gaussian_kernel,
    repaint,
)
from diffu.samplers import ddim, ddim_invert, ddpm
from diffu.sampling import SPACINGS, ddim_timesteps
from diffu.schedules import Schedule, make_schedule
from diffu.sde import VESDE, VPSDE, SubVPSDE
from diffu.sde_samplers import euler_maruyama, pf_ode, pf_ode_sigma, predictor_corrector

SEEDS = st.integers(0, 2**31 - 1)
GMM = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [0.3, 0.6])
# a sampler run is a few hundred model calls: fewer examples than the cheap identities, as many again at night
FEW = max(4, settings.default.max_examples // 2)


class GaussianEps(torch.nn.Module):
    """The exact ε-model of ``x_0 ~ N(0, var · I)`` for a discrete schedule, at (fractional) timesteps ``t``."""

    prediction = "eps"

    def __init__(self, schedule: Schedule, var: float = 0.25):
        super().__init__()
        self.schedule, self.var = schedule, var

    def forward(self, x, t, **kwargs):
        ab = self.schedule.interp_alpha_bar(t.detach().double().cpu()).to(x).reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - ab).sqrt() * x / (ab * self.var + 1 - ab)


@st.composite
def schedules(draw, max_T: int = 40) -> Schedule:
    kind = draw(st.sampled_from(["linear", "scaled_linear", "sigmoid", "cosine"]))
    T = draw(st.integers(1, max_T))
    if kind == "cosine":
        return make_schedule("cosine", T, s=draw(st.floats(0, 0.1)))
    lo = draw(st.floats(1e-4, 0.05))
    return make_schedule(kind, T, beta_start=lo, beta_end=draw(st.floats(lo, 0.5)))


@st.composite
def starts(draw, shape=None):
    """``(x_T, model_kwargs)``: a noise tensor of a random scale and dtype, or a shape to draw it from, and a
    ``model_kwargs`` dict holding a tensor (which the sampler must pass through unchanged)."""
    shape = shape or (draw(st.integers(1, 4)), 2)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    label = torch.arange(shape[0])
    if draw(st.integers(0, 3)) == 0:
        return shape, {"y": label}
    scale = draw(st.sampled_from([1e-2, 1.0, 5.0]))
    x = scale * torch.randn(shape, generator=torch.Generator().manual_seed(draw(SEEDS)), dtype=dtype)
    return x, {"y": label}


@example(T=15, steps_fraction=13 / 15, spacing="trailing")  # np.arange gave 14 points, the last one -1 (issue 18)
@given(st.integers(1, 300), st.floats(0, 1), st.sampled_from(SPACINGS))
def test_every_valid_timestep_grid_exists(T, steps_fraction, spacing):
    """For every T, every steps in [1, T] and every spacing the grid holds ``steps`` distinct timesteps in [0, T − 1],
    decreasing, the "trailing" grid starting at T − 1."""
    steps = max(1, min(T, round(steps_fraction * T)))
    ts = ddim_timesteps(T, steps, spacing)
    assert ts.shape == (steps,) and ts.dtype == torch.int64
    assert bool((ts[:-1] > ts[1:]).all()) and int(ts.min()) >= 0 and int(ts.max()) <= T - 1
    if spacing == "trailing":
        assert int(ts[0]) == T - 1


# ----------------------------------------------------------------------------------------------------------------
# Sampler configurations: each strategy returns run(x_T, generator, model_kwargs) -> tensor
# ----------------------------------------------------------------------------------------------------------------


@st.composite
def discrete_runs(draw) -> tuple[str, Callable]:
    sched = draw(schedules())
    model = ExactModel(GMM, schedule=sched)
    steps = draw(st.integers(1, sched.T))
    spacing = draw(st.sampled_from(SPACINGS))
    kind = draw(st.sampled_from(["ddpm", "ddim", "ddim_invert", "pf_ode_sigma"]))
    common = dict(steps=steps, spacing=spacing, progress=False)
    if kind == "ddpm":
        kw = dict(variance=draw(st.sampled_from(["fixedsmall", "fixedlarge"])), clip_x0=draw(st.booleans()))

        def run(x, g, mk):
            return ddpm(model, x, sched, generator=g, model_kwargs=mk, **common, **kw)

    elif kind == "ddim":
        kw = dict(eta=draw(st.sampled_from([0.0, 0.5, 1.0])), clip_x0=draw(st.booleans()))

        def run(x, g, mk):
            return ddim(model, x, sched, generator=g, model_kwargs=mk, **common, **kw)

    elif kind == "ddim_invert":

        def run(x, g, mk):  # deterministic: no generator; a shape becomes zeros
            x0 = x if isinstance(x, torch.Tensor) else torch.zeros(x)
            return ddim_invert(model, x0, sched, model_kwargs=mk, **common)

    else:
        kw = dict(solver=draw(st.sampled_from(["euler", "heun"])), spacing=draw(st.sampled_from([*SPACINGS, "karras"])))

        def run(x, g, mk):
            return pf_ode_sigma(model, x, sched, steps=steps, generator=g, model_kwargs=mk, progress=False, **kw)

    return kind, run


@st.composite
def continuous_runs(draw) -> tuple[str, Callable]:
    kind = draw(st.sampled_from(["vp", "subvp", "ve"]))
    if kind == "ve":
        sde = VESDE(draw(st.floats(0.005, 0.1)), draw(st.floats(2.0, 50.0)))
    else:
        lo = draw(st.floats(0.05, 1.0))
        sde = (VPSDE if kind == "vp" else SubVPSDE)(lo, lo + draw(st.floats(0, 20)))
    model = ExactModel(GMM, sde=sde)
    common = dict(steps=draw(st.integers(1, 30)), t_min=draw(st.floats(1e-4, 0.5)), progress=False)
    sampler = draw(st.sampled_from(["euler_maruyama", "predictor_corrector", "pf_ode"]))
    if sampler == "euler_maruyama":

        def run(x, g, mk):
            return euler_maruyama(model, x, sde, generator=g, model_kwargs=mk, **common)

    elif sampler == "predictor_corrector":
        kw = dict(snr=draw(st.floats(0.01, 0.5)), corrector_steps=draw(st.integers(0, 2)))

        def run(x, g, mk):
            return predictor_corrector(model, x, sde, generator=g, model_kwargs=mk, **common, **kw)

    else:
        kw = dict(solver=draw(st.sampled_from(["euler", "heun", "rk45"])), rtol=1e-3, atol=1e-3)

        def run(x, g, mk):
            return pf_ode(model, x, sde, generator=g, model_kwargs=mk, **common, **kw)

    return f"{kind}-{sampler}", run


@st.composite
def flow_runs(draw) -> tuple[str, Callable]:
    model = ExactModel(GMM, flow_sigma_min=0.0)
    kw = dict(steps=draw(st.integers(1, 30)), solver=draw(st.sampled_from(["euler", "heun"])), progress=False)
    if draw(st.booleans()):

        def run(x, g, mk):
            return flow.sample(model, x, generator=g, model_kwargs=mk, **kw)

        return "flow.sample", run

    def pairs(x, g, mk):
        return torch.cat(flow.reflow_pairs(model, x, generator=g, model_kwargs=mk, **kw))

    return "flow.reflow_pairs", pairs


def check_run(run: Callable, x_T, model_kwargs: dict, seed: int) -> None:
    """The four properties of one configuration: deterministic per seed, finite, pure, global RNG untouched."""
    x_copy = x_T.clone() if isinstance(x_T, torch.Tensor) else x_T
    kw_copy = {k: v.clone() for k, v in model_kwargs.items()}
    rng = torch.get_rng_state()
    out = run(x_T, torch.Generator().manual_seed(seed), model_kwargs)
    again = run(x_T, torch.Generator().manual_seed(seed), model_kwargs)
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG was used"
    assert torch.equal(out, again), "not deterministic for a fixed generator seed"
    assert bool(torch.isfinite(out).all()), "a finite start gave NaN or infinity"
    if isinstance(x_T, torch.Tensor):
        assert torch.equal(x_T, x_copy), "x_T was modified"
        assert out.dtype == x_T.dtype
    assert all(torch.equal(model_kwargs[k], v) for k, v in kw_copy.items()), "model_kwargs were modified"


@settings(max_examples=FEW * 2)
@given(discrete_runs(), starts(), SEEDS)
def test_discrete_samplers(run, start, seed):
    """DDPM (both fixed variances, clipped or not), DDIM (η ∈ {0, ½, 1}), DDIM inversion and the σ-ODE (Euler, Heun;
    every spacing, Karras' included) for any number of steps in [1, T] of any named schedule."""
    name, fn = run
    x_T, mk = start
    check_run(fn, x_T, mk, seed)


@settings(max_examples=FEW * 2)
@given(continuous_runs(), starts(), SEEDS)
def test_sde_samplers(run, start, seed):
    """Euler–Maruyama, predictor–corrector and the probability-flow ODE (Euler, Heun, RK45) for the VP, sub-VP and VE
    SDEs over the whole time range ``[t_min, 1]``."""
    name, fn = run
    x_T, mk = start
    check_run(fn, x_T, mk, seed)


@settings(max_examples=FEW)
@given(flow_runs(), starts(), SEEDS)
def test_flow_samplers(run, start, seed):
    name, fn = run
    x_T, mk = start
    check_run(fn, x_T, mk, seed)


# ----------------------------------------------------------------------------------------------------------------
# Diffusion solvers of inverse problems
# ----------------------------------------------------------------------------------------------------------------


@st.composite
def problems(draw):
    """``(op, x_true, sigma_y)``: a linear operator with an SVD view and an image batch it accepts."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kind = draw(st.sampled_from(["identity", "block", "bicubic", "inpainting", "blur"]))
    f = draw(st.integers(1, 3)) if kind in ("block", "bicubic") else 1
    h, w = f * draw(st.integers(2, 5)), f * draw(st.integers(2, 5))
    g = torch.Generator().manual_seed(draw(SEEDS))
    if kind == "identity":
        op = Identity()
    elif kind == "block":
        op = BlockAverage(f)
    elif kind == "bicubic":
        op = Bicubic(f)
    elif kind == "inpainting":
        op = Inpainting((torch.rand(1, 1, h, w, generator=g) < draw(st.sampled_from([0.0, 0.5, 1.0]))).float())
    else:
        size = min(h, w) - (1 - min(h, w) % 2)
        op = Blur(gaussian_kernel(size, draw(st.floats(0.3, 2.0)), dtype=torch.float64))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    x = (torch.rand(n, c, h, w, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
    return kind, op, x, draw(st.sampled_from([0.0, 0.05, 0.3]))


@st.composite
def inverse_runs(draw):
    kind, op, x, sigma_y = draw(problems())
    sched = draw(schedules(max_T=20))
    model = GaussianEps(sched)
    g = torch.Generator().manual_seed(draw(SEEDS))
    y = op.A(x) + sigma_y * torch.randn(op.A(x).shape, generator=g, dtype=x.dtype)
    solver = draw(st.sampled_from(["ddrm", "dps", "diffpir"] + (["repaint"] if kind == "inpainting" else [])))
    spacing = draw(st.sampled_from(["quad", "uniform"]))
    if solver == "diffpir" and spacing == "quad" and sched.T < 2:  # the "quad" grid needs two timesteps
        spacing = "uniform"
    if solver == "diffpir" and spacing == "uniform":  # T // steps = 1 below T is refused (the chain stops early)
        steps = draw(st.sampled_from(sorted({sched.T, *range(1, sched.T // 2 + 1)} & set(range(1, 9)) or {sched.T})))
    else:
        steps = draw(st.integers(2 if solver == "diffpir" else 1, min(sched.T, 8)))
    common = dict(steps=steps, progress=False)
    if solver == "ddrm":
        kw = dict(sigma_y=sigma_y, eta=draw(st.sampled_from([0.0, 0.85, 1.0])), eta_b=draw(st.sampled_from([0.0, 1.0])))

        def run(yy, gg, mk):
            return ddrm(model, yy, op, sched, generator=gg, model_kwargs=mk, **common, **kw)

    elif solver == "dps":
        kw = dict(scale=draw(st.sampled_from([0.0, 0.3, 1.0])), clip_x0=draw(st.booleans()))

        def run(yy, gg, mk):
            return dps(model, yy, op, sched, generator=gg, model_kwargs=mk, **common, **kw)

    elif solver == "diffpir":
        kw = dict(sigma_y=sigma_y, zeta=draw(st.sampled_from([0.0, 0.3, 1.0])), spacing=spacing)

        def run(yy, gg, mk):
            return diffpir(model, yy, op, sched, generator=gg, model_kwargs=mk, **common, **kw)

    else:
        kw = dict(jump_length=draw(st.integers(1, 3)), jump_n_sample=draw(st.integers(1, 3)))
        kw["spacing"] = draw(st.sampled_from(SPACINGS))

        def run(yy, gg, mk):
            return repaint(model, yy, op.mask, sched, generator=gg, model_kwargs=mk, **common, **kw)

    return solver, y, run


@settings(max_examples=FEW * 2)
@given(inverse_runs(), SEEDS)
def test_inverse_solvers(run, seed):
    """DDRM, DPS, DiffPIR and RePaint on identity, ×f SR, inpainting and blur problems: deterministic per seed, finite,
    the measurement ``y`` and ``model_kwargs`` untouched, the global RNG alone."""
    name, y, fn = run
    y_copy = y.clone()
    mk = {"y": torch.arange(y.shape[0])}
    check_run(fn, y, mk, seed)
    assert torch.equal(y, y_copy)


class ZeroEps(torch.nn.Module):
    """A model with no signal (ε̂ = 0, so the score is exactly 0): the Langevin step of Song et al. divides by ‖∇‖."""

    prediction = "eps"

    def forward(self, x, t, **kwargs):
        return torch.zeros_like(x)


@settings(max_examples=FEW)
@given(st.sampled_from([VPSDE(), SubVPSDE(), VESDE()]), st.integers(1, 10), st.integers(1, 3), starts(), SEEDS)
def test_predictor_corrector_with_a_zero_score(sde, steps, corrector_steps, start, seed):
    """A zero score gives a finite result, not the 0/0 NaN of the official step size (issue 18)."""
    x_T, mk = start
    run = functools.partial(predictor_corrector, ZeroEps(), sde=sde, steps=steps, corrector_steps=corrector_steps,
                            progress=False)  # fmt: skip
    check_run(lambda x, g, kw: run(x, generator=g, model_kwargs=kw), x_T, mk, seed)


# ----------------------------------------------------------------------------------------------------------------
# Conjugate gradients, the solver inside Tikhonov and the HQS data steps
# ----------------------------------------------------------------------------------------------------------------


@st.composite
def spd_systems(draw):
    """``(S, b)``: a symmetric positive definite ``(D, D)`` matrix of condition number at most ~1e3 and a batch of
    right-hand sides ``(N, D)``; ``apply_A(v) = v S`` acts on each sample independently."""
    n, d = draw(st.integers(1, 3)), draw(st.integers(1, 12))
    g = torch.Generator().manual_seed(draw(SEEDS))
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, draw(st.floats(0, 3)), d, dtype=torch.float64)
    s = (q * eig) @ q.T
    return (s + s.T) / 2, torch.randn(n, d, generator=g, dtype=torch.float64) * draw(st.sampled_from([1e-3, 1.0, 1e3]))


@given(spd_systems())
def test_cg_solves_positive_definite_systems(system):
    """CG with D + 10 iterations solves every sample to its tolerance: ‖S x − b‖ <= tol ‖b‖ (the recursive residual
    it stops on drifts from the true one by rounding, ~1e-13 here, hence the factor 10 on tol = 1e-9)."""
    s, b = system
    b_copy = b.clone()
    x = cg(lambda v: v @ s, b, tol=1e-9, max_iter=b.shape[1] + 10)
    assert torch.equal(b, b_copy)
    res = (x @ s - b).norm(dim=1)
    assert bool((res <= 1e-8 * b.norm(dim=1)).all()), res / b.norm(dim=1)


@given(spd_systems(), st.sampled_from([math.nan, math.inf, -math.inf]), st.booleans())
def test_cg_refuses_nan_and_indefinite_operators(system, bad, negate):
    """A NaN/infinite right-hand side, or a negative definite operator, is a named error — never zeros (issue 18)."""
    s, b = system
    with pytest.raises(ValueError, match="b"):
        cg(lambda v: v @ s, torch.where(torch.arange(b.numel()).reshape(b.shape) == 0, bad, b))
    with pytest.raises(ValueError, match="apply_A"):
        cg(lambda v: -(v @ s) if negate else v @ s * math.nan, b)
