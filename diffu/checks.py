"""The validation kernel: argument checks used at every public door of diffu (CONTRIBUTING.md, convention 8).

Every check raises ``ValueError`` (``TypeError`` where a new check is given the wrong kind of object, e.g. a list
for a generator) with a message that names the argument, says what was expected and shows what was given
(``"steps must be an integer in [1, 1000], got 0"``); none clamps or converts a bad value silently.
Checks return nothing, except :func:`mask_for` (which also casts the mask it has checked), :func:`check_device`
and :func:`check_dtype` (which return the parsed value).

Groups: numbers (:func:`check_int`, :func:`check_real` and its shorthands), choices and flags, tensors
(:func:`check_tensor` with its ``ndim``/``floating``/``finite`` options, :func:`check_rank`, :func:`check_floating`,
:func:`check_finite`, :func:`check_shape`, :func:`check_batch`, :func:`check_range`, :func:`check_labels`), images
and masks, and the objects every sampler takes (generator, device, dtype, callables).

Value-range checks (:func:`check_range`) belong only where the domain is bounded — images handed to a metric or to
``to_uint8`` — never on noisy states such as ``x_T``.

This module imports nothing from diffu, so every layer of the package can use it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "check_batch",
    "check_bool",
    "check_callable",
    "check_choice",
    "check_device",
    "check_dtype",
    "check_finite",
    "check_floating",
    "check_generator",
    "check_labels",
    "check_range",
    "check_rank",
    "check_real",
    "check_eta",
    "check_image",
    "check_int",
    "check_mask",
    "check_not_0_255",
    "check_nonnegative",
    "check_positive",
    "check_shape",
    "check_steps",
    "check_tensor",
    "check_unit",
    "mask_for",
]


# ----------------------------------------------------------------------------------------------------------------
# Numbers and choices
# ----------------------------------------------------------------------------------------------------------------


def check_int(name: str, value, low: int, high: int | None = None) -> None:
    """``value`` is an integer (not a bool) in ``[low, high]`` (``>= low`` when ``high`` is None).

    >>> check_int("iters", 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: iters must be an integer >= 1, got 0
    """
    bad = isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low
    if bad or (high is not None and value > high):
        rng = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {rng}, got {value!r}")


def check_steps(steps, T: int, name: str = "steps") -> None:
    """``steps`` is a number of sampling steps of a ``T``-step schedule: an integer in ``[1, T]``."""
    check_int(name, steps, 1, T)


def check_eta(eta, name: str = "eta") -> None:
    """DDIM's η (or any share of fresh noise) lies in [0, 1]; numbers and 0-d tensors are accepted."""
    if not _is_real(eta) or not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {eta!r:.60}")


def _is_real(value) -> bool:
    """A real scalar: a Python/numpy int or float (not a bool), or a 0-d real tensor."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.is_complex() and value.dtype != torch.bool
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))


def check_real(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``value`` is a finite real number (a Python or numpy number or a 0-d tensor, not a bool) in the interval
    from ``low`` to ``high`` (either may be None; ``low_open``/``high_open`` exclude the end point).

    >>> check_real("scale", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: scale must be a finite number, got nan
    """
    if not _is_real(value):
        raise TypeError(f"{name} must be a finite number, got {type(value).__name__} {value!r:.60}")
    v = _as_float(value)
    lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
    hi = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
    if low is not None and high is not None:
        want = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    else:
        want = f" {lo or hi}" if (lo or hi) else ""
    ok = math.isfinite(v)
    ok = ok and (low is None or (v > low if low_open else v >= low))
    ok = ok and (high is None or (v < high if high_open else v <= high))
    if not ok:
        raise ValueError(f"{name} must be a finite number{want}, got {v!r}")


def _as_float(value) -> float:
    """``float(value)``, with integers beyond the double range read as ±inf (not a finite number)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _is_python_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_unit(name: str, value) -> None:
    """``value`` is a Python number (not a bool) in [0, 1]."""
    if not _is_python_number(value) or not 0.0 <= _as_float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r:.60}")


def check_positive(name: str, value) -> None:
    """``value`` is a finite Python number (not a bool) > 0."""
    if not _is_python_number(value) or not (math.isfinite(_as_float(value)) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r:.60}")


def check_nonnegative(name: str, value) -> None:
    """``value`` is a finite Python number (not a bool) >= 0 (e.g. a noise level ``sigma_y``)."""
    if not _is_python_number(value) or not (math.isfinite(_as_float(value)) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r:.60}")


def check_bool(name: str, value) -> None:
    """``value`` is a bool (``True``/``False``, or a numpy bool), not a number or a string that looks like one."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r:.60}")


def check_choice(name: str, value, choices) -> None:
    """``value`` is one of ``choices`` (a tuple of strings such as ``SPACINGS``)."""
    try:
        ok = bool(value in choices)
    except (TypeError, ValueError):  # unhashable (a list tested against a set), or an array compared elementwise
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r:.80}")


def check_callable(name: str, value) -> None:
    """``value`` is callable (a model, a closure, a callback)."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def check_generator(generator, name: str = "generator") -> None:
    """``generator`` is None or a ``torch.Generator`` (pass ``torch.Generator().manual_seed(k)``, not the seed)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        hint = f" (for a seed, pass torch.Generator().manual_seed({generator}))" if isinstance(generator, int) else ""
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}{hint}")


def check_device(name: str, device) -> torch.device | None:
    """``device`` is None, a ``torch.device`` or a string torch parses (``"cpu"``, ``"cuda:0"``); returns it parsed."""
    if device is None or isinstance(device, torch.device):
        return device
    if isinstance(device, str):
        try:
            return torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"{name} must name a torch device such as 'cpu' or 'cuda', got {device!r}") from err
    raise TypeError(f"{name} must be a torch.device, a string or None, got {type(device).__name__}")


def check_dtype(name: str, dtype, *, floating: bool = True) -> torch.dtype | None:
    """``dtype`` is None or a ``torch.dtype`` (floating point unless ``floating=False``); returns it."""
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype such as torch.float32, got {type(dtype).__name__} {dtype!r}")
    if floating and not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point torch.dtype, got {dtype}")
    return dtype


# ----------------------------------------------------------------------------------------------------------------
# Tensors, images and masks
# ----------------------------------------------------------------------------------------------------------------


#: What to tell a user who passes an integer image (CONTRIBUTING.md, convention 1).
UINT8_HINT = "convert 0–255 images with diffu.data.from_uint8(x) (x / 127.5 - 1, to [-1, 1])"


def check_tensor(x, name: str = "x", *, ndim=None, floating: bool = False, finite: bool = False) -> None:
    """``x`` is a ``torch.Tensor``; optionally of rank ``ndim`` (an int or a tuple of ints), of a floating dtype
    (:func:`check_floating`) and without NaN or infinity (:func:`check_finite`)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
    if ndim is not None:
        check_rank(x, ndim, name)
    if floating:
        check_floating(x, name)
    if finite:
        check_finite(x, name)


def check_rank(x, ndim, name: str = "x", layout: str = "") -> None:
    """``x`` is a tensor with ``ndim`` dimensions (an int or a tuple of allowed ints); ``layout`` describes them in
    the message (``"(N, C, H, W)"``)."""
    check_tensor(x, name)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.ndim not in allowed:
        want = " or ".join(str(d) for d in allowed)
        shape = f" {layout}" if layout else ""
        raise ValueError(f"{name} must have {want} dimensions{shape}, got shape {tuple(x.shape)}")


def check_floating(x, name: str = "x") -> None:
    """``x`` is a floating-point tensor. An integer tensor (a 0–255 image, int64 labels in place of data) would be
    rounded or cast silently by the arithmetic that follows, so it is refused with a pointer to ``from_uint8``."""
    check_tensor(x, name)
    if not x.is_floating_point():
        hint = "" if x.is_complex() or x.dtype == torch.bool else f"; {UINT8_HINT}"
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}{hint}")


def check_finite(x, name: str = "x") -> None:
    """``x`` holds no NaN and no infinity (for data, measurements and anything a result would silently absorb)."""
    check_tensor(x, name)
    if x.is_floating_point() or x.is_complex():
        bad = ~torch.isfinite(x)
        if bad.any():
            raise ValueError(f"{name} must be finite, got {int(bad.sum())} NaN or infinite of {x.numel()} entries")


def check_batch(x, n: int, name: str = "x", of: str = "x's") -> None:
    """``x`` is a tensor whose first dimension is ``n`` (the batch size ``of`` another argument):
    ``"t must have batch size 8 (x's), got shape (3,)"``."""
    check_tensor(x, name)
    if x.ndim == 0 or x.shape[0] != n:
        raise ValueError(f"{name} must have batch size {n} ({of}), got shape {tuple(x.shape)}")


def check_range(x, low: float, high: float, name: str = "x", what: str = "") -> None:
    """Every value of ``x`` lies in ``[low, high]`` (only for bounded domains: images given to a metric or to
    ``to_uint8``, probabilities); ``what`` names the range (``"diffu's image range"``)."""
    check_finite(x, name)
    if x.numel() and (x.min() < low or x.max() > high):
        about = f" ({what})" if what else ""
        hint = f"; {UINT8_HINT}" if float(x.max()) > max(2.0, high) and high < 255 else ""
        raise ValueError(
            f"{name} must have values in [{low:g}, {high:g}]{about}, got values in [{float(x.min()):.4g}, "
            f"{float(x.max()):.4g}]{hint}"
        )


def check_not_0_255(x, name: str = "x", high: float = 2.0, what: str = "[-1, 1] images") -> None:
    """``x`` (a finite tensor) is not 0–255 data given as floats: a batch with no value below 0 and some above
    ``high`` is refused with the ``from_uint8`` hint.

    For functions that show or score images but must accept signed values far outside [-1, 1] (noisy states, an
    unclamped pseudo-inverse): such values straddle 0, while 0–255 data never goes below it. ``what`` says what
    ``x`` should be, in the message."""
    check_tensor(x, name)
    if not x.numel():
        return
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and hi > high:
        raise ValueError(
            f"{name} must be {what}, got values in [{lo:.4g}, {hi:.4g}] with none below 0 and some above {high:g}: "
            f"0–255 data; {UINT8_HINT}"
        )


def check_labels(y, num_classes: int, n: int | None = None, name: str = "y", *, null: bool = False) -> None:
    """``y`` is an integer tensor of class indices in ``[0, num_classes)`` (``[0, num_classes]`` when ``null``: the
    label-dropout "no class" index), of shape ``(n,)`` when ``n`` is given."""
    check_tensor(y, name)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of class indices, got {y.dtype}")
    if n is not None and tuple(y.shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one label per image), got {tuple(y.shape)}")
    high = num_classes if null else num_classes - 1
    if y.numel() and (y.min() < 0 or y.max() > high):
        raise ValueError(
            f"{name} must hold class indices in [0, {high}], got values in [{int(y.min())}, {int(y.max())}]"
        )


def check_shape(x, shape, name: str = "x", of: str = "") -> None:
    """``x`` is a tensor of exactly ``shape``; ``of`` names where the shape comes from (``"y's"`` gives
    ``"x_T must be a tensor of y's shape (2, 1, 28, 28), got (1, 1, 28, 28)"``)."""
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(shape):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else x
        whose = f"{of} shape" if of else "shape"
        raise ValueError(f"{name} must be a tensor of {whose} {tuple(shape)}, got {got!r:.80}")


def check_image(x, name: str = "x") -> None:
    """``x`` is a floating-point image batch ``(N, C, H, W)`` (CONTRIBUTING.md, convention 1)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float image batch of shape (N, C, H, W), got {got}")


def check_mask(mask, name: str = "mask") -> None:
    """``mask`` is a binary (0/1, bool or float) tensor of shape ``(1 or N, 1 or C, H, W)``, 1 = observed."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a tensor of shape (1 or N, 1 or C, H, W), got {got}")
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise ValueError(f"{name} dtype must be bool or floating point (values 0/1), got {mask.dtype}")
    if mask.numel() and ((mask != 0) & (mask != 1)).any():
        raise ValueError(f"{name} must be binary (0 or 1), got values in [{mask.min():.4g}, {mask.max():.4g}]")


def mask_for(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mask`` (already :func:`check_mask`-ed) checked to broadcast over the image batch ``x`` ``(N, C, H, W)``
    (same ``H, W``; batch and channel dims 1 or equal) and cast to ``x``'s dtype and device (convention 6)."""
    check_image(x)
    (n, c, h, w), (N, C, H, W) = mask.shape, x.shape
    if (h, w) != (H, W) or n not in (1, N) or c not in (1, C):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match image shape {tuple(x.shape)}")
    return mask.to(device=x.device, dtype=x.dtype)
