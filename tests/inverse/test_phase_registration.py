"""Phase retrieval of [-1, 1] images (ShiftedPhaseRetrieval) and scoring up to its trivial ambiguities
(register_phase), diffu.inverse.fourier; used by §4.2.2 and the §4.3 benchmark."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from diffu.inverse.fourier import PhaseRetrieval, ShiftedPhaseRetrieval, register_phase


def _object(gen, n=2, size=12):
    """Images in [-1, 1] with an object inside a margin of background (−1), so shifts within the margin are exact."""
    x = torch.full((n, 1, size, size), -1.0)
    x[..., 3:9, 4:8] = torch.rand(n, 1, 6, 4, generator=gen(0)) * 2 - 1
    return x


def test_shifted_phase_retrieval_is_phase_retrieval_of_the_image_in_0_1(gen):
    x = torch.rand(2, 1, 10, 6, generator=gen(1)) * 2 - 1
    op = ShiftedPhaseRetrieval(2.0)
    y = op.A(x)
    assert y.shape == (2, 1, 20, 12) and torch.equal(y, op(x))
    torch.testing.assert_close(y, PhaseRetrieval(2.0).A((x + 1) / 2), rtol=0, atol=0)
    assert op.pr == PhaseRetrieval(2.0) and ShiftedPhaseRetrieval(1.5).pr.padding(10, 6) == (3, 2)
    assert not op.linear  # magnitudes: no adjoint, so no adjoint test
    # unlike PhaseRetrieval of x itself, the global sign flip x → −x changes the measurement
    torch.testing.assert_close(PhaseRetrieval(2.0).A(-x), PhaseRetrieval(2.0).A(x), rtol=0, atol=1e-5)
    assert (op.A(-x) - y).abs().max() > 0.1


def test_shifted_phase_retrieval_is_immutable_differentiable_and_validates(gen):
    op = ShiftedPhaseRetrieval()
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.oversample = 3.0
    x = (torch.rand(1, 1, 8, 8, generator=gen(2)) * 2 - 1).requires_grad_(True)
    op.A(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().max() > 0
    with pytest.raises(ValueError, match="oversample"):
        ShiftedPhaseRetrieval(0.5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        op.A(torch.zeros(8, 8))


def test_register_phase_undoes_shift_and_twin(gen):
    """A shifted, 180°-rotated copy of the image (inside the support) registers back exactly, and the measurement
    cannot tell them apart."""
    x = _object(gen)
    op = ShiftedPhaseRetrieval(2.0)
    twin = x.flip(-2, -1).roll((1, -2), (-2, -1))  # rotated and shifted, still inside the image
    torch.testing.assert_close(op.A(twin), op.A(x), atol=1e-4, rtol=0)
    torch.testing.assert_close(register_phase(op.pr, twin, x), x)
    assert float((twin - x).abs().max()) > 0.5  # the unregistered twin is a different image
    assert F.mse_loss(register_phase(op.pr, -x, x), x) > 0.1  # a wrong image stays wrong


def test_register_phase_undoes_a_known_shift_per_image(gen):
    x = _object(gen)
    moved = torch.stack([x[0].roll((2, 1), (-2, -1)), x[1].roll((-3, 0), (-2, -1))])  # a different shift each
    assert not torch.equal(moved, x)
    torch.testing.assert_close(register_phase(PhaseRetrieval(2.0), moved, x), x, rtol=0, atol=0)
    torch.testing.assert_close(register_phase(PhaseRetrieval(2.0), x, x), x, rtol=0, atol=0)  # aligned stays put


def test_register_phase_validates(gen):
    x = _object(gen)
    with pytest.raises(TypeError, match="pr must be a PhaseRetrieval"):
        register_phase(ShiftedPhaseRetrieval(2.0), x, x)
    with pytest.raises(ValueError, match="same shape"):
        register_phase(PhaseRetrieval(2.0), x[:1], x)
    with pytest.raises(ValueError, match="est must be"):
        register_phase(PhaseRetrieval(2.0), x[0], x)


def test_register_phase_refuses_nan_and_integer_images():
    pr = PhaseRetrieval(1.5)
    x = torch.zeros(1, 1, 8, 8)
    bad = x.clone()
    bad[0, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="x must be finite, got 1 NaN"):  # every error would be NaN: est unaligned
        register_phase(pr, x, bad)
    with pytest.raises(ValueError, match="est must be finite"):
        register_phase(pr, bad, x)
    with pytest.raises(ValueError, match="est must be a floating-point tensor, got torch.int64"):
        register_phase(pr, x.long(), x)
    from diffu.inverse.fourier import fft2c, ifft2c

    with pytest.raises(ValueError, match="x must be a floating-point tensor, got torch.int64"):
        fft2c(torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"k must have at least 2 dimensions \(…, H, W\), got shape \(4,\)"):
        ifft2c(torch.zeros(4, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"x must be a float image batch"):
        ShiftedPhaseRetrieval(2.0).A(torch.zeros(4, 4))
