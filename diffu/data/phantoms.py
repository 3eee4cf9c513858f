"""CT phantoms (chapter §5): random-ellipse training phantoms and the Shepp–Logan test phantom.

**Random ellipses** are the standard procedural training set of the learned-CT literature (e.g. Adler & Öktem's
learned primal–dual reconstruction): each phantom is a large "body" ellipse of attenuation ``body`` in which
``k ~ U{min_ellipses, max_ellipses}`` smaller ellipses of random centre, semi-axes, rotation and signed intensity
are added, and the result is clipped to [0, 1]. The intensities and sizes here are chosen so that the Shepp–Logan
phantom — the held-out test image, never a training image — looks like a member of the family (a bright rim,
low-contrast inner structures), not a copy of it.

**Shepp–Logan** comes from scikit-image's bundled ``shepp_logan_phantom()`` (a 400 × 400 image of the modified
phantom with values in [0, 1]), area-averaged to the requested size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..checks import check_int
from .mni import resize_square

__all__ = ["ellipse_mask", "ellipse_phantoms", "shepp_logan"]


def ellipse_mask(xx: torch.Tensor, yy: torch.Tensor, x0, y0, a, b, phi) -> torch.Tensor:
    """Indicator of rotated ellipses on a grid: ``((x − x0)cos φ + (y − y0)sin φ)² / a² + (−(x − x0)sin φ + (y −
    y0)cos φ)² / b² ≤ 1``.

    Args:
        xx, yy: ``(H, W)`` coordinates of the grid points (e.g. from ``torch.meshgrid``).
        x0, y0, a, b, phi: tensors of one shape ``S`` (broadcastable to each other): centres, the semi-axis ``a``
            along the direction ``phi`` (radians, counter-clockwise from the x axis) and ``b`` across it (> 0).

    Returns:
        A bool tensor ``(*S, H, W)``: True inside (and on) each ellipse.

    Raises:
        ValueError: ``xx``/``yy`` not two tensors of one 2-D shape, parameters that do not broadcast.

    Used by :func:`ellipse_phantoms` and :func:`diffu.data.cardiac.cardiac_phantoms` (chapters §5, §6).
    """
    if not (isinstance(xx, torch.Tensor) and isinstance(yy, torch.Tensor)) or xx.ndim != 2 or xx.shape != yy.shape:
        raise ValueError(f"xx and yy must be two (H, W) tensors of one shape, got {getattr(xx, 'shape', xx)!s:.40} "
                         f"and {getattr(yy, 'shape', yy)!s:.40}")  # fmt: skip
    try:
        x0, y0, a, b, phi = (
            v[..., None, None] for v in torch.broadcast_tensors(*map(torch.as_tensor, (x0, y0, a, b, phi)))
        )
    except RuntimeError as e:
        raise ValueError(f"x0, y0, a, b, phi must broadcast to one shape: {e}") from None
    cos, sin = phi.cos(), phi.sin()
    dx, dy = xx - x0, yy - y0
    p, q = (dx * cos + dy * sin) / a, (-dx * sin + dy * cos) / b
    return p * p + q * q <= 1


def ellipse_phantoms(
    n: int,
    size: int = 32,
    *,
    seed: int = 0,
    min_ellipses: int = 3,
    max_ellipses: int = 10,
    oversample: int = 2,
) -> torch.Tensor:
    """``n`` random-ellipse CT phantoms, (n, 1, size, size) in [-1, 1] (attenuation 0 ↦ −1, 1 ↦ 1).

    Each has a body ellipse (semi-axes 0.70–0.92 of the half-width) with a dense rim (attenuation 0.8–1, the outer
    7 %) around soft tissue (0.15–0.8), and ``U{min_ellipses, max_ellipses}`` inner ellipses (semi-axes 0.04–0.35,
    any rotation, intensity ±0.05–0.4, inside the body), drawn at ``oversample`` × the resolution and area-averaged
    down (partial-volume edges). The same ``seed`` gives the same phantoms.

    Raises:
        ValueError: ``n`` < 1, ``size`` < 4, ``seed`` or ``min_ellipses`` < 0, ``min_ellipses`` > ``max_ellipses``,
            ``oversample`` outside [1, 8].
    """
    check_int("n", n, 1)
    check_int("size", size, 4)
    check_int("seed", seed, 0)
    check_int("min_ellipses", min_ellipses, 0)
    check_int("max_ellipses", max_ellipses, min_ellipses)
    check_int("oversample", oversample, 1, 8)
    g = torch.Generator().manual_seed(seed)
    big = size * oversample
    c = (torch.arange(big, dtype=torch.float32) + 0.5) / big * 2 - 1
    yy, xx = torch.meshgrid(-c, c, indexing="ij")  # rows top → bottom: y from +1 to −1

    def u(*shape, lo=0.0, hi=1.0):
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    def ellipse(x0, y0, a, b, phi):  # (n, E) parameters -> (n, E, big, big) indicator
        return ellipse_mask(xx, yy, x0, y0, a, b, phi).float()

    # 1. every random parameter first (so the phantoms do not depend on how they are rendered in chunks)
    ba, bb = u(n, 1, lo=0.70, hi=0.92), u(n, 1, lo=0.70, hi=0.92)  # body semi-axes
    bphi = u(n, 1, lo=-0.3, hi=0.3)
    rim_level, tissue_level = u(n, 1, 1, lo=0.8, hi=1.0), u(n, 1, 1, lo=0.15, hi=0.8)
    E = max_ellipses
    k = torch.randint(min_ellipses, max_ellipses + 1, (n, 1), generator=g)
    active = (torch.arange(E)[None] < k).float()
    a, b = u(n, E, lo=0.04, hi=0.35), u(n, E, lo=0.04, hi=0.35)
    # inner ellipses inside the inner body: centre radius ≤ 0.85 − the larger semi-axis (in body units)
    r = (0.85 - torch.maximum(a, b)).clamp_min(0) * u(n, E).sqrt()
    ang = u(n, E, lo=0, hi=2 * math.pi)
    x0, y0 = r * ang.cos() * ba, r * ang.sin() * bb
    sign = torch.where(u(n, E) < 0.5, -1.0, 1.0)
    val = sign * u(n, E, lo=0.05, hi=0.4) * active
    phi = u(n, E, lo=0, hi=math.pi)
    out = []
    for i in range(0, n, 256):  # 2. render 256 phantoms at a time (memory: 256·E·big² values)
        j = slice(i, i + 256)
        zero = torch.zeros_like(ba[j])
        body = ellipse(zero, zero, ba[j], bb[j], bphi[j])[:, 0]
        inner = ellipse(zero, zero, ba[j] * 0.93, bb[j] * 0.93, bphi[j])[:, 0]  # the rim is the outer 7 %
        img = body * rim_level[j] * (1 - inner) + inner * tissue_level[j]
        img = img + (ellipse(x0[j], y0[j], a[j], b[j], phi[j]) * val[j, :, None, None]).sum(1) * inner
        out.append(F.avg_pool2d(img.clamp(0, 1)[:, None], oversample))
    return torch.cat(out) * 2 - 1


def shepp_logan(size: int = 32) -> torch.Tensor:
    """scikit-image's modified Shepp–Logan phantom, area-averaged to (1, 1, size, size), in [-1, 1]."""
    check_int("size", size, 4)
    from skimage.data import shepp_logan_phantom

    x = torch.from_numpy(shepp_logan_phantom()).float()[None, None]  # (1, 1, 400, 400) in [0, 1]
    x = resize_square(x, size)
    return x.clamp(0, 1) * 2 - 1
