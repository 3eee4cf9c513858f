"""Flow matching and rectified flow (chapter §2.5): the straight conditional path, its loss and ODE samplers.

**Time convention** (the same as :mod:`diffu.sde`): ``t ∈ [0, 1]`` with **data at t = 0 and noise at t = 1**.
Lipman et al. (2023) put noise at 0 and data at 1; with ``s = 1 - t`` their optimal-transport conditional path
``μ_s = s x_1``, ``σ_s = 1 - (1 - σ_min) s`` becomes

    x_t = a_t x_0 + b_t ε,     a_t = 1 - t,     b_t = σ_min + (1 - σ_min) t,

whose conditional velocity is ``u_t = dx_t/dt = (1 - σ_min) ε - x_0`` (constant along each path). ``σ_min = 0`` is
rectified flow (Liu et al. 2023) and the path used by Stable Diffusion 3. A network ``v_θ(x_t, t)`` regresses
``u_t``; sampling integrates ``dx/dt = v_θ(x, t)`` from ``t = 1`` (noise) to ``t = 0`` (data).

Conversions (:func:`velocity_to_x0`, :func:`velocity_to_eps`, :func:`eps_to_velocity`, :func:`velocity_to_score`)
hold for the marginal path too, because the optimal ``v_θ`` is ``E[u_t | x_t]``; :class:`FlowAsEps` uses them to let
the discrete samplers of §2.2 (DDPM, DDIM) and the SDE samplers drive a flow-matching network.

**Bad input.** Paired tensors (``x0`` and ``noise``, ``v`` and ``x_t``) must be floating-point tensors of one shape
(no broadcasting), times lie in [0, 1] (a scalar or one per sample), ``σ_min`` in [0, 1): otherwise a
``ValueError``/``TypeError`` names the argument. :func:`flow_matching_loss` refuses NaN data; the path and the
conversions are pointwise, so NaN in an input propagates to the same entries of the result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .checks import (
    check_batch,
    check_callable,
    check_choice,
    check_finite,
    check_floating,
    check_int,
    check_labels,
    check_real,
)
from .ode import SOLVERS, integrate
from .sampling import SamplerState, check_sampler_args, check_schedule, initial_noise
from .schedules import Schedule
from .sde import check_time
from .train import label_kwargs

__all__ = [
    "FlowAsEps",
    "eps_to_velocity",
    "flow_coefficients",
    "flow_matching_loss",
    "flow_path",
    "heun",
    "euler",
    "reflow_pairs",
    "sample",
    "target_velocity",
    "velocity_to_eps",
    "velocity_to_score",
    "velocity_to_x0",
]


def _check_sigma_min(sigma_min):
    check_real("sigma_min", sigma_min, 0, 1, high_open=True)


def _check_pair(a, b, an: str, bn: str) -> None:
    """Two floating-point tensors of one shape (no broadcasting: a ``(1, D)`` tensor is refused, not repeated)."""
    check_floating(a, an)
    check_floating(b, bn)
    if a.shape != b.shape:
        raise ValueError(f"{an} and {bn} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def flow_coefficients(t, x: torch.Tensor, sigma_min: float = 0.0):
    """``(a_t, b_t)`` of the path ``x_t = a_t x_0 + b_t ε`` as tensors broadcastable against ``x``.

    Args:
        t: a time in [0, 1], or ``(N,)`` times (one per sample of ``x``; :func:`diffu.sde.check_time`).
        x: a floating-point tensor ``(N, …)`` whose dtype, device and rank the result follows.
        sigma_min: the path's final noise level, in [0, 1).

    Raises:
        TypeError: ``t`` or ``sigma_min`` not a number (``t`` also: not a real tensor).
        ValueError: ``t`` outside [0, 1] or not matching ``x``'s batch size, ``x`` not floating, ``sigma_min``
            outside [0, 1).
    """
    _check_sigma_min(sigma_min)
    t = check_time(t, x)
    return 1 - t, sigma_min + (1 - sigma_min) * t


def flow_path(x0: torch.Tensor, noise: torch.Tensor, t, sigma_min: float = 0.0) -> torch.Tensor:
    """A point on the conditional path: ``x_t = (1 - t) x_0 + (σ_min + (1 - σ_min) t) ε`` (data at t = 0).

    ``x0`` and ``noise`` are floating-point tensors of one shape ``(N, …)`` (``ValueError`` otherwise); ``t`` and
    ``sigma_min`` as in :func:`flow_coefficients`. NaN propagates entry by entry.
    """
    _check_pair(x0, noise, "x0", "noise")
    a, b = flow_coefficients(t, x0, sigma_min)
    return a * x0 + b * noise


def target_velocity(x0: torch.Tensor, noise: torch.Tensor, sigma_min: float = 0.0) -> torch.Tensor:
    """The conditional velocity ``u = dx_t/dt = (1 - σ_min) ε - x_0`` (Lipman et al. 2023, Eq. 23, time-reversed).

    ``x0`` and ``noise`` are floating-point tensors of one shape (``ValueError`` otherwise: a ``(1, …)`` noise is
    not broadcast over the batch); NaN propagates entry by entry.
    """
    _check_sigma_min(sigma_min)
    _check_pair(x0, noise, "x0", "noise")
    return (1 - sigma_min) * noise - x0


def velocity_to_x0(v, x_t, t, sigma_min: float = 0.0):
    """``x̂_0 = (c x_t - b_t v) / (c a_t + b_t)`` with ``c = 1 - σ_min``.

    Every conversion takes ``v`` (or ``eps``) and ``x_t`` as floating-point tensors of one shape ``(N, …)`` and
    ``t`` a scalar or ``(N,)`` in [0, 1] (``ValueError`` otherwise); NaN propagates entry by entry.
    """
    _check_pair(v, x_t, "v", "x_t")
    a, b = flow_coefficients(t, x_t, sigma_min)
    c = 1 - sigma_min
    return (c * x_t - b * v) / (c * a + b)


def velocity_to_eps(v, x_t, t, sigma_min: float = 0.0):
    """``ε̂ = (a_t v + x_t) / (c a_t + b_t)`` with ``c = 1 - σ_min`` (checks as :func:`velocity_to_x0`)."""
    _check_pair(v, x_t, "v", "x_t")
    a, b = flow_coefficients(t, x_t, sigma_min)
    return (a * v + x_t) / ((1 - sigma_min) * a + b)


def eps_to_velocity(eps, x_t, t, sigma_min: float = 0.0):
    """``v = c ε - x̂_0`` with ``x̂_0 = (x_t - b_t ε) / a_t`` (undefined at t = 1, where a_t = 0; checks as
    :func:`velocity_to_x0`)."""
    _check_pair(eps, x_t, "eps", "x_t")
    a, b = flow_coefficients(t, x_t, sigma_min)
    if bool((a == 0).any()):
        raise ValueError("eps_to_velocity is undefined at t = 1 (no data left in x_t)")
    return (1 - sigma_min) * eps - (x_t - b * eps) / a


def velocity_to_score(v, x_t, t, sigma_min: float = 0.0):
    """``∇ log p_t(x_t) = -ε̂ / b_t`` (Tweedie for the Gaussian path; undefined where b_t = 0; checks as
    :func:`velocity_to_x0`)."""
    _check_pair(v, x_t, "v", "x_t")
    _, b = flow_coefficients(t, x_t, sigma_min)
    if bool((b == 0).any()):
        raise ValueError("the score is undefined at t = 0 when sigma_min = 0")
    return -velocity_to_eps(v, x_t, t, sigma_min) / b


def flow_matching_loss(
    model,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    y: torch.Tensor | None = None,
    p_uncond: float = 0.0,
    sigma_min: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Conditional flow matching: ``E_{t~U(0,1), ε} ‖v_θ(x_t, t) - u_t‖²`` (Lipman et al. 2023, Eq. 9).

    ``noise`` fixes the coupling (rectified flow's *reflow* trains on pairs (x_0, ε) produced by a first model —
    :func:`reflow_pairs`); by default ε is independent Gaussian noise. ``y``/``p_uncond`` as in
    :func:`diffu.train.diffusion_loss` (null-label dropout for classifier-free guidance).

    Raises:
        TypeError: ``model`` not callable or not returning a tensor, a bad ``generator``, a non-number ``p_uncond``
            or ``sigma_min``.
        ValueError: ``x0`` not floating or not finite; ``noise`` not of ``x0``'s shape; ``y`` not one class index
            per sample (in range when the model has ``num_classes``); ``p_uncond > 0`` for a model without
            ``num_classes``; ``p_uncond`` outside [0, 1]; ``sigma_min`` outside [0, 1); a model output of another
            shape than ``x0`` (the loss would broadcast it).
    """
    check_sampler_args(model, generator=generator)
    check_floating(x0, "x0")
    if x0.ndim == 0:
        raise ValueError("x0 must have a batch dimension (N, …), got a 0-d tensor")
    check_finite(x0, "x0")
    check_real("p_uncond", p_uncond, 0, 1)
    _check_sigma_min(sigma_min)
    if noise is not None:
        _check_pair(x0, noise, "x0", "noise")
    n = x0.shape[0]
    if y is not None:
        num_classes = getattr(model, "num_classes", None)
        if num_classes is None:
            check_batch(y, n, "y", "x0's")
            if p_uncond > 0:
                raise ValueError("p_uncond > 0 needs a model with num_classes (its null label is num_classes)")
        else:
            check_labels(y, num_classes, n, "y", null=True)
    t = torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)  # (N,)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = flow_path(x0, noise, t, sigma_min)
    out = model(x_t, t, **label_kwargs(model, y, p_uncond, generator))
    if not isinstance(out, torch.Tensor) or out.shape != x0.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must return a velocity of x0's shape {tuple(x0.shape)}, got {got}")
    return F.mse_loss(out, target_velocity(x0, noise, sigma_min))


def _check_steps(steps):
    check_int("steps", steps, 1)


def _velocity_fn(model, sigma_min, model_kwargs):
    def f(x, t):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        v = model(x, tt, **(model_kwargs or {}))
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"model must return a tensor, got {type(v).__name__}")
        return v, velocity_to_x0(v, x, t, sigma_min)

    return f


def sample(
    model: Callable,
    x_1,
    *,
    steps: int = 20,
    solver: str = "euler",
    sigma_min: float = 0.0,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
) -> torch.Tensor:
    """Integrate ``dx/dt = v_θ(x, t)`` from noise (t = 1) to data (t = 0) on a uniform grid of ``steps`` intervals.

    ``x_1``: a noise tensor or a shape (then drawn from ``generator``). NFE = ``steps`` (Euler) or ``2·steps``
    (Heun). The callback gets ``SamplerState(i, t, x, x0_hat)`` with float ``t``.

    Raises:
        TypeError: a model or ``callback`` that is not callable or a model not returning a tensor, a bad
            ``generator``, ``progress`` not a bool, ``model_kwargs`` not a dict.
        ValueError: ``steps`` not an integer >= 1, an unknown ``solver``, ``sigma_min`` outside [0, 1), ``x_1``
            neither a finite floating-point tensor nor a shape, a velocity of another shape than ``x_1``.
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback, model_kwargs=model_kwargs)
    _check_steps(steps)
    check_choice("solver", solver, SOLVERS)
    _check_sigma_min(sigma_min)
    x = initial_noise(x_1, generator, model=model, name="x_1")
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    with torch.no_grad():
        x, _ = integrate(_velocity_fn(model, sigma_min, model_kwargs), x, ts, solver=solver, progress=progress,
                         callback=callback, desc=f"flow-{solver}-{steps}")  # fmt: skip
    return x


def euler(model, x_1, *, steps: int = 20, **kwargs) -> torch.Tensor:
    """Flow-matching sampling with Euler steps (NFE = steps); see :func:`sample`."""
    return sample(model, x_1, steps=steps, solver="euler", **kwargs)


def heun(model, x_1, *, steps: int = 10, **kwargs) -> torch.Tensor:
    """Flow-matching sampling with Heun steps (NFE = 2·steps); see :func:`sample`."""
    return sample(model, x_1, steps=steps, solver="heun", **kwargs)


def reflow_pairs(model, x_1, *, steps: int = 50, solver: str = "heun", **kwargs):
    """Rectified flow's *reflow* coupling (Liu et al. 2023): push noise ``x_1`` through the learned ODE and return
    ``(x_0, noise)`` pairs; training a new flow on them (``flow_matching_loss(..., noise=noise)``) straightens paths,
    so that fewer Euler steps suffice. Arguments and errors as :func:`sample`."""
    check_callable("model", model)
    check_choice("solver", solver, SOLVERS)
    _check_steps(steps)
    noise = initial_noise(x_1, kwargs.pop("generator", None), model=model, name="x_1")
    return sample(model, noise, steps=steps, solver=solver, **kwargs), noise


class FlowAsEps(torch.nn.Module):
    """Wrap a flow-matching network (velocity, ``σ_min = 0``) as an ε-prediction model for a discrete VP
    ``schedule``, so DDPM/DDIM (§2.2) and the VP samplers of :mod:`diffu.sde` can drive it.

    A VP state ``x = √ᾱ x_0 + √(1-ᾱ) ε`` is the flow state at ``t = √(1-ᾱ) / (√ᾱ + √(1-ᾱ))`` scaled by
    ``√ᾱ + √(1-ᾱ)``: both have the same signal-to-noise ratio, and the noise ε is the same.
    """

    prediction = "eps"

    def __init__(self, model, schedule: Schedule):
        check_callable("model", model)
        check_schedule(schedule)
        super().__init__()
        if getattr(model, "prediction", None) != "velocity":
            raise ValueError("FlowAsEps wraps a model whose prediction attribute is 'velocity'")
        if getattr(model, "flow_sigma_min", None) not in (None, 0.0):
            raise ValueError(
                f"FlowAsEps converts σ_min = 0 flows, got a model with flow_sigma_min={model.flow_sigma_min}"
            )
        self.model, self.schedule = model, schedule
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x, t, **kwargs):
        """ε̂ at the VP state ``x`` ``(N, …)`` and (fractional) timesteps ``t``: a scalar or ``(N,)`` in
        ``[-1, T-1]`` (``ValueError`` otherwise)."""
        check_floating(x, "x")
        if x.ndim == 0:
            raise ValueError("x must have a batch dimension (N, …), got a 0-d tensor")
        if isinstance(t, torch.Tensor) and (t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, x.shape[0]))):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got shape {tuple(t.shape)}")
        ab = self.schedule.interp_alpha_bar(t).to(x).reshape(-1, *([1] * (x.ndim - 1)))  # fractional t allowed
        s, n = ab.sqrt(), (1 - ab).sqrt()
        tf = (n / (s + n)).reshape(-1)  # (N,) flow time with the same SNR
        x_flow = x / (s + n)
        return velocity_to_eps(self.model(x_flow, tf, **kwargs), x_flow, tf)
