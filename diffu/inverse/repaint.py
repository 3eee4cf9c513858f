"""RePaint (Lugmayr et al. 2022): inpainting with an unconditional diffusion model and resampling, chapter §4.2.

The known pixels are replaced by a forward-noised copy of the observation at every reverse step; "jumps" back up
the chain (re-noising with ``q(x_{t+1} | x_t)``) give the model time to harmonise the two regions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..samplers import SamplerState, _check_steps, ddim_timesteps, ddpm_step, model_eps
from ..schedules import Schedule
from .operators import _check_int, _check_mask, _mask_for

__all__ = ["repaint", "repaint_schedule"]


def repaint_schedule(steps: int, jump_length: int = 10, jump_n_sample: int = 10) -> list[int]:
    """The levels RePaint visits, in order: respaced indices from ``steps − 1`` down to the clean end ``−1``.

    Going down one index is a reverse (denoising) step, going up one an "undo" (re-noising) step. At every
    ``j = 0, jump_length, 2·jump_length, … < steps − jump_length`` the chain jumps back up ``jump_length`` levels,
    ``jump_n_sample − 1`` times (so every stretch is denoised ``jump_n_sample`` times); ``jump_n_sample = 1`` is
    the plain ``steps − 1, …, 0, −1``. This is ``get_schedule_jump(t_T=steps, n_sample=1, jump_length,
    jump_n_sample)`` of the official code (``andreas128/RePaint``, ``guided_diffusion/scheduler.py``; its
    ``jump2``/``jump3`` levels are 1, i.e. off, in all released configs). diffusers' ``RePaintScheduler`` stores
    the same list without the final −1 and in the original scale:
    ``scheduler.timesteps == repaint_schedule(...)[:-1] * (T // steps)``. The paper uses 250 steps with
    ``jump_length = jump_n_sample = 10`` (≈ 4 500 network evaluations).
    """
    _check_int("steps", steps, 1)
    _check_int("jump_length", jump_length, 1)
    _check_int("jump_n_sample", jump_n_sample, 1)
    jumps = {j: jump_n_sample - 1 for j in range(0, steps - jump_length, jump_length)}
    t, times = steps, []
    while t >= 1:
        t -= 1
        times.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                times.append(t)
    times.append(-1)
    return times


def repaint(
    model: Callable,
    y: torch.Tensor,
    mask: torch.Tensor,
    schedule: Schedule,
    *,
    steps: int = 250,
    jump_length: int = 10,
    jump_n_sample: int = 10,
    spacing: str = "linspace",
    clip_x0: bool = True,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
    x_T=None,
) -> torch.Tensor:
    """RePaint inpainting: DDPM steps with the known region re-injected, plus resampling jumps.

    Over the levels of :func:`repaint_schedule` (indices of the schedule respaced to ``steps``):

    - reverse step from ``t``: the known region is replaced by a fresh forward sample of ``y`` *at level t*,
      ``x_t ← m ⊙ (√ᾱ_t y + √(1−ᾱ_t) z') + (1 − m) ⊙ x_t`` — skipped on the very first step, as in the official
      ``p_sample`` (``conf.inpa_inj_sched_prev``, ``pred_xstart is None``) — then the ancestral step
      ``x_{t−1} = μ̃_t(x_t, x̂_0) + σ_t z`` (σ_t² = β̃_t; no noise at t = 0) on the whole image. The model
      therefore always sees ``m ⊙ y_t + (1 − m) ⊙ x_t``, which is the paper's Eq. 8 (diffusers injects ``y`` at
      level ``t − 1`` right after the step, with the step's own noise, which differs only in the random draws,
      the first step and the final known region: diffusers ends with ``y`` itself there, the official code — and
      we — with the model's x̂_0 of an (almost clean, ᾱ_0 ≈ 1) injection of ``y``);
    - undo step ``t → t + 1``: ``x_{t+1} = √(1 − β_{t+1}) x_t + √β_{t+1} z`` with the respaced β (official
      ``undo`` with ``inpa_inj_time_shift = 1``).

    The official code respaces 1000 → 250 steps with guided-diffusion's ``space_timesteps`` (``spacing =
    "linspace"``, our default; diffusers uses "leading") and a learned-variance 256×256 model; our toy setting is
    the Fashion-MNIST 28×28 ε-model with fixed small variance and usually fewer steps. ``mask`` with no known
    pixel draws no injection noise, so with ``jump_n_sample = 1`` it is exactly :func:`diffu.samplers.ddpm`.
    §4.2.

    Args:
        y: the observed image ``(N, C, H, W)`` in [-1, 1] (values under ``mask == 0`` are ignored).
        mask: binary ``(1 or N, 1 or C, H, W)``, 1 = known (as :class:`~diffu.inverse.operators.Inpainting`).
        steps: respaced number of levels (official: 250).
        jump_length, jump_n_sample: the resampling schedule (official: 10 and 10; ``jump_n_sample = 1``: no
            resampling, plain "replacement" inpainting).
        callback: called after every *reverse* step with ``SamplerState(i, t, x, x̂_0)`` (``t`` original timestep).
        x_T: initial noise with ``y``'s shape (default: drawn from ``generator``).

    Returns:
        The inpainted ``x_0`` with ``y``'s shape, dtype and device.
    """
    _check_steps(steps, schedule.T)
    times = repaint_schedule(steps, jump_length, jump_n_sample)
    if not isinstance(y, torch.Tensor) or y.ndim != 4:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be an image tensor of shape (N, C, H, W), got {got}")
    _check_mask(mask)
    m = _mask_for(mask, y)
    if x_T is None:
        x = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    elif isinstance(x_T, torch.Tensor) and x_T.shape == y.shape:
        x = x_T.to(device=y.device, dtype=y.dtype)
    else:
        raise ValueError(f"x_T must be a tensor of y's shape {tuple(y.shape)}, got {x_T!r:.80}")
    ts = ddim_timesteps(schedule.T, steps, spacing).flip(0)  # increasing original timesteps
    sched = schedule if steps == schedule.T else schedule.respace(ts)
    inject, x0, i = bool(m.any()), None, 0
    with torch.no_grad():
        for t, t_next in tqdm(list(zip(times[:-1], times[1:])), disable=not progress, desc=f"RePaint-{steps}"):
            if t_next > t:  # undo: one forward step t → t + 1
                beta = sched.at("betas", t_next, x)
                x = (1 - beta).sqrt() * x + beta.sqrt() * _randn(x, generator)
                continue
            z = _randn(x, generator) if t > 0 else None
            if x0 is not None and inject:
                ab = sched.at("alpha_bar", t, x)
                x = m * (ab.sqrt() * y + (1 - ab).sqrt() * _randn(x, generator)) + (1 - m) * x
            eps = model_eps(model, x, int(ts[t]), schedule, model_kwargs)
            x, x0 = ddpm_step(sched, x, t, eps, clip_x0=clip_x0, noise=z)
            if callback is not None:
                callback(SamplerState(i, int(ts[t]), x.clone(), x0.clone()))
            i += 1
    return x


def _randn(x, generator):
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
