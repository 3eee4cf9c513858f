"""Real brain anatomy, offline: the MNI ICBM152 2009c template as 2D slices and 3D blocks (chapter §5).

The template's T1-weighted image and its grey- and white-matter probability maps ship inside the ``nilearn`` wheel
(``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``); they are read with ``nibabel``
and nothing is downloaded. Facts the loaders are designed around:

- the T1 is skull-stripped and stored as 8 bits (0…255), 197 × 233 × 189 voxels of 1 mm; the brain occupies
  x 26…170, y 27…207 and the axial slices z 0…154 (the 155 non-empty ones); neighbouring axial slices differ by
  about 5.5 % at 1 mm and about 4 % at the priors' 32 × 32 (mean absolute difference over mean intensity, measured
  on chapter §5.1.1's page);
- the template is exactly left–right symmetric in the file (its 32 × 32 slices to float rounding, ~1e-6, from the
  resize), so a left–right flip is no augmentation (and a mirror difference is an anomaly detector that is exact on
  this template: chapter §5.1.4 uses it as a baseline);
- there is no CSF map: the CSF fraction is what the brain mask (T1 > 0) leaves after grey and white matter,
  ``csf = clip(1 − gm − wm, 0, 1)`` inside the mask (about 8 % of brain voxels have gm + wm < 0.5);
- it is one subject (an average of 152), so a prior trained on its slices can only memorise unless the slices are
  augmented: :func:`augment` deforms them elastically (which also breaks the symmetry), and changes contrast (gamma)
  and bias field; chapter §5 measures memorisation against a held-out band.

**Held-out band.** Axial slices ``HELD_OUT = (72, 96)`` (24 mm through the lateral ventricles and basal ganglia) are
the test set of every §5 reconstruction, translation and anomaly number, and ``GUARD = 4`` slices on either side of
them are excluded from training too (neighbours differ by only ~4–6 %). ``split="train"`` gives the other slices,
``split="test"`` the band. Coronal and sagittal slices cross the band; models are trained on axial slices only.

**Tissue labels** (:data:`TISSUES`): 0 background, 1 CSF, 2 grey matter, 3 white matter: the tissue with the largest
fraction in a pixel, after the fractions are area-averaged to the slice's resolution.

**Synthetic T2.** The second modality of §5.2 is T2-weighted by construction, a partial-volume mix of tissue
intensities with T2 ordering (CSF bright, grey > white): ``t2 = 1.0·csf + 0.55·gm + 0.30·wm`` (signal in [0, 1];
the proportions follow typical T2 spin-echo contrast, not a physical simulation). It is therefore an exact function of
the tissue fractions, so a per-tissue intensity mapping is a strong baseline for T1 → T2 translation, and the text
says so.

Licence: the MNI ICBM152 template is © 1993–2009 Louis Collins, McConnell Brain Imaging Centre, Montreal
Neurological Institute, McGill University; redistributed under its permissive licence, whose text is
:data:`MNI_LICENSE` (also in the book's data notices). **Nothing here is for clinical use.**
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_choice, check_finite, check_int, check_range, check_real, check_tensor

__all__ = [
    "GUARD",
    "HELD_OUT",
    "MNI_LICENSE",
    "T2_CONTRAST",
    "TISSUES",
    "augment",
    "augmented_slices",
    "mni_files",
    "mni_slices",
    "mni_template",
    "mni_volume",
    "resize_square",
    "synthetic_t2",
    "tissue_fractions",
]

#: The held-out band of axial slices ``[start, stop)`` (template z indices); no §5 model trains on them.
HELD_OUT = (72, 96)
#: Slices on either side of :data:`HELD_OUT` that are excluded from training as well.
GUARD = 4
#: Tissue label names, indexed by label.
TISSUES = ("background", "CSF", "grey matter", "white matter")
#: T2-weighted intensity of each tissue in :func:`synthetic_t2` (CSF, GM, WM).
T2_CONTRAST = (1.0, 0.55, 0.30)

#: The licence of the MNI ICBM152 template, as distributed with it (kept with every copy).
MNI_LICENSE = (
    "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill "
    "University. Permission to use, copy, modify, and distribute this software and its documentation for any purpose "
    "and without fee is hereby granted, provided that the above copyright notice appear in all copies. The authors "
    "and McGill University make no representations about the suitability of this software for any purpose. It is "
    "provided 'as is' without express or implied warranty. The authors are not responsible for any data loss, "
    "equipment damage, property loss, or injury to subjects or patients resulting from the use or misuse of this "
    "software package."
)

_NAME = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
_PLANES = ("axial", "coronal", "sagittal")
_SPLITS = ("train", "test", "all")
_MODALITIES = ("t1", "t2", "labels", "fractions")
# the brain's bounding box in the template (x, y; axial z 0…154); in-plane slices are cropped to a square around it
_X, _Y, _Z = (26, 171), (27, 208), (0, 155)


def mni_files() -> dict[str, str]:
    """Paths of the three template files inside the installed ``nilearn`` wheel: ``{"t1", "gm", "wm"}``.

    Raises:
        ImportError: nilearn is not installed (it is in requirements.txt), with the fix.
        FileNotFoundError: this nilearn release does not ship the files.
    """
    try:
        import nilearn
    except ImportError as e:  # pragma: no cover - nilearn is a requirement
        raise ImportError("the MNI template ships inside the nilearn wheel: pip install -r requirements.txt") from e
    folder = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data")
    paths = {k: os.path.join(folder, _NAME.format(k)) for k in ("t1", "gm", "wm")}
    for p in paths.values():
        if not os.path.exists(p):
            raise FileNotFoundError(f"nilearn {nilearn.__version__} does not ship {p}: install the pinned release")
    return paths


@functools.lru_cache(maxsize=1)
def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import nibabel as nib

    p = mni_files()
    t1, gm, wm = (np.asarray(nib.load(p[k]).dataobj, dtype=np.float32) / 255.0 for k in ("t1", "gm", "wm"))
    t1 = t1[slice(*_X), slice(*_Y), slice(*_Z)]
    gm = gm[slice(*_X), slice(*_Y), slice(*_Z)]
    wm = wm[slice(*_X), slice(*_Y), slice(*_Z)]
    # pad x (145) to y's 181 so that axial slices are square; the brain stays centred
    pad = (_Y[1] - _Y[0]) - (_X[1] - _X[0])
    widths = ((pad // 2, pad - pad // 2), (0, 0), (0, 0))
    t1, gm, wm = (np.pad(a, widths) for a in (t1, gm, wm))
    for a in (t1, gm, wm):
        a.setflags(write=False)
    return t1, gm, wm


@functools.lru_cache(maxsize=1)
def _template_dict() -> dict[str, np.ndarray]:
    t1, gm, wm = _template()
    mask = (t1 > 0).astype(np.float32)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * mask
    out = {"t1": t1, "gm": gm * mask, "wm": wm * mask, "csf": csf, "mask": mask}
    for a in out.values():
        a.setflags(write=False)
    return out


def mni_template() -> dict[str, np.ndarray]:
    """The template at 1 mm, cropped to the brain and padded to a square axial plane: ``{"t1", "gm", "wm", "csf",
    "mask"}``, float32 arrays of shape (181, 181, 155) indexed ``[x, y, z]`` (x left → right, y posterior → anterior,
    z inferior → superior), values in [0, 1] (``mask`` is the brain mask T1 > 0 as 0/1). Read-only (cached)."""
    return dict(_template_dict())


@functools.lru_cache(maxsize=1)
def tissue_fractions() -> np.ndarray:
    """The four tissue fractions (background, CSF, GM, WM) of the template, shape (4, 181, 181, 155), summing to 1
    in every voxel (GM and WM are renormalised where their sum exceeds the mask). Read-only (cached)."""
    tpl = _template_dict()
    gm, wm, csf, mask = tpl["gm"], tpl["wm"], tpl["csf"], tpl["mask"]
    tissue = gm + wm + csf
    scale = np.where(tissue > 1e-6, mask / np.maximum(tissue, 1e-6), 0.0)
    out = np.stack([1.0 - mask, csf * scale, gm * scale, wm * scale]).astype(np.float32)
    out.setflags(write=False)
    return out


def synthetic_t2(fractions: torch.Tensor) -> torch.Tensor:
    """The synthetic T2-weighted signal in [0, 1] from tissue fractions (..., 4, H, W) [background, CSF, GM, WM]:
    ``1.0·csf + 0.55·gm + 0.30·wm`` (:data:`T2_CONTRAST`), shape (..., 1, H, W).

    Raises:
        ValueError: ``fractions`` not a finite floating-point tensor of shape (..., 4, H, W).
    """
    check_tensor(fractions, "fractions", floating=True, finite=True)
    if fractions.ndim < 3 or fractions.shape[-3] != 4:
        raise ValueError(f"fractions must have shape (..., 4, H, W), got {tuple(fractions.shape)}")
    w = torch.tensor((0.0,) + T2_CONTRAST, dtype=fractions.dtype, device=fractions.device)
    return (fractions * w.view(4, 1, 1)).sum(-3, keepdim=True)


def _planes(plane: str) -> tuple[int, range]:
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
    n = _template()[0].shape[axis]
    return axis, range(n)


def _indices(plane: str, split: str) -> list[int]:
    axis, idx = _planes(plane)
    if plane != "axial" and split != "all":
        raise ValueError(f"split={split!r} is defined for axial slices only (coronal and sagittal slices cross the "
                         f"held-out band): use plane='axial' or split='all'")  # fmt: skip
    lo, hi = HELD_OUT
    if split == "test":
        return list(range(lo, hi))
    if split == "train":
        return [i for i in idx if i < lo - GUARD or i >= hi + GUARD]
    return list(idx)


def resize_square(a: torch.Tensor, size: int) -> torch.Tensor:
    """Square images (N, C, S, S) → (N, C, size, size) by averaging: exact area averaging when ``size`` divides
    ``S``, antialiased bilinear otherwise (the slices, phantoms and scans of chapter §5 all go through it). NaN and
    infinity propagate (an average of them).

    Raises:
        ValueError: ``a`` is not a floating-point (N, C, S, S) tensor, ``size`` not an integer >= 1.
    """
    check_tensor(a, "a", ndim=4, floating=True)
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"a must hold square images (N, C, S, S), got shape {tuple(a.shape)}")
    check_int("size", size, 1)
    if a.shape[-1] % size == 0:
        return F.interpolate(a, size=(size, size), mode="area")
    return F.interpolate(a, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _slices_fractions(plane: str, idx: list[int], size: int) -> torch.Tensor:
    """(N, 4, size, size) tissue fractions and (N, 1, size, size) T1 of the given slices, resized."""
    fr = tissue_fractions()  # (4, X, Y, Z)
    t1 = _template_dict()["t1"][None]
    axis = {"axial": 3, "coronal": 2, "sagittal": 1}[plane]
    # the slices first, then the five maps stacked (stacking the whole template first copies 100 MB per call)
    both = np.concatenate([np.take(fr, idx, axis=axis), np.take(t1, idx, axis=axis)])  # (5, …, N, …)
    sl = np.moveaxis(both, axis, 0)  # (N, 5, A, B)
    if plane != "axial":  # coronal (x, z) and sagittal (y, z): pad z to a square, inferior at the bottom
        a, b = sl.shape[-2:]
        side = max(a, b)
        pad_a, pad_b = side - a, side - b
        sl = np.pad(sl, ((0, 0), (0, 0), (pad_a // 2, pad_a - pad_a // 2), (pad_b // 2, pad_b - pad_b // 2)))
        sl[:, 0][np.sum(sl[:, 1:4], axis=1) == 0] = 1.0  # padding is background
    # image rows = anterior → posterior for axial (radiological display: rows y reversed), columns = x
    sl = np.flip(np.swapaxes(sl, -1, -2), axis=-2).copy()
    t = torch.from_numpy(sl)
    return resize_square(t, size)


def mni_slices(
    plane: str = "axial",
    size: int = 32,
    *,
    modality: str = "t1",
    split: str = "train",
) -> torch.Tensor:
    """Slices of the MNI template, resized to ``size`` × ``size`` by area averaging.

    Args:
        plane: ``"axial"`` (default), ``"coronal"`` or ``"sagittal"``.
        size: output side in pixels (e.g. 32 on the CPU, 64 on a GPU).
        modality: ``"t1"`` (the template), ``"t2"`` (:func:`synthetic_t2`) — both (N, 1, size, size) in [-1, 1] —
            ``"labels"`` (N, size, size) int64 in {0, 1, 2, 3} (:data:`TISSUES`), or ``"fractions"``
            (N, 4, size, size) in [0, 1].
        split: ``"train"`` (axial slices outside :data:`HELD_OUT` and its :data:`GUARD`), ``"test"`` (the band, in
            order of z) or ``"all"`` (in order; the only choice for coronal and sagittal slices).

    Raises:
        ValueError: an unknown plane, modality or split, a split other than ``"all"`` off the axial plane, a bad size.
    """
    check_choice("plane", plane, _PLANES)
    check_int("size", size, 4)
    check_choice("modality", modality, _MODALITIES)
    check_choice("split", split, _SPLITS)
    both = _slices_fractions(plane, _indices(plane, split), size)
    return _modality(both, modality)


def _modality(both: torch.Tensor, modality: str) -> torch.Tensor:
    fr, t1 = both[:, :4], both[:, 4:5]
    if modality == "t1":
        return t1 * 2 - 1
    if modality == "t2":
        return synthetic_t2(fr) * 2 - 1
    if modality == "labels":
        return fr.argmax(1)
    return fr


def mni_volume(size: int = 32, *, modality: str = "t1", z_range: tuple[int, int] = HELD_OUT, z_step: int = 1):
    """A 3D block of axial slices ``z_range[0] : z_range[1] : z_step`` (default: the held-out band at 1 mm) as
    (1, 1, D, size, size) in [-1, 1] for ``"t1"``/``"t2"`` ((1, D, size, size) labels, (1, 4, D, size, size)
    fractions), depth first so that ``volume[0, :, z]`` is slice z."""
    check_int("size", size, 4)
    check_choice("modality", modality, _MODALITIES)
    check_int("z_step", z_step, 1)
    ints = isinstance(z_range, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in z_range)
    if not ints or len(z_range) != 2 or not 0 <= z_range[0] < z_range[1] <= _Z[1]:
        raise ValueError(f"z_range must be a tuple (start, stop) with 0 <= start < stop <= {_Z[1]}, got {z_range!r}")
    idx = list(range(z_range[0], z_range[1], z_step))
    out = _modality(_slices_fractions("axial", idx, size), modality)  # (D, C, H, W) or (D, H, W)
    return out.unsqueeze(0) if modality == "labels" else out.transpose(0, 1).unsqueeze(0)


# ----------------------------------------------------------------------------------------------------------------
# augmentation: elastic deformation, contrast (gamma) and bias field
# ----------------------------------------------------------------------------------------------------------------


def _smooth_field(n: int, size: int, coarse: int, g: torch.Generator) -> torch.Tensor:
    """(n, 2, size, size) smooth random field: Gaussian noise on a coarse grid, bicubically upsampled."""
    return F.interpolate(torch.randn(n, 2, coarse, coarse, generator=g), size=(size, size), mode="bicubic",
                         align_corners=True)  # fmt: skip


def augment(
    fractions: torch.Tensor,
    t1: torch.Tensor,
    n: int,
    *,
    seed: int = 0,
    elastic: float = 0.06,
    rotate: float = 8.0,
    scale: float = 0.08,
    shift: float = 0.04,
    gamma: float = 0.25,
    bias: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` augmented copies of random slices: one smooth deformation per copy (a random affine map — rotation
    within ±``rotate`` degrees, isotropic scale within ±``scale``, and a different scale per axis that breaks the
    left–right symmetry — composed with an elastic displacement of standard deviation ``elastic`` of the image
    half-width on a 4×4 control grid, and a shift within ±``shift`` of the half-width) applied to the tissue
    fractions and the T1 alike; then, on the T1 only, a contrast change ``t1 ← t1^γ`` with
    ``log γ ~ U(−gamma, gamma)`` and a multiplicative bias field ``exp(b(x, y))``, ``b`` a random plane plus a smooth
    bump of amplitude ``bias``. With every knob at 0 it only picks slices.

    Args:
        fractions: (N, 4, H, W) tissue fractions (:func:`mni_slices` with ``modality="fractions"``).
        t1: (N, 1, H, W) T1 slices in [-1, 1], the same slices.
        n: number of copies; seed: their seed (the same seed gives the same copies).

    Returns:
        ``(fractions, t1)``: (n, 4, H, W) fractions (still summing to 1) and (n, 1, H, W) T1 in [-1, 1]. Derive
        labels with ``fractions.argmax(1)`` and T2 with :func:`synthetic_t2` (the T2 has no bias field of its own).

    Raises:
        ValueError: ``fractions`` not finite floats in [0, 1] summing to 1 over the 4 tissues in every pixel (within
            1e-3), ``t1`` not finite floats in [-1, 1], shapes that do not match, ``n`` < 1, ``seed`` < 0, a knob
            outside [0, its bound] (``elastic``, ``scale``, ``shift`` ≤ 0.5; ``rotate`` ≤ 45; ``gamma``, ``bias``
            ≤ 1).
    """
    check_tensor(fractions, "fractions", ndim=4, floating=True)
    check_tensor(t1, "t1", ndim=4, floating=True)
    check_finite(fractions, "fractions")
    check_range(t1, -1.0, 1.0, "t1", "diffu's image range")
    if fractions.shape[1] != 4 or t1.shape[1] != 1 or fractions.shape[0] != t1.shape[0] or (
            fractions.shape[2:] != t1.shape[2:]):  # fmt: skip
        raise ValueError(f"fractions (N, 4, H, W) and t1 (N, 1, H, W) must describe the same slices, got "
                         f"{tuple(fractions.shape)} and {tuple(t1.shape)}")  # fmt: skip
    if fractions.numel():  # in [0, 1] and summing to 1, up to the rounding of a resize (~1e-6)
        lo, hi, sums = float(fractions.min()), float(fractions.max()), fractions.sum(1)
        if lo < -1e-3 or hi > 1 + 1e-3 or float((sums - 1).abs().max()) > 1e-3:
            raise ValueError(f"fractions must lie in [0, 1] and sum to 1 over the 4 tissues in every pixel (within "
                             f"1e-3), got values in [{lo:.4g}, {hi:.4g}] and sums in [{float(sums.min()):.4g}, "
                             f"{float(sums.max()):.4g}]")  # fmt: skip
    check_int("n", n, 1)
    check_int("seed", seed, 0)
    for name, v, hi in (("elastic", elastic, 0.5), ("rotate", rotate, 45.0), ("scale", scale, 0.5),
                        ("shift", shift, 0.5), ("gamma", gamma, 1.0), ("bias", bias, 1.0)):  # fmt: skip
        check_real(name, v, 0.0, hi)
    g = torch.Generator().manual_seed(seed)
    size = t1.shape[-1]
    pick = torch.randint(0, t1.shape[0], (n,), generator=g)
    # 1. a random affine map: rotation, isotropic scale and an anisotropic stretch
    u = torch.rand(n, 4, generator=g) * 2 - 1
    ang = u[:, 0] * math.radians(rotate)
    s = 1 + u[:, 1] * scale
    sx, sy = s * (1 + u[:, 2] * scale / 2), s * (1 - u[:, 2] * scale / 2)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(ang) / sx, -torch.sin(ang) / sx
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(ang) / sy, torch.cos(ang) / sy
    theta[:, :, 2] = u[:, 3:4] * shift  # a small shift (the same along both axes)
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    # 2. the elastic displacement (in units of the half-width)
    grid = grid + elastic * _smooth_field(n, size, 4, g).permute(0, 2, 3, 1)
    both = torch.cat([fractions[pick], t1[pick] * 0.5 + 0.5], 1)
    both[:, 0] -= 1.0  # background fraction − 1 is 0 outside the image, where grid_sample pads with zeros
    out = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out[:, 0] += 1.0
    fr, x = out[:, :4].clamp_min(0), out[:, 4:5].clamp(0, 1)
    fr = fr / fr.sum(1, keepdim=True)
    # 3. contrast (gamma) and a smooth bias field on the T1
    lg = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * gamma
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    c = (torch.rand(n, 3, generator=g) * 2 - 1) * bias
    field = c[:, 0, None, None] * xx + c[:, 1, None, None] * yy + c[:, 2, None, None] * _smooth_field(
        n, size, 3, g)[:, 0] / 2  # fmt: skip
    x = (x.pow(torch.exp(lg)) * torch.exp(field)[:, None]).clamp(0, 1)
    return fr, x * 2 - 1


def augmented_slices(n: int, size: int = 32, *, seed: int = 0, oversample: int = 4, chunk: int = 1000, **params):
    """``n`` augmented training slices (axial, ``split="train"``) at ``size`` × ``size``: :func:`augment` runs at
    ``oversample`` × the resolution and the result is area-averaged down, so that the deformation does not blur the
    slices (resampling at the final resolution would). ``params`` go to :func:`augment`; the copies are made in chunks
    of ``chunk`` with seeds ``seed``, ``seed + 1``, … — so a call reproduces another's first images only in whole
    chunks (``augment``'s random stream depends on its batch size: ``augmented_slices(500)`` is not the first 500
    images of ``augmented_slices(20_000)``, while ``augmented_slices(1000)`` is the first 1000).

    Returns:
        ``{"t1", "t2", "labels", "fractions"}``: (n, 1, size, size) T1 and T2 in [-1, 1], (n, size, size) int64
        labels, (n, 4, size, size) fractions.
    """
    check_int("n", n, 1)
    check_int("size", size, 4)
    check_int("seed", seed, 0)
    check_int("oversample", oversample, 1, 8)
    check_int("chunk", chunk, 1)
    big = size * oversample
    fr0, t10 = mni_slices(size=big, modality="fractions"), mni_slices(size=big)
    frs, t1s = [], []
    for k, start in enumerate(range(0, n, chunk)):
        fr, t1 = augment(fr0, t10, min(chunk, n - start), seed=seed + k, **params)
        frs.append(F.avg_pool2d(fr, oversample))
        t1s.append(F.avg_pool2d(t1, oversample))
    fr, t1 = torch.cat(frs), torch.cat(t1s)
    return {"t1": t1, "t2": synthetic_t2(fr) * 2 - 1, "labels": fr.argmax(1), "fractions": fr}
