"""Fashion-MNIST items on textured backgrounds, with exact foreground masks (chapter §6, attention segmentation).

Dombrowski et al.'s foreground/background separation from attention (:mod:`diffu.segmentation.attention`) needs
images on which a global intensity threshold does **not** already find the object: on plain Fashion-MNIST, where
every item sits on a black background, Otsu's threshold recovers the item's support almost exactly (IoU ≈ 0.84 on
the test split), so any attention map would be judged against a solved problem. :func:`textured_fashion` pastes
each item onto a patch of a natural texture whose grey levels span the items' own range, so that the brightest
texture pixels are brighter than many item pixels and the darkest darker; Otsu's threshold then finds neither
(IoU ≈ 0.45 with "bright = object", ≈ 0.55 with the better of the two polarities per image, against ≈ 0.47 for
"everything is foreground"; :func:`foreground_masks` gives the masks of the plain images).

**The mask is exact by construction**: a pixel is foreground where the original item's intensity (on the [0, 1]
scale) exceeds ``threshold`` (0.05 by default, 13 of 255: Fashion-MNIST's backgrounds are 0 with faint scanning
noise up to about 10/255), and the composite takes the item's pixel there and the texture's elsewhere, so the mask
says exactly which pixels came from the item.

**Sources and licences.** Fashion-MNIST is © Zalando SE, MIT licence (``diffu/data/LICENSE-fashion-mnist.txt``;
the shipped subset of :func:`diffu.data.fashion_mnist`). The textures are photographs bundled in the scikit-image
wheel (read by ``skimage.data`` from the installed package, never downloaded; :data:`TEXTURES`):

* ``brick`` — a brick wall, from CC0Textures (Bricks25), Creative Commons CC0; perspective-corrected, rotated,
  cropped and scaled by scikit-image.
* ``grass`` — grass, from DeviantArt user linolafett ("Grass-01"), Creative Commons CC0; cropped and converted to
  grey by scikit-image.
* ``gravel`` — gravel, from CC0Textures (Gravel04), Creative Commons CC0; rescaled, cropped and converted to grey.
* ``camera`` — the "cameraman"-style photograph by Lav Varshney, CC0 (no copyright restrictions); not a texture
  (large smooth regions), offered for contrast.

Used in chapter §6 (interpretable segmentation).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_choice, check_finite, check_floating, check_int, check_range, check_rank, check_real
from . import fashion_mnist

__all__ = ["TEXTURES", "foreground_masks", "shifted_items", "textured_fashion"]

#: The scikit-image photographs :func:`textured_fashion` may cut backgrounds from (all bundled with the wheel,
#: 512 × 512 grey, CC0; sources in the module docstring).
TEXTURES = ("brick", "grass", "gravel", "camera")

_TEXTURE_CACHE: dict = {}


def _texture(name: str) -> torch.Tensor:
    """The bundled photograph ``name`` as a ``(512, 512)`` float32 tensor in [0, 1] (cached)."""
    if name not in _TEXTURE_CACHE:
        import skimage.data

        img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
        _TEXTURE_CACHE[name] = torch.from_numpy(img)
    return _TEXTURE_CACHE[name]


def foreground_masks(images: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """Foreground masks of plain Fashion-MNIST-like images: ``m = [(x + 1) / 2 > threshold]`` per pixel.

    On the black-background images of :func:`diffu.data.fashion_mnist` this is the item's support (the mask the
    controllability demos of chapter §6.1 condition on, and the mask :func:`textured_fashion` pastes by). It is a
    global threshold, so on images with a textured background it is no segmentation at all.

    Args:
        images: ``(N, 1, H, W)`` finite floating-point images in [-1, 1].
        threshold: the intensity on the [0, 1] scale above which a pixel is foreground, in [0, 1).

    Returns:
        ``(N, H, W)`` int64 label maps in {0, 1} (1 = foreground), on ``images``' device; ready for
        :func:`diffu.metrics.iou` with ``num_classes=2``.

    Raises:
        ValueError: ``images`` not a finite floating-point ``(N, 1, H, W)`` batch in [-1, 1], or ``threshold`` not a
            number in [0, 1).

    Used in chapter §6 (controllability demos, attention segmentation).
    """
    check_real("threshold", threshold, 0, 1, high_open=True)
    check_rank(images, 4, "images", "(N, 1, H, W)")
    check_floating(images, "images")
    if images.shape[1] != 1:
        raise ValueError(f"images must have one channel (N, 1, H, W), got shape {tuple(images.shape)}")
    check_finite(images, "images")
    check_range(images, -1.0, 1.0, "images", "diffu's image range")
    return ((images[:, 0] + 1) / 2 > float(threshold)).long()


def shifted_items(images: torch.Tensor, max_shift: int, *, seed: int = 0, threshold: float = 0.05):
    """Plain Fashion-MNIST-like images translated by a random whole number of pixels, with their foreground masks.

    Image ``i`` moves by ``(dy_i, dx_i)``, each uniform in ``[−max_shift, max_shift]`` (drawn from a CPU generator
    seeded with ``seed``); the pixels it uncovers are background, −1, and whatever leaves the frame is cut off. The
    masks are :func:`foreground_masks` of the shifted images, which is the shifted mask of the original exactly (the
    fill is background). The controllability demos of chapter §6.1 train and test their mask-conditioned models on
    such pairs: the shipped ``fmnist_unet`` only ever saw centred items, so a generated item that sits where a
    shifted mask asks must have followed the map, not the prior.

    Args:
        images: ``(N, 1, H, W)`` finite floating-point images in [-1, 1] with a background of −1.
        max_shift: the largest shift in pixels, an integer in ``[0, min(H, W))`` (0 returns the images unchanged).
        seed: seed of the shifts (an integer >= 0); the same arguments give the same shifts.
        threshold: the foreground threshold of :func:`foreground_masks`, in [0, 1).

    Returns:
        ``(shifted, masks)``: ``(N, 1, H, W)`` images of ``images``' dtype and device, and ``(N, H, W)`` int64 masks
        in {0, 1}.

    Raises:
        ValueError: ``images`` not a finite floating-point ``(N, 1, H, W)`` batch in [-1, 1], ``max_shift`` or
            ``seed`` out of range, a bad ``threshold``.

    Used in chapter §6.1 (``fmnist_mask_controlnet``, ``fmnist_mask_adapter``).
    """
    foreground_masks(images, threshold)  # checks images and threshold
    h, w = images.shape[-2:]
    check_int("max_shift", max_shift, 0, min(h, w) - 1)
    check_int("seed", seed, 0)
    g = torch.Generator().manual_seed(seed)
    shifts = torch.randint(-max_shift, max_shift + 1, (images.shape[0], 2), generator=g).tolist()
    s = max_shift
    padded = F.pad(images, (s, s, s, s), value=-1.0)
    out = torch.stack([padded[i, :, s - dy : s - dy + h, s - dx : s - dx + w] for i, (dy, dx) in enumerate(shifts)])
    return out, foreground_masks(out, threshold)


def textured_fashion(
    n: int,
    *,
    seed: int = 0,
    split: str = "test",
    size: int = 28,
    textures=("brick", "grass", "gravel"),
    contrast=(0.1, 0.9),
    threshold: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` Fashion-MNIST items pasted on textured backgrounds, with their exact foreground masks and labels.

    For image ``i``: an item drawn without replacement from the ``split`` (resized bilinearly to ``size`` when
    ``size != 28``) on the [0, 1] scale, ``v``; its mask ``m = [v > threshold]``; a square crop of one of
    ``textures`` (the texture, the crop's side — uniform in ``[size, min(4 size, 512)]`` source pixels — its
    position, a rotation by a multiple of 90° and a flip are drawn per image) area-averaged to ``size × size`` and
    stretched linearly so that its minimum and maximum become ``contrast = (lo, hi)``, ``b``; the composite
    ``x = m v + (1 − m) b``, mapped to [-1, 1]. Every random choice is drawn first from one CPU generator seeded with
    ``seed``, in a fixed order, so the same arguments give the same images.

    Why this is hard for a threshold: the default ``contrast`` (0.1, 0.9) covers most of the items' grey levels
    (bright garments, dark boots and bags, the faint edges of every item), so no single grey level separates item
    from texture (the module docstring gives Otsu's IoU).

    Args:
        n: number of images, an integer in ``[1, number of images in the split]`` (2 000 test, 20 000 train).
        seed: seed of the generator (an integer >= 0).
        split: "test" (default: the split the shipped models never trained on) or "train".
        size: output side in pixels (an integer >= 8).
        textures: a non-empty tuple (or list) of names from :data:`TEXTURES`, drawn uniformly per image.
        contrast: ``(lo, hi)`` with ``0 <= lo < hi <= 1``: the grey-level range of the background on the [0, 1]
            scale.
        threshold: the item intensity (on [0, 1]) above which a pixel belongs to the item, in [0, 1).

    Returns:
        images ``(n, 1, size, size)`` float32 in [-1, 1], masks ``(n, size, size)`` int64 in {0, 1} (1 = item), and
        the items' class labels ``(n,)`` int64 in [0, 9] (names in :data:`diffu.data.FMNIST_CLASSES`); CPU tensors.

    Raises:
        ValueError: ``n`` not an integer in range, ``seed`` < 0, an unknown ``split`` or texture name, ``size`` < 8,
            ``contrast`` not two numbers with ``0 <= lo < hi <= 1``, ``threshold`` outside [0, 1) (each named).
        TypeError: ``textures`` not a tuple or list of strings, ``contrast`` not a pair of numbers.

    Used in chapter §6 (interpretable segmentation from attention).
    """
    check_int("n", n, 1)
    check_int("seed", seed, 0)
    check_choice("split", split, ("train", "test"))
    check_int("size", size, 8)
    check_real("threshold", threshold, 0, 1, high_open=True)
    if isinstance(textures, str) or not isinstance(textures, (tuple, list)) or not textures:
        raise TypeError(f"textures must be a non-empty tuple of names from {TEXTURES}, got {textures!r:.80}")
    for name in textures:
        check_choice("textures", name, TEXTURES)
    if isinstance(contrast, (str, bytes)) or not isinstance(contrast, (tuple, list)) or len(contrast) != 2:
        raise TypeError(f"contrast must be a pair (lo, hi) of numbers in [0, 1], got {contrast!r:.80}")
    check_real("contrast[0]", contrast[0], 0, 1)
    check_real("contrast[1]", contrast[1], 0, 1)
    lo, hi = float(contrast[0]), float(contrast[1])
    if not lo < hi:
        raise ValueError(f"contrast must have lo < hi, got {contrast!r}")
    items, labels = fashion_mnist(split)
    check_int("n", n, 1, len(labels))

    # 1. every random choice first, in a fixed order
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(labels), generator=g)[:n]
    which = torch.randint(len(textures), (n,), generator=g)
    side_max = min(4 * size, 512)
    side = torch.randint(min(size, side_max), side_max + 1, (n,), generator=g)
    corner = torch.rand(n, 2, generator=g)  # where the crop starts, as a fraction of the free range
    turns = torch.randint(4, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5

    # 2. the items and their exact masks
    v = (items[idx] + 1) / 2  # (n, 1, 28, 28) on [0, 1]
    if size != v.shape[-1]:
        v = F.interpolate(v, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    mask = v[:, 0] > threshold  # (n, size, size)

    # 3. the backgrounds: a crop per image, area-averaged to size × size, stretched to [lo, hi]
    back = torch.empty(n, size, size)
    for i in range(n):
        tex = _texture(textures[int(which[i])])
        s = int(side[i])
        r0, c0 = (corner[i] * (tex.shape[0] - s + 1)).long().clamp(max=tex.shape[0] - s).tolist()
        crop = F.interpolate(tex[None, None, r0 : r0 + s, c0 : c0 + s], size=(size, size), mode="area")[0, 0]
        crop = torch.rot90(crop, int(turns[i]))
        if flip[i]:
            crop = crop.flip(-1)
        span = crop.max() - crop.min()
        crop = (crop - crop.min()) / span if span > 0 else torch.zeros_like(crop)
        back[i] = lo + (hi - lo) * crop

    # 4. the composite: the item where the mask is set, the texture elsewhere
    x = torch.where(mask, v[:, 0], back)
    return (2 * x - 1).unsqueeze(1).float(), mask.long(), labels[idx]
