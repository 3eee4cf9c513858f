"""Gaussian mixtures with exact scores, posterior means and velocities at every noise level (§2.5, appendix A.2.1).

If ``x_0 ~ Σ_k π_k N(μ_k, Σ_k)`` and ``x = a x_0 + b ε`` then ``x ~ Σ_k π_k N(a μ_k, a² Σ_k + b² I)`` — again a
mixture — so the score ``∇ log p(x)``, Tweedie's posterior mean ``E[x_0 | x]`` and the flow velocity are all in
closed form. :class:`ExactModel` turns them into "networks" with no error for the discrete schedules of §2.2, the
SDEs of :mod:`diffu.sde` and the flow paths of :mod:`diffu.flow`: the reference that learned models and samplers
are measured against.

**Bad input.** Mixture parameters must be finite (weights and standard deviations > 0, covariances symmetric positive
definite), points floating-point ``(N, D)`` tensors, times in their convention's range: otherwise a
``ValueError``/``TypeError`` names the argument. Densities, scores and posteriors are computed row by row: a NaN in a
row of ``x`` gives NaN in that row of the result.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .checks import check_floating, check_generator, check_int, check_real
from .flow import flow_coefficients
from .sampling import check_schedule
from .schedules import Schedule
from .sde import SDE, check_sde


def _as_float64(value, name: str) -> torch.Tensor:
    """``value`` (a tensor, an array, a number or nested lists) as a float64 tensor; ``TypeError`` otherwise."""
    if (
        isinstance(value, (bool, np.bool_, str, bytes))
        or value is None
        or (isinstance(value, torch.Tensor) and (value.dtype == torch.bool or value.is_complex()))
    ):
        raise TypeError(f"{name} must be real numbers (a tensor, an array or a number), got {type(value).__name__}")
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be real numbers (a tensor, an array or a number), got {value!r:.60}") from err


__all__ = ["ExactClassifier", "ExactModel", "GaussianMixture"]


class GaussianMixture:
    """``Σ_k π_k N(μ_k, Σ_k)`` in ``D`` dimensions (float64). ``weights (K,)``, ``means (K, D)``, ``covs (K, D, D)``
    or a scalar / ``(K,)`` standard deviation for isotropic components.

    Raises:
        TypeError: an argument that is not real numbers.
        ValueError: ``means`` not ``(K, D)`` with K, D >= 1, or not finite; ``weights`` not K finite numbers > 0;
            standard deviations not finite and > 0; ``covs`` not ``(K, D, D)``, not finite, not symmetric or not
            positive definite.
    """

    def __init__(self, weights, means, covs):
        means = _as_float64(means, "means")
        if means.ndim != 2 or 0 in means.shape:
            raise ValueError(f"means must have shape (K, D) with K, D >= 1, got {tuple(means.shape)}")
        if not bool(torch.isfinite(means).all()):
            raise ValueError("means must be finite, got NaN or infinity")
        k, d = means.shape
        weights = _as_float64(weights, "weights")
        if weights.shape != (k,) or not bool((torch.isfinite(weights) & (weights > 0)).all()):
            raise ValueError(f"weights must be {k} finite positive numbers, got {weights.tolist()}")
        covs = _as_float64(covs, "covs")
        if covs.ndim <= 1:  # isotropic standard deviations
            if covs.ndim == 1 and covs.shape != (k,):
                raise ValueError(f"covs: give one standard deviation or {k} of them, got {covs.numel()}")
            std = covs.expand(k)
            if not bool((torch.isfinite(std) & (std > 0)).all()):
                raise ValueError(f"covs: standard deviations must be finite and > 0, got {std.tolist()}")
            covs = std[:, None, None] ** 2 * torch.eye(d, dtype=torch.float64)
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}), got {tuple(covs.shape)}")
        if not bool(torch.isfinite(covs).all()):
            raise ValueError("covs must be finite, got NaN or infinity")
        # Cholesky reads only the lower triangle: an asymmetric matrix would silently be replaced by another one
        if not torch.allclose(covs, covs.mT, rtol=1e-10, atol=1e-12 * float(covs.abs().max())):
            raise ValueError("covs must be symmetric matrices, got an asymmetric one")
        chol, info = torch.linalg.cholesky_ex(covs)
        if bool((info != 0).any()):
            bad = int(torch.nonzero(info)[0, 0])
            raise ValueError(f"covs must be positive definite, component {bad} is not")
        self.weights = weights / weights.sum()
        self.means, self.covs = means, covs
        self._chol = chol

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={len(self.weights)}, D={self.dim})"

    @classmethod
    def ring(cls, k: int = 8, radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
        """``k`` equal isotropic components on a circle (the "eight Gaussians" toy).

        Raises:
            ValueError: ``k`` not an integer >= 1, ``radius`` not finite and >= 0, ``std`` not finite and > 0.
        """
        check_int("k", k, 1)
        check_real("radius", radius, 0)
        check_real("std", std, 0, low_open=True)
        ang = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
        return cls(torch.ones(k), radius * torch.stack([ang.cos(), ang.sin()], 1), std)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, D)`` float32 samples (``n`` an integer >= 1, ``generator`` None or a ``torch.Generator``)."""
        check_int("n", n, 1)
        check_generator(generator)
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[comp] + (self._chol[comp] @ z[:, :, None])[:, :, 0]
        return x.float()

    def noised(self, a: float, b: float) -> GaussianMixture:
        """The law of ``a x_0 + b ε``: means ``a μ_k``, covariances ``a² Σ_k + b² I`` (``a``, ``b`` finite and >= 0,
        not both 0)."""
        _check_ab(a, b)
        return GaussianMixture(self.weights, a * self.means, a**2 * self.covs + b**2 * torch.eye(self.dim).double())

    def _check_x(self, x) -> None:
        check_floating(x, "x")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")

    def _component_terms(self, x):
        """Per-component log densities ``(N, K)`` and ``Σ_k^{-1}(x - μ_k)`` ``(N, K, D)``."""
        self._check_x(x)
        diff = x.double()[:, None, :] - self.means[None]  # (N, K, D)
        sol = torch.cholesky_solve(diff.permute(1, 2, 0), self._chol).permute(2, 0, 1)  # (N, K, D)
        logdet = 2 * self._chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        maha = (diff * sol).sum(-1)
        logp = -0.5 * (maha + logdet + self.dim * math.log(2 * math.pi)) + self.weights.log()
        return logp, sol

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` → ``(N,)`` (float64) for a floating-point ``x`` ``(N, D)`` (``ValueError`` otherwise).

        NaN in a row of ``x`` gives NaN for that row (here and in every method taking ``x``)."""
        return torch.logsumexp(self._component_terms(x)[0], dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``∇ log p(x) = -Σ_k r_k(x) Σ_k^{-1}(x - μ_k)`` with responsibilities ``r_k`` → ``(N, D)`` like ``x``."""
        logp, sol = self._component_terms(x)
        r = torch.softmax(logp, dim=1)
        return (-(r[:, :, None] * sol).sum(1)).to(x)

    def component_log_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(k | x)`` for every component ``k`` → ``(N, K)`` (float64): the exact classifier when each
        component is a class (chapter §2.3)."""
        return torch.log_softmax(self._component_terms(x)[0], dim=1)

    def posterior(self, x: torch.Tensor, a: float, b: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E[x_0 | x], ∇log p_noised(x))`` for ``x = a x_0 + b ε`` from one pass over the noised components
        (float64): the mean is ``Σ_k r_k(x) [μ_k + a Σ_k (a²Σ_k + b²I)^{-1}(x - a μ_k)]``, the score
        ``-Σ_k r_k(x) (a²Σ_k + b²I)^{-1}(x - a μ_k)``."""
        _check_ab(a, b)
        logp, sol = self.noised(a, b)._component_terms(x)
        r = torch.softmax(logp, dim=1)[:, :, None]  # (N, K, 1)
        mean = (r * (self.means[None] + a * torch.einsum("kde,nke->nkd", self.covs, sol))).sum(1)  # (N, D)
        return mean, -(r * sol).sum(1)

    def posterior_mean(self, x: torch.Tensor, a: float, b: float) -> torch.Tensor:
        """``E[x_0 | a x_0 + b ε = x]`` in closed form (see :meth:`posterior`)."""
        return self.posterior(x, a, b)[0].to(x)


def _check_ab(a, b) -> None:
    check_real("a", a, 0)
    check_real("b", b, 0)
    if float(a) == 0 and float(b) == 0:
        raise ValueError("a and b must not both be 0 (the law of 0 · x_0 + 0 · ε is a point mass)")


def _check_gmm(gmm) -> None:
    if not isinstance(gmm, GaussianMixture):
        raise TypeError(f"gmm must be a diffu.gmm.GaussianMixture, got {type(gmm).__name__}")


def _times(t, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Check ``x`` ``(N, D)`` and per-sample times ``t`` (a scalar or ``(N,)``) and return ``t`` as ``(N,)``."""
    check_floating(x, "x")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"x must have shape (N, {dim}), got {tuple(x.shape)}")
    if isinstance(t, (bool, np.bool_, str, bytes)) or t is None:
        raise TypeError(f"t must be a number or a tensor of times, got {type(t).__name__}")
    t = torch.as_tensor(t)
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"t must be real times, got a {t.dtype} tensor")
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, x.shape[0])):
        raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got shape {tuple(t.shape)}")
    return t.reshape(-1).expand(x.shape[0])


class ExactModel(torch.nn.Module):
    """The exact denoiser of a :class:`GaussianMixture`, usable wherever a network is:

    * ``ExactModel(gmm, schedule=s)``: ε-prediction at (fractional) discrete timesteps of a VP schedule (§2.2);
    * ``ExactModel(gmm, sde=s)``: ε-prediction at continuous ``t ∈ [0, 1]`` of an SDE (:mod:`diffu.sde`);
    * ``ExactModel(gmm, flow_sigma_min=0.0)``: velocity at flow time ``t`` (:mod:`diffu.flow`).

    The optimal ε is ``(x - a E[x_0|x]) / b``; the optimal velocity ``c ε̂ - E[x_0|x]``. Times are processed one
    distinct value at a time; keyword arguments of ``forward`` (labels) are ignored: the model is unconditional.

    Raises:
        TypeError: ``gmm``, ``schedule`` or ``sde`` of the wrong type.
        ValueError: not exactly one time convention; ``flow_sigma_min`` outside [0, 1).
    """

    def __init__(self, gmm: GaussianMixture, *, schedule: Schedule | None = None, sde: SDE | None = None,
                 flow_sigma_min: float | None = None):  # fmt: skip
        super().__init__()
        _check_gmm(gmm)
        if sum(v is not None for v in (schedule, sde, flow_sigma_min)) != 1:
            raise ValueError("give exactly one of schedule, sde or flow_sigma_min")
        if schedule is not None:
            check_schedule(schedule)
        if sde is not None:
            check_sde(sde)
        if flow_sigma_min is not None:
            check_real("flow_sigma_min", flow_sigma_min, 0, 1, high_open=True)
        self.gmm, self.schedule, self.sde, self.flow_sigma_min = gmm, schedule, sde, flow_sigma_min
        self.prediction = "velocity" if flow_sigma_min is not None else "eps"

    def coefficients(self, t: float) -> tuple[float, float]:
        """``(a, b)`` with ``x_t = a x_0 + b ε`` at time ``t`` (a discrete index, SDE time or flow time; a number in
        that convention's range, ``ValueError`` otherwise)."""
        check_real("t", t)
        if self.schedule is not None:
            ab = float(self.schedule.interp_alpha_bar(torch.tensor(float(t), dtype=torch.float64)))
            return math.sqrt(ab), math.sqrt(1 - ab)
        if self.sde is not None:
            s, std = self.sde.marginal_coefficients(torch.tensor(float(t), dtype=torch.float64))
            return float(s), float(std)
        a, b = flow_coefficients(float(t), torch.zeros(1, dtype=torch.float64), self.flow_sigma_min)
        return float(a), float(b)

    def x0_hat(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Tweedie's (exact) posterior mean at time ``t``."""
        a, b = self.coefficients(t)
        return self.gmm.posterior_mean(x, a, b)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        """The exact ε (or velocity) at ``x`` ``(N, D)`` and times ``t`` (a scalar or ``(N,)``)."""
        t = _times(t, x, self.gmm.dim)
        out = torch.empty_like(x)
        for tv in t.unique().tolist():
            m = t == tv
            a, b = self.coefficients(tv)
            if b == 0:  # the clean end: x_0 = x and E[ε | x] → -b ∇log p → 0
                x0, eps = x[m], torch.zeros_like(x[m])
            else:  # ε̂ = -b ∇log p_noised(x) in float64 keeps its digits when b is tiny
                x0, score = self.gmm.posterior(x[m], a, b)
                x0, eps = x0.to(x), (-b * score).to(x)
            out[m] = eps if self.flow_sigma_min is None else (1 - self.flow_sigma_min) * eps - x0
        return out


class ExactClassifier(torch.nn.Module):
    """The exact noise-aware classifier ``log p(k | x_t)`` of a :class:`GaussianMixture` whose components are the
    classes, at (fractional) timesteps of a discrete VP ``schedule``: ``model(x_t, t) -> (N, K)`` log-probabilities
    (valid logits). With :class:`ExactModel` it makes classifier guidance exact (chapter §2.3): ``ε̂ −
    √(1−ᾱ_t) ∇ log p(k | x_t)`` is the ε of component ``k`` alone (Bayes' rule on scores)."""

    def __init__(self, gmm: GaussianMixture, schedule: Schedule):
        super().__init__()
        _check_gmm(gmm)
        check_schedule(schedule)
        self.gmm, self.schedule = gmm, schedule
        self.num_classes = len(gmm.weights)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` log-probabilities at ``x`` ``(N, D)`` and timesteps ``t`` (a scalar or ``(N,)``)."""
        t = _times(t, x, self.gmm.dim)
        out = torch.empty(x.shape[0], self.num_classes, dtype=torch.float64, device=x.device)
        for tv in t.unique().tolist():
            m = t == tv
            ab = float(self.schedule.interp_alpha_bar(torch.tensor(float(tv), dtype=torch.float64)))
            out[m] = self.gmm.noised(math.sqrt(ab), math.sqrt(1 - ab)).component_log_posterior(x[m])
        return out.to(x.dtype)
