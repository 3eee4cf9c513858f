"""Spatial control (diffu.control): the control loss (equal to the frozen model's loss at zero initialisation),
condition maps (one-hot label maps, Sobel edges against hand-computed cases), fidelity (Dice/IoU closed forms) and
the sudden-convergence detector on synthetic curves."""

import math

import pytest
import torch

from diffu.control import (
    EDGE_THRESHOLD,
    FOREGROUND_LEVEL,
    Convergence,
    control_loss,
    edge_map,
    label_fidelity,
    label_map_condition,
    mask_fidelity,
    sudden_convergence,
)
from diffu.nn.adapter import AdaptedUNet
from diffu.nn.controlnet import ControlledUNet
from diffu.nn.unet import UNet, UNetConfig
from diffu.schedules import linear_schedule
from diffu.train import diffusion_loss, seeded


def tiny_unet(num_classes=3):
    with seeded(0):
        u = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                            num_classes=num_classes, image_size=8))  # fmt: skip
        with torch.no_grad():
            for p in u.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return u.eval()


@pytest.fixture(scope="module")
def pair(gen):
    images = torch.rand(4, 1, 8, 8, generator=gen(1)) * 2 - 1
    labels = torch.randint(0, 3, (4, 8, 8), generator=gen(2))
    return images, labels


# ----------------------------------------------------------------------------------------------------------------
# control_loss
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["adapter", "controlnet"])
def test_control_loss_at_zero_init_is_the_frozen_models_loss(pair, gen, kind):
    """Identity: a zero-initialised control branch leaves the UNet as it is, so with the same draws the loss is the
    frozen UNet's own ε-loss (the null label for a class-conditional base)."""
    images, labels = pair
    base = tiny_unet()
    with seeded(1):
        if kind == "adapter":
            model = AdaptedUNet(base, cond_channels=3, zero_init=True)
        else:
            model = ControlledUNet(base, None, 3)
    cond = label_map_condition(labels, 3)
    schedule = linear_schedule(50)
    loss = control_loss(model, images, cond, gen(3), schedule)
    ref = diffusion_loss(base, schedule, images, gen(3), y=torch.full((4,), 3))
    assert loss.item() > 0.1  # measured 1.41: an untrained pair, not a trivial zero
    assert torch.equal(loss, ref)
    assert torch.equal(control_loss(model, images, cond, gen(3), schedule), loss)  # deterministic per generator
    assert not torch.equal(control_loss(model, images, cond, gen(4), schedule), loss)


def test_control_loss_trains_only_the_branch_and_keeps_float64(pair, gen):
    images, labels = pair
    with seeded(1):
        model = AdaptedUNet(tiny_unet(), cond_channels=3).double()
    loss = control_loss(model, images.double(), label_map_condition(labels, 3, torch.float64), gen(5))
    assert loss.dtype == torch.float64
    loss.backward()
    assert all(p.grad is None for p in model.base.parameters())
    assert all(p.grad is not None for p in model.adapter.parameters())


def test_control_loss_rejects_bad_input(pair):
    images, labels = pair
    with seeded(1):
        model = AdaptedUNet(tiny_unet(), cond_channels=3)
    cond = label_map_condition(labels, 3)
    with pytest.raises(TypeError, match="model must take the condition"):
        control_loss(tiny_unet(), images, cond)
    with pytest.raises(TypeError, match="model must"):
        control_loss("model", images, cond)
    nan = images.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images must be finite"):
        control_loss(model, nan, cond)
    with pytest.raises(ValueError, match="images must be a float"):
        control_loss(model, images[0], cond)
    with pytest.raises(ValueError, match="cond must have batch size 4"):
        control_loss(model, images, cond[:3])
    with pytest.raises(ValueError, match="cond must have shape"):
        control_loss(model, images, cond[:, :2])  # the model names the channels it wants
    with pytest.raises(ValueError, match="cond must be a float"):
        control_loss(model, images, labels)
    with pytest.raises(TypeError, match="schedule"):
        control_loss(model, images, cond, schedule="linear")
    with pytest.raises(TypeError, match="generator"):
        control_loss(model, images, cond, generator=0)


# ----------------------------------------------------------------------------------------------------------------
# Condition maps
# ----------------------------------------------------------------------------------------------------------------


def test_label_map_condition_is_one_hot_on_minus_one_one(pair):
    _, labels = pair
    c = label_map_condition(labels, 4)
    assert c.shape == (4, 4, 8, 8) and c.dtype == torch.float32
    assert set(c.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal((c > 0).sum(1), torch.ones(4, 8, 8, dtype=torch.long))  # exactly one class per pixel
    assert torch.equal(c.argmax(1), labels)
    assert (c[:, 3] == -1).all()  # a class absent from the maps is −1 everywhere
    assert label_map_condition(labels, 3, torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="labels must"):
        label_map_condition(labels.float(), 3)
    with pytest.raises(ValueError, match="labels must"):
        label_map_condition(labels, 2)  # label 2 out of range
    with pytest.raises(ValueError, match="num_classes must"):
        label_map_condition(labels, 1)
    with pytest.raises(ValueError, match="dtype must"):
        label_map_condition(labels, 3, torch.int64)


def test_edge_map_of_a_step_is_the_two_columns_beside_it():
    """Closed form: a vertical step of height h between columns 3 and 4 gives |∇I| = 4h at columns 3 and 4 (the
    Sobel x-kernel sums 1 + 2 + 1 differences of h) and 0 elsewhere, replicate padding making no border edges."""
    x = -torch.ones(1, 1, 8, 8, dtype=torch.float64)
    x[..., 4:] = 1.0  # h = 2: normalised magnitude 4·2/8 = 1
    e = edge_map(x)
    want = -torch.ones_like(x)
    want[..., 3:5] = 1.0
    assert e.dtype == torch.float64 and torch.equal(e, want)
    assert torch.equal(edge_map(x.transpose(-1, -2)), want.transpose(-1, -2))  # Sobel y is Sobel x transposed
    weak = x * 0.2  # h = 0.4: magnitude 0.2, below the default 0.25 and above 0.1
    assert (edge_map(weak) == -1).all()
    assert torch.equal(edge_map(weak, threshold=0.1), want)
    assert (edge_map(torch.full((2, 1, 5, 5), 0.3)) == -1).all()  # a constant image has no edges
    # several channels: the largest magnitude over the channels
    both = torch.cat([weak, x.transpose(-1, -2)], 1)
    assert torch.equal(edge_map(both), want.transpose(-1, -2))
    assert EDGE_THRESHOLD == 0.25


def test_edge_map_rejects_bad_input():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="images must be a floating-point|images must be a float"):
        edge_map(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="images must be finite"):
        edge_map(x.log())
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="threshold must"):
            edge_map(x, threshold=bad)
    with pytest.raises(TypeError, match="threshold must"):
        edge_map(x, threshold=True)


# ----------------------------------------------------------------------------------------------------------------
# Fidelity
# ----------------------------------------------------------------------------------------------------------------


def test_mask_fidelity_closed_forms():
    mask = torch.zeros(3, 8, 8, dtype=torch.bool)
    mask[:, :, :4] = True  # 32 pixels
    perfect = torch.where(mask[:, None], 0.5, -1.0)
    f = mask_fidelity(perfect, mask)
    assert torch.equal(f.dice, torch.ones(3)) and torch.equal(f.iou, torch.ones(3))
    assert torch.equal(mask_fidelity(-perfect - 0.5, mask).dice, torch.zeros(3))  # the complement
    quarter = torch.full((3, 1, 8, 8), -1.0)
    quarter[..., :4, :4] = 0.0  # 16 pixels inside the mask: Dice 2·16/(16+32) = 2/3, IoU 16/32 = 1/2
    f = mask_fidelity(quarter, mask.long()[:, None])  # (N, 1, H, W) integer masks are accepted
    assert torch.allclose(f.dice, torch.full((3,), 2 / 3)) and torch.allclose(f.iou, torch.full((3,), 0.5))
    # the threshold: −0.95 is background at the default level (−0.9) and item at level −0.99
    faint = torch.where(mask[:, None], -0.95, -1.0)
    assert torch.equal(mask_fidelity(faint, mask).dice, torch.zeros(3))
    assert torch.equal(mask_fidelity(faint, mask, level=-0.99).dice, torch.ones(3))
    assert FOREGROUND_LEVEL == -0.9
    # nothing requested, nothing generated: no Dice (NaN), as diffu.metrics.dice
    assert mask_fidelity(torch.full((1, 1, 4, 4), -1.0), torch.zeros(1, 4, 4, dtype=torch.long)).dice.isnan().all()


def test_mask_fidelity_of_data_against_its_own_masks_is_one():
    """A perfect generator: Fashion-MNIST images against the masks diffu.data.textured makes of them (the same
    threshold rule), Dice 1; a shifted copy (items moved 3 pixels right) scores lower."""
    from diffu.data import fashion_mnist
    from diffu.data.textured import foreground_masks

    x = fashion_mnist("test")[0][:16]
    masks = foreground_masks(x)
    assert torch.equal(mask_fidelity(x, masks).dice, torch.ones(16))
    shifted = torch.roll(x, 3, dims=-1)
    assert (mask_fidelity(shifted, masks).dice < 1).all()


def test_mask_fidelity_rejects_bad_input():
    g = torch.zeros(2, 1, 4, 4)
    m = torch.ones(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="target_masks must be a bool"):
        mask_fidelity(g, m.float())
    with pytest.raises(ValueError, match="target_masks must be binary"):
        mask_fidelity(g, m * 2)
    with pytest.raises(ValueError, match="target_masks must have shape"):
        mask_fidelity(g, m[:1])
    with pytest.raises(ValueError, match="generated must have one channel"):
        mask_fidelity(g.repeat(1, 2, 1, 1), m)
    with pytest.raises(ValueError, match="generated must be finite"):
        mask_fidelity(g / 0, m)
    with pytest.raises(ValueError, match="generated must be a float"):
        mask_fidelity(g[0], m)
    for bad in (-1.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="level must"):
            mask_fidelity(g, m, level=bad)


def intensity_segmenter(images):
    """A 'segmenter' that reads the class from the intensity: class k scores −|x − k/2|, so images made as
    labels/2 are segmented perfectly."""
    k = torch.arange(4, dtype=images.dtype).reshape(1, 4, 1, 1)
    return -(images - k / 2).abs()


def test_label_fidelity_closed_forms(pair):
    _, labels = pair
    generated = (labels[:, None] / 2).float()  # a perfect generator for this segmenter
    f = label_fidelity(generated, labels, intensity_segmenter, 4)
    assert f.dice.shape == (4, 3)
    assert torch.equal(f.dice[:, :2], torch.ones(4, 2)) and torch.equal(f.iou[:, :2], torch.ones(4, 2))
    assert f.dice[:, 2].isnan().all()  # class 3 is in neither map
    assert label_fidelity(generated, labels, intensity_segmenter, 4, ignore_background=False).dice.shape == (4, 4)
    swapped = torch.where(labels == 1, 2, torch.where(labels == 2, 1, labels))  # classes 1 and 2 exchanged
    f = label_fidelity((swapped[:, None] / 2).float(), labels, intensity_segmenter, 4)
    assert torch.equal(f.dice[:, :2], torch.zeros(4, 2))
    assert not f.dice.requires_grad


def test_label_fidelity_rejects_bad_input(pair):
    _, labels = pair
    g = torch.zeros(4, 1, 8, 8)
    with pytest.raises(TypeError, match="segmenter must"):
        label_fidelity(g, labels, "unet", 4)
    with pytest.raises(ValueError, match="segmenter must return"):
        label_fidelity(g, labels, lambda x: x, 4)
    with pytest.raises(ValueError, match="segmenter output must be finite"):
        label_fidelity(g, labels, lambda x: intensity_segmenter(x) / 0, 4)
    with pytest.raises(ValueError, match="target_labels must have shape"):
        label_fidelity(g, labels[:2], intensity_segmenter, 4)
    with pytest.raises(ValueError, match="target_labels must hold class indices"):
        label_fidelity(g, labels + 4, intensity_segmenter, 4)
    with pytest.raises(ValueError, match="target_labels must be an integer"):
        label_fidelity(g, labels.float(), intensity_segmenter, 4)
    with pytest.raises(ValueError, match="num_classes must"):
        label_fidelity(g, labels, intensity_segmenter, 1)
    with pytest.raises(ValueError, match="generated must"):
        label_fidelity(g.long(), labels, intensity_segmenter, 4)


# ----------------------------------------------------------------------------------------------------------------
# Sudden convergence
# ----------------------------------------------------------------------------------------------------------------


def test_sudden_convergence_on_synthetic_curves():
    steps = list(range(0, 1001, 10))
    step = [0.1 if s < 400 else 0.9 for s in steps]
    assert sudden_convergence(steps, step) == Convergence(True, 390.0, 400.0)
    ramp = [s / 1000 for s in steps]  # 0.3 → 0.7 takes 40 % of the run
    assert sudden_convergence(steps, ramp) == Convergence(False, 290.0, 710.0)
    assert sudden_convergence(steps, [0.1 + 0.5 * s / 1000 for s in steps]) == Convergence(False, None, None)
    assert sudden_convergence(steps, [0.8] * len(steps)) == Convergence(False, None, 0.0)  # never below low
    # a steep ramp: 0.3 → 0.7 over 60 steps (logged: 510 → 580), within 10 % of the 1000-step run
    steep = [min(max((s - 470) / 150, 0.0), 1.0) for s in steps]
    v = sudden_convergence(torch.tensor(steps), torch.tensor(steep))
    assert v.sudden and v.start == 510.0 and v.end == 580.0
    # the window is inclusive: a rise of exactly window × run (1 of 10 steps) counts; a finer window does not
    assert sudden_convergence([0, 1, 2, 10], [0.0, 0.0, 0.9, 1.0], window=0.1).sudden
    assert not sudden_convergence([0, 1, 2, 10], [0.0, 0.0, 0.9, 1.0], window=0.05).sudden
    # the first time above high counts, even if the score falls back
    dip = sudden_convergence([0, 1, 2, 3, 40], [0.0, 0.8, 0.1, 0.9, 0.9])
    assert dip == Convergence(True, 0.0, 1.0)
    # custom thresholds
    assert sudden_convergence(steps, ramp, low=0.45, high=0.5).sudden


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=[0, 1, 2], scores=[0.0, 1.0]), "scores must have one value per step"),
        (dict(steps=[0, 2, 1], scores=[0.0, 0.5, 1.0]), "steps must be strictly increasing"),
        (dict(steps=[0], scores=[0.0]), "steps must hold at least 2"),
        (dict(steps=[0, 1], scores=[0.0, math.nan]), "scores must be finite"),
        (dict(steps=[0, 1], scores=[0.0, 1.0], low=0.7, high=0.3), "low must be below high"),
        (dict(steps=[0, 1], scores=[0.0, 1.0], window=0.0), "window must"),
        (dict(steps=[0, 1], scores=[0.0, 1.0], window=1.5), "window must"),
        (dict(steps=[0, 1], scores=[0.0, 1.0], low=math.nan), "low must"),
        (dict(steps="01", scores=[0.0, 1.0]), "steps must be a 1-D"),
        (dict(steps=[0, 1], scores=[True, False]), "scores must be a 1-D"),
        (dict(steps=torch.zeros(2, 2), scores=[0.0, 1.0]), "steps must be a 1-D"),
    ],
)
def test_sudden_convergence_rejects_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sudden_convergence(**kwargs)
