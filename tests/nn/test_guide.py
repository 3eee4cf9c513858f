"""The guide network of plug-and-play distillation (diffu.nn.guide): where its features enter the frozen UNet
(checked against AdaptedUNet, which adds features at the same points), identity at initialisation, gradients only
in the guide, guide-only state dicts, the scale conditioning, sizes, float64, the manifest round trip and input
validation."""

import json
from dataclasses import asdict

import pytest
import torch

import diffu.pretrained
from diffu.nn.adapter import AdaptedUNet, adapter_levels
from diffu.nn.guide import GuidedUNet, GuideNet, GuideNetConfig
from diffu.nn.unet import UNet, UNetConfig
from diffu.recipes import network_entry
from diffu.train import seeded


def tiny_unet(seed=0, num_classes=3, num_res_blocks=1, attn=(4,), channels=8):
    """A tiny class-conditional UNet (8×8, two levels, attention at 4×4) whose zero-initialised layers are
    perturbed, so that its output and every encoder feature are non-trivial."""
    with seeded(seed):
        u = UNet(UNetConfig(channels=channels, channel_mult=(1, 2), num_res_blocks=num_res_blocks,
                            attn_resolutions=attn, num_classes=num_classes, image_size=8))  # fmt: skip
        with torch.no_grad():
            for p in u.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return u.eval()


def perturb(module, seed=2, scale=0.05):
    """Move every parameter (the guide's zero convolutions included) off its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


def tiny_model(seed=0, perturbed=False, **kw):
    with seeded(seed + 1):
        m = GuidedUNet(tiny_unet(seed, **kw))
    if perturbed:
        perturb(m.guide)
    return m


@pytest.fixture(scope="module")
def inputs(gen):
    x = torch.randn(3, 1, 8, 8, generator=gen(1))
    t = torch.tensor([0.0, 400.0, 999.0])
    y = torch.tensor([0, 2, 3])  # 3: the null label
    return x, t, y


def no_hooks(net) -> bool:
    return all(not m._forward_hooks for m in net.modules())


# ----------------------------------------------------------------------------------------------------------------
# Where the features go
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blocks", [1, 0])
def test_features_enter_where_the_adapter_adds_them(inputs, blocks):
    """base + guide equals AdaptedUNet with the same features (the same points, h_p + F_ℓ, same arithmetic), bit
    for bit; with num_res_blocks = 0 the first point is conv_in's output."""
    x, t, y = inputs
    model = tiny_model(perturbed=True, num_res_blocks=blocks)
    assert model.guide.positions == adapter_levels(model.base)[0] == ((1, 3) if blocks else (0, 1))
    s = torch.tensor([1.0, 3.0, 7.5])
    feats = model.guide(x, t, y, s)
    assert all(f.abs().sum() > 0 for f in feats)
    with seeded(3):
        adapted = AdaptedUNet(model.base)
    adapted.adapter._features = lambda cond: feats  # the oracle adds exactly these maps
    with torch.no_grad():
        want = adapted(x, t, cond=torch.zeros(3, 1, 8, 8), y=y)
        got = model(x, t, y, scale=s)
    assert torch.equal(got, want)
    assert not torch.allclose(got, model.base(x, t, y))  # and the features do change the output


def test_zero_initialised_guide_is_the_frozen_unet_exactly(inputs):
    x, t, y = inputs
    model = tiny_model()
    assert all(torch.equal(f, torch.zeros_like(f)) for f in model.guide(x, t, y, 3.0))
    with torch.no_grad():
        for s in (0.0, 1.0, 3.0, torch.tensor([0.5, 2.0, 9.0])):
            assert torch.equal(model(x, t, y, scale=s), model.base(x, t, y))


def test_hooks_live_only_during_a_call(inputs):
    """The frozen UNet carries no hooks outside a call, also after a call that failed inside the UNet."""
    x, t, y = inputs
    model = tiny_model(perturbed=True)
    model(x, t, y)
    assert no_hooks(model.base)

    def boom(*args):
        raise RuntimeError("boom")

    handle = model.base.mid[0].register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        model(x, t, y)
    handle.remove()
    assert no_hooks(model.base)


def test_feature_shapes_and_widths():
    with seeded(0):
        guide = GuideNet(tiny_unet(), channels=4)
    assert guide.widths == (4, 8) and guide.base_widths == (8, 16)
    feats = guide(torch.randn(2, 1, 8, 8), torch.tensor([1.0, 2.0]), torch.tensor([0, 1]), 2.0)
    assert [tuple(f.shape) for f in feats] == [(2, 8, 8, 8), (2, 16, 4, 4)]


# ----------------------------------------------------------------------------------------------------------------
# The scale, the labels, gradients, state
# ----------------------------------------------------------------------------------------------------------------


def test_per_sample_scale_equals_one_call_per_scale(inputs):
    x, t, y = inputs
    model = tiny_model(perturbed=True)
    s = torch.tensor([1.0, 3.0, 5.0])
    with torch.no_grad():
        rows = torch.cat([model(x[i : i + 1], t[i : i + 1], y[i : i + 1], scale=float(s[i])) for i in range(3)])
        torch.testing.assert_close(model(x, t, y, scale=s), rows, rtol=0, atol=1e-6)  # batch-size rounding only
        assert not torch.allclose(model(x, t, y, scale=1.0), model(x, t, y, scale=5.0))  # the scale matters
        assert torch.equal(model(x, t, y), model(x, t, y, scale=3.0))  # the default scale is §7.1's 3
        assert torch.equal(model(x, t, scale=2.0), model(x, t, torch.full((3,), 3), scale=2.0))  # None: null


def test_only_the_guide_trains(inputs):
    x, t, y = inputs
    model = tiny_model(perturbed=True).train()
    assert not model.base.training and model.guide.training
    model(x, t, y, scale=torch.tensor([1.0, 2.0, 3.0])).square().mean().backward()
    assert all(p.grad is None for p in model.base.parameters())
    assert all(p.grad is not None for p in model.guide.parameters())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {f"guide.{k}" for k, _ in
                                                                           model.guide.named_parameters()}  # fmt: skip


def test_zero_convs_get_gradient_at_initialisation(inputs):
    """ControlNet's argument: the zero convolutions' weight gradients are F_in · ∂L/∂out ≠ 0, so training starts."""
    x, t, y = inputs
    model = tiny_model()
    model(x, t, y).square().mean().backward()
    assert all(out.weight.grad.abs().sum() > 0 for out in model.guide.outs)


def test_state_dict_holds_only_the_guide_and_loads_back(inputs):
    x, t, y = inputs
    model = tiny_model(perturbed=True)
    sd = model.state_dict()
    assert sd and all(k.startswith("guide.") for k in sd)
    fresh = GuidedUNet(model.base)  # plug the trained guide into a model around the same (or a fine-tuned) base
    fresh.load_state_dict(sd)  # strict
    with torch.no_grad():
        assert torch.equal(fresh(x, t, y), model(x, t, y))


def test_attributes_and_float64(inputs):
    x, t, y = inputs
    model = tiny_model(perturbed=True)
    assert (model.num_classes, model.null_class, model.prediction) == (3, 3, "eps")
    assert model.config == model.guide.config
    model.double()
    out = model(x.double(), t, y)
    assert out.dtype == torch.float64 and out.shape == x.shape
    with pytest.raises(ValueError, match="x"):
        model.check_input(torch.zeros(1, 2, 8, 8))


def test_default_guide_is_about_one_and_a_half_percent_of_fmnist_unet():
    # fmnist_unet's architecture (diffu.recipes), freshly initialised
    unet = UNet(
        UNetConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), num_classes=10)
    )
    guide = GuideNet(unet)
    n, base = sum(p.numel() for p in guide.parameters()), sum(p.numel() for p in unet.parameters())
    assert (n, base) == (16488, 1114209) and 0.01 < n / base < 0.03
    assert guide.widths == (8, 16, 16) and guide.base_widths == (32, 64, 64)


def test_manifest_entry_rebuilds_around_the_shipped_base():
    model = GuidedUNet(diffu.pretrained.load("fmnist_unet"), channels=4, groups=2)
    entry = network_entry(model, {"components": {"base": "fmnist_unet"}})
    assert entry["arch"] == "diffu.nn.guide:GuidedUNet" and entry["config_class"] == "diffu.nn.guide:GuideNetConfig"
    rebuilt = diffu.pretrained.build(json.loads(json.dumps(entry)))
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config == model.config and asdict(rebuilt.config)["channel_mult"] is None
    assert torch.equal(rebuilt.base.conv_out.weight, model.base.conv_out.weight)


def test_seeded_construction_is_deterministic(inputs):
    x, t, y = inputs
    a, b = tiny_model(perturbed=True), tiny_model(perturbed=True)
    assert torch.equal(a(x, t, y), b(x, t, y))


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, err, name",
    [
        ({"channels": 0}, ValueError, "channels"),
        ({"channels": 2.5}, ValueError, "channels"),
        ({"num_res_blocks": 0}, ValueError, "num_res_blocks"),
        ({"groups": True}, ValueError, "groups"),
        ({"channel_mult": ()}, ValueError, "channel_mult"),
        ({"channel_mult": (1, 0)}, ValueError, "channel_mult"),
        ({"channel_mult": "12"}, TypeError, "channel_mult"),
        ({"colour": 1}, TypeError, "colour"),
    ],
)
def test_config_validation(kw, err, name):
    with pytest.raises(err, match=name):
        GuideNetConfig(**kw)


def test_construction_validation():
    base = tiny_unet()
    with pytest.raises(ValueError, match="channel_mult"):
        GuideNet(base, channel_mult=(1, 2, 2))  # three levels for a two-level UNet
    with pytest.raises(ValueError, match="groups"):
        GuideNet(base, channels=6, groups=4)
    with pytest.raises(TypeError, match="base"):
        GuideNet("unet")
    with pytest.raises(ValueError, match="base"):
        GuidedUNet(tiny_unet(num_classes=None))
    with pytest.raises(TypeError, match="config"):
        GuideNet(base, config={"channels": 4})
    with pytest.raises(TypeError, match="guide"):
        GuidedUNet(base, guide="g")
    with pytest.raises(TypeError, match="not both"):
        GuidedUNet(base, GuideNet(base), channels=4)
    with pytest.raises(ValueError, match="guide was built"):
        GuidedUNet(base, GuideNet(tiny_unet(channels=16)))
    with pytest.raises(ValueError, match="guide was built"):
        GuidedUNet(base, GuideNet(tiny_unet(num_classes=5)))


@pytest.mark.parametrize(
    "change, err, name",
    [
        ({"x": torch.zeros(3, 2, 8, 8)}, ValueError, "x"),
        ({"x": torch.zeros(3, 1, 7, 7)}, ValueError, "x"),
        ({"x": torch.zeros(3, 1, 8, 8, dtype=torch.long)}, ValueError, "x"),
        ({"t": torch.zeros(2)}, ValueError, "t"),
        ({"y": torch.tensor([0, 1, 4])}, ValueError, "y"),
        ({"y": torch.tensor([0.0, 1.0, 2.0])}, ValueError, "y"),
        ({"scale": -1.0}, ValueError, "scale"),
        ({"scale": float("nan")}, ValueError, "scale"),
        ({"scale": True}, TypeError, "scale"),
        ({"scale": "3"}, TypeError, "scale"),
        ({"scale": torch.ones(2)}, ValueError, "scale"),
        ({"scale": torch.ones(3, dtype=torch.bool)}, ValueError, "scale"),
    ],
)
def test_call_validation(inputs, change, err, name):
    x, t, y = inputs
    args = {"x": x, "t": t, "y": y, "scale": 3.0, **change}
    model = tiny_model()
    with pytest.raises(err, match=name):
        model(args["x"], args["t"], args["y"], scale=args["scale"])
    with pytest.raises(err, match=name):
        model.guide(args["x"], args["t"], args["y"], args["scale"])
    assert no_hooks(model.base)


def test_nan_in_a_scale_tensor_propagates(inputs):
    """Documented: forward checks shapes and dtypes, not values, of tensors (a per-step cost)."""
    x, t, y = inputs
    out = tiny_model(perturbed=True)(x, t, y, scale=torch.tensor([1.0, float("nan"), 2.0]))
    assert torch.isnan(out[1]).all() and torch.isfinite(out[[0, 2]]).all()
