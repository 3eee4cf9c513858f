"""Tests of diffu.segmentation.latent (SDSeg): the folded image condition, the structures' latents, the loss (against
its formula and an exact model) and single-step vs DDIM inference with an exact model and an exact autoencoder."""

import pytest
import torch
import torch.nn.functional as F

from diffu.schedules import scaled_linear_schedule
from diffu.segmentation import (
    encode_structures,
    image_condition,
    sdseg_loss,
    sdseg_schedule,
    sdseg_segment,
)

K = 4  # background + 3 structures


class ShuffleAE(torch.nn.Module):
    """An exact 'autoencoder': the mask folded 2× (1×H×W ↔ 4×H/2×W/2), so a latent decodes to its mask exactly."""

    def encode(self, m):
        return F.pixel_unshuffle(m, 2)

    def decode(self, z):
        return F.pixel_shuffle(z, 2)


def labels_of(n=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, K, (n, size, size), generator=g)


def image_from(labels):
    """An image that encodes its labels (so that an oracle can read them back from the condition)."""
    return (labels.float() / (K - 1) * 2 - 1)[:, None]


class Oracle(torch.nn.Module):
    """ε̂ such that x̂₀ is exactly the latent of structure y of the image in ``cond`` (read back from the folded
    image): the perfect SDSeg model for the ShuffleAE."""

    def __init__(self, schedule):
        super().__init__()
        self.abar, self.ae, self.w = schedule.alpha_bar, ShuffleAE(), torch.nn.Parameter(torch.zeros(()))
        self.calls = 0

    def forward(self, z, t, cond, y):
        self.calls += 1
        img = F.pixel_shuffle(cond, int((cond.shape[1]) ** 0.5))[:, 0]
        labels = ((img + 1) / 2 * (K - 1)).round().long()
        mask = (2.0 * (labels == (y + 1).view(-1, 1, 1)).float() - 1)[:, None]
        z0 = self.ae.encode(mask)
        a = self.abar[t.long()].view(-1, 1, 1, 1).to(z.dtype)
        return (z - a.sqrt() * z0) / (1 - a).sqrt() + 0 * self.w


def test_schedule_is_sdseg_official():
    s = sdseg_schedule()
    assert s.T == 1000 and torch.allclose(s.betas, scaled_linear_schedule(1000, 0.0015, 0.0155).betas)
    assert float(s.betas[0]) == pytest.approx(0.0015) and float(s.betas[-1]) == pytest.approx(0.0155)


def test_image_condition_folds_losslessly():
    x = torch.randn(2, 1, 32, 32)
    c = image_condition(x, 8)
    assert c.shape == (2, 16, 8, 8) and torch.equal(F.pixel_shuffle(c, 4), x)
    assert torch.equal(image_condition(x, 32), x)
    for bad in (5, 0, 64):
        with pytest.raises(ValueError, match="size"):
            image_condition(x, bad)


def test_encode_structures_are_the_structures_masks():
    y = labels_of()
    z = encode_structures(ShuffleAE(), y, K, batch_size=2)
    assert z.shape == (3, K - 1, 4, 4, 4)
    for s in range(K - 1):
        want = F.pixel_unshuffle((2.0 * (y == s + 1).float() - 1)[:, None], 2)
        assert torch.equal(z[:, s], want)
    with pytest.raises(ValueError, match="labels"):
        encode_structures(ShuffleAE(), y + K, K)
    with pytest.raises(TypeError, match="autoencoder"):
        encode_structures(object(), y, K)


def test_loss_is_its_formula_with_the_documented_draws():
    sched = sdseg_schedule(50)
    y = labels_of(4)
    images, lat = image_from(y), encode_structures(ShuffleAE(), y, K)
    model = Oracle(sched)
    net = lambda z, t, cond, y: 0.5 * model(z, t, cond, y) + 0.1  # noqa: E731 — an imperfect model
    loss = sdseg_loss(net, sched, images, lat, torch.Generator().manual_seed(3), x0_weight=0.7)
    g = torch.Generator().manual_seed(3)  # the draws in order: s, t, ε
    s = torch.randint(K - 1, (4,), generator=g)
    t = torch.randint(50, (4,), generator=g)
    z0 = lat[torch.arange(4), s]
    eps = torch.randn(z0.shape, generator=g)
    a = sched.alpha_bar.float()[t].view(-1, 1, 1, 1)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
    e = net(zt, t, image_condition(images, 4), s)
    want = (e - eps).abs().mean() + 0.7 * ((zt - (1 - a).sqrt() * e) / a.sqrt() - z0).abs().mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    # the exact model has zero loss
    assert float(sdseg_loss(model, sched, images, lat, torch.Generator().manual_seed(3)).detach()) < 1e-4


@pytest.mark.parametrize("steps", [1, 5])
def test_exact_model_segments_exactly_in_one_step_and_in_ddim(steps):
    sched = sdseg_schedule(50)
    y = labels_of(5, seed=2)
    model = Oracle(sched)
    out = sdseg_segment(model, ShuffleAE(), image_from(y), sched, num_structures=K - 1, steps=steps,
                        generator=torch.Generator().manual_seed(0), progress=False)  # fmt: skip
    assert out.scores.shape == (5, K - 1, 8, 8) and out.structures == (0, 1, 2)
    assert torch.equal(out.labels, y)
    assert model.calls == (K - 1) * steps  # one batch per structure and step
    assert torch.allclose(out.scores, torch.stack([2.0 * (y == s).float() - 1 for s in (1, 2, 3)], 1), atol=1e-3)


def test_conditional_segmentation_returns_only_the_requested_structure():
    sched = sdseg_schedule(50)
    y = labels_of(4, seed=5)
    out = sdseg_segment(Oracle(sched), ShuffleAE(), image_from(y), sched, num_structures=3, structures=[1],
                        progress=False)  # fmt: skip
    assert out.scores.shape == (4, 1, 8, 8) and out.structures == (1,)
    assert torch.equal(out.labels, torch.where(y == 2, 2, 0))


def test_deterministic_for_a_generator_and_noise_shared_by_structures():
    sched = sdseg_schedule(20)
    seen = []

    def model(z, t, cond, y):
        seen.append(z.clone())
        return torch.zeros_like(z)

    images = image_from(labels_of(2))
    a = sdseg_segment(model, ShuffleAE(), images, sched, num_structures=3, generator=torch.Generator().manual_seed(1),
                      progress=False)  # fmt: skip
    b = sdseg_segment(model, ShuffleAE(), images, sched, num_structures=3, generator=torch.Generator().manual_seed(1),
                      progress=False)  # fmt: skip
    assert torch.equal(a.scores, b.scores)
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[0], seen[2])  # one z_T for every structure
    c = sdseg_segment(model, ShuffleAE(), images, sched, num_structures=3, generator=torch.Generator().manual_seed(2),
                      progress=False)  # fmt: skip
    assert not torch.equal(a.scores, c.scores)


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(structures=[0, 0]), ValueError, "structures"),
        (dict(structures=[3]), ValueError, "structures"),
        (dict(structures=[]), ValueError, "structures"),
        (dict(structures="0"), ValueError, "structures"),
        (dict(steps=0), ValueError, "steps"),
        (dict(steps=21), ValueError, "steps"),
        (dict(num_structures=0), ValueError, "num_structures"),
        (dict(progress="yes"), TypeError, "progress"),
        (dict(generator=0), TypeError, "generator"),
    ],
)
def test_segment_bad_input_names_the_argument(kw, err, match):
    sched = sdseg_schedule(20)
    args = {"num_structures": 3, "progress": False, **kw}
    with pytest.raises(err, match=match):
        sdseg_segment(Oracle(sched), ShuffleAE(), image_from(labels_of(2)), sched, **args)
    with pytest.raises(TypeError, match="autoencoder"):
        sdseg_segment(Oracle(sched), object(), image_from(labels_of(2)), sched, num_structures=3)


def test_loss_bad_input_names_the_argument():
    sched = sdseg_schedule(20)
    y = labels_of(2)
    lat = encode_structures(ShuffleAE(), y, K)
    with pytest.raises(ValueError, match="mask_latents"):
        sdseg_loss(Oracle(sched), sched, image_from(y), lat[:1])
    with pytest.raises(ValueError, match="mask_latents"):
        sdseg_loss(Oracle(sched), sched, image_from(y), lat[:, 0])
    with pytest.raises(ValueError, match="x0_weight"):
        sdseg_loss(Oracle(sched), sched, image_from(y), lat, x0_weight=-1.0)
    with pytest.raises(TypeError, match="model"):
        sdseg_loss(None, sched, image_from(y), lat)
