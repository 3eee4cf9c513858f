"""Decomposed Diffusion Sampling (DDS; Chung, Lee & Ye, ICLR 2024) in 2D, and in 3D with a 2D slice prior and a
total-variation penalty along depth (DDS's 3D extension, after DiffusionMBIR, Chung et al. CVPR 2023). Chapter §5.

DPS corrects every step by a gradient through the network; DDS instead runs a few conjugate-gradient iterations on
the data term, started at Tweedie's denoised estimate x̂_0, and then takes an ordinary DDIM step from the corrected
estimate. CG from x̂_0 only moves within the Krylov subspace ``x̂_0 + span{Aᵀr, (AᵀA)Aᵀr, …}``, which the paper argues
stays in the tangent space of the clean-data manifold at x̂_0, so no network Jacobian is needed: one network
evaluation and ``cg_iters`` pairs of ``A``/``Aᵀ`` per step.

- :func:`data_consistency`: the CG data step, noiseless ``AᵀA x = Aᵀy`` or regularised
  ``(I + γ AᵀA) x = x̂_0 + γ Aᵀy``, both from ``x = x̂_0``.
- :func:`dds`: the 2D sampler (any :class:`~diffu.inverse.operators.LinearOperator`: ``Radon``, ``MRI``,
  ``Inpainting``…).
- 3D: :class:`SliceStack` (a 2D operator applied to every slice of a volume), :func:`z_difference` and its adjoint
  :func:`z_difference_T`, :func:`admm_tv_z` (the data step with ``λ‖D_z x‖₁``, ADMM with a CG inner solve) and
  :func:`dds_volume`.

Volumes are ``(N, C, D, H, W)``; a 2D prior sees them as ``N·D`` slices ``(N·D, C, H, W)``, slice ``d`` of volume
``n`` at index ``n·D + d``. Every function checks its arguments once at entry (CONTRIBUTING.md, convention 8); the
operators are duck-typed (callable ``A`` and ``AT``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checks import (
    check_bool,
    check_choice,
    check_finite,
    check_floating,
    check_int,
    check_rank,
    check_real,
)
from ..sampling import (
    SamplerState,
    check_sampler_args,
    check_schedule,
    ddim_timesteps,
    initial_noise,
    model_eps,
    noise_like,
)
from ..schedules import Schedule
from .classical import cg
from .operators import LinearOperator

__all__ = [
    "ETA_RULES",
    "SliceStack",
    "admm_tv_z",
    "data_consistency",
    "dds",
    "dds_volume",
    "z_difference",
    "z_difference_T",
]

#: How :func:`dds` turns η into the step's noise level σ, "dds" ``σ = η √(1 − ᾱ_prev)`` (the official code),
#: "ddim" ``σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)`` (Eq. 16 of Song et al. 2021).
ETA_RULES = ("dds", "ddim")


def _check_op(op) -> None:
    if not (callable(getattr(op, "A", None)) and callable(getattr(op, "AT", None))):
        raise TypeError(f"op must be a linear operator with callable A and AT, got {type(op).__name__}")


def _check_measurement(y) -> None:
    check_floating(y, "y")
    check_finite(y, "y")
    if y.ndim == 0:
        raise ValueError("y must have a batch dimension (N, …), got a 0-d tensor")


def _check_gamma(gamma) -> None:
    if gamma is not None:
        check_real("gamma", gamma, 0, low_open=True)


# ----------------------------------------------------------------------------------------------------------------
# The data step and the 2D sampler
# ----------------------------------------------------------------------------------------------------------------


def _data_step(x0: torch.Tensor, aty: torch.Tensor, op, iters: int, gamma) -> torch.Tensor:
    """:func:`data_consistency` without the checks, with ``Aᵀy`` precomputed."""
    if iters == 0:
        return x0
    tol = _tol(x0)
    if gamma is None:  # AᵀA x = Aᵀy, the least-squares solution nearest (in CG's sense) to x̂_0
        return cg(lambda v: op.AT(op.A(v)), aty, x0=x0, tol=tol, max_iter=iters)
    return cg(lambda v: v + gamma * op.AT(op.A(v)), x0 + gamma * aty, x0=x0, tol=tol, max_iter=iters)


def _tol(x: torch.Tensor) -> float:
    """CG's relative tolerance: 100 ε of the dtype. Running on once the residual is at rounding level divides
    rounding noise by rounding noise (``α = rᵀr / pᵀAp``) and diverges; stopping there changes nothing else."""
    return 100 * torch.finfo(x.dtype).eps


def data_consistency(
    x0: torch.Tensor, y: torch.Tensor, op: LinearOperator, *, iters: int = 5, gamma: float | None = None
) -> torch.Tensor:
    """DDS's data-consistency step: ``iters`` conjugate-gradient iterations started at the denoised ``x0`` on

    - ``gamma=None`` (noiseless data): the normal equations ``AᵀA x = Aᵀy`` of ``min ½‖y − A x‖²``;
    - ``gamma=γ`` (noisy data): ``(I + γ AᵀA) x = x̂_0 + γ Aᵀy``, the minimiser of ``½‖x − x̂_0‖² + ½γ‖y − A x‖²``.

    CG is batched per image (:func:`diffu.inverse.classical.cg`, each image its own step sizes) and stops early only
    where the residual has reached rounding level (``‖r‖ ≤ 100 ε ‖b‖``, ε the dtype's machine epsilon). §5.

    Args:
        x0: the starting point ``(N, C, H, W)`` (Tweedie's x̂_0 in :func:`dds`), a finite floating-point tensor.
        y: the measurement, shaped like ``op.A(x0)``.
        op: a linear operator (callable ``A`` and its adjoint ``AT``).
        iters: CG iterations, an integer >= 0 (0 returns ``x0`` itself).
        gamma: None, or the weight γ > 0 of the data term.

    Returns:
        The corrected image like ``x0``.

    Raises:
        TypeError: ``op`` has no callable ``A``/``AT``.
        ValueError: ``x0``/``y`` not finite floating-point tensors, ``x0`` not an input ``op.A`` takes (its error,
            re-raised naming ``x0``), ``op.A(x0)`` not of ``y``'s shape, ``iters``
            not an integer >= 0, ``gamma`` not None or a finite number > 0; the errors of
            :func:`~diffu.inverse.classical.cg`.

    Notes:
        Official code: ``HJ-harry/DDS``, ``solver_2d.py`` (``Acg``/``Acg_noise`` and ``bcg``) and ``utils.py::CG``:
        5 iterations; the noiseless form when ``sigma_y == 0``, else γ = 1 (``--gamma``). The official CG stops when
        the whole batch's ``‖r‖ < 1e-5``; ours runs ``iters`` iterations per image unless its residual reaches
        rounding level (beyond it, CG's step sizes are ratios of rounding errors and the iterates diverge). For
        single-coil MRI the official code projects instead, ``x̂_0 − A⁺(A x̂_0 − y)``: with a Hermitian-symmetric
        mask (as :func:`~diffu.inverse.masks.cartesian_mask`'s) ``AᵀA`` is an orthogonal projection, and one
        noiseless CG iteration gives exactly that projection.
    """
    _check_op(op)
    check_int("iters", iters, 0)
    _check_gamma(gamma)
    check_floating(x0, "x0")
    check_finite(x0, "x0")
    _check_measurement(y)
    try:
        ax = op.A(x0)
    except ValueError as err:  # the operator names its own argument (x): say that it is x0 that does not fit
        raise ValueError(f"x0 must be an input of op ({type(op).__name__}), got shape {tuple(x0.shape)}: "
                         f"{err}") from err  # fmt: skip
    if ax.shape != y.shape:
        raise ValueError(f"y must have the shape of op.A(x0) {tuple(ax.shape)}, got {tuple(y.shape)}")
    return _data_step(x0, op.AT(y), op, iters, gamma)


def _sigma(rule: str, eta: float, ab: torch.Tensor, ab_prev: torch.Tensor) -> torch.Tensor:
    """The noise level of the step t → t_prev under ``rule`` (:data:`ETA_RULES`)."""
    if rule == "dds":
        return eta * (1 - ab_prev).sqrt()
    return eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()


def _ddim_update(x0, eps, ab_prev, sigma, noise) -> torch.Tensor:
    """``√ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z`` (Eq. 12 of Song et al. 2021) with a given (corrected) x̂_0."""
    x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
    return x + sigma * noise if noise is not None else x


def _check_dds_args(eta, cg_iters, gamma, eta_rule, clip_x0, schedule) -> None:
    check_schedule(schedule)
    check_real("eta", eta, 0, 1)
    check_int("cg_iters", cg_iters, 0)
    _check_gamma(gamma)
    check_choice("eta_rule", eta_rule, ETA_RULES)
    check_bool("clip_x0", clip_x0)


def _dds_loop(model, x, data_step, schedule, steps, eta, eta_rule, clip_x0, spacing, model_kwargs, generator,
              progress, callback, desc, view=None):  # fmt: skip
    """The DDS loop on the state ``x`` (images or slices); ``data_step(x̂_0) → x̃_0``; ``view`` maps a state to what
    ``callback`` receives."""
    ts = ddim_timesteps(schedule.T, steps, spacing).tolist()
    prev = ts[1:] + [-1]  # the next timestep of each step; -1: the clean end (ᾱ = 1)
    view = view or (lambda v: v)
    with torch.no_grad():
        for i, (t, tp) in enumerate(tqdm(list(zip(ts, prev)), disable=not progress, desc=f"{desc}-{len(ts)}")):
            # 1. ε̂ = ε_θ(x_t, t), without a graph: DDS never differentiates the network
            eps = model_eps(model, x, t, schedule, model_kwargs)
            # 2. Tweedie's denoised estimate x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t
            x0 = schedule.eps_to_x0(eps, x, t)
            if clip_x0:
                x0 = x0.clamp(-1, 1)
            # 3. data consistency: CG (or ADMM) iterations on the data term, started at x̂_0
            x0 = data_step(x0)
            # 4. the DDIM step from the corrected x̃_0 with the network's own ε̂ (Eq. 12 of Song et al.), σ by eta_rule
            ab, ab_prev = schedule.alpha_bar_at(t, x), schedule.alpha_bar_at(tp, x)
            noise = noise_like(x, generator) if eta > 0 else None
            x = _ddim_update(x0, eps, ab_prev, _sigma(eta_rule, eta, ab, ab_prev), noise)
            if callback is not None:
                callback(SamplerState(i, t, view(x), view(x0)))
    return x


def dds(
    model: Callable,
    y: torch.Tensor,
    op: LinearOperator,
    schedule: Schedule,
    *,
    steps: int = 50,
    eta: float = 0.85,
    cg_iters: int = 5,
    gamma: float | None = None,
    eta_rule: str = "dds",
    clip_x0: bool = False,
    spacing: str = "leading",
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
    x_T=None,
) -> torch.Tensor:
    """Decomposed Diffusion Sampling (Chung, Lee & Ye, ICLR 2024): ``steps`` DDIM steps, each preceded by
    ``cg_iters`` CG iterations on the data term started at Tweedie's x̂_0 (:func:`data_consistency`). NFE = ``steps``.

    Each step: ``ε̂ = ε_θ(x_t, t)``; ``x̂_0 = (x_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t``; ``x̃_0 = CG(x̂_0)``;
    ``x_{t'} = √ᾱ_{t'} x̃_0 + √(1 − ᾱ_{t'} − σ²) ε̂ + σ z`` with ``σ`` from ``eta`` and ``eta_rule``. The last step
    (``t' = −1``, ᾱ = 1) returns ``x̃_0``: the output satisfies the data step of its final x̂_0.

    Args:
        model: ``model(x_t, t, **model_kwargs)`` predicting ε (or what ``model.prediction`` says).
        y: the measurement ``(N, …)``, shaped like ``op.A(x)``, finite, floating point.
        op: a linear operator with callable ``A`` and ``AT`` (``Radon``, ``MRI``, ``Inpainting``, ``Blur``…).
        schedule: the training schedule.
        steps: DDIM steps, an integer in ``[1, T]`` (the official 50).
        eta: η ∈ [0, 1] (the official 0.85).
        cg_iters: CG iterations per step, an integer >= 0 (the official 5); 0 is plain DDIM.
        gamma: None for noiseless data (``AᵀA x = Aᵀy``), or γ > 0 for noisy data (``(I + γAᵀA) x = x̂_0 + γAᵀy``;
            the official code uses γ = 1 whenever σ_y > 0). γ weighs the data against ``½‖x − x̂_0‖²`` on the scale
            of ``‖A‖²``: ≈ ``n_views · n`` for :class:`~diffu.inverse.fourier.Radon` (490 for 16 views of 32×32),
            1 for ``MRI`` and ``Inpainting``, so the same γ is a much stronger data weight in CT.
        eta_rule: "dds" (``σ = η √(1 − ᾱ_{t'})``, the official code) or "ddim" (Eq. 16 of Song et al. 2021, where
            η = 1 is DDPM's posterior variance); :data:`ETA_RULES`.
        clip_x0: clip x̂_0 to [-1, 1] before the data step (the official code does not).
        spacing: the timesteps (:data:`diffu.sampling.SPACINGS`; "leading" is the official ``range(0, 1000, skip)``).
        model_kwargs, generator, progress, callback: as every sampler; ``callback`` receives
            ``SamplerState(i, t, x_{t'}, x̃_0)`` with the *corrected* estimate.
        x_T: initial noise ``(N, C, H, W)`` or a shape; default noise of ``op.AT(y)``'s shape.

    Returns:
        The reconstruction ``(N, C, H, W)`` in ``y``'s dtype and device.

    Raises:
        TypeError: ``model``/``callback`` not callable, ``op`` without callable ``A``/``AT``, ``schedule`` not a
            :class:`~diffu.schedules.Schedule`, ``clip_x0``/``progress`` not bools, a bad ``generator`` or
            ``model_kwargs``.
        ValueError: ``y`` not a finite floating-point tensor of ``op.A``'s output shape; ``eta`` outside [0, 1];
            ``cg_iters`` not an integer >= 0; ``gamma`` not None or a finite number > 0; an unknown ``eta_rule`` or
            ``spacing``; ``steps`` outside ``[1, T]``; ``x_T`` neither a finite image batch nor a shape.

    Notes:
        Official code: ``HJ-harry/DDS``, ``solver_2d.py::Diffusion.dds`` and ``utils.py::CG``. As there, ε is not
        recomputed from the corrected x̃_0: the step reuses the network's ε̂ ("c2 * et"). The official noise level is
        ``c1 = η √(1 − ᾱ_{t'})`` with direction weight ``c2 = √(1 − η²) √(1 − ᾱ_{t'})`` (our ``eta_rule="dds"``),
        not DDIM's Eq. 16 σ: at η = 0.85, 72 % of the variance of each step's noise part is fresh, more than DDPM's
        posterior at large t. Deviation: the official step *to* t' = 0 returns x̃_0 without noise (``if j != 0``)
        and then runs one more step at t = 0; we take the ordinary DDIM step to ᾱ_0 = 1 − β_0 (a noise part of
        ``√(1 − ᾱ_0) = 0.01`` for the linear schedule), so that ``cg_iters=0`` is exactly :func:`diffu.samplers.ddim`
        (with ``eta_rule="ddim"``). Official settings: sparse-view CT 8 (default 16) views and σ_y = 0.01 (γ = 1), MRI
        uniform 1D mask ×4 with a centre fraction 0.08; 50 steps, η = 0.85, 5 CG iterations.
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback, model_kwargs=model_kwargs)
    _check_dds_args(eta, cg_iters, gamma, eta_rule, clip_x0, schedule)
    _check_op(op)
    _check_measurement(y)
    aty = op.AT(y)
    x = initial_noise(aty.shape if x_T is None else x_T, generator, like=y)
    ax = op.A(x)
    if ax.shape != y.shape:
        raise ValueError(f"y must have the shape of op.A(x_T) {tuple(ax.shape)}, got {tuple(y.shape)}")
    step = lambda v: _data_step(v, aty, op, cg_iters, gamma)  # noqa: E731
    return _dds_loop(model, x, step, schedule, steps, eta, eta_rule, clip_x0, spacing, model_kwargs, generator,
                     progress, callback, "DDS")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# 3D: a 2D prior slice by slice, TV along depth
# ----------------------------------------------------------------------------------------------------------------


def _check_volume(x, name: str) -> None:
    check_floating(x, name)
    check_rank(x, 5, name, "(N, C, D, H, W)")


def _slices(x: torch.Tensor) -> torch.Tensor:  # (N, C, D, H, W) -> (N·D, C, H, W), slice d of volume n at n·D + d
    return x.transpose(1, 2).flatten(0, 1)


def _volume(s: torch.Tensor, depth: int) -> torch.Tensor:  # (N·D, C, H, W) -> (N, C, D, H, W)
    return s.unflatten(0, (-1, depth)).transpose(1, 2)


def z_difference(x: torch.Tensor) -> torch.Tensor:
    """The forward difference along depth ``(D_z x)_d = x_{d+1} − x_d``, 0 for the last slice (Neumann, like
    :func:`~diffu.inverse.classical.grad`): ``(N, C, D, H, W) → (N, C, D, H, W)``. §5.

    ``ValueError`` for anything but a floating-point ``(N, C, D, H, W)`` tensor; NaN propagates."""
    _check_volume(x, "x")
    return F.pad(x[:, :, 1:] - x[:, :, :-1], (0, 0, 0, 0, 0, 1))


def z_difference_T(q: torch.Tensor) -> torch.Tensor:
    """The exact adjoint of :func:`z_difference`: ``(D_zᵀ q)_d = q_{d−1} − q_d`` with ``q_{−1} = q_{D−1} = 0`` (its
    last slice is ignored, as ``D_z`` never writes it). ``(N, C, D, H, W) → (N, C, D, H, W)``. §5.

    ``ValueError`` for anything but a floating-point ``(N, C, D, H, W)`` tensor; NaN propagates."""
    _check_volume(q, "q")
    q = q[:, :, :-1]
    return F.pad(q, (0, 0, 0, 0, 1, 0)) - F.pad(q, (0, 0, 0, 0, 0, 1))


@dataclass(frozen=True)
class SliceStack(LinearOperator):
    """A 2D linear operator applied to every depth slice of a volume: ``(N, C, D, H, W) → (N, D, …)``, where ``…``
    is the shape of ``op.A`` of one slice (``(C, n_angles, n)`` for ``Radon``, ``(C, H, W, 2)`` for ``MRI``). ``AT``
    is ``op.AT`` slice by slice, the exact adjoint when ``op.AT`` is. §5.

    ``A`` and ``AT`` check their input's layout (a floating-point ``(N, C, D, H, W)`` volume, ``(N, D, …)``
    measurements; ``ValueError`` naming ``x``/``y``) but, like the operators of :mod:`diffu.inverse.operators`, do
    not look for NaN (they run inside every solver step): a NaN or infinity in the input propagates to the output,
    and the solvers (:func:`admm_tv_z`, :func:`dds_volume`) check their measurement once at entry."""

    op: LinearOperator

    def __post_init__(self):
        _check_op(self.op)

    def A(self, x):
        _check_volume(x, "x")
        m = self.op.A(_slices(x))  # (N·D, …)
        return m.unflatten(0, (x.shape[0], x.shape[2]))

    def AT(self, y):
        check_floating(y, "y")
        if y.ndim < 3:
            raise ValueError(f"y must have shape (N, D, …) (one measurement per slice), got {tuple(y.shape)}")
        return _volume(self.op.AT(y.flatten(0, 1)), y.shape[1])


def _shrink(v: torch.Tensor, kappa: float) -> torch.Tensor:
    """Soft thresholding ``sign(v) max(|v| − κ, 0)``, the proximal map of ``κ‖·‖₁``."""
    return v.sign() * (v.abs() - kappa).clamp(min=0)


def _admm(x, aty, op: SliceStack, z_weight, rho, iters, cg_iters, gamma, prior, split):
    """:func:`admm_tv_z` without the checks (volume layout, ``Aᵀy`` precomputed)."""
    z, u = split if split is not None else (torch.zeros_like(x), torch.zeros_like(x))
    if gamma is None:
        normal = lambda v: op.AT(op.A(v)) + rho * z_difference_T(z_difference(v))  # noqa: E731
    else:
        normal = lambda v: v / gamma + op.AT(op.A(v)) + rho * z_difference_T(z_difference(v))  # noqa: E731
    for _ in range(iters):
        # x-update: (AᵀA [+ I/γ] + ρ D_zᵀD_z) x = Aᵀy [+ x̂_0/γ] + ρ D_zᵀ(z − u), CG from the current x
        b = aty + rho * z_difference_T(z - u) + (prior / gamma if gamma is not None else 0)
        x = cg(normal, b, x0=x, tol=_tol(x), max_iter=cg_iters) if cg_iters else x
        # z-update: the prox of (λ/ρ)‖·‖₁ at D_z x + u; u: the scaled dual ascent
        dz = z_difference(x)
        z = _shrink(dz + u, z_weight / rho)
        u = u + dz - z
    return x, (z, u)


def admm_tv_z(
    x: torch.Tensor,
    y: torch.Tensor,
    op: SliceStack,
    *,
    z_weight: float = 0.04,
    rho: float = 10.0,
    iters: int = 1,
    cg_iters: int = 5,
    gamma: float | None = None,
    prior: torch.Tensor | None = None,
    split: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The 3D data step of DDS/DiffusionMBIR: ``iters`` ADMM iterations (Boyd et al. 2011, scaled form) on
    ``min ½‖y − A x‖² + λ‖D_z x‖₁`` (``+ ½γ⁻¹‖x − x̂_0‖²`` when ``gamma`` is given), split as ``z = D_z x``:

    ``x ← CG_{cg_iters}[(AᵀA + ρ D_zᵀD_z) x = Aᵀy + ρ D_zᵀ(z − u)]`` from the current ``x``;
    ``z ← shrink(D_z x + u, λ/ρ)``; ``u ← u + D_z x − z``. §5.

    Args:
        x: the start ``(N, C, D, H, W)`` (Tweedie's x̂_0 in :func:`dds_volume`).
        y: the measurements ``op.A(volume)``, ``(N, D, …)``.
        op: a :class:`SliceStack`.
        z_weight: λ >= 0 (the official 0.04 for sparse-view CT, 0.4 for limited-angle CT).
        rho: the ADMM penalty ρ > 0 (the official 10).
        iters: ADMM iterations, an integer >= 1 (the official 1 per diffusion step).
        cg_iters: CG iterations of each x-update, an integer >= 0 (the official 5).
        gamma: None, or γ > 0: the noisy-data form of :func:`data_consistency` (``prior`` is then x̂_0).
        prior: the x̂_0 of the ``gamma`` form, like ``x`` (default ``x``).
        split: the ADMM state ``(z, u)`` of a previous call (each like ``x``), or None for zeros.

    Returns:
        ``(x, (z, u))``: the volume and the ADMM state to pass to the next call.

    Raises:
        TypeError: ``op`` not a :class:`SliceStack`.
        ValueError: ``x``/``prior`` not finite floating-point ``(N, C, D, H, W)`` tensors, ``y`` not of
            ``op.A(x)``'s shape or not finite, ``split`` not two tensors like ``x``, a number outside its range.

    Notes:
        Official code: ``HJ-harry/DDS``, ``solver_3d.py::dds3d`` (``ADMM``, ``Acg_TV``), ``utils.py`` (``_Dz``,
        ``_DzT``, ``shrink``): ρ = 10, λ = 0.04, one ADMM iteration of 5 CG iterations per diffusion step, the
        split ``(z, u)`` kept across diffusion steps (``nonlocal del_z, udel_z``), noiseless data (σ_y = 0).
        Deviation: their ``D_z`` is circular (the last slice is compared with the first); ours is zero for the last
        slice, so the two ends of a slab are not tied together.
    """
    if not isinstance(op, SliceStack):
        raise TypeError(f"op must be a SliceStack (a 2D operator on every slice), got {type(op).__name__}")
    check_real("z_weight", z_weight, 0)
    check_real("rho", rho, 0, low_open=True)
    check_int("iters", iters, 1)
    check_int("cg_iters", cg_iters, 0)
    _check_gamma(gamma)
    _check_volume(x, "x")
    check_finite(x, "x")
    _check_measurement(y)
    if op.A(x).shape != y.shape:
        raise ValueError(f"y must have the shape of op.A(x) {tuple(op.A(x).shape)}, got {tuple(y.shape)}")
    if prior is not None:
        _check_volume(prior, "prior")
        check_finite(prior, "prior")
        if prior.shape != x.shape:
            raise ValueError(f"prior must have x's shape {tuple(x.shape)}, got {tuple(prior.shape)}")
    if split is not None:
        ok = isinstance(split, (tuple, list)) and len(split) == 2
        ok = ok and all(isinstance(s, torch.Tensor) and s.shape == x.shape and s.is_floating_point() for s in split)
        if not ok:
            raise ValueError(f"split must be a pair (z, u) of floating-point tensors of x's shape {tuple(x.shape)}")
    prior = x if prior is None else prior
    return _admm(x, op.AT(y), op, z_weight, rho, iters, cg_iters, gamma, prior, split)


def dds_volume(
    model: Callable,
    y: torch.Tensor,
    op: LinearOperator,
    schedule: Schedule,
    *,
    z_weight: float = 0.04,
    rho: float = 10.0,
    admm_iters: int = 1,
    steps: int = 50,
    eta: float = 0.85,
    cg_iters: int = 5,
    gamma: float | None = None,
    eta_rule: str = "dds",
    clip_x0: bool = False,
    spacing: str = "leading",
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
    x_T=None,
) -> torch.Tensor:
    """3D DDS with a 2D prior: :func:`dds` on all ``N·D`` slices at once (one batched network call per step), with
    the data step replaced by :func:`admm_tv_z` on whole volumes, coupling the slices through ``λ‖D_z x‖₁``
    (DDS's 3D extension; DiffusionMBIR, Chung et al. CVPR 2023). NFE = ``steps`` (each on ``N·D`` slices).

    ``z_weight = 0`` is exactly :func:`dds` on the slices (same generator, same draws): the ADMM splitting is then
    skipped rather than run with a vanishing penalty, whose ρ-coupling would still tie neighbouring slices.

    Args:
        model: a 2D ``model(x_t, t, **model_kwargs)`` predicting ε for ``(N·D, C, H, W)`` slices.
        y: the measurements ``SliceStack(op).A(volume)``, ``(N, D, …)``.
        op: the 2D linear operator of one slice (or a :class:`SliceStack` of it).
        schedule: the training schedule.
        z_weight: λ >= 0 of the TV penalty along depth (the official 0.04).
        rho: the ADMM penalty ρ > 0 (the official 10).
        admm_iters: ADMM iterations per step, an integer >= 1 (the official 1).
        steps, eta, cg_iters, gamma, eta_rule, clip_x0, spacing, model_kwargs, generator, progress: as :func:`dds`.
        callback: receives ``SamplerState(i, t, x, x̃_0)`` with volumes ``(N, C, D, H, W)``.
        x_T: initial noise, a volume ``(N, C, D, H, W)`` or its shape; default noise drawn as ``(N·D, C, H, W)``
            slices (the draws of :func:`dds` on the slices).

    Returns:
        The reconstructed volumes ``(N, C, D, H, W)`` in ``y``'s dtype and device.

    Raises:
        TypeError: as :func:`dds`.
        ValueError: as :func:`dds`; ``y`` with fewer than 3 dimensions ``(N, D, …)``; ``x_T`` not a volume or not
            of ``y``'s depth ``y.shape[1]``;
            ``z_weight`` not a finite number >= 0, ``rho`` not > 0, ``admm_iters`` not an integer >= 1.

    Notes:
        Official code: ``HJ-harry/DDS``, ``solver_3d.py::dds3d`` (see :func:`admm_tv_z` for ρ, λ and the
        deviations). The ADMM split ``(z, u)`` starts at zero and is carried across diffusion steps, as there.
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback, model_kwargs=model_kwargs)
    _check_dds_args(eta, cg_iters, gamma, eta_rule, clip_x0, schedule)
    check_real("z_weight", z_weight, 0)
    check_real("rho", rho, 0, low_open=True)
    check_int("admm_iters", admm_iters, 1)
    stack = op if isinstance(op, SliceStack) else SliceStack(op)
    _check_measurement(y)
    if y.ndim < 3:
        raise ValueError(f"y must have shape (N, D, …) (one measurement per slice), got {tuple(y.shape)}")
    aty = stack.AT(y)  # (N, C, D, H, W)
    depth = y.shape[1]
    if x_T is None:
        x = initial_noise(_slices(aty).shape, generator, like=y)
    else:
        shape = tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else x_T
        if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) != 5:
            raise ValueError(f"x_T must be a volume (N, C, D, H, W) or its shape, got {shape!r:.80}")
        if shape[2] != depth:
            raise ValueError(f"x_T must have depth D = {depth} (y.shape[1], one measurement per slice), got shape "
                             f"{tuple(shape)!r:.80}")  # fmt: skip
        x = _slices(initial_noise(x_T, generator, like=y))
    if stack.A(_volume(x, depth)).shape != y.shape:
        got = tuple(stack.A(_volume(x, depth)).shape)
        raise ValueError(f"y must have the shape of SliceStack(op).A(x_T) {got}, got {tuple(y.shape)}")
    if z_weight == 0:
        slice_aty = _slices(aty)
        step = lambda v: _data_step(v, slice_aty, stack.op, cg_iters, gamma)  # noqa: E731
    else:
        state = {"split": None}

        def step(v: torch.Tensor) -> torch.Tensor:
            vol = _volume(v, depth)
            vol, state["split"] = _admm(vol, aty, stack, z_weight, rho, admm_iters, cg_iters, gamma, vol,
                                        state["split"])  # fmt: skip
            return _slices(vol)

    x = _dds_loop(model, x, step, schedule, steps, eta, eta_rule, clip_x0, spacing, model_kwargs, generator,
                  progress, callback, "DDS-3D", view=lambda v: _volume(v, depth))  # fmt: skip
    return _volume(x, depth)
