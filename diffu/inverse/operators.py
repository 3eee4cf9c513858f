"""The operator interface, noise models, super-resolution (§3.1) and inpainting (§3.2) for inverse problems.

Blur and turbulence (§3.3–3.4) are in :mod:`diffu.inverse.blur`, phase retrieval, CT and MRI (§3.5, §5) in
:mod:`diffu.inverse.fourier`, the mask generators in :mod:`diffu.inverse.masks`.

Every operator is immutable: a frozen dataclass whose calls never change it. Images are ``(N, C, H, W)`` in
[-1, 1]; sizes, device and dtype always come from the input tensor. The interface:

- ``op.A(x)`` (or ``op(x)``): the measurement, differentiable in ``x``.
- Linear operators (:class:`LinearOperator`) add the exact adjoint ``op.AT(y)`` (``<A x, y> = <x, Aᵀ y>``) and,
  where ``op.has_pinv``, the pseudo-inverse ``op.pinv(y)``.
- Where ``op.has_svd`` (what DDRM needs), an SVD view ``A x = U(s ⊙ Vᵀ x)`` on flattened spectral vectors of
  length ``D = C·H·W`` (one image):

  * ``Vt(x)``: ``(N, C, H, W) → (N, D)``; ``V(z, shape)`` is its inverse, ``shape`` the image shape ``(N, C, H, W)``.
  * ``singulars(like)``: the singular values ``s``, ``(1 or N, D)``, in the dtype and device of ``like`` (any
    tensor of the image's shape); zeros for the directions that ``A`` does not see.
  * ``Ut(y)``: measurement ``→ (N, D)``, ``Uᵀ y`` in the first ``M`` entries (``M`` = numel of one measurement) and
    zeros after; ``U(z, shape)`` reads ``z[:, :M]``. Only the first ``M`` singular values can be non-zero.

  So ``A(x) == U(s * Vt(x), x.shape)``, ``V(Vt(x), x.shape) == x`` and ``U(Ut(y), x.shape) == y``.

Noise is a separate, seeded call: ``Gaussian(sigma)(y, generator)`` and ``Poisson(rate)(y, generator)``.

Every method checks its input (CONTRIBUTING.md, convention 8): a floating-point tensor (an integer image raises
with a pointer to ``diffu.data.from_uint8``) of the rank and size the operator needs (divisible by an SR
factor, matching a mask, at least a kernel's size), and for ``V``/``U`` a ``z`` of shape ``(N, C·H·W)`` and an
image ``shape`` of four positive integers; anything else raises ``ValueError`` naming the argument. Operators do
not look for NaN (they run inside every solver step): a NaN in the input propagates to the output, and the solvers
check their measurement once at entry.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..checks import (
    check_callable,
    check_choice,
    check_device,
    check_dtype,
    check_finite,
    check_floating,
    check_generator,
    check_image,
    check_int,
    check_mask,
    check_real,
    mask_for,
)

__all__ = [
    "Bicubic",
    "BlockAverage",
    "Gaussian",
    "Identity",
    "Inpainting",
    "LinearOperator",
    "Operator",
    "Poisson",
    "SeparableOperator",
    "adjoint_by_autograd",
    "bicubic_kernel",
    "svd_1d",
    "uniform_float",
]


def adjoint_by_autograd(A: Callable, y: torch.Tensor, in_shape) -> torch.Tensor:
    """``Aᵀ y`` for a linear map ``A`` on inputs of shape ``in_shape``, by reverse-mode autodiff.

    The vector–Jacobian product of a linear ``A`` at 0 is exactly its adjoint applied to ``y``, and it stays
    differentiable in ``y``; operators without a hand-written adjoint (zero-padded :class:`~diffu.inverse.Blur`,
    :class:`~diffu.inverse.Radon`) use it. Returns a tensor of ``in_shape`` like ``y``.

    Raises:
        TypeError: ``A`` is not callable.
        ValueError: ``y`` is not a floating-point tensor, ``in_shape`` is not a sequence of positive integers, or
            ``A`` maps an ``in_shape`` tensor to another shape than ``y``'s.
    """
    check_callable("A", A)
    check_floating(y, "y")
    in_shape = _check_shape_arg(in_shape, "in_shape", ndim=None)
    with torch.enable_grad():
        x = y.new_zeros(in_shape, requires_grad=True)
        ax = A(x)
        if not isinstance(ax, torch.Tensor) or ax.shape != y.shape:
            got = tuple(ax.shape) if isinstance(ax, torch.Tensor) else type(ax).__name__
            raise ValueError(f"y must have the shape of A(x) {got} for x of in_shape {in_shape}, got {tuple(y.shape)}")
        return torch.autograd.grad(ax, x, grad_outputs=y, create_graph=y.requires_grad)[0]


def uniform_float(generator: torch.Generator | None = None) -> float:
    """One ``U(0, 1)`` draw from ``generator`` (on its device; CPU without one), as a Python float — the scalar
    randomness of the kernel and mask generators (CONTRIBUTING.md, convention 5)."""
    check_generator(generator)
    dev = generator.device if generator is not None else "cpu"
    return float(torch.rand((), generator=generator, device=dev, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------------
# Interfaces
# ----------------------------------------------------------------------------------------------------------------


def _check_shape_arg(shape, name: str = "shape", ndim: int | None = 4) -> tuple:
    """``shape`` is a sequence of ``ndim`` (any number when None) positive integers; returned as a tuple."""
    ok = isinstance(shape, (tuple, list, torch.Size)) and (ndim is None or len(shape) == ndim)
    ok = ok and all(not isinstance(n, bool) and isinstance(n, int) and n >= 1 for n in shape)
    if not ok:
        want = "an image shape (N, C, H, W) of positive integers" if ndim == 4 else "a shape of positive integers"
        raise ValueError(f"{name} must be {want}, got {shape!r:.80}")
    return tuple(shape)


def _check_mask_fits(mask: torch.Tensor, shape, name: str = "x") -> None:
    """The (checked) ``mask`` broadcasts over images of ``shape`` ``(N, C, H, W)`` (as ``diffu.checks.mask_for``)."""
    (n, c, h, w), (N, C, H, W) = mask.shape, shape
    if (h, w) != (H, W) or n not in (1, N) or c not in (1, C):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match image shape {tuple(shape)} (of {name})")


class Operator:
    """A forward model ``y = A(x)``; ``op(x)`` is ``op.A(x)``. Non-linear operators (phase retrieval) stop here."""

    linear = False

    @staticmethod
    def _check_image(x, name: str = "x") -> None:
        """``x`` is a floating-point image batch ``(N, C, H, W)``; an integer tensor gets the ``from_uint8`` hint."""
        if isinstance(x, torch.Tensor) and not x.is_floating_point():
            check_floating(x, name)
        check_image(x, name)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)


class LinearOperator(Operator):
    """A linear forward model with an exact adjoint ``AT``; ``pinv`` where ``has_pinv``, the SVD view of the module
    docstring where ``has_svd``."""

    linear = True
    has_pinv = False
    has_svd = False

    def AT(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no closed-form pseudo-inverse (use classical.tikhonov)")

    def _no_svd(self, *_, **__):
        raise NotImplementedError(f"{type(self).__name__} has no SVD view")

    Vt = V = Ut = U = singulars = _no_svd

    @staticmethod
    def _check_spectral(z, shape) -> tuple:
        """Check the arguments of ``V(z, shape)``/``U(z, shape)``: ``shape`` an image shape ``(N, C, H, W)`` and ``z``
        a floating ``(N, C·H·W)`` tensor; returns ``shape`` as a tuple."""
        shape = _check_shape_arg(shape)
        check_floating(z, "z")
        D = math.prod(shape[1:])
        if z.ndim != 2 or tuple(z.shape) != (shape[0], D):
            raise ValueError(f"z must have shape (N, C·H·W) = {(shape[0], D)} for the image shape {shape}, got "
                             f"{tuple(z.shape)}")  # fmt: skip
        return shape


class _PixelBasis(LinearOperator):
    """Operators diagonal in the pixel basis (``U = V = I``): only the singular values differ."""

    has_pinv = True
    has_svd = True

    def _check_in(self, x, name: str) -> None:  # the image check of every method (Inpainting adds its mask)
        self._check_image(x, name)

    def Vt(self, x):
        self._check_in(x, "x")
        return x.reshape(x.shape[0], -1)

    def Ut(self, y):
        self._check_in(y, "y")
        return y.reshape(y.shape[0], -1)

    def V(self, z, shape):
        return z.reshape(self._check_spectral(z, shape))

    U = V


@dataclass(frozen=True)
class Identity(_PixelBasis):
    """``A = I``: denoising as an inverse problem (s = 1 everywhere)."""

    def A(self, x):
        self._check_in(x, "x")
        return x

    def AT(self, y):
        self._check_in(y, "y")
        return y

    pinv = AT

    def singulars(self, like):
        self._check_in(like, "like")
        return torch.ones(1, like[0].numel(), device=like.device, dtype=like.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Noise models
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gaussian:
    """Additive white Gaussian noise ``y + σ ε``, ``ε ~ N(0, I)`` in the dtype and device of ``y`` (§3)."""

    sigma: float

    def __post_init__(self):
        check_real("noise level sigma", self.sigma, 0)

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``y + σ ε`` for a finite floating-point ``y`` of any shape (NaN or infinity raise ``ValueError``)."""
        check_floating(y, "y")
        check_finite(y, "y")
        check_generator(generator)
        return y + self.sigma * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)


@dataclass(frozen=True)
class Poisson:
    """Shot noise on [-1, 1] images: photon counts ``k ~ Poisson(rate · (y + 1)/2)`` mapped back by
    ``2k / rate − 1``, so ``E[out] = y`` and ``Var[out] = 2 (y + 1) / rate`` (larger ``rate``, less noise) (§3).

    ``y < −1`` (a negative intensity) and NaN or infinite ``y`` raise ``ValueError``; nothing is clipped.
    """

    rate: float

    def __post_init__(self):
        check_real("photon rate", self.rate, 0, low_open=True)

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_floating(y, "y")
        check_finite(y, "y")
        check_generator(generator)
        if y.numel() and float(y.min()) < -1:
            raise ValueError(f"Poisson noise needs y >= -1 (non-negative intensity (y + 1)/2), got min {y.min():.4g}")
        counts = torch.poisson(self.rate * (y + 1) / 2, generator=generator)
        return 2 * counts / self.rate - 1


# ----------------------------------------------------------------------------------------------------------------
# Separable operators A x = D_h x D_wᵀ: the SVD view from the SVDs of the two 1D matrices
# ----------------------------------------------------------------------------------------------------------------


def _block_matrix(factor: int, n: int) -> torch.Tensor:  # (n/f, n): averages of f consecutive samples
    return torch.kron(
        torch.eye(n // factor, dtype=torch.float64), torch.full((1, factor), 1.0 / factor, dtype=torch.float64)
    )


def _bicubic_matrix(factor: int, n: int) -> torch.Tensor:  # (n/f, n): the strided 1D convolution of Bicubic
    k = bicubic_kernel(factor)
    rows = F.conv1d(torch.eye(n, dtype=torch.float64)[:, None], k[None, None], stride=factor, padding=_pad(factor))
    return rows[:, 0].T


def _circulant_matrix(kernel: tuple, n: int) -> torch.Tensor:  # (n, n): circular convolution with a centred kernel
    c = torch.zeros(n, dtype=torch.float64)
    c[: len(kernel)] = torch.tensor(kernel, dtype=torch.float64)
    c = c.roll(-(len(kernel) // 2))
    i = torch.arange(n)
    return c[(i[:, None] - i[None, :]) % n]


_MATRICES = {"block": _block_matrix, "bicubic": _bicubic_matrix, "circulant": _circulant_matrix}


@functools.lru_cache(maxsize=64)
def _svd_1d(kind: str, param, n: int, dtype: torch.dtype, device: torch.device) -> tuple:
    u, s, vh = torch.linalg.svd(_MATRICES[kind](param, n))
    return tuple(t.to(device=device, dtype=dtype) for t in (u, s, vh.mT))


def svd_1d(kind: str, param, n: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """``(U, s, V)`` of the 1D matrix of a separable operator, computed once in float64 on the CPU and cached per
    size, dtype and device (the tensors are shared: do not modify them in place).

    Args:
        kind: "block" (``(n/f, n)`` block averaging, ``param = f``), "bicubic" (``(n/f, n)`` strided bicubic
            filter, ``param = f``) or "circulant" (``(n, n)`` circular convolution, ``param`` the centred 1D kernel
            as a tuple of floats).
        n: the input length (the image height or width).
        dtype, device: of the returned tensors.

    Returns:
        ``U`` ``(m, m)``, ``s`` ``(m,)`` (decreasing) and ``V`` ``(n, n)`` with ``D = U [diag(s) 0] Vᵀ``, ``m`` the
        number of rows of ``D``.

    Raises:
        ValueError: an unknown ``kind``; ``n`` not a positive integer; a factor ``param`` not an integer >= 1 that
            divides ``n``; a circulant kernel that is not a tuple of an odd number ``<= n`` of finite floats; a
            ``dtype`` that is not floating point or a ``device`` torch cannot parse.
    """
    check_choice("kind", kind, tuple(_MATRICES))
    check_int("n", n, 1)
    if kind == "circulant":
        ok = isinstance(param, tuple) and len(param) % 2 == 1 and len(param) <= n
        real = (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in param)
        if not ok or not all(real):
            raise ValueError(f"param of a circulant must be a tuple of an odd number <= n = {n} of finite floats (the "
                             f"centred 1D kernel), got {param!r:.80}")  # fmt: skip
    else:
        if isinstance(param, bool) or not isinstance(param, int) or param < 1:
            raise ValueError(f"param must be the integer factor >= 1 of kind {kind!r}, got {param!r}")
        if n % param:
            raise ValueError(f"n must be divisible by the factor param = {param}, got {n}")
    dtype = check_dtype("dtype", dtype)
    device = check_device("device", device)
    return _svd_1d(kind, param, n, dtype, device)


class SeparableOperator(LinearOperator):
    """Base class of the separable operators: per channel ``A x = D_h x D_wᵀ`` with 1D matrices ``D_h, D_w``.

    From ``D_h = U_h [S_h 0] V_hᵀ`` (and the same for ``w``, :func:`svd_1d`) the SVD view of the module docstring
    is ``V = V_h ⊗ V_w``, ``U = U_h ⊗ U_w``, ``s = s_h ⊗ s_w`` on the top-left ``m_h × m_w`` block of coefficients,
    which :meth:`Vt` puts first; ``pinv`` follows. A subclass sets ``_kind`` (a kind of :func:`svd_1d`) and
    defines ``_param()`` (its parameter) and ``_in_shape(y_shape)`` (the image shape that explains ``y``), or
    overrides ``_factors`` (as :class:`~diffu.inverse.Blur`'s SVD view does for two different kernels).
    """

    has_svd = True
    has_pinv = True
    _kind = ""

    def _param(self):
        raise NotImplementedError

    def _in_shape(self, y_shape) -> tuple:
        raise NotImplementedError

    def _factors(self, shape, like):
        H, W = shape[-2:]
        return (svd_1d(self._kind, self._param(), n, like.dtype, like.device) for n in (H, W))

    def _check_in(self, x, name: str) -> None:
        """Check an image argument ``x`` (a subclass adds its size constraints through :meth:`_check_in_shape`)."""
        self._check_image(x, name)
        self._check_in_shape(x.shape, name)

    def _check_in_shape(self, shape, name: str) -> None:
        pass

    def Vt(self, x):
        self._check_in(x, "x")
        (_, sh, vh), (_, sw, vw) = self._factors(x.shape, x)
        c = vh.mT @ x @ vw  # (N, C, H, W): coefficients in the basis V_h ⊗ V_w
        m, k, n = len(sh), len(sw), x.shape[0]
        return torch.cat(
            [c[..., :m, :k].reshape(n, -1), c[..., :m, k:].reshape(n, -1), c[..., m:, :].reshape(n, -1)], 1
        )

    def V(self, z, shape):
        N, C, H, W = shape = self._check_spectral(z, shape)
        self._check_in_shape(shape, "shape")
        (_, sh, vh), (_, sw, vw) = self._factors(shape, z)
        m, k = len(sh), len(sw)
        a, b, c = z.split([C * m * k, C * m * (W - k), C * (H - m) * W], dim=1)
        top = torch.cat([a.reshape(N, C, m, k), b.reshape(N, C, m, W - k)], -1)
        return vh @ torch.cat([top, c.reshape(N, C, H - m, W)], -2) @ vw.mT  # (N, C, H, W)

    def singulars(self, like):
        self._check_in(like, "like")
        (_, sh, _), (_, sw, _) = self._factors(like.shape, like)
        s = (sh[:, None] * sw[None, :]).flatten().repeat(like.shape[1])  # (C·m_h·m_w,)
        return F.pad(s, (0, like[0].numel() - len(s)))[None]  # (1, D)

    def Ut(self, y):
        self._check_image(y, "y")
        shape = self._in_shape(y.shape)
        (uh, _, _), (uw, _, _) = self._factors(shape, y)
        a = (uh.mT @ y @ uw).reshape(y.shape[0], -1)  # (N, M)
        return F.pad(a, (0, math.prod(shape[1:]) - a.shape[1]))  # (N, D)

    def U(self, z, shape):
        N, C = (shape := self._check_spectral(z, shape))[:2]
        self._check_in_shape(shape, "shape")
        (uh, sh, _), (uw, sw, _) = self._factors(shape, z)
        return uh @ z[:, : C * len(sh) * len(sw)].reshape(N, C, len(sh), len(sw)) @ uw.mT

    def pinv(self, y, rcond: float = 1e-6):
        """``V S⁺ Uᵀ y``, singular values below ``rcond · max(s)`` (``rcond >= 0``) treated as zero."""
        self._check_image(y, "y")
        check_real("rcond", rcond, 0)
        shape = self._in_shape(y.shape)
        s = self.singulars(y.new_empty(shape))
        keep = s > rcond * s.max()
        return self.V(self.Ut(y) * torch.where(keep, 1 / torch.where(keep, s, 1), 0), shape)


# ----------------------------------------------------------------------------------------------------------------
# Super-resolution (§3.1)
# ----------------------------------------------------------------------------------------------------------------


def _check_factor(factor) -> None:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"SR factor must be an integer >= 1, got {factor!r}")


def _check_divisible(shape, factor: int, name: str = "x") -> None:
    H, W = shape[-2:]
    if H % factor or W % factor:
        raise ValueError(f"image size {H}×{W} is not divisible by the SR factor {factor} ({name} of shape "
                         f"{tuple(shape)})")  # fmt: skip


class _Downsampling(SeparableOperator):
    """``×factor`` super-resolution operators: ``(N, C, H, W) → (N, C, H/f, W/f)``, sizes divisible by ``factor``."""

    factor: int

    def __post_init__(self):
        _check_factor(self.factor)

    def _check_in_shape(self, shape, name: str) -> None:
        _check_divisible(shape, self.factor, name)

    def _param(self):
        return self.factor

    def _in_shape(self, y_shape):
        return (*y_shape[:2], y_shape[2] * self.factor, y_shape[3] * self.factor)


@dataclass(frozen=True)
class BlockAverage(_Downsampling):
    """``×factor`` super-resolution by block averaging, ``y = avg_pool(x, f)``: ``(N, C, H, W) → (N, C, H/f, W/f)``.

    Separable with the 1D averaging matrix ``D`` (rows ``1/f`` on a block): ``D Dᵀ = I/f``, so every 1D singular
    value is ``1/√f``, every 2D one ``1/f`` (one per block; the other ``f² − 1`` directions of the block are zero).
    ``pinv = f² Aᵀ`` is nearest-neighbour upsampling. §3.1.
    """

    factor: int = 2
    _kind = "block"

    def A(self, x):
        self._check_in(x, "x")
        return F.avg_pool2d(x, self.factor)

    def AT(self, y):
        return self.pinv(y) / self.factor**2

    def pinv(self, y):
        self._check_image(y, "y")
        return y.repeat_interleave(self.factor, -2).repeat_interleave(self.factor, -1)


def _keys(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (Keys 1981), ``a = −0.5`` as in PIL and Matlab's imresize."""
    t = t.abs()
    inner = (a + 2) * t**3 - (a + 3) * t**2 + 1
    outer = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, inner, torch.where(t < 2, outer, torch.zeros_like(t)))


def _pad(factor: int) -> int:
    return (4 * factor - factor % 2 - factor) // 2


def bicubic_kernel(factor: int) -> torch.Tensor:
    """The 1D anti-aliased bicubic kernel of ``×factor`` downsampling (Matlab imresize): ``w(t) = keys(t/f)/f`` at
    the input samples around an output pixel's centre, normalised to sum 1; ``(4f − f mod 2,)`` in float64.

    Raises:
        ValueError: ``factor`` is not an integer >= 1.
    """
    _check_factor(factor)
    n = 4 * factor - factor % 2
    w = _keys((torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / factor)
    return w / w.sum()


@dataclass(frozen=True)
class Bicubic(_Downsampling):
    """``×factor`` bicubic downsampling: strided convolution with the separable anti-aliased Keys kernel
    (:func:`bicubic_kernel`, ``a = −0.5``) and zero padding; ``(N, C, H, W) → (N, C, H/f, W/f)``.

    Output pixel ``i`` is centred on input position ``(i + ½) f − ½`` as in Matlab's imresize; the border uses zero
    padding (imresize reflects), which keeps the adjoint a transposed convolution. ``pinv`` and the SVD come from
    the SVDs of the 1D matrices (DDRM's ``SRConv``). §3.1.
    """

    factor: int = 4
    _kind = "bicubic"

    def _weight(self, like):  # (1, 1, L, L)
        k = bicubic_kernel(self.factor).to(device=like.device, dtype=like.dtype)
        return (k[:, None] * k[None, :])[None, None]

    def A(self, x):
        self._check_in(x, "x")
        N, C, H, W = x.shape
        y = F.conv2d(x.reshape(N * C, 1, H, W), self._weight(x), stride=self.factor, padding=_pad(self.factor))
        return y.reshape(N, C, H // self.factor, W // self.factor)

    def AT(self, y):
        self._check_image(y, "y")
        N, C, h, w = y.shape
        x = F.conv_transpose2d(
            y.reshape(N * C, 1, h, w), self._weight(y), stride=self.factor, padding=_pad(self.factor)
        )
        return x.reshape(N, C, h * self.factor, w * self.factor)


# ----------------------------------------------------------------------------------------------------------------
# Inpainting (§3.2)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Inpainting(_PixelBasis):
    """Inpainting ``y = m ⊙ x`` with a binary mask ``m`` of shape ``(1 or N, 1 or C, H, W)`` (1 = observed).

    Self-adjoint projection: ``Aᵀ = A⁺ = A``; SVD ``U = V = I``, ``s = m``. Masks:
    :func:`~diffu.inverse.masks.box_mask`, :func:`~diffu.inverse.masks.random_mask`,
    :func:`~diffu.inverse.masks.brush_mask`. The operator keeps a copy of ``mask`` (changing the caller's tensor
    afterwards does not change the operator). §3.2.
    """

    mask: torch.Tensor

    def __post_init__(self):
        check_mask(self.mask)
        object.__setattr__(self, "mask", self.mask.detach().clone())  # immutable (convention 7): no alias

    def _check_in(self, x, name: str) -> None:
        self._check_image(x, name)
        _check_mask_fits(self.mask, x.shape, name)

    def A(self, x):
        self._check_in(x, "x")
        return x * mask_for(self.mask, x)

    def AT(self, y):
        self._check_in(y, "y")
        return y * mask_for(self.mask, y)

    pinv = AT

    def singulars(self, like):
        self._check_in(like, "like")
        m = mask_for(self.mask, like)
        return m.expand(m.shape[0], *like.shape[1:]).reshape(m.shape[0], -1)  # (1 or N, D)
