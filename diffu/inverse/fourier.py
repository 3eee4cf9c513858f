"""Fourier and projection measurements: phase retrieval (§3.5), MRI k-space sampling and the CT Radon transform
(§5).

See :mod:`diffu.inverse.operators` for the interface. The 2D Fourier transform is the orthonormal, centred one of
fastMRI and the DPS code (:func:`fft2c`): the zero frequency sits at index ``(H//2, W//2)``. The operators check
their inputs' dtype and shape but not their values: a NaN or an infinity propagates to the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..checks import (
    check_finite,
    check_floating,
    check_image,
    check_int,
    check_mask,
    check_real,
    check_tensor,
    mask_for,
)
from .operators import LinearOperator, Operator, adjoint_by_autograd

__all__ = ["MRI", "PhaseRetrieval", "Radon", "ShiftedPhaseRetrieval", "fft2c", "ifft2c", "register_phase"]

_DIMS = (-2, -1)


def _check_2d(x, name: str, layout: str = "(…, H, W)") -> None:
    """``x`` is a tensor with at least two dimensions."""
    check_tensor(x, name)
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions {layout}, got shape {tuple(x.shape)}")


def _check_signal(x, name: str) -> None:
    """A real floating-point or complex tensor with at least two dimensions (the last two transformed)."""
    if isinstance(x, torch.Tensor) and not x.is_complex():
        check_floating(x, name)
    _check_2d(x, name)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal centred 2D FFT over the last two dims, ``fftshift(fft2(ifftshift(x), norm="ortho"))``. §3.5, §5.

    ``x``: a real floating-point or complex tensor ``(…, H, W)`` (``ValueError`` otherwise); NaN propagates."""
    _check_signal(x, "x")
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`fft2c`, ``fftshift(ifft2(ifftshift(k), norm="ortho"))``. §3.5, §5.

    ``k``: a complex or real floating-point tensor ``(…, H, W)`` (``ValueError`` otherwise); NaN propagates."""
    _check_signal(k, "k")
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)


# ----------------------------------------------------------------------------------------------------------------
# Phase retrieval (§3.5)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseRetrieval(Operator):
    """Fourier phase retrieval ``y = |F(pad(x))|`` with the orthonormal centred FFT :func:`fft2c`; non-linear (no
    ``AT``/``pinv``/SVD) but differentiable. ``(N, C, H, W) → (N, C, H + 2p_h, W + 2p_w)``. §3.5.

    Zero padding ``p_h = round(H (oversample − 1) / 2)`` rows on each side (``p_w`` likewise, halves rounded up),
    so the padded image is ``≈ oversample`` times the original per axis (``oversample = 2``: twice the Nyquist
    rate of the autocorrelation, the classical uniqueness condition). DPS pads ``oversample/8 · 256`` pixels per
    side of a 256-px image, i.e. a padded size of ``(1 + oversample/4) H``: its ``oversample = 2`` is our 1.5.
    The measurement is of ``x`` as given (a [-1, 1] image has the extra global-sign ambiguity ``x → −x``).
    """

    oversample: float = 2.0

    def __post_init__(self):
        check_real("oversample", self.oversample, 1)

    def padding(self, height: int, width: int) -> tuple[int, int]:
        """``(p_h, p_w)``: the zeros added on each side of an ``height × width`` image (positive integers)."""
        check_int("height", height, 1)
        check_int("width", width, 1)
        return tuple(math.floor(n * (self.oversample - 1) / 2 + 0.5) for n in (height, width))

    def image_size(self, height: int, width: int, *, name: str = "the padded size") -> tuple[int, int]:
        """The image size whose padded size is ``height × width`` (the inverse of the padding rule); ``ValueError``
        when no image size pads to it (the message names ``name``, the argument the size came from)."""
        check_int("height", height, 1)
        check_int("width", width, 1)
        sizes = []
        for axis, n in enumerate((height, width)):
            match = [m for m in range(1, n + 1) if m + 2 * self.padding(m, m)[axis] == n]
            if not match:
                raise ValueError(
                    f"{name} has size {height}×{width}, but no image size pads to {n} with oversample {self.oversample}"
                )
            sizes.append(match[0])
        return tuple(sizes)

    def support(self, like: torch.Tensor, *, name: str = "like") -> torch.Tensor:
        """The image's support in the padded frame of a measurement ``like`` ``(…, H_p, W_p)``: bool ``(H_p, W_p)``;
        ``name`` is the argument ``like`` came from, for the error messages."""
        _check_2d(like, name, "(…, H_p, W_p)")
        Hp, Wp = like.shape[-2:]
        (H, W) = self.image_size(Hp, Wp, name=name)
        ph, pw = self.padding(H, W)
        s = torch.zeros(Hp, Wp, dtype=torch.bool, device=like.device)
        s[ph : ph + H, pw : pw + W] = True
        return s

    def A(self, x):
        self._check_image(x, "x")
        ph, pw = self.padding(*x.shape[-2:])
        return fft2c(F.pad(x, (pw, pw, ph, ph))).abs()  # (N, C, H + 2 p_h, W + 2 p_w)


# ----------------------------------------------------------------------------------------------------------------
# MRI (§5)
# ----------------------------------------------------------------------------------------------------------------


def _conjugate_mask(m: torch.Tensor) -> torch.Tensor:
    """The mask of the conjugate frequencies ``−k`` (centred layout): ``m'[k] = m[−k]``."""
    H, W = m.shape[-2:]
    ih = (2 * (H // 2) - torch.arange(H, device=m.device)) % H
    iw = (2 * (W // 2) - torch.arange(W, device=m.device)) % W
    return m[..., ih, :][..., iw]


@dataclass(frozen=True, eq=False)
class MRI(LinearOperator):
    """Cartesian undersampled single-coil MRI ``y = M ⊙ F x`` with the orthonormal centred FFT :func:`fft2c` and a
    binary k-space mask ``M`` ``(1 or N, 1 or C, H, W)`` (:func:`~diffu.inverse.masks.cartesian_mask`). §5.

    ``x`` is a real image ``(N, C, H, W)``; ``y`` is real with the complex k-space as a last axis of size 2 (real,
    imaginary), ``(N, C, H, W, 2)``, as ``torch.view_as_real``; unobserved entries are 0. As a map between real
    spaces, the adjoint is ``Aᵀ y = Re F⁻¹(M ⊙ y)`` (the zero-filled reconstruction) and the inner product of
    measurements is the plain sum over both parts, ``Re <y₁, y₂>``. ``pinv = (AᵀA)⁺Aᵀ`` with
    ``AᵀA = F⁻¹ M_s F``, ``M_s = (M(k) + M(−k))/2``: it equals ``AT`` when the mask is Hermitian-symmetric (as
    :func:`~diffu.inverse.masks.cartesian_mask`'s are). Gaussian noise on ``y`` adds ``σ²`` to each part. The
    operator keeps a copy of ``mask``.
    """

    mask: torch.Tensor
    has_pinv = True

    def __post_init__(self):
        check_mask(self.mask)
        object.__setattr__(self, "mask", self.mask.detach().clone())  # immutable (convention 7): no alias

    def A(self, x):
        self._check_image(x, "x")
        m = mask_for(self.mask, x)
        return torch.view_as_real(m * fft2c(x))  # (N, C, H, W, 2)

    def _kspace(self, y):
        if isinstance(y, torch.Tensor) and not y.is_floating_point():
            check_floating(y, "y")
        if not isinstance(y, torch.Tensor) or y.ndim != 5 or y.shape[-1] != 2:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"MRI measurements y must have shape (N, C, H, W, 2), got {got}")
        return torch.complex(y[..., 0], y[..., 1]), mask_for(self.mask, y[..., 0])

    def AT(self, y):
        k, m = self._kspace(y)
        return ifft2c(m * k).real

    def pinv(self, y):
        _, m = self._kspace(y)
        ms = (m + _conjugate_mask(m)) / 2
        w = torch.where(ms > 0, 1 / torch.where(ms > 0, ms, 1), 0)
        return ifft2c(w * fft2c(self.AT(y))).real


# ----------------------------------------------------------------------------------------------------------------
# CT: parallel-beam Radon transform (§5)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Radon(LinearOperator):
    """Parallel-beam Radon transform ``p(θ, u) = ∫ x(c + u e_θ + v e_θ^⊥) dv`` of square images:
    ``(N, C, n, n) → (N, C, n_angles, n)`` (one detector per pixel column, spacing 1 pixel). §5.

    ``angles``: an integer ``n`` (``n`` equally spaced angles in ``[0°, 180°)``) or a sequence of angles in
    degrees. ``e_θ = (cos θ, sin θ)`` in (column, row) pixel coordinates about the image centre ``c``. Discretised
    by bilinear sampling (``grid_sample``, zero outside the image) at unit steps in ``v``, over ``⌈√2 n⌉`` samples
    so every ray crosses the whole square. ``AT`` is the exact adjoint of this discretisation (by
    autograd): the unfiltered back-projection; :func:`~diffu.inverse.classical.fbp` filters first.
    Memory: one sample per (angle, ray, step), ``N·C·n_angles·n·⌈√2 n⌉`` values.
    """

    angles: tuple = 180

    def __post_init__(self):
        a = self.angles
        if isinstance(a, int) and not isinstance(a, bool):
            if a < 1:
                raise ValueError(f"angles must be a positive count or a sequence of degrees, got {a}")
            a = [180.0 * i / a for i in range(a)]
        a = a.tolist() if isinstance(a, torch.Tensor) and a.ndim == 1 else a
        if isinstance(a, (str, bytes)) or not isinstance(a, (tuple, list)):
            raise ValueError(f"angles must be a positive count or a sequence of degrees, got {a!r:.80}")
        if not a:
            raise ValueError("angles must not be empty")
        for i, v in enumerate(a):
            check_real(f"angles[{i}]", v)
        object.__setattr__(self, "angles", tuple(float(v) for v in a))

    def _grid(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """Sampling points in ``grid_sample``'s normalised coordinates, ``(1, n_angles·n_v, n, 2)``."""
        theta = torch.tensor(self.angles, device=like.device, dtype=like.dtype) * (math.pi / 180)
        n_v = math.ceil(math.sqrt(2) * n)
        u = torch.arange(n, device=like.device, dtype=like.dtype) - (n - 1) / 2  # detector positions
        v = torch.arange(n_v, device=like.device, dtype=like.dtype) - (n_v - 1) / 2  # steps along the ray
        cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
        col = u[None, None, :] * cos - v[None, :, None] * sin  # (n_angles, n_v, n), pixels from the centre
        row = u[None, None, :] * sin + v[None, :, None] * cos
        return (torch.stack([col, row], -1) * (2 / n)).reshape(1, -1, n, 2)  # align_corners=False: 2 / n per pixel

    def A(self, x):
        self._check_image(x, "x")
        N, C, H, W = x.shape
        if H != W:
            raise ValueError(f"x must be square images, got {H}×{W} (Radon)")
        grid = self._grid(H, x).expand(N, -1, -1, -1)
        samples = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return samples.reshape(N, C, len(self.angles), -1, H).sum(3)  # (N, C, n_angles, n)

    def AT(self, y):
        self._check_image(y, "y (sinogram)")
        N, C, n_angles, n = y.shape
        if n_angles != len(self.angles):
            raise ValueError(f"y (sinogram) has {n_angles} angles, the operator {len(self.angles)}: y must be "
                             f"(N, C, {len(self.angles)}, n)")  # fmt: skip
        return adjoint_by_autograd(self.A, y, (N, C, n, n))


# ----------------------------------------------------------------------------------------------------------------
# Phase retrieval of [-1, 1] images, and scoring up to its trivial ambiguities (§4.2.2, §4.3)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftedPhaseRetrieval(Operator):
    """``y = |F(pad((x + 1) / 2))|``: :class:`PhaseRetrieval` of the image mapped from [-1, 1] to [0, 1], so that the
    classical algorithms' non-negativity constraint holds (``hio(op.pr, y, bounds=(0, 1))``, §A.2.2) and the global
    sign ambiguity ``x → −x`` of a [-1, 1] image is gone. Non-linear, differentiable (DPS, §4.2.2; the benchmark
    of §4.3). ``(N, C, H, W) → (N, C, H + 2p_h, W + 2p_w)``; ``pr`` is the underlying :class:`PhaseRetrieval`."""

    oversample: float = 2.0

    def __post_init__(self):
        PhaseRetrieval(self.oversample)  # validates oversample

    def A(self, x):
        self._check_image(x, "x")
        return self.pr.A((x + 1) / 2)

    @property
    def pr(self) -> PhaseRetrieval:
        """The phase retrieval of the [0, 1] image (its padding, support and classical solvers)."""
        return PhaseRetrieval(self.oversample)


def register_phase(pr: PhaseRetrieval, est: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``est`` ``(N, C, H, W)`` in [-1, 1] aligned to the reference ``x`` (same shape) per image, over the trivial
    ambiguities of Fourier phase retrieval that the support allows: translations within ``pr``'s padding and the
    twin image (180° rotation). Each image is compared in the padded frame (background −1, i.e. 0 after
    ``(x + 1) / 2``) and the candidate closest to ``x`` in L2 is returned. Phase retrieval is scored after this
    alignment (§4.2.2, §4.3, as §A.2.2 does).

    Raises:
        TypeError: ``pr`` is not a :class:`PhaseRetrieval`.
        ValueError: ``est`` or ``x`` is not a finite floating-point image batch, or their shapes differ.
    """
    if not isinstance(pr, PhaseRetrieval):
        raise TypeError(f"pr must be a PhaseRetrieval, got {type(pr).__name__}")
    for name, v in (("est", est), ("x", x)):
        if isinstance(v, torch.Tensor) and not v.is_floating_point():
            check_floating(v, name)
        check_image(v, name)
        check_finite(v, name)  # a NaN would make every candidate's error NaN and return est unaligned
    if est.shape != x.shape:
        raise ValueError(f"est and x must have the same shape, got {tuple(est.shape)} and {tuple(x.shape)}")
    (H, W), (ph, pw) = x.shape[-2:], pr.padding(*x.shape[-2:])
    out = []
    for e, r in zip(est, x):
        ref, best = F.pad(r + 1, (pw, pw, ph, ph)), (math.inf, e)
        for cand in (F.pad(e + 1, (pw, pw, ph, ph)), F.pad(e + 1, (pw, pw, ph, ph)).flip(-2, -1)):
            for dy in range(-ph, ph + 1):
                for dx in range(-pw, pw + 1):
                    s = cand.roll((dy, dx), (-2, -1))
                    err = float((s - ref).norm())
                    if err < best[0]:
                        best = (err, s[..., ph : ph + H, pw : pw + W] - 1)
        out.append(best[1])
    return torch.stack(out)
