"""DDPM ancestral sampling, DDIM (any steps, η ∈ [0, 1], three spacings) and DDIM inversion (chapter §2.2).

Every sampler shares one signature style (CONTRIBUTING.md, convention 4)::

    sampler(model, x_T_or_shape, schedule, *, steps=…, generator=None, progress=True, callback=None,
            model_kwargs=None, **method_params) -> x_0

``callback(state)`` is called after every step with a :class:`~diffu.sampling.SamplerState` (step index, model
timestep, the new state and the current x̂_0); :class:`~diffu.sampling.Trajectory` is a ready-made callback that
records them for plots. One step of each method is also a pure function (:func:`ddpm_step`, :func:`ddim_step`)
checked against diffusers in the tests. The pieces every sampler shares (timestep grids, initial noise, the model
call) are in :mod:`diffu.sampling`.

**Bad input** raises a ``ValueError``/``TypeError`` naming the argument, checked once at each sampler's entry: a
given ``x_T`` must be a finite floating-point tensor (:func:`diffu.sampling.initial_noise`), the shared arguments are
checked by :func:`diffu.sampling.check_sampler_args`. The one-step functions check kinds and shapes (``noise`` must
have ``x_t``'s shape, one draw per sample) but not values: NaN in ``x_t`` or ``eps`` propagates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .checks import check_bool, check_choice, check_eta, check_finite, check_floating, check_real
from .sampling import (  # noqa: F401 (SPACINGS, Trajectory: kept importable from here for existing notebooks)
    SPACINGS,
    SamplerState,
    Trajectory,
    check_sampler_args,
    check_schedule,
    ddim_timesteps,
    initial_noise,
    model_cond,
    model_eps,
    noise_like,
    respaced,
)
from .schedules import Schedule

__all__ = ["ddim", "ddim_invert", "ddim_step", "ddpm", "ddpm_step"]

#: The reverse-process variances of :func:`ddpm_step` ("learned_range" needs a ``learn_sigma`` model).
VARIANCES = ("fixedsmall", "fixedlarge", "learned_range")


# ----------------------------------------------------------------------------------------------------------------
# DDPM
# ----------------------------------------------------------------------------------------------------------------


def _check_eta(eta) -> None:
    check_real("eta", eta)  # a number (TypeError for a string), NaN and infinity refused
    check_eta(eta)  # in [0, 1]


def _check_like(v, x_t: torch.Tensor, name: str) -> None:
    """An optional per-sample tensor (noise, the variance output, guidance) of exactly ``x_t``'s shape: a ``(1, …)``
    tensor would silently be broadcast to every sample (one noise draw for the whole batch)."""
    if v is not None:
        check_floating(v, name)
        if v.shape != x_t.shape:
            raise ValueError(f"{name} must have x_t's shape {tuple(x_t.shape)} (one per sample), got {tuple(v.shape)}")


def _ddpm_log_variance(schedule: Schedule, variance: str) -> torch.Tensor:
    """``(T,)`` log σ_t² of ``variance`` ("learned_range": its upper end log β_t), as guided-diffusion tabulates it."""
    check_choice("variance", variance, VARIANCES)
    if variance == "fixedsmall":
        return schedule.posterior_log_variance_clipped  # log β̃_t, the t = 0 entry (log 0) replaced by log β̃_1
    if variance == "fixedlarge":
        return torch.log(torch.cat([schedule.posterior_variance[1:2], schedule.betas[1:]]))  # β_t, t = 0: β̃_1
    return torch.log(schedule.betas)  # "learned_range": max_log = log β_t, with β_0 itself at t = 0


def ddpm_step(schedule: Schedule, x_t, t: int, eps, *, variance="fixedsmall", clip_x0=True, noise=None, v=None,
              guidance=None):  # fmt: skip
    """One ancestral step ``x_{t-1} = μ̃_t(x_t, x̂_0) + σ_t z`` (Algorithm 2 of Ho et al. 2020, via Eq. 7).

    Args:
        schedule: the (possibly respaced) schedule that ``t`` indexes.
        x_t: the current state ``(N, …)``.
        t: the step, an integer in ``[0, T-1]``; no noise is added at ``t = 0``.
        eps: the predicted noise ε̂, shaped like ``x_t``.
        variance: σ_t² = β̃_t ("fixedsmall"), β_t ("fixedlarge"), or Nichol & Dhariwal's (2021, Eq. 15)
            "learned_range" ``log σ_t² = f log β_t + (1 - f) log β̃_t`` with ``f = (v + 1)/2``.
        clip_x0: clip x̂_0 to [-1, 1] (as the official samplers do).
        noise: ``z ~ N(0, I)`` of exactly ``x_t``'s shape (one draw per sample); required for ``t > 0``.
        v: the network's variance output like ``x_t`` (DiT's ``learn_sigma`` half), for "learned_range".
        guidance: a tensor like ``x_t`` (e.g. ``s ∇ log p(y | x_t)``) that shifts the mean by ``Σ_t · guidance`` —
            classifier guidance, Algorithm 1 of Dhariwal & Nichol 2021.

    Returns:
        ``(x_{t-1}, x̂_0)``, both like ``x_t``. NaN in ``x_t`` or ``eps`` propagates (the clipping keeps NaN).

    Raises:
        TypeError: ``schedule`` not a :class:`~diffu.schedules.Schedule`, ``clip_x0`` not a bool.
        ValueError: ``x_t`` not floating; ``t`` not one timestep in range; an unknown ``variance``; ``eps``,
            ``noise``, ``v`` or ``guidance`` not of ``x_t``'s shape (a ``(1, …)`` noise is refused, not broadcast);
            ``noise`` missing for ``t > 0``.

    Notes:
        The variance tables are guided-diffusion's (``gaussian_diffusion.py``, ``p_mean_variance``), which matters at
        ``t = 0`` only through the guidance shift (``condition_mean`` uses the step's variance Σ_t, no noise is added):
        "fixedsmall" shifts by the unclipped β̃_0 = 0 (no shift), "fixedlarge" by β̃_1 (Ho et al.'s replacement of the
        first β), "learned_range" by ``exp(f log β_0 + (1 - f) log β̃_1)`` (its lower end is the clipped
        ``posterior_log_variance_clipped``, its upper end ``log β_t`` unreplaced).
    """
    check_schedule(schedule)
    check_floating(x_t, "x_t")
    logvar = _ddpm_log_variance(schedule, variance)
    t = int(schedule.check_t(t, scalar=True))
    check_bool("clip_x0", clip_x0)
    for name, value in (("noise", noise), ("v", v), ("guidance", guidance)):
        _check_like(value, x_t, name)
    # 1. predicted original sample from the predicted noise, x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t (Eq. 15 of Ho et al.)
    x0 = schedule.eps_to_x0(eps, x_t, t)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
    # 2. posterior mean μ̃_t(x_t, x̂_0) of q(x_{t-1} | x_t, x_0) (Eq. 7)
    mean, _, _ = schedule.q_posterior(x0, x_t, t)
    if t == 0 and guidance is None:
        return mean, x0
    # 3. the step's standard deviation σ_t
    std = torch.exp(0.5 * logvar[t]).to(device=x_t.device, dtype=x_t.dtype)
    if variance == "learned_range":
        if v is None or v.shape != x_t.shape:
            raise ValueError("variance='learned_range' needs the model's variance output v with x_t's shape")
        frac = (v + 1) / 2
        log_small = schedule.posterior_log_variance_clipped[t].to(x_t)
        std = torch.exp(0.5 * (frac * logvar[t].to(x_t) + (1 - frac) * log_small))
    # 4. classifier guidance: μ̃ + Σ_t ∇ log p(y | x_t) (Algorithm 1 of Dhariwal & Nichol 2021)
    if guidance is not None:
        var = schedule.at("posterior_variance", t, x_t) if variance == "fixedsmall" else std**2  # unclipped β̃_t
        mean = mean + var * guidance
    if t == 0:
        return mean, x0
    # 5. sample x_{t-1} = mean + σ_t z
    if noise is None:
        raise ValueError("noise is required for t > 0")
    return mean + std * noise, x0


def _eps_and_v(model, x, t: int, schedule: Schedule, model_kwargs, learned: bool):
    """``(ε̂, v)``: the network's noise prediction and, for "learned_range", its variance output (else None)."""
    if not learned:
        return model_eps(model, x, t, schedule, model_kwargs), None
    tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
    out, v = model(x, tt, **(model_kwargs or {})).chunk(2, dim=1)  # [ε̂, v]
    return schedule.to_eps(out, x, t, getattr(model, "prediction", "eps")), v


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
    """Ancestral sampling (Algorithm 2 of Ho et al. 2020), optionally respaced and classifier-guided.

    Args:
        model: ``model(x_t, t, **model_kwargs)`` predicting ε (or what ``model.prediction`` says).
        x_T: initial noise ``(N, …)`` or a shape to draw it from ``generator``.
        schedule: the training schedule.
        steps: number of denoising steps (default ``T``); fewer respace the schedule (:func:`diffu.sampling.respaced`,
            Nichol & Dhariwal 2021: the kept ᾱ values are unchanged, the betas recomputed, the network the same).
        spacing: which ``steps`` timesteps (:data:`diffu.sampling.SPACINGS`).
        variance: "fixedsmall" (β̃_t), "fixedlarge" (β_t) or "learned_range" (interpolated by the network's
            second output half, for ``learn_sigma`` models such as DiT); see :func:`ddpm_step`.
        clip_x0: clip x̂_0 to [-1, 1] as the original sampler does.
        cond_fn: classifier guidance, ``cond_fn(x_t, t, **model_kwargs) -> s ∇_x log p(y | x_t)`` evaluated at the
            original timestep (e.g. :class:`diffu.guidance.ClassifierGuidance`); it shifts each step's mean by
            Σ_t times its value (Dhariwal & Nichol 2021, Algorithm 1).
        model_kwargs, generator, progress, callback: as every sampler (:func:`diffu.sampling.check_sampler_args`).

    Returns:
        The sample ``x_0`` with ``x_T``'s shape, device and dtype.

    Raises:
        TypeError: a model, ``cond_fn`` or ``callback`` that is not callable, a ``generator`` that is not a
            ``torch.Generator``, ``progress``/``clip_x0`` not bools, ``model_kwargs`` not a dict.
        ValueError: ``x_T`` neither a finite floating-point tensor nor a shape of positive ints, ``steps`` outside
            ``[1, T]``, an unknown ``spacing`` or ``variance``.
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback, model_kwargs=model_kwargs,
                       cond_fn=cond_fn)  # fmt: skip
    check_schedule(schedule)
    check_bool("clip_x0", clip_x0)
    ts, sched = respaced(schedule, steps, spacing)  # model timesteps (increasing) and the respaced ᾱ
    _ddpm_log_variance(schedule, variance)  # validates ``variance`` before any work
    learned = variance == "learned_range"
    if learned and not getattr(model, "learn_sigma", False):
        raise ValueError("variance='learned_range' needs a model with learn_sigma=True (it outputs [ε̂, v])")
    x = initial_noise(x_T, generator, model=model)
    steps = len(ts)
    with torch.no_grad():
        for i in tqdm(range(steps - 1, -1, -1), disable=not progress, desc=f"DDPM-{steps}"):
            t = int(ts[i])
            # 1. the network at the original timestep: ε̂ (and v for "learned_range")
            eps, v = _eps_and_v(model, x, t, schedule, model_kwargs, learned)
            # 2. classifier guidance ∇ log p(y | x_t), also at the original timestep
            grad = None if cond_fn is None else model_cond(cond_fn, x, t, model_kwargs)
            # 3. the ancestral step i of the respaced schedule (no noise at the last one)
            noise = noise_like(x, generator) if i > 0 else None
            x, x0 = ddpm_step(sched, x, i, eps, variance=variance, clip_x0=clip_x0, noise=noise, v=v, guidance=grad)
            if callback is not None:
                callback(SamplerState(steps - 1 - i, t, x, x0))
    return x


# ----------------------------------------------------------------------------------------------------------------
# DDIM
# ----------------------------------------------------------------------------------------------------------------


def ddim_step(schedule: Schedule, x_t, t: int, t_prev: int, eps, *, eta=0.0, clip_x0=False, noise=None):
    """One generalised DDIM step from ``t`` to ``t_prev < t`` (Eq. 12 of Song et al. 2021).

    ``x_prev = √ᾱ_prev x̂_0 + √(1 - ᾱ_prev - σ²) ε̂ + σ z`` with ``σ = η √((1 - ᾱ_prev)/(1 - ᾱ_t)) √(1 - ᾱ_t/ᾱ_prev)``
    (Eq. 16); η = 0 is deterministic DDIM, η = 1 has DDPM's posterior variance.

    Args:
        schedule: the training schedule (``t`` and ``t_prev`` are its timesteps).
        x_t: the current state ``(N, …)``.
        t: the current timestep in ``[0, T-1]``.
        t_prev: the next timestep of the grid, in ``[-1, t)``; ``-1`` is the clean end (ᾱ = 1).
        eps: the predicted noise ε̂, shaped like ``x_t``.
        eta: η ∈ [0, 1].
        clip_x0: clip x̂_0 to [-1, 1] and re-derive ε̂ from it (guided-diffusion's ``clip_denoised``).
        noise: ``z ~ N(0, I)`` of exactly ``x_t``'s shape (one draw per sample); required when ``eta > 0``.

    Returns:
        ``(x_prev, x̂_0)``, both like ``x_t``. NaN in ``x_t`` or ``eps`` propagates.

    Raises:
        TypeError: ``schedule`` not a :class:`~diffu.schedules.Schedule`, ``eta`` not a number, ``clip_x0`` not a
            bool.
        ValueError: ``x_t`` not floating; ``t`` not one timestep in range; ``t_prev`` not an integer in
            ``[-1, t)``; ``eta`` outside [0, 1] or NaN; ``eps`` or ``noise`` not of ``x_t``'s shape (a ``(1, …)``
            noise is refused, not broadcast); ``noise`` missing when ``eta > 0``.
    """
    check_schedule(schedule)
    check_floating(x_t, "x_t")
    _check_eta(eta)
    check_bool("clip_x0", clip_x0)
    t = int(schedule.check_t(t, scalar=True))
    if isinstance(t_prev, torch.Tensor) and t_prev.numel() == 1 and not t_prev.is_floating_point():
        t_prev = int(t_prev)
    if not isinstance(t_prev, (int, np.integer)) or isinstance(t_prev, bool) or not -1 <= t_prev < t:
        raise ValueError(f"t_prev must be an integer in [-1, t) = [-1, {t}), got {t_prev!r:.60}")
    _check_like(noise, x_t, "noise")
    # 1. ᾱ_t and ᾱ_prev (ᾱ = 1 after the last step: Song et al.'s α_0 = 1)
    ab, ab_prev = schedule.alpha_bar_at(t, x_t), schedule.alpha_bar_at(t_prev, x_t)
    # 2. predicted original sample from the predicted noise, "predicted x_0" of Eq. 12
    x0 = schedule.eps_to_x0(eps, x_t, t)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        eps = schedule.x0_to_eps(x0, x_t, t)  # keep ε consistent with the clipped x̂_0 (guided-diffusion)
    # 3. the noise level σ_t(η) of Eq. 16
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
    # 4. x_prev = √ᾱ_prev x̂_0 + "direction pointing to x_t" √(1 - ᾱ_prev - σ²) ε̂ (Eq. 12)
    x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
    # 5. + "random noise" σ_t z
    if eta > 0:
        if noise is None:
            raise ValueError("noise is required when eta > 0")
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def _check_timesteps(schedule: Schedule, timesteps) -> torch.Tensor:
    if not isinstance(timesteps, torch.Tensor):
        if isinstance(timesteps, (str, bytes)) or not isinstance(timesteps, Sequence | np.ndarray | range):
            raise TypeError(f"timesteps must be a sequence of integer timesteps, got {type(timesteps).__name__}")
        timesteps = list(timesteps)
    ts = schedule.check_t(timesteps, "timesteps")
    if ts.ndim != 1 or len(ts) == 0 or bool((ts[1:] >= ts[:-1]).any()):
        raise ValueError("timesteps must be a non-empty, strictly decreasing sequence")
    return ts


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
    """DDIM sampling (Song et al. 2021, Eq. 12) over ``steps`` timesteps; NFE = ``steps``.

    Args:
        model: ``model(x_t, t, **model_kwargs)`` predicting ε (or what ``model.prediction`` says).
        x_T: initial noise ``(N, …)`` or a shape to draw it from ``generator``.
        schedule: the training schedule.
        steps: number of steps, timesteps chosen by ``spacing`` (:func:`diffu.sampling.ddim_timesteps`) unless an
            explicit strictly decreasing ``timesteps`` list is given.
        eta: η ∈ [0, 1]; 0 is deterministic, 1 ancestral-like (:func:`ddim_step`).
        clip_x0: clip x̂_0 to [-1, 1] (ε̂ re-derived from it).
        cond_fn: classifier guidance ``cond_fn(x_t, t, **model_kwargs) -> s ∇_x log p(y | x_t)``, applied as a
            shift of the predicted noise ``ε̃ = ε̂ - √(1 - ᾱ_t) · cond_fn(…)`` (the score-based form for
            deterministic samplers, Dhariwal & Nichol 2021, Algorithm 2); x̂_0 and the step follow from ε̃.
        model_kwargs, generator, progress, callback: as every sampler (:func:`diffu.sampling.check_sampler_args`).

    Returns:
        ``x_0`` with ``x_T``'s shape, device and dtype.

    Raises:
        TypeError: a model, ``cond_fn`` or ``callback`` that is not callable, a ``generator`` that is not a
            ``torch.Generator``, ``progress``/``clip_x0`` not bools, ``model_kwargs`` not a dict, ``eta`` not a
            number.
        ValueError: ``x_T`` neither a finite floating-point tensor nor a shape of positive ints, ``steps`` outside
            ``[1, T]`` (without ``timesteps``), an unknown ``spacing``, ``eta`` outside [0, 1], ``timesteps`` not
            strictly decreasing in ``[0, T-1]``.
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback, model_kwargs=model_kwargs,
                       cond_fn=cond_fn)  # fmt: skip
    check_schedule(schedule)
    _check_eta(eta)
    check_bool("clip_x0", clip_x0)
    ts = ddim_timesteps(schedule.T, steps, spacing) if timesteps is None else _check_timesteps(schedule, timesteps)
    x = initial_noise(x_T, generator, model=model)
    prev = torch.cat([ts[1:], torch.tensor([-1])])  # the next timestep of each step; -1: the clean end
    with torch.no_grad():
        for i, (t, tp) in enumerate(tqdm(list(zip(ts.tolist(), prev.tolist())), disable=not progress,
                                         desc=f"DDIM-{len(ts)}")):  # fmt: skip
            # 1. ε̂ = ε_θ(x_t, t)
            eps = model_eps(model, x, t, schedule, model_kwargs)
            # 2. classifier guidance as a shift of ε̂: ε̃ = ε̂ - √(1 - ᾱ_t) ∇ log p(y | x_t) (Algorithm 2 of D&N)
            clip = clip_x0
            if cond_fn is not None:
                if clip_x0:  # as guided-diffusion: clip x̂_0 first, then shift ε (the shifted x̂_0 is not re-clipped)
                    eps = schedule.x0_to_eps(schedule.eps_to_x0(eps, x, t).clamp(-1, 1), x, t)
                eps = eps - (1 - schedule.alpha_bar_at(t, x)).sqrt() * model_cond(cond_fn, x, t, model_kwargs)
                clip = False
            # 3. the DDIM step t → t_prev (Eq. 12)
            noise = noise_like(x, generator) if eta > 0 else None
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
    """Deterministic DDIM inversion (η = 0): the DDIM ODE step run backwards, data → noise.

    Args:
        model: ``model(x_t, t, **model_kwargs)`` predicting ε (or what ``model.prediction`` says).
        x0: clean data ``(N, …)``, a floating-point tensor without NaN or infinity.
        schedule: the training schedule.
        steps, spacing: the grid of :func:`ddim` (the same timesteps, visited in increasing order).
        model_kwargs, progress, callback: as every sampler (:func:`diffu.sampling.check_sampler_args`).

    Returns:
        ``x_T`` such that ``ddim(model, x_T, schedule, steps=steps, spacing=spacing)`` approximately returns ``x0``.

    Raises:
        TypeError: a model or ``callback`` that is not callable, ``progress`` not a bool, ``model_kwargs`` not a
            dict.
        ValueError: ``x0`` not a floating-point tensor with a batch dimension, or with NaN or infinity; ``steps``
            outside ``[1, T]``; an unknown ``spacing``.

    Notes:
        Each step from level ``s`` (ᾱ_s; ᾱ = 1 for the clean data) to the next timestep ``t`` evaluates the network
        at ``(x_s, t)``: ``ε_θ(x_s, t) ≈ ε_θ(x_t, t)`` is the usual approximation (Song et al. 2021, §4.3; Mokady et
        al. 2023), exact only for a network that does not depend on ``x``.
    """
    check_sampler_args(model, progress=progress, callback=callback, model_kwargs=model_kwargs)
    check_schedule(schedule)
    check_floating(x0, "x0")
    if x0.ndim == 0:
        raise ValueError("x0 must have a batch dimension (N, …), got a 0-d tensor")
    check_finite(x0, "x0")
    ts = ddim_timesteps(schedule.T, steps, spacing).flip(0).tolist()  # increasing
    x = x0
    s = -1
    with torch.no_grad():
        for i, t in enumerate(tqdm(ts, disable=not progress, desc=f"DDIM-inv-{steps}")):
            # 1. ε̂ at the *next* timestep, evaluated on the current state
            eps = model_eps(model, x, t, schedule, model_kwargs)
            # 2. x̂_0 from level s, then the deterministic DDIM step up to level t (Eq. 12 with η = 0, reversed)
            ab_s, ab_t = schedule.alpha_bar_at(s, x), schedule.alpha_bar_at(t, x)
            x0_hat = (x - (1 - ab_s).sqrt() * eps) / ab_s.sqrt()
            x = ab_t.sqrt() * x0_hat + (1 - ab_t).sqrt() * eps
            s = t
            if callback is not None:
                callback(SamplerState(i, t, x, x0_hat))
    return x
