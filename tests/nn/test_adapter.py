"""T2I-Adapter (diffu.nn.adapter): where the features enter the frozen UNet (checked against forward hooks on the
UNet itself), identity at zero initialisation, gradients only in the adapter, adapter-only state dicts, shapes,
float64, the manifest round trip and input validation."""

import pytest
import torch

import diffu.pretrained
from diffu.nn.adapter import AdaptedUNet, T2IAdapter, T2IAdapterConfig, adapter_levels
from diffu.nn.controlnet import ControlNet
from diffu.nn.unet import UNet, UNetConfig
from diffu.recipes import network_entry
from diffu.train import seeded


def tiny_unet(seed=0, num_classes=3, num_res_blocks=1, attn=(4,)):
    """A tiny class-conditional UNet (8×8, two levels, attention at 4×4) whose zero-initialised layers are
    perturbed, so that its output and every encoder feature are non-trivial."""
    with seeded(seed):
        u = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=num_res_blocks, attn_resolutions=attn,
                            num_classes=num_classes, image_size=8))  # fmt: skip
        with torch.no_grad():
            for p in u.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return u.eval()


def tiny_model(seed=0, **kw):
    with seeded(seed + 1):
        return AdaptedUNet(tiny_unet(seed), **kw)


def perturb(module, seed=2, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


@pytest.fixture(scope="module")
def inputs(gen):
    x = torch.randn(3, 1, 8, 8, generator=gen(1))
    t = torch.tensor([0.0, 400.0, 999.0])
    cond = torch.rand(3, 2, 8, 8, generator=gen(2)) * 2 - 1
    return x, t, cond


# ----------------------------------------------------------------------------------------------------------------
# Where the features go
# ----------------------------------------------------------------------------------------------------------------


def test_levels_follow_the_official_rule():
    # the shipped UNets: [RB], down, [RB], down, [RB + attn] → after down blocks 1, 3 and 5
    u = UNet(UNetConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,)))
    assert adapter_levels(u) == ((1, 3, 5), (32, 64, 64))
    # SD's encoder layout (two ResBlocks per level, four levels): input blocks 2, 5, 8, 11 — (id + 1) % 3 == 0
    sd = UNet(UNetConfig(channels=8, channel_mult=(1, 2, 4, 4), num_res_blocks=2, attn_resolutions=(), image_size=16))
    assert adapter_levels(sd) == ((2, 5, 8, 11), (8, 16, 32, 32))
    # no ResBlocks: level 0 ends at conv_in's output h_0
    bare = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=0, attn_resolutions=(), image_size=8))
    assert adapter_levels(bare) == ((0, 1), (8, 8))


@pytest.mark.parametrize("num_res_blocks", [0, 1, 2])
@pytest.mark.parametrize("scale", [1.0, -0.7])
def test_features_are_added_where_hooks_add_them(inputs, num_res_blocks, scale):
    """Oracle: the plain UNet forward with hooks that add s·F_ℓ to the output of conv_in / the down block ending
    each level — the state that the skip connection and the next block then read (official UNetModel.forward)."""
    x, t, cond = inputs
    base = tiny_unet(num_res_blocks=num_res_blocks)
    with seeded(3):
        model = AdaptedUNet(base, perturb(T2IAdapter(base, cond_channels=2, num_res_blocks=2)))
    with torch.no_grad():
        feats = model.adapter(cond)
        layers = [base.conv_in, *(block[-1] for block in base.down)]  # h_0, …, h_K are these layers' outputs
        handles = [layers[p].register_forward_hook(lambda m, i, out, f=f: out + scale * f)
                   for p, f in zip(model.adapter.positions, feats)]  # fmt: skip
        try:
            ref = base(x, t, y=torch.tensor([0, 2, 3]))
        finally:
            for h in handles:
                h.remove()
        out = model(x, t, cond=cond, y=torch.tensor([0, 2, 3]), control_scale=scale)
        assert (out - base(x, t, y=torch.tensor([0, 2, 3]))).abs().max() > 1e-3  # the features do change it
    assert torch.equal(out, ref)  # the same operations in the same order


def test_feature_shapes_with_unshuffle(gen):
    base = tiny_unet()
    adapter = T2IAdapter(base, cond_channels=3, unshuffle=2)
    cond = torch.randn(2, 3, 16, 16, generator=gen(3))
    feats = adapter(cond)
    assert [tuple(f.shape) for f in feats] == [(2, 8, 8, 8), (2, 16, 4, 4)]
    assert adapter.conv_in.in_channels == 12  # 3 channels · 2² after pixel-unshuffle
    model = AdaptedUNet(base, adapter)
    out = model(torch.randn(2, 1, 8, 8, generator=gen(4)), torch.tensor([5.0, 6.0]), cond=cond)
    assert out.shape == (2, 1, 8, 8)


# ----------------------------------------------------------------------------------------------------------------
# Identity at initialisation, gradients
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("y", [None, torch.tensor([0, 2, 3])])
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_zero_init_equals_base_exactly(inputs, y, scale):
    x, t, cond = inputs
    model = tiny_model(cond_channels=2, zero_init=True)
    with torch.no_grad():
        out = model(x, t, cond=cond, y=y, control_scale=scale)
        ref = model.base(x, t, y=y)
    assert ref.abs().max() > 1e-3
    assert torch.equal(out, ref)


def test_official_init_perturbs_and_scale_zero_is_base(inputs):
    """The official adapter has no zero convolution: its fresh features already change the output."""
    x, t, cond = inputs
    model = tiny_model(cond_channels=2)  # zero_init=False, the official design
    with torch.no_grad():
        ref = model.base(x, t)
        assert (model(x, t, cond=cond) - ref).abs().max() > 1e-3
        assert torch.equal(model(x, t, cond=cond, control_scale=0.0), ref)
        assert (model(x, t, cond=-cond) - model(x, t, cond=cond)).abs().max() > 1e-4  # the condition matters


def test_gradients_reach_only_the_adapter(inputs):
    x, t, cond = inputs
    model = tiny_model(cond_channels=2, zero_init=True).train()
    assert not model.base.training and model.adapter.training  # the frozen part stays in eval mode
    assert all(not p.requires_grad for p in model.base.parameters())
    model(x, t, cond=cond).square().mean().backward()
    assert all(p.grad is None for p in model.base.parameters())
    # at zero init only the zero convs get a non-zero gradient; after one step the signal reaches the blocks
    outs = list(model.adapter.outs.parameters())
    inner = [p for n, p in model.adapter.named_parameters() if not n.startswith("outs.")]
    assert all(p.grad.abs().sum() > 0 for p in outs)
    assert all(p.grad.abs().sum() == 0 for p in inner)
    with torch.no_grad():  # one SGD step by hand (torch.optim's first step imports torch._dynamo: seconds)
        for p in model.adapter.parameters():
            p -= 0.1 * p.grad
            p.grad = None
    model(x, t, cond=cond).square().mean().backward()
    assert sum(p.grad.abs().sum() for p in inner) > 0


def test_state_dict_holds_only_the_adapter_and_reloads(inputs):
    x, t, cond = inputs
    trained = tiny_model(cond_channels=2)
    perturb(trained.adapter)
    sd = trained.state_dict()
    assert sd and set(sd) == {f"adapter.{k}" for k in trained.adapter.state_dict()}
    fresh = tiny_model(cond_channels=2, seed=0)
    perturb(fresh.adapter, seed=5)
    with torch.no_grad():
        assert not torch.equal(fresh(x, t, cond=cond), trained(x, t, cond=cond))
        fresh.load_state_dict(sd)  # strict: adapter-only is complete
        assert torch.equal(fresh(x, t, cond=cond), trained(x, t, cond=cond))
    missing = dict(sd)
    missing.pop("adapter.conv_in.weight")
    with pytest.raises(RuntimeError, match="conv_in.weight"):
        fresh.load_state_dict(missing)


def test_manifest_entry_rebuilds_around_the_shipped_base():
    """What training and shipping it would record (recipes.network_entry) builds the same network back."""
    model = AdaptedUNet(diffu.pretrained.load("fmnist_unet"), cond_channels=10, zero_init=True)
    entry = network_entry(model, {"components": {"base": "fmnist_unet"}})
    assert entry["arch"] == "diffu.nn.adapter:AdaptedUNet" and entry["config"]["cond_channels"] == 10
    rebuilt = diffu.pretrained.build(entry)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config == model.config
    assert torch.equal(rebuilt.base.conv_out.weight, model.base.conv_out.weight)


def test_float64_and_determinism(inputs):
    x, t, cond = inputs
    model = tiny_model(cond_channels=2, zero_init=True).double()
    perturb(model.adapter)
    out = model(x.double(), t, cond=cond.double())
    assert out.dtype == torch.float64
    a, b = tiny_model(cond_channels=2), tiny_model(cond_channels=2)  # the same seeded construction
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    # a float32 condition is cast to the state's dtype
    assert torch.equal(model(x.double(), t, cond=cond), out)


def test_several_times_smaller_than_controlnet():
    """Trainable parameters on the shipped UNets (28×28 and 32×32): the adapter is several times smaller than the
    ControlNet, the paper's point (its SD-1 adapters: ≈ 77 M parameters, a fraction of a copy of SD's encoder)."""
    for name in ("fmnist_unet", "mni_t1_prior"):
        base = UNet(**diffu.pretrained.info(name)["config"])
        control = sum(p.numel() for p in ControlNet(base, 1, 16).parameters())
        adapter = sum(p.numel() for p in AdaptedUNet(base).parameters() if p.requires_grad)
        assert adapter == sum(p.numel() for p in T2IAdapter(base).parameters()) == 94912  # counted by hand below
        assert control / adapter > 4, (name, control, adapter)  # measured: 4.87 and 4.86
    # 3×3 conv_in 1→32 (320) + level widths 32, 64, 64 with one block each: 3×3 + 1×1 convs, a 1×1 in_conv where
    # the width changes
    block = lambda c: 9 * c * c + c + c * c + c  # noqa: E731
    assert 320 + block(32) + (32 * 64 + 64) + block(64) + block(64) == 94912


@pytest.mark.gpu
def test_follows_the_device(inputs):
    x, t, cond = inputs
    model = tiny_model(cond_channels=2, zero_init=True).cuda()
    out = model(x.cuda(), t.cuda(), cond=cond.cuda())
    assert out.device.type == "cuda"
    assert torch.equal(out, model.base(x.cuda(), t.cuda()))


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


def test_bad_construction():
    base = tiny_unet()
    with pytest.raises(TypeError, match="base must"):
        T2IAdapter("unet")
    with pytest.raises(TypeError, match="base must"):
        AdaptedUNet(ControlNet(base))
    with pytest.raises(TypeError, match="adapter must"):
        AdaptedUNet(base, "adapter")
    with pytest.raises(TypeError, match="either adapter"):
        AdaptedUNet(base, T2IAdapter(base), cond_channels=2)
    with pytest.raises(TypeError, match="config must"):
        T2IAdapter(base, 2)  # cond_channels is a keyword (or a T2IAdapterConfig)
    other = UNet(UNetConfig(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8))
    with pytest.raises(ValueError, match="adapter was built for"):
        AdaptedUNet(base, T2IAdapter(other))
    for field, value, match in [
        ("kernel_size", 2, "kernel_size must be odd"),
        ("kernel_size", 0, "kernel_size must"),
        ("unshuffle", 0, "unshuffle must"),
        ("num_res_blocks", 0, "num_res_blocks must"),
        ("cond_channels", 1.0, "cond_channels must"),
        ("zero_init", "yes", "zero_init must"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            T2IAdapterConfig(**{field: value})
    with pytest.raises(TypeError, match="bogus"):
        T2IAdapter(base, bogus=1)


@pytest.mark.parametrize(
    "cond, match",
    [
        (None, "cond must be a tensor"),
        (torch.zeros(3, 1, 8, 8), r"cond must have shape \(N, 2, H, W\)"),
        (torch.zeros(3, 2, 7, 7), "cond must have a height and width divisible by 2"),
        (torch.zeros(2, 2, 8, 8), r"cond must have shape \(3, 2, 8, 8\)"),
        (torch.zeros(3, 2, 16, 16), r"cond must have shape \(3, 2, 8, 8\)"),
        (torch.zeros(3, 2, 8, 8, dtype=torch.long), "cond must be a floating-point"),
    ],
)
def test_bad_cond(inputs, cond, match):
    x, t, _ = inputs
    with pytest.raises((ValueError, TypeError), match=match):
        tiny_model(cond_channels=2)(x, t, cond=cond)


def test_bad_call_arguments(inputs):
    x, t, cond = inputs
    model = tiny_model(cond_channels=2)
    for scale in (float("nan"), float("inf"), "1", True):
        with pytest.raises((ValueError, TypeError), match="control_scale"):
            model(x, t, cond=cond, control_scale=scale)
    with pytest.raises(ValueError, match="x must"):
        model(torch.zeros(3, 1, 7, 7), t, cond=cond)
    with pytest.raises(ValueError, match="y must"):
        model(x, t, cond=cond, y=torch.tensor([0, 1, 7]))
    with pytest.raises(ValueError, match="cond must have a height"):
        model.adapter(torch.zeros(1, 2, 7, 7))


def test_exclude_frozen_keeps_only_the_trainable_part_and_loads_it_back():
    """diffu.nn.controlnet.exclude_frozen (shared by the adapter, the ControlNet and the §7 guide): the frozen
    submodules are neither saved nor required when loading; the trainable part round-trips."""
    from torch import nn

    from diffu.nn import exclude_frozen

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.base, self.head, self.extra = nn.Linear(2, 2), nn.Linear(2, 1), None
            exclude_frozen(self, ("base", "extra"))

    a, b = Wrapper(), Wrapper()
    state = a.state_dict()
    assert sorted(state) == ["head.bias", "head.weight"]
    base_before = b.base.weight.clone()
    b.load_state_dict(state)  # strict: the frozen base is filled from b itself
    assert torch.equal(b.head.weight, a.head.weight) and torch.equal(b.base.weight, base_before)
    with pytest.raises(TypeError, match="names"):
        exclude_frozen(Wrapper(), ["base"])
    with pytest.raises(ValueError, match="names"):
        exclude_frozen(Wrapper(), ())
    with pytest.raises(TypeError, match="module"):
        exclude_frozen("net", ("base",))
