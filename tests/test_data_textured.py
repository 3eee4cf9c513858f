"""Fashion-MNIST on textured backgrounds (diffu.data.textured, §6): shapes, reproducibility, exact masks, the
bundled textures, and that a global (Otsu) threshold solves plain Fashion-MNIST but not the textured images."""

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu

from diffu.data import fashion_mnist
from diffu.data.textured import TEXTURES, foreground_masks, textured_fashion


@pytest.fixture(scope="module")
def batch():
    return textured_fashion(200, seed=0)


def _otsu_iou(images, masks, polarity="bright"):
    """Per-image foreground IoU of ``image > threshold_otsu(image)`` (or its complement, or the better of both)."""
    out = []
    for img, m in zip(images[:, 0].numpy(), masks.numpy().astype(bool)):
        p = img > threshold_otsu(img)
        ious = [(q & m).sum() / (q | m).sum() for q in (p, ~p)]
        out.append(max(ious) if polarity == "best" else ious[0])
    return float(np.mean(out))


def test_shapes_dtypes_ranges(batch):
    x, m, y = batch
    assert x.shape == (200, 1, 28, 28) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert m.shape == (200, 28, 28) and m.dtype == torch.int64 and set(m.unique().tolist()) == {0, 1}
    assert y.shape == (200,) and y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) <= 9
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert len(y.unique()) == 10  # 200 items drawn from the class-balanced test split
    # the background lies in the contrast range (0.1, 0.9) on [0, 1], i.e. [-0.8, 0.8]
    back = x[:, 0][m == 0]
    assert float(back.min()) >= -0.8 - 1e-6 and float(back.max()) <= 0.8 + 1e-6
    xs, ms, _ = textured_fashion(3, seed=1, size=32, split="train", textures=("camera",), contrast=(0.3, 0.6))
    assert xs.shape == (3, 1, 32, 32) and ms.shape == (3, 32, 32)
    assert float(xs[:, 0][ms == 0].min()) >= -0.4 - 1e-6 and float(xs[:, 0][ms == 0].max()) <= 0.2 + 1e-6


def test_same_seed_same_images_other_seed_others():
    a = textured_fashion(6, seed=3)
    b = textured_fashion(6, seed=3)
    c = textured_fashion(6, seed=4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    # a different texture list changes the backgrounds, not the items or their masks
    d = textured_fashion(6, seed=3, textures=("gravel",))
    assert torch.equal(a[1], d[1]) and torch.equal(a[2], d[2]) and not torch.equal(a[0], d[0])


def test_foreground_masks_by_hand():
    # on [0, 1]: 0, 0.025, 0.075, 1 → foreground above 0.05: the last two
    x = torch.tensor([[[[-1.0, -0.95], [-0.85, 1.0]]]])
    assert torch.equal(foreground_masks(x), torch.tensor([[[0, 0], [1, 1]]]))
    assert torch.equal(foreground_masks(x, threshold=0.0), torch.tensor([[[0, 1], [1, 1]]]))
    assert foreground_masks(x.double()).dtype == torch.int64


def test_masks_are_exact_the_pasted_item_and_nothing_else():
    """Each textured image holds a test item exactly on its mask, the mask is that item's support above 0.05, and
    the label is the item's class (found by search over the split, independently of how items are drawn)."""
    items, labels = fashion_mnist("test")
    x, m, y = textured_fashion(12, seed=7)
    flat = items[:, 0].flatten(1)  # (2000, 784)
    for i in range(12):
        on = m[i].flatten().bool()
        # items equal to the image on its mask (up to the float rounding of the [0, 1] round trip) …
        same = ((flat[:, on] - x[i, 0].flatten()[on]).abs() < 1e-6).all(1)
        # … whose own support above 0.05 is the mask
        support = (((flat + 1) / 2 > 0.05) == on).all(1)
        j = (same & support).nonzero().flatten()
        assert len(j) >= 1, f"image {i}: no test item is pasted exactly on its mask"
        assert int(labels[j[0]]) == int(y[i])


def test_a_dark_background_makes_the_plain_threshold_exact():
    """Identity: with the background below the threshold (contrast (0, 0.04) < 0.05), the plain foreground mask of
    the composite is exactly the returned mask."""
    x, m, _ = textured_fashion(20, seed=2, contrast=(0.0, 0.04))
    assert torch.equal(foreground_masks(x), m)


def test_textures_are_bundled_and_grey():
    import skimage.data

    for name in TEXTURES:
        img = getattr(skimage.data, name)()  # bundled with the wheel: no download (convention 11)
        assert img.shape == (512, 512) and img.dtype == np.uint8


def test_otsu_solves_plain_fashion_mnist_but_not_the_textured_images(batch):
    """The reason the textured set exists. Measured at 200 images, seed 0: plain 0.84; textured 0.46 (bright = item),
    0.56 (better polarity per image), against 0.47 for "everything is foreground" (seeds 1-3: 0.46-0.50, 0.57-0.59,
    0.47-0.48)."""
    x, m, _ = batch
    plain, _ = fashion_mnist("test", 200)
    plain_iou = _otsu_iou(plain, foreground_masks(plain))
    bright, best = _otsu_iou(x, m), _otsu_iou(x, m, "best")
    everything = float(m.float().flatten(1).mean(1).mean())
    # per-image IoUs spread by about 0.1-0.15, so a mean over 200 has a standard error of about 0.01: the margins
    # below are 3-4 standard errors from the measured values
    assert plain_iou > 0.80  # measured: 0.84
    assert bright < everything + 0.04  # measured: 0.46 vs 0.47: Otsu is no better than calling everything the item
    assert best < 0.62  # measured: 0.56, even with the right polarity chosen per image by an oracle
    assert plain_iou - best > 0.2  # measured: 0.28


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n=0), "n must"),
        (dict(n=2001), "n must"),
        (dict(n=2.0), "n must"),
        (dict(n=2, seed=-1), "seed must"),
        (dict(n=2, split="val"), "split must"),
        (dict(n=2, size=4), "size must"),
        (dict(n=2, textures=("lena",)), "textures must"),
        (dict(n=2, contrast=(0.9, 0.1)), "contrast must"),
        (dict(n=2, contrast=(0.0, 1.5)), r"contrast\[1\] must"),
        (dict(n=2, contrast=(float("nan"), 0.5)), r"contrast\[0\] must"),
        (dict(n=2, threshold=1.0), "threshold must"),
    ],
)
def test_textured_fashion_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        textured_fashion(**kw)


@pytest.mark.parametrize("kw", [dict(textures="brick"), dict(textures=()), dict(contrast=0.5), dict(contrast="ab")])
def test_textured_fashion_type_errors(kw):
    with pytest.raises(TypeError, match="textures must|contrast must"):
        textured_fashion(2, **kw)


def test_foreground_masks_errors():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="images must"):
        foreground_masks(x[0])
    with pytest.raises(ValueError, match="images must"):
        foreground_masks(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="images"):
        foreground_masks(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8))
    with pytest.raises(ValueError, match="images must"):
        foreground_masks(x + 3)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images"):
        foreground_masks(bad)
    with pytest.raises(ValueError, match="threshold must"):
        foreground_masks(x, threshold=-0.1)


def test_shifted_items_move_whole_items_and_keep_exact_masks():
    from diffu.data.textured import shifted_items

    x = -torch.ones(40, 1, 16, 16)
    x[:, :, 6:10, 5:9] = torch.linspace(-0.5, 1, 16).view(4, 4)  # a 4×4 item well inside the frame
    out, masks = shifted_items(x, 3, seed=7)
    assert torch.equal(masks, foreground_masks(out)) and masks.dtype == torch.int64
    assert torch.equal((out > -1).sum((1, 2, 3)), torch.full((40,), 16))  # nothing cut off, nothing added
    # each image is the original rolled by one (dy, dx) in [-3, 3]², and the draws reach both ends of the range
    seen = set()
    for i in range(40):
        hits = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                if torch.equal(out[i], torch.roll(x[i], (dy, dx), (1, 2)))]  # fmt: skip
        assert len(hits) == 1
        seen.add(hits[0])
    assert {d for d, _ in seen} >= {-3, 3} and {d for _, d in seen} >= {-3, 3}
    again, _ = shifted_items(x, 3, seed=7)
    assert torch.equal(out, again) and not torch.equal(out, shifted_items(x, 3, seed=8)[0])
    assert torch.equal(shifted_items(x, 0)[0], x)


def test_shifted_items_cut_off_what_leaves_the_frame():
    from diffu.data.textured import shifted_items

    x = -torch.ones(30, 1, 8, 8)
    x[:, :, :, 7] = 1.0  # an item on the right edge
    out, masks = shifted_items(x, 2, seed=0)
    assert (masks.sum((1, 2)) <= 8).all() and (masks.sum((1, 2)) == 0).any()  # moved right: gone
    assert float(out.min()) == -1.0 and float(out.max()) == 1.0
