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


def test_check_eta_refuses_bools_and_non_numbers():
    for bad in (True, "0.5", None, torch.tensor([0.5, 0.5])):
        with pytest.raises(ValueError, match="eta must be in"):
            check_eta(bad)


def test_check_real():
    from diffu.checks import check_real

    for ok in (0, 0.5, np.float32(2.0), np.int64(3), torch.tensor(1.5)):
        check_real("scale", ok)
    check_real("lr", 1e-3, 0, low_open=True)
    check_real("p", 1.0, 0, 1)
    cases = [
        (float("nan"), {}, ValueError, "scale must be a finite number, got nan"),
        (float("inf"), {"low": 0}, ValueError, r"scale must be a finite number >= 0, got inf"),
        (0.0, {"low": 0, "low_open": True}, ValueError, r"scale must be a finite number > 0, got 0.0"),
        (1.0, {"low": 0, "high": 1, "high_open": True}, ValueError, r"in \[0, 1\), got 1.0"),
        (-2, {"high": -3}, ValueError, r"<= -3, got -2"),
        (True, {}, TypeError, "scale must be a finite number, got bool"),
        ("1", {}, TypeError, "got str"),
        (None, {}, TypeError, "got NoneType"),
        (torch.zeros(2), {}, TypeError, "got Tensor"),
        (1j, {}, TypeError, "got complex"),
    ]
    for value, kw, err, msg in cases:
        with pytest.raises(err, match=msg):
            check_real("scale", value, **kw)


def test_check_bool_callable_generator_device_dtype():
    from diffu.checks import check_bool, check_callable, check_device, check_dtype, check_generator

    check_bool("progress", False)
    check_bool("progress", np.bool_(True))
    for bad in (0, 1, "True", None):
        with pytest.raises(TypeError, match="progress must be True or False"):
            check_bool("progress", bad)
    check_callable("model", len)
    with pytest.raises(TypeError, match="model must be callable, got str"):
        check_callable("model", "unet")
    check_generator(None)
    check_generator(torch.Generator())
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None, got int \(for a seed, pass"):
        check_generator(3)
    with pytest.raises(TypeError, match="g must be a torch.Generator or None, got str"):
        check_generator("seed", "g")
    assert check_device("device", "cpu") == torch.device("cpu")
    assert check_device("device", None) is None
    with pytest.raises(ValueError, match="device must name a torch device"):
        check_device("device", "nodevice")
    with pytest.raises(TypeError, match="device must be a torch.device, a string or None, got int"):
        check_device("device", 0)
    assert check_dtype("dtype", torch.float64) is torch.float64
    assert check_dtype("dtype", torch.int64, floating=False) is torch.int64
    with pytest.raises(ValueError, match="dtype must be a floating-point torch.dtype, got torch.int64"):
        check_dtype("dtype", torch.int64)
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        check_dtype("dtype", "float32")


def test_check_choice_with_unhashable_values():
    with pytest.raises(ValueError, match="solver must be one of"):
        check_choice("solver", ["euler"], {"euler", "heun"})


def test_tensor_checks_rank_floating_finite():
    from diffu.checks import UINT8_HINT, check_finite, check_floating, check_rank

    x = torch.zeros(2, 3)
    check_tensor(x, "x", ndim=(2, 3), floating=True, finite=True)
    with pytest.raises(ValueError, match=r"x must have 4 dimensions \(N, C, H, W\), got shape \(2, 3\)"):
        check_rank(x, 4, "x", "(N, C, H, W)")
    with pytest.raises(ValueError, match=r"x must have 1 or 4 dimensions, got shape \(2, 3\)"):
        check_tensor(x, "x", ndim=(1, 4))
    for dtype in (torch.uint8, torch.int64):
        with pytest.raises(ValueError, match=f"x0 must be a floating-point tensor, got {dtype}; convert 0–255"):
            check_floating(x.to(dtype), "x0")
    assert "from_uint8" in UINT8_HINT
    with pytest.raises(ValueError, match=r"y must be a floating-point tensor, got torch.bool$"):
        check_floating(x.bool(), "y")
    x[0, 1] = float("nan")
    x[1, 2] = float("inf")
    with pytest.raises(ValueError, match="y must be finite, got 2 NaN or infinite of 6 entries"):
        check_finite(x, "y")
    check_finite(torch.arange(3), "n")  # integer tensors are always finite
    with pytest.raises(ValueError, match="y must be a tensor, got list"):
        check_finite([1.0], "y")


def test_check_batch_range_labels():
    from diffu.checks import check_batch, check_labels, check_range

    check_batch(torch.zeros(3), 3, "t")
    with pytest.raises(ValueError, match=r"t must have batch size 8 \(x's\), got shape \(3,\)"):
        check_batch(torch.zeros(3), 8, "t")
    with pytest.raises(ValueError, match=r"t must have batch size 8 \(x's\), got shape \(\)"):
        check_batch(torch.tensor(1.0), 8, "t")
    check_range(torch.tensor([-1.0, 1.0]), -1, 1)
    with pytest.raises(
        ValueError, match=r"x must have values in \[-1, 1\] \(images\), got values in \[0, 255\]; convert"
    ):
        check_range(torch.tensor([0.0, 255.0]), -1, 1, "x", "images")
    with pytest.raises(ValueError, match=r"p must have values in \[0, 1\], got values in \[0, 1.5\]$"):
        check_range(torch.tensor([0.0, 1.5]), 0, 1, "p")
    with pytest.raises(ValueError, match="x must be finite"):
        check_range(torch.tensor([float("nan")]), -1, 1)
    check_labels(torch.tensor([0, 9]), 10, 2)
    check_labels(torch.tensor([10]), 10, null=True)
    cases = [
        (torch.tensor([0.0]), {}, "y must be an integer tensor of class indices, got torch.float32"),
        (torch.tensor([True]), {}, "got torch.bool"),
        (torch.tensor([0, 1]), {"n": 3}, r"y must have shape \(3,\) \(one label per image\), got \(2,\)"),
        (torch.tensor([10]), {}, r"y must hold class indices in \[0, 9\], got values in \[10, 10\]"),
        (torch.tensor([-1]), {"null": True}, r"in \[0, 10\], got values in \[-1, -1\]"),
    ]
    for y, kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            check_labels(y, 10, **kw)
