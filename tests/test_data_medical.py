"""The §5 data: MNI152 slices and volumes from the nilearn wheel, their augmentation, CT phantoms and bundled scans."""

import math

import numpy as np
import pytest
import torch

from diffu.data import mni
from diffu.data.phantoms import ellipse_phantoms, shepp_logan
from diffu.data.scans import SCANS, scan


def test_template_files_ship_in_the_nilearn_wheel_and_are_read_offline():
    paths = mni.mni_files()
    assert set(paths) == {"t1", "gm", "wm"} and all(p.endswith(".nii.gz") for p in paths.values())
    tpl = mni.mni_template()
    assert {k: v.shape for k, v in tpl.items()} == {k: (181, 181, 155) for k in ("t1", "gm", "wm", "csf", "mask")}
    assert all(v.dtype == np.float32 and v.min() >= 0 and v.max() <= 1 for v in tpl.values())
    # the T1 is 8-bit: 256 levels at most, on the grid k/255
    assert np.allclose(tpl["t1"] * 255, np.round(tpl["t1"] * 255), atol=1e-4)
    # 155 non-empty axial slices, the first and last of them included
    assert bool((tpl["t1"] > 0).any((0, 1)).all())
    with pytest.raises(ValueError, match="read-only"):
        tpl["t1"][0, 0, 0] = 1.0  # the cache cannot be corrupted by a caller


def test_tissue_fractions_sum_to_one_and_csf_is_what_the_brain_leaves():
    fr = mni.tissue_fractions()
    assert fr.shape == (4, 181, 181, 155)
    assert np.abs(fr.sum(0) - 1).max() < 1e-5 and fr.min() >= 0
    tpl = mni.mni_template()
    assert np.array_equal(fr[0], 1 - tpl["mask"])  # background is outside the brain mask, exactly
    # where GM + WM ≤ 1 inside the mask, CSF is 1 − GM − WM
    inside = (tpl["mask"] > 0) & (tpl["gm"] + tpl["wm"] <= 1)
    assert np.allclose(fr[1][inside], 1 - tpl["gm"][inside] - tpl["wm"][inside], atol=1e-5)


def test_slices_shapes_ranges_and_the_held_out_band():
    x = mni.mni_slices(size=32, split="all")
    assert x.shape == (155, 1, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) <= 1.0
    train, test = mni.mni_slices(size=16), mni.mni_slices(size=16, split="test")
    lo, hi = mni.HELD_OUT
    assert test.shape[0] == hi - lo == 24
    assert train.shape[0] == 155 - (hi - lo) - 2 * mni.GUARD
    all16 = mni.mni_slices(size=16, split="all")
    assert torch.equal(test, all16[lo:hi])
    # no training slice is a held-out slice or a guard slice
    kept = [i for i in range(155) if i < lo - mni.GUARD or i >= hi + mni.GUARD]
    assert torch.equal(train, all16[kept])


def test_labels_t2_and_fractions_agree():
    fr = mni.mni_slices(size=32, modality="fractions", split="test")
    lab = mni.mni_slices(size=32, modality="labels", split="test")
    t2 = mni.mni_slices(size=32, modality="t2", split="test")
    assert fr.shape == (24, 4, 32, 32) and lab.shape == (24, 32, 32) and lab.dtype == torch.int64
    assert set(lab.unique().tolist()) == {0, 1, 2, 3}
    assert torch.equal(lab, fr.argmax(1))
    assert torch.allclose(t2, mni.synthetic_t2(fr) * 2 - 1)
    # T2 ordering: CSF brightest, then grey matter, then white matter (pure-tissue pixels)
    means = [float(t2[:, 0][(fr[:, k] > 0.9)].mean()) for k in (1, 2, 3)]
    assert means[0] > means[1] > means[2]
    # T1 ordering is the opposite for grey and white matter
    t1 = mni.mni_slices(size=32, split="test")
    assert float(t1[:, 0][fr[:, 3] > 0.9].mean()) > float(t1[:, 0][fr[:, 2] > 0.9].mean())


def test_the_template_is_left_right_symmetric():
    x = mni.mni_slices(size=32, split="test")
    assert torch.allclose(x, x.flip(-1), atol=1e-5)


def test_coronal_sagittal_and_volume():
    for plane in ("coronal", "sagittal"):
        s = mni.mni_slices(plane, 16, split="all")
        assert s.shape == (181, 1, 16, 16) and float(s.min()) == -1.0
        with pytest.raises(ValueError, match="axial"):
            mni.mni_slices(plane, 16, split="train")
    v = mni.mni_volume(16)
    assert v.shape == (1, 1, 24, 16, 16)
    assert torch.equal(v[0, :, 3], mni.mni_slices(size=16, split="test")[3])
    assert mni.mni_volume(16, modality="labels").shape == (1, 24, 16, 16)
    assert mni.mni_volume(16, modality="fractions", z_range=(10, 20), z_step=2).shape == (1, 4, 5, 16, 16)


def test_slice_errors_name_the_argument():
    with pytest.raises(ValueError, match="plane"):
        mni.mni_slices("oblique")
    with pytest.raises(ValueError, match="modality"):
        mni.mni_slices(modality="pd")
    with pytest.raises(ValueError, match="split"):
        mni.mni_slices(split="val")
    with pytest.raises(ValueError, match="size"):
        mni.mni_slices(size=2)
    with pytest.raises(ValueError, match="z_range"):
        mni.mni_volume(z_range=(10, 200))
    with pytest.raises(ValueError, match="fractions"):
        mni.synthetic_t2(torch.zeros(2, 3, 8, 8))


def test_augment_is_deterministic_keeps_fractions_and_breaks_symmetry():
    fr, t1 = mni.mni_slices(size=32, modality="fractions"), mni.mni_slices(size=32)
    a = mni.augment(fr, t1, 16, seed=3)
    b = mni.augment(fr, t1, 16, seed=3)
    c = mni.augment(fr, t1, 16, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    f, x = a
    assert f.shape == (16, 4, 32, 32) and x.shape == (16, 1, 32, 32)
    assert torch.allclose(f.sum(1), torch.ones(16, 32, 32), atol=1e-5) and float(f.min()) >= 0
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    # the template is symmetric; an augmented slice is not (mean |x − mirror| over brain pixels, template: 0)
    assert float((x - x.flip(-1)).abs().mean()) > 0.02
    # with every knob at 0, augment only picks slices
    f0, x0 = mni.augment(fr, t1, 4, seed=0, elastic=0, rotate=0, scale=0, shift=0, gamma=0, bias=0)
    pick = torch.randint(0, t1.shape[0], (4,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x0, t1[pick], atol=1e-5) and torch.allclose(f0, fr[pick], atol=1e-5)
    with pytest.raises(ValueError, match="same slices"):
        mni.augment(fr, t1[:3], 2)
    with pytest.raises(ValueError, match="elastic"):
        mni.augment(fr, t1, 2, elastic=-0.1)


def test_augmented_slices_are_consistent():
    d = mni.augmented_slices(40, 16, seed=1, chunk=16)
    assert d["t1"].shape == (40, 1, 16, 16) and d["labels"].shape == (40, 16, 16)
    assert torch.allclose(d["t2"], mni.synthetic_t2(d["fractions"]) * 2 - 1)
    assert torch.equal(d["labels"], d["fractions"].argmax(1))
    assert torch.equal(mni.augmented_slices(40, 16, seed=1, chunk=16)["t1"], d["t1"])
    # whole chunks are reproduced by a shorter call (the docstring's promise), a partial chunk is not
    assert torch.equal(mni.augmented_slices(32, 16, seed=1, chunk=16)["t1"], d["t1"][:32])
    assert not torch.equal(mni.augmented_slices(24, 16, seed=1, chunk=16)["t1"], d["t1"][:24])


def test_ellipse_phantoms():
    x = ellipse_phantoms(64, 32, seed=0)
    assert x.shape == (64, 1, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.equal(x, ellipse_phantoms(64, 32, seed=0)) and not torch.equal(x, ellipse_phantoms(64, 32, seed=1))
    # every phantom has a body (≥ 25 % of pixels above air) and air in the corners
    assert bool(((x > -1 + 1e-3).float().mean((1, 2, 3)) > 0.25).all())
    assert bool((x[:, :, 0, 0] == -1).all())
    # Shepp–Logan is not a training phantom: nearest-phantom RMSE well above the phantoms' own nearest-neighbour RMSE
    sl = shepp_logan(32)
    assert sl.shape == (1, 1, 32, 32) and float(sl.min()) == -1.0
    d_sl = (x - sl).pow(2).mean((1, 2, 3)).sqrt().min()
    assert float(d_sl) > 0.1  # measured ≈ 0.3
    with pytest.raises(ValueError, match="max_ellipses"):
        ellipse_phantoms(2, 32, min_ellipses=5, max_ellipses=2)
    with pytest.raises(ValueError, match="n must be"):
        ellipse_phantoms(0)


@pytest.mark.parametrize("name", SCANS)
def test_bundled_scans(name):
    x = scan(name)
    assert x.ndim == 4 and x.shape[:2] == (1, 1) and x.shape[2] == x.shape[3] >= 64
    assert float(x.min()) >= -1 and float(x.max()) <= 1 and float(x.std()) > 0.1
    assert scan(name, 32).shape == (1, 1, 32, 32)


def test_scan_errors():
    with pytest.raises(ValueError, match="name"):
        scan("CT_large")
    with pytest.raises(ValueError, match="size"):
        scan("CT_small", 0)


def test_resize_square_averages():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(mni.resize_square(x, 2), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))  # 2×2 block means
    y = mni.resize_square(torch.ones(2, 3, 9, 9), 4)  # 4 does not divide 9: antialiased bilinear keeps constants
    assert y.shape == (2, 3, 4, 4) and torch.allclose(y, torch.ones_like(y))


def test_ellipse_mask_closed_form():
    """Points on the axes: (±a, 0) rotated by φ are on the boundary (inside), 1 % beyond them outside; broadcasting
    over a batch of ellipses; the phantoms' renderers use it (their outputs are unchanged: test_phantoms_*)."""
    from diffu.data.phantoms import ellipse_mask

    a, b, phi = 0.6, 0.3, torch.tensor([0.0, math.pi / 2, math.pi / 4])
    xs = torch.stack([torch.cos(phi) * a, -torch.sin(phi) * b, torch.cos(phi) * a * 1.01])  # (3 points, 3 ellipses)
    ys = torch.stack([torch.sin(phi) * a, torch.cos(phi) * b, torch.sin(phi) * a * 1.01])
    for e in range(3):
        m = ellipse_mask(xs[:, e : e + 1], ys[:, e : e + 1], 0.0, 0.0, a * (1 + 1e-6), b * (1 + 1e-6), phi[e])
        assert m[:, 0].tolist() == [True, True, False]
    c = torch.linspace(-1, 1, 9)
    yy, xx = torch.meshgrid(-c, c, indexing="ij")
    m = ellipse_mask(xx, yy, torch.zeros(2, 3), torch.zeros(1, 3), 0.5, 0.25, 0.0)
    assert m.shape == (2, 3, 9, 9) and m.dtype == torch.bool
    assert int(m[0, 0].sum()) == int(((xx / 0.5) ** 2 + (yy / 0.25) ** 2 <= 1).sum())
    with pytest.raises(ValueError, match="xx and yy"):
        ellipse_mask(xx[0], yy[0], 0.0, 0.0, 0.5, 0.5, 0.0)
    with pytest.raises(ValueError, match="broadcast"):
        ellipse_mask(xx, yy, torch.zeros(2), torch.zeros(3), 0.5, 0.5, 0.0)
