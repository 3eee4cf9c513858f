"""Properties of the validation layer (diffu.checks) and of a few public doors end to end: a bad argument drawn by
Hypothesis — NaN, infinity, a negative, fractional or out-of-range number, a bool, a string, None, a container, a
tensor of the wrong rank, dtype or shape — always raises ``ValueError`` or ``TypeError`` whose message names the
argument (CONTRIBUTING.md, convention 8); never a result, never another exception. A valid argument never raises.

Arguments fall into three classes: clearly valid (a Python number in range), clearly bad, and ambiguous (numpy
scalars, 0-d tensors), which may be accepted or refused but only with a named error.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from diffu import checks, flow
from diffu.gmm import ExactModel, GaussianMixture
from diffu.inverse import Bicubic, BlockAverage, Gaussian, PhaseRetrieval, Poisson, gaussian_kernel
from diffu.samplers import ddim, ddpm
from diffu.sampling import SPACINGS, ddim_timesteps
from diffu.schedules import cosine_schedule, linear_schedule, make_schedule, scaled_linear_schedule, sigmoid_schedule
from diffu.sde import VESDE, VPSDE, SubVPSDE
from diffu.sde_samplers import predictor_corrector

NAMES = st.sampled_from(["steps", "sigma_y", "x_T", "guidance_scale", "my_arg"])
NAN_INF = st.sampled_from([math.nan, math.inf, -math.inf])
HUGE_INTS = st.integers(min_value=2**1030, max_value=2**1100).flatmap(lambda v: st.sampled_from([v, -v]))
NON_NUMBERS = st.one_of(
    st.none(),
    st.text(max_size=4),
    st.sampled_from(["1", "0.5", "nan", "inf", "-1"]),
    st.just([1]),
    st.just((0.5,)),
    st.just({}),
    st.just(object()),
    st.complex_numbers(max_magnitude=10, allow_nan=False),
    st.just(torch.tensor([0.5, 0.5])),
    st.just(torch.zeros(0)),
    st.just(np.array([1, 2])),
)
AMBIGUOUS = st.one_of(
    st.floats(-10, 10).map(np.float32),
    st.floats(-10, 10).map(np.float64),
    st.integers(-10, 10).map(np.int64),
    st.floats(-10, 10).map(torch.tensor),
    st.integers(-10, 10).map(torch.tensor),
)


def named_error(fn, names: str | tuple, /, *args, **kwargs) -> Exception:
    """Call ``fn``; it must raise ValueError or TypeError naming ``names`` (a name, or one of a tuple of names)."""
    with pytest.raises((ValueError, TypeError)) as info:
        fn(*args, **kwargs)
    names = (names,) if isinstance(names, str) else names
    assert any(n in str(info.value) for n in names), f"{info.value!r} does not name {names}"
    return info.value


def accepted_or_named(fn, names: str | tuple, /, *args, **kwargs) -> None:
    """For an ambiguous argument: either accepted or refused with a named ValueError/TypeError."""
    try:
        fn(*args, **kwargs)
    except (ValueError, TypeError) as err:
        names = (names,) if isinstance(names, str) else names
        assert any(n in str(err) for n in names), f"{err!r} does not name {names}"


def is_python_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def finite_real(v) -> bool:
    """A Python int or float (not a bool) that is a finite double."""
    if not is_python_real(v):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


# ----------------------------------------------------------------------------------------------------------------
# Numbers
# ----------------------------------------------------------------------------------------------------------------


@given(NAMES, st.integers(-5, 5), st.integers(0, 10), st.data())
def test_check_int(name, low, width, data):
    high = data.draw(st.one_of(st.none(), st.just(low + width)))
    ok = data.draw(st.integers(low, low + width if high is not None else low + 10**20))
    checks.check_int(name, ok, low, high)
    checks.check_int(name, np.int64(min(ok, 2**62)), low, high)
    bad = data.draw(
        st.one_of(
            st.integers(max_value=low - 1),
            st.integers(min_value=(high if high is not None else 10**30) + 1),
            st.floats(),  # floats are refused even when integral (2.0): an iteration count must be an int
            st.booleans(),
            NON_NUMBERS,
            st.integers(low, low + width).map(torch.tensor),
        )
    )
    if high is None and isinstance(bad, int) and not isinstance(bad, bool) and bad >= low:
        return  # an unbounded check accepts any large integer
    named_error(checks.check_int, name, name, bad, low, high)


@st.composite
def intervals(draw):
    """``(low, high, low_open, high_open)``: either end may be None."""
    low = draw(st.one_of(st.none(), st.floats(-100, 100)))
    high = draw(st.one_of(st.none(), st.floats(-100, 100).map(lambda h: h if low is None else low + abs(h) + 1)))
    return low, high, draw(st.booleans()), draw(st.booleans())


def inside(v: float, low, high, low_open, high_open) -> bool:
    return (low is None or (v > low if low_open else v >= low)) and (
        high is None or (v < high if high_open else v <= high)
    )


@given(NAMES, intervals(), st.data())
def test_check_real(name, interval, data):
    """Finite numbers inside the interval pass (Python, numpy or 0-d tensors); NaN, infinity, numbers outside,
    bools, strings, None, containers and complex numbers raise, naming ``name`` (integers beyond the double range:
    the next test)."""
    low, high, low_open, high_open = interval
    v = data.draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-1000, 1000)))
    if inside(float(v), *interval):
        for form in (v, np.float64(v), torch.tensor(float(v), dtype=torch.float64)):
            checks.check_real(name, form, low, high, low_open=low_open, high_open=high_open)
    else:
        named_error(checks.check_real, name, name, v, low, high, low_open=low_open, high_open=high_open)
    bad = data.draw(st.one_of(NAN_INF, st.booleans(), NON_NUMBERS, st.just(torch.tensor([1.0]))))
    named_error(checks.check_real, name, name, bad, low, high, low_open=low_open, high_open=high_open)


@given(NAMES, HUGE_INTS, intervals())
def test_integers_beyond_the_double_range(name, value, interval):
    """An integer too large for a double is not a finite number: a named error, not an OverflowError."""
    low, high, low_open, high_open = interval
    named_error(checks.check_real, name, name, value, low, high, low_open=low_open, high_open=high_open)
    for check in (checks.check_positive, checks.check_nonnegative, checks.check_unit):
        named_error(check, name, name, value)


NUMBERS = st.one_of(st.floats(), st.integers(-(10**6), 10**6), st.booleans(), NON_NUMBERS, AMBIGUOUS, NAN_INF)


@pytest.mark.parametrize(
    "check, valid",
    [
        (checks.check_positive, lambda v: finite_real(v) and v > 0),
        (checks.check_nonnegative, lambda v: finite_real(v) and v >= 0),
        (checks.check_unit, lambda v: finite_real(v) and 0 <= v <= 1),
    ],
    ids=["positive", "nonnegative", "unit"],
)
@given(name=NAMES, value=NUMBERS)
def test_number_shorthands(check, valid, name, value):
    """check_positive, check_nonnegative and check_unit: a Python number in their range passes, anything else raises
    a named error (numpy scalars and 0-d tensors may be accepted or refused)."""
    if valid(value):
        check(name, value)
    elif isinstance(value, (np.generic, torch.Tensor)) and getattr(value, "ndim", 0) == 0:
        accepted_or_named(check, name, name, value)
    else:
        named_error(check, name, name, value)


@example(value="0.5")  # accepted by float("0.5") (issue 18)
@example(value=None)  # float() raised a TypeError that did not name eta (issue 18)
@given(value=NUMBERS)
def test_check_eta(value):
    """η: a real number in [0, 1] (Python, numpy, or a 0-d tensor) passes; anything else raises naming ``eta``."""
    real = (finite_real(value) or isinstance(value, (np.floating, np.integer))) and not isinstance(value, np.bool_)
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        real = not value.dtype.is_complex and value.dtype != torch.bool
    if real and 0 <= float(value) <= 1:
        checks.check_eta(value)
    else:
        named_error(checks.check_eta, "eta", value)


# ----------------------------------------------------------------------------------------------------------------
# Choices, flags and objects
# ----------------------------------------------------------------------------------------------------------------

# numpy arrays are left out of ANYTHING: they are what test_check_choice_refuses_arrays_by_name draws
ANYTHING = st.one_of(NUMBERS, st.text(max_size=10), st.just(torch.zeros(2)), st.just([[]])).filter(
    lambda v: not isinstance(v, np.ndarray)
)


@given(NAMES, ANYTHING)
def test_check_bool(name, value):
    if isinstance(value, (bool, np.bool_)):
        checks.check_bool(name, value)
    else:
        named_error(checks.check_bool, name, name, value)


@given(NAMES, st.one_of(ANYTHING, st.sampled_from(SPACINGS)))
def test_check_choice(name, value):
    """A value among the choices passes; anything else — unhashable values, arrays and tensors included — raises
    naming ``name``."""
    if isinstance(value, str) and value in SPACINGS:
        checks.check_choice(name, value, SPACINGS)
    else:
        named_error(checks.check_choice, name, name, value, SPACINGS)


@given(NAMES, st.lists(st.integers(), min_size=2, max_size=4).map(np.array))
def test_check_choice_refuses_arrays_by_name(name, value):
    named_error(checks.check_choice, name, name, value, SPACINGS)


@given(NAMES, ANYTHING)
def test_check_callable_generator_device_dtype(name, value):
    """Objects of the wrong kind raise naming the argument: a non-callable model, a seed in place of a generator,
    a number or an unknown string in place of a device, anything but a torch dtype (or an integer dtype)."""
    named_error(checks.check_callable, name, name, value)
    if value is not None:
        named_error(checks.check_generator, name, value, name)
        named_error(checks.check_dtype, name, name, value)
    if not isinstance(value, str) and value is not None:
        named_error(checks.check_device, name, name, value)
    checks.check_callable(name, len)
    checks.check_generator(torch.Generator(), name)
    assert checks.check_dtype(name, torch.float16) is torch.float16
    named_error(checks.check_dtype, name, name, torch.int64)


@given(NAMES, st.text(max_size=12))
def test_check_device_strings(name, text):
    """A string is either a device torch parses (returned as a ``torch.device``) or a named ``ValueError``."""
    try:
        expected = torch.device(text)
    except Exception:
        named_error(checks.check_device, name, name, text)
    else:
        assert checks.check_device(name, text) == expected


# ----------------------------------------------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------------------------------------------

NOT_TENSORS = NUMBERS.filter(lambda v: not isinstance(v, torch.Tensor))
FLOAT_DTYPES = st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64])
OTHER_DTYPES = st.sampled_from([torch.uint8, torch.int8, torch.int32, torch.int64, torch.bool, torch.complex64])
SHAPES = st.lists(st.integers(0, 3), min_size=0, max_size=5).map(tuple)


@st.composite
def tensors(draw, dtypes=None, shapes=SHAPES):
    shape, dtype = draw(shapes), draw(st.one_of(FLOAT_DTYPES, OTHER_DTYPES) if dtypes is None else dtypes)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    return (x * 100).to(dtype)


def with_nonfinite(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[0] = value
    return x


@given(NAMES, tensors(), st.sampled_from([1, 2, 3, 4, (2, 4), (0, 1)]), st.data())
def test_tensor_checks(name, x, ndim, data):
    """check_tensor / check_rank / check_floating / check_finite agree with the tensor's rank, dtype and values, and
    refuse with the argument's name; non-tensors always raise."""
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if x.ndim in allowed:
        checks.check_rank(x, ndim, name)
    else:
        named_error(checks.check_rank, name, x, ndim, name)
    if x.is_floating_point():
        checks.check_floating(x, name)
        checks.check_finite(x, name)
        if x.numel():
            bad = with_nonfinite(x, data.draw(NAN_INF))
            named_error(checks.check_finite, name, bad, name)
            named_error(checks.check_tensor, name, bad, name, finite=True)
    else:
        err = named_error(checks.check_floating, name, x, name)
        if x.dtype in (torch.uint8, torch.int64):
            assert "from_uint8" in str(err)  # the message points to the conversion helper
    other = data.draw(st.one_of(NOT_TENSORS, st.just(np.zeros((2, 2)))))
    for check in (checks.check_tensor, checks.check_floating, checks.check_finite):
        named_error(check, name, other, name)
    named_error(checks.check_rank, name, other, 2, name)


@given(NAMES, tensors(dtypes=FLOAT_DTYPES), st.integers(0, 4), st.data())
def test_batch_and_shape_checks(name, x, n, data):
    if x.ndim and x.shape[0] == n:
        checks.check_batch(x, n, name)
    else:
        named_error(checks.check_batch, name, x, n, name)
    shape = data.draw(SHAPES)
    if tuple(x.shape) == shape:
        checks.check_shape(x, shape, name)
    else:
        named_error(checks.check_shape, name, x, shape, name)
    named_error(checks.check_shape, name, data.draw(NOT_TENSORS), shape, name)


@given(NAMES, tensors(dtypes=st.sampled_from([torch.float32, torch.float64, torch.uint8, torch.int64])), st.data())
def test_check_range(name, x, data):
    """Values inside [low, high] pass; a value outside, NaN or infinity raises naming the argument."""
    low = data.draw(st.floats(-300, 0))
    high = low + data.draw(st.floats(0, 600))
    if x.numel() == 0 or (float(x.min()) >= low and float(x.max()) <= high):
        checks.check_range(x, low, high, name)
    else:
        named_error(checks.check_range, name, x, low, high, name)
    if x.is_floating_point() and x.numel():
        named_error(checks.check_range, name, with_nonfinite(x, data.draw(NAN_INF)), low, high, name)


@given(NAMES, st.integers(1, 5), tensors(shapes=st.lists(st.integers(0, 4), max_size=2).map(tuple)), st.booleans())
def test_check_labels(name, num_classes, y, null):
    """Integer class indices in [0, K) (or [0, K] with the null label) pass; floats, bools, complex, out-of-range
    indices and a wrong batch shape raise naming the argument."""
    y = y if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool else y.abs() % (num_classes + 2)
    integer = not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)
    high = num_classes if null else num_classes - 1
    in_range = y.numel() == 0 or (integer and int(y.min()) >= 0 and int(y.max()) <= high)
    if integer and in_range:
        checks.check_labels(y, num_classes, name=name, null=null)
        if y.ndim == 1:
            checks.check_labels(y, num_classes, len(y), name=name, null=null)
            named_error(checks.check_labels, name, y, num_classes, len(y) + 1, name=name, null=null)
    else:
        named_error(checks.check_labels, name, y, num_classes, name=name, null=null)


@given(tensors(shapes=st.lists(st.integers(1, 3), min_size=3, max_size=5).map(tuple)), st.data())
def test_image_and_mask_checks(x, data):
    """check_image wants a float (N, C, H, W) batch; check_mask a 0/1 bool or float (1 or N, 1 or C, H, W) tensor;
    mask_for a mask that broadcasts over the image. Everything else raises naming ``x`` / ``mask``."""
    if x.ndim == 4 and x.is_floating_point():
        checks.check_image(x, "x")
    else:
        named_error(checks.check_image, "x", x, "x")
    binary = x.is_floating_point() and bool(((x == 0) | (x == 1)).all()) or x.dtype == torch.bool
    if x.ndim == 4 and binary:
        checks.check_mask(x, "mask")
    else:
        named_error(checks.check_mask, "mask", x, "mask")
    mask = data.draw(tensors(dtypes=st.sampled_from([torch.bool, torch.float32]),
                             shapes=st.tuples(*[st.integers(1, 3)] * 4))) > 0  # fmt: skip
    image = torch.zeros(data.draw(st.tuples(*[st.integers(1, 3)] * 4)))
    (n, c, h, w), (N, C, H, W) = mask.shape, image.shape
    if (h, w) == (H, W) and n in (1, N) and c in (1, C):
        out = checks.mask_for(mask, image)
        assert out.dtype == image.dtype and torch.equal(out.bool(), mask)
    else:
        named_error(checks.mask_for, "mask", mask, image)


# ----------------------------------------------------------------------------------------------------------------
# Public doors, end to end
# ----------------------------------------------------------------------------------------------------------------

GMM = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], 0.3)
SCHED = linear_schedule(20)
MODEL = ExactModel(GMM, schedule=SCHED)
X_T = torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
INTS = st.one_of(st.integers(-3, 25), st.integers(), st.floats(), st.booleans(), NON_NUMBERS, AMBIGUOUS)


def valid_int(v, low, high) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


@given(steps=INTS)
def test_ddim_and_ddpm_steps(steps):
    """``steps``: an int in [1, T] runs (DDPM: also None, all T steps); anything else (2.0, "10", True, 0, T + 1,
    NaN …) raises naming it."""
    for sampler in (ddim, ddpm):
        run = functools.partial(sampler, MODEL, X_T, SCHED, steps=steps, progress=False)
        if valid_int(steps, 1, SCHED.T) or (sampler is ddpm and steps is None):
            assert torch.isfinite(run()).all()
        elif isinstance(steps, (np.generic, torch.Tensor)):
            accepted_or_named(run, "steps")
        else:
            named_error(run, "steps")
    if not valid_int(steps, 1, SCHED.T) and not isinstance(steps, (np.generic, torch.Tensor)):
        named_error(ddim_timesteps, "steps", SCHED.T, steps)


@given(spacing=st.one_of(ANYTHING, st.sampled_from(SPACINGS)))
def test_ddim_spacing(spacing):
    run = lambda: ddim(MODEL, X_T, SCHED, steps=5, spacing=spacing, progress=False)  # noqa: E731
    if isinstance(spacing, str) and spacing in SPACINGS:
        run()
    else:
        named_error(run, "spacing")


@given(eta=NUMBERS)
def test_ddim_eta(eta):
    run = lambda: ddim(MODEL, X_T, SCHED, steps=3, eta=eta, generator=torch.Generator(), progress=False)  # noqa: E731
    if finite_real(eta) and 0 <= eta <= 1:
        run()
    elif isinstance(eta, (np.generic, torch.Tensor)) and getattr(eta, "ndim", 0) == 0:
        accepted_or_named(run, "eta")
    else:
        named_error(run, "eta")


# integers beyond the double range are left out: test_integers_beyond_the_double_range draws them
REALS = st.one_of(st.floats(), st.floats(0, 1), st.integers(-2, 2), st.booleans(), NON_NUMBERS, AMBIGUOUS)


@pytest.mark.parametrize(
    "build, names, valid",
    [
        (linear_schedule, ("beta_start", "beta_end"), lambda a, b: 0 < a < 1 and 0 < b < 1),
        (scaled_linear_schedule, ("beta_start", "beta_end"), lambda a, b: 0 < a < 1 and 0 < b < 1),
        (sigmoid_schedule, ("beta_start", "beta_end"), lambda a, b: 0 < a < 1 and 0 < b < 1),
        (cosine_schedule, ("s", "max_beta"), lambda s, m: 0 <= s and 0 < m < 1),
    ],
    ids=["linear", "scaled_linear", "sigmoid", "cosine"],
)
@given(T=st.one_of(st.integers(-3, 3000), INTS.filter(lambda v: not isinstance(v, int))), a=REALS, b=REALS)
def test_schedule_constructors(build, names, valid, T, a, b):
    """A schedule constructor with arbitrary T and parameters returns a schedule for valid arguments and otherwise
    raises naming a bad argument (``T`` for the step count)."""
    run = functools.partial(build, T, a, b)
    bad = [n for n, ok in (("T", valid_int(T, 1, 3000)), (names, finite_real(a) and finite_real(b) and valid(a, b)))
           if not ok]  # fmt: skip
    if build is scaled_linear_schedule and any(finite_real(v) and 1 - 1e-15 < v < 1 for v in (a, b)):
        return  # test_scaled_linear_schedule_next_to_one
    if isinstance(T, (np.generic, torch.Tensor)) or any(isinstance(v, (np.generic, torch.Tensor)) for v in (a, b)):
        accepted_or_named(run, ("T", *names))
    elif not bad:  # in range; still refused where float64 cannot represent the schedule (ᾱ underflowing to 0,
        try:  # 1 − β rounding to 1), with a message about the betas
            assert run().T == T
        except ValueError as err:
            assert any(n in str(err) for n in ("T", *names, "betas")), err
    else:
        named_error(run, tuple(n for group in bad for n in ((group,) if isinstance(group, str) else group)))


@example(T=1, beta=0.9999999999999999)
@given(T=st.integers(1, 5), beta=st.floats(1 - 1e-15, 1, exclude_min=True, exclude_max=True))
def test_scaled_linear_schedule_next_to_one(T, beta):
    """A β_start or β_end in (0, 1) within an ulp of 1 builds a schedule, or raises naming the argument."""
    for a, b in ((beta, 0.5), (0.5, beta)):
        accepted_or_named(scaled_linear_schedule, ("beta_start", "beta_end"), T, a, b)


@given(name=st.one_of(ANYTHING, st.sampled_from(["linear", "cosine", "scaled_linear", "sigmoid"])))
def test_make_schedule_name(name):
    if isinstance(name, str) and name in ("linear", "cosine", "scaled_linear", "sigmoid"):
        assert make_schedule(name, 10).T == 10
    else:
        named_error(make_schedule, "name", name, 10)


@example(std=1e-200)  # was all NaN: σ² underflowed, 0/0 at the centre (issue 18)
@example(std=1e200)
@given(std=st.one_of(st.floats(1e-320, 1e-150), st.floats(1e150, 1e308)))
def test_gaussian_kernel_of_extreme_width(std):
    """A finite std > 0 gives a finite kernel of sum 1 (a delta as std → 0, a box as std → ∞), or a named error."""
    try:
        k = gaussian_kernel(3, std, dtype=torch.float64)
    except (ValueError, TypeError) as err:
        assert "std" in str(err)
    else:
        assert bool(torch.isfinite(k).all()) and math.isclose(float(k.sum()), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize(
    "cls, names, valid",
    [
        (VPSDE, ("beta_min", "beta_max"), lambda a, b: 0 < a <= b),
        (SubVPSDE, ("beta_min", "beta_max"), lambda a, b: 0 < a <= b),
        (VESDE, ("sigma_min", "sigma_max"), lambda a, b: 0 < a < b),
    ],
    ids=["vp", "subvp", "ve"],
)
@given(a=st.one_of(REALS, st.floats(0, 100)), b=st.one_of(REALS, st.floats(0, 100)))
def test_sde_constructors(cls, names, valid, a, b):
    """An SDE with arbitrary parameters is built for finite valid ones, else a named error (VPSDE(beta_max=inf) was
    accepted, issue 18)."""
    run = lambda: cls(a, b)  # noqa: E731
    if any(isinstance(v, (np.generic, torch.Tensor)) for v in (a, b)):
        accepted_or_named(run, names)
    elif finite_real(a) and finite_real(b) and valid(a, b):
        run()
    else:
        named_error(run, names)


@given(v=REALS)
def test_noise_models(v):
    """Gaussian(sigma >= 0) and Poisson(rate > 0) with finite numbers; anything else is a named error."""
    for cls, name, valid in ((Gaussian, "sigma", lambda s: s >= 0), (Poisson, "rate", lambda r: r > 0)):
        if isinstance(v, (np.generic, torch.Tensor)):
            accepted_or_named(cls, name, v)
        elif finite_real(v) and valid(v):
            cls(v)
        else:
            named_error(cls, name, v)


@given(size=st.one_of(st.integers(-2, 9), INTS), std=REALS)
def test_gaussian_kernel(size, std):
    """gaussian_kernel(size, std): an odd positive size and a finite std > 0 give a normalised kernel; anything else
    raises naming ``size`` or ``std``."""
    run = functools.partial(gaussian_kernel, size, std, dtype=torch.float64)
    if finite_real(std) and not 1e-150 < abs(std) < 1e150:
        return  # test_gaussian_kernel_of_extreme_width
    if isinstance(size, (np.generic, torch.Tensor)) or isinstance(std, (np.generic, torch.Tensor)):
        accepted_or_named(run, ("size", "std"))
    elif valid_int(size, 1, 99) and size % 2 and finite_real(std) and std > 0:
        k = run()
        assert k.shape == (size, size) and math.isclose(float(k.sum()), 1.0, rel_tol=1e-12)
    elif not (isinstance(size, int) and not isinstance(size, bool) and size > 99):
        named_error(run, ("size", "std"))


@st.composite
def bad_pairs(draw):
    """``(x0, noise, culprit)``: a float ``(N, D)`` batch and a noise that is wrong — another shape (broadcastable
    ones such as ``(1, D)`` included, issue 18), or an integer dtype — or an integer ``x0``."""
    n, d = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    x0 = torch.randn(n, d, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))), dtype=torch.float64)
    kind = draw(st.sampled_from(["shape", "int_noise", "int_x0"]))
    if kind == "int_x0":
        return (x0 * 100).long(), torch.randn(n, d, dtype=torch.float64), "x0"
    if kind == "int_noise":
        return x0, (x0 * 100).to(draw(st.sampled_from([torch.int64, torch.uint8]))), "noise"
    shape = draw(
        st.sampled_from([(1, d), (d,), (n, d, 1), (n + 1, d), (n, d + 1), (1,), ()]).filter(lambda s: s != (n, d))
    )
    return x0, torch.randn(shape, dtype=torch.float64), "noise"


@given(bad_pairs())
def test_forward_processes_refuse_bad_tensors(pair):
    """Schedule.q_sample, VPSDE.q_sample, flow_path and target_velocity refuse an integer tensor and a noise of
    another shape (a (1, D) noise would be silently broadcast over the batch), naming ``x0`` or ``noise``."""
    x0, noise, culprit = pair
    named_error(linear_schedule(10).q_sample, culprit, x0, 3, noise)
    named_error(VPSDE().q_sample, culprit, x0, 0.5, noise)
    named_error(flow.flow_path, culprit, x0, noise, 0.5)
    named_error(flow.target_velocity, culprit, x0, noise)


@given(st.data())
def test_continuous_sampler_arguments(data):
    """The SDE and flow samplers: ``steps`` an int >= 1, ``t_min`` in (0, 1), ``snr`` > 0, ``corrector_steps`` an
    int >= 0; any other value is a named error before any work is done."""
    sde, model = VPSDE(), ExactModel(GMM, sde=VPSDE())
    x = torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
    arg = data.draw(st.sampled_from(["steps", "t_min", "snr", "corrector_steps"]))
    value = data.draw(st.one_of(INTS, REALS))
    kw = {"steps": 2, "t_min": 0.1, "snr": 0.1, "corrector_steps": 1, arg: value}
    valid = {
        "steps": valid_int(value, 1, 25),
        "t_min": finite_real(value) and 0 < value < 1,
        "snr": finite_real(value) and value > 0,
        "corrector_steps": valid_int(value, 0, 25),
    }[arg]
    run = functools.partial(predictor_corrector, model, x, sde, progress=False, generator=torch.Generator(), **kw)
    if arg == "t_min" and valid and value > 1 - 1e-12:
        return  # test_t_min_next_to_one
    if arg in ("t_min", "snr") and valid and isinstance(value, int) and value >= 2**63:
        return  # test_integer_snr_beyond_int64
    if valid:
        out = run()  # an absurd snr (1e19) makes the Langevin step overflow float32: no exception is all we ask
        assert arg == "snr" and value > 1e3 or bool(torch.isfinite(out).all())
    elif isinstance(value, (np.generic, torch.Tensor)):
        accepted_or_named(run, arg)
    elif not (arg in ("steps", "corrector_steps") and isinstance(value, int) and not isinstance(value, bool)
              and value > 25):  # fmt: skip
        named_error(run, arg)
    positive_int = isinstance(value, int) and not isinstance(value, bool) and value >= 1  # (never run: may be huge)
    if arg == "steps" and not positive_int and not isinstance(value, (np.generic, torch.Tensor)):
        flow_model = ExactModel(GMM, flow_sigma_min=0.0)
        named_error(flow.sample, "steps", flow_model, x, steps=value, progress=False)


@example(t_min=1 - 1e-16, steps=2)
@given(t_min=st.floats(1 - 1e-12, 1, exclude_max=True), steps=st.integers(1, 4))
def test_t_min_next_to_one(t_min, steps):
    """A t_min in (0, 1) so close to 1 that the grid's steps round to 0: a result, or an error naming t_min or
    steps — never one about an internal variable."""
    sde, model = VPSDE(), ExactModel(GMM, sde=VPSDE())
    x = torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
    accepted_or_named(predictor_corrector, ("t_min", "steps"), model, x, sde, steps=steps, t_min=t_min, progress=False)


@example(snr=2**64)
@given(snr=st.integers(2**63, 2**1000))
def test_integer_snr_beyond_int64(snr):
    """A finite snr given as a large Python int: a result, or a named error — not an OverflowError."""
    sde, model = VPSDE(), ExactModel(GMM, sde=VPSDE())
    x = torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
    accepted_or_named(predictor_corrector, "snr", model, x, sde, steps=2, snr=snr, progress=False)


@given(factor=st.one_of(st.integers(-2, 6), INTS))
def test_sr_operator_factors(factor):
    """BlockAverage and Bicubic take an integer factor >= 1; anything else is a named error at construction."""
    for cls in (BlockAverage, Bicubic):
        if isinstance(factor, (np.generic, torch.Tensor)):
            accepted_or_named(cls, "factor", factor)
        elif isinstance(factor, int) and not isinstance(factor, bool) and factor >= 1:
            assert cls(factor).factor == factor
        else:
            named_error(cls, "factor", factor)


@given(oversample=REALS)
def test_phase_retrieval_oversample(oversample):
    if isinstance(oversample, (np.generic, torch.Tensor)):
        accepted_or_named(PhaseRetrieval, "oversample", oversample)
    elif finite_real(oversample) and oversample >= 1:
        PhaseRetrieval(oversample)
    else:
        named_error(PhaseRetrieval, "oversample", oversample)
