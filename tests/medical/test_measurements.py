"""Physical-scale measurements of §5: y = A((x + 1)/2) + σ n and the equivalent measurement of x."""

import pytest
import torch

from diffu.inverse import MRI, Radon, cartesian_mask, fbp, zero_filled
from diffu.medical.measurements import analytic_reconstruction, measure_physical, signed_measurement


def _x(seed=0, n=2, size=9, dtype=torch.float64):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


def _ops(size=9):
    return [Radon(5), MRI(cartesian_mask(size, size, 2, generator=torch.Generator().manual_seed(0)).double())]


@pytest.mark.parametrize("k", [0, 1])
def test_signed_measurement_is_the_linear_measurement_of_x(k):
    x = _x()
    op = _ops()[k]
    y = measure_physical(op, x, 0.0)
    assert torch.allclose(y, op.A((x + 1) / 2), atol=1e-12)
    assert torch.allclose(signed_measurement(op, y, x), op.A(x), atol=1e-12)  # 2y − A1 = A x (linearity)
    assert torch.allclose(signed_measurement(op, y, tuple(x.shape)), op.A(x), atol=1e-12)


def test_noise_level_mri_mask_and_determinism():
    x = _x(n=64, size=16)
    ct, mri = Radon(8), MRI(cartesian_mask(16, 16, 4, generator=torch.Generator().manual_seed(0)).double())
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    y = measure_physical(ct, x, 0.01, g())
    assert torch.equal(y, measure_physical(ct, x, 0.01, g()))
    noise = y - ct.A((x + 1) / 2)
    # 64·8·16 = 8192 draws: the sample s.d. is within 3 % of 0.01 (its relative s.e. is 1/√(2·8192) ≈ 0.8 %)
    assert abs(float(noise.std()) / 0.01 - 1) < 0.03
    ym = measure_physical(mri, x, 0.01, g())
    off = (mri.mask == 0)[..., None].expand_as(ym)
    assert torch.equal(ym[off], mri.A((x + 1) / 2)[off])  # unacquired k-space stays exactly 0-valued (no noise)


def test_analytic_reconstruction_maps_the_physical_baseline():
    x = _x(size=9)
    ct, mri = _ops()
    y = measure_physical(ct, x, 0.0)
    assert torch.allclose(analytic_reconstruction(ct, y), (2 * fbp(ct, y) - 1).clamp(-1, 1))
    ym = measure_physical(mri, x, 0.0)
    assert torch.allclose(analytic_reconstruction(mri, ym), (2 * zero_filled(mri, ym) - 1).clamp(-1, 1))
    # air outside the scanned disc is reconstructed as air (−1), not as mid-grey
    air = -torch.ones(1, 1, 9, 9, dtype=torch.float64)
    assert torch.equal(analytic_reconstruction(ct, measure_physical(ct, air, 0.0)), air)


def test_errors_name_the_argument():
    ct = Radon(4)
    x = _x()
    with pytest.raises(TypeError, match="op must be"):
        measure_physical(object(), x, 0.01)
    with pytest.raises(ValueError, match="sigma_y"):
        measure_physical(ct, x, -1.0)
    with pytest.raises(ValueError, match="x must be finite"):
        measure_physical(ct, x / 0, 0.01)
    with pytest.raises(TypeError, match="generator"):
        measure_physical(ct, x, 0.01, 3)
    with pytest.raises(ValueError, match="y and like disagree"):
        signed_measurement(ct, torch.zeros(2, 1, 4, 7, dtype=torch.float64), x)
    with pytest.raises(TypeError, match="Radon or MRI"):
        analytic_reconstruction(object(), x)
