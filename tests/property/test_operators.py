"""Properties of every forward operator of diffu.inverse for shapes and parameters drawn by Hypothesis: adjointness
``<A x, y> = <x, Aᵀ y>``, linearity, output shapes and dtypes, the pseudo-inverse identities and the SVD view
(CONTRIBUTING.md, convention 7). ``tests/inverse/test_operators.py`` checks the same identities on fixed cases.

Tolerances: the computations are in float64 (unit roundoff 1.1e-16) on at most a few hundred values, so an exact
identity holds to ~1e-14 relative to the norms involved; 1e-9 leaves five orders of magnitude for the conditioning
of a sum of terms, and is still far below any real mistake (a wrong adjoint or a missing factor is O(1)).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

from diffu.inverse import (
    MRI,
    Bicubic,
    BlockAverage,
    Blur,
    Identity,
    Inpainting,
    PhaseRetrieval,
    Radon,
    ShiftedPhaseRetrieval,
    Turbulence,
    bicubic_kernel,
    fft2c,
    gaussian_kernel,
    ifft2c,
)

REL = 1e-9  # see the module docstring
SEEDS = st.integers(0, 2**31 - 1)
COEFS = st.floats(-10, 10, allow_nan=False)


def randn(seed: int, shape, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


def norm(a: torch.Tensor) -> float:
    return float(a.norm())


def close(a: torch.Tensor, b: torch.Tensor, scale: float, rel: float = REL) -> bool:
    """``‖a − b‖ <= rel · scale``, the difference divided by ``scale`` first (a norm of values near 1e200 would
    overflow); a zero scale asks for equality."""
    if scale == 0:
        return torch.equal(a, b)
    return float(((a - b) / scale).norm()) <= rel


# ----------------------------------------------------------------------------------------------------------------
# Strategies: (operator, image shape) for every linear operator that diffu.inverse exports
# ----------------------------------------------------------------------------------------------------------------

BATCH, CHANNELS, SIZE = st.integers(1, 3), st.integers(1, 3), st.integers(1, 9)


@st.composite
def binary_masks(draw, n: int, c: int, h: int, w: int) -> torch.Tensor:
    """A 0/1 mask of shape ``(1 or N, 1 or C, H, W)``, bool or float, from all-missing to all-observed."""
    shape = (draw(st.sampled_from(sorted({1, n}))), draw(st.sampled_from(sorted({1, c}))), h, w)
    p = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    m = torch.rand(shape, generator=torch.Generator().manual_seed(draw(SEEDS))) < p
    return m if draw(st.booleans()) else m.to(draw(st.sampled_from([torch.float32, torch.float64])))


@st.composite
def kernels(draw, max_h: int, max_w: int) -> torch.Tensor:
    """An odd-sized blur kernel no larger than the image: separable (a Gaussian or a random rank-1 outer product,
    which have an SVD view) or a random non-separable one; entries of either sign."""
    kh = draw(st.integers(0, (max_h - 1) // 2)) * 2 + 1
    kw = draw(st.integers(0, (max_w - 1) // 2)) * 2 + 1
    kind = draw(st.sampled_from(["gaussian", "rank1", "dense"]))
    if kind == "gaussian" and kh == kw:
        return gaussian_kernel(kh, draw(st.floats(0.3, 3.0)), dtype=torch.float64)
    seed = draw(SEEDS)
    if kind == "dense":
        return randn(seed, (kh, kw))
    return torch.outer(randn(seed, (kh,)), randn(seed + 1, (kw,)))


@st.composite
def linear_cases(draw, kinds=None):
    """``(name, op, x_shape)`` for a linear operator with parameters and a compatible image shape drawn at random."""
    kinds = kinds or ["identity", "block", "bicubic", "inpainting", "blur", "turbulence", "mri", "radon"]
    kind = draw(st.sampled_from(kinds))
    n, c = draw(BATCH), draw(CHANNELS)
    if kind in ("block", "bicubic"):
        f = draw(st.integers(1, 4))
        h, w = f * draw(st.integers(1, 4)), f * draw(st.integers(1, 4))
        return kind, (BlockAverage(f) if kind == "block" else Bicubic(f)), (n, c, h, w)
    if kind == "radon":
        size = draw(st.integers(2, 8))
        angles = draw(st.one_of(st.integers(1, 6), st.lists(st.floats(0, 360), min_size=1, max_size=5)))
        return kind, Radon(angles), (n, c, size, size)
    h, w = draw(SIZE), draw(SIZE)
    if kind == "identity":
        op = Identity()
    elif kind == "inpainting":
        op = Inpainting(draw(binary_masks(n, c, h, w)))
    elif kind == "mri":
        op = MRI(draw(binary_masks(n, c, h, w)))
    elif kind == "blur":
        op = Blur(draw(kernels(h, w)), draw(st.sampled_from(["circular", "padded"])))
    else:
        sigmas = tuple(draw(st.lists(st.floats(0, 2), min_size=1, max_size=3)))
        op = Turbulence(draw(st.floats(0, 3)), draw(st.floats(0, 8)), sigmas, draw(st.integers(0, 1000)))
    return kind, op, (n, c, h, w)


def expected_shape(kind: str, op, shape) -> tuple:
    n, c, h, w = shape
    if kind in ("block", "bicubic"):
        return (n, c, h // op.factor, w // op.factor)
    if kind == "mri":
        return (n, c, h, w, 2)
    if kind == "radon":
        return (n, c, len(op.angles), w)
    return shape


def opnorm_bound(op, x: torch.Tensor) -> float:
    """An upper bound, without iterations, of the norm of ``|A|`` (the matrix of absolute values), which bounds the
    rounding error of ``A x`` by ~1e-16 · bound · ‖x‖: 1 for masks and unitary maps, ``max s`` for the SR operators
    (their filters are almost non-negative), ``Σ |k|`` for a blur (Young's inequality), ``2 n_v √n_angles`` for
    Radon (each detector value sums ``n_v = ⌈√2 n⌉`` bilinear samples, each pixel feeds at most 4 per ray) and
    ``√(H W)`` for the turbulence warp-and-blur (rows of weight at most 1, columns of weight at most ``H W``)."""
    if isinstance(op, Blur):
        return float(op.kernel.abs().sum())
    if isinstance(op, Radon):
        return 2 * math.ceil(math.sqrt(2) * x.shape[-1]) * math.sqrt(len(op.angles))
    if isinstance(op, Turbulence):
        return math.sqrt(x.shape[-2] * x.shape[-1])
    if op.has_svd:
        return max(1.0, float(op.singulars(x).max()))
    return 1.0


# ----------------------------------------------------------------------------------------------------------------
# Linear operators
# ----------------------------------------------------------------------------------------------------------------


@given(linear_cases(), SEEDS)
def test_adjoint_identity(case, seed):
    """<A x, y> = <x, Aᵀ y> for random x, y: Aᵀ is the exact adjoint, not an approximation of it."""
    kind, op, shape = case
    x = randn(seed, shape)
    ax = op.A(x)
    y = randn(seed + 1, ax.shape)
    lhs, rhs = dot(ax, y), dot(x, op.AT(y))
    assert abs(lhs - rhs) <= REL * opnorm_bound(op, x) * norm(x) * norm(y) + 1e-300, (kind, lhs, rhs)


@given(linear_cases(), SEEDS, COEFS, COEFS)
def test_linearity(case, seed, a, b):
    """A(a x + b z) = a A x + b A z and the same for Aᵀ."""
    kind, op, shape = case
    x, z = randn(seed, shape), randn(seed + 1, shape)
    bound = opnorm_bound(op, x)
    ax, az = op.A(x), op.A(z)
    assert close(op.A(a * x + b * z), a * ax + b * az, bound * (abs(a) * norm(x) + abs(b) * norm(z))), kind
    u, v = randn(seed + 2, ax.shape), randn(seed + 3, ax.shape)
    assert close(op.AT(a * u + b * v), a * op.AT(u) + b * op.AT(v), bound * (abs(a) * norm(u) + abs(b) * norm(v))), kind


@given(linear_cases(), SEEDS, st.sampled_from([torch.float32, torch.float64]))
def test_shapes_dtypes_and_purity(case, seed, dtype):
    """A maps (N, C, H, W) to the documented measurement shape, Aᵀ (and pinv) back to the image shape, in the input's
    dtype; neither changes its input."""
    kind, op, shape = case
    x = randn(seed, shape, dtype)
    x_copy = x.clone()
    ax = op.A(x)
    assert tuple(ax.shape) == expected_shape(kind, op, shape) and ax.dtype == dtype
    assert torch.equal(x, x_copy)
    y = randn(seed + 1, ax.shape, dtype)
    y_copy = y.clone()
    outs = [op.AT(y)] + ([op.pinv(y)] if op.has_pinv else [])
    assert all(tuple(o.shape) == shape and o.dtype == dtype for o in outs)
    assert torch.equal(y, y_copy)
    assert all(torch.isfinite(o).all() for o in [ax, *outs])


@given(linear_cases(), SEEDS)
def test_pseudo_inverse_identities(case, seed):
    """Where ``has_pinv``: A A⁺ A = A and A⁺ A A⁺ = A⁺ (Moore–Penrose), up to the truncation of singular values
    below ``rcond = 1e-6`` of the largest (which moves A A⁺ A x by at most 1e-6 ‖A‖ ‖x‖)."""
    kind, op, shape = case
    assume(op.has_pinv)
    x = randn(seed, shape)
    ax = op.A(x)
    bound = opnorm_bound(op, x)
    assert close(op.A(op.pinv(ax)), ax, 2e-6 / REL * bound * norm(x)), kind
    y = randn(seed + 1, ax.shape)
    p = op.pinv(y)
    assert close(op.pinv(op.A(p)), p, norm(p), rel=1e-8), kind  # the kept singular values span at most 1e6


@given(linear_cases(["identity", "block", "bicubic", "inpainting", "blur"]), SEEDS)
def test_svd_view_agrees_with_A(case, seed):
    """Where ``has_svd``: A x = U(s ⊙ Vᵀ x), V and U are orthogonal (Vᵀ then V, Uᵀ then U are identities, norms are
    kept), s >= 0 with zeros after the first M = numel(one measurement) entries, and Uᵀ y is zero there."""
    kind, op, shape = case
    assume(op.has_svd)
    x = randn(seed, shape)
    ax = op.A(x)
    y = randn(seed + 1, ax.shape)
    s, z, u = op.singulars(x), op.Vt(x), op.Ut(y)
    D, M, N = x[0].numel(), y[0].numel(), shape[0]
    assert z.shape == (N, D) and u.shape == (N, D) and s.shape[1] == D and s.shape[0] in (1, N)
    assert bool((s >= 0).all()) and bool((s[:, M:] == 0).all()) and bool((u[:, M:] == 0).all())
    assert close(op.U(s * z, shape), ax, opnorm_bound(op, x) * norm(x)), kind
    assert close(op.V(z, shape), x, norm(x)) and math.isclose(norm(z), norm(x), rel_tol=REL), kind
    assert close(op.U(u, shape), y, norm(y)) and math.isclose(norm(u), norm(y), rel_tol=REL), kind


@given(SIZE, SIZE, st.data())
def test_blur_does_not_alias_the_callers_kernel(h, w, data):
    """A Blur is immutable: changing the caller's kernel tensor in place afterwards changes neither A nor its SVD
    view (issue 18: the SVD view, computed at construction, then disagreed with A)."""
    kernel = data.draw(kernels(h, w))
    op = Blur(kernel, data.draw(st.sampled_from(["circular", "padded"])))
    x = randn(data.draw(SEEDS), (2, 1, h, w))
    before = op.A(x)
    kernel.mul_(-2).add_(1)
    assert torch.equal(op.A(x), before)
    if op.has_svd:
        assert close(op.U(op.singulars(x) * op.Vt(x), x.shape), before, opnorm_bound(op, x) * norm(x))


# ----------------------------------------------------------------------------------------------------------------
# Non-linear operators and the Fourier transform
# ----------------------------------------------------------------------------------------------------------------


@example(sigma=1e-200, seed=0)  # σ² underflowed to 0: exp(-0/0) = NaN at the kernel's centre (issue 18)
@given(st.floats(0, 1e-150), SEEDS)
def test_turbulence_with_a_tiny_blur_is_finite(sigma, seed):
    """A blur of std σ → 0 tends to the identity; a σ whose square underflows must not give NaN."""
    x = randn(seed, (1, 1, 6, 6))
    y = Turbulence(strength=0.0, sigmas=(sigma,)).A(x)
    assert bool(torch.isfinite(y).all())
    assert close(y, x, norm(x), rel=1e-6)


@given(BATCH, CHANNELS, SIZE, SIZE, st.floats(1.0, 3.0), SEEDS)
def test_phase_retrieval_shapes_and_parseval(n, c, h, w, oversample, seed):
    """|F(pad x)| has the padded shape, keeps the norm (orthonormal FFT, zero padding), is blind to the global sign,
    and the padding rule is invertible (``image_size``); ShiftedPhaseRetrieval is PhaseRetrieval of (x + 1) / 2."""
    pr, x = PhaseRetrieval(oversample), randn(seed, (n, c, h, w))
    y = pr.A(x)
    ph, pw = pr.padding(h, w)
    assert y.shape == (n, c, h + 2 * ph, w + 2 * pw) and bool((y >= 0).all())
    assert math.isclose(norm(y), norm(x), rel_tol=REL)
    assert close(pr.A(-x), y, norm(y))
    assert pr.image_size(*y.shape[-2:]) == (h, w)
    assert bool(pr.support(y).sum() == h * w)
    assert torch.equal(ShiftedPhaseRetrieval(oversample).A(x), pr.A((x + 1) / 2))


@given(st.lists(st.integers(1, 6), min_size=2, max_size=4), SEEDS)
def test_centred_fft_is_unitary(shape, seed):
    """ifft2c(fft2c(x)) = x and ‖fft2c(x)‖ = ‖x‖ over the last two dimensions, for any shape."""
    x = torch.complex(randn(seed, shape), randn(seed + 1, shape))
    k = fft2c(x)
    assert k.shape == x.shape
    assert math.isclose(norm(k), norm(x), rel_tol=REL)
    assert close(ifft2c(k), x, norm(x)) and close(fft2c(ifft2c(x)), x, norm(x))


@given(st.integers(1, 6))
def test_bicubic_kernel_is_a_normalised_symmetric_filter(factor):
    k = bicubic_kernel(factor)
    assert k.shape == (4 * factor - factor % 2,) and k.dtype == torch.float64
    assert math.isclose(float(k.sum()), 1.0, rel_tol=1e-12) and torch.equal(k, k.flip(0))


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_downsampling_of_a_constant_image_is_constant_inside(factor):
    """Both SR operators average: a constant image stays constant away from Bicubic's zero-padded border (a fixed
    example that anchors the random ones above)."""
    x = torch.full((1, 1, 8 * factor, 8 * factor), 0.5, dtype=torch.float64)
    assert torch.allclose(BlockAverage(factor).A(x), torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64))
    inner = Bicubic(factor).A(x)[..., 2:-2, 2:-2]
    assert torch.allclose(inner, torch.full_like(inner, 0.5), atol=1e-12)
