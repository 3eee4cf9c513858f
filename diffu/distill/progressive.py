"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models"):
a student learns to take one deterministic DDIM step where its teacher takes two, and each round halves the steps.

The official code is ``google-research/diffusion_distillation`` (``diffusion_distillation/dpm.py``). One round:

1. draw a clean ``x`` and a point ``t`` of the student's ``N``-step grid; ``z_t = α_t x + σ_t ε`` (VP:
   ``α_t = √ᾱ_t``, ``σ_t = √(1 − ᾱ_t)``);
2. the teacher takes two DDIM steps ``t → t' → t''`` on the ``2N``-step grid (``t''`` is the student's next point,
   ``−1`` — the clean end — after its last one);
3. the target is the x̂ that takes ``z_t`` to the teacher's ``z_t''`` in *one* DDIM step (Algorithm 2):
   ``x̃ = (z_t'' − (σ_t''/σ_t) z_t) / (α_t'' − (σ_t''/σ_t) α_t)``;
4. the loss is ``max(SNR_t, 1) · ‖x̂_θ(z_t) − x̃‖²``, the "truncated SNR" weighting (§4 of the paper).

The grids are :func:`distillation_grid`: the "trailing" DDIM spacing, which is nested when the step count halves
(every other point of the 2N grid is the N grid), so the teacher's two steps end exactly where the student's one
step does. Sampling with a student of ``N`` steps is :func:`diffu.samplers.ddim` with ``steps=N``,
``spacing="trailing"``.

Chapter §7 (``book/07_knowledge_distillation.ipynb``) and ``lab9_distillation`` use this module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..checks import check_batch, check_bool, check_callable, check_floating, check_generator, check_int, check_steps
from ..sampling import check_schedule, ddim_timesteps
from ..schedules import Schedule
from ..train import label_kwargs

__all__ = ["check_timesteps", "distillation_grid", "ddim_jump", "model_x0", "progressive_loss", "progressive_target",
           "truncated_snr_weight"]  # fmt: skip


def check_timesteps(schedule: Schedule, t, x: torch.Tensor, name: str = "t", *, x_name: str = "x_t",
                    clean: bool = False) -> torch.Tensor:  # fmt: skip
    """Per-sample integer timesteps of a batch: ``t`` must be a ``(N,)`` integer tensor for ``x`` ``(N, …)`` with
    values in ``[0, T − 1]`` (``[−1, T − 1]`` with ``clean``: −1 is the clean end, ᾱ = 1).

    Args:
        schedule: the :class:`~diffu.schedules.Schedule` the timesteps index.
        t: the timesteps.
        x: the batch they belong to (a floating-point tensor).
        name: the argument's name in messages.
        x_name: the batch's argument name in messages.
        clean: allow −1.

    Returns:
        ``t`` as a long CPU tensor ``(N,)``.

    Raises:
        TypeError: ``schedule`` not a Schedule, ``t`` not a tensor.
        ValueError: ``x`` not floating; ``t`` not integer, not ``(N,)``, or out of range.
    """
    check_schedule(schedule)
    check_floating(x, x_name)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a ({x.shape[0]},) tensor of integer timesteps, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer timesteps, got {t.dtype}")
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"{name} must have shape ({x.shape[0]},) (one timestep per sample), got {tuple(t.shape)}")
    low = -1 if clean else 0
    if t.numel() and (int(t.min()) < low or int(t.max()) >= schedule.T):
        raise ValueError(f"{name} must lie in [{low}, {schedule.T - 1}], got values in [{int(t.min())}, "
                         f"{int(t.max())}]")  # fmt: skip
    return t.detach().long().cpu()


def distillation_grid(T: int, steps: int) -> torch.Tensor:
    """The ``steps`` timesteps of a progressive-distillation student, decreasing, from ``T − 1``.

    The "trailing" spacing of :func:`diffu.sampling.ddim_timesteps`: ``round(T − i·T/steps) − 1``. When ``T/steps``
    is exact in binary (``T = 1000`` and ``steps`` a power of two up to 64, for instance) the grid of ``steps`` is
    every other point of the grid of ``2·steps``.

    Raises:
        ValueError: ``T`` not an integer ≥ 1, ``steps`` not an integer in ``[1, T]``.
    """
    check_int("T", T, 1)
    check_steps(steps, T)
    return ddim_timesteps(T, steps, "trailing")


def model_x0(model: Callable, x_t: torch.Tensor, t: torch.Tensor, schedule: Schedule, model_kwargs=None):
    """x̂_0 of ``model`` at per-sample integer timesteps ``t`` ``(N,)`` (the output converted according to
    ``model.prediction``: "eps", "x0", "v" or "score").

    NaN in ``x_t`` propagates to the result.

    Raises:
        TypeError: ``model`` not callable, ``schedule`` not a Schedule, ``t`` not a tensor.
        ValueError: ``x_t`` not floating (or not what the model takes), ``t`` not ``(N,)`` integers in range, a model
            output of another shape than ``x_t``.
    """
    check_callable("model", model)
    t = check_timesteps(schedule, t, x_t, "t")
    if hasattr(model, "check_input"):
        model.check_input(x_t, "x_t")
    out = model(x_t, t.to(device=x_t.device, dtype=x_t.dtype), **(model_kwargs or {}))
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model must return a tensor, got {type(out).__name__}")
    eps = schedule.to_eps(out, x_t, t, getattr(model, "prediction", "eps"))
    return schedule.eps_to_x0(eps, x_t, t)


def _alpha_sigma(schedule: Schedule, t: torch.Tensor, x: torch.Tensor):
    ab = schedule.alpha_bar_at(t, x).reshape(-1, *([1] * (x.ndim - 1)))
    return ab.sqrt(), (1 - ab).sqrt()


def ddim_jump(schedule: Schedule, z_t: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, x0: torch.Tensor):
    """One deterministic DDIM step per sample, ``t → t_next`` (each in ``[−1, T−1]``, ``−1`` the clean end):
    ``z_next = α_next x̂ + σ_next (z_t − α_t x̂)/σ_t`` (Eq. 12 of Song et al. 2021 with η = 0, written with x̂).

    Args:
        schedule: the schedule ``t`` indexes.
        z_t: ``(N, …)`` states.
        t, t_next: ``(N,)`` integer timesteps, ``t_next < t``; ``t ≥ 0``.
        x0: ``(N, …)`` the predicted clean images.

    Returns:
        ``z_next`` like ``z_t`` (``x0`` itself where ``t_next = −1``). NaN in ``z_t`` or ``x0`` propagates.

    Raises:
        TypeError: ``schedule`` not a Schedule, timesteps not tensors.
        ValueError: ``z_t``/``x0`` not floating tensors of one shape, timesteps not ``(N,)`` integers in range.
    """
    t = check_timesteps(schedule, t, z_t, "t", x_name="z_t")
    t_next = check_timesteps(schedule, t_next, z_t, "t_next", x_name="z_t", clean=True)
    check_floating(x0, "x0")
    if x0.shape != z_t.shape:
        raise ValueError(f"x0 must have z_t's shape {tuple(z_t.shape)}, got {tuple(x0.shape)}")
    a_t, s_t = _alpha_sigma(schedule, t, z_t)
    a_n, s_n = _alpha_sigma(schedule, t_next, z_t)
    return a_n * x0 + s_n * (z_t - a_t * x0) / s_t


def progressive_target(teacher: Callable, z_t: torch.Tensor, t, t_mid, t_next, schedule: Schedule, *,
                       model_kwargs: dict | None = None, clip_x0: bool = True) -> torch.Tensor:  # fmt: skip
    """The student's target x̃: the clean image whose single DDIM step ``t → t_next`` lands where the teacher's two
    steps ``t → t_mid → t_next`` land (Salimans & Ho 2022, Algorithm 2):
    ``x̃ = (z_t'' − (σ_t''/σ_t) z_t) / (α_t'' − (σ_t''/σ_t) α_t)``, which is ``z_t''`` itself when ``t_next = −1``.

    Args:
        teacher: ``teacher(x, t, **model_kwargs)`` (ε, x_0 or v according to its ``prediction``); run without grad.
        z_t: ``(N, …)`` noisy inputs at ``t``.
        t, t_mid, t_next: ``(N,)`` integer timesteps with ``T − 1 ≥ t > t_mid > t_next ≥ −1``.
        schedule: the teacher's schedule.
        model_kwargs: the teacher's extra arguments (labels).
        clip_x0: clip the teacher's x̂_0 to [−1, 1] inside its two steps (as DDIM sampling with clipping does); the
            target itself is not clipped.

    Returns:
        x̃ ``(N, …)``. NaN in ``z_t`` propagates.

    Raises:
        TypeError: ``teacher`` not callable, ``clip_x0`` not a bool, timesteps not tensors.
        ValueError: timesteps not ``(N,)`` integers in range and strictly decreasing, ``z_t`` not floating.
    """
    check_callable("teacher", teacher)
    check_bool("clip_x0", clip_x0)
    t = check_timesteps(schedule, t, z_t, "t", x_name="z_t")
    t_mid = check_timesteps(schedule, t_mid, z_t, "t_mid", x_name="z_t")
    t_next = check_timesteps(schedule, t_next, z_t, "t_next", x_name="z_t", clean=True)
    if not bool(((t > t_mid) & (t_mid > t_next)).all()):
        raise ValueError("the timesteps must decrease: t > t_mid > t_next for every sample")
    with torch.no_grad():
        z = z_t
        for a, b in ((t, t_mid), (t_mid, t_next)):  # 1–2. the teacher's two DDIM steps
            x0 = model_x0(teacher, z, a, schedule, model_kwargs)
            z = ddim_jump(schedule, z, a, b, x0.clamp(-1, 1) if clip_x0 else x0)
        # 3. the x̃ that one DDIM step t → t_next would need to land on z (Algorithm 2 of Salimans & Ho)
        a_t, s_t = _alpha_sigma(schedule, t, z_t)
        a_n, s_n = _alpha_sigma(schedule, t_next, z_t)
        ratio = s_n / s_t
        return (z - ratio * z_t) / (a_n - ratio * a_t)


def truncated_snr_weight(schedule: Schedule, t) -> torch.Tensor:
    """``max(SNR_t, 1)`` with ``SNR_t = ᾱ_t/(1 − ᾱ_t)`` (float64, ``t``'s shape): Salimans & Ho's "truncated SNR"
    weighting of the x-space loss, which equals ``max(‖x − x̂‖², ‖ε − ε̂‖²)``-style weighting (their Eq. 10)."""
    check_schedule(schedule)
    return schedule.snr(t).clamp(min=1.0)


def progressive_loss(student: Callable, x0: torch.Tensor, y: torch.Tensor | None = None, *, teacher: Callable,
                     schedule: Schedule, steps: int, generator: torch.Generator | None = None,
                     p_uncond: float = 0.0, clip_x0: bool = True) -> torch.Tensor:  # fmt: skip
    """One progressive-distillation loss on a batch: the ``steps``-step student against two steps of ``teacher``
    on the ``2·steps`` grid (module docstring, steps 1–4). With ``functools.partial`` over the keyword arguments
    it is a ``loss_fn`` for :func:`diffu.train.train`.

    Args:
        student: the network being trained (``prediction`` "x0", "v" or "eps").
        x0: ``(N, …)`` clean training data.
        y: ``(N,)`` labels for class-conditional networks, or None.
        teacher: the frozen teacher (the original model in round 1, the previous student afterwards).
        schedule: the schedule both networks use.
        steps: the student's step count (the teacher takes ``2·steps``); ``2·steps ≤ T``.
        generator: draws the grid points and the noise.
        p_uncond: probability of replacing a label with the null label for both networks (keeps an unconditional
            student for classifier-free guidance; 0: always conditional).
        clip_x0: passed to :func:`progressive_target`.

    Returns:
        The scalar loss ``mean_n max(SNR_t, 1) · mean_pixels (x̂_θ − x̃)²``.

    Raises:
        TypeError, ValueError: a model that is not callable, ``steps`` not an integer with ``2·steps ≤ T``, data
            that are not a floating batch, labels of another batch size.
    """
    check_callable("student", student)
    check_callable("teacher", teacher)
    check_schedule(schedule)
    check_floating(x0, "x0")
    check_generator(generator)
    if y is not None:
        check_batch(y, x0.shape[0], "y", "x0's")
    check_int("steps", steps, 1, schedule.T // 2)
    n, dev = x0.shape[0], x0.device
    fine = distillation_grid(schedule.T, 2 * steps)  # (2·steps,) decreasing; the student's grid is fine[::2]
    fine = torch.cat([fine, torch.tensor([-1])])
    # 1. a grid point of the student per sample, the teacher's midpoint and the student's next point
    i = torch.randint(0, steps, (n,), generator=generator, device=generator.device if generator else dev).cpu()
    t, t_mid, t_next = fine[2 * i], fine[2 * i + 1], fine[2 * i + 2]
    noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
    z_t = schedule.q_sample(x0, t.to(dev), noise)
    kw = label_kwargs(student, y, p_uncond, generator)
    # 2–3. the two-step teacher target
    target = progressive_target(teacher, z_t, t, t_mid, t_next, schedule, model_kwargs=kw, clip_x0=clip_x0)
    # 4. truncated-SNR weighted x-space error of the student's one step
    pred = model_x0(student, z_t, t, schedule, kw)
    w = truncated_snr_weight(schedule, t).to(device=dev, dtype=x0.dtype)
    return (w * (pred - target).pow(2).flatten(1).mean(1)).mean()
