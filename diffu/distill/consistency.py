"""Consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models"), on a VP teacher.

A consistency function maps every point of a probability-flow ODE trajectory to the trajectory's start:
``f(x_σ, σ) = x_{σ_min}``. The official code (``openai/consistency_models``, ``cm/karras_diffusion.py``) works in
Karras et al.'s variables ``x̄ = x_0 + σ n``; a VP state is the same thing scaled: ``x̄ = x_t/√ᾱ_t`` with
``σ = √(1 − ᾱ_t)/√ᾱ_t``. Its parameterisation (Eq. (5)/Appendix C) enforces ``f(x̄, σ_min) = x̄`` exactly::

    f_θ(x̄, σ) = c_skip(σ) x̄ + c_out(σ) F_θ(x̄, σ),
    c_skip = σ_d² / ((σ − σ_min)² + σ_d²),   c_out = (σ − σ_min) σ_d / √(σ² + σ_d²),   σ_d = 0.5.

The official ``F_θ`` is the EDM teacher's raw network, initialised from it. Our teachers predict ε, so
:func:`consistency_function` reads a network's x̂_0 in EDM's units, ``F = (x̂_0 − c_skip^EDM x̄)/c_out^EDM`` with
``c_skip^EDM = σ_d²/(σ² + σ_d²)``, ``c_out^EDM = σ σ_d/√(σ² + σ_d²)`` (Karras et al. 2022, Table 1): a network
that predicts the teacher's x̂_0 is then the teacher's denoiser away from σ_min, as the official student (the EDM
teacher itself) is at initialisation. A :class:`~diffu.nn.student.StudentUNet` copied from an ε teacher is that only
at low noise: its x̂_0 starts as ᾱ_t times the teacher's.

Training (:class:`ConsistencyDistillation`, Algorithm 2): a grid ``σ_min = σ_0 < … < σ_{N−1}`` of Karras et al.'s
ρ = 7 spacing (:func:`diffu.sde_samplers.karras_timesteps` on the teacher's integer timesteps; the paper uses
N = 18 on CIFAR-10); draw ``n``, ``x_{n+1} = x_0 + σ_{n+1} z``, one Heun step of the teacher's ODE
``dx̄/dσ = ε̂`` to ``σ_n`` gives ``x̂_n``; the loss is ``d(f_θ(x_{n+1}, σ_{n+1}), f_θ⁻(x̂_n, σ_n))`` with θ⁻ an EMA of
θ (μ = 0.95 for CIFAR-10 CD) and ``d`` the squared L2 distance (the paper's LPIPS needs an ImageNet network we do
not ship). Sampling (:func:`consistency_sample`, Algorithm 1): one evaluation at σ_max, then optionally re-noise to
a smaller σ and evaluate again.

Chapter §7 uses this module.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..checks import (
    check_bool,
    check_callable,
    check_floating,
    check_generator,
    check_int,
    check_real,
)
from ..sampling import check_sampler_args, check_schedule, initial_noise
from ..schedules import Schedule
from ..sde_samplers import karras_timesteps
from ..train import label_kwargs
from .progressive import check_timesteps, model_x0

__all__ = ["ConsistencyDistillation", "consistency_function", "consistency_grid", "consistency_sample",
           "edm_sigma", "heun_teacher_step", "multistep_sample"]  # fmt: skip

SIGMA_DATA = 0.5  # σ_d of the official code (images in [−1, 1])


def edm_sigma(schedule: Schedule, t) -> torch.Tensor:
    """``σ = √(1 − ᾱ_t)/√ᾱ_t`` (float64) at integer timesteps ``t`` (``t = −1``, the clean end, gives 0)."""
    check_schedule(schedule)
    ab = schedule.alpha_bar_at(t)
    return ((1 - ab) / ab).sqrt()


def consistency_grid(schedule: Schedule, n: int = 18) -> torch.Tensor:
    """The ``N`` integer timesteps of consistency distillation, *increasing* in noise: ``t_0 = 0`` (σ_min) …
    ``t_{N−1} = T − 1`` (σ_max), ρ = 7 spacing in σ rounded to trained timesteps (fewer come back when rounding
    merges points; :func:`diffu.sde_samplers.karras_timesteps`).

    Raises:
        ValueError: ``n`` not an integer in ``[2, T]``.
    """
    check_schedule(schedule)
    check_int("n", n, 2, schedule.T)
    return karras_timesteps(schedule, n).flip(0)


def consistency_function(model: Callable, x_t: torch.Tensor, t, schedule: Schedule, *, model_kwargs=None,
                         sigma_min: float | None = None, sigma_data: float = SIGMA_DATA) -> torch.Tensor:  # fmt: skip
    """``f_θ(x_t, t)`` of the module docstring, returned in image units (an estimate of ``x_0``).

    Args:
        model: the network (ε, x_0 or v according to its ``prediction``).
        x_t: ``(N, …)`` VP states at integer timesteps ``t`` ``(N,)``.
        schedule: the teacher's schedule.
        sigma_min: the boundary σ where ``f`` is the identity in ``x̄``; default σ at ``t = 0``.
        sigma_data: σ_d > 0.

    Returns:
        ``(N, …)``; equals ``x_t/√ᾱ_t`` exactly where ``σ(t) = σ_min``. NaN in ``x_t`` propagates.

    Raises:
        TypeError: ``model`` not callable, ``schedule`` not a Schedule, ``t`` not a tensor.
        ValueError: ``x_t`` not floating, ``t`` not ``(N,)`` integers in ``[0, T − 1]``, ``sigma_min`` or
            ``sigma_data`` not finite and > 0.
    """
    check_real("sigma_data", sigma_data, 0, low_open=True)
    t = check_timesteps(schedule, t, x_t, "t")
    smin = float(edm_sigma(schedule, 0)) if sigma_min is None else sigma_min
    check_real("sigma_min", smin, 0, low_open=True)
    check_callable("model", model)
    # the scalings in float64 (exact boundary: σ − σ_min is 0 at t = 0), cast like x_t (convention 6)
    ab = schedule.alpha_bar[t.cpu()].reshape(-1, *([1] * (x_t.ndim - 1)))
    sig = ((1 - ab) / ab).sqrt()
    sd2 = sigma_data**2
    c_skip = sd2 / ((sig - smin) ** 2 + sd2)
    ratio = (sig - smin) / sig  # c_out / c_out^EDM
    c_edm = sd2 / (sig**2 + sd2)  # c_skip^EDM
    c_skip, ratio, c_edm, root = (v.to(device=x_t.device, dtype=x_t.dtype) for v in (c_skip, ratio, c_edm, ab.sqrt()))
    xbar = x_t / root
    x0 = model_x0(model, x_t, t, schedule, model_kwargs)
    # f = c_skip x̄ + c_out F with F = (x̂_0 − c_skip^EDM x̄)/c_out^EDM
    return c_skip * xbar + ratio * (x0 - c_edm * xbar)


def heun_teacher_step(teacher: Callable, x_t: torch.Tensor, t, t_prev, schedule: Schedule, *,
                      model_kwargs=None) -> torch.Tensor:  # fmt: skip
    """One Heun step of the teacher's probability-flow ODE ``dx̄/dσ = ε̂(√ᾱ x̄, t)`` from ``t`` to ``t_prev < t``
    (per-sample integer timesteps ``(N,)``, ``t_prev ≥ 0``), in VP units (Karras et al. 2022, Algorithm 1 without
    churn; the official CD's ``heun_solver``). Runs without grad.

    Returns:
        the VP state at ``t_prev``, like ``x_t``. NaN in ``x_t`` propagates.

    Raises:
        TypeError: ``teacher`` not callable, ``schedule`` not a Schedule, timesteps not tensors.
        ValueError: ``x_t`` not floating, timesteps not ``(N,)`` integers in ``[0, T − 1]``, ``t_prev ≥ t``.
    """
    check_callable("teacher", teacher)
    t = check_timesteps(schedule, t, x_t, "t")
    t_prev = check_timesteps(schedule, t_prev, x_t, "t_prev")
    if not bool((t_prev < t).all()):
        raise ValueError("t_prev must be smaller than t for every sample")
    with torch.no_grad():
        ab, ab_p = schedule.at("alpha_bar", t, x_t), schedule.at("alpha_bar", t_prev, x_t)
        s, s_p = ((1 - ab) / ab).sqrt(), ((1 - ab_p) / ab_p).sqrt()
        xbar = x_t / ab.sqrt()

        def slope(xb, tt, a):  # dx̄/dσ = ε̂ = (x̄ − x̂_0)/σ
            x0 = model_x0(teacher, xb * a.sqrt(), tt, schedule, model_kwargs)
            return (xb - x0) / ((1 - a) / a).sqrt()

        d1 = slope(xbar, t, ab)
        x_e = xbar + (s_p - s) * d1  # Euler predictor
        d2 = slope(x_e, t_prev, ab_p)
        return (xbar + (s_p - s) * (d1 + d2) / 2) * ab_p.sqrt()


class ConsistencyDistillation:
    """The consistency-distillation loss as a ``loss_fn`` for :func:`diffu.train.train`, holding the frozen teacher
    and the EMA target network θ⁻.

    ``loss(student, x0, y=None, generator=g)`` first moves θ⁻ towards the student's current weights
    (``θ⁻ ← μ θ⁻ + (1 − μ) θ``: the student's weights are those after the previous optimiser step, so this is the
    official update order), then returns ``mean ‖f_θ(x_{n+1}) − f_θ⁻(x̂_n)‖²`` (module docstring).

    θ⁻ is created as a copy of the student at the first call (so a recipe can build the loss before the student;
    a run resumed from a checkpoint restarts θ⁻ from the resumed student: the checkpoint does not hold it).

    Args:
        teacher: the frozen teacher.
        schedule: the teacher's schedule.
        n: grid size N (:func:`consistency_grid`).
        mu: the target EMA rate μ in [0, 1).
        p_uncond: label-dropout probability (as :func:`diffu.train.diffusion_loss`).
    """

    def __init__(self, teacher: Callable, schedule: Schedule, *, n: int = 18, mu: float = 0.95,
                 p_uncond: float = 0.0):  # fmt: skip
        check_callable("teacher", teacher)
        check_real("mu", mu, 0, 1, high_open=True)
        check_real("p_uncond", p_uncond, 0, 1)
        self.grid = consistency_grid(schedule, n)
        self.teacher, self.schedule, self.mu, self.p_uncond = teacher, schedule, mu, p_uncond
        self.target = None

    def update_target(self, student: torch.nn.Module) -> None:
        """``θ⁻ ← μ θ⁻ + (1 − μ) θ`` (θ⁻ a copy of ``student`` at the first call)."""
        if not isinstance(student, torch.nn.Module):
            raise TypeError(f"student must be a torch.nn.Module, got {type(student).__name__}")
        if self.target is None:
            self.target = copy.deepcopy(student).eval().requires_grad_(False)
            return
        with torch.no_grad():
            for p_t, p in zip(self.target.parameters(), student.parameters(), strict=True):
                p_t.lerp_(p.detach(), 1 - self.mu)

    def __call__(self, student, x0: torch.Tensor, y: torch.Tensor | None = None, *, generator=None):
        check_floating(x0, "x0")
        check_generator(generator)
        self.update_target(student)
        n, dev = x0.shape[0], x0.device
        k = torch.randint(0, len(self.grid) - 1, (n,), generator=generator, device=dev).cpu()
        t_hi, t_lo = self.grid[k + 1], self.grid[k]
        z = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
        x_hi = self.schedule.q_sample(x0, t_hi.to(dev), z)
        kw = label_kwargs(student, y, self.p_uncond, generator)
        x_lo = heun_teacher_step(self.teacher, x_hi, t_hi, t_lo, self.schedule, model_kwargs=kw)
        with torch.no_grad():
            target = consistency_function(self.target, x_lo, t_lo, self.schedule, model_kwargs=kw)
        pred = consistency_function(student, x_hi, t_hi, self.schedule, model_kwargs=kw)
        return (pred - target).pow(2).flatten(1).mean(1).mean()


def multistep_sample(denoise: Callable, x_T: torch.Tensor, schedule: Schedule, timesteps: Sequence[int], *,
                     generator: torch.Generator | None = None, progress: bool = False, clip: bool = True,
                     desc: str = "multistep") -> torch.Tensor:  # fmt: skip
    """Few-step sampling by denoise-and-re-noise (Song et al. 2023, Algorithm 1; ADD samples the same way):
    ``x̂ = D(x_T, t_0)``, then for each further timestep ``t_k``: ``x_k = √ᾱ_k x̂ + √(1 − ᾱ_k) z`` with fresh
    ``z`` and ``x̂ = D(x_k, t_k)``. NFE = ``len(timesteps)``.

    Args:
        denoise: ``denoise(x_t, t) -> x̂_0`` with ``t`` a long ``(N,)`` tensor of integer timesteps.
        x_T: the state at ``timesteps[0]`` ``(N, …)`` (a standard normal draw when ``timesteps[0] = T − 1``).
        timesteps: strictly decreasing integer timesteps in ``[0, T − 1]``, the first being where ``x_T`` lives.
        generator: draws the re-noising noise.
        clip: clip every x̂ to [−1, 1] (the official consistency sampler's ``clip_denoised``).

    Returns:
        ``x̂`` like ``x_T``.

    Raises:
        TypeError: ``denoise`` not callable, a bad ``generator``, ``progress``/``clip`` not bools.
        ValueError: ``timesteps`` empty, not strictly decreasing or out of range; ``x_T`` not floating.
    """
    check_callable("denoise", denoise)
    check_schedule(schedule)
    check_generator(generator)
    check_bool("progress", progress)
    check_bool("clip", clip)
    check_floating(x_T, "x_T")
    ts = [int(v) for v in schedule.check_t(list(timesteps) if not isinstance(timesteps, torch.Tensor) else timesteps,
                                           "timesteps").reshape(-1).tolist()]  # fmt: skip
    if not ts or any(b >= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be a non-empty, strictly decreasing sequence, got {ts}")
    x = x_T
    with torch.no_grad():
        for i, tau in enumerate(tqdm(ts, disable=not progress, desc=desc)):
            if i > 0:  # re-noise the current estimate to t_k
                ab = float(schedule.alpha_bar_at(tau))
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = math.sqrt(ab) * x + math.sqrt(1 - ab) * noise
            x = denoise(x, torch.full((x.shape[0],), tau, dtype=torch.long, device=x.device))
            if clip:
                x = x.clamp(-1, 1)
    return x


def consistency_sample(model: Callable, x_T, schedule: Schedule, *, steps: int = 1,
                       timesteps: Sequence[int] | None = None, model_kwargs: dict | None = None,
                       generator: torch.Generator | None = None, progress: bool = False,
                       clip: bool = True) -> torch.Tensor:  # fmt: skip
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1) with :func:`multistep_sample`; NFE = ``steps``.

    The official re-noising ``x̄_τ = x̂ + √(σ_τ² − σ_min²) z`` differs from :func:`multistep_sample`'s
    ``x̂ + σ_τ z`` (in x̄ units) by ``σ_min² ≈ 10⁻⁴`` under the variance: we use the latter.

    Args:
        model: a consistency model (read through :func:`consistency_function`).
        x_T: initial noise ``(N, …)`` or a shape (VP units: standard normal at ``t = T − 1``).
        steps: the number of evaluations; the re-noising timesteps default to evenly spaced points (by index) of
            :func:`consistency_grid` (``steps = 2``: its middle point).
        timesteps: explicit decreasing re-noising timesteps below ``T − 1`` after the first evaluation
            (``steps − 1`` of them).
        clip: clip every x̂ to [−1, 1].

    Returns:
        ``x̂`` like ``x_T``.

    Raises:
        TypeError, ValueError: as :func:`multistep_sample`; ``steps`` not an integer in ``[1, T]``; ``timesteps`` of
            another length than ``steps − 1``.
    """
    check_sampler_args(model, generator=generator, progress=progress, model_kwargs=model_kwargs)
    check_schedule(schedule)
    check_int("steps", steps, 1, schedule.T)
    if timesteps is None:
        grid = consistency_grid(schedule, min(18, schedule.T))
        idx = torch.linspace(len(grid) - 1, 0, steps + 1)[1:-1].round().long()
        timesteps = grid[idx].tolist()
    timesteps = [int(v) for v in timesteps]
    if len(timesteps) != steps - 1:
        raise ValueError(f"timesteps must hold steps − 1 = {steps - 1} timesteps, got {len(timesteps)}")
    x = initial_noise(x_T, generator, model=model)

    def denoise(x_t, t):
        return consistency_function(model, x_t, t, schedule, model_kwargs=model_kwargs)

    return multistep_sample(denoise, x, schedule, [schedule.T - 1, *timesteps], generator=generator,
                            progress=progress, clip=clip, desc=f"CM-{steps}")  # fmt: skip
