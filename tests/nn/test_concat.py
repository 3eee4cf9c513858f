"""The concatenation-conditioned UNet (diffu.nn.concat): it is the inner UNet on ``[x_t, cond]``, rebuilds from its
config alone (the shipped-weights manifest), checks ``cond`` with clear errors, and samples through
``model_kwargs={"cond": …}``."""

import dataclasses

import pytest
import torch

from diffu import pretrained
from diffu.nn.concat import ConcatUNet, ConcatUNetConfig
from diffu.nn.unet import UNetConfig
from diffu.samplers import ddim
from diffu.schedules import linear_schedule

CFG = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8)


@pytest.fixture(scope="module")
def net():
    """A two-channel-condition ConcatUNet with seeded random weights (its zero-initialised output layer replaced, so
    that the output depends on the input)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = ConcatUNet(ConcatUNetConfig(cond_channels=2, **CFG))
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.1)
    return m.eval()


def test_config_extends_the_unet_config():
    cfg = ConcatUNetConfig(cond_channels=3, in_channels=2, out_channels=2, **CFG)
    inner = cfg.unet_config()
    assert isinstance(cfg, UNetConfig) and isinstance(inner, UNetConfig) and type(inner) is UNetConfig
    assert inner.in_channels == 5 and inner.out_channels == 2 and cfg.to_dict()["cond_channels"] == 3
    assert ConcatUNetConfig(**cfg.to_dict()) == cfg  # round trip through the manifest's JSON dict
    with pytest.raises(ValueError, match="cond_channels must be"):
        ConcatUNetConfig(cond_channels=0)
    with pytest.raises(ValueError, match="image_size must be divisible"):
        ConcatUNetConfig(image_size=7, channel_mult=(1, 2))
    with pytest.raises(TypeError, match="config must be a ConcatUNetConfig"):
        ConcatUNet(UNetConfig())


def test_forward_is_the_inner_unet_on_the_concatenation(net, gen):
    x, cond = torch.randn(3, 1, 8, 8, generator=gen(0)), torch.randn(3, 2, 8, 8, generator=gen(1))
    t = torch.tensor([3.0, 500.0, 999.0])
    with torch.no_grad():
        out = net(x, t, cond=cond)
        assert out.shape == (3, 1, 8, 8)
        assert torch.equal(out, net.unet(torch.cat([x, cond], 1), t))
        assert (out - net(x, t, cond=cond.flip(0))).abs().max() > 1e-3  # the condition matters
        assert torch.equal(net(x, t, cond=cond.double()), out)  # cond follows x's dtype
    assert net.prediction == "eps" and net.null_class is None


def test_rebuilds_from_its_manifest_entry(net, gen):
    """:func:`diffu.pretrained.build` makes the same network from the config dict (as the manifest stores it), and
    with the same weights the same outputs."""
    entry = {"arch": "diffu.nn.concat:ConcatUNet", "config_class": "diffu.nn.concat:ConcatUNetConfig",
             "config": dataclasses.asdict(net.config)}  # fmt: skip
    built = pretrained.build(entry)
    assert type(built) is ConcatUNet and built.config == net.config
    assert list(built.state_dict()) == list(net.state_dict())
    built.load_state_dict(net.state_dict())
    x, cond = torch.randn(2, 1, 8, 8, generator=gen(0)), torch.randn(2, 2, 8, 8, generator=gen(1))
    with torch.no_grad():
        assert torch.equal(built.eval()(x, 10.0, cond=cond), net(x, 10.0, cond=cond))


def test_cond_errors(net):
    x = torch.randn(2, 1, 8, 8)
    for cond, match in [
        (None, "cond must be given"),
        (torch.randn(2, 1, 8, 8), r"cond must be a tensor of shape \(2, 2, 8, 8\)"),
        (torch.randn(1, 2, 8, 8), "cond must be a tensor of shape"),
        (torch.randn(2, 2, 4, 4), "cond must be a tensor of shape"),
        ([[0.0]], "cond must be a tensor of shape"),
        (torch.ones(2, 2, 8, 8, dtype=torch.long), "cond must be a floating-point tensor"),
    ]:
        with pytest.raises(ValueError, match=match):
            net(x, 1.0, cond=cond)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, H, W\)"):
        net(torch.randn(2, 2, 8, 8), 1.0, cond=torch.randn(2, 2, 8, 8))
    with pytest.raises(ValueError, match="x must have a height and width divisible by 2"):
        net(torch.randn(2, 1, 7, 7), 1.0, cond=torch.randn(2, 2, 7, 7))


def test_class_labels_pass_through(gen):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        m = ConcatUNet(num_classes=3, **CFG).eval()
        for p in m.parameters():  # the zero-initialised convolutions would hide the labels
            torch.nn.init.normal_(p, std=0.1)
    x, cond = torch.randn(2, 1, 8, 8, generator=gen(0)), torch.randn(2, 1, 8, 8, generator=gen(1))
    with torch.no_grad():
        a, b = m(x, 5.0, cond=cond, y=torch.tensor([0, 1])), m(x, 5.0, cond=cond, y=torch.tensor([2, 2]))
    assert m.null_class == 3 and not torch.equal(a, b)
    with pytest.raises(ValueError, match="y must be"):
        m(x, 5.0, cond=cond, y=torch.tensor([0, 7]))


def test_samples_through_model_kwargs(net, gen):
    cond = torch.randn(2, 2, 8, 8, generator=gen(1))
    kw = dict(steps=5, model_kwargs={"cond": cond}, progress=False, eta=1.0)
    a = ddim(net, (2, 1, 8, 8), linear_schedule(), generator=gen(0), **kw)
    assert a.shape == (2, 1, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, ddim(net, (2, 1, 8, 8), linear_schedule(), generator=gen(0), **kw))
    b = ddim(net, (2, 1, 8, 8), linear_schedule(), generator=gen(0), **{**kw, "model_kwargs": {"cond": -cond}})
    assert not torch.equal(a, b)
    d = ddim(net.double(), torch.randn(2, 1, 8, 8, generator=gen(0), dtype=torch.float64), linear_schedule(),
             **{**kw, "eta": 0.0})  # fmt: skip
    net.float()
    assert d.dtype == torch.float64


@pytest.mark.gpu
def test_follows_a_cuda_device(net):
    m = ConcatUNet(cond_channels=2, **CFG).cuda()
    x, cond = torch.randn(2, 1, 8, 8, device="cuda"), torch.randn(2, 2, 8, 8, device="cuda")
    assert m(x, 1.0, cond=cond).is_cuda
    with pytest.raises(ValueError, match="cond must be on x's device"):
        m(x, 1.0, cond=cond.cpu())
