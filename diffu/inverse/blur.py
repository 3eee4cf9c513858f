"""Blurring (§3.4) and atmospheric turbulence (§3.3): kernel generators, :class:`Blur` and :class:`Turbulence`.

See :mod:`diffu.inverse.operators` for the interface (``A``, ``AT``, ``pinv``, SVD view) shared by all operators
and the input checks of their methods. The operators do not look for NaN: a NaN or an infinity in the input
propagates to the output (the solvers refuse a non-finite measurement at entry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..checks import (
    check_choice,
    check_device,
    check_dtype,
    check_finite,
    check_floating,
    check_generator,
    check_int,
    check_real,
)
from .operators import LinearOperator, SeparableOperator, adjoint_by_autograd, svd_1d, uniform_float

__all__ = ["Blur", "Turbulence", "gaussian_kernel", "motion_kernel", "random_kernels"]


BOUNDARIES = ("circular", "padded")


def _check_odd(name: str, size, low: int = 1) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < low or size % 2 == 0:
        raise ValueError(f"{name} size must be an odd positive integer{f' >= {low}' if low > 1 else ''} (a centred "
                         f"kernel), got {size!r}")  # fmt: skip


def _check_place(device, dtype) -> None:
    check_device("device", device)
    check_dtype("dtype", dtype)


def gaussian_kernel(size: int, std: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Isotropic Gaussian blur kernel ``exp(−r² / 2σ²)`` normalised to sum 1, ``(size, size)``. §3.4.

    Raises:
        ValueError: ``size`` is not an odd positive integer, ``std`` not a finite number > 0, ``device`` or
            ``dtype`` (floating point) not understood.
    """
    _check_odd("kernel", size)
    check_real("kernel std", std, 0, low_open=True)
    _check_place(device, dtype)
    t = torch.arange(size, device=device, dtype=torch.float64) - size // 2
    try:
        two_var = 2 * std**2
    except OverflowError:  # σ² beyond the double range: exp(−r²/∞) = 1, the limit σ → ∞ is a box
        two_var = math.inf
    if two_var == 0:  # σ² underflows: exp(−0/0) would be NaN at the centre; the limit σ → 0 is a delta
        return ((t[:, None] == 0) & (t[None, :] == 0)).to(dtype)
    g = torch.exp(-(t**2) / two_var)
    return (torch.outer(g, g) / g.sum() ** 2).to(dtype)


def motion_kernel(size: int, intensity: float = 0.5, generator=None, device=None, dtype=torch.float32):
    """A random camera-shake kernel, ``(size, size)``, non-negative, sum 1. §3.4.

    A random walk with momentum (after Boracchi & Foi 2012): ``8·size`` unit steps whose heading changes by
    ``N(0, (intensity·π/4)²)`` per step, centred, scaled to span 50–100 % of the kernel and rasterised by bilinear
    splatting. ``intensity = 0`` gives straight linear motion blur.

    Raises:
        ValueError: ``size`` is not an odd integer >= 3 (a path needs room to move), ``intensity`` not a finite
            number >= 0; ``generator``, ``device`` or ``dtype`` of the wrong kind.
    """
    _check_odd("kernel", size, 3)
    check_real("motion intensity", intensity, 0)
    check_generator(generator)
    _check_place(device, dtype)
    dev = generator.device if generator is not None else "cpu"
    steps = 8 * size
    turns = torch.randn(steps, generator=generator, device=dev, dtype=torch.float64).cpu()
    heading = 2 * math.pi * uniform_float(generator) + torch.cumsum(intensity * math.pi / 4 * turns, 0)
    path = torch.cumsum(torch.stack([heading.sin(), heading.cos()], 1), 0)  # (steps, 2): (row, col)
    path = path - (path.amax(0) + path.amin(0)) / 2
    scale = (0.5 + 0.5 * uniform_float(generator)) * (size - 1) / 2 / path.abs().max().clamp_min(1e-12)
    path = path * scale + (size - 1) / 2  # inside [0, size − 1]²
    i0 = path.floor().clamp(0, size - 2).long()
    frac = path - i0
    k = torch.zeros(size * size, dtype=torch.float64)
    for dr in (0, 1):
        for dc in (0, 1):
            w = (frac[:, 0] if dr else 1 - frac[:, 0]) * (frac[:, 1] if dc else 1 - frac[:, 1])
            k.index_add_(0, (i0[:, 0] + dr) * size + i0[:, 1] + dc, w)
    return (k / k.sum()).reshape(size, size).to(device=device, dtype=dtype)


def random_kernels(n: int, size: int, *, generator=None, motion_fraction: float = 0.5, device=None,
                   dtype=torch.float32) -> torch.Tensor:  # fmt: skip
    """A procedural mix of ``n`` blur kernels ``(n, size, size)``, each non-negative with sum 1 — the training set
    of the kernel diffusion prior of Blind-DPS (:mod:`diffu.inverse.blind`, §4). Deterministic for a generator.

    With probability ``motion_fraction`` a kernel is a :func:`motion_kernel` of intensity ``U(0, 1)``; otherwise a
    Gaussian ``exp(−½ pᵀ Σ⁻¹ p)`` with major std ``U(0.5, size/4)`` pixels, isotropic or (with probability ½)
    anisotropic with minor/major ratio ``U(0.3, 1)`` and a uniform orientation. (Blind-DPS trains its kernel prior
    on motion kernels of the ``motionblur`` package and Gaussians of random width; the mix here is ours.)

    Raises:
        ValueError: ``n`` is not an integer >= 1, ``size`` not an odd positive integer (>= 3 when
            ``motion_fraction > 0``), ``motion_fraction`` not in [0, 1]; ``generator``, ``device`` or ``dtype`` of
            the wrong kind.
    """
    check_real("motion_fraction", motion_fraction, 0, 1)
    _check_odd("kernel", size, 3 if motion_fraction > 0 else 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    check_generator(generator)
    _check_place(device, dtype)
    t = torch.arange(size, dtype=torch.float64) - size // 2
    rows, cols = t[:, None], t[None, :]
    out = []
    for _ in range(n):
        if uniform_float(generator) < motion_fraction:
            out.append(motion_kernel(size, uniform_float(generator), generator=generator, dtype=torch.float64))
            continue
        major = 0.5 + (size / 4 - 0.5) * uniform_float(generator)
        minor = major * (0.3 + 0.7 * uniform_float(generator)) if uniform_float(generator) < 0.5 else major
        theta = math.pi * uniform_float(generator)
        u = rows * math.cos(theta) + cols * math.sin(theta)  # coordinates along the principal axes
        v = -rows * math.sin(theta) + cols * math.cos(theta)
        g = torch.exp(-0.5 * ((u / major) ** 2 + (v / minor) ** 2))
        out.append(g / g.sum())
    return torch.stack(out).to(device=device, dtype=dtype)


@dataclass(frozen=True, eq=False)
class Blur(LinearOperator):
    """Convolution ``y = k * x`` with an odd-sized kernel ``(kh, kw)``, per channel: ``(N, C, H, W) → same``. §3.4.

    ``boundary="circular"``: periodic convolution by FFT; ``pinv`` divides by the transfer function (frequencies
    with ``|k̂| ≤ rcond·max|k̂|`` dropped) and, for a separable (rank-1) kernel such as :func:`gaussian_kernel`,
    the SVD view is ``A = (U_h ⊗ U_w) diag(s_h ⊗ s_w) (V_h ⊗ V_w)ᵀ`` from the SVDs of the two 1D circulant
    matrices. ``boundary="padded"``: linear convolution with zero padding, output the same size as the input
    ('same' mode; the image is zero outside), adjoint the transposed convolution; no pinv/SVD.
    Kernels larger than the image raise ``ValueError``.

    The operator keeps a copy of ``kernel`` (``kernel.clone()``, which stays differentiable): changing the caller's
    tensor in place afterwards changes neither ``A`` nor the SVD view computed from it (convention 7). The kernel
    must be a finite floating-point ``(kh, kw)`` tensor with odd sides.
    """

    kernel: torch.Tensor
    boundary: str = "circular"
    _kernel_1d: tuple | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        k = self.kernel
        if isinstance(k, torch.Tensor) and not k.is_floating_point():
            check_floating(k, "kernel")
        if not isinstance(k, torch.Tensor) or k.ndim != 2:
            got = f"shape {tuple(k.shape)}, dtype {k.dtype}" if isinstance(k, torch.Tensor) else type(k).__name__
            raise ValueError(f"kernel must be a float tensor of shape (kh, kw), got {got}")
        if k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise ValueError(f"kernel size must be odd (a centred kernel), got {k.shape[0]}×{k.shape[1]}")
        check_choice("boundary", self.boundary, BOUNDARIES)
        check_finite(k, "kernel")
        k = k.clone()  # the operator's own copy (differentiable: blind deblurring takes gradients through it)
        object.__setattr__(self, "kernel", k)
        u, s, vh = torch.linalg.svd(k.detach().double().cpu())
        if len(s) == 1 or s[1] <= 100 * torch.finfo(k.dtype).eps * s[0]:  # rank 1 in k's precision: k = k_h k_wᵀ
            sign = 1.0 if u[:, 0].sum() >= 0 else -1.0
            kh, kw = sign * u[:, 0] * s[0].sqrt(), sign * vh[0] * s[0].sqrt()
            object.__setattr__(self, "_kernel_1d", (tuple(kh.tolist()), tuple(kw.tolist())))

    @property
    def has_pinv(self):
        return self.boundary == "circular"

    @property
    def has_svd(self):
        return self.boundary == "circular" and self._kernel_1d is not None

    def _check(self, x, name: str = "x"):
        self._check_image(x, name)
        self._check_size(x.shape, name)

    def _check_size(self, shape, name: str):
        (kh, kw), (H, W) = self.kernel.shape, shape[-2:]
        if kh > H or kw > W:
            raise ValueError(f"kernel size {kh}×{kw} is larger than the image size {H}×{W} (of {name})")

    def transfer(self, like: torch.Tensor) -> torch.Tensor:
        """The transfer function ``k̂`` of the centred kernel on ``like``'s ``H × W`` grid, in ``torch.fft.rfft2``
        layout ``(H, W//2 + 1)``, complex, on ``like``'s device."""
        self._check(like, "like")
        return self._transfer(like)

    def _transfer(self, like: torch.Tensor) -> torch.Tensor:
        (kh, kw), (H, W) = self.kernel.shape, like.shape[-2:]
        k = F.pad(self.kernel.to(device=like.device, dtype=like.dtype), (0, W - kw, 0, H - kh))  # (H, W)
        return torch.fft.rfft2(k.roll((-(kh // 2), -(kw // 2)), dims=(0, 1)))

    def _conv(self, x, adjoint: bool):
        self._check(x, "y" if adjoint else "x")
        N, C, H, W = x.shape
        if self.boundary == "circular":
            k = self._transfer(x)
            return torch.fft.irfft2(torch.fft.rfft2(x) * (k.conj() if adjoint else k), s=(H, W))
        w = self.kernel.flip(0, 1).to(device=x.device, dtype=x.dtype)[None, None]  # conv2d correlates
        pad = (w.shape[-2] // 2, w.shape[-1] // 2)
        conv = F.conv_transpose2d if adjoint else F.conv2d
        return conv(x.reshape(N * C, 1, H, W), w, padding=pad).reshape(N, C, H, W)

    def A(self, x):
        return self._conv(x, adjoint=False)

    def AT(self, y):
        return self._conv(y, adjoint=True)

    def pinv(self, y, rcond: float = 1e-6):
        """The pseudo-inverse of the circular blur: ``F⁻¹[ŷ / k̂]`` over the frequencies with ``|k̂| > rcond·max|k̂|``
        (``rcond >= 0``), 0 elsewhere. ``NotImplementedError`` for ``boundary="padded"``."""
        if not self.has_pinv:
            return super().pinv(y)
        self._check(y, "y")
        check_real("rcond", rcond, 0)
        k = self._transfer(y)
        keep = k.abs() > rcond * k.abs().max()
        inv = torch.where(keep, 1 / torch.where(keep, k, 1), 0)
        return torch.fft.irfft2(torch.fft.rfft2(y) * inv, s=y.shape[-2:])

    # the SVD view, through a SeparableOperator with the two 1D circulants
    def _svd(self):
        if not self.has_svd:
            kind = "separable" if self._kernel_1d is not None else "non-separable"
            raise NotImplementedError(
                f"Blur has an SVD view only for a separable kernel with circular boundary, "
                f"got a {kind} kernel with {self.boundary} boundary"
            )
        return _CirculantSVD(self._kernel_1d)

    def Vt(self, x):
        self._check(x, "x")
        return self._svd().Vt(x)

    def V(self, z, shape):
        svd = self._svd()
        self._check_size(self._check_spectral(z, shape), "shape")
        return svd.V(z, shape)

    def Ut(self, y):
        self._check(y, "y")
        return self._svd().Ut(y)

    def U(self, z, shape):
        svd = self._svd()
        self._check_size(self._check_spectral(z, shape), "shape")
        return svd.U(z, shape)

    def singulars(self, like):
        self._check(like, "like")
        return self._svd().singulars(like)


@dataclass(frozen=True)
class _CirculantSVD(SeparableOperator):
    kernels: tuple  # (k_h, k_w) as tuples of floats
    _kind = "circulant"

    def _factors(self, shape, like):
        H, W = shape[-2:]
        return (svd_1d(self._kind, k, n, like.dtype, like.device) for k, n in zip(self.kernels, (H, W)))

    def _in_shape(self, y_shape):
        return tuple(y_shape)


# ----------------------------------------------------------------------------------------------------------------
# Atmospheric turbulence (§3.3)
# ----------------------------------------------------------------------------------------------------------------


def _smooth_field(shape: tuple, corr: float, generator: torch.Generator) -> torch.Tensor:
    """White noise low-passed by a Gaussian of std ``corr`` pixels (periodic, by FFT), then standardised to zero
    mean and unit standard deviation per field; float64 on the CPU, ``shape = (K, H, W)``."""
    H, W = shape[-2:]
    white = torch.randn(shape, generator=generator, dtype=torch.float64)
    fy, fx = torch.fft.fftfreq(H, dtype=torch.float64)[:, None], torch.fft.rfftfreq(W, dtype=torch.float64)[None]
    lowpass = torch.exp(-2 * math.pi**2 * corr**2 * (fx**2 + fy**2))  # Fourier transform of the Gaussian filter
    field = torch.fft.irfft2(torch.fft.rfft2(white) * lowpass, s=(H, W))
    field = field - field.mean((-2, -1), keepdim=True)
    return field / field.std((-2, -1), correction=0, keepdim=True).clamp_min(1e-12)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with zero padding, same size; ``(N, C, H, W)``. A ``σ`` whose ``2σ²`` underflows to 0
    in ``x``'s dtype is the identity (the limit σ → 0; the formula would give 0/0 = NaN at the centre)."""
    if sigma == 0 or float(torch.tensor(2 * sigma**2, dtype=x.dtype)) == 0:
        return x
    r = math.ceil(3 * sigma)
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    N, C, H, W = x.shape
    y = F.conv2d(x.reshape(N * C, 1, H, W), g.reshape(1, 1, -1, 1), padding=(r, 0))
    return F.conv2d(y, g.reshape(1, 1, 1, -1), padding=(0, r)).reshape(N, C, H, W)


@dataclass(frozen=True)
class Turbulence(LinearOperator):
    """Atmospheric turbulence as a random tilt (warp) followed by a spatially varying blur, ``(N, C, H, W) → same``:
    ``y = Σ_k w_k ⊙ (G_{σ_k} * T x)``. §3.3.

    Physics it simplifies: light through turbulent air picks up random phase screens; their low-order Zernike
    terms (tip/tilt) shift each point of the image (anisoplanatic, so the shifts vary smoothly across the field) and
    the higher orders blur it with a PSF that also varies across the field. Chimitt & Chan's phase-to-space
    simulator (Chimitt & Chan 2020; Mao, Chimitt & Chan 2021) samples spatially correlated Zernike coefficients
    from Kolmogorov statistics, turns tilts into a warp and the rest into a blend of basis PSFs. Here:

    - the tilt field ``T`` (row and column shift per pixel, by bilinear ``grid_sample``, zero outside the image) is
      white noise low-passed by a Gaussian of std ``correlation`` pixels, scaled to RMS ``strength`` pixels, instead
      of Kolmogorov-correlated Zernike tilts;
    - the PSF basis is ``len(sigmas)`` isotropic Gaussians of std ``sigmas`` pixels (zero-padded convolutions),
      mixed by weights ``w_k = softmax_k(2 f_k)`` from smooth random fields ``f_k``, instead of the learned P2S
      basis; no temporal correlation between frames, no diffraction, no sensor noise.

    One operator is one realisation: the fields are drawn from ``seed`` (a CPU generator) for each image size,
    so repeated calls, devices and dtypes agree. ``A`` is linear in ``x``; ``AT`` is its exact adjoint by
    autograd (a vector–Jacobian product). :meth:`fields` returns the tilt and weight maps for plots.
    """

    strength: float = 1.0
    correlation: float = 8.0
    sigmas: tuple = (0.5, 1.0, 2.0)
    seed: int = 0

    def __post_init__(self):
        for name in ("strength", "correlation"):
            check_real(f"turbulence {name}", getattr(self, name), 0)
        sig = self.sigmas
        sig = sig.tolist() if isinstance(sig, torch.Tensor) and sig.ndim == 1 else sig
        if isinstance(sig, (str, bytes)) or not isinstance(sig, (tuple, list)) or not sig:
            raise ValueError(f"turbulence blur sigmas must be a non-empty sequence of numbers >= 0, got {sig!r:.80}")
        for i, s in enumerate(sig):
            check_real(f"turbulence blur sigmas[{i}]", s, 0)
        check_int("seed", self.seed, 0, 2**64 - 1)  # what torch.Generator.manual_seed accepts, non-negative
        object.__setattr__(self, "sigmas", tuple(float(s) for s in sig))

    def fields(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tilt, weights)`` for ``like``'s size, dtype and device: the (row, column) shift in pixels
        ``(2, H, W)`` and the blur weights ``(K, H, W)`` (non-negative, summing to 1 over K); ``like`` is an image
        batch ``(N, C, H, W)``."""
        self._check_image(like, "like")
        H, W = like.shape[-2:]
        g = torch.Generator().manual_seed(self.seed)
        tilt = self.strength * _smooth_field((2, H, W), self.correlation, g)
        weights = torch.softmax(2.0 * _smooth_field((len(self.sigmas), H, W), self.correlation, g), 0)
        return tilt.to(like), weights.to(like)

    def A(self, x):
        self._check_image(x, "x")
        N, C, H, W = x.shape
        tilt, weights = self.fields(x)
        rows = (2 * torch.arange(H, device=x.device, dtype=x.dtype) + 1) / H - 1  # pixel centres, align_corners=False
        cols = (2 * torch.arange(W, device=x.device, dtype=x.dtype) + 1) / W - 1
        grid = torch.stack([cols[None, :] + 2 * tilt[1] / W, rows[:, None] + 2 * tilt[0] / H], -1)  # (H, W, 2): (x, y)
        warped = F.grid_sample(x, grid.expand(N, H, W, 2), mode="bilinear", padding_mode="zeros", align_corners=False)
        return sum(w * _gaussian_blur(warped, s) for w, s in zip(weights, self.sigmas))

    def AT(self, y):
        self._check_image(y, "y")
        return adjoint_by_autograd(self.A, y, y.shape)
