"""Noise schedules, the forward process q(x_t | x_0), its posterior, and parameterisation conversions.

Discrete time follows the DDPM/diffusers convention (CONTRIBUTING.md, convention 2): integer ``t ∈ {0, …, T-1}``,
``t = 0`` the least noisy step, ``alpha_bar[t] = ∏_{s ≤ t} (1 - beta_s)``. Arrays are computed and stored in
float64 and cast to the input's dtype and device when used. Chapters §2.1 and §2.2 introduce everything here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

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


def _check_T(T):
    if isinstance(T, bool) or not isinstance(T, int) or T <= 0:
        raise ValueError(f"T must be a positive integer, got {T!r}")


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete variance schedule ``beta_0 … beta_{T-1}`` with everything derived from it (float64).

    Build one with :func:`linear_schedule`, :func:`cosine_schedule`, :func:`scaled_linear_schedule`,
    :func:`sigmoid_schedule` or directly from a 1-D tensor of betas in (0, 1).
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
        b = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu().clone()
        if b.ndim != 1 or b.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(b.shape)}")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError(f"betas must lie in the open interval (0, 1), got min {b.min():.3g}, max {b.max():.3g}")
        a = 1.0 - b
        ab = torch.cumprod(a, 0)
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
        return f"Schedule(name={self.name!r}, T={self.T}, alpha_bar[-1]={float(self.alpha_bar[-1]):.3g})"

    def check_t(self, t) -> torch.Tensor:
        """Validate integer timesteps and return them as a long tensor (raises ``ValueError`` when out of range)."""
        t = torch.as_tensor(t)
        if t.is_floating_point():
            if not bool((t == t.round()).all()):
                raise ValueError("t must hold integer timesteps for a discrete schedule")
            t = t.long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.T):
            raise ValueError(f"t must be in [0, {self.T - 1}], got values in [{int(t.min())}, {int(t.max())}]")
        return t.long()

    def at(self, name: str, t, x: torch.Tensor) -> torch.Tensor:
        """Gather ``getattr(self, name)[t]`` cast to ``x``'s dtype/device and shaped to broadcast over ``x``.

        ``t`` is a scalar or ``(N,)``; the result has shape ``(N, 1, …, 1)`` (or ``(1, …, 1)`` for a scalar).
        """
        t = self.check_t(t)
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
            like: cast the result to this tensor's dtype and device (convention 6); default float64 on ``t``'s
                device.

        Returns:
            ᾱ with ``t``'s shape (0-d for an integer ``t``).
        """
        t = torch.as_tensor(t)
        if t.is_floating_point() and not bool((t == t.round()).all()):
            raise ValueError("t must hold integer timesteps for a discrete schedule")
        t = t.long()
        if t.numel() and (int(t.min()) < -1 or int(t.max()) >= self.T):
            raise ValueError(f"t must be in [-1, {self.T - 1}], got values in [{int(t.min())}, {int(t.max())}]")
        ab = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])[t.cpu() + 1]  # index 0 is t = -1
        if like is None:
            return ab.to(t.device)
        return ab.to(device=like.device, dtype=like.dtype)

    def _check_pair(self, a, b, an, bn):
        if a.shape != b.shape:
            raise ValueError(f"{an} and {bn} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")

    # -- forward process ----------------------------------------------------------------------------------------
    def log_alpha_bar_from_clean(self) -> torch.Tensor:
        """``(T+1,)`` float64 ``log ᾱ`` at indices -1 … T-1, the clean end (ᾱ = 1) first; decreasing."""
        return torch.cat([torch.zeros(1, dtype=torch.float64), self.alpha_bar.log()])

    def interp_alpha_bar(self, t) -> torch.Tensor:
        """ᾱ at fractional indices ``t ∈ [-1, T-1]`` (float64), interpolating log ᾱ linearly between integer steps;
        ``t = -1`` is the clean end (ᾱ = 1). Exact at integers. Lets continuous-time samplers (§2.5) query a
        network trained on integer timesteps at any noise level in between."""
        t = torch.as_tensor(t)
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
            x0: clean data ``(N, …)``.
            t: integer timesteps, scalar or ``(N,)``.
            noise: standard normal noise, same shape as ``x0``.
        """
        self._check_pair(x0, noise, "x0", "noise")
        return self.at("alpha_bar", t, x0).sqrt() * x0 + (1 - self.at("alpha_bar", t, x0)).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t):
        """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0)`` (Eqs. 6–7 of Ho et al. 2020)."""
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
        """Convert a network output of kind ``prediction`` ("eps", "x0", "v", "score") into an ε prediction."""
        if prediction == "eps":
            self._check_pair(output, x_t, "output", "x_t")
            return output
        if prediction == "x0":
            return self.x0_to_eps(output, x_t, t)
        if prediction == "v":
            return self.v_to_eps(output, x_t, t)
        if prediction == "score":
            return self.score_to_eps(output, x_t, t)
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")

    def from_eps(self, eps, x_t, t, prediction: str = "eps"):
        """Convert an ε prediction into the parameterisation ``prediction``."""
        if prediction == "eps":
            self._check_pair(eps, x_t, "eps", "x_t")
            return eps
        if prediction == "x0":
            return self.eps_to_x0(eps, x_t, t)
        if prediction == "v":
            return self.eps_to_v(eps, x_t, t)
        if prediction == "score":
            return self.eps_to_score(eps, x_t, t)
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")

    # -- respacing ----------------------------------------------------------------------------------------------
    def respace(self, timesteps) -> Schedule:
        """The schedule restricted to increasing ``timesteps`` (Nichol & Dhariwal 2021, §4): the new betas are
        ``1 - ᾱ_{t_i} / ᾱ_{t_{i-1}}`` so that the kept ᾱ values are unchanged. Step ``i`` of the result
        corresponds to the original timestep ``timesteps[i]``.
        """
        ts = self.check_t(torch.as_tensor(timesteps))
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
    if not 0 < beta_start < 1 or not 0 < beta_end < 1:
        raise ValueError(f"beta_start and beta_end must be in (0, 1), got {beta_start} and {beta_end}")
    return Schedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float64), name="linear")


def scaled_linear_schedule(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Schedule:
    """Betas linear in √β (Latent/Stable Diffusion's "scaled_linear" schedule, defaults from Rombach et al. 2022)."""
    _check_T(T)
    if not 0 < beta_start < 1 or not 0 < beta_end < 1:
        raise ValueError(f"beta_start and beta_end must be in (0, 1), got {beta_start} and {beta_end}")
    return Schedule(torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2, name="scaled_linear")


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Cosine schedule of Nichol & Dhariwal 2021 (Eq. 17): ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2), with
    ``beta_t = min(1 - ᾱ(t+1)/ᾱ(t), max_beta)``."""
    _check_T(T)
    if s < 0:
        raise ValueError(f"s must be >= 0, got {s}")
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = torch.clamp(1 - f[1:] / f[:-1], max=max_beta)
    return Schedule(betas, name="cosine")


def sigmoid_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Betas following a sigmoid from ``beta_start`` to ``beta_end`` (GeoDiff, Xu et al. 2022; diffusers "sigmoid")."""
    _check_T(T)
    if not 0 < beta_start < 1 or not 0 < beta_end < 1:
        raise ValueError(f"beta_start and beta_end must be in (0, 1), got {beta_start} and {beta_end}")
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
    if name not in _SCHEDULES:
        raise ValueError(f"name must be one of {sorted(_SCHEDULES)}, got {name!r}")
    return _SCHEDULES[name](T, **kwargs)
