"""Noise schedules, the forward process q(x_t | x_0), its posterior, and parameterisation conversions.

Discrete time follows the DDPM/diffusers convention (CONTRIBUTING.md, convention 2): integer ``t ∈ {0, …, T-1}``,
``t = 0`` the least noisy step, ``alpha_bar[t] = ∏_{s ≤ t} (1 - beta_s)``. Arrays are computed and stored in
float64 and cast to the input's dtype and device when used. Chapters §2.1 and §2.2 introduce everything here.

**Bad input.** Timesteps must be integers in range (a scalar or one per sample: ``(N,)`` for data ``(N, …)``), data
and noise floating-point tensors of one shape (an integer tensor would be multiplied by ᾱ cast to 0), constructor
parameters finite numbers in their ranges: otherwise a ``ValueError``/``TypeError`` names the argument. The forward
process and the conversions are pointwise: NaN in ``x0``, ``x_t`` or a prediction propagates to the same entries of
the result (never to a plausible number).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .checks import check_choice, check_floating, check_int, check_real

__all__ = [
    "PREDICTIONS",
    "Schedule",
    "cosine_schedule",
    "linear_schedule",
    "make_schedule",
    "scaled_linear_schedule",
    "sigmoid_schedule",
]

#: What a network can predict; :class:`Schedule` converts between them.
PREDICTIONS = ("eps", "x0", "v", "score")


# The per-step tables of a Schedule that Schedule.at gathers.
_TABLES = (
    "betas",
    "alphas",
    "alpha_bar",
    "alpha_bar_prev",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def _check_T(T):
    check_int("T", T, 1)


def _check_beta_range(beta_start, beta_end):
    check_real("beta_start", beta_start, 0, 1, low_open=True, high_open=True)
    check_real("beta_end", beta_end, 0, 1, low_open=True, high_open=True)


def _timestep_tensor(t, name: str = "t") -> torch.Tensor:
    """``t`` (a Python/numpy integer, an integral float, a sequence of them or a real tensor) as a long tensor; a
    fractional, NaN or infinite value, a bool, a string or a complex number raises."""
    if isinstance(t, (bool, np.bool_, str, bytes)) or t is None:
        raise TypeError(f"{name} must be an integer timestep or a tensor of them, got {type(t).__name__} {t!r:.60}")
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be an integer timestep or a tensor of them, got {t!r:.60}") from err
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold integer timesteps, got a {t.dtype} tensor")
    if t.is_floating_point():
        if not bool((torch.isfinite(t) & (t == t.round())).all()):
            bad = t[~(torch.isfinite(t) & (t == t.round()))].reshape(-1)[0].item()
            raise ValueError(f"{name} must hold integer timesteps for a discrete schedule, got {bad!r}")
        t = t.long()
    return t.long()


def _check_t_batch(t: torch.Tensor, x: torch.Tensor, name: str = "t", of: str = "x") -> None:
    """A timestep tensor ``t`` is a scalar, a one-element tensor or ``(N,)`` for ``x`` ``(N, …)``."""
    if x.ndim == 0:
        raise ValueError(f"{of} must have a batch dimension (N, …), got a 0-d tensor")
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, x.shape[0])):
        raise ValueError(
            f"{name} must be a scalar or have shape ({x.shape[0]},) (one per sample of {of}), got shape "
            f"{tuple(t.shape)}"
        )


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete variance schedule ``beta_0 … beta_{T-1}`` with everything derived from it (float64).

    Build one with :func:`linear_schedule`, :func:`cosine_schedule`, :func:`scaled_linear_schedule`,
    :func:`sigmoid_schedule` or directly from a 1-D tensor of betas in (0, 1).

    Raises:
        TypeError: ``betas`` not real numbers, ``name`` not a string.
        ValueError: ``betas`` not a non-empty 1-D sequence in (0, 1), or so large (over so many steps) that ᾱ
            underflows to 0 in float64, or so small that 1 − β_0 rounds to 1.
    """

    betas: torch.Tensor
    name: str = "custom"
    alphas: torch.Tensor = field(init=False)
    alpha_bar: torch.Tensor = field(init=False)
    alpha_bar_prev: torch.Tensor = field(init=False)
    posterior_variance: torch.Tensor = field(init=False)
    posterior_log_variance_clipped: torch.Tensor = field(init=False)
    posterior_mean_coef1: torch.Tensor = field(init=False)
    posterior_mean_coef2: torch.Tensor = field(init=False)

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a string, got {type(self.name).__name__}")
        betas = self.betas
        if isinstance(betas, torch.Tensor) and (betas.dtype == torch.bool or betas.is_complex()):
            raise TypeError(f"betas must be a 1-D tensor of real numbers, got a {betas.dtype} tensor")
        try:
            b = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().clone()
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"betas must be a 1-D tensor of numbers in (0, 1), got {betas!r:.60}") from err
        if b.ndim != 1 or b.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(b.shape)}")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError(f"betas must lie in the open interval (0, 1), got min {b.min():.3g}, max {b.max():.3g}")
        a = 1.0 - b
        ab = torch.cumprod(a, 0)
        # ᾱ must stay strictly inside (0, 1) in float64: ᾱ = 0 makes x̂_0 = (x_t − √(1−ᾱ) ε)/√ᾱ inf/NaN, ᾱ = 1 (betas
        # below ~1e-16, where 1 − β rounds to 1) makes the posterior variance 0/0
        if float(ab[-1]) == 0.0:
            k = int((ab == 0).nonzero()[0, 0])
            raise ValueError(
                f"betas make ᾱ underflow to 0 in float64 from step t = {k} of {len(b)} (x̂_0 would divide by √ᾱ = 0): "
                f"use fewer steps or smaller betas"
            )
        if float(ab[0]) == 1.0:
            raise ValueError(
                f"betas must be large enough that 1 - β < 1 in float64 (> ~1.1e-16), got {float(b[0]):.3g}"
            )
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        post_var = b * (1.0 - ab_prev) / (1.0 - ab)
        # Ho et al.: log-variance clipped by replacing the t = 0 entry (which is 0) with beta_tilde_1.
        post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]])) if len(b) > 1 else torch.log(b)
        set_ = object.__setattr__
        set_(self, "betas", b)
        set_(self, "alphas", a)
        set_(self, "alpha_bar", ab)
        set_(self, "alpha_bar_prev", ab_prev)
        set_(self, "posterior_variance", post_var)
        set_(self, "posterior_log_variance_clipped", post_logvar)
        set_(self, "posterior_mean_coef1", b * ab_prev.sqrt() / (1.0 - ab))  # multiplies x0
        set_(self, "posterior_mean_coef2", (1.0 - ab_prev) * a.sqrt() / (1.0 - ab))  # multiplies x_t

    # ------------------------------------------------------------------------------------------------------------
    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return len(self.betas)

    def __len__(self) -> int:
        return self.T

    def __repr__(self) -> str:
        if not hasattr(self, "alpha_bar"):  # a schedule whose construction failed (shown in tracebacks)
            return f"Schedule(name={self.name!r}, invalid)"
        return f"Schedule(name={self.name!r}, T={self.T}, alpha_bar[-1]={float(self.alpha_bar[-1]):.3g})"

    def check_t(self, t, name: str = "t", *, scalar: bool = False) -> torch.Tensor:
        """Validate integer timesteps and return them as a long tensor.

        Args:
            t: an integer, an integral float, a sequence of them or a tensor, values in ``[0, T-1]``.
            name: the argument's name in error messages.
            scalar: require exactly one timestep (a number, a 0-d or a one-element tensor).

        Raises:
            TypeError: ``t`` is not a number or a real tensor (a string, a bool, a complex number).
            ValueError: a value is fractional, NaN, infinite or outside ``[0, T-1]``; several with ``scalar``.
        """
        t = _timestep_tensor(t, name)
        if scalar and t.numel() != 1:
            raise ValueError(f"{name} must be one timestep, got shape {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.T):
            raise ValueError(f"{name} must be in [0, {self.T - 1}], got values in [{int(t.min())}, {int(t.max())}]")
        return t

    def at(self, name: str, t, x: torch.Tensor) -> torch.Tensor:
        """Gather ``getattr(self, name)[t]`` cast to ``x``'s dtype/device and shaped to broadcast over ``x``.

        Args:
            name: a table of per-step values: ``"betas"``, ``"alphas"``, ``"alpha_bar"``, ``"alpha_bar_prev"``,
                ``"posterior_variance"``, ``"posterior_log_variance_clipped"``, ``"posterior_mean_coef1"`` or
                ``"posterior_mean_coef2"``.
            t: integer timesteps: a scalar, a one-element tensor or ``(N,)`` for ``x`` ``(N, …)``.
            x: a floating-point tensor ``(N, …)`` whose dtype, device and rank the result follows.

        Returns:
            ``(N, 1, …, 1)`` (or ``(1, …, 1)`` for a scalar ``t``).

        Raises:
            ValueError: an unknown ``name``, an integer ``x`` (ᾱ would be cast to 0), or ``t`` out of range or not
                matching ``x``'s batch size.
        """
        check_choice("name", name, _TABLES)
        check_floating(x, "x")
        t = self.check_t(t)
        _check_t_batch(t, x)
        v = getattr(self, name)[t.cpu()]
        v = v.reshape(-1, *([1] * (x.ndim - 1)))
        return v.to(device=x.device, dtype=x.dtype)

    def alpha_bar_at(self, t, like: torch.Tensor | None = None) -> torch.Tensor:
        """ᾱ_t for ``t ∈ {-1, 0, …, T-1}``, where ``t = -1`` is the clean end before the first step: ᾱ_{-1} = 1.

        This is what a sampler needs for "the previous step" of its grid: DDIM's ``t_prev = -1`` after the last
        step (Song et al. 2021 set α_0 = 1 there; diffusers' ``set_alpha_to_one``), DDIM inversion's start, DDRM's
        and ReSample's final level. ``alpha_bar[-1]`` would be Python's *last* entry (the noisiest), so -1 is
        handled here rather than by indexing; ``alpha_bar_prev[t] == alpha_bar_at(t - 1)``.

        Args:
            t: an integer or an integer tensor of any shape, values in ``[-1, T-1]`` (others raise ``ValueError``).
            like: cast the result to this floating-point tensor's dtype and device (convention 6); default float64
                on ``t``'s device.

        Returns:
            ᾱ with ``t``'s shape (0-d for an integer ``t``).

        Raises:
            TypeError: ``t`` is not an integer timestep or a tensor of them.
            ValueError: ``t`` fractional or outside ``[-1, T-1]``; ``like`` not a floating-point tensor.
        """
        if like is not None:
            check_floating(like, "like")
        t = _timestep_tensor(t)
        if t.numel() and (int(t.min()) < -1 or int(t.max()) >= self.T):
            raise ValueError(f"t must be in [-1, {self.T - 1}], got values in [{int(t.min())}, {int(t.max())}]")
        ab = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])[t.cpu() + 1]  # index 0 is t = -1
        if like is None:
            return ab.to(t.device)
        return ab.to(device=like.device, dtype=like.dtype)

    def _check_pair(self, a, b, an, bn):
        check_floating(a, an)
        check_floating(b, bn)
        if a.shape != b.shape:
            raise ValueError(f"{an} and {bn} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")

    # -- forward process ----------------------------------------------------------------------------------------
    def log_alpha_bar_from_clean(self) -> torch.Tensor:
        """``(T+1,)`` float64 ``log ᾱ`` at indices -1 … T-1, the clean end (ᾱ = 1) first; decreasing."""
        return torch.cat([torch.zeros(1, dtype=torch.float64), self.alpha_bar.log()])

    def interp_alpha_bar(self, t) -> torch.Tensor:
        """ᾱ at fractional indices ``t ∈ [-1, T-1]`` (float64), interpolating log ᾱ linearly between integer steps;
        ``t = -1`` is the clean end (ᾱ = 1). Exact at integers. Lets continuous-time samplers (§2.5) query a
        network trained on integer timesteps at any noise level in between.

        Raises:
            TypeError: ``t`` is not a real number or a real tensor.
            ValueError: ``t`` NaN or outside ``[-1, T-1]``.
        """
        if isinstance(t, (bool, np.bool_, str, bytes)) or t is None:
            raise TypeError(f"t must be a real number or tensor, got {type(t).__name__}")
        try:
            t = torch.as_tensor(t)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"t must be a real number or tensor, got {t!r:.60}") from err
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"t must be a real number or tensor, got a {t.dtype} tensor")
        if not bool(((t >= -1) & (t <= self.T - 1)).all()):
            raise ValueError(f"t must lie in [-1, {self.T - 1}], got {t.min().item()} … {t.max().item()}")
        la = self.log_alpha_bar_from_clean()
        u = t.detach().double().cpu() + 1
        lo = u.floor().long().clamp(max=self.T - 1)
        w = u - lo
        return torch.exp((1 - w) * la[lo] + w * la[lo + 1]).to(t.device)

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """Sample ``x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I)`` (Eq. 4 of Ho et al. 2020) with given noise.

        Args:
            x0: clean data ``(N, …)``, a floating-point tensor.
            t: integer timesteps, a scalar or ``(N,)`` (a one-element tensor counts as a scalar).
            noise: standard normal noise, same shape as ``x0``.

        Returns:
            ``x_t`` like ``x0``. NaN in ``x0`` or ``noise`` propagates to the same entries of ``x_t``.

        Raises:
            ValueError: an integer ``x0`` (use :func:`diffu.data.from_uint8`), ``noise`` of another shape, ``t`` out of
                range, fractional, or with another batch size than ``x0``.
        """
        self._check_pair(x0, noise, "x0", "noise")
        return self.at("alpha_bar", t, x0).sqrt() * x0 + (1 - self.at("alpha_bar", t, x0)).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t):
        """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0)`` (Eqs. 6–7 of Ho et al. 2020).

        ``x0`` and ``x_t`` are floating-point tensors of one shape ``(N, …)``; ``t`` a scalar or ``(N,)``.
        """
        self._check_pair(x0, x_t, "x0", "x_t")
        mean = self.at("posterior_mean_coef1", t, x_t) * x0 + self.at("posterior_mean_coef2", t, x_t) * x_t
        return mean, self.at("posterior_variance", t, x_t), self.at("posterior_log_variance_clipped", t, x_t)

    def snr(self, t) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) at integer timesteps (float64)."""
        ab = self.alpha_bar[self.check_t(t).cpu()]
        return ab / (1 - ab)

    # -- parameterisation conversions ---------------------------------------------------------------------------
    def eps_to_x0(self, eps, x_t, t):
        """x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t (Tweedie's estimate when ε̂ is the MMSE noise prediction)."""
        self._check_pair(eps, x_t, "eps", "x_t")
        ab = self.at("alpha_bar", t, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def x0_to_eps(self, x0, x_t, t):
        """ε̂ = (x_t - √ᾱ_t x̂_0) / √(1-ᾱ_t)."""
        self._check_pair(x0, x_t, "x0", "x_t")
        ab = self.at("alpha_bar", t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def v_to_eps(self, v, x_t, t):
        """ε = √(1-ᾱ_t) x_t + √ᾱ_t v, for v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (Salimans & Ho 2022)."""
        self._check_pair(v, x_t, "v", "x_t")
        ab = self.at("alpha_bar", t, x_t)
        return (1 - ab).sqrt() * x_t + ab.sqrt() * v

    def eps_to_v(self, eps, x_t, t):
        """v = √ᾱ_t ε - √(1-ᾱ_t) x_0, written with x_0 = x̂_0(ε, x_t)."""
        self._check_pair(eps, x_t, "eps", "x_t")
        ab = self.at("alpha_bar", t, x_t)
        return ab.sqrt() * eps - (1 - ab).sqrt() * self.eps_to_x0(eps, x_t, t)

    def eps_to_score(self, eps, x_t, t):
        """∇ log p_t(x_t) = -ε / √(1-ᾱ_t) (the score of the VP marginal, Song et al. 2021)."""
        self._check_pair(eps, x_t, "eps", "x_t")
        return -eps / (1 - self.at("alpha_bar", t, x_t)).sqrt()

    def score_to_eps(self, score, x_t, t):
        """ε = -√(1-ᾱ_t) ∇ log p_t(x_t)."""
        self._check_pair(score, x_t, "score", "x_t")
        return -(1 - self.at("alpha_bar", t, x_t)).sqrt() * score

    def to_eps(self, output, x_t, t, prediction: str = "eps"):
        """Convert a network output of kind ``prediction`` ("eps", "x0", "v", "score") into an ε prediction.

        Every conversion takes two floating-point tensors of one shape ``(N, …)`` and integer timesteps ``t`` (a scalar
        or ``(N,)``) and raises ``ValueError`` otherwise; NaN propagates entry by entry.
        """
        check_choice("prediction", prediction, PREDICTIONS)
        if prediction == "eps":
            self._check_pair(output, x_t, "output", "x_t")
            _check_t_batch(self.check_t(t), x_t)
            return output
        if prediction == "x0":
            return self.x0_to_eps(output, x_t, t)
        if prediction == "v":
            return self.v_to_eps(output, x_t, t)
        return self.score_to_eps(output, x_t, t)

    def from_eps(self, eps, x_t, t, prediction: str = "eps"):
        """Convert an ε prediction into the parameterisation ``prediction`` (checks as :meth:`to_eps`)."""
        check_choice("prediction", prediction, PREDICTIONS)
        if prediction == "eps":
            self._check_pair(eps, x_t, "eps", "x_t")
            _check_t_batch(self.check_t(t), x_t)
            return eps
        if prediction == "x0":
            return self.eps_to_x0(eps, x_t, t)
        if prediction == "v":
            return self.eps_to_v(eps, x_t, t)
        return self.eps_to_score(eps, x_t, t)

    # -- respacing ----------------------------------------------------------------------------------------------
    def respace(self, timesteps) -> Schedule:
        """The schedule restricted to increasing ``timesteps`` (Nichol & Dhariwal 2021, §4): the new betas are
        ``1 - ᾱ_{t_i} / ᾱ_{t_{i-1}}`` so that the kept ᾱ values are unchanged. Step ``i`` of the result
        corresponds to the original timestep ``timesteps[i]``.
        """
        ts = self.check_t(timesteps, "timesteps")
        if ts.ndim != 1 or len(ts) == 0 or bool((ts[1:] <= ts[:-1]).any()):
            raise ValueError("timesteps must be a non-empty, strictly increasing 1-D sequence")
        ab = self.alpha_bar[ts]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        return Schedule(1 - ab / prev, name=f"{self.name}-respaced{len(ts)}")


# ----------------------------------------------------------------------------------------------------------------
# Constructors
# ----------------------------------------------------------------------------------------------------------------


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Linear betas from ``beta_start`` to ``beta_end`` (Ho et al. 2020: 1e-4 → 0.02 for T = 1000)."""
    _check_T(T)
    _check_beta_range(beta_start, beta_end)
    return Schedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float64), name="linear")


def scaled_linear_schedule(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Schedule:
    """Betas linear in √β (Latent/Stable Diffusion's "scaled_linear" schedule, defaults from Rombach et al. 2022)."""
    _check_T(T)
    _check_beta_range(beta_start, beta_end)
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    if bool((betas >= 1).any()):  # (√β)² rounds a β within an ulp of 1 up to 1
        raise ValueError(f"beta_start and beta_end must be below 1 - 1e-15 for the scaled_linear schedule ((√β)² "
                         f"rounds them up to 1), got {beta_start!r} and {beta_end!r}")  # fmt: skip
    return Schedule(betas, name="scaled_linear")


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Cosine schedule of Nichol & Dhariwal 2021 (Eq. 17): ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2), with
    ``beta_t = min(1 - ᾱ(t+1)/ᾱ(t), max_beta)``."""
    _check_T(T)
    check_real("s", s, 0)
    check_real("max_beta", max_beta, 0, 1, low_open=True, high_open=True)
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = torch.clamp(1 - f[1:] / f[:-1], max=max_beta)
    return Schedule(betas, name="cosine")


def sigmoid_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Betas following a sigmoid from ``beta_start`` to ``beta_end`` (GeoDiff, Xu et al. 2022; diffusers "sigmoid")."""
    _check_T(T)
    _check_beta_range(beta_start, beta_end)
    x = torch.linspace(-6, 6, T, dtype=torch.float64)
    return Schedule(torch.sigmoid(x) * (beta_end - beta_start) + beta_start, name="sigmoid")


_SCHEDULES = {
    "linear": linear_schedule,
    "cosine": cosine_schedule,
    "scaled_linear": scaled_linear_schedule,
    "sigmoid": sigmoid_schedule,
}


def make_schedule(name: str = "linear", T: int = 1000, **kwargs) -> Schedule:
    """Build a schedule by name: "linear", "cosine", "scaled_linear" or "sigmoid"."""
    check_choice("name", name, sorted(_SCHEDULES))
    return _SCHEDULES[name](T, **kwargs)
