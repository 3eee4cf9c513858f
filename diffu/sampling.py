"""The sampler kernel: what every sampler and solver of diffu shares (chapter §2.2 introduces it).

- timestep grids: :data:`SPACINGS`, :func:`ddim_timesteps` (the model timesteps of a run) and :func:`respaced`
  (those timesteps with the schedule respaced to them, for ancestral samplers);
- randomness: :func:`initial_noise` (``x_T`` from a tensor or a shape) and :func:`noise_like`
  (CONTRIBUTING.md, conventions 5 and 6);
- the network: :func:`model_eps` (any parameterisation → ε) and :func:`model_cond` (classifier guidance);
- reporting: :class:`SamplerState`, passed to every sampler's ``callback``, and :class:`Trajectory`, a callback
  that records the states for plots.

- argument checks every sampler shares: :func:`check_sampler_args` (model, generator, progress, callback,
  ``model_kwargs``, ``cond_fn``) and :func:`check_schedule`, called once at a sampler's entry.

ᾱ at the clean end (``t = -1``) is :meth:`diffu.schedules.Schedule.alpha_bar_at`; the generic argument checks are
in :mod:`diffu.checks`. The samplers themselves live in :mod:`diffu.samplers`, :mod:`diffu.sde`, :mod:`diffu.flow`
and :mod:`diffu.inverse`; this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from .checks import (
    check_bool,
    check_callable,
    check_choice,
    check_floating,
    check_generator,
    check_int,
    check_real,
    check_shape,
    check_steps,
    check_tensor,
)
from .schedules import Schedule

__all__ = [
    "SPACINGS",
    "SamplerState",
    "Trajectory",
    "check_sampler_args",
    "check_schedule",
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
    """A callback that keeps (a CPU copy of) every ``every``-th state: ``traj.xs``, ``traj.x0s``, ``traj.ts``.

    Args:
        every: keep the states of steps ``0, every, 2·every, …`` (an integer >= 1).
        max_items: keep only the first ``max_items`` samples of each state (an integer >= 1; None keeps all).

    Raises:
        ValueError: ``every`` or ``max_items`` is not a positive integer; a call with something other than a
            :class:`SamplerState`.
    """

    def __init__(self, every: int = 1, max_items: int | None = None):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be >= 1 (an integer), got {every!r}")
        if max_items is not None:
            check_int("max_items", max_items, 1)
        self.every, self.max_items = every, max_items
        self.ts: list[int] = []
        self.xs: list[torch.Tensor] = []
        self.x0s: list[torch.Tensor] = []

    def __call__(self, state: SamplerState) -> None:
        if not isinstance(state, SamplerState):
            raise TypeError(f"state must be a diffu.sampling.SamplerState, got {type(state).__name__}")
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
    - "trailing": ``round(T, T - T/steps, …) - 1`` — starts at ``T - 1`` (Lin et al. 2024); exactly ``steps``
      of them (diffusers' grid has one too many, ending at -1, for e.g. ``T = 15, steps = 13``);
    - "linspace": ``round(linspace(0, T - 1, steps))``.

    Args:
        T: the schedule's number of steps, an integer >= 1.
        steps: an integer in ``[1, T]``.
        spacing: one of :data:`SPACINGS`.
        offset: added to every "leading" timestep (diffusers' ``steps_offset``), an integer >= 0 that keeps them
            below ``T``; the other spacings take none.

    Returns:
        A long tensor ``(steps,)``.

    Raises:
        ValueError: any argument outside the ranges above.
    """
    check_int("T", T, 1)
    check_steps(steps, T)
    check_choice("spacing", spacing, SPACINGS)
    check_int("offset", offset, 0)
    if offset and spacing != "leading":
        raise ValueError(f"offset applies to spacing='leading' only, got offset={offset} with spacing={spacing!r}")
    if spacing == "leading":
        ts = np.arange(steps) * (T // steps) + offset
    elif spacing == "trailing":
        # np.arange with a float step can return steps + 1 points (the last rounding to -1, e.g. T = 15, steps = 13):
        # keep the first ``steps`` (the same values as diffusers' whenever its grid has the right length)
        ts = np.round(np.arange(T, 0, -T / steps)[:steps])[::-1] - 1
    else:  # "linspace"
        ts = np.linspace(0, T - 1, steps).round()
    if ts.max() >= T or ts.min() < 0:
        raise ValueError(f"offset {offset} moves timesteps outside [0, {T - 1}]")
    return torch.from_numpy(ts.astype(np.int64)[::-1].copy())


def respaced(schedule: Schedule, steps: int | None = None, spacing: str = "leading") -> tuple[torch.Tensor, Schedule]:
    """The grid of an ancestral (DDPM-type) run of ``steps`` steps: ``(ts, sched)``.

    ``ts`` ``(steps,)`` are the *increasing* original timesteps of :func:`ddim_timesteps`, and ``sched`` is the
    schedule respaced to them (Nichol & Dhariwal 2021, §4; :meth:`~diffu.schedules.Schedule.respace`): step ``i``
    of ``sched`` is the model timestep ``ts[i]``, its ᾱ values are the kept ones and its betas are recomputed, so
    the network trained on ``schedule`` is used unchanged. ``steps = None`` or ``T`` gives ``schedule`` itself.

    Raises:
        TypeError: ``schedule`` is not a :class:`~diffu.schedules.Schedule`.
        ValueError: ``steps`` outside ``[1, T]`` or an unknown ``spacing``.
    """
    check_schedule(schedule)
    steps = schedule.T if steps is None else steps
    check_steps(steps, schedule.T)
    ts = ddim_timesteps(schedule.T, steps, spacing).flip(0)  # (steps,) increasing
    return ts, (schedule if steps == schedule.T else schedule.respace(ts))


# ----------------------------------------------------------------------------------------------------------------
# Randomness
# ----------------------------------------------------------------------------------------------------------------


def check_schedule(schedule, name: str = "schedule") -> None:
    """``schedule`` is a :class:`~diffu.schedules.Schedule` (``TypeError`` otherwise, e.g. for an SDE)."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"{name} must be a diffu.schedules.Schedule, got {type(schedule).__name__}")


def check_sampler_args(
    model,
    *,
    generator=None,
    progress: bool = True,
    callback=None,
    model_kwargs=None,
    cond_fn=None,
    name: str = "model",
) -> None:
    """The arguments every sampler shares (CONTRIBUTING.md, convention 4), checked once at its entry.

    Args:
        model: the network, any callable.
        generator: None or a ``torch.Generator`` (:func:`diffu.checks.check_generator`).
        progress: True or False.
        callback: None or a callable taking a :class:`SamplerState`.
        model_kwargs: None or a dict with string keys (passed as ``model(x, t, **model_kwargs)``).
        cond_fn: None or a callable (classifier guidance).
        name: the model argument's name in error messages.

    Raises:
        TypeError: any argument of the wrong kind, named in the message.
    """
    check_callable(name, model)
    check_generator(generator)
    check_bool("progress", progress)
    if callback is not None:
        check_callable("callback", callback)
    if cond_fn is not None:
        check_callable("cond_fn", cond_fn)
    if model_kwargs is not None and (
        not isinstance(model_kwargs, dict) or not all(isinstance(k, str) for k in model_kwargs)
    ):
        raise TypeError(f"model_kwargs must be a dict with string keys or None, got {model_kwargs!r:.80}")


def _check_generator_device(generator, device: torch.device) -> None:
    """A generator draws on its own device: refuse one that cannot draw on ``device`` (torch's own error is obscure)."""
    if generator is not None and generator.device.type != torch.device(device).type:
        raise ValueError(
            f"generator is on {generator.device.type} but the noise is drawn on {torch.device(device).type}: pass a "
            f"generator of that device (torch.Generator(device=...))"
        )


def _is_shape(x_T) -> bool:
    return isinstance(x_T, (tuple, list, torch.Size)) and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and s > 0 for s in x_T
    )


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

    Raises:
        ValueError: ``x_T`` is neither a floating-point tensor without NaN or infinity nor a shape tuple of positive
            ints (an integer ``x_T`` would reach ``torch.randn`` in the sampler's first step), or not of ``shape``;
            ``like`` is not a floating-point tensor; ``generator`` cannot draw on ``like``'s device.
        TypeError: ``generator`` is not a ``torch.Generator`` or None.
    """
    check_generator(generator)
    if like is not None:
        check_floating(like, "like")
    if shape is not None:
        if x_T is not None:
            check_shape(x_T, shape, name, of)
        x_T = tuple(shape) if x_T is None else x_T
    if isinstance(x_T, torch.Tensor):
        check_tensor(x_T, name, floating=True, finite=True)
        if x_T.ndim == 0:
            raise ValueError(f"{name} must have a batch dimension (N, …), got a 0-d tensor")
        return x_T if like is None else x_T.to(device=like.device, dtype=like.dtype)
    if not _is_shape(x_T) or len(x_T) == 0:
        raise ValueError(f"{name} must be a tensor or a shape tuple of positive ints, got {x_T!r:.80}")
    x_T = tuple(int(s) for s in x_T)
    if like is not None:
        _check_generator_device(generator, like.device)
        return torch.randn(x_T, generator=generator, device=like.device, dtype=like.dtype)
    device = generator.device if generator is not None else _model_device(model)
    return torch.randn(x_T, generator=generator, device=device)


def noise_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise of ``x``'s shape, dtype and device, drawn from ``generator``.

    Raises:
        ValueError: ``x`` is not a floating-point tensor (torch cannot draw integer normal noise), or ``generator``
            is on another device type than ``x``.
        TypeError: ``generator`` is not a ``torch.Generator`` or None.
    """
    check_floating(x, "x")
    check_generator(generator)
    _check_generator_device(generator, x.device)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------------


def _timestep(x: torch.Tensor, t) -> torch.Tensor:
    """The float ``(N,)`` timestep a network receives (CONTRIBUTING.md, convention 2)."""
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)


def _model_output(out, name: str = "model") -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a tensor, got {type(out).__name__}")
    return out


def model_eps(model: Callable, x, t: int, schedule: Schedule, model_kwargs=None) -> torch.Tensor:
    """Call ``model(x, t, **model_kwargs)`` with a float ``(N,)`` timestep and convert its output to ε according
    to ``model.prediction`` ("eps" when the attribute is missing). A ``learn_sigma`` model's variance half is
    dropped (only DDPM's ``variance="learned_range"`` reads it).

    Args:
        model: a callable network (CONTRIBUTING.md, convention 3).
        x: the state ``(N, …)``, a floating-point tensor.
        t: one integer timestep of ``schedule``, in ``[0, T-1]``.
        schedule: the schedule the network was trained on.
        model_kwargs: None or a dict of extra keyword arguments (labels, text).

    Returns:
        ε̂ like ``x``.

    Raises:
        TypeError: ``model`` not callable or not returning a tensor, ``model_kwargs`` not a dict, ``schedule`` not
            a :class:`~diffu.schedules.Schedule`.
        ValueError: ``x`` not floating, ``t`` not one timestep in range, an output of another shape than ``x``.
    """
    check_sampler_args(model, model_kwargs=model_kwargs)
    check_schedule(schedule)
    check_floating(x, "x")
    t = int(schedule.check_t(t, scalar=True))
    out = _model_output(model(x, _timestep(x, t), **(model_kwargs or {})))
    if getattr(model, "learn_sigma", False):  # [ε̂, v]
        out = out[:, : out.shape[1] // 2]
    return schedule.to_eps(out, x, t, getattr(model, "prediction", "eps"))


def model_cond(cond_fn: Callable, x: torch.Tensor, t, model_kwargs=None) -> torch.Tensor:
    """Classifier guidance's ``cond_fn(x_t, t, **model_kwargs)`` (e.g. ``s ∇_x log p(y | x_t)``, Dhariwal & Nichol
    2021) with a float ``(N,)`` timestep; checked to return a tensor of ``x``'s shape.

    Raises:
        TypeError: ``cond_fn`` not callable or not returning a tensor; ``model_kwargs`` not a dict.
        ValueError: ``x`` not floating, ``t`` not a finite number, an output of another shape than ``x``.
    """
    check_sampler_args(cond_fn, model_kwargs=model_kwargs, name="cond_fn")
    check_floating(x, "x")
    check_real("t", t)
    g = _model_output(cond_fn(x, _timestep(x, t), **(model_kwargs or {})), "cond_fn")
    if g.shape != x.shape:
        raise ValueError(f"cond_fn must return a tensor of x_t's shape {tuple(x.shape)}, got {tuple(g.shape)}")
    return g
