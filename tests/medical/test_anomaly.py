"""Anomaly detection (diffu.medical.anomaly): synthetic lesions with an exact ground truth, the four anomaly maps on
exact denoisers (a point-mass prior returns the healthy image exactly) and a tiny seeded UNet, and the AUROC and
best-Dice metrics against scikit-learn and a brute force."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from diffu.medical.anomaly import (
    anoddpm_map,
    autoencoder_map,
    best_dice,
    brain_mask,
    insert_lesions,
    masked_dps_map,
    mirror_difference,
    partial_timesteps,
    patch_masks,
    pixel_auroc,
)
from diffu.nn.unet import UNet, UNetConfig
from diffu.schedules import linear_schedule

from .test_translation import GaussianEps

S = linear_schedule()


def symmetric_brain(n=2, size=16, dtype=torch.float64):
    """An exactly left–right symmetric "brain": an ellipse of intensity that depends on x only through x², on a −1
    background (pixel-centre coordinates x and −x are exact negatives of each other in floating point)."""
    c = torch.arange(size, dtype=dtype) + 0.5 - size / 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    r = (yy / (0.45 * size)) ** 2 + (xx / (0.38 * size)) ** 2
    img = torch.where(r < 1, 0.6 - 0.8 * r + 0.1 * torch.cos(xx**2 / 4 + yy), torch.tensor(-1.0, dtype=dtype))
    return img[None, None].repeat(n, 1, 1, 1)


class PointMassEps(torch.nn.Module):
    """The exact ε of a prior concentrated on one image ``x*``: ``ε = (x_t − √ᾱ_t x*) / √(1 − ᾱ_t)``, so x̂_0 = x*
    at every step and every sampler ends exactly at x* (whatever the noise)."""

    def __init__(self, x_star, schedule):
        super().__init__()
        self.x_star, self.ab = x_star, schedule.alpha_bar

    def forward(self, x, t):
        ab = self.ab.to(x)[t.long()].reshape(-1, 1, 1, 1)
        return (x - ab.sqrt() * self.x_star.to(x)) / (1 - ab).sqrt()


@pytest.fixture(scope="module")
def net():
    """A tiny ε-UNet with seeded random (non-zero-output) weights."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_classes=None))
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.1)
    return m.eval()


# ----------------------------------------------------------------------------------------------------------------
# Lesions
# ----------------------------------------------------------------------------------------------------------------


def test_brain_mask_is_the_thresholded_image():
    x = symmetric_brain()
    m = brain_mask(x)
    assert m.dtype == torch.bool and m.shape == (2, 1, 16, 16)
    assert torch.equal(m, x > -0.95) and 0 < m.float().mean() < 1
    assert brain_mask(x, threshold=-1.0).sum() == (x > -1).sum()


@pytest.mark.parametrize("polarity", ["hyper", "hypo"])
def test_lesions_change_exactly_the_masked_brain_pixels(gen, polarity):
    x = symmetric_brain(4)
    xl, mask = insert_lesions(x, n=2, polarity=polarity, contrast=(0.2, 0.4), generator=gen(1))
    assert xl.shape == x.shape and mask.shape == (4, 1, 16, 16) and mask.dtype == torch.bool
    assert xl.dtype == torch.float64 and xl.min() >= -1 and xl.max() <= 1
    assert not (mask & ~brain_mask(x)).any()  # lesions stay inside the brain
    changed = xl != x
    clipped = (xl == 1) | (xl == -1)
    assert torch.equal(changed | (mask & clipped), mask)  # exactly the mask changes, except where clipping absorbed it
    assert bool((changed == mask)[~clipped].all())
    assert (xl >= x).all() if polarity == "hyper" else (xl <= x).all()
    assert mask.sum((1, 2, 3)).min() > 0  # every image got a lesion


def test_lesion_sizes_follow_the_radius_range(gen):
    """Hard-edged single lesions: each mask's area lies between the smallest possible ellipse (a = lo·W, b = 0.6 a,
    less one pixel ring of rasterisation) and the largest (a = b = hi·W, plus one ring)."""
    x = symmetric_brain(8, size=32)
    lo, hi = 0.08, 0.12
    _, mask = insert_lesions(x, n=1, radius=(lo, hi), edge=0.0, generator=gen(2))
    area = mask.sum((1, 2, 3)).double()
    a_min, a_max = lo * 32, hi * 32
    assert (area >= math.pi * (a_min - 1) * (0.6 * a_min - 1)).all()
    assert (area <= math.pi * (a_max + 1) ** 2).all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_one_sided_lesions_stay_on_their_side_and_the_mirror_difference_finds_them(gen, side):
    x = symmetric_brain(4, size=32)
    xl, mask = insert_lesions(x, n=1, side=side, radius=(0.05, 0.08), generator=gen(3))
    cols = mask.nonzero()[:, 3].double() + 0.5
    assert (cols < 16).all() if side == "left" else (cols > 16).all()
    md = mirror_difference(xl)
    assert md[mask].min() > 0  # every lesion pixel differs from its mirror (which is healthy)
    assert (md[~(mask | mask.flip(-1))] == 0).all() and torch.equal(md, md.flip(-1))
    # found twice: at the lesion and, with the same scores, at its healthy mirror image. So the best threshold
    # flags both (Dice 2P/(P + 2P) = 2/3) and, of the Q normal pixels, the P mirrors tie with the lesion on average
    # (they hold the same scores): AUROC = ((Q − P) P + P²/2)/(P Q) = 1 − P/(2Q), exactly
    brain = brain_mask(x)
    p = int(mask.sum())
    q = int(brain.sum()) - p
    assert pixel_auroc(md, mask, region=brain) == pytest.approx(1 - p / (2 * q), abs=1e-12)
    assert best_dice(md, mask, region=brain)[0] == pytest.approx(2 / 3, abs=1e-12)


def test_symmetric_lesions_are_invisible_to_the_mirror_difference(gen):
    x = symmetric_brain(4, size=32)
    assert mirror_difference(x).max() == 0  # the template is exactly symmetric
    xl, mask = insert_lesions(x, n=2, side="symmetric", generator=gen(4))
    assert mask.any() and torch.equal(mask, mask.flip(-1))
    assert mirror_difference(xl).max() == 0  # exactly: the lesion pair is mirrored too
    assert (xl != x).any()


def test_lesions_are_deterministic_per_generator(gen):
    x = symmetric_brain(3)
    a = insert_lesions(x, n=2, generator=gen(5))
    b = insert_lesions(x, n=2, generator=gen(5))
    c = insert_lesions(x, n=2, generator=gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.equal(insert_lesions(x, n=0, generator=gen(5))[0], x)  # no lesion, no change


def test_lesions_keep_dtype_and_device_float32(gen):
    x = symmetric_brain(2, dtype=torch.float32)
    xl, mask = insert_lesions(x, generator=gen(0))
    assert xl.dtype == torch.float32 and xl.device == x.device and mask.device == x.device


def test_lesion_errors(gen):
    x = symmetric_brain(2)
    with pytest.raises(ValueError, match="x must have values in"):
        insert_lesions((x + 1) * 127.5)
    with pytest.raises(ValueError, match="x must be a float image batch"):
        insert_lesions(x[0])
    with pytest.raises(ValueError, match="n must be"):
        insert_lesions(x, n=-1)
    with pytest.raises(ValueError, match="radius must be a pair"):
        insert_lesions(x, radius=0.1)
    with pytest.raises(ValueError, match="radius must have lo <= hi"):
        insert_lesions(x, radius=(0.2, 0.1))
    with pytest.raises(ValueError, match="each end of contrast"):
        insert_lesions(x, contrast=(0.0, 0.5))
    with pytest.raises(ValueError, match="side must be one of"):
        insert_lesions(x, side="top")
    with pytest.raises(ValueError, match="polarity must be one of"):
        insert_lesions(x, polarity="bright")
    with pytest.raises(ValueError, match="edge must be"):
        insert_lesions(x, edge=-1.0)
    with pytest.raises(ValueError, match=r"x\[0\] has no brain pixels"):
        insert_lesions(-torch.ones(1, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="generator must be"):
        insert_lesions(x, generator=3)
    with pytest.raises(ValueError, match="threshold must be"):
        brain_mask(x, threshold=1.0)


# ----------------------------------------------------------------------------------------------------------------
# Maps
# ----------------------------------------------------------------------------------------------------------------


def test_mirror_difference_is_the_flip_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(mirror_difference(x), (x - x.flip(-1)).abs().mean(1, keepdim=True), rtol=0, atol=0)
    with pytest.raises(ValueError, match="x must be a float image batch"):
        mirror_difference(x.long())


def test_autoencoder_map():
    x = symmetric_brain(2)
    assert autoencoder_map(lambda v: v, x).abs().max() == 0  # a perfect autoencoder finds nothing
    out = autoencoder_map(lambda v: torch.zeros_like(v), x)
    torch.testing.assert_close(out, x.abs(), rtol=0, atol=0)
    assert out.dtype == torch.float64
    with pytest.raises(TypeError, match="autoencoder must be callable"):
        autoencoder_map("ae", x)
    with pytest.raises(ValueError, match="autoencoder must return a reconstruction of x's shape"):
        autoencoder_map(lambda v: v[:, :, :8], x)


def test_partial_timesteps():
    assert partial_timesteps(250, 251).tolist() == list(range(250, -1, -1))
    ts = partial_timesteps(250, 10)
    assert ts[0] == 250 and ts[-1] == 0 and len(ts) == 10 and (ts[1:] < ts[:-1]).all()
    assert partial_timesteps(7, 1).tolist() == [7]
    for t in range(1, 40):  # distinct for every admissible step count (round half up)
        for s in range(1, t + 2):
            assert len(set(partial_timesteps(t, s).tolist())) == s
    with pytest.raises(ValueError, match="steps must be an integer in"):
        partial_timesteps(10, 12)
    with pytest.raises(ValueError, match="t_start must be"):
        partial_timesteps(-1, 1)


@pytest.mark.parametrize("eta,steps", [(1.0, None), (1.0, 7), (0.0, 7)])
def test_anoddpm_with_an_exact_point_mass_prior_returns_the_healthy_difference(gen, eta, steps):
    """Denoising with the exact ε of a prior on the healthy image x* ends at x* whatever the noise, so the map is
    exactly |x − x*|: the lesion, nothing else."""
    x_star = symmetric_brain(1)
    xl, mask = insert_lesions(x_star.repeat(3, 1, 1, 1), n=1, generator=gen(0))
    out = anoddpm_map(PointMassEps(x_star, S), xl, S, t_start=30, steps=steps, eta=eta, samples=2,
                      generator=gen(1), progress=False)  # fmt: skip
    torch.testing.assert_close(out, (xl - x_star).abs(), rtol=0, atol=1e-9)  # float64 rounding only
    assert pixel_auroc(out, mask) == 1.0


def test_anoddpm_is_deterministic_and_keeps_dtype(net, gen):
    x = symmetric_brain(2, dtype=torch.float32)
    a = anoddpm_map(net, x, S, t_start=40, steps=4, generator=gen(0), progress=False)
    b = anoddpm_map(net, x, S, t_start=40, steps=4, generator=gen(0), progress=False)
    c = anoddpm_map(net, x, S, t_start=40, steps=4, generator=gen(1), progress=False)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (2, 1, 16, 16)
    assert a.dtype == torch.float32 and (a >= 0).all()
    d = anoddpm_map(net.double(), x.double(), S, t_start=40, steps=4, generator=gen(0), progress=False)
    net.float()
    assert d.dtype == torch.float64 and d.device == x.device and torch.isfinite(d).all()  # (other noise draws)
    seen = []
    anoddpm_map(net, x, S, t_start=40, steps=4, samples=3, generator=gen(0), progress=False, callback=seen.append)
    assert [s.t for s in seen] == [40, 27, 13, 0] and seen[0].x.shape == (6, 1, 16, 16)


def test_anoddpm_errors(net):
    x = symmetric_brain(1, dtype=torch.float32)
    with pytest.raises(ValueError, match="t_start must be an integer in"):
        anoddpm_map(net, x, S, t_start=1000, progress=False)
    with pytest.raises(ValueError, match="steps must be an integer in"):
        anoddpm_map(net, x, S, t_start=10, steps=12, progress=False)
    with pytest.raises(ValueError, match="eta must be in"):
        anoddpm_map(net, x, S, t_start=10, eta=1.5, progress=False)
    with pytest.raises(ValueError, match="samples must be"):
        anoddpm_map(net, x, S, t_start=10, samples=0, progress=False)
    with pytest.raises(ValueError, match="x must have values in"):
        anoddpm_map(net, x * 3, S, progress=False)
    with pytest.raises(TypeError, match="model must be callable"):
        anoddpm_map(None, x, S, progress=False)
    with pytest.raises(TypeError, match="schedule must be"):
        anoddpm_map(net, x, "linear", progress=False)


def test_patch_masks(gen):
    m = patch_masks(50, 10, 13, keep=0.3, patch=4, generator=gen(0))
    assert m.shape == (50, 1, 10, 13) and m.dtype == torch.float32 and set(m.unique().tolist()) <= {0.0, 1.0}
    tiles = m[:, :, ::4, ::4]  # one pixel per tile (3 × 4 tiles, the last ones cut at the border)
    assert torch.equal(m, tiles.repeat_interleave(4, 2).repeat_interleave(4, 3)[..., :10, :13])
    p, n = tiles.mean().item(), tiles.numel()
    assert abs(p - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)  # binomial spread over 600 tiles (measured 0.29)
    assert patch_masks(2, 4, 4, keep=0.0).sum() == 0 and patch_masks(2, 4, 4, keep=1.0).min() == 1
    assert torch.equal(patch_masks(3, 8, 8, generator=gen(1)), patch_masks(3, 8, 8, generator=gen(1)))
    with pytest.raises(ValueError, match="keep must be"):
        patch_masks(1, 4, 4, keep=1.5)
    with pytest.raises(ValueError, match="patch must be"):
        patch_masks(1, 4, 4, patch=0)
    with pytest.raises(ValueError, match="height must be"):
        patch_masks(1, 0, 4)


def test_masked_dps_with_an_exact_point_mass_prior_returns_the_healthy_difference(gen):
    """x̂_0 = x* whatever x_t: the DPS gradient vanishes and every posterior sample is x*."""
    x_star = symmetric_brain(1)
    xl, mask = insert_lesions(x_star.repeat(2, 1, 1, 1), n=1, generator=gen(0))
    out = masked_dps_map(PointMassEps(x_star, S), xl, S, masks=3, t_start=40, steps=5, scale=2.0, generator=gen(1),
                         progress=False)  # fmt: skip
    torch.testing.assert_close(out, (xl - x_star).abs(), rtol=0, atol=1e-9)


def test_masked_dps_guidance_pulls_the_observed_pixels_to_the_measurement(gen):
    """On an exact Gaussian prior (per pixel N(0, 0.3²)) the unguided partial-noise reconstruction of an image far
    from the prior mean drifts towards the mean; the DPS correction keeps the observed pixels near the image: with
    every pixel observed, the map (= |x − x̂|) shrinks as ζ grows."""
    model = GaussianEps(torch.zeros(1, 1, 8, 8, dtype=torch.float64), torch.full((1, 1, 8, 8), 0.3), S)
    x = torch.full((2, 1, 8, 8), 0.8, dtype=torch.float64)
    err = [masked_dps_map(model, x, S, masks=2, keep=1.0, t_start=300, steps=10, scale=z, generator=gen(0),
                          progress=False).mean().item() for z in (0.0, 16.0, 64.0)]  # fmt: skip
    # measured 0.756, 0.591, 0.122: the unsquared-norm step moves each pixel by O(ζ/√D) through the denoiser's
    # Jacobian (≈ 0.1 for this narrow prior at t = 300), so ζ must be large on 8×8 images
    assert err[1] < 0.9 * err[0] and err[2] < 0.5 * err[1]


def test_masked_dps_hidden_only_averages_over_the_hiding_masks(net, gen):
    x = symmetric_brain(2, dtype=torch.float32)
    seen = []
    kw = dict(masks=3, keep=0.5, patch=4, t_start=20, steps=3, progress=False)
    out = masked_dps_map(net, x, S, hidden_only=True, callback=seen.append, generator=gen(7), **kw)
    plain = masked_dps_map(net, x, S, generator=gen(7), **kw)
    m = patch_masks(6, 16, 16, keep=0.5, patch=4, generator=gen(7)).reshape(3, 2, 1, 16, 16)  # the same first draws
    diff = (x.repeat(3, 1, 1, 1) - seen[-1].x).abs().reshape(3, 2, 1, 16, 16)
    hidden = 1 - m
    want = torch.where(hidden.sum(0) > 0, (diff * hidden).sum(0) / hidden.sum(0).clamp(min=1), diff.mean(0))
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(plain, diff.mean(0))
    assert not torch.equal(out, plain)


def test_masked_dps_is_deterministic_and_keeps_dtype(net, gen):
    x = symmetric_brain(2, dtype=torch.float32)
    kw = dict(masks=2, t_start=30, steps=3, progress=False)
    a = masked_dps_map(net, x, S, generator=gen(0), **kw)
    assert torch.equal(a, masked_dps_map(net, x, S, generator=gen(0), **kw))
    assert not torch.equal(a, masked_dps_map(net, x, S, generator=gen(1), **kw))
    assert a.shape == (2, 1, 16, 16) and a.dtype == torch.float32
    d = masked_dps_map(net.double(), x.double(), S, generator=gen(0), **kw)
    net.float()
    assert d.dtype == torch.float64 and d.device == x.device and torch.isfinite(d).all()  # (other noise draws)
    assert torch.equal(d, masked_dps_map(net.double(), x.double(), S, generator=gen(0), **kw))
    net.float()


def test_masked_dps_errors(net):
    x = symmetric_brain(1, dtype=torch.float32)
    for kw, match in [
        ({"masks": 0}, "masks must be"),
        ({"keep": -0.1}, "keep must be"),
        ({"patch": 0}, "patch must be"),
        ({"t_start": 0}, "t_start must be"),
        ({"steps": 300}, "steps must be an integer in"),
        ({"scale": -1.0}, "scale must be"),
        ({"eta": 2.0}, "eta must be in"),
    ]:
        with pytest.raises(ValueError, match=match):
            masked_dps_map(net, x, S, progress=False, **kw)
    with pytest.raises(TypeError, match="hidden_only must be"):
        masked_dps_map(net, x, S, hidden_only=1, progress=False)
    with pytest.raises(TypeError, match="generator must be"):
        masked_dps_map(net, x, S, generator=0, progress=False)


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------


def _scores_with_ties(seed, shape=(3, 1, 9, 7)):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < 0.2
    s = (torch.rand(shape, generator=g) + 0.6 * mask).mul(5).round() / 5  # few distinct values: many ties
    return s.double(), mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pixel_auroc_matches_sklearn(seed):
    s, mask = _scores_with_ties(seed)
    want = roc_auc_score(mask.flatten().numpy(), s.flatten().numpy())
    assert pixel_auroc(s, mask) == pytest.approx(want, abs=1e-12)
    region = torch.zeros_like(mask)
    region[..., 2:7, :] = True
    want_r = roc_auc_score(mask[region].numpy(), s[region].numpy())
    assert pixel_auroc(s, mask.float(), region=region) == pytest.approx(want_r, abs=1e-12)


def test_pixel_auroc_extremes():
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :2] = True
    assert pixel_auroc(mask.double(), mask) == 1.0
    assert pixel_auroc(-mask.double(), mask) == 0.0
    assert pixel_auroc(torch.zeros(1, 1, 4, 4), mask) == 0.5  # all tied: uninformative


def _dice_brute_force(s, mask):
    best = 0.0
    for tau in s.unique().tolist():
        pred = s >= tau
        best = max(best, 2 * (pred & mask).sum().item() / (pred.sum().item() + mask.sum().item()))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_dice_matches_a_brute_force(seed):
    s, mask = _scores_with_ties(seed)
    dice, tau = best_dice(s, mask)
    assert dice == pytest.approx(_dice_brute_force(s, mask), abs=1e-12)
    pred = s >= tau
    assert dice == pytest.approx(2 * (pred & mask).sum().item() / (pred.sum().item() + mask.sum().item()), abs=1e-12)
    region = torch.rand(s.shape, generator=torch.Generator().manual_seed(seed)) < 0.7
    d_r, _ = best_dice(s, mask, region=region)
    assert d_r == pytest.approx(_dice_brute_force(s[region], mask[region]), abs=1e-12)


def test_best_dice_of_a_perfect_map_is_one():
    mask = torch.zeros(2, 1, 5, 5, dtype=torch.bool)
    mask[0, 0, 1:3, 1:4] = True
    s = mask.double() * 0.7 + 0.1
    assert best_dice(s, mask) == (1.0, pytest.approx(0.8))


def test_metric_errors():
    s, mask = _scores_with_ties(0)
    with pytest.raises(ValueError, match="mask must mark both anomalous and normal pixels"):
        pixel_auroc(s, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="mask must mark at least one anomalous pixel"):
        best_dice(s, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="mask must be a tensor of scores's shape"):
        pixel_auroc(s, mask[:1])
    with pytest.raises(ValueError, match="mask must be binary"):
        best_dice(s, mask.double() * 2)
    with pytest.raises(ValueError, match="region must be a tensor"):
        pixel_auroc(s, mask, region=np.ones(s.shape))
    with pytest.raises(ValueError, match="scores must be finite"):
        pixel_auroc(s.masked_fill(mask, float("nan")), mask)
    with pytest.raises(ValueError, match="scores must be a float image batch"):
        best_dice(s[0], mask[0])


@pytest.mark.gpu
def test_maps_follow_a_cuda_device(net, gen):
    x = symmetric_brain(2, dtype=torch.float32).cuda()
    xl, mask = insert_lesions(x, generator=torch.Generator(device="cuda").manual_seed(0))
    assert xl.is_cuda and mask.is_cuda
    g = torch.Generator(device="cuda").manual_seed(0)
    out = masked_dps_map(net.cuda(), xl, S, masks=2, t_start=20, steps=3, generator=g, progress=False)
    out2 = anoddpm_map(net, xl, S, t_start=20, steps=3, generator=g, progress=False)
    net.cpu()
    assert out.is_cuda and out2.is_cuda and 0 <= pixel_auroc(out, mask) <= 1
