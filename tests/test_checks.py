"""diffu.checks: every check accepts what it documents and rejects the rest with a message naming the argument."""

import numpy as np
import pytest
import torch

from diffu.checks import (
    check_choice,
    check_eta,
    check_image,
    check_int,
    check_mask,
    check_nonnegative,
    check_positive,
    check_shape,
    check_steps,
    check_tensor,
    check_unit,
    mask_for,
)


def test_check_int_and_steps():
    for ok in (1, 5, np.int64(3)):
        check_int("n", ok, 1, 5)
    check_int("n", 10**9, 1)  # no upper bound
    for bad, msg in ((0, r"n must be an integer in \[1, 5\], got 0"), (6, "got 6"), (2.0, "got 2.0"),
                     (True, "got True"), ("3", "got '3'")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            check_int("n", bad, 1, 5)
    with pytest.raises(ValueError, match="iters must be an integer >= 1, got 0"):
        check_int("iters", 0, 1)
    check_steps(1000, 1000)
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 100\], got 101"):
        check_steps(101, 100)
    with pytest.raises(ValueError, match=r"ddim_steps must be an integer in \[1, 10\], got 0"):
        check_steps(0, 10, "ddim_steps")


def test_check_numbers():
    for ok in (0, 0.5, 1, torch.tensor(0.3)):
        check_eta(ok)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"eta must be in \[0, 1\], got"):
            check_eta(bad)
    check_unit("eta_b", 1)
    for bad in (1.01, True, "0.5", torch.tensor(0.5)):
        with pytest.raises(ValueError, match=r"eta_b must be a number in \[0, 1\]"):
            check_unit("eta_b", bad)
    check_positive("lam", 1e-9)
    for bad in (0, -1, float("inf"), float("nan"), True, None):
        with pytest.raises(ValueError, match="lam must be a finite number > 0"):
            check_positive("lam", bad)
    check_nonnegative("sigma_y", 0)
    for bad in (-1e-9, float("inf"), float("nan"), False, "0"):
        with pytest.raises(ValueError, match="sigma_y must be a finite number >= 0"):
            check_nonnegative("sigma_y", bad)
    check_choice("spacing", "leading", ("leading", "trailing"))
    with pytest.raises(ValueError, match=r"spacing must be one of \('leading', 'trailing'\), got 'lead'"):
        check_choice("spacing", "lead", ("leading", "trailing"))


def test_check_tensors_and_shapes():
    x = torch.zeros(2, 1, 4, 4)
    check_tensor(x, "y")
    with pytest.raises(ValueError, match="y must be a tensor, got list"):
        check_tensor([1.0], "y")
    check_shape(x, (2, 1, 4, 4), "x_T")
    with pytest.raises(ValueError, match=r"x_T must be a tensor of y's shape \(2, 1, 4, 4\), got \(1, 1, 4, 4\)"):
        check_shape(x[:1], x.shape, "x_T", of="y's")
    with pytest.raises(ValueError, match=r"k_T must be a tensor of shape \(2, 1, 3, 3\), got \(2, 1, 3\)"):
        check_shape((2, 1, 3), (2, 1, 3, 3), "k_T")
    check_image(x)
    for bad, got in ((torch.zeros(4, 4), r"shape \(4, 4\)"), (torch.zeros(1, 1, 2, 2, dtype=torch.long), "int64"),
                     ([0.0], "list")):  # fmt: skip
        with pytest.raises(ValueError, match=f"z must be a float image batch of shape \\(N, C, H, W\\), got .*{got}"):
            check_image(bad, "z")


def test_check_mask_and_mask_for():
    x = torch.zeros(3, 2, 4, 5, dtype=torch.float64)
    for m in (torch.ones(1, 1, 4, 5, dtype=torch.bool), torch.zeros(3, 2, 4, 5), torch.ones(3, 1, 4, 5)):
        check_mask(m)
        out = mask_for(m, x)
        assert out.dtype == x.dtype and out.device == x.device and torch.equal(out, m.to(x))
    with pytest.raises(ValueError, match=r"mask must be a tensor of shape \(1 or N, 1 or C, H, W\), got \(4, 5\)"):
        check_mask(torch.ones(4, 5))
    with pytest.raises(ValueError, match="mask dtype must be bool or floating point"):
        check_mask(torch.ones(1, 1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"m must be binary \(0 or 1\), got values in \[0, 0.5\]"):
        check_mask(torch.tensor([0.0, 0.5]).reshape(1, 1, 1, 2), "m")
    for bad in (torch.ones(2, 1, 4, 5), torch.ones(1, 3, 4, 5), torch.ones(1, 1, 5, 4)):
        with pytest.raises(ValueError, match="does not match image shape"):
            mask_for(bad, x)
