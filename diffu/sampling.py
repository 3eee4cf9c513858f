"""The sampler kernel: what every sampler and solver of diffu shares (chapter §2.2 introduces it).

- timestep grids: :data:`SPACINGS`, :func:`ddim_timesteps` (the model timesteps of a run) and :func:`respaced`
  (those timesteps with the schedule respaced to them, for ancestral samplers);
- randomness: :func:`initial_noise` (``x_T`` from a tensor or a shape) and :func:`noise_like`
  (CONTRIBUTING.md, conventions 5 and 6);
- the network: :func:`model_eps` (any parameterisation → ε) and :func:`model_cond` (classifier guidance);
- reporting: :class:`SamplerState`, passed to every sampler's ``callback``, and :class:`Trajectory`, a callback
  that records the states for plots.

ᾱ at the clean end (``t = -1``) is :meth:`diffu.schedules.Schedule.alpha_bar_at`; argument checks are in
:mod:`diffu.checks`. The samplers themselves live in :mod:`diffu.samplers`, :mod:`diffu.sde`, :mod:`diffu.flow`
and :mod:`diffu.inverse`; this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from .checks import check_shape, check_steps
from .schedules import Schedule

__all__ = [
    "SPACINGS",
    "SamplerState",
    "Trajectory",
    "ddim_timesteps",
    "initial_noise",
    "model_cond",
    "model_eps",
    "noise_like",
    "respaced",
]

#: The timestep spacings that :func:`ddim_timesteps` accepts.
SPACINGS = ("leading", "trailing", "linspace")


# ----------------------------------------------------------------------------------------------------------------
# What a sampler reports
# ----------------------------------------------------------------------------------------------------------------


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
# Timestep grids
# ----------------------------------------------------------------------------------------------------------------


def ddim_timesteps(T: int, steps: int, spacing: str = "leading", offset: int = 0) -> torch.Tensor:
    """The ``steps`` model timesteps of a run over a ``T``-step schedule, in sampling (decreasing) order.

    - "leading": ``(0, k, 2k, …)`` with ``k = T // steps`` (DDIM's "uniform" skip; diffusers' default), + ``offset``;
    - "trailing": ``round(T, T - T/steps, …) - 1`` — starts at ``T - 1`` (Lin et al. 2024);
    - "linspace": ``round(linspace(0, T - 1, steps))``.

    Returns a long tensor ``(steps,)``.
    """
    check_steps(steps, T)
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


def respaced(schedule: Schedule, steps: int | None = None, spacing: str = "leading") -> tuple[torch.Tensor, Schedule]:
    """The grid of an ancestral (DDPM-type) run of ``steps`` steps: ``(ts, sched)``.

    ``ts`` ``(steps,)`` are the *increasing* original timesteps of :func:`ddim_timesteps`, and ``sched`` is the
    schedule respaced to them (Nichol & Dhariwal 2021, §4; :meth:`~diffu.schedules.Schedule.respace`): step ``i``
    of ``sched`` is the model timestep ``ts[i]``, its ᾱ values are the kept ones and its betas are recomputed, so
    the network trained on ``schedule`` is used unchanged. ``steps = None`` or ``T`` gives ``schedule`` itself.
    """
    steps = schedule.T if steps is None else steps
    check_steps(steps, schedule.T)
    ts = ddim_timesteps(schedule.T, steps, spacing).flip(0)  # (steps,) increasing
    return ts, (schedule if steps == schedule.T else schedule.respace(ts))


# ----------------------------------------------------------------------------------------------------------------
# Randomness
# ----------------------------------------------------------------------------------------------------------------


def _model_device(model) -> torch.device:
    p = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    return p.device if p is not None else torch.get_default_device()


def initial_noise(
    x_T,
    generator: torch.Generator | None = None,
    *,
    model=None,
    like: torch.Tensor | None = None,
    shape=None,
    of: str = "",
    name: str = "x_T",
) -> torch.Tensor:
    """The starting state of a sampler: ``x_T`` itself, or standard normal noise drawn from ``generator``.

    Args:
        x_T: a tensor (returned as is, or cast to ``like``'s dtype and device), a shape tuple to draw noise of, or
            None when ``shape`` is given.
        generator: the randomness of the draw (CONTRIBUTING.md, convention 5).
        model: without ``like``, noise is drawn on the generator's device, else on the device of ``model``'s
            parameters (else torch's default device), in the default dtype.
        like: draw (or cast ``x_T``) in this tensor's dtype and device (convention 6).
        shape: the required shape: ``x_T`` must then be None (noise of this shape) or a tensor of this shape
            (:func:`diffu.checks.check_shape`, ``of`` names where the shape comes from, e.g. ``"y's"``).
        name: the argument's name in error messages.

    Returns:
        ``x_T`` ``(N, …)``.
    """
    if shape is not None:
        if x_T is not None:
            check_shape(x_T, shape, name, of)
        x_T = tuple(shape) if x_T is None else x_T
    if isinstance(x_T, torch.Tensor):
        return x_T if like is None else x_T.to(device=like.device, dtype=like.dtype)
    if not isinstance(x_T, (tuple, list, torch.Size)) or not all(isinstance(s, int) and s > 0 for s in x_T):
        raise ValueError(f"{name} must be a tensor or a shape tuple of positive ints, got {x_T!r}")
    if like is not None:
        return torch.randn(tuple(x_T), generator=generator, device=like.device, dtype=like.dtype)
    device = generator.device if generator is not None else _model_device(model)
    return torch.randn(tuple(x_T), generator=generator, device=device)


def noise_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise of ``x``'s shape, dtype and device, drawn from ``generator``."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------------


def _timestep(x: torch.Tensor, t) -> torch.Tensor:
    """The float ``(N,)`` timestep a network receives (CONTRIBUTING.md, convention 2)."""
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)


def model_eps(model: Callable, x, t: int, schedule: Schedule, model_kwargs=None) -> torch.Tensor:
    """Call ``model(x, t, **model_kwargs)`` with a float ``(N,)`` timestep and convert its output to ε according
    to ``model.prediction`` ("eps" when the attribute is missing). A ``learn_sigma`` model's variance half is
    dropped (only DDPM's ``variance="learned_range"`` reads it)."""
    out = model(x, _timestep(x, t), **(model_kwargs or {}))
    if getattr(model, "learn_sigma", False):  # [ε̂, v]
        out = out[:, : out.shape[1] // 2]
    return schedule.to_eps(out, x, t, getattr(model, "prediction", "eps"))


def model_cond(cond_fn: Callable, x: torch.Tensor, t, model_kwargs=None) -> torch.Tensor:
    """Classifier guidance's ``cond_fn(x_t, t, **model_kwargs)`` (e.g. ``s ∇_x log p(y | x_t)``, Dhariwal & Nichol
    2021) with a float ``(N,)`` timestep; checked to return a tensor of ``x``'s shape."""
    g = cond_fn(x, _timestep(x, t), **(model_kwargs or {}))
    if g.shape != x.shape:
        raise ValueError(f"cond_fn must return a tensor of x_t's shape {tuple(x.shape)}, got {tuple(g.shape)}")
    return g
