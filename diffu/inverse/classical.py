"""Classical reconstructions for the inverse problems of chapter §3 and §5: the baselines that diffusion posterior
samplers are compared against.

- Linear least squares: conjugate gradients :func:`cg`, Tikhonov :func:`tikhonov` (CG, or closed form by FFT for
  circular blur) and Wiener deconvolution :func:`wiener`.
- Total variation (appendix A.2.2): :func:`tv_reconstruct`, the primal–dual algorithm of Chambolle & Pock (2011)
  for ``½‖Ax − y‖² + λ TV(x)`` with any linear operator, step sizes from :func:`op_norm`; :func:`tv_denoise`.
- CT: filtered back-projection :func:`fbp`. MRI: :func:`zero_filled`, and TV through :func:`tv_reconstruct`.
- Phase retrieval: :func:`gerchberg_saxton` (error reduction) and Fienup's :func:`hio`.

Every solver works on the whole batch at once; images are independent (each has its own CG step sizes).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .blur import Blur
from .fourier import MRI, PhaseRetrieval, Radon, fft2c, ifft2c
from .operators import Identity, LinearOperator

__all__ = [
    "cg",
    "fbp",
    "gerchberg_saxton",
    "grad",
    "grad_T",
    "hio",
    "op_norm",
    "tikhonov",
    "tv",
    "tv_denoise",
    "tv_reconstruct",
    "wiener",
    "zero_filled",
]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # per-sample inner product, (N,)
    return (a * b).flatten(1).sum(1)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, 1, ..., 1)
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def _check_lam(name: str, lam) -> None:
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {lam}")


# ----------------------------------------------------------------------------------------------------------------
# Least squares
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def cg(
    apply_A: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 100,
    progress: bool = False,
) -> torch.Tensor:
    """Conjugate gradients for ``A x = b`` with a symmetric positive (semi-)definite ``apply_A`` (Hestenes &
    Stiefel 1952), batched per image: every sample ``n`` of ``b`` ``(N, …)`` has its own step sizes ``α_n, β_n``
    and stops when ``‖b_n − A x_n‖ ≤ tol · ‖b_n‖``; ``apply_A`` must act on each sample independently.
    Returns ``x`` like ``b`` after at most ``max_iter`` iterations. §3, appendix A.2.2."""
    if not tol >= 0 or isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"cg needs tol >= 0 and an integer max_iter >= 0, got tol={tol}, max_iter={max_iter!r}")
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply_A(x) if x0 is not None else b.clone()
    p, rr, target = r.clone(), _dot(r, r), tol**2 * _dot(b, b)
    for _ in tqdm(range(max_iter), desc="CG", disable=not progress):
        active = rr > target
        if not bool(active.any()):
            break
        Ap = apply_A(p)
        pAp = _dot(p, Ap)
        alpha = torch.where(active & (pAp > 0), rr / torch.where(pAp > 0, pAp, 1), 0)  # converged samples stay put
        x, r = x + _per_sample(alpha, x) * p, r - _per_sample(alpha, r) * Ap
        rr_new = _dot(r, r)
        beta = torch.where(active, rr_new / torch.where(rr > 0, rr, 1), 0)
        p, rr = r + _per_sample(beta, p) * p, rr_new
    return x


def _fft_solve(op: Blur, y: torch.Tensor, lam) -> torch.Tensor:
    """``(AᵀA + λ)⁻¹ Aᵀ y`` for a circular blur: ``F⁻¹[conj(k̂) ŷ / (|k̂|² + λ)]``."""
    k = op.transfer(y)
    return torch.fft.irfft2(torch.fft.rfft2(y) * k.conj() / (k.abs() ** 2 + lam), s=y.shape[-2:])


def tikhonov(
    op: LinearOperator,
    y: torch.Tensor,
    lam: float,
    method: str = "auto",
    x0: torch.Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 200,
) -> torch.Tensor:
    """Tikhonov-regularised least squares ``argmin_x ½‖Ax − y‖² + ½λ‖x‖²``, i.e. ``(AᵀA + λI) x = Aᵀy``. §3.

    ``method="cg"`` solves the normal equations by :func:`cg` (any linear operator); ``"fft"`` is the closed form
    ``F⁻¹[conj(k̂) ŷ / (|k̂|² + λ)]`` of a circular :class:`~diffu.inverse.blur.Blur`; ``"auto"`` picks ``"fft"``
    for a circular blur and ``"cg"`` otherwise. ``λ = 0`` is plain least squares (CG from ``x0``, default 0,
    gives the minimum-norm solution)."""
    _check_lam("lam", lam)
    circular = isinstance(op, Blur) and op.boundary == "circular"
    if method == "auto":
        method = "fft" if circular else "cg"
    if method == "fft":
        if not circular:
            raise ValueError(f"method='fft' needs a circular Blur, got {type(op).__name__}")
        return _fft_solve(op, y, lam)
    if method != "cg":
        raise ValueError(f"method must be 'auto', 'cg' or 'fft', got {method!r}")
    return cg(lambda v: op.AT(op.A(v)) + lam * v, op.AT(y), x0=x0, tol=tol, max_iter=max_iter)


def wiener(y: torch.Tensor, kernel: torch.Tensor, nsr: float | torch.Tensor) -> torch.Tensor:
    """Wiener deconvolution of a circular blur, ``x̂ = F⁻¹[conj(k̂) ŷ / (|k̂|² + NSR)]`` (Wiener 1949; Gonzalez &
    Woods §5.8). ``nsr`` is the noise-to-signal power ratio ``σ² / S_x``: a number (white signal spectrum) or a
    tensor broadcasting to the ``torch.fft.rfft2`` layout ``(H, W//2 + 1)``. ``y`` ``(N, C, H, W)``. §3.4."""
    if isinstance(nsr, torch.Tensor):
        if bool((nsr < 0).any()):
            raise ValueError(f"nsr must be >= 0, got a minimum of {float(nsr.min())}")
        nsr = nsr.to(y.device)
    else:
        _check_lam("nsr", nsr)
    return _fft_solve(Blur(kernel, "circular"), y, nsr)


@torch.no_grad()
def op_norm(op: LinearOperator, like: torch.Tensor, iters: int = 50, generator=None) -> float:
    """The operator norm ``‖A‖₂ = √λ_max(AᵀA)`` by power iteration (von Mises) from a random ``like``-shaped start
    (seeded by ``generator``); a slight underestimate that converges from below. Appendix A.2.2."""
    v = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    lam = torch.zeros((), device=like.device, dtype=like.dtype)
    for _ in range(iters):
        v = v / v.norm()
        w = op.AT(op.A(v))
        lam = w.norm()
        if lam == 0:
            break
        v = w
    return float(lam.sqrt())


# ----------------------------------------------------------------------------------------------------------------
# Total variation by Chambolle–Pock (appendix A.2.2)
# ----------------------------------------------------------------------------------------------------------------


def grad(x: torch.Tensor) -> torch.Tensor:
    """The discrete gradient ∇ of :func:`tv`: forward differences, 0 across the last row/column (Neumann),
    ``(N, C, H, W) → (N, C, 2, H, W)`` with (vertical, horizontal) on axis 2. Appendix A.2.2."""
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    return torch.stack([dy, dx], 2)


def grad_T(q: torch.Tensor) -> torch.Tensor:
    """The exact adjoint ∇ᵀ of :func:`grad` (minus the discrete divergence): ``(N, C, 2, H, W) → (N, C, H, W)``.
    Appendix A.2.2."""
    qy, qx = q[:, :, 0, :-1, :], q[:, :, 1, :, :-1]
    return F.pad(qy, (0, 0, 1, 0)) - F.pad(qy, (0, 0, 0, 1)) + F.pad(qx, (1, 0)) - F.pad(qx, (0, 1))


def tv(x: torch.Tensor) -> torch.Tensor:
    """Isotropic total variation ``Σ_pixels √((∂_y x)² + (∂_x x)²)``, per image and channel-summed; ``(N,)``. A.2.2."""
    return grad(x).pow(2).sum(2).sqrt().flatten(1).sum(1)


@torch.no_grad()
def tv_reconstruct(
    op: LinearOperator,
    y: torch.Tensor,
    lam: float,
    iters: int = 300,
    x0: torch.Tensor | None = None,
    norm: float | None = None,
    theta: float = 1.0,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """``argmin_x ½‖Ax − y‖² + λ TV(x)`` (isotropic TV, :func:`tv`) by the primal–dual algorithm of Chambolle &
    Pock (2011, Alg. 1) with ``K = [A; ∇]``, ``F(Ax, ∇x) = ½‖Ax − y‖² + λ‖∇x‖₂,₁``, ``G = 0``. Appendix A.2.2.

    Iterations: ``p ← (p + σ(A x̄ − y)) / (1 + σ)``, ``q ← proj_{‖q_ij‖ ≤ λ}(q + σ∇x̄)``,
    ``x⁺ ← x − τ(Aᵀp + ∇ᵀq)``, ``x̄ ← x⁺ + θ(x⁺ − x)``, with ``τ = σ = 0.95 / ‖K‖`` and
    ``‖K‖² ≤ ‖A‖² + 8`` (``norm`` = ‖A‖, default :func:`op_norm`). Works with any linear operator, including
    :class:`~diffu.inverse.fourier.MRI` (its 2-channel measurements are a real vector space). ``x0`` defaults to
    ``Aᵀy`` (a pseudo-inverse start can amplify noise badly). ``callback(i, x)`` after every iteration.
    """
    _check_lam("lam", lam)
    x = x0.clone() if x0 is not None else op.AT(y)
    norm = op_norm(op, x, generator=torch.Generator(device=x.device).manual_seed(0)) if norm is None else norm
    tau = sigma = 0.95 / math.sqrt(norm**2 + 8)
    x_bar, p, q = x, torch.zeros_like(y), torch.zeros_like(grad(x))
    tiny = torch.finfo(x.dtype).tiny
    for i in tqdm(range(iters), desc="TV", disable=not progress):
        p = (p + sigma * (op.A(x_bar) - y)) / (1 + sigma)  # prox of the conjugate of ½‖· − y‖²
        q = q + sigma * grad(x_bar)
        q = q * (lam / q.pow(2).sum(2, keepdim=True).sqrt().clamp_min(tiny)).clamp(max=1)  # onto ‖q_ij‖ ≤ λ
        x_new = x - tau * (op.AT(p) + grad_T(q))
        x_bar, x = x_new + theta * (x_new - x), x_new
        if callback is not None:
            callback(i, x)
    return x


def tv_denoise(y: torch.Tensor, lam: float, iters: int = 200, progress: bool = False) -> torch.Tensor:
    """TV denoising (Rudin, Osher & Fatemi 1992) ``argmin_x ½‖x − y‖² + λ TV(x)``: :func:`tv_reconstruct` with
    ``A = I``. Appendix A.2.2."""
    return tv_reconstruct(Identity(), y, lam, iters=iters, norm=1.0, progress=progress)


# ----------------------------------------------------------------------------------------------------------------
# CT and MRI (§5)
# ----------------------------------------------------------------------------------------------------------------


def _ramp(n: int, like: torch.Tensor) -> torch.Tensor:
    """The ramp filter ``|ω|`` of ``n`` samples (rfft layout) from its band-limited spatial form (Kak & Slaney
    1988, Eq. 3.61: ``h(0) = ¼``, ``h(k) = −1/(πk)²`` for odd ``k``, 0 for even), which keeps the DC term right."""
    k = torch.arange(n, device=like.device, dtype=like.dtype)
    k = torch.minimum(k, n - k)
    h = torch.where(k % 2 == 1, -1 / (math.pi * k.clamp_min(1)) ** 2, 0.0)
    h[0] = 0.25
    return torch.fft.rfft(h).real


def fbp(op: Radon, sinogram: torch.Tensor) -> torch.Tensor:
    """Filtered back-projection ``x̂ = (π / n_angles) Aᵀ(h * p)`` with the ramp filter ``h`` applied along the
    detector axis in the Fourier domain (zero-padded to ≥ 2n, a power of two); assumes angles spread uniformly
    over 180°. ``(N, C, n_angles, n) → (N, C, n, n)``. §5."""
    if not isinstance(op, Radon):
        raise ValueError(f"fbp needs a Radon operator, got {type(op).__name__}")
    n = sinogram.shape[-1]
    size = max(64, 2 ** math.ceil(math.log2(2 * n)))
    filtered = torch.fft.irfft(torch.fft.rfft(sinogram, n=size) * _ramp(size, sinogram), n=size)[..., :n]
    return op.AT(filtered) * (math.pi / len(op.angles))


def zero_filled(op: MRI, y: torch.Tensor) -> torch.Tensor:
    """The zero-filled MRI reconstruction ``Re F⁻¹(M ⊙ y)`` = ``op.AT(y)`` (unmeasured k-space set to 0). §5."""
    if not isinstance(op, MRI):
        raise ValueError(f"zero_filled needs an MRI operator, got {type(op).__name__}")
    return op.AT(y)


# ----------------------------------------------------------------------------------------------------------------
# Phase retrieval (§3.5)
# ----------------------------------------------------------------------------------------------------------------


def _phase_start(op: PhaseRetrieval, y: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random-phase start ``Re F⁻¹(y e^{iφ})``, ``φ ~ U[0, 2π)`` (seeded), and the support ``(H_p, W_p)``."""
    if not isinstance(op, PhaseRetrieval):
        raise ValueError(f"phase retrieval needs a PhaseRetrieval operator, got {type(op).__name__}")
    phase = 2 * math.pi * torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return ifft2c(torch.polar(y, phase)).real, op.support(y)


def _fourier_projection(g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Keep the phase of ``F g``, impose the measured magnitudes ``y``: ``Re F⁻¹(y e^{i arg F g})``."""
    return ifft2c(torch.polar(y, fft2c(g).angle())).real


def _in_bounds(g: torch.Tensor, bounds) -> torch.Tensor:
    lo, hi = bounds
    ok = torch.ones_like(g, dtype=torch.bool)
    return ok & (g >= lo if lo is not None else ok) & (g <= hi if hi is not None else ok)


def _object_projection(g: torch.Tensor, support: torch.Tensor, bounds) -> torch.Tensor:
    """The projection onto {zero outside the support, within ``bounds`` inside}."""
    lo, hi = bounds
    inside = g.clamp(lo, hi) if (lo, hi) != (None, None) else g
    return torch.where(support, inside, 0)


def _crop(op: PhaseRetrieval, g: torch.Tensor) -> torch.Tensor:
    (H, W), (ph, pw) = op.image_size(*g.shape[-2:]), op.padding(*op.image_size(*g.shape[-2:]))
    return g[..., ph : ph + H, pw : pw + W]


@torch.no_grad()
def gerchberg_saxton(
    op: PhaseRetrieval, y: torch.Tensor, iters: int = 200, bounds=(0.0, None), generator=None, progress=False
) -> torch.Tensor:
    """Error reduction (Gerchberg & Saxton 1972; Fienup 1982): alternate the Fourier-magnitude projection and the
    object projection (support from the padding, values within ``bounds``; ``(0, None)`` is non-negativity,
    ``(None, None)`` none). Random initial phase from ``generator``. ``y`` ``(N, C, H_p, W_p)`` → the image
    ``(N, C, H, W)``. §3.5."""
    g, support = _phase_start(op, y, generator)
    for _ in tqdm(range(iters), desc="ER", disable=not progress):
        g = _object_projection(_fourier_projection(g, y), support, bounds)
    return _crop(op, g)


@torch.no_grad()
def hio(
    op: PhaseRetrieval,
    y: torch.Tensor,
    iters: int = 500,
    beta: float = 0.9,
    bounds=(0.0, None),
    er_iters: int = 50,
    generator=None,
    progress: bool = False,
) -> torch.Tensor:
    """Fienup's hybrid input–output (Fienup 1982, Eq. 36): with ``g' = `` the Fourier-magnitude projection of
    ``g``, ``g ← g'`` where ``g'`` satisfies the object constraints (inside the support, within ``bounds``) and
    ``g ← g − β g'`` elsewhere; then ``er_iters`` steps of error reduction (:func:`gerchberg_saxton`) to land on
    the constraint set. Random initial phase from ``generator``. ``y`` ``(N, C, H_p, W_p)`` → ``(N, C, H, W)``.
    The result is unique up to the trivial ambiguities: 180° rotation (twin image), translation, global sign
    (if ``bounds`` allow it). §3.5."""
    if not 0 < beta <= 1:
        raise ValueError(f"HIO beta must be in (0, 1], got {beta}")
    g, support = _phase_start(op, y, generator)
    for i in tqdm(range(iters + er_iters), desc="HIO", disable=not progress):
        gp = _fourier_projection(g, y)
        if i < iters:
            g = torch.where(support & _in_bounds(gp, bounds), gp, g - beta * gp)
        else:
            g = _object_projection(gp, support, bounds)
    return _crop(op, g)
