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
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .ode import SOLVERS, integrate
from .sampling import SamplerState, initial_noise
from .schedules import Schedule
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
    if not 0.0 <= float(sigma_min) < 1.0:
        raise ValueError(f"sigma_min must be in [0, 1), got {sigma_min}")


def _t_like(t, x: torch.Tensor) -> torch.Tensor:
    """``t`` (float or ``(N,)``) as a tensor broadcastable against ``x``; ``ValueError`` outside ``[0, 1]``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if bool(((t < 0) | (t > 1)).any()) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"t must lie in [0, 1] (0 = data, 1 = noise), got {t.min().item()} … {t.max().item()}")
    if t.ndim == 1:
        t = t.reshape(-1, *([1] * (x.ndim - 1)))
    return t


def flow_coefficients(t, x: torch.Tensor, sigma_min: float = 0.0):
    """``(a_t, b_t)`` of the path ``x_t = a_t x_0 + b_t ε`` as tensors broadcastable against ``x``."""
    _check_sigma_min(sigma_min)
    t = _t_like(t, x)
    return 1 - t, sigma_min + (1 - sigma_min) * t


def flow_path(x0: torch.Tensor, noise: torch.Tensor, t, sigma_min: float = 0.0) -> torch.Tensor:
    """A point on the conditional path: ``x_t = (1 - t) x_0 + (σ_min + (1 - σ_min) t) ε`` (data at t = 0)."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 and noise must have the same shape, got {tuple(x0.shape)} and {tuple(noise.shape)}")
    a, b = flow_coefficients(t, x0, sigma_min)
    return a * x0 + b * noise


def target_velocity(x0: torch.Tensor, noise: torch.Tensor, sigma_min: float = 0.0) -> torch.Tensor:
    """The conditional velocity ``u = dx_t/dt = (1 - σ_min) ε - x_0`` (Lipman et al. 2023, Eq. 23, time-reversed)."""
    _check_sigma_min(sigma_min)
    return (1 - sigma_min) * noise - x0


def velocity_to_x0(v, x_t, t, sigma_min: float = 0.0):
    """``x̂_0 = (c x_t - b_t v) / (c a_t + b_t)`` with ``c = 1 - σ_min``."""
    a, b = flow_coefficients(t, x_t, sigma_min)
    c = 1 - sigma_min
    return (c * x_t - b * v) / (c * a + b)


def velocity_to_eps(v, x_t, t, sigma_min: float = 0.0):
    """``ε̂ = (a_t v + x_t) / (c a_t + b_t)`` with ``c = 1 - σ_min``."""
    a, b = flow_coefficients(t, x_t, sigma_min)
    return (a * v + x_t) / ((1 - sigma_min) * a + b)


def eps_to_velocity(eps, x_t, t, sigma_min: float = 0.0):
    """``v = c ε - x̂_0`` with ``x̂_0 = (x_t - b_t ε) / a_t`` (undefined at t = 1, where a_t = 0)."""
    a, b = flow_coefficients(t, x_t, sigma_min)
    if bool((a == 0).any()):
        raise ValueError("eps_to_velocity is undefined at t = 1 (no data left in x_t)")
    return (1 - sigma_min) * eps - (x_t - b * eps) / a


def velocity_to_score(v, x_t, t, sigma_min: float = 0.0):
    """``∇ log p_t(x_t) = -ε̂ / b_t`` (Tweedie for the Gaussian path; undefined where b_t = 0)."""
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
    """
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
    n = x0.shape[0]
    t = torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)  # (N,)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = flow_path(x0, noise, t, sigma_min)
    out = model(x_t, t, **label_kwargs(model, y, p_uncond, generator))
    return F.mse_loss(out, target_velocity(x0, noise, sigma_min))


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")


def _velocity_fn(model, sigma_min, model_kwargs):
    def f(x, t):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        v = model(x, tt, **(model_kwargs or {}))
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
    """
    _check_steps(steps)
    x = initial_noise(x_1, generator, model=model)
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
    so that fewer Euler steps suffice."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    noise = initial_noise(x_1, kwargs.pop("generator", None), model=model)
    return sample(model, noise, steps=steps, solver=solver, **kwargs), noise


class FlowAsEps(torch.nn.Module):
    """Wrap a flow-matching network (velocity, ``σ_min = 0``) as an ε-prediction model for a discrete VP
    ``schedule``, so DDPM/DDIM (§2.2) and the VP samplers of :mod:`diffu.sde` can drive it.

    A VP state ``x = √ᾱ x_0 + √(1-ᾱ) ε`` is the flow state at ``t = √(1-ᾱ) / (√ᾱ + √(1-ᾱ))`` scaled by
    ``√ᾱ + √(1-ᾱ)``: both have the same signal-to-noise ratio, and the noise ε is the same.
    """

    prediction = "eps"

    def __init__(self, model, schedule: Schedule):
        super().__init__()
        if getattr(model, "prediction", None) != "velocity":
            raise ValueError("FlowAsEps wraps a model whose prediction attribute is 'velocity'")
        self.model, self.schedule = model, schedule
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x, t, **kwargs):
        ab = self.schedule.interp_alpha_bar(t).to(x).reshape(-1, *([1] * (x.ndim - 1)))  # fractional t allowed
        s, n = ab.sqrt(), (1 - ab).sqrt()
        tf = (n / (s + n)).reshape(-1)  # (N,) flow time with the same SNR
        x_flow = x / (s + n)
        return velocity_to_eps(self.model(x_flow, tf, **kwargs), x_flow, tf)
