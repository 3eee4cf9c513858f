"""Forward operators and noise models of diffu.inverse: adjoints, pseudo-inverses, SVD views, devices/dtypes,
gradients, input validation."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from diffu.inverse import (
    MRI,
    Bicubic,
    BlockAverage,
    Blur,
    Gaussian,
    Identity,
    Inpainting,
    PhaseRetrieval,
    Poisson,
    Radon,
    Turbulence,
    bicubic_kernel,
    box_mask,
    brush_mask,
    cartesian_mask,
    gaussian_kernel,
    motion_kernel,
    random_mask,
)


def _seeded(seed):  # the operators below are built at collection time, where the gen fixture is not available
    return torch.Generator().manual_seed(seed)


def _masks_per_sample():
    return torch.cat([random_mask(24, 32, 0.7, generator=_seeded(0)), random_mask(24, 32, 0.3, generator=_seeded(1))])


def _gauss(boundary):
    return Blur(gaussian_kernel(7, 1.5, dtype=torch.float64), boundary)


# every linear operator: name -> (factory, image shape); non-square sizes prove that sizes come from the input
OPS = {
    "identity": (Identity, (2, 1, 5, 6)),
    "block-x2": (lambda: BlockAverage(2), (2, 3, 24, 32)),
    "block-x4": (lambda: BlockAverage(4), (2, 1, 16, 32)),
    "bicubic-x2": (lambda: Bicubic(2), (2, 2, 24, 32)),
    "bicubic-x4": (lambda: Bicubic(4), (1, 1, 32, 48)),
    "bicubic-x3": (lambda: Bicubic(3), (1, 1, 24, 33)),
    "inpaint-box": (lambda: Inpainting(box_mask(24, 32)), (2, 3, 24, 32)),
    "inpaint-random": (lambda: Inpainting(_masks_per_sample()), (2, 3, 24, 32)),
    "inpaint-brush": (lambda: Inpainting(brush_mask(24, 32, generator=_seeded(2)).bool()), (2, 1, 24, 32)),
    "turbulence": (lambda: Turbulence(strength=1.5, correlation=4.0), (2, 2, 24, 32)),
    "gauss-circular": (lambda: _gauss("circular"), (2, 3, 24, 32)),
    "gauss-padded": (lambda: _gauss("padded"), (2, 3, 24, 32)),
    "motion-circular": (lambda: Blur(motion_kernel(9, generator=_seeded(3), dtype=torch.float64)), (2, 1, 24, 32)),
    "motion-padded": (lambda: Blur(motion_kernel(9, generator=_seeded(3)), "padded"), (2, 1, 24, 32)),
    "radon": (lambda: Radon(30), (2, 1, 20, 20)),
    "mri": (lambda: MRI(cartesian_mask(24, 32, 4, generator=_seeded(4))), (2, 1, 24, 32)),
    "mri-asymmetric": (lambda: MRI((torch.rand(1, 1, 24, 31, generator=_seeded(5)) < 0.3).float()), (2, 1, 24, 31)),
}


def setup(name, dtype=torch.float64, device="cpu"):
    factory, shape = OPS[name]
    op = factory()
    x = torch.randn(shape, generator=_seeded(10), dtype=dtype).to(device)
    y = torch.randn(op(x).shape, generator=_seeded(11), dtype=dtype).to(device)
    return op, x, y


def close(a, b, rel):
    return float((a - b).norm()) <= rel * float(b.norm()) + 1e-300


@pytest.mark.parametrize("name", OPS)
def test_adjoint(name):
    op, x, y = setup(name)
    lhs, rhs = float((op.A(x) * y).sum()), float((x * op.AT(y)).sum())
    assert abs(lhs - rhs) <= 1e-5 * max(abs(lhs), abs(rhs)), (lhs, rhs)


@pytest.mark.parametrize("name", OPS)
def test_pinv(name):
    op, x, _ = setup(name)
    if not op.has_pinv:
        with pytest.raises(NotImplementedError):
            op.pinv(op.A(x))
        return
    Ax = op.A(x)
    assert close(op.A(op.pinv(Ax)), Ax, 1e-8)
    x_plus = op.pinv(Ax)  # the minimum-norm solution: no component in the null space
    assert close(op.pinv(op.A(x_plus)), x_plus, 1e-8)


@pytest.mark.parametrize("name", OPS)
def test_svd(name):
    op, x, y = setup(name)
    if not op.has_svd:
        with pytest.raises(NotImplementedError):
            op.Vt(x)
        return
    s, z = op.singulars(x), op.Vt(x)
    D, M = x[0].numel(), y[0].numel()
    assert z.shape == (x.shape[0], D) and s.shape[1] == D and s.shape[0] in (1, x.shape[0])
    assert torch.all(s[:, M:] == 0) and torch.all(s >= 0)
    assert close(op.U(s * z, x.shape), op.A(x), 1e-10)
    assert close(op.V(z, x.shape), x, 1e-10) and math.isclose(z.norm(), x.norm(), rel_tol=1e-10)  # V orthogonal
    u = op.Ut(y)
    assert torch.all(u[:, M:] == 0) and math.isclose(u.norm(), y.norm(), rel_tol=1e-10)  # U orthogonal
    assert close(op.U(u, x.shape), y, 1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", OPS)
def test_dtype_follows_input(name, dtype):
    op, x, y = setup(name, dtype)
    outs = [op.A(x), op.AT(y)]
    outs += [op.pinv(y)] if op.has_pinv else []
    outs += [op.Vt(x), op.singulars(x), op.Ut(y), op.V(op.Vt(x), x.shape)] if op.has_svd else []
    assert all(o.dtype == dtype and o.device == x.device for o in outs)
    ref = setup(name, torch.float64)[0].A(x.double())
    assert close(outs[0].double(), ref, 1e-5)


@pytest.mark.parametrize("name", OPS)
def test_gradients_flow(name):
    op, x, _ = setup(name, torch.float32)
    x.requires_grad_(True)
    op.A(x).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", OPS)
def test_cuda_matches_cpu(name, dtype):
    op, x, y = setup(name, dtype, "cuda")
    _, xc, yc = setup(name, dtype)
    rel = 1e-10 if dtype == torch.float64 else 5e-3  # float32 convolutions on CUDA may run in TF32 (10-bit mantissa)
    outs = [op.A(x), op.AT(y)] + ([op.U(op.singulars(x) * op.Vt(x), x.shape)] if op.has_svd else [])
    assert all(o.device == x.device and o.dtype == dtype for o in outs)
    assert close(outs[0].cpu(), op.A(xc), rel) and close(outs[1].cpu(), op.AT(yc), rel)
    assert not op.has_svd or close(outs[2].cpu(), op.A(xc), rel)


# ----------------------------------------------------------------------------------------------------------------
# Operator-specific properties
# ----------------------------------------------------------------------------------------------------------------


def test_block_average_svd_and_pinv_closed_forms(gen):
    op, x = BlockAverage(4), torch.randn(1, 2, 8, 12, generator=gen(0), dtype=torch.float64)
    M = x[0].numel() // 16
    assert torch.allclose(op.singulars(x)[0, :M], torch.full((M,), 0.25, dtype=torch.float64))  # 1/f per block
    y = op(x)
    assert torch.equal(op.pinv(y), y.repeat_interleave(4, -1).repeat_interleave(4, -2))  # nearest upsampling


def test_bicubic_matches_pil_away_from_the_border(gen):
    """Interior pixels equal PIL's antialiased bicubic (Keys a = −0.5) reduction; PIL renormalises at the border."""
    x = torch.rand(1, 1, 32, 48, generator=gen(0))
    for f in (2, 4):
        ours = Bicubic(f)(x)[0, 0].numpy()
        pil = np.asarray(Image.fromarray(x[0, 0].numpy()).resize((48 // f, 32 // f), Image.BICUBIC))
        assert np.abs(ours - pil)[2:-2, 2:-2].max() < 1e-5
    k = bicubic_kernel(4)
    assert len(k) == 16 and math.isclose(k.sum(), 1.0) and torch.equal(k, k.flip(0))


def test_blur_boundaries_agree_inside_and_kernels_are_normalised(gen):
    k = motion_kernel(9, intensity=1.0, generator=gen(1))
    assert k.shape == (9, 9) and (k >= 0).all() and math.isclose(k.sum(), 1.0, rel_tol=1e-6)
    assert torch.equal(k, motion_kernel(9, intensity=1.0, generator=gen(1)))
    assert not torch.equal(k, motion_kernel(9, intensity=1.0, generator=gen(2)))
    x = torch.randn(2, 1, 24, 32, generator=gen(0))
    a, b = Blur(k)(x), Blur(k, "padded")(x)
    assert torch.allclose(a[..., 4:-4, 4:-4], b[..., 4:-4, 4:-4], atol=1e-5)
    g = gaussian_kernel(7, 1.5)
    assert math.isclose(g.sum(), 1.0, rel_tol=1e-6) and Blur(g).has_svd and not Blur(k).has_svd


def test_turbulence_is_seeded_and_smooth(gen):
    like = torch.zeros(1, 1, 24, 32)
    tilt, w = Turbulence(strength=2.0, seed=3).fields(like)
    tilt2, _ = Turbulence(strength=2.0, seed=3).fields(like)
    assert torch.equal(tilt, tilt2) and not torch.equal(tilt, Turbulence(strength=2.0, seed=4).fields(like)[0])
    assert math.isclose(tilt.pow(2).mean().sqrt(), 2.0, rel_tol=1e-4)  # RMS shift = strength (pixels)
    assert torch.allclose(w.sum(0), torch.ones(24, 32)) and (w >= 0).all()
    x = torch.randn(2, 3, 24, 32, generator=gen(0))
    assert torch.allclose(Turbulence(strength=0.0, sigmas=(0.0,))(x), x, atol=1e-5)  # no tilt, no blur


def test_radon_conserves_mass_and_needs_square_images():
    yy, xx = torch.meshgrid(torch.arange(32) - 15.5, torch.arange(32) - 15.5, indexing="ij")
    x = ((yy - 3) ** 2 + (xx + 2) ** 2 < 64).double()[None, None]  # a disc well inside the circle
    sino = Radon(12)(x)
    assert sino.shape == (1, 1, 12, 32)
    assert torch.allclose(sino.sum(-1), x.sum().expand(1, 1, 12), rtol=1e-3)  # every projection sums to the mass
    assert Radon([0.0, 45.0]).angles == (0.0, 45.0)
    with pytest.raises(ValueError, match="square images, got 24×32"):
        Radon(4)(torch.zeros(1, 1, 24, 32))


def test_mri_pinv_is_zero_filling_for_symmetric_masks(gen):
    m = cartesian_mask(24, 32, 4, center_fraction=0.1, generator=gen(0))
    op, x = MRI(m), torch.randn(2, 1, 24, 32, generator=gen(1), dtype=torch.float64)
    y = op(x)
    assert y.shape == (2, 1, 24, 32, 2) and torch.allclose(op.pinv(y), op.AT(y))
    assert math.isclose(op(x).norm(), op.AT(y).norm(), rel_tol=1e-10)  # A x and Aᵀ A x: same energy (projection)
    assert math.isclose(MRI(torch.ones(1, 1, 24, 32))(x).norm(), x.norm(), rel_tol=1e-10)  # Parseval


def test_phase_retrieval_padding_and_gradients(gen):
    op = PhaseRetrieval(2.0)
    assert op.padding(24, 32) == (12, 16) and PhaseRetrieval(1.5).padding(24, 32) == (6, 8)
    assert op.image_size(48, 64) == (24, 32) and PhaseRetrieval(1.5).image_size(36, 48) == (24, 32)
    x = torch.randn(2, 3, 24, 32, generator=gen(0), requires_grad=True)
    y = op(x)
    assert y.shape == (2, 3, 48, 64) and (y >= 0).all()
    assert math.isclose(y.detach().norm(), x.detach().norm(), rel_tol=1e-5)  # orthonormal FFT of the zero-padded image
    ((y - 1) ** 2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not op.linear and not hasattr(op, "AT")
    assert op.support(y).sum() == 24 * 32


# ----------------------------------------------------------------------------------------------------------------
# Masks and noise
# ----------------------------------------------------------------------------------------------------------------


def test_masks_are_seeded_binary_and_sized(gen):
    for make in (
        lambda g: random_mask(24, 32, 0.25, generator=g),
        lambda g: brush_mask(24, 32, generator=g),
        lambda g: box_mask(24, 32, 0.5, generator=g),
        lambda g: cartesian_mask(24, 32, 4, generator=g),
    ):
        m = make(gen(0))
        assert m.shape == (1, 1, 24, 32) and m.dtype == torch.float32 and set(m.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(m, make(gen(0)))
    assert random_mask(24, 32, 0.25, generator=gen(0)).sum() == 24 * 32 - 192  # exactly 25 % missing
    assert box_mask(24, 32).sum() == 24 * 32 - 12 * 16
    cm = cartesian_mask(24, 32, 4, center_fraction=0.1, generator=gen(0))[0, 0, 0]
    assert cm.sum() == 8 and cm[15:18].all()  # 32 / 4 columns, the centre (DC at 16) kept
    assert torch.equal(cm, cm[(32 - torch.arange(32)) % 32])  # Hermitian-symmetric


def test_gaussian_noise_is_seeded_with_the_right_std(gen):
    y = torch.zeros(2, 1, 128, 128)
    a, b = Gaussian(0.2)(y, generator=gen(0)), Gaussian(0.2)(y, generator=gen(0))
    assert torch.equal(a, b) and not torch.equal(a, Gaussian(0.2)(y, generator=gen(1)))
    assert abs(a.std() - 0.2) < 0.004 and abs(a.mean()) < 0.003  # 32768 samples: std of std ≈ 0.0008
    assert Gaussian(0.1)(y.double(), generator=gen(0)).dtype == torch.float64


def test_poisson_noise_is_seeded_with_the_right_mean(gen):
    y = torch.linspace(-1, 1, 5).repeat_interleave(20000).reshape(1, 1, 5, 20000)
    a = Poisson(20.0)(y, generator=gen(0))
    assert torch.equal(a, Poisson(20.0)(y, generator=gen(0)))
    assert torch.allclose(a.mean(-1), y.mean(-1), atol=0.01)  # E = y; std of the mean ≤ √(4/20/20000) ≈ 0.003
    assert torch.allclose(a.var(-1), 2 * (y.mean(-1) + 1) / 20, rtol=0.05, atol=1e-6)  # Var = 2 (y + 1) / rate
    assert torch.equal(a[0, 0, 0], -torch.ones(20000))  # zero intensity: no photons


# ----------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------


def test_bad_inputs_name_both_sides():
    with pytest.raises(ValueError, match="image size 30×32 is not divisible by the SR factor 4"):
        BlockAverage(4)(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError, match="image size 24×30 is not divisible by the SR factor 4"):
        Bicubic(4)(torch.zeros(1, 1, 24, 30))
    with pytest.raises(ValueError, match="SR factor must be an integer >= 1, got 2.5"):
        BlockAverage(2.5)
    with pytest.raises(ValueError, match=r"mask shape \(1, 1, 20, 20\) does not match image shape \(2, 1, 28, 28\)"):
        Inpainting(torch.ones(1, 1, 20, 20))(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"mask shape \(3, 1, 28, 28\) does not match image shape \(2, 1, 28, 28\)"):
        MRI(torch.ones(3, 1, 28, 28))(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="mask dtype must be bool or floating point .*got torch.int64"):
        Inpainting(torch.ones(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask must be binary \(0 or 1\), got values in \[0, 0.5\]"):
        Inpainting(torch.tensor([0.0, 0.5]).reshape(1, 1, 1, 2))
    with pytest.raises(ValueError, match=r"mask must be a tensor of shape \(1 or N, 1 or C, H, W\), got \(4, 4\)"):
        Inpainting(torch.ones(4, 4))
    with pytest.raises(ValueError, match="kernel size must be an odd positive integer .*got 4"):
        gaussian_kernel(4, 1.0)
    with pytest.raises(ValueError, match="kernel size must be odd .*got 4×5"):
        Blur(torch.ones(4, 5) / 20)
    with pytest.raises(ValueError, match="kernel size 31×31 is larger than the image size 24×32"):
        Blur(gaussian_kernel(31, 3.0))(torch.zeros(1, 1, 24, 32))
    with pytest.raises(ValueError, match="kernel size 9×9 is larger than the image size 8×8"):
        Blur(gaussian_kernel(9, 1.0), "padded").AT(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="noise level sigma must be a finite number >= 0, got -0.1"):
        Gaussian(-0.1)
    with pytest.raises(ValueError, match="photon rate must be a finite number > 0, got -5"):
        Poisson(-5)
    with pytest.raises(ValueError, match="Poisson noise needs y >= -1 .*got min -1.5"):
        Poisson(10.0)(torch.full((1, 1, 2, 2), -1.5))
    with pytest.raises(ValueError, match="oversample must be a finite number >= 1, got 0.5"):
        PhaseRetrieval(0.5)
    with pytest.raises(ValueError, match=r"x must be a float image batch of shape \(N, C, H, W\), got shape \(4, 4\)"):
        BlockAverage(2)(torch.zeros(4, 4))


# ----------------------------------------------------------------------------------------------------------------
# The shared building blocks of operators.py
# ----------------------------------------------------------------------------------------------------------------


def test_svd_1d_factors_the_1d_matrices():
    """``D = U [diag(s) 0] Vᵀ`` is the 1D matrix of the operator: ``D_h X D_wᵀ = A(X)`` on an image ``X``."""
    from diffu.inverse.operators import svd_1d

    k = gaussian_kernel(3, 0.8, dtype=torch.float64)
    k1 = k.sum(1)  # a separable kernel: k = k1 k1ᵀ
    cases = (("block", 4, BlockAverage(4)), ("bicubic", 2, Bicubic(2)), ("circulant", tuple(k1.tolist()), Blur(k)))
    X = torch.randn(1, 1, 12, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for kind, param, op in cases:
        D = []
        for n in X.shape[-2:]:
            u, s, v = svd_1d(kind, param, n, torch.float64, torch.device("cpu"))
            m = len(s)
            assert u.shape == (m, m) and v.shape == (n, n) and bool((s[:-1] >= s[1:]).all())
            D.append(u @ torch.cat([torch.diag(s), torch.zeros(m, n - m, dtype=torch.float64)], 1) @ v.T)
        torch.testing.assert_close(D[0] @ X @ D[1].T, op.A(X), rtol=0, atol=1e-12)
    assert svd_1d("block", 2, 8, torch.float32, torch.device("cpu"))[1].dtype == torch.float32
    with pytest.raises(ValueError, match="kind must be one of"):
        svd_1d("box", 2, 8, torch.float64, torch.device("cpu"))


def test_separable_operator_subclass_gets_its_svd_and_pinv():
    """A new separable operator needs only its 1D kind, parameter and input shape (the SVD view and pinv follow)."""
    from diffu.inverse.operators import SeparableOperator

    class Box2(SeparableOperator):  # ×2 block averaging, written through the base class alone
        _kind = "block"

        def _param(self):
            return 2

        def _in_shape(self, y_shape):
            return (*y_shape[:2], 2 * y_shape[2], 2 * y_shape[3])

        def A(self, x):
            return torch.nn.functional.avg_pool2d(x, 2)

    op, ref = Box2(), BlockAverage(2)
    x = torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = op.A(x)
    torch.testing.assert_close(op.U(op.singulars(x) * op.Vt(x), x.shape), y, rtol=0, atol=1e-12)
    torch.testing.assert_close(op.pinv(y), ref.pinv(y), rtol=0, atol=1e-12)
    torch.testing.assert_close(op.V(op.Vt(x), x.shape), x, rtol=0, atol=1e-12)


def test_adjoint_by_autograd_is_the_exact_adjoint():
    from diffu.inverse.operators import adjoint_by_autograd

    g = torch.Generator().manual_seed(1)
    M = torch.randn(5, 7, generator=g, dtype=torch.float64)
    y = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    out = adjoint_by_autograd(lambda x: x @ M.T, y, (3, 7))
    torch.testing.assert_close(out, y @ M, rtol=0, atol=1e-12)
    (gy,) = torch.autograd.grad(out.sum(), y)  # stays differentiable in y
    torch.testing.assert_close(gy, M.sum(1).expand(3, 5), rtol=0, atol=1e-12)


def test_uniform_float_is_seeded(gen):
    from diffu.inverse.operators import uniform_float

    a = uniform_float(gen(0))
    assert isinstance(a, float) and 0 <= a < 1 and a == uniform_float(gen(0)) and a != uniform_float(gen(1))
    assert a == float(torch.rand((), generator=gen(0), dtype=torch.float64))
    assert 0 <= uniform_float() < 1


# ----------------------------------------------------------------------------------------------------------------
# Regressions (issue 18)
# ----------------------------------------------------------------------------------------------------------------


def test_regression_bicubic_pinv_rejects_integer_input():
    """``Bicubic.pinv`` of an int64 measurement returned zeros (the SVD factors were cast to int64)."""
    y = torch.randint(0, 255, (1, 1, 4, 4))
    for call in (Bicubic(2).pinv, Bicubic(2).AT, Bicubic(2).Ut, BlockAverage(2).pinv, Identity().pinv):
        with pytest.raises(ValueError, match=r"y must be a floating-point tensor, got torch.int64.*from_uint8"):
            call(y)
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor, got torch.int64.*from_uint8"):
        Bicubic(2).A(torch.randint(0, 255, (1, 1, 8, 8)))


@pytest.mark.parametrize("boundary", ["circular", "padded"])
def test_regression_blur_copies_its_kernel(gen, boundary):
    """Changing the caller's kernel in place after construction changed ``A`` but not the SVD view made from it."""
    k = gaussian_kernel(5, 1.0, dtype=torch.float64)
    op = Blur(k, boundary)
    x = torch.randn(2, 1, 12, 16, generator=gen(0), dtype=torch.float64)
    before = op.A(x)
    k.mul_(3.0)
    assert torch.equal(op.A(x), before) and op.kernel is not k
    if op.has_svd:  # A(x) and its own SVD view still agree
        assert close(op.U(op.singulars(x) * op.Vt(x), x.shape), op.A(x), 1e-10)
    # the copy stays differentiable in the kernel (blind deblurring takes gradients through Blur)
    kg = gaussian_kernel(5, 1.0, dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(Blur(kg, boundary).A(x).sum(), kg)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_regression_masked_operators_copy_their_mask():
    m = box_mask(8, 8, 0.5)
    ops = (Inpainting(m), MRI(m))
    x = torch.randn(1, 1, 8, 8, generator=_seeded(0))
    before = [op.A(x) for op in ops]
    m.fill_(1.0)
    assert all(torch.equal(op.A(x), b) for op, b in zip(ops, before))


def test_regression_motion_kernel_of_size_one():
    """``motion_kernel(1)`` failed deep inside torch (an index clamp to [0, −1])."""
    with pytest.raises(ValueError, match=r"kernel size must be an odd positive integer >= 3 .*got 1"):
        motion_kernel(1)
    from diffu.inverse import random_kernels

    with pytest.raises(ValueError, match=r"kernel size must be an odd positive integer >= 3 .*got 1"):
        random_kernels(2, 1)
    assert random_kernels(2, 1, motion_fraction=0.0).shape == (2, 1, 1)  # Gaussians only: a 1×1 delta is fine


# ----------------------------------------------------------------------------------------------------------------
# Input checks of every operator method
# ----------------------------------------------------------------------------------------------------------------


def _methods(op, x, y):
    """``(name, call, argument name)`` for the methods of ``op`` that take one image/measurement tensor."""
    calls = [("A", op.A, "x"), ("AT", op.AT, "y")]
    calls += [("pinv", op.pinv, "y")] if op.has_pinv else []
    calls += [("Vt", op.Vt, "x"), ("Ut", op.Ut, "y"), ("singulars", op.singulars, "like")] if op.has_svd else []
    return calls


@pytest.mark.parametrize("name", OPS)
def test_every_operator_method_refuses_integer_and_wrong_rank_input(name):
    op, x, y = setup(name)
    for _, call, arg in _methods(op, x, y):
        like = x if arg in ("x", "like") else y
        with pytest.raises(ValueError, match=rf"{arg}.*floating-point tensor, got torch.int64"):
            call(like.long())
        with pytest.raises(ValueError, match=rf"{arg}"):
            call(like[0])  # one rank short: no batch dimension
        with pytest.raises(ValueError, match=rf"{arg}"):
            call(like.numpy())  # not a tensor


@pytest.mark.parametrize("name", [n for n in OPS if OPS[n][0]().has_svd])
def test_svd_views_check_z_and_shape(name):
    op, x, _ = setup(name)
    z = op.Vt(x)
    for method in (op.V, op.U):
        with pytest.raises(ValueError, match=r"z must have shape \(N, C·H·W\)"):
            method(z[:, :-1], x.shape)
        with pytest.raises(ValueError, match=r"shape must be an image shape \(N, C, H, W\)"):
            method(z, x.shape[1:])
        with pytest.raises(ValueError, match=r"shape must be an image shape"):
            method(z, (x.shape[0], 1, 2.5, 4))
        with pytest.raises(ValueError, match=r"z must be a floating-point tensor"):
            method(z.long(), x.shape)


def test_operator_size_constraints_name_the_argument():
    with pytest.raises(ValueError, match=r"not divisible by the SR factor 2 \(shape of shape"):
        BlockAverage(2).V(torch.zeros(1, 35), (1, 1, 5, 7))
    with pytest.raises(ValueError, match=r"not divisible by the SR factor 4 \(like of shape"):
        Bicubic(4).singulars(torch.zeros(1, 1, 6, 8))
    with pytest.raises(ValueError, match=r"kernel size 7×7 is larger than the image size 5×5 \(of shape\)"):
        Blur(gaussian_kernel(7, 1.0)).V(torch.zeros(1, 25), (1, 1, 5, 5))
    with pytest.raises(
        ValueError, match=r"mask shape \(1, 1, 8, 8\) does not match image shape \(1, 1, 6, 6\) \(of y\)"
    ):
        Inpainting(box_mask(8, 8)).AT(torch.zeros(1, 1, 6, 6))
    with pytest.raises(ValueError, match=r"mask shape .* does not match image shape \(1, 1, 6, 6\) \(of like\)"):
        Inpainting(box_mask(8, 8)).singulars(torch.zeros(1, 1, 6, 6))
    with pytest.raises(ValueError, match=r"y \(sinogram\) has 5 angles, the operator 4"):
        Radon(4).AT(torch.zeros(1, 1, 5, 8))
    with pytest.raises(ValueError, match=r"MRI measurements y must have shape \(N, C, H, W, 2\)"):
        MRI(box_mask(8, 8)).AT(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="y must be a floating-point tensor, got torch.int64"):
        MRI(box_mask(8, 8)).pinv(torch.zeros(1, 1, 8, 8, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="rcond must be a finite number >= 0, got -1.0"):
        Bicubic(2).pinv(torch.zeros(1, 1, 4, 4), rcond=-1.0)
    with pytest.raises(ValueError, match="rcond must be a finite number >= 0, got nan"):
        Blur(gaussian_kernel(3, 1.0)).pinv(torch.zeros(1, 1, 4, 4), rcond=float("nan"))
    with pytest.raises(ValueError, match=r"like must be a float image batch"):
        Turbulence().fields(torch.zeros(8, 8))
    with pytest.raises(ValueError, match=r"like must be a float image batch"):
        Blur(gaussian_kernel(3, 1.0)).transfer(torch.zeros(8, 8))


def test_operators_and_noise_refuse_bad_parameters(gen):
    nan, inf = float("nan"), float("inf")
    cases = [
        (lambda: Gaussian(nan), ValueError, "noise level sigma must be a finite number >= 0, got nan"),
        (lambda: Gaussian("0.1"), TypeError, "noise level sigma must be a finite number, got str"),
        (lambda: Poisson(inf), ValueError, "photon rate must be a finite number > 0, got inf"),
        (lambda: Gaussian(0.1)(torch.zeros(2, 2, dtype=torch.long)), ValueError, "y must be a floating-point"),
        (lambda: Gaussian(0.1)(torch.zeros(2, 2), generator=3), TypeError, "generator must be a torch.Generator"),
        (lambda: Poisson(10.0)(torch.full((1, 1, 2, 2), nan)), ValueError, "y must be finite, got 4 NaN"),
        (lambda: PhaseRetrieval(nan), ValueError, "oversample must be a finite number >= 1, got nan"),
        (lambda: PhaseRetrieval(2.0).padding(0, 4), ValueError, "height must be an integer >= 1, got 0"),
        (lambda: PhaseRetrieval(2.0).image_size(8, 2.5), ValueError, "width must be an integer >= 1, got 2.5"),
        (lambda: PhaseRetrieval(2.0).support(torch.zeros(4)), ValueError, "like must have at least 2 dimensions"),
        (lambda: PhaseRetrieval(2.0).image_size(8, 9), ValueError, "no image size pads to 9"),
        (lambda: Radon(["a", 1.0]), TypeError, "angles\\[0\\] must be a finite number, got str"),
        (lambda: Radon([0.0, nan]), ValueError, "angles\\[1\\] must be a finite number, got nan"),
        (lambda: Radon("abc"), ValueError, "angles must be a positive count or a sequence of degrees"),
        (lambda: Radon(0), ValueError, "angles must be a positive count"),
        (lambda: Turbulence(strength=nan), ValueError, "turbulence strength must be a finite number >= 0, got nan"),
        (lambda: Turbulence(correlation=-1), ValueError, "turbulence correlation must be a finite number >= 0"),
        (lambda: Turbulence(sigmas=()), ValueError, "turbulence blur sigmas must be a non-empty sequence"),
        (lambda: Turbulence(sigmas=(1.0, inf)), ValueError, "turbulence blur sigmas\\[1\\] must be a finite number"),
        (lambda: Turbulence(sigmas="12"), ValueError, "turbulence blur sigmas must be a non-empty sequence"),
        (lambda: Turbulence(seed=1.5), ValueError, "seed must be an integer"),
        (lambda: Blur(torch.ones(3, 3, dtype=torch.long)), ValueError, "kernel must be a floating-point tensor"),
        (lambda: Blur(torch.full((3, 3), nan)), ValueError, "kernel must be finite, got 9 NaN"),
        (lambda: Blur(torch.ones(1, 3, 3)), ValueError, r"kernel must be a float tensor of shape \(kh, kw\)"),
        (lambda: Blur(gaussian_kernel(3, 1.0), "reflect"), ValueError, "boundary must be one of"),
        (lambda: Inpainting(torch.ones(1, 1, 4, 4)).A(torch.ones(1, 1, 4, 4, dtype=torch.uint8)), ValueError,
         "x must be a floating-point tensor, got torch.uint8"),
        (lambda: Identity().A(torch.zeros(2, 3)), ValueError, r"x must be a float image batch"),
    ]  # fmt: skip
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_kernel_and_mask_generators_refuse_bad_parameters():
    nan = float("nan")
    cases = [
        (lambda: gaussian_kernel(5, nan), ValueError, "kernel std must be a finite number > 0, got nan"),
        (lambda: gaussian_kernel(5, float("inf")), ValueError, "kernel std must be a finite number > 0, got inf"),
        (lambda: gaussian_kernel(5, "1"), TypeError, "kernel std must be a finite number, got str"),
        (lambda: gaussian_kernel(5, 1.0, dtype=torch.int64), ValueError, "dtype must be a floating-point"),
        (lambda: gaussian_kernel(5, 1.0, device="gpu9"), ValueError, "device must name a torch device"),
        (lambda: motion_kernel(5, -0.5), ValueError, "motion intensity must be a finite number >= 0, got -0.5"),
        (lambda: motion_kernel(5, nan), ValueError, "motion intensity must be a finite number >= 0, got nan"),
        (lambda: motion_kernel(5, generator=7), TypeError, "generator must be a torch.Generator"),
        (lambda: box_mask(8, 8, nan), ValueError, "box fraction must be a finite number in \\[0, 1\\], got nan"),
        (lambda: box_mask(8, 8, "0.5"), TypeError, "box fraction must be a finite number, got str"),
        (lambda: random_mask(8, 8, 1.5), ValueError, "missing fraction must be a finite number in \\[0, 1\\]"),
        (lambda: random_mask(8, 8, 0.5, generator=1), TypeError, "generator must be a torch.Generator"),
        (lambda: brush_mask(8, 8, 2.5), ValueError, "strokes must be an integer >= 0, got 2.5"),
        (lambda: brush_mask(8, 8, device=3), TypeError, "device must be a torch.device"),
        (lambda: box_mask(0, 8), ValueError, "mask height must be a positive integer, got 0"),
        (lambda: cartesian_mask(8, 8, float("inf")), ValueError, "acceleration R must be a finite number >= 1"),
        (lambda: cartesian_mask(8, 8, 0.5), ValueError, "acceleration R must be a finite number >= 1, got 0.5"),
        (lambda: cartesian_mask(8, 8, 4, nan), ValueError, "center_fraction must be a finite number in \\[0, 1\\]"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_shared_helpers_check_their_arguments():
    from diffu.inverse.operators import adjoint_by_autograd, svd_1d, uniform_float

    cpu = torch.device("cpu")
    cases = [
        (lambda: svd_1d("block", 3, 8, torch.float64, cpu), ValueError, "n must be divisible by the factor param = 3"),
        (lambda: svd_1d("block", 2, 0, torch.float64, cpu), ValueError, "n must be an integer >= 1, got 0"),
        (lambda: svd_1d("bicubic", 0, 8, torch.float64, cpu), ValueError, "param must be the integer factor >= 1"),
        (lambda: svd_1d("circulant", (0.5, 0.5), 8, torch.float64, cpu), ValueError, "tuple of an odd number"),
        (lambda: svd_1d("circulant", [1.0], 8, torch.float64, cpu), ValueError, "tuple of an odd number"),
        (lambda: svd_1d("circulant", (1.0, float("nan"), 1.0), 8, torch.float64, cpu), ValueError, "finite"),
        (lambda: svd_1d("block", 2, 8, torch.int32, cpu), ValueError, "dtype must be a floating-point"),
        (lambda: uniform_float(5), TypeError, "generator must be a torch.Generator"),
        (lambda: adjoint_by_autograd(3, torch.zeros(2), (2,)), TypeError, "A must be callable"),
        (lambda: adjoint_by_autograd(lambda v: v, torch.zeros(2, dtype=torch.long), (2,)), ValueError, "y must be a"),
        (lambda: adjoint_by_autograd(lambda v: v, torch.zeros(2), (0,)), ValueError, "in_shape must be a shape"),
        (lambda: adjoint_by_autograd(lambda v: v[:1], torch.zeros(2), (2,)), ValueError, r"y must have the shape of A"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_regression_gaussians_narrower_than_the_dtype_are_a_delta():
    """σ with 2σ² underflowing to 0 gave exp(−0/0) = NaN at the kernel's centre (gaussian_kernel, Turbulence)."""
    delta = torch.zeros(3, 3)
    delta[1, 1] = 1
    assert torch.equal(gaussian_kernel(3, 1e-200), delta)
    x = torch.randn(1, 1, 6, 6, generator=_seeded(0))
    for sigma in (1e-200, 1e-30):  # 2σ² is 0 in float64 / in float32 only
        assert torch.allclose(Turbulence(strength=0.0, sigmas=(sigma,)).A(x), x, atol=1e-6)
    assert torch.equal(gaussian_kernel(5, 1e-3), gaussian_kernel(5, 1e-3))  # still the formula above the threshold
