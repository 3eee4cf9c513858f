"""Argument checks shared by the samplers, solvers and operators of diffu (CONTRIBUTING.md, convention 8).

Every check raises ``ValueError`` with a message that names the argument, says what was expected and shows what
was given (``"steps must be an integer in [1, 1000], got 0"``); none clamps or converts a bad value silently.
Checks return nothing, except :func:`mask_for`, which also casts the mask it has checked.

This module imports nothing from diffu, so every layer of the package can use it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "check_choice",
    "check_eta",
    "check_image",
    "check_int",
    "check_mask",
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
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {eta}")


def check_unit(name: str, value) -> None:
    """``value`` is a Python number (not a bool) in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def check_positive(name: str, value) -> None:
    """``value`` is a finite Python number (not a bool) > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_nonnegative(name: str, value) -> None:
    """``value`` is a finite Python number (not a bool) >= 0 (e.g. a noise level ``sigma_y``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_choice(name: str, value, choices) -> None:
    """``value`` is one of ``choices`` (a tuple of strings such as ``SPACINGS``)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


# ----------------------------------------------------------------------------------------------------------------
# Tensors, images and masks
# ----------------------------------------------------------------------------------------------------------------


def check_tensor(x, name: str = "x") -> None:
    """``x`` is a ``torch.Tensor``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")


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
