"""Score-based generative modelling with SDEs (Song et al. 2021), chapter §2.5.

**Time convention** (the same as :mod:`diffu.flow`): continuous ``t ∈ [0, 1]`` with **data at t = 0 and noise at
t = 1**. Each SDE ``dx = f(x, t) dt + g(t) dw`` has a Gaussian perturbation kernel ``x_t = s(t) x_0 + σ(t) ε``
(:meth:`SDE.marginal_coefficients`), so a network trained to predict ε gives the score ``∇ log p_t = -ε̂ / σ(t)``.

* :class:`VPSDE` (DDPM in continuous time), :class:`SubVPSDE`, :class:`VESDE` (SMLD/NCSN).
* :func:`model_score` — the score of any ε-, x0- or score-model at continuous ``t``; :func:`dsm_loss` trains one.
* :class:`FromDiscrete` — run an ε-network trained on a discrete schedule (the shipped UNet) with any of these SDEs.

The samplers (Euler–Maruyama, predictor–corrector, the probability-flow ODE) and the exact likelihood are in
:mod:`diffu.sde_samplers`.

**Bad input.** Parameters are finite positive numbers, times lie in [0, 1] (a scalar or one per sample), states are
floating-point tensors and paired tensors (``x0`` and ``noise``) share one shape: anything else raises a
``ValueError``/``TypeError`` naming the argument (:func:`check_time`, :func:`check_sde`). :func:`dsm_loss` refuses
NaN data; in the pointwise maps (``q_sample``, ``marginal``, ``drift_diffusion``, ``prior_logp``, the models) NaN in
a state propagates to the same entries of the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .checks import (
    check_callable,
    check_device,
    check_dtype,
    check_finite,
    check_floating,
    check_generator,
    check_real,
)
from .sampling import check_sampler_args, check_schedule
from .schedules import Schedule

__all__ = [
    "SDE",
    "SDES",
    "FromDiscrete",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "dsm_loss",
    "make_sde",
    "model_score",
]


def check_time(t, x: torch.Tensor | None = None, name: str = "t") -> torch.Tensor:
    """Continuous times ``t ∈ [0, 1]`` as a float tensor (float64, or ``x``'s dtype and device), shaped
    ``(N, 1, …)`` against ``x`` when ``(N,)``. Shared by :mod:`diffu.sde`, :mod:`diffu.flow` and the samplers.

    Args:
        t: a real number or a real tensor; with ``x``: a scalar, a one-element tensor or ``(N,)``.
        x: a floating-point tensor ``(N, …)`` the times go with (None: any shape of ``t``).
        name: the argument's name in error messages.

    Raises:
        TypeError: ``t`` is not a real number or tensor (a string, a bool, a complex number).
        ValueError: ``t`` NaN, infinite or outside [0, 1]; ``x`` not floating (its dtype would round ``t``); ``t``
            not matching ``x``'s batch size.
    """
    if (
        isinstance(t, (bool, np.bool_, str, bytes))
        or t is None
        or (isinstance(t, torch.Tensor) and (t.dtype == torch.bool or t.is_complex()))
    ):
        raise TypeError(f"{name} must be a real number or a real tensor, got {type(t).__name__} {t!r:.60}")
    if x is not None:
        check_floating(x, "x")
        if x.ndim == 0:
            raise ValueError("x must have a batch dimension (N, …), got a 0-d tensor")
    try:
        t = torch.as_tensor(t, dtype=torch.float64 if x is None else x.dtype, device=None if x is None else x.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a real number or a real tensor, got {t!r:.60}") from err
    if not bool(torch.isfinite(t).all()) or bool(((t < 0) | (t > 1)).any()):
        raise ValueError(f"{name} must lie in [0, 1] (0 = data, 1 = noise), got {t.min().item()} … {t.max().item()}")
    if x is not None:
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, x.shape[0])):
            raise ValueError(
                f"{name} must be a scalar or have shape ({x.shape[0]},) (one per sample of x), got shape "
                f"{tuple(t.shape)}"
            )
        if t.ndim == 1:
            t = t.reshape(-1, *([1] * (x.ndim - 1)))
    return t


def check_sde(sde, name: str = "sde") -> None:
    """``sde`` is an :class:`SDE` (``TypeError`` otherwise, e.g. for a discrete schedule)."""
    if not isinstance(sde, SDE):
        raise TypeError(f"{name} must be a diffu.sde.SDE (VPSDE, SubVPSDE, VESDE), got {type(sde).__name__}")


def _check_batch_tensor(x, name: str) -> None:
    check_floating(x, name)
    if x.ndim == 0:
        raise ValueError(f"{name} must have a batch dimension (N, …), got a 0-d tensor")


# ----------------------------------------------------------------------------------------------------------------
# The three SDEs
# ----------------------------------------------------------------------------------------------------------------


class SDE:
    """Base class: subclasses define ``drift_diffusion`` and ``marginal_coefficients``; the prior is ``N(0, σ(1)²)``
    (VE) or ``N(0, I)`` (VP, sub-VP)."""

    def drift_diffusion(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(x, t), g(t))`` with ``g`` shaped to broadcast against ``x``."""
        raise NotImplementedError

    def marginal_coefficients(self, t, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s(t), σ(t))`` of the perturbation kernel ``q(x_t | x_0) = N(s(t) x_0, σ(t)² I)``."""
        raise NotImplementedError

    def marginal(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of ``q(x_t | x_0)`` for a floating-point ``x0 (N, …)`` and scalar or ``(N,)`` ``t``
        (:func:`check_time`); NaN in ``x0`` propagates to the mean."""
        _check_batch_tensor(x0, "x0")
        s, std = self.marginal_coefficients(t, x0)
        return s * x0, std.expand_as(x0)

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = s(t) x_0 + σ(t) ε``.

        Args:
            x0: clean data ``(N, …)``, a floating-point tensor (NaN propagates to the same entries of ``x_t``).
            t: a time in [0, 1], or ``(N,)`` times (one per sample).
            noise: ε, a floating-point tensor of ``x0``'s shape.

        Raises:
            ValueError: an integer ``x0``, ``noise`` of another shape (no broadcasting), ``t`` outside [0, 1] or not
                matching ``x0``'s batch size.
        """
        _check_batch_tensor(x0, "x0")
        check_floating(noise, "noise")
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
        s, std = self.marginal_coefficients(t, x0)
        return s * x0 + std * noise

    @property
    def prior_std(self) -> float:
        return 1.0

    def prior_sample(self, shape, generator=None, device=None, dtype=None) -> torch.Tensor:
        """``(shape)`` draws from the prior ``N(0, prior_std² I)``, on ``generator``'s device (else ``device``).

        Raises:
            ValueError: ``shape`` not a tuple of positive ints; ``device`` not the generator's; a non-floating
                ``dtype``.
            TypeError: ``generator`` not a ``torch.Generator``; ``device``/``dtype`` of the wrong kind.
        """
        check_generator(generator)
        device = check_device("device", device)
        check_dtype("dtype", dtype)
        if (
            not isinstance(shape, (tuple, list, torch.Size))
            or not shape
            or not all(
                isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)) and k > 0 for k in shape
            )
        ):
            raise ValueError(f"shape must be a tuple of positive ints, got {shape!r:.80}")
        if generator is not None:
            if device is not None and device.type != generator.device.type:
                raise ValueError(f"device {device} differs from the generator's device {generator.device}")
            device = generator.device
        return self.prior_std * torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std² I) summed over all but the first dimension → ``(N,)`` (NaN propagates).

        Raises:
            ValueError: ``z`` not a floating-point tensor with a batch dimension.
        """
        _check_batch_tensor(z, "z")
        d = z[0].numel()
        s = self.prior_std
        return -0.5 * z.reshape(z.shape[0], -1).pow(2).sum(1) / s**2 - d * (math.log(s) + 0.5 * math.log(2 * math.pi))

    def alpha_bar(self, t) -> torch.Tensor:
        """The VP-equivalent ``ᾱ = s² / (s² + σ²)``: the same signal-to-noise ratio as the VP process."""
        s, std = self.marginal_coefficients(t)
        return s**2 / (s**2 + std**2)


@dataclass(frozen=True)
class VPSDE(SDE):
    """Variance-preserving SDE ``dx = -½ β(t) x dt + √β(t) dw``, ``β(t) = β_min + t (β_max - β_min)`` (Song et al.
    2021, Eq. 11) — the continuous limit of DDPM with the linear schedule β_i = β(i/(T-1)) / T."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        check_real("beta_min", self.beta_min, 0, low_open=True)
        check_real("beta_max", self.beta_max, 0, low_open=True)
        if not self.beta_min <= self.beta_max:
            raise ValueError(f"need 0 < beta_min <= beta_max, got {self.beta_min}, {self.beta_max}")

    @classmethod
    def from_schedule(cls, schedule: Schedule) -> VPSDE:
        """The VP SDE whose Euler discretisation on T steps has the schedule's (linear) betas: ``β_min = T β_0``,
        ``β_max = T β_{T-1}`` (for another schedule, the linear VP SDE through its end points)."""
        check_schedule(schedule)
        return cls(float(schedule.betas[0]) * schedule.T, float(schedule.betas[-1]) * schedule.T)

    def beta(self, t, x=None):
        return self.beta_min + check_time(t, x) * (self.beta_max - self.beta_min)

    def _log_mean(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift_diffusion(self, x, t):
        b = self.beta(t, x)
        return -0.5 * b * x, b.sqrt()

    def marginal_coefficients(self, t, x=None):
        lm = self._log_mean(check_time(t, x))
        return lm.exp(), (-torch.expm1(2 * lm)).sqrt()


@dataclass(frozen=True)
class SubVPSDE(VPSDE):
    """sub-VP SDE: VP's drift with ``g² = β(t)(1 - exp(-2 β_min t - (β_max - β_min) t²))`` (Song et al. 2021, Eq. 29).
    Its marginal std is ``1 - exp(2 log s(t))`` — no square root — always below the VP std."""

    def drift_diffusion(self, x, t):
        t = check_time(t, x)
        b = self.beta_min + t * (self.beta_max - self.beta_min)
        disc = -torch.expm1(-2 * self.beta_min * t - (self.beta_max - self.beta_min) * t**2)
        return -0.5 * b * x, (b * disc).sqrt()

    def marginal_coefficients(self, t, x=None):
        lm = self._log_mean(check_time(t, x))
        return lm.exp(), -torch.expm1(2 * lm)


@dataclass(frozen=True)
class VESDE(SDE):
    """Variance-exploding SDE ``dx = σ(t) √(2 ln(σ_max/σ_min)) dw``, ``σ(t) = σ_min (σ_max/σ_min)^t`` (SMLD/NCSN;
    Song et al. 2021, Eq. 9). Perturbation kernel ``N(x_0, σ(t)² I)`` as in the reference code."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self):
        check_real("sigma_min", self.sigma_min, 0, low_open=True)
        check_real("sigma_max", self.sigma_max, 0, low_open=True)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def sigma(self, t, x=None):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** check_time(t, x)

    def drift_diffusion(self, x, t):
        return torch.zeros_like(x), self.sigma(t, x) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def marginal_coefficients(self, t, x=None):
        sig = self.sigma(t, x)
        return torch.ones_like(sig), sig


#: Name → SDE class, for :func:`make_sde`.
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}


def make_sde(name: str, **kwargs) -> SDE:
    """``make_sde("vp" | "subvp" | "ve", **params)``; the parameters are checked by the class."""
    if not isinstance(name, str) or name not in SDES:
        raise ValueError(f"name must be one of {sorted(SDES)} (the SDE to build), got {name!r:.60}")
    return SDES[name](**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Models in continuous time
# ----------------------------------------------------------------------------------------------------------------


class FromDiscrete(torch.nn.Module):
    """An ε-network trained on a discrete VP ``schedule`` (integer t) as a continuous-time ε-model for ``sde``.

    At time t the SDE state ``x = s x_0 + σ ε`` has the SNR of the VP state ``x / √(s² + σ²)`` with
    ``ᾱ = s²/(s² + σ²)``; the network is queried there at the fractional index whose interpolated ᾱ matches
    (:meth:`~diffu.schedules.Schedule.interp_alpha_bar`), and its ε is the SDE's ε. Noise levels beyond the trained
    range are evaluated at its nearest end (index -1 … T-1).
    """

    prediction = "eps"

    def __init__(self, model, schedule: Schedule, sde: SDE):
        check_callable("model", model)
        check_schedule(schedule)
        check_sde(sde)
        super().__init__()
        self.model, self.schedule, self.sde = model, schedule, sde
        self.num_classes = getattr(model, "num_classes", None)
        self._neg_log_ab = -schedule.log_alpha_bar_from_clean()  # ascending, indices -1 … T-1

    def index(self, t) -> torch.Tensor:
        """The fractional network timestep in [-1, T-1] with the same ᾱ as the SDE at ``t``."""
        target = -self.sde.alpha_bar(torch.as_tensor(t, dtype=torch.float64).cpu()).log()
        table = self._neg_log_ab
        target = target.clamp(table[0], table[-1])
        hi = torch.searchsorted(table, target).clamp(1, len(table) - 1)
        lo = hi - 1
        w = (target - table[lo]) / (table[hi] - table[lo])
        return lo + w - 1

    def forward(self, x, t, **kwargs):
        """ε̂ at the SDE state ``x`` ``(N, …)`` and times ``t`` ``(N,)`` (checked by :func:`check_time`)."""
        check_time(t, x)
        t = torch.as_tensor(t)
        s, std = self.sde.marginal_coefficients(t.reshape(-1), x)
        k = (s**2 + std**2).sqrt()
        idx = self.index(t.reshape(-1)).to(device=x.device, dtype=x.dtype)
        return _model_eps_fractional(self.model, x / k, idx, self.schedule, kwargs)


def _model_eps_fractional(model, x, t_index, schedule, model_kwargs=None):
    """``model(x, t)`` at fractional indices, converted to ε via ``model.prediction`` at the interpolated ᾱ."""
    out = model(x, t_index, **(model_kwargs or {}))
    pred = getattr(model, "prediction", "eps")
    if pred == "eps":
        return out
    ab = schedule.interp_alpha_bar(t_index.detach().cpu()).to(x).reshape(-1, *([1] * (x.ndim - 1)))
    if pred == "x0":
        return (x - ab.sqrt() * out) / (1 - ab).sqrt()
    if pred == "v":
        return (1 - ab).sqrt() * x + ab.sqrt() * out
    raise ValueError(f"cannot convert prediction {pred!r} to ε; wrap velocity models with diffu.flow.FlowAsEps")


def model_score(model, x: torch.Tensor, t: float, sde: SDE, model_kwargs=None) -> torch.Tensor:
    """``∇ log p_t(x)`` from ``model(x, t)`` (continuous ``t``): ``-ε̂/σ(t)`` for ε-models, the output itself for
    ``prediction == "score"``, ``-(x - s x̂_0)/σ²`` for x0-models.

    Args:
        model: a callable network; its ``prediction`` attribute ("eps" when missing) says what it returns.
        x: the state ``(N, …)``, a floating-point tensor.
        t: one time in [0, 1] (a number).
        sde: the :class:`SDE` whose marginals convert the output.
        model_kwargs: None or a dict of extra keyword arguments.

    Returns:
        The score like ``x`` (NaN in ``x`` or in the output propagates).

    Raises:
        TypeError: ``model`` not callable or not returning a tensor, ``sde`` not an :class:`SDE`, ``t`` not a
            number, ``model_kwargs`` not a dict.
        ValueError: ``x`` not floating, ``t`` outside [0, 1], an unknown ``model.prediction``, an output of another
            shape than ``x``.
    """
    check_sampler_args(model, model_kwargs=model_kwargs)
    _check_batch_tensor(x, "x")
    check_real("t", t, 0, 1)
    check_sde(sde)
    pred = getattr(model, "prediction", "eps")
    if pred not in ("eps", "score", "x0"):
        raise ValueError(f"model.prediction must be 'eps', 'score' or 'x0' for SDE sampling, got {pred!r}")
    tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
    out = _check_output(model(x, tt, **(model_kwargs or {})), x)
    s, std = sde.marginal_coefficients(tt, x)
    if pred == "eps":
        return -out / std
    if pred == "score":
        return out
    return -(x - s * out) / std**2


def _check_output(out, x: torch.Tensor, name: str = "model") -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a tensor, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(f"{name} must return a tensor of x's shape {tuple(x.shape)}, got {tuple(out.shape)}")
    return out


def dsm_loss(model, sde: SDE, x0: torch.Tensor, generator=None, t_min: float = 1e-5) -> torch.Tensor:
    """Denoising score matching in continuous time (Song et al. 2021, Eq. 7, with λ(t) = σ(t)²): ``t ~ U(t_min, 1)``,
    ``E ‖σ(t) s_θ(x_t, t) + ε‖²``, i.e. ``‖ε̂ - ε‖²`` for ε-models.

    Args:
        model: a callable ε- or score-network (``model.prediction``).
        sde: the :class:`SDE` that noises the data.
        x0: a batch of data ``(N, …)``, a floating-point tensor without NaN or infinity.
        generator: the randomness of ``t`` and ε (None or a ``torch.Generator``).
        t_min: the smallest time drawn, in (0, 1) (at t = 0 the noise is not identifiable: σ(0) = 0 for VP).

    Raises:
        TypeError: ``model`` not callable or not returning a tensor, ``sde`` not an :class:`SDE`, a bad
            ``generator``.
        ValueError: ``x0`` not floating or not finite, ``t_min`` outside (0, 1), a model that is neither "eps" nor
            "score", an output of another shape than ``x0`` (the loss would broadcast it).
    """
    check_callable("model", model)
    check_sde(sde)
    _check_batch_tensor(x0, "x0")
    check_finite(x0, "x0")
    check_generator(generator)
    check_real("t_min", t_min, 0, 1, low_open=True, high_open=True)
    pred = getattr(model, "prediction", "eps")
    if pred not in ("eps", "score"):
        raise ValueError(f"dsm_loss trains 'eps' or 'score' models, got prediction {pred!r}")
    n = x0.shape[0]
    t = t_min + (1 - t_min) * torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = sde.q_sample(x0, t, noise)
    out = _check_output(model(x_t, t), x0)
    if pred == "eps":
        return F.mse_loss(out, noise)
    return F.mse_loss(sde.marginal_coefficients(t, x0)[1] * out, -noise)
