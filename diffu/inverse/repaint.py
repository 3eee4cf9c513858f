"""RePaint (Lugmayr et al. 2022): inpainting with an unconditional diffusion model and resampling, chapter §4.2.

The known pixels are replaced by a forward-noised copy of the observation at every reverse step; "jumps" back up
the chain (re-noising with ``q(x_{t+1} | x_t)``) give the model time to harmonise the two regions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..checks import check_bool, check_finite, check_floating, check_int, check_mask, check_steps, mask_for
from ..samplers import ddpm_step
from ..sampling import (
    SamplerState,
    check_sampler_args,
    check_schedule,
    initial_noise,
    model_eps,
    noise_like,
    respaced,
)
from ..schedules import Schedule

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
    ``scheduler.timesteps == repaint_schedule(...)[:-1] * (T // steps)``.

    Only the downward moves call the network (an undo step is a forward-noising draw), so a run costs
    ``steps + (jump_n_sample − 1) · jump_length · ⌈(steps − jump_length) / jump_length⌉`` evaluations: the paper's
    250 steps with ``jump_length = jump_n_sample = 10`` cost 250 + 9 · 10 · 24 = 2 410 network evaluations (and
    2 160 undo steps), about 10× plain DDPM-250.

    Raises:
        ValueError: ``steps``, ``jump_length`` or ``jump_n_sample`` is not an integer >= 1.
    """
    check_int("steps", steps, 1)
    check_int("jump_length", jump_length, 1)
    check_int("jump_n_sample", jump_n_sample, 1)
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
    """RePaint (Lugmayr et al. 2022, Algorithm 1): DDPM steps with the known region re-injected, plus resampling jumps.

    Args:
        model: ``model(x_t, t, **model_kwargs)`` predicting ε (or what ``model.prediction`` says).
        y: the observed image ``(N, C, H, W)`` in [-1, 1] (values under ``mask == 0`` are ignored).
        mask: binary ``(1 or N, 1 or C, H, W)``, 1 = known (as :class:`~diffu.inverse.operators.Inpainting`).
        schedule: the training schedule.
        steps: respaced number of levels (official: 250).
        jump_length, jump_n_sample: the resampling schedule of :func:`repaint_schedule` (official: 10 and 10;
            ``jump_n_sample = 1``: no resampling, plain "replacement" inpainting).
        spacing: the timesteps kept when ``steps < T`` (official: "linspace").
        clip_x0: clip x̂_0 to [-1, 1].
        callback: called after every *reverse* step with ``SamplerState(i, t, x, x̂_0)`` (``t`` original timestep).
        x_T: initial noise with ``y``'s shape (default: drawn from ``generator``).

    Returns:
        The inpainted ``x_0`` with ``y``'s shape, dtype and device.

    Raises:
        ValueError: ``y`` not a finite floating-point image batch (put any finite value, e.g. 0, under
            ``mask == 0``: a NaN there would still reach the result through ``0 · NaN``); ``mask`` not binary or not
            broadcasting over ``y``; ``steps`` not in ``[1, T]``, ``jump_length``/``jump_n_sample`` not integers
            >= 1, an unknown ``spacing``; ``x_T`` not a finite tensor of ``y``'s shape.
        TypeError: ``model``/``callback`` not callable, ``schedule`` not a :class:`~diffu.schedules.Schedule`,
            ``clip_x0``/``progress`` not bools, a bad ``generator`` or ``model_kwargs``.

    Notes:
        Official code: ``andreas128/RePaint`` (``guided_diffusion/gaussian_diffusion.py::p_sample``, ``undo``),
        a learned-variance 256×256 model respaced 1000 → 250 steps by guided-diffusion's ``space_timesteps``
        ("linspace", our default; diffusers uses "leading"); ours: the Fashion-MNIST 28×28 ε-model with fixed small
        variances and usually fewer steps. As the official code, the injection is skipped on the very first step
        (``pred_xstart is None``) and undo steps use the respaced β (``inpa_inj_time_shift = 1``). The model therefore
        always sees ``m ⊙ y_t + (1 − m) ⊙ x_t`` (the paper's Eq. 8). diffusers injects ``y`` at level ``t − 1`` right
        after the step, with the step's own noise: that differs only in the random draws, the first step and the final
        known region (diffusers ends with ``y`` itself there; the official code and we with the model's x̂_0 of an
        almost clean, ᾱ_0 ≈ 1, injection of ``y``). A ``mask`` with no known pixel draws no injection noise, so with
        ``jump_n_sample = 1`` this is exactly :func:`diffu.samplers.ddpm`. §4.2.
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback, model_kwargs=model_kwargs)
    check_schedule(schedule)
    check_steps(steps, schedule.T)
    check_bool("clip_x0", clip_x0)
    times = repaint_schedule(steps, jump_length, jump_n_sample)
    if not isinstance(y, torch.Tensor) or y.ndim != 4:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be an image tensor of shape (N, C, H, W), got {got}")
    check_floating(y, "y")
    check_finite(y, "y")
    check_mask(mask)
    m = mask_for(mask, y)
    x = initial_noise(x_T, generator, like=y, shape=y.shape, of="y's")
    ts, sched = respaced(schedule, steps, spacing)  # model timesteps (increasing) and the respaced ᾱ, β
    inject, x0, i = bool(m.any()), None, 0
    with torch.no_grad():
        for t, t_next in tqdm(list(zip(times[:-1], times[1:])), disable=not progress, desc=f"RePaint-{steps}"):
            # 1. undo (jump back up): one forward step x_{t+1} = √(1 − β_{t+1}) x_t + √β_{t+1} z, no network call
            if t_next > t:
                beta = sched.at("betas", t_next, x)
                x = (1 - beta).sqrt() * x + beta.sqrt() * noise_like(x, generator)
                continue
            z = noise_like(x, generator) if t > 0 else None
            # 2. known region ← a fresh forward sample of y at level t, m ⊙ (√ᾱ_t y + √(1 − ᾱ_t) z') (Eq. 8; not on
            #    the first step)
            if x0 is not None and inject:
                ab = sched.at("alpha_bar", t, x)
                x = m * (ab.sqrt() * y + (1 - ab).sqrt() * noise_like(x, generator)) + (1 - m) * x
            # 3. the ancestral step x_{t−1} = μ̃_t(x_t, x̂_0) + σ_t z on the whole image (σ_t² = β̃_t)
            eps = model_eps(model, x, int(ts[t]), schedule, model_kwargs)
            x, x0 = ddpm_step(sched, x, t, eps, clip_x0=clip_x0, noise=z)
            if callback is not None:
                callback(SamplerState(i, int(ts[t]), x.clone(), x0.clone()))
            i += 1
    return x
