"""Mask generators: box, random-pixel and free-form brush masks for inpainting (§3.2), Cartesian k-space
undersampling masks for MRI (§5).

Every mask is a float32 ``(1, 1, H, W)`` tensor of 0/1 (1 = observed) on ``device``; the random ones take a
``generator`` and draw on its device, so the same seed gives the same mask. Every generator raises ``ValueError``
for a size that is not a positive integer, a fraction outside [0, 1] (or NaN), a ``device`` torch cannot parse,
and ``TypeError`` for a ``generator`` that is not a ``torch.Generator``.
"""

from __future__ import annotations

import functools
import math

import torch

from ..checks import check_device, check_generator, check_real
from .operators import uniform_float

__all__ = ["box_mask", "brush_mask", "cartesian_mask", "random_mask"]


def _check_size(height, width, generator=None, device=None) -> None:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"mask {name} must be a positive integer, got {v!r}")
    check_generator(generator)
    check_device("device", device)


def _check_fraction(name: str, v) -> None:
    check_real(name, v, 0, 1)


def box_mask(height: int, width: int, fraction: float = 0.5, generator=None, device=None) -> torch.Tensor:
    """A box hole of ``round(fraction·H) × round(fraction·W)`` pixels (0 inside, 1 outside), centred, or at a
    uniformly random position when a ``generator`` is given; ``(1, 1, H, W)``. §3.2."""
    _check_size(height, width, generator, device)
    _check_fraction("box fraction", fraction)
    bh, bw = round(fraction * height), round(fraction * width)
    if generator is None:
        top, left = (height - bh) // 2, (width - bw) // 2
    else:
        top, left = int(uniform_float(generator) * (height - bh + 1)), int(uniform_float(generator) * (width - bw + 1))
    mask = torch.ones(1, 1, height, width, device=device)
    mask[..., top : top + bh, left : left + bw] = 0
    return mask


def random_mask(height: int, width: int, missing: float = 0.5, generator=None, device=None) -> torch.Tensor:
    """Exactly ``round(missing·H·W)`` pixels, chosen uniformly at random, are missing (0); ``(1, 1, H, W)``, the
    same for every channel. §3.2."""
    _check_size(height, width, generator, device)
    _check_fraction("missing fraction", missing)
    dev = generator.device if generator is not None else device
    order = torch.rand(height * width, generator=generator, device=dev).argsort()
    mask = torch.ones(height * width, device=dev)
    mask[order[: round(missing * height * width)]] = 0
    return mask.reshape(1, 1, height, width).to(device)


def _segment_distance(yy, xx, a, b) -> torch.Tensor:
    """Distance of every pixel centre ``(yy, xx)`` to the segment ``a → b``, ``(H, W)``."""
    (ay, ax), (by, bx) = a, b
    dy, dx = by - ay, bx - ax
    t = (((yy - ay) * dy + (xx - ax) * dx) / max(dy * dy + dx * dx, 1e-12)).clamp(0, 1)  # nearest point's position
    return torch.hypot(yy - ay - t * dy, xx - ax - t * dx)


def brush_mask(height: int, width: int, strokes: int = 4, generator=None, device=None) -> torch.Tensor:
    """A free-form brush-stroke hole, after DeepFill v2's procedural masks (Yu et al. 2019); ``(1, 1, H, W)``, 0 on
    the strokes. §3.2.

    Each stroke is a polyline of 4–11 segments from a uniform random start; each segment turns by up to ±90° and
    is 5–20 % of the shorter image side long (ends kept inside the image); the brush radius is 3–8 % of that side.
    """
    _check_size(height, width, generator, device)
    if isinstance(strokes, bool) or not isinstance(strokes, int) or strokes < 0:
        raise ValueError(f"strokes must be an integer >= 0, got {strokes!r}")
    u = functools.partial(uniform_float, generator)
    side = min(height, width)
    yy, xx = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    hole = torch.zeros(height, width, dtype=torch.bool)
    for _ in range(strokes):
        start, angle = (u() * height, u() * width), 2 * math.pi * u()
        radius, segments = side * (0.03 + 0.05 * u()), 4 + int(8 * u())
        for _ in range(segments):
            angle += (u() - 0.5) * math.pi
            length = side * (0.05 + 0.15 * u())
            end = (start[0] + length * math.sin(angle), start[1] + length * math.cos(angle))
            end = (min(max(end[0], 0.0), height), min(max(end[1], 0.0), width))
            hole |= _segment_distance(yy, xx, start, end) <= radius
            start = end
    return (~hole).float().reshape(1, 1, height, width).to(device)


def _partner(i: int, n: int) -> int:
    """The index of frequency −k for the index of frequency k in a centred (fftshift) spectrum of length n."""
    return (2 * (n // 2) - i) % n


def cartesian_mask(
    height: int, width: int, acceleration: float = 4.0, center_fraction: float = 0.08, generator=None, device=None
) -> torch.Tensor:
    """A Cartesian k-space undersampling mask for :class:`~diffu.inverse.fourier.MRI`: ``round(W / R)`` of the
    ``W`` phase-encoding columns are acquired (whole columns, every row), ``(1, 1, H, W)`` in centred (fftshift)
    layout; about ``center_fraction·W`` central columns are always kept (the fully sampled centre, as fastMRI's
    ``RandomMaskFunc``) and the rest are drawn uniformly at random. §5.

    The mask is Hermitian-symmetric (column ``k`` is kept iff ``−k`` is): a real image's k-space has
    ``X(−k) = conj X(k)``, so an asymmetric mask would see its symmetric closure anyway, and with a symmetric mask
    the zero-filled reconstruction ``Aᵀ y`` is exactly the pseudo-inverse.

    Raises:
        ValueError: ``acceleration`` is not a finite number >= 1, ``center_fraction`` not in [0, 1] (and the
            errors of every mask generator, see the module docstring).
    """
    _check_size(height, width, generator, device)
    _check_fraction("center_fraction", center_fraction)
    check_real("acceleration R", acceleration, 1)
    keep_total, c = round(width / acceleration), width // 2
    half = max(0, round((center_fraction * width - 1) / 2))
    keep = {(c + d) % width for d in range(-half, half + 1)}  # the centre band, symmetric about DC
    orbits = sorted({min(i, _partner(i, width)) for i in range(width) if i not in keep})
    dev = generator.device if generator is not None else "cpu"
    for j in torch.randperm(len(orbits), generator=generator, device=dev).tolist():
        pair = {orbits[j], _partner(orbits[j], width)}
        if len(keep) + len(pair) <= keep_total:
            keep |= pair
    mask = torch.zeros(1, 1, height, width, device=device)
    mask[..., sorted(keep)] = 1
    return mask
