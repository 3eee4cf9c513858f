"""Cardiac MRI phantoms (chapter §6): procedural short-axis cine slices with exact 4-class label maps.

**A stand-in, not a data set.** Chapter §6 segments cardiac MRI because the survey names it, but no real cardiac set
can be read offline here, so :func:`cardiac_phantoms` draws short-axis slices with the anatomy and contrast of one.
They are reproducible for a seed and their labels are exact (the geometry that painted the image), which real
labels are not. What the real sets look like, for comparison: ACDC (Bernard et al. 2018, MICCAI 2017 challenge; 150
subjects, 1.5 T and 3 T) and M&Ms (Campello et al. 2021; 375 subjects, four vendors) are 2D cine bSSFP stacks of
about 10 short-axis slices, 1.3–1.9 mm in plane and 5–10 mm thick, labelled by experts at end-diastole and
end-systole with the same four classes as here: background, LV blood pool (papillary muscles included), LV
myocardium, RV blood pool; the RV wall is not labelled. Their difficulties are what this generator imitates (partial
volume, bias field, noise, a bright RV and bright fat beside the bright LV, muscle as dark as the myocardium) and what
it does not (the basal and apical slices, trabeculations, motion and breath-hold artefacts, inter-observer spread).

**Contrast: cine balanced SSFP** (the sequence of ACDC and M&Ms), in which the blood pools are bright, the
myocardium is dark, skeletal muscle is as dark as the myocardium, fat is bright and the lungs are black. Signal
levels in [0, 1] before the bias field and the noise, each drawn uniformly per phantom:

===============================================  =============================  ============
structure                                        signal                         label
===============================================  =============================  ============
air outside the body                             0                              0
subcutaneous fat (the outer 6–10 % of the body)  0.65–0.90                      0
chest wall and mediastinum (muscle)              0.25–0.42                      0
lungs                                            0.02–0.08                      0
pulmonary vessels (1–3 dots in the lungs)        0.50–0.85                      0
vertebral body (behind the heart)                0.40–0.60                      0
descending aorta (behind the LV)                 LV blood × 0.85–1.05           0
RV free wall (0.03 thick)                        the myocardium's               0
RV blood pool                                    LV blood × 0.88–1.02           3
myocardium                                       0.15–0.30                      2
LV blood pool                                    0.75–0.95                      1
papillary muscles (0–2 dots in the LV)           the myocardium's               1
===============================================  =============================  ============

**Geometry** (image half-width = 1, y upwards as in :func:`~diffu.data.phantoms.ellipse_phantoms`). The LV cavity is
``ρ < r_lv(θ) = r0 (1 + e cos 2(θ − ψ))`` around its centre (radius ``r0`` 0.17–0.27, ellipticity ``e`` ≤ 0.1); the
myocardium is the ring ``r_lv(θ) ≤ ρ < r_lv(θ) + t(θ)`` with ``t(θ) = t0 (1 + a1 cos(θ − φ1) + a2 cos 2(θ − φ2))``,
``t0`` 0.12–0.18, ``a1`` ≤ 0.25 and ``a2`` ≤ 0.1 (so the wall is 0.65–1.35 × ``t0`` around the ring: diastole to
systole, with regional thickening); the RV is the part of an ellipse outside that ring, the ellipse centred 0.55–0.85
epicardial radii from the LV centre towards the RV direction (130°–200°: image left and anterior, as short-axis
slices are displayed), shifted sideways by up to ±0.2 radii, reaching 0.1–0.24 beyond the epicardium and
wrapping 0.95–1.25 radii to each side: a crescent attached to the septum. The heart (its centre 0–0.22 right of
and 0.11 below to 0.03 above the thorax's) sits inside the thorax, an ellipse of semi-axes 0.88–1.0 by 0.8–0.92,
between the lungs, with the aorta and the spine behind it; the ranges keep the heart inside the thorax's muscle
layer (none of 8000 phantoms at ``size=32`` leaves it; the regions are clipped to it all the same).

**Rendering.** Every structure is painted at ``oversample`` × the resolution and area-averaged down (partial volume);
the label of an output pixel is the class with the largest area fraction in it (ties to the lower class index), as
:data:`~diffu.data.mni.TISSUES` are. A smooth multiplicative bias field (exp of a 3 × 3 grid of N(0, ``bias``²)
values, bicubically upsampled; coil shading) and Rician noise (the magnitude of the signal plus complex Gaussian noise
of standard deviation σ, σ drawn in [0.5, 1] × ``noise`` per phantom) follow at the output resolution; each image is
then divided by its 99th percentile and clipped to [0, 1] (percentile normalisation, as cardiac segmentation pipelines
do) and mapped to [-1, 1]. The myocardium is at least 0.078 thick (1.25 pixels at ``size=32``), so at ``size`` ≥ 32
the LV blood pool never touches the background or the RV in the label map (tested).

Nothing here is for clinical use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..checks import check_int, check_real
from .phantoms import ellipse_mask

__all__ = ["CARDIAC_CLASSES", "cardiac_phantoms"]

#: Class names of the label maps of :func:`cardiac_phantoms`, indexed by label (the classes of ACDC and M&Ms).
CARDIAC_CLASSES = ("background", "LV blood pool", "myocardium", "RV")


def cardiac_phantoms(
    n: int,
    size: int = 32,
    *,
    seed: int = 0,
    noise: float = 0.05,
    bias: float = 0.2,
    oversample: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` short-axis cine-MRI-like slices with their labels (0 background, 1 LV blood pool, 2 myocardium, 3 RV).

    The anatomy, the bSSFP contrast, the rendering and the label rule are in the module's docstring. Every random
    parameter is drawn first, from one CPU generator seeded with ``seed``, so the same seed gives the same phantoms
    whatever the rendering chunks (a different ``n`` draws different phantoms). Outputs are CPU tensors, as every
    diffu data source returns; move them with ``.to(device)``.

    Args:
        n: number of slices (>= 1).
        size: output side in pixels (>= 8; the ring property of the labels holds from 32 on).
        seed: seed of the generator (>= 0).
        noise: largest standard deviation of the Rician noise, on the [0, 1] signal scale (>= 0; 0: no noise).
        bias: standard deviation of the log bias field at its 3 × 3 control points (>= 0; 0: no bias field).
        oversample: rendering resolution factor for the partial-volume average (in [1, 8]).

    Returns:
        images ``(n, 1, size, size)`` float32 in [-1, 1] and labels ``(n, size, size)`` int64 in {0, 1, 2, 3}
        (names in :data:`CARDIAC_CLASSES`).

    Raises:
        ValueError: ``n`` < 1, ``size`` < 8, ``seed`` < 0, ``noise`` or ``bias`` negative or not finite,
            ``oversample`` outside [1, 8] (each named in the message).

    Used in chapter §6 (segmentation).
    """
    check_int("n", n, 1)
    check_int("size", size, 8)
    check_int("seed", seed, 0)
    check_real("noise", noise, 0, 1)
    check_real("bias", bias, 0, 2)
    check_int("oversample", oversample, 1, 8)
    g = torch.Generator().manual_seed(seed)

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g)

    # 1. every random parameter first, in a fixed order
    bx, by, bphi = u(-0.05, 0.05), u(-0.08, 0.02), u(-0.1, 0.1)  # thorax
    ba, bb, fat = u(0.88, 1.0), u(0.8, 0.92), u(0.06, 0.10)
    lung_dx, lung_dy = u(0.45, 0.55, 2), u(0.0, 0.15, 2)  # left and right lung
    lung_a, lung_b, lung_phi = u(0.2, 0.28, 2), u(0.3, 0.4, 2), u(-0.3, 0.3, 2)
    n_vessels = torch.randint(1, 4, (n,), generator=g)
    v_lung, v_r, v_ang = torch.randint(0, 2, (n, 3), generator=g), u(0, 0.6, 3).sqrt(), u(0, 2 * math.pi, 3)
    v_rad = u(0.025, 0.045, 3)
    cx, cy = bx + u(0.0, 0.22), by + u(-0.11, 0.03)  # LV centre
    r0, ecc, psi = u(0.17, 0.27), u(0.0, 0.1), u(0, math.pi)
    t0, a1, phi1, a2, phi2 = u(0.12, 0.18), u(0, 0.25), u(0, 2 * math.pi), u(0, 0.1), u(0, math.pi)
    alpha = u(130, 200) * math.pi / 180  # RV direction
    rv_d, rv_shift, rv_w, rv_wrap = u(0.55, 0.85), u(-0.2, 0.2), u(0.1, 0.24), u(0.95, 1.25)
    n_pap, pap_ang, pap_rad = torch.randint(0, 3, (n,), generator=g), u(0, 2 * math.pi, 2), u(0.03, 0.05, 2)
    ao_dx, ao_gap, ao_rad = u(-0.05, 0.15), u(0.1, 0.18), u(0.06, 0.09)
    sp_dx, sp_dy, sp_rad = u(-0.03, 0.03), u(0.14, 0.2), u(0.1, 0.13)
    lv_s, myo_s, tissue_s, fat_s, lung_s = u(0.75, 0.95), u(0.15, 0.3), u(0.25, 0.42), u(0.65, 0.9), u(0.02, 0.08)
    rv_s, ao_s, sp_s, ves_s = lv_s * u(0.88, 1.02), lv_s * u(0.85, 1.05), u(0.4, 0.6), u(0.5, 0.85)
    log_bias = bias * torch.randn(n, 1, 3, 3, generator=g)
    sigma = noise * u(0.5, 1.0)
    n1, n2 = torch.randn(n, 1, size, size, generator=g), torch.randn(n, 1, size, size, generator=g)

    big = size * oversample
    c = (torch.arange(big, dtype=torch.float32) + 0.5) / big * 2 - 1
    yy, xx = torch.meshgrid(-c, c, indexing="ij")  # rows top → bottom: y from +1 to −1
    images, labels = [], []
    chunk = max(1, 2**20 // big**2)  # 64 phantoms at size 32 and oversample 4; memory: a few dozen masks of 2²⁰ values
    for i in range(0, n, chunk):  # 2. render a chunk of phantoms at a time
        j = slice(i, i + chunk)
        k = len(range(n)[j])
        body = ellipse_mask(xx, yy, bx[j], by[j], ba[j], bb[j], bphi[j])
        inner = ellipse_mask(xx, yy, bx[j], by[j], ba[j] * (1 - fat[j]), bb[j] * (1 - fat[j]), bphi[j])
        lungs, vessels = torch.zeros_like(inner), torch.zeros_like(inner)
        for s, side in enumerate((-1.0, 1.0)):
            lx, ly = bx[j] + side * lung_dx[j, s] * ba[j], by[j] + lung_dy[j, s]
            lungs |= ellipse_mask(xx, yy, lx, ly, lung_a[j, s], lung_b[j, s], side * lung_phi[j, s])
        for v in range(3):
            side = torch.where(v_lung[j, v] == 0, -1.0, 1.0)
            s = v_lung[j, v]
            la, lb = lung_a[j].gather(1, s[:, None])[:, 0], lung_b[j].gather(1, s[:, None])[:, 0]
            lx = bx[j] + side * lung_dx[j].gather(1, s[:, None])[:, 0] * ba[j] + v_r[j, v] * v_ang[j, v].cos() * la
            ly = by[j] + lung_dy[j].gather(1, s[:, None])[:, 0] + v_r[j, v] * v_ang[j, v].sin() * lb
            on = (v < n_vessels[j])[:, None, None]
            vessels |= ellipse_mask(xx, yy, lx, ly, v_rad[j, v], v_rad[j, v], 0 * lx) & on
        vessels &= lungs
        # heart: polar coordinates around the LV centre
        dx, dy = xx - cx[j, None, None], yy - cy[j, None, None]
        rho, theta = (dx * dx + dy * dy).sqrt(), torch.atan2(dy, dx)
        r_lv = r0[j, None, None] * (1 + ecc[j, None, None] * torch.cos(2 * (theta - psi[j, None, None])))
        wall = 1 + a1[j, None, None] * torch.cos(theta - phi1[j, None, None])
        wall = wall + a2[j, None, None] * torch.cos(2 * (theta - phi2[j, None, None]))
        r_epi = r_lv + t0[j, None, None] * wall
        lv, epi = rho < r_lv, rho < r_epi
        R = r0[j] + t0[j]  # mean epicardial radius
        ca, sa = alpha[j].cos(), alpha[j].sin()
        ex = cx[j] + rv_d[j] * R * ca - rv_shift[j] * R * sa
        ey = cy[j] + rv_d[j] * R * sa + rv_shift[j] * R * ca
        ra, rb = R * (1 - rv_d[j]) + rv_w[j], R * rv_wrap[j]
        rv = ellipse_mask(xx, yy, ex, ey, ra, rb, alpha[j]) & ~epi & inner
        rv_wall = ellipse_mask(xx, yy, ex, ey, ra + 0.03, rb + 0.03, alpha[j]) & ~epi & ~rv & inner
        myo, lv = epi & ~lv & inner, lv & inner
        pap = torch.zeros_like(lv)
        for p in range(2):
            px = cx[j] + 0.75 * r0[j] * pap_ang[j, p].cos()
            py = cy[j] + 0.75 * r0[j] * pap_ang[j, p].sin()
            pap |= ellipse_mask(xx, yy, px, py, pap_rad[j, p], pap_rad[j, p], 0 * px) & (p < n_pap[j])[:, None, None]
        aorta = ellipse_mask(xx, yy, cx[j] + ao_dx[j], cy[j] - R - ao_gap[j] - ao_rad[j], ao_rad[j], ao_rad[j], 0 * R)
        spine_y = by[j] - bb[j] * (1 - fat[j]) + sp_dy[j]
        spine = ellipse_mask(xx, yy, bx[j] + sp_dx[j], spine_y, sp_rad[j], sp_rad[j], 0 * R)

        # 3. paint back to front (the heart last, so that the labels are exactly the painted regions)
        def level(v, j=j):
            return v[j, None, None]

        img = torch.zeros(k, big, big)
        for mask, val in (
            (body, level(fat_s)),
            (inner, level(tissue_s)),
            (lungs & inner, level(lung_s)),
            (vessels & inner, level(ves_s)),
            (spine & inner, level(sp_s)),
            (aorta & inner, level(ao_s)),
            (rv_wall, level(myo_s)),
            (rv, level(rv_s)),
            (myo, level(myo_s)),
            (lv, level(lv_s)),
            (lv & pap, level(myo_s)),
        ):
            img = torch.where(mask, val, img)
        lab = torch.zeros(k, big, big, dtype=torch.long)
        for cls, mask in ((3, rv), (2, myo), (1, lv)):
            lab = torch.where(mask, cls, lab)
        # 4. partial volume: area averages of the signal and of each class's indicator; majority label
        x = F.avg_pool2d(img[:, None], oversample)  # (k, 1, size, size)
        frac = F.avg_pool2d(F.one_hot(lab, 4).permute(0, 3, 1, 2).float(), oversample)  # (k, 4, size, size)
        # 5. bias field, Rician noise, percentile normalisation
        field = F.interpolate(log_bias[j], size=(size, size), mode="bicubic", align_corners=True).exp()
        x = x * field
        s = sigma[j, None, None, None]
        x = ((x + s * n1[j]) ** 2 + (s * n2[j]) ** 2).sqrt()
        top = x.flatten(1).kthvalue(math.ceil(0.99 * size * size), dim=1).values[:, None, None, None]  # 99th pct.
        images.append((x / top).clamp(0, 1) * 2 - 1)
        labels.append(frac.argmax(1))
    return torch.cat(images), torch.cat(labels)
