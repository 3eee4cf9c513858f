"""The MedSegDiff-style segmentation network (diffu.nn.medsegdiff): the FF-Parser against closed forms (identity at
initialisation, a pure cosine filtered and phase-shifted), the network as its inner UNet plus the fused condition,
the flags' parameter sets, the config round trip, and training/sampling through diffu.segmentation unchanged."""

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from diffu import pretrained
from diffu.nn.medsegdiff import FFParser, MedSegDiffConfig, MedSegDiffUNet
from diffu.nn.unet import UNet, UNetConfig
from diffu.schedules import linear_schedule
from diffu.segmentation import mask_diffusion_loss, segment

CFG = dict(in_channels=2, out_channels=2, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
           image_size=8)  # fmt: skip
FLAGS = [dict(ff_parser=f, cond_attention=a) for f in (False, True) for a in (False, True)]


def make(seed=0, perturb=True, **flags):
    """A network with torch's RNG forked and seeded; with ``perturb`` every parameter except the FF-Parsers' is
    redrawn N(0, 0.1²) (the zero-initialised output layer would hide the input), the parsers staying the identity."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = MedSegDiffUNet(**CFG, **flags)
        if perturb:
            for name, p in net.named_parameters():
                if not name.startswith("ff."):
                    torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def cosine(k, l, height, width, phase=0.0, dtype=torch.float64):
    """``cos(2π(k h/H + l w/W) + phase)`` on an ``H × W`` grid."""
    h = torch.arange(height, dtype=dtype)[:, None]
    w = torch.arange(width, dtype=dtype)[None, :]
    return torch.cos(2 * math.pi * (k * h / height + l * w / width) + phase)


def inputs(n=3, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, size, size, generator=g), torch.randn(n, 1, size, size, generator=g)


# ----------------------------------------------------------------------------------------------------------------
# FFParser
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 6), (8, 7), (5, 5)])
def test_ffparser_is_the_identity_at_initialisation(size, gen):
    ff = FFParser(3, *size)
    assert ff.weight.shape == (3, size[0], size[1] // 2 + 1, 2)
    x = torch.randn(4, 3, *size, generator=gen(0))
    out = ff(x)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert (out - x).abs().max() < 1e-5  # float32 round-off of rfft2 → irfft2 (measured: ~5e-7)
    x64 = x.double()
    assert (ff.double()(x64) - x64).abs().max() < 1e-12  # float64 round-off (measured: ~1e-15)


@pytest.mark.parametrize("width", [6, 7])
def test_ffparser_multiplies_one_frequency_by_its_complex_weight(width):
    """A cosine at the half-spectrum entry (k, l), 0 < l < W/2, comes out as a·cos(θ + φ) when that entry's weight is
    a·e^{iφ}: a real output, the gain and the phase of the complex weight, and nothing else changed."""
    k, l, a, phi = 3, 2, 0.7, 0.9
    ff = FFParser(2, 8, width).double()
    with torch.no_grad():
        ff.weight[0, k, l] = torch.tensor([a * math.cos(phi), a * math.sin(phi)], dtype=torch.float64)
    x = torch.stack([cosine(k, l, 8, width), cosine(k, l, 8, width)])[None]  # (1, 2, 8, W)
    out = ff(x)
    assert out.dtype == torch.float64 and not out.is_complex()
    torch.testing.assert_close(out[0, 0], a * cosine(k, l, 8, width, phase=phi), atol=1e-12, rtol=0)
    torch.testing.assert_close(out[0, 1], x[0, 1], atol=1e-12, rtol=0)  # channel 1 keeps its identity weight


def test_ffparser_zero_weight_removes_that_frequency_only():
    x = (cosine(3, 1, 8, 6) + 0.5 * cosine(5, 2, 8, 6) + 0.25)[None, None]  # (1, 1, 8, 6): two cosines and DC
    ff = FFParser(1, 8, 6).double()
    with torch.no_grad():
        ff.weight[0, 3, 1] = 0.0
    torch.testing.assert_close(ff(x)[0, 0], 0.5 * cosine(5, 2, 8, 6) + 0.25, atol=1e-12, rtol=0)
    with torch.no_grad():
        ff.weight[0, 0, 0] = 0.0  # the DC entry: the mean goes too
    torch.testing.assert_close(ff(x)[0, 0], 0.5 * cosine(5, 2, 8, 6), atol=1e-12, rtol=0)


def test_ffparser_real_output_with_a_random_complex_weight(gen):
    ff = FFParser(3, 8, 8)
    with torch.no_grad():
        ff.weight.copy_(torch.randn(ff.weight.shape, generator=gen(1)))
    x = torch.randn(2, 3, 8, 8, generator=gen(0))
    out = ff(x)
    assert not out.is_complex() and out.dtype == torch.float32 and out.shape == x.shape
    assert torch.isfinite(out).all() and (out - x).abs().max() > 0.1  # a random filter does change x
    assert torch.equal(ff(x), out)  # deterministic


def test_ffparser_dtypes_and_gradient(gen):
    ff = FFParser(2, 4, 4)
    x64 = torch.randn(2, 2, 4, 4, generator=gen(0), dtype=torch.float64)
    out = ff(x64)  # a float32 module filters a float64 input in float64
    assert out.dtype == torch.float64 and (out - x64).abs().max() < 1e-12
    half = ff(x64.to(torch.bfloat16))  # half precision is filtered in float32 and cast back
    assert half.dtype == torch.bfloat16 and (half.double() - x64).abs().max() < 0.05  # bfloat16 has 8 bits
    ff(x64.float()).square().sum().backward()
    assert ff.weight.grad is not None and ff.weight.grad.abs().max() > 0


def test_ffparser_errors():
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        FFParser(0, 8, 8)
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        FFParser(2, 8, 2.5)
    ff = FFParser(2, 8, 6)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2, 8, 6\)"):
        ff(torch.randn(1, 2, 6, 8))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2, 8, 6\)"):
        ff(torch.randn(1, 3, 8, 6))
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        ff(torch.ones(1, 2, 8, 6, dtype=torch.long))
    with pytest.raises(TypeError, match="x must be a tensor"):
        ff([[0.0]])


# ----------------------------------------------------------------------------------------------------------------
# MedSegDiffConfig and the parameter sets
# ----------------------------------------------------------------------------------------------------------------


def test_config_extends_the_unet_config_and_round_trips():
    cfg = MedSegDiffConfig(cond_channels=3, ff_parser=False, **CFG)
    inner = cfg.unet_config()
    assert isinstance(cfg, UNetConfig) and type(inner) is UNetConfig
    assert inner.in_channels == 2 and inner.out_channels == 2  # the diffusion UNet reads the mask alone
    assert MedSegDiffConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg  # the manifest's JSON
    assert MedSegDiffConfig().ff_parser is True and MedSegDiffConfig().cond_attention is True


def test_rebuilds_from_its_manifest_entry(gen):
    net = make(ff_parser=True, cond_attention=True)
    with torch.no_grad():
        net.ff[0].weight.add_(0.1 * torch.randn(net.ff[0].weight.shape, generator=gen(2)))  # not the default
    entry = {"arch": "diffu.nn.medsegdiff:MedSegDiffUNet", "config_class": "diffu.nn.medsegdiff:MedSegDiffConfig",
             "config": json.loads(json.dumps(dataclasses.asdict(net.config)))}  # fmt: skip
    built = pretrained.build(entry)
    assert type(built) is MedSegDiffUNet and built.config == net.config
    assert list(built.state_dict()) == list(net.state_dict())
    built.load_state_dict(net.state_dict())
    x, cond = inputs(2)
    with torch.no_grad():
        assert torch.equal(built.eval()(x, 10.0, cond=cond), net(x, 10.0, cond=cond))


def test_the_flags_change_the_parameter_set_as_documented():
    names = {}
    for flags in FLAGS:
        net = MedSegDiffUNet(**CFG, **flags)
        keys = set(net.state_dict())
        names[tuple(flags.values())] = keys
        assert any(k.startswith("ff.") for k in keys) == flags["ff_parser"]
        assert any(k.startswith("dyn.") for k in keys) == flags["cond_attention"]
        assert {k.split(".")[0] for k in keys} <= {"unet", "cond_stem", "cond_down", "cond_mid", "ff", "dyn"}
    plain, full = names[(False, False)], names[(True, True)]
    assert {k for k in plain if k.startswith("unet.")} == {"unet." + k for k in UNet(UNetConfig(**CFG)).state_dict()}
    assert full - plain == {k for k in full if k.startswith(("ff.", "dyn."))} and plain <= full
    net = MedSegDiffUNet(**CFG)
    # one parser per downsampling (one here, to 4×4 at width 8): C · H · (W//2 + 1) complex numbers
    assert sum(p.numel() for p in net.ff.parameters()) == 8 * 4 * 3 * 2
    assert sum(p.numel() for p in net.dyn.parameters()) == 2 * 2 * 8  # two LayerNorms, scale and shift per channel


# ----------------------------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: f"ff={f['ff_parser']},att={f['cond_attention']}")
def test_with_a_silent_condition_encoder_it_is_the_inner_unet(flags):
    """With every conditioning-encoder parameter at zero the condition features are exactly 0 at every fusion
    (and the dynamic encoding of 0 is 0): the network is its diffusion UNet on the noisy mask alone (the
    FF-Parsers, at the identity, up to round-off); and the condition then does not matter."""
    net = make(**flags)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith("cond_"):
                p.zero_()
    x, cond = inputs()
    t = torch.tensor([3.0, 400.0, 999.0])
    with torch.no_grad():
        out, ref = net(x, t, cond=cond), net.unet(x, t)
        assert out.shape == (3, 2, 8, 8)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)  # FFT round-off (measured: ~1e-7)
        if not flags["ff_parser"]:
            assert torch.equal(out, ref)
        assert torch.equal(net(x, t, cond=-cond), out)


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: f"ff={f['ff_parser']},att={f['cond_attention']}")
def test_the_condition_and_the_state_both_matter(flags):
    net = make(**flags)
    x, cond = inputs()
    with torch.no_grad():
        out = net(x, 5.0, cond=cond)
        assert out.shape == (3, 2, 8, 8) and torch.isfinite(out).all()
        # each input enters: differences far above float32 round-off (~1e-6; measured: 0.1 for cond, 0.2 for x,
        # 1e-3 for t, whose embedding the small random weights damp)
        assert (out - net(x, 5.0, cond=cond.flip(0))).abs().max() > 1e-4
        assert (out - net(x.flip(0), 5.0, cond=cond)).abs().max() > 1e-4
        assert (out - net(x, 500.0, cond=cond)).abs().max() > 1e-4
    assert net.prediction == "eps" and net.null_class is None


def test_the_ff_parser_at_initialisation_leaves_the_network_unchanged():
    """Switching the FF-Parser on adds identity filters: with the other weights shared, the outputs agree."""
    off, on = make(ff_parser=False), make(ff_parser=True)
    missing, unexpected = on.load_state_dict(off.state_dict(), strict=False)
    assert set(missing) == {k for k in on.state_dict() if k.startswith("ff.")} and not unexpected
    x, cond = inputs()
    with torch.no_grad():
        torch.testing.assert_close(on(x, 7.0, cond=cond), off(x, 7.0, cond=cond), atol=1e-5, rtol=0)


def test_the_dynamic_encoding_is_the_layernorm_product():
    """At the fusion, ``c ← (LN(c) ⊙ LN(h)) ⊙ c`` with LN over (C, H, W) per sample and a per-channel affine."""
    net = make(cond_attention=True, ff_parser=False)
    seen = {}
    net.dyn[0].register_forward_hook(lambda m, args, out: seen.update(c=args[0], h=args[1], out=out))
    x, cond = inputs()
    with torch.no_grad():
        net(x, 5.0, cond=cond)
        dyn = net.dyn[0]
        ln = [F.group_norm(v, 1, m.weight, m.bias, m.eps) for v, m in ((seen["c"], dyn.norm_cond),
                                                                       (seen["h"], dyn.norm_state))]  # fmt: skip
        torch.testing.assert_close(seen["out"], ln[0] * ln[1] * seen["c"])
    assert seen["c"].shape == seen["h"].shape == (3, 8, 4, 4)
    plain = make(cond_attention=False, ff_parser=False)
    plain.load_state_dict(net.state_dict(), strict=False)
    with torch.no_grad():
        assert (plain(x, 5.0, cond=cond) - net(x, 5.0, cond=cond)).abs().max() > 1e-3


def test_determinism_and_dtypes():
    a, b = make(seed=3), make(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    x, cond = inputs()
    with torch.no_grad():
        out = a(x, 5.0, cond=cond)
        assert torch.equal(out, b(x, 5.0, cond=cond))
        a.double()
        out64 = a(x.double(), 5.0, cond=cond)  # cond follows x's dtype
        assert out64.dtype == torch.float64 and torch.equal(out64, a(x.double(), 5.0, cond=cond.double()))
        torch.testing.assert_close(out64.float(), out, atol=1e-4, rtol=0)  # float32 vs float64 (measured: ~1e-6)


def test_class_labels_pass_through():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        net = MedSegDiffUNet(num_classes=3, **CFG).eval()
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.1)
    x, cond = inputs(2)
    with torch.no_grad():
        a, b = net(x, 5.0, cond=cond, y=torch.tensor([0, 1])), net(x, 5.0, cond=cond, y=torch.tensor([2, 2]))
    assert net.null_class == 3 and not torch.equal(a, b)
    with pytest.raises(ValueError, match="y must be"):
        net(x, 5.0, cond=cond, y=torch.tensor([0, 7]))


def test_input_errors_name_the_argument():
    net = make()
    x, _ = inputs(2)
    for cond, match in [
        (None, "cond must be given"),
        (torch.randn(2, 2, 8, 8), r"cond must be a tensor of shape \(2, 1, 8, 8\)"),
        (torch.randn(1, 1, 8, 8), "cond must be a tensor of shape"),
        (torch.randn(2, 1, 4, 4), "cond must be a tensor of shape"),
        ([[0.0]], "cond must be a tensor of shape"),
        (torch.ones(2, 1, 8, 8, dtype=torch.long), "cond must be a floating-point tensor"),
    ]:
        with pytest.raises(ValueError, match=match):
            net(x, 1.0, cond=cond)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2, H, W\)"):
        net(torch.randn(2, 1, 8, 8), 1.0, cond=torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="x must be 8×8 .image_size: the FF-Parsers' weights"):
        net(torch.randn(2, 2, 16, 16), 1.0, cond=torch.randn(2, 1, 16, 16))
    without = make(ff_parser=False)  # no fixed-size weights: any size the UNet's halvings survive
    assert without(torch.randn(2, 2, 16, 16), 1.0, cond=torch.randn(2, 1, 16, 16)).shape == (2, 2, 16, 16)
    with pytest.raises(ValueError, match="x must have a height and width divisible by 2"):
        without(torch.randn(2, 2, 7, 7), 1.0, cond=torch.randn(2, 1, 7, 7))


def test_config_errors_name_the_field():
    with pytest.raises(TypeError, match="ff_parser must be True or False"):
        MedSegDiffConfig(ff_parser="yes")
    with pytest.raises(TypeError, match="cond_attention must be True or False"):
        MedSegDiffConfig(cond_attention=1)
    with pytest.raises(ValueError, match="cond_channels must be"):
        MedSegDiffConfig(cond_channels=0)
    with pytest.raises(ValueError, match="image_size must be divisible"):
        MedSegDiffConfig(image_size=7, channel_mult=(1, 2))
    with pytest.raises(TypeError, match="config must be a MedSegDiffConfig"):
        MedSegDiffUNet(UNetConfig())
    with pytest.raises(TypeError, match="not both"):
        MedSegDiffUNet(MedSegDiffConfig(**CFG), channels=8)


# ----------------------------------------------------------------------------------------------------------------
# Training and sampling through diffu.segmentation, unchanged
# ----------------------------------------------------------------------------------------------------------------


def test_trains_with_mask_diffusion_loss(gen):
    net = make().train()
    masks = torch.randn(4, 2, 8, 8, generator=gen(0)).sign()  # a two-channel encoding in {−1, 1}
    images = torch.rand(4, 1, 8, 8, generator=gen(1)) * 2 - 1
    sched = linear_schedule(50)
    loss = mask_diffusion_loss(net, sched, masks, images, generator=gen(2))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.equal(loss, mask_diffusion_loss(net, sched, masks, images, generator=gen(2)))
    loss.backward()
    for part in ("cond_stem", "cond_down", "cond_mid", "ff", "dyn", "unet.conv_in"):
        grads = [p.grad for n, p in net.named_parameters() if n.startswith(part)]
        assert grads and all(g is not None for g in grads) and max(g.abs().max() for g in grads) > 0, part


def test_segments_with_segment(gen):
    net = make()
    images = torch.rand(2, 1, 8, 8, generator=gen(1)) * 2 - 1
    kw = dict(num_classes=2, encoding="onehot", steps=3, ensemble=2, progress=False)
    seg = segment(net, images, linear_schedule(50), generator=gen(0), **kw)
    assert seg.samples.shape == (2, 2, 2, 8, 8) and seg.labels.shape == (2, 8, 8) and seg.variance.shape == (2, 8, 8)
    again = segment(net, images, linear_schedule(50), generator=gen(0), **kw)
    assert torch.equal(seg.samples, again.samples) and torch.equal(seg.labels, again.labels)
    other = segment(net, images, linear_schedule(50), generator=gen(1), **kw)
    assert not torch.equal(seg.samples, other.samples)


@pytest.mark.gpu
def test_follows_a_cuda_device():
    net = make().cuda()
    x, cond = (v.cuda() for v in inputs(2))
    assert net(x, 1.0, cond=cond).is_cuda
    with pytest.raises(ValueError, match="cond must be on x's device"):
        net(x, 1.0, cond=cond.cpu())
