"""DDPM ancestral sampling, DDIM (any steps, η ∈ [0, 1], three spacings) and DDIM inversion (chapter §2.2).

Every sampler shares one signature style (DESIGN.md, convention 4)::

    sampler(model, x_T_or_shape, schedule, *, steps=…, generator=None, progress=True, callback=None,
            model_kwargs=None, **method_params) -> x_0

``callback(state)`` is called after every step with a :class:`SamplerState` (step index, model timestep, the new
state and the current x̂_0); :class:`Trajectory` is a ready-made callback that records them for plots. One step of
each method is also a pure function (:func:`ddpm_step`, :func:`ddim_step`) checked against diffusers in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .schedules import Schedule

__all__ = [
    "SPACINGS",
    "SamplerState",
    "Trajectory",
    "ddim",
    "ddim_invert",
    "ddim_step",
    "ddim_timesteps",
    "ddpm",
    "ddpm_step",
    "model_eps",
]

#: The timestep spacings that :func:`ddim_timesteps` accepts.
SPACINGS = ("leading", "trailing", "linspace")
VARIANCES = ("fixedsmall", "fixedlarge", "learned_range")


class SamplerState(NamedTuple):
    """What a sampler reports after step ``i``: the model timestep ``t`` it used, the new state ``x`` and the
    denoised estimate ``x0_hat`` computed at ``t``."""

    i: int
    t: int
    x: torch.Tensor
    x0_hat: torch.Tensor


class Trajectory:
    """A callback that keeps (a CPU copy of) every ``every``-th state: ``traj.xs``, ``traj.x0s``, ``traj.ts``."""

    def __init__(self, every: int = 1, max_items: int | None = None):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.max_items = every, max_items
        self.ts: list[int] = []
        self.xs: list[torch.Tensor] = []
        self.x0s: list[torch.Tensor] = []

    def __call__(self, state: SamplerState) -> None:
        if state.i % self.every == 0:
            n = self.max_items
            self.ts.append(state.t)
            self.xs.append(state.x[:n].detach().cpu())
            self.x0s.append(state.x0_hat[:n].detach().cpu())

    def __len__(self) -> int:
        return len(self.ts)


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _check_steps(steps, T):
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, {T}], got {steps!r}")


def _check_eta(eta):
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")


def _initial(x_T, generator, model):
    """``x_T`` itself, or standard normal noise of shape ``x_T`` on the generator's (else the model's) device."""
    if isinstance(x_T, torch.Tensor):
        return x_T
    if not isinstance(x_T, (tuple, list, torch.Size)) or not all(isinstance(s, int) and s > 0 for s in x_T):
        raise ValueError(f"x_T must be a tensor or a shape tuple of positive ints, got {x_T!r}")
    if generator is not None:
        device = generator.device
    else:
        p = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        device = p.device if p is not None else torch.get_default_device()
    return torch.randn(tuple(x_T), generator=generator, device=device)


def _noise_like(x, generator):
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def model_eps(model, x, t: int, schedule: Schedule, model_kwargs=None) -> torch.Tensor:
    """Call ``model(x, t, **model_kwargs)`` with a float ``(N,)`` timestep and convert its output to ε according
    to ``model.prediction`` ("eps" when the attribute is missing)."""
    tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
    out = model(x, tt, **(model_kwargs or {}))
    if getattr(model, "learn_sigma", False):  # [ε̂, v]: the variance half is used only by DDPM's "learned_range"
        out = out[:, : out.shape[1] // 2]
    return schedule.to_eps(out, x, t, getattr(model, "prediction", "eps"))


def _cond(cond_fn, x, t, model_kwargs):
    """``cond_fn(x_t, t, **model_kwargs)`` with a float ``(N,)`` timestep; checked to have ``x``'s shape."""
    tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
    g = cond_fn(x, tt, **(model_kwargs or {}))
    if g.shape != x.shape:
        raise ValueError(f"cond_fn must return a tensor of x_t's shape {tuple(x.shape)}, got {tuple(g.shape)}")
    return g


def _alpha_bar(schedule, t, x):
    """ᾱ_t as a scalar tensor like ``x``; ``t = -1`` means the clean end (ᾱ = 1, DDIM's prepended β = 0)."""
    t = int(t)
    if t == -1:
        return torch.ones((), device=x.device, dtype=x.dtype)
    return schedule.at("alpha_bar", t, x).reshape(())


# ----------------------------------------------------------------------------------------------------------------
# DDPM
# ----------------------------------------------------------------------------------------------------------------


def _ddpm_log_variance(schedule: Schedule, variance: str) -> torch.Tensor:
    if variance == "fixedsmall":
        return schedule.posterior_log_variance_clipped
    if variance in ("fixedlarge", "learned_range"):
        # Ho et al.: β_t, with the t = 0 entry replaced by β̃_1 (that entry is never used: no noise at t = 0)
        return torch.log(torch.cat([schedule.posterior_variance[1:2], schedule.betas[1:]]))
    raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")


def ddpm_step(schedule: Schedule, x_t, t: int, eps, *, variance="fixedsmall", clip_x0=True, noise=None, v=None,
              guidance=None):  # fmt: skip
    """One ancestral step ``x_{t-1} = μ̃_t(x_t, x̂_0) + σ_t z`` (Algorithm 2 of Ho et al. 2020, written through the
    posterior mean of Eq. 7). ``variance`` picks σ_t² = β̃_t ("fixedsmall"), β_t ("fixedlarge") or Nichol &
    Dhariwal's "learned_range" ``log σ_t² = f log β_t + (1 - f) log β̃_t`` with ``f = (v + 1)/2`` from the network's
    variance output ``v`` (DiT's ``learn_sigma``); no noise is added at ``t = 0``. ``guidance`` (a tensor like
    ``x_t``, e.g. ``s ∇ log p(y | x_t)``) shifts the mean by ``Σ_t · guidance`` — classifier guidance, Algorithm 1
    of Dhariwal & Nichol 2021 — with Σ_t the step's variance (β̃_0 = 0, so no shift at the last step of
    "fixedsmall"). Returns ``(x_{t-1}, x̂_0)``."""
    logvar = _ddpm_log_variance(schedule, variance)
    t = int(schedule.check_t(t))
    x0 = schedule.eps_to_x0(eps, x_t, t)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
    mean, _, _ = schedule.q_posterior(x0, x_t, t)
    if t == 0 and guidance is None:
        return mean, x0
    std = torch.exp(0.5 * logvar[t]).to(device=x_t.device, dtype=x_t.dtype)
    if variance == "learned_range":
        if v is None or v.shape != x_t.shape:
            raise ValueError("variance='learned_range' needs the model's variance output v with x_t's shape")
        frac = (v + 1) / 2
        log_small = schedule.posterior_log_variance_clipped[t].to(x_t)
        std = torch.exp(0.5 * (frac * logvar[t].to(x_t) + (1 - frac) * log_small))
    if guidance is not None:
        if guidance.shape != x_t.shape:
            raise ValueError(f"guidance must have x_t's shape {tuple(x_t.shape)}, got {tuple(guidance.shape)}")
        var = schedule.at("posterior_variance", t, x_t) if variance == "fixedsmall" else std**2  # unclipped β̃_t
        mean = mean + var * guidance
    if t == 0:
        return mean, x0
    if noise is None:
        raise ValueError("noise is required for t > 0")
    return mean + std * noise, x0


def ddpm(
    model: Callable,
    x_T,
    schedule: Schedule,
    *,
    steps: int | None = None,
    spacing: str = "leading",
    variance: str = "fixedsmall",
    clip_x0: bool = True,
    model_kwargs: dict | None = None,
    cond_fn: Callable | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
) -> torch.Tensor:
    """Ancestral sampling (Algorithm 2 of Ho et al. 2020).

    With ``steps < T`` the schedule is respaced to ``steps`` timesteps chosen by ``spacing`` (Nichol & Dhariwal
    2021): the kept ᾱ values are unchanged and the betas recomputed, so the same network is used.

    Args:
        model: ``model(x_t, t, **model_kwargs)`` predicting ε (or what ``model.prediction`` says).
        x_T: initial noise ``(N, …)`` or a shape to draw it from ``generator``.
        schedule: the training schedule.
        steps: number of denoising steps (default ``T``).
        variance: "fixedsmall" (β̃_t), "fixedlarge" (β_t) or "learned_range" (interpolated by the network's
            second output half, for ``learn_sigma`` models such as DiT).
        clip_x0: clip x̂_0 to [-1, 1] as the original sampler does.
        cond_fn: classifier guidance, ``cond_fn(x_t, t, **model_kwargs) -> s ∇_x log p(y | x_t)`` evaluated at the
            original timestep (e.g. :class:`diffu.guidance.ClassifierGuidance`); it shifts each step's mean by
            Σ_t times its value (Dhariwal & Nichol 2021, Algorithm 1).

    Returns:
        The sample ``x_0`` with ``x_T``'s shape, device and dtype.
    """
    steps = schedule.T if steps is None else steps
    _check_steps(steps, schedule.T)
    _ddpm_log_variance(schedule, variance)  # validates ``variance`` before any work
    if variance == "learned_range" and not getattr(model, "learn_sigma", False):
        raise ValueError("variance='learned_range' needs a model with learn_sigma=True (it outputs [ε̂, v])")
    ts = ddim_timesteps(schedule.T, steps, spacing).flip(0)  # increasing original timesteps
    sched = schedule if steps == schedule.T else schedule.respace(ts)
    x = _initial(x_T, generator, model)
    with torch.no_grad():
        for i in tqdm(range(steps - 1, -1, -1), disable=not progress, desc=f"DDPM-{steps}"):
            v = None
            if variance == "learned_range":
                tt = torch.full((x.shape[0],), float(ts[i]), device=x.device, dtype=x.dtype)
                out, v = model(x, tt, **(model_kwargs or {})).chunk(2, dim=1)  # [ε̂, v]
                eps = schedule.to_eps(out, x, int(ts[i]), getattr(model, "prediction", "eps"))
            else:
                eps = model_eps(model, x, int(ts[i]), schedule, model_kwargs)
            grad = None if cond_fn is None else _cond(cond_fn, x, ts[i], model_kwargs)
            noise = _noise_like(x, generator) if i > 0 else None
            x, x0 = ddpm_step(sched, x, i, eps, variance=variance, clip_x0=clip_x0, noise=noise, v=v, guidance=grad)
            if callback is not None:
                callback(SamplerState(steps - 1 - i, int(ts[i]), x, x0))
    return x


# ----------------------------------------------------------------------------------------------------------------
# DDIM
# ----------------------------------------------------------------------------------------------------------------


def ddim_timesteps(T: int, steps: int, spacing: str = "leading", offset: int = 0) -> torch.Tensor:
    """The ``steps`` model timesteps of a DDIM run, in sampling (decreasing) order.

    - "leading": ``(0, k, 2k, …)·`` with ``k = T // steps`` (DDIM's "uniform" skip; diffusers' default), + ``offset``;
    - "trailing": ``round(T, T - T/steps, …) - 1`` — starts at ``T - 1`` (Lin et al. 2024);
    - "linspace": ``round(linspace(0, T - 1, steps))``.
    """
    _check_steps(steps, T)
    if spacing == "leading":
        ts = np.arange(steps) * (T // steps) + offset
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps))[::-1] - 1
    elif spacing == "linspace":
        ts = np.linspace(0, T - 1, steps).round()
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if ts.max() >= T or ts.min() < 0:
        raise ValueError(f"offset {offset} moves timesteps outside [0, {T - 1}]")
    return torch.from_numpy(ts.astype(np.int64)[::-1].copy())


def ddim_step(schedule: Schedule, x_t, t: int, t_prev: int, eps, *, eta=0.0, clip_x0=False, noise=None):
    """One generalised DDIM step from ``t`` to ``t_prev < t`` (Eq. 12 of Song et al. 2021):

    ``x_prev = √ᾱ_prev x̂_0 + √(1 - ᾱ_prev - σ²) ε̂ + σ z`` with
    ``σ = η √((1 - ᾱ_prev)/(1 - ᾱ_t)) √(1 - ᾱ_t/ᾱ_prev)``; ``t_prev = -1`` means ᾱ_prev = 1.
    η = 0 is deterministic DDIM, η = 1 matches DDPM's posterior variance. Returns ``(x_prev, x̂_0)``.
    """
    _check_eta(eta)
    t = int(schedule.check_t(t))
    if not -1 <= int(t_prev) < t:
        raise ValueError(f"t_prev must be in [-1, t) = [-1, {t}), got {t_prev}")
    ab, ab_prev = _alpha_bar(schedule, t, x_t), _alpha_bar(schedule, t_prev, x_t)
    x0 = schedule.eps_to_x0(eps, x_t, t)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        eps = schedule.x0_to_eps(x0, x_t, t)  # keep ε consistent with the clipped x̂_0 (guided-diffusion)
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
    x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
    if eta > 0:
        if noise is None:
            raise ValueError("noise is required when eta > 0")
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def ddim(
    model: Callable,
    x_T,
    schedule: Schedule,
    *,
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "leading",
    timesteps: Sequence[int] | None = None,
    clip_x0: bool = False,
    model_kwargs: dict | None = None,
    cond_fn: Callable | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, Eq. 12) over ``steps`` timesteps chosen by ``spacing`` (or an explicit
    decreasing ``timesteps`` list). η = 0: deterministic; η = 1: ancestral-like. ``steps`` is also the number of
    network evaluations (NFE). Returns ``x_0`` with ``x_T``'s shape, device and dtype.

    ``cond_fn(x_t, t, **model_kwargs) -> s ∇_x log p(y | x_t)`` adds classifier guidance as a shift of the
    predicted noise, ``ε̃ = ε̂ - √(1 - ᾱ_t) · cond_fn(…)`` (the score-based form for deterministic samplers,
    Dhariwal & Nichol 2021, Algorithm 2); x̂_0 and the step follow from ε̃.
    """
    _check_eta(eta)
    if timesteps is None:
        ts = ddim_timesteps(schedule.T, steps, spacing)
    else:
        ts = schedule.check_t(torch.as_tensor(list(timesteps)))
        if ts.ndim != 1 or len(ts) == 0 or bool((ts[1:] >= ts[:-1]).any()):
            raise ValueError("timesteps must be a non-empty, strictly decreasing sequence")
    x = _initial(x_T, generator, model)
    prev = torch.cat([ts[1:], torch.tensor([-1])])
    with torch.no_grad():
        for i, (t, tp) in enumerate(tqdm(list(zip(ts.tolist(), prev.tolist())), disable=not progress,
                                         desc=f"DDIM-{len(ts)}")):  # fmt: skip
            eps = model_eps(model, x, t, schedule, model_kwargs)
            clip = clip_x0
            if cond_fn is not None:
                if clip_x0:  # as guided-diffusion: clip x̂_0 first, then shift ε (the shifted x̂_0 is not re-clipped)
                    eps = schedule.x0_to_eps(schedule.eps_to_x0(eps, x, t).clamp(-1, 1), x, t)
                eps = eps - (1 - _alpha_bar(schedule, t, x)).sqrt() * _cond(cond_fn, x, t, model_kwargs)
                clip = False
            noise = _noise_like(x, generator) if eta > 0 else None
            x, x0 = ddim_step(schedule, x, t, tp, eps, eta=eta, clip_x0=clip, noise=noise)
            if callback is not None:
                callback(SamplerState(i, t, x, x0))
    return x


def ddim_invert(
    model: Callable,
    x0: torch.Tensor,
    schedule: Schedule,
    *,
    steps: int = 50,
    spacing: str = "leading",
    model_kwargs: dict | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
) -> torch.Tensor:
    """Deterministic DDIM inversion (η = 0): run the DDIM ODE step backwards, data → noise.

    From level ``s`` (ᾱ_s, with ᾱ = 1 for clean data) to the next timestep ``t`` of the same grid that
    :func:`ddim` uses: ``x_t = √ᾱ_t x̂_0 + √(1-ᾱ_t) ε̂`` with ``ε̂ = ε_θ(x_s, t)`` — the usual approximation
    ε_θ(x_s) ≈ ε_θ(x_t) (Song et al. 2021, §4.3; Mokady et al. 2023). Returns ``x_T`` such that
    ``ddim(model, x_T, schedule, steps=steps, spacing=spacing)`` approximately returns ``x0``.
    """
    ts = ddim_timesteps(schedule.T, steps, spacing).flip(0).tolist()  # increasing
    x = x0
    s = -1
    with torch.no_grad():
        for i, t in enumerate(tqdm(ts, disable=not progress, desc=f"DDIM-inv-{steps}")):
            eps = model_eps(model, x, t, schedule, model_kwargs)
            ab_s, ab_t = _alpha_bar(schedule, s, x), _alpha_bar(schedule, t, x)
            x0_hat = (x - (1 - ab_s).sqrt() * eps) / ab_s.sqrt()
            x = ab_t.sqrt() * x0_hat + (1 - ab_t).sqrt() * eps
            s = t
            if callback is not None:
                callback(SamplerState(i, t, x, x0_hat))
    return x
