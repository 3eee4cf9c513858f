"""Classifier-free guidance wrapper."""

import pytest
import torch

from diffu.guidance import ClassifierFreeGuidance
from diffu.nn import UNet, UNetConfig
from diffu.samplers import ddim
from diffu.schedules import linear_schedule
from diffu.train import seeded


class Counting(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0
        self.prediction = "eps"

    def forward(self, x, t, y=None):
        self.calls += 1
        return self.net(x, t, y=y)


@pytest.fixture(scope="module")
def unet():
    with seeded(0):
        net = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_classes=3))
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
    return Counting(net.eval())


def test_scale_one_and_zero_are_exactly_the_two_branches(unet):
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t, y = torch.full((4,), 300.0), torch.tensor([0, 1, 2, 0])
    null = {"y": torch.tensor([3])}
    with torch.no_grad():
        cond, uncond = unet(x, t, y=y), unet(x, t, y=torch.full((4,), 3))
        unet.calls = 0
        assert torch.equal(ClassifierFreeGuidance(unet, 1.0, null)(x, t, y=y), cond)
        assert torch.equal(ClassifierFreeGuidance(unet, 0.0, null)(x, t, y=y), uncond)
        assert unet.calls == 2  # one batched forward pass per call
        s3 = ClassifierFreeGuidance(unet, 3.0, null)(x, t, y=y)
    torch.testing.assert_close(s3, uncond + 3 * (cond - uncond), rtol=1e-5, atol=1e-6)


def test_guided_model_drives_a_sampler_deterministically(unet):
    guided = ClassifierFreeGuidance(unet, 2.0, {"y": torch.tensor([3])})
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    kw = dict(steps=3, progress=False, model_kwargs={"y": torch.tensor([1, 2])})
    a = ddim(guided, x_T, linear_schedule(), generator=torch.Generator().manual_seed(2), **kw)
    b = ddim(guided, x_T, linear_schedule(), generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_errors(unet):
    with pytest.raises(ValueError, match="scale"):
        ClassifierFreeGuidance(unet, -1.0, {"y": torch.tensor([3])})
    with pytest.raises(ValueError, match="null"):
        ClassifierFreeGuidance(unet, 1.0, {})
    g = ClassifierFreeGuidance(unet, 1.0, {"y": torch.tensor([3])})
    with pytest.raises(ValueError, match="keys"):
        g(torch.zeros(1, 1, 8, 8), torch.zeros(1), text=torch.zeros(1, 2))


def test_sample_captions_is_seeded():
    from diffu.guidance import sample_captions
    from diffu.pretrained import load

    m = load("fmnist_t2i")
    caps = ["a bag", "a dark coat", "light trousers"]
    a = sample_captions(m, caps, scale=2.0, steps=2, seed=3)
    b = sample_captions(m, caps, scale=2.0, steps=2, seed=3)
    assert a.shape == (3, 1, 28, 28) and torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.equal(a, sample_captions(m, caps, scale=2.0, steps=2, seed=4))
