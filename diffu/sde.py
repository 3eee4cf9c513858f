"""Score-based generative modelling with SDEs (Song et al. 2021), chapter §2.5.

**Time convention** (the same as :mod:`diffu.flow`): continuous ``t ∈ [0, 1]`` with **data at t = 0 and noise at
t = 1**. Each SDE ``dx = f(x, t) dt + g(t) dw`` has a Gaussian perturbation kernel ``x_t = s(t) x_0 + σ(t) ε``
(:meth:`SDE.marginal_coefficients`), so a network trained to predict ε gives the score ``∇ log p_t = -ε̂ / σ(t)``.

* :class:`VPSDE` (DDPM in continuous time), :class:`SubVPSDE`, :class:`VESDE` (SMLD/NCSN).
* :func:`euler_maruyama` — the reverse-time SDE ``dx = [f - g² ∇log p_t] dt + g dw̄`` (Eq. 6 of Song et al.).
* :func:`predictor_corrector` — Euler–Maruyama predictor + Langevin corrector (Algorithms 2–3 of Song et al.).
* :func:`pf_ode` — the probability-flow ODE ``dx/dt = f - ½ g² ∇log p_t`` (Eq. 13) with Euler, Heun or RK45.
* :func:`pf_ode_sigma` — the VP PF-ODE in DDIM's variables (x̄ = x/√ᾱ, σ = √(1-ᾱ)/√ᾱ): Euler *is* DDIM (η = 0).
* :func:`log_likelihood` — exact log-density through the PF-ODE (instantaneous change of variables, Hutchinson).
* :class:`FromDiscrete` — run an ε-network trained on a discrete schedule (the shipped UNet) with any of these SDEs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .ode import SOLVERS, integrate, solve_adaptive
from .samplers import SamplerState, _initial, _noise_like, ddim_timesteps, model_eps
from .schedules import Schedule

__all__ = [
    "SDE",
    "SDES",
    "FromDiscrete",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "dsm_loss",
    "em_step",
    "euler_maruyama",
    "log_likelihood",
    "make_sde",
    "model_score",
    "pf_ode",
    "karras_timesteps",
    "pf_ode_sigma",
    "predictor_corrector",
]


def check_time(t, x: torch.Tensor | None = None) -> torch.Tensor:
    """``t`` as a float tensor, shaped ``(N, 1, …)`` against ``x`` when ``(N,)``; ``ValueError`` outside [0, 1]."""
    t = torch.as_tensor(t, dtype=torch.float64 if x is None else x.dtype, device=None if x is None else x.device)
    if not bool(torch.isfinite(t).all()) or bool(((t < 0) | (t > 1)).any()):
        raise ValueError(f"t must lie in [0, 1] (0 = data, 1 = noise), got {t.min().item()} … {t.max().item()}")
    if x is not None and t.ndim == 1:
        t = t.reshape(-1, *([1] * (x.ndim - 1)))
    return t


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
        """Mean and std of ``q(x_t | x_0)`` for ``x0 (N, …)`` and scalar or ``(N,)`` ``t``."""
        s, std = self.marginal_coefficients(t, x0)
        return s * x0, std.expand_as(x0)

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = s(t) x_0 + σ(t) ε``."""
        s, std = self.marginal_coefficients(t, x0)
        return s * x0 + std * noise

    @property
    def prior_std(self) -> float:
        return 1.0

    def prior_sample(self, shape, generator=None, device=None, dtype=None) -> torch.Tensor:
        if generator is not None:
            device = generator.device
        return self.prior_std * torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std² I) summed over all but the first dimension → ``(N,)``."""
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
        if not 0 < self.beta_min <= self.beta_max:
            raise ValueError(f"need 0 < beta_min <= beta_max, got {self.beta_min}, {self.beta_max}")

    @classmethod
    def from_schedule(cls, schedule: Schedule) -> VPSDE:
        """The VP SDE whose Euler discretisation on T steps has the schedule's (linear) betas."""
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
        if not 0 < self.sigma_min < self.sigma_max:
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
    """``make_sde("vp" | "subvp" | "ve", **params)``."""
    if name not in SDES:
        raise ValueError(f"sde must be one of {sorted(SDES)}, got {name!r}")
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
    ``prediction == "score"``, ``-(x - s x̂_0)/σ²`` for x0-models."""
    tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
    out = model(x, tt, **(model_kwargs or {}))
    pred = getattr(model, "prediction", "eps")
    s, std = sde.marginal_coefficients(tt, x)
    if pred == "eps":
        return -out / std
    if pred == "score":
        return out
    if pred == "x0":
        return -(x - s * out) / std**2
    raise ValueError(f"model.prediction must be 'eps', 'score' or 'x0' for SDE sampling, got {pred!r}")


def dsm_loss(model, sde: SDE, x0: torch.Tensor, generator=None, t_min: float = 1e-5) -> torch.Tensor:
    """Denoising score matching in continuous time (Song et al. 2021, Eq. 7, with λ(t) = σ(t)²): ``t ~ U(t_min, 1)``,
    ``E ‖σ(t) s_θ(x_t, t) + ε‖²``, i.e. ``‖ε̂ - ε‖²`` for ε-models."""
    n = x0.shape[0]
    t = t_min + (1 - t_min) * torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = sde.q_sample(x0, t, noise)
    out = model(x_t, t)
    if getattr(model, "prediction", "eps") == "eps":
        return F.mse_loss(out, noise)
    if model.prediction == "score":
        return F.mse_loss(sde.marginal_coefficients(t, x0)[1] * out, -noise)
    raise ValueError(f"dsm_loss trains 'eps' or 'score' models, got prediction {model.prediction!r}")


# ----------------------------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------------------------


def _range(n, progress, desc):
    return tqdm(range(n), disable=not progress, desc=desc)


def _check(steps, t_min):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0 < float(t_min) < 1:
        raise ValueError(f"t_min must be in (0, 1), got {t_min}")


def _start(model, x_1, sde, generator):
    if isinstance(x_1, torch.Tensor):
        return x_1
    return sde.prior_std * _initial(x_1, generator, model)


def _x0_hat(sde, x, t, score):
    s, std = sde.marginal_coefficients(t, x)
    return (x + std**2 * score) / s  # Tweedie (appendix A.2.1)


def em_step(sde: SDE, x: torch.Tensor, t: float, dt: float, score: torch.Tensor, noise: torch.Tensor | None):
    """One Euler–Maruyama step of the reverse SDE from ``t`` to ``t + dt`` (``dt < 0``): returns ``(x, mean)``."""
    f, g = sde.drift_diffusion(x, t)
    mean = x + (f - g**2 * score) * dt
    return (mean if noise is None else mean + g * math.sqrt(-dt) * noise), mean


def euler_maruyama(
    model: Callable,
    x_1,
    sde: SDE,
    *,
    steps: int = 500,
    t_min: float = 1e-3,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
) -> torch.Tensor:
    """Reverse-time SDE by Euler–Maruyama on ``linspace(1, t_min, steps + 1)``; the last step returns the mean
    (no noise), as in Song et al.'s code. NFE = ``steps``. ``x_1``: a tensor or a shape (drawn from the prior).
    This is :func:`predictor_corrector` without corrector steps."""
    return predictor_corrector(model, x_1, sde, steps=steps, corrector_steps=0, t_min=t_min,
                               model_kwargs=model_kwargs, generator=generator, progress=progress,
                               callback=callback)  # fmt: skip


def langevin_step(sde: SDE, x, t: float, score, noise, snr: float, alpha: float = 1.0):
    """One Langevin corrector step (Song et al. 2021, Algorithm 5): step ``ε = 2 α (snr ‖z‖ / ‖∇‖)²`` with norms
    per sample averaged over the batch, then ``x + ε ∇ + √(2ε) z``."""
    n = x.shape[0]
    g_norm = score.reshape(n, -1).norm(dim=-1).mean()
    z_norm = noise.reshape(n, -1).norm(dim=-1).mean()
    step = 2 * alpha * (snr * z_norm / g_norm) ** 2
    return x + step * score + (2 * step).sqrt() * noise


def predictor_corrector(
    model: Callable,
    x_1,
    sde: SDE,
    *,
    steps: int = 500,
    snr: float = 0.16,
    corrector_steps: int = 1,
    t_min: float = 1e-3,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
) -> torch.Tensor:
    """Predictor–corrector sampling (Song et al. 2021, Algorithm 2/4): at each time first ``corrector_steps``
    Langevin steps with signal-to-noise ratio ``snr``, then one Euler–Maruyama predictor step. For VP the corrector
    step is scaled by the chain's α = s(t)²/s(t+Δt)², which is the reference code's 1 - β_i for 1000 steps and
    stays positive for few steps (where 1 - β(t)|Δt| would not). NFE = ``steps · (1 + corrector_steps)``."""
    _check(steps, t_min)
    if not snr > 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an integer >= 0, got {corrector_steps!r}")
    x = _start(model, x_1, sde, generator)
    ts = torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64).tolist()
    with torch.no_grad():
        for i in _range(steps, progress, f"PC-{steps}" if corrector_steps else f"EM-{steps}"):
            t, dt = ts[i], ts[i + 1] - ts[i]
            alpha = 1.0
            if isinstance(sde, VPSDE):  # the chain's α_i = s(t)²/s(t+Δt)² (≈ 1 - β(t)|Δt|, positive for any Δt)
                alpha = float(sde.marginal_coefficients(t)[0] / sde.marginal_coefficients(t + dt)[0]) ** 2
            for _ in range(corrector_steps):
                score = model_score(model, x, t, sde, model_kwargs)
                x = langevin_step(sde, x, t, score, _noise_like(x, generator), snr, alpha)
            score = model_score(model, x, t, sde, model_kwargs)
            last = i == steps - 1
            x, _ = em_step(sde, x, t, dt, score, None if last else _noise_like(x, generator))
            if callback is not None:
                callback(SamplerState(i, t, x, _x0_hat(sde, x, t, score)))
    return x


def _pf_drift(model, sde, model_kwargs):
    def f(x, t):
        score = model_score(model, x, t, sde, model_kwargs)
        drift, g = sde.drift_diffusion(x, t)
        return drift - 0.5 * g**2 * score, _x0_hat(sde, x, t, score)

    return f


def pf_ode(
    model: Callable,
    x_1,
    sde: SDE,
    *,
    steps: int = 100,
    solver: str = "heun",
    t_min: float = 1e-3,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    return_nfe: bool = False,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
):
    """Probability-flow ODE ``dx/dt = f(x, t) - ½ g(t)² ∇log p_t(x)`` (Song et al. 2021, Eq. 13) from t = 1 to
    ``t_min`` — deterministic given ``x_1``. ``solver``: "euler" (NFE = steps), "heun" (NFE = 2·steps) or "rk45"
    (adaptive, ``rtol``/``atol``; ``steps`` and ``callback`` unused). ``return_nfe`` → ``(x, nfe)``."""
    if solver not in (*SOLVERS, "rk45"):
        raise ValueError(f"solver must be one of {(*SOLVERS, 'rk45')}, got {solver!r}")
    _check(steps, t_min)
    x = _start(model, x_1, sde, generator)
    f = _pf_drift(model, sde, model_kwargs)
    with torch.no_grad():
        if solver == "rk45":
            x, nfe = solve_adaptive(lambda x, t: f(x, t)[0], x, 1.0, t_min, rtol=rtol, atol=atol)
        else:
            ts = torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64).tolist()
            x, nfe = integrate(f, x, ts, solver=solver, progress=progress, callback=callback,
                               desc=f"PF-ODE-{solver}-{steps}")  # fmt: skip
    return (x, nfe) if return_nfe else x


def karras_timesteps(schedule: Schedule, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Decreasing integer timesteps whose σ = √((1-ᾱ)/ᾱ) follow Karras et al.'s (2022, Eq. 5) ρ-spacing between
    σ(T-1) and σ(0): ``σ_i = (σ_max^{1/ρ} + i/(n-1) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ``, each rounded to the nearest
    trained timestep (duplicates removed, so fewer than ``steps`` may come back for large ``steps``)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= schedule.T:
        raise ValueError(f"steps must be an integer in [1, {schedule.T}], got {steps!r}")
    sig = ((1 - schedule.alpha_bar) / schedule.alpha_bar).sqrt()  # (T,) increasing
    if steps == 1:
        return torch.tensor([schedule.T - 1])
    r = torch.linspace(0, 1, steps, dtype=torch.float64)
    want = (sig[-1] ** (1 / rho) + r * (sig[0] ** (1 / rho) - sig[-1] ** (1 / rho))) ** rho
    idx = (sig.log()[None, :] - want.log()[:, None]).abs().argmin(1)
    return torch.unique_consecutive(idx)


def pf_ode_sigma(
    model: Callable,
    x_T,
    schedule: Schedule,
    *,
    steps: int = 50,
    solver: str = "heun",
    spacing: str = "leading",
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
) -> torch.Tensor:
    """The VP probability-flow ODE in the variables ``x̄ = x/√ᾱ``, ``σ = √(1-ᾱ)/√ᾱ``, where it reads
    ``dx̄/dσ = ε_θ(√ᾱ x̄, t)`` (Song et al. 2021 (DDIM), Eq. 14; Karras et al. 2022). On the DDIM timesteps of a
    discrete schedule: ``solver="euler"`` reproduces DDIM with η = 0 exactly; ``"heun"`` is Karras et al.'s
    2nd-order sampler (Euler on the last step into σ = 0), NFE = ``2·steps - 1``. ``spacing``: a DDIM spacing or
    "karras" (:func:`karras_timesteps`)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if spacing == "karras":
        ts = karras_timesteps(schedule, steps).tolist() + [-1]
    else:
        ts = ddim_timesteps(schedule.T, steps, spacing).tolist() + [-1]
    ab = [1.0 if t < 0 else float(schedule.alpha_bar[t]) for t in ts]
    sig = [math.sqrt((1 - a) / a) for a in ab]
    x = _initial(x_T, generator, model)

    def f(xbar, i):  # dx̄/dσ at grid point i, and x̂_0
        a = ab[i]
        eps = model_eps(model, xbar * math.sqrt(a), ts[i], schedule, model_kwargs)
        return eps, xbar - sig[i] * eps

    xbar = x / math.sqrt(ab[0])
    with torch.no_grad():
        for i in _range(len(ts) - 1, progress, f"PF-ODE-σ-{solver}-{steps}"):
            h = sig[i + 1] - sig[i]
            d, x0 = f(xbar, i)
            if solver == "heun" and ts[i + 1] >= 0:
                d2, _ = f(xbar + h * d, i + 1)
                xbar = xbar + h * 0.5 * (d + d2)
            else:
                xbar = xbar + h * d
            if callback is not None:
                callback(SamplerState(i, ts[i], xbar * math.sqrt(ab[i + 1]), x0))
    return xbar * math.sqrt(ab[-1])


# ----------------------------------------------------------------------------------------------------------------
# Likelihood
# ----------------------------------------------------------------------------------------------------------------


def log_likelihood(
    model: Callable,
    x: torch.Tensor,
    sde: SDE,
    *,
    t_min: float = 1e-5,
    trace: str = "hutchinson",
    probes: int = 1,
    generator: torch.Generator | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    model_kwargs: dict | None = None,
) -> torch.Tensor:
    """``log p_{t_min}(x)`` (nats, ``(N,)``) by the instantaneous change of variables along the PF-ODE
    (Song et al. 2021, Eq. 39; Chen et al. 2018): integrate ``[x, δ]`` from ``t_min`` to 1 with
    ``dδ/dt = ∇·f̃(x, t)`` and return ``log p_1(x(1)) + δ(1)``. ``trace="exact"`` differentiates every coordinate
    (fine for 2D); ``"hutchinson"`` averages ``probes`` fixed Rademacher probes per sample, ``E[zᵀ J z] = tr J``
    (unbiased, as in FFJORD; the variance falls as 1/probes)."""
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"trace must be 'exact' or 'hutchinson', got {trace!r}")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be a positive integer, got {probes!r}")
    if not 0 < float(t_min) < 1:
        raise ValueError(f"t_min must be in (0, 1), got {t_min}")
    n, shape = x.shape[0], x.shape
    f = _pf_drift(model, sde, model_kwargs)
    probe = None
    if trace == "hutchinson":
        probe = torch.randint(0, 2, (probes, *shape), generator=generator, device=x.device).to(x.dtype) * 2 - 1

    def rhs(state, t):
        xt = state[:, :-1].reshape(shape)
        with torch.enable_grad():
            xt = xt.detach().requires_grad_(True)
            drift = f(xt, t)[0]
            if trace == "exact":
                flat = drift.reshape(n, -1)
                div = sum(torch.autograd.grad(flat[:, j].sum(), xt, retain_graph=True)[0].reshape(n, -1)[:, j]
                          for j in range(flat.shape[1]))  # fmt: skip
            else:
                div = 0
                for k in range(probes):
                    (gp,) = torch.autograd.grad((drift * probe[k]).sum(), xt, retain_graph=k < probes - 1)
                    div = div + (gp * probe[k]).reshape(n, -1).sum(1) / probes
        return torch.cat([drift.detach().reshape(n, -1), div.detach()[:, None]], dim=1)

    state = torch.cat([x.reshape(n, -1), torch.zeros(n, 1, dtype=x.dtype, device=x.device)], dim=1)
    out, _ = solve_adaptive(rhs, state, float(t_min), 1.0, rtol=rtol, atol=atol)
    z = out[:, :-1].reshape(shape)
    return sde.prior_logp(z) + out[:, -1]
