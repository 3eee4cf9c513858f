"""The input checks of every network's forward (diffu.nn.inputs) and of the networks' configs: each bad input gives
a ValueError or TypeError naming the argument, never an error from deep inside torch or einops, never a result."""

import pytest
import torch

from diffu.captions import vocabulary
from diffu.nn import (
    DRUNet,
    DRUNetConfig,
    FMNISTClassifier,
    KernelUNet,
    LabelEmbedder,
    MLPDenoiser,
    MMDiT,
    NoisyClassifier,
    PatchEmbed,
    Restorer,
    TextEncoder,
    TimestepEmbedder,
    UNet,
    UNetConfig,
    check_input,
    check_int_tuple,
    check_tokens,
    labels_for,
    make_config,
    timesteps_for,
)
from diffu.nn.autoencoder import Autoencoder
from diffu.nn.controlnet import ControlledUNet, ControlNet
from diffu.nn.dit import DiT
from diffu.train import seeded

# ---------------------------------------------------------------------------------------------------------------
# the helpers
# ---------------------------------------------------------------------------------------------------------------


def test_check_input_accepts_and_names_what_is_wrong():
    check_input(torch.zeros(2, 1, 8, 8), (1, None, None), multiple=4)  # valid: nothing raised
    check_input(torch.zeros(2, 5, 16, dtype=torch.float64), (None, 16))
    with pytest.raises(TypeError, match=r"x must be a tensor of shape \(N, 1, H, W\), got list"):
        check_input([[0.0]], (1, None, None))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, H, W\), got \(2, 3, 8, 8\)"):
        check_input(torch.zeros(2, 3, 8, 8), (1, None, None))
    with pytest.raises(ValueError, match=r"got \(1, 28, 28\) \(one sample\? add the batch dimension: x\[None\]\)"):
        check_input(torch.zeros(1, 28, 28), (1, None, None))
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor, got torch.uint8; .*from_uint8"):
        check_input(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), (1, None, None))
    with pytest.raises(ValueError, match=r"img must have a height and width divisible by 4 \(why\), got 6×8"):
        check_input(torch.zeros(2, 1, 6, 8), (1, None, None), "img", multiple=4, why=" (why)")
    with pytest.raises(ValueError, match=r"tok must have shape \(N, T, 16\)"):
        check_input(torch.zeros(2, 5, 8), (None, 16), "tok")


def test_timesteps_for():
    t = timesteps_for(3.0, 4)
    assert t.shape == (4,) and torch.equal(t, torch.full((4,), 3.0))
    assert torch.equal(timesteps_for(torch.tensor([1, 2]), 2), torch.tensor([1, 2]))  # integer steps are kept
    assert timesteps_for(torch.tensor([7.0]), 5).shape == (1,)  # broadcast by the network
    assert timesteps_for([1.0, 2.0], 2).shape == (2,)
    with pytest.raises(ValueError, match=r"t must be a number or a tensor of shape \(N,\) = \(3,\), got shape \(2,\)"):
        timesteps_for(torch.zeros(2), 3)
    with pytest.raises(ValueError, match=r"t must be .* got shape \(3, 1\)"):
        timesteps_for(torch.zeros(3, 1), 3)
    with pytest.raises(ValueError, match="t must be a finite number, got nan"):
        timesteps_for(float("nan"), 3)
    with pytest.raises(TypeError, match="t must be a finite number, got bool"):
        timesteps_for(True, 3)
    with pytest.raises(TypeError, match="t must be a number or a tensor"):
        timesteps_for("500", 3)
    with pytest.raises(ValueError, match="t must hold real .* got torch.bool"):
        timesteps_for(torch.ones(3, dtype=torch.bool), 3)


def test_labels_for():
    assert labels_for(None, None, 3) is None
    assert torch.equal(labels_for(None, 10, 3), torch.full((3,), 10))  # the null label
    y = torch.tensor([0, 9, 10])
    assert labels_for(y, 10, 3) is y
    with pytest.raises(ValueError, match=r"y was given but this UNet has no class conditioning"):
        labels_for(y, None, 3, owner="this UNet")
    with pytest.raises(ValueError, match=r"y must be \(3,\) integer labels in \[0, 10\] .*got values in \[0, 11\]"):
        labels_for(torch.tensor([0, 1, 11]), 10, 3)
    with pytest.raises(ValueError, match=r"y must be \(3,\) integer labels in \[0, 9\]:"):
        labels_for(torch.tensor([0, 1, 10]), 10, 3, null=False)
    with pytest.raises(ValueError, match=r"y must be .* integer tensor of class indices, got torch.float32"):
        labels_for(torch.tensor([0.0, 1.0, 2.0]), 10, 3)
    with pytest.raises(ValueError, match=r"y must be \(3,\) .*one label per image"):
        labels_for(torch.tensor([0, 1]), 10, 3)
    with pytest.raises(ValueError, match="y must be a tensor, got list"):
        labels_for([0, 1, 2], 10, 3)
    with pytest.raises(ValueError, match=r"y must be \(N,\) .* dimensions"):
        labels_for(torch.zeros(2, 2, dtype=torch.long), 10, None)
    # values=False: dtype and shape only (the embedder called next reads the values)
    assert labels_for(torch.tensor([0, 99, 1]), 10, 3, values=False).shape == (3,)
    with pytest.raises(ValueError, match=r"y must be \(3,\) .*got torch.float32"):
        labels_for(torch.zeros(3), 10, 3, values=False)


def test_check_tokens_and_int_tuple_and_make_config():
    check_tokens(torch.tensor([[1, 2, 0]]), 5, 4)
    with pytest.raises(ValueError, match=r"ids must be \(N, L\) integer token ids in \[0, 4\].*outside the vocab"):
        check_tokens(torch.tensor([[1, 5]]), 5)
    with pytest.raises(ValueError, match=r"ids must be .* with L <= 2, got shape \(1, 3\)"):
        check_tokens(torch.tensor([[1, 2, 3]]), 5, 2)
    with pytest.raises(ValueError, match="ids must be .* got torch.float32"):
        check_tokens(torch.tensor([[1.0]]), 5)
    with pytest.raises(TypeError, match="ids must be .* got list"):
        check_tokens([[1]], 5)
    assert check_int_tuple("m", [1, 2]) == (1, 2) and check_int_tuple("a", (), empty=True) == ()
    with pytest.raises(ValueError, match="each entry of m must be an integer >= 1, got 1.5"):
        check_int_tuple("m", (1, 1.5))
    with pytest.raises(ValueError, match="m must be a non-empty tuple"):
        check_int_tuple("m", ())
    with pytest.raises(TypeError, match="m must be a tuple of integers"):
        check_int_tuple("m", 2)
    cfg = UNetConfig(channels=8)
    assert make_config(UNetConfig, cfg, {}) is cfg and make_config(UNetConfig, None, {"channels": 8}) == cfg
    with pytest.raises(TypeError, match="either config or keyword arguments, not both"):
        make_config(UNetConfig, cfg, {"channels": 16})
    with pytest.raises(TypeError, match="config must be a UNetConfig"):
        make_config(UNetConfig, {"channels": 8}, {})
    with pytest.raises(TypeError, match="UNetConfig: .*unexpected keyword argument 'width'"):
        make_config(UNetConfig, None, {"width": 8})
    cfg.channels = 0  # changed after construction: checked again when a network is built from it
    with pytest.raises(ValueError, match="channels must be an integer >= 1, got 0"):
        UNet(cfg)


# ---------------------------------------------------------------------------------------------------------------
# every network's forward
# ---------------------------------------------------------------------------------------------------------------


def _nets():
    with seeded(0):
        unet = UNet(channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), num_classes=3)
        return {
            "unet": unet.eval(),
            "dit": DiT(hidden_size=32, depth=1, num_heads=4, num_classes=3).eval(),
            "mmdit": MMDiT(vocab=tuple(vocabulary()), hidden_size=32, depth=1, num_heads=4).eval(),
            "mlp": MLPDenoiser(2, 16, 1, num_classes=3).eval(),
            "ncls": NoisyClassifier(channels=8, channel_mult=(1, 2), attn_resolutions=(), num_classes=3).eval(),
            "fmnist_clf": FMNISTClassifier(width=8, feature_dim=16).eval(),
            "kernel": KernelUNet(kernel_size=5, canvas=8, channels=8, channel_mult=(1, 2), attn_resolutions=()),
            "controlled": ControlledUNet(unet).eval(),
            "controlnet": ControlNet(unet),
            "restorer": Restorer(channels=8, channel_mult=(1, 2)),
            "ae": Autoencoder(channels=8, latent_channels=2, groups=4),
            "drunet": DRUNet(DRUNetConfig(channels=(4, 8), num_blocks=1)),
            "text": TextEncoder(10, 16, 8, 1, 4),
            "patch": PatchEmbed(1, 16, 4),
            "temb": TimestepEmbedder(16, 8),
            "label": LabelEmbedder(3, 8),
        }


NETS = _nets()
X = torch.zeros(2, 1, 28, 28)
T = torch.tensor([1.0, 500.0])
COND = torch.zeros(2, 1, 28, 28)

# (network, args, kwargs, error type, message fragment naming the argument)
BAD = [
    # wrong channels, missing batch dimension, integer x
    ("unet", (torch.zeros(2, 3, 28, 28), T), {}, ValueError, r"x must have shape \(N, 1, H, W\)"),
    ("unet", (torch.zeros(1, 28, 28), T[:1]), {}, ValueError, "add the batch dimension"),
    ("unet", (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), T), {}, ValueError, "x must be a floating-point"),
    ("unet", ("x", T), {}, TypeError, "x must be a tensor"),
    # 7×7 where the UNet halves the resolution twice
    ("unet", (torch.zeros(2, 1, 7, 7), T), {}, ValueError, r"x must have a height and width divisible by 4"),
    # t of the wrong batch size or rank
    ("unet", (X, torch.zeros(3)), {}, ValueError, r"t must be a number or a tensor of shape \(N,\) = \(2,\)"),
    ("unet", (X, torch.zeros(2, 1)), {}, ValueError, "t must be"),
    # float labels, out-of-range labels, labels of another batch size
    ("unet", (X, T), {"y": torch.tensor([0.0, 1.0])}, ValueError, "y must be .* integer tensor"),
    ("unet", (X, T), {"y": torch.tensor([0, 4])}, ValueError, r"y must be \(2,\) integer labels in \[0, 3\]"),
    ("unet", (X, T), {"y": torch.tensor([-1, 0])}, ValueError, "y must be"),
    ("unet", (X, T), {"y": torch.tensor([0, 1, 2])}, ValueError, "y must be"),
    (
        "dit",
        (torch.zeros(2, 1, 32, 32), T),
        {},
        ValueError,
        r"x must be images of the DiT's size 28×28, shape \(N, 1, 28, 28\)",
    ),
    ("dit", (torch.zeros(2, 3, 28, 28), T), {}, ValueError, r"x must have shape \(N, 1, H, W\), got \(2, 3, 28, 28\)"),
    ("dit", (torch.zeros(2, 1, 28, 28, dtype=torch.int64), T), {}, ValueError, "x must be a floating-point"),
    ("dit", (X, torch.zeros(5)), {}, ValueError, "t must be"),
    ("dit", (X, T), {"y": torch.tensor([0.0, 1.0])}, ValueError, "y must be"),
    ("dit", (X, T), {"y": torch.tensor([0, 4])}, ValueError, r"labels in \[0, 3\]"),
    ("dit", (X, T), {"generator": 0}, TypeError, "generator must be a torch.Generator"),
    ("mmdit", (torch.zeros(2, 3, 28, 28), T), {}, ValueError, "x must have shape"),
    ("mmdit", (torch.zeros(2, 1, 24, 24), T), {}, ValueError, "x must be images of the MMDiT's size 28×28"),
    ("mmdit", (X, T), {"text": torch.tensor([[1, 999], [1, 2]])}, ValueError, "text must be .* token ids"),
    ("mmdit", (X, T), {"text": torch.tensor([[1.0, 2.0], [1.0, 2.0]])}, ValueError, "text must be .* token ids"),
    ("mmdit", (X, T), {"text": torch.ones(2, 13, dtype=torch.long)}, ValueError, r"text must be .* L <= 12"),
    ("mmdit", (X, T), {"text": ["a photo of a castle", ""]}, ValueError, "castle"),
    ("mmdit", (X, T), {"text": 3}, TypeError, "text must be None, a caption"),
    ("mmdit", (X, T), {"attention": {}}, TypeError, "attention must be a list"),
    ("mlp", (torch.zeros(4, 3), torch.zeros(4)), {}, ValueError, r"x must have shape \(N, 2\)"),
    ("mlp", (torch.zeros(4, 2, dtype=torch.int32), torch.zeros(4)), {}, ValueError, "x must be a floating-point"),
    ("mlp", (torch.zeros(4, 2), torch.zeros(3)), {}, ValueError, "t must be"),
    ("mlp", (torch.zeros(4, 2), torch.zeros(4)), {"y": torch.tensor([0, 1, 2, 4])}, ValueError, "y must be"),
    ("ncls", (torch.zeros(2, 1, 14, 14), T), {}, ValueError, "x must be images of the classifier's size 28×28"),
    ("ncls", (X, torch.zeros(3)), {}, ValueError, "t must be"),
    ("fmnist_clf", (torch.zeros(1, 28, 28),), {}, ValueError, "add the batch dimension"),
    ("fmnist_clf", (torch.zeros(2, 1, 28, 28, dtype=torch.uint8),), {}, ValueError, "from_uint8"),
    ("kernel", (torch.zeros(2, 1, 7, 7), T), {}, ValueError, r"k_t must have shape \(N, 1, 5, 5\)"),
    ("kernel", (torch.zeros(2, 1, 5, 5), torch.zeros(3)), {}, ValueError, "t must be"),
    ("controlled", (X, T), {"cond": torch.zeros(2, 1, 14, 14)}, ValueError, "cond must be a tensor of shape"),
    ("controlled", (X, T), {"cond": COND.to(torch.uint8)}, ValueError, "cond must be a floating-point"),
    ("controlled", (X, T), {"cond": COND, "y": torch.tensor([0, 9])}, ValueError, "y must be"),
    ("controlled", (X, T), {"cond": COND, "control_scale": float("nan")}, ValueError, "control_scale must be"),
    ("controlled", (torch.zeros(2, 1, 30, 30), T), {"cond": torch.zeros(2, 1, 30, 30)}, ValueError, "divisible by 4"),
    ("controlnet", (X, T, torch.zeros(2, 2, 28, 28)), {}, ValueError, "cond must be a tensor of shape"),
    ("controlnet", (X, torch.zeros(4), COND), {}, ValueError, "t must be"),
    ("restorer", (torch.zeros(2, 3, 28, 28),), {}, ValueError, r"y must have shape \(N, 1, H, W\)"),
    ("ae", (torch.zeros(2, 1, 10, 10),), {}, ValueError, "x must have a height and width divisible by 4"),
    ("ae", (torch.zeros(2, 2, 28, 28),), {}, ValueError, r"x must have shape \(N, 1, H, W\)"),
    ("drunet", (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 0.1), {}, ValueError, "x must be a floating-point"),
    ("drunet", (X, torch.ones(2, dtype=torch.bool)), {}, ValueError, "sigma must be"),
    ("text", (torch.tensor([[1, 10]]),), {}, ValueError, r"ids must be .* in \[0, 9\]"),
    ("text", (torch.tensor([[0, 0, 0]]),), {}, ValueError, "ids must hold at least one non-padding token"),
    ("text", (torch.tensor([1, 2]),), {}, ValueError, r"ids must be \(N, L\)"),
    ("patch", (torch.zeros(2, 3, 28, 28),), {}, ValueError, r"x must have shape \(N, 1, H, W\)"),
    ("patch", (torch.zeros(2, 1, 30, 28),), {}, ValueError, "divisible by the patch size"),
    ("temb", (torch.zeros(2, 2),), {}, ValueError, r"t must have shape \(N,\)"),
    ("label", (torch.tensor([0.0, 1.0]),), {}, ValueError, "y must be"),
    ("label", (torch.tensor([0, 4]),), {}, ValueError, r"y must be \(N,\) integer labels in \[0, 3\]"),
    ("label", (torch.tensor([0, 1]),), {"generator": 3}, TypeError, "generator must be"),
]


@pytest.mark.parametrize("net, args, kwargs, error, match", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_regression_network_forward_checks_its_input(net, args, kwargs, error, match):
    """Each bad input gets a named ValueError/TypeError at the top of the forward (before: errors from inside
    torch — shape mismatches in conv/cat/embedding, index errors, dtype errors — or silent broadcasting)."""
    with pytest.raises(error, match=match), torch.no_grad():
        NETS[net](*args, **kwargs)


def test_valid_inputs_still_run():
    """The checks leave every valid form of input through: scalar, (N,), (1,) and integer t, no labels, the null
    label, any size a convolutional network accepts."""
    n = NETS
    with torch.no_grad():
        for t in (500.0, 500, torch.tensor(500), T, torch.tensor([1, 500]), torch.tensor([300.0])):
            assert n["unet"](X, t).shape == X.shape and n["dit"](X, t).shape == X.shape
            assert n["mmdit"](X, t, text=["a bag", ""]).shape == X.shape
            assert n["ncls"](X, t).shape == (2, 3) and n["controlled"](X, t, cond=COND).shape == X.shape
        assert n["unet"](torch.zeros(1, 1, 64, 32), 3.0).shape == (1, 1, 64, 32)  # any multiple of 4
        assert n["unet"](X, T, y=torch.tensor([3, 0])).shape == X.shape  # 3 = the null label
        assert n["mlp"](torch.zeros(4, 2), 7).shape == (4, 2)
        assert n["restorer"](torch.zeros(2, 1, 7, 9)).shape == (2, 1, 7, 9)  # odd sizes: the restorer resizes
        assert n["drunet"](torch.zeros(1, 1, 9, 11), 0.1).shape == (1, 1, 9, 11)
        assert n["ae"].decode(torch.zeros(1, 2, 3, 5)).shape == (1, 1, 12, 20)


@pytest.mark.parametrize("conditioning", ["in-context", "cross-attention", "adaLN", "adaLN-Zero"])
def test_regression_dit_accepts_a_single_timestep_for_the_batch(conditioning):
    """A (1,) timestep is broadcast over the batch by every conditioning scheme (it crashed in torch.stack for the
    token-conditioned variants); a scalar t gives the same output."""
    with seeded(0):
        m = DiT(hidden_size=32, depth=1, num_heads=4, num_classes=3, conditioning=conditioning).eval()
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 3])
    with torch.no_grad():
        one, scalar = m(x, torch.tensor([250.0]), y=y), m(x, 250.0, y=y)
    torch.testing.assert_close(one, scalar, rtol=1e-5, atol=1e-6)  # float32 rounding of broadcast vs expanded


def test_regression_unconditional_networks_refuse_labels():
    """An unconditional MLPDenoiser ignored y silently; every network without classes now says so."""
    mlp = MLPDenoiser(2, 8, 1)
    with pytest.raises(ValueError, match="y was given but this MLPDenoiser has no class conditioning"):
        mlp(torch.zeros(2, 2), torch.zeros(2), y=torch.tensor([0, 1]))
    dit = DiT(hidden_size=32, depth=1, num_heads=4, num_classes=None)
    with pytest.raises(ValueError, match="y was given but this DiT has no class conditioning"):
        dit(X, T, y=torch.tensor([0, 1]))


def test_labels_on_another_device_follow_x():
    """Labels (like token ids) move to the input's device; on the CPU this is the identity."""
    y = torch.tensor([0, 1])
    assert labels_for(y, 3, 2, device=torch.device("cpu")) is y


# ---------------------------------------------------------------------------------------------------------------
# the networks trained for a solver: their constructors and helpers
# ---------------------------------------------------------------------------------------------------------------


def test_autoencoder_arguments_are_checked():
    from diffu.nn.autoencoder import AutoencoderConfig, autoencoder_loss, encode_images

    with pytest.raises(ValueError, match="groups 8 must divide channels 12"):
        AutoencoderConfig(channels=12)
    with pytest.raises(ValueError, match="latent_channels must be an integer >= 1"):
        Autoencoder(latent_channels=0)
    ae = NETS["ae"]
    assert ae.latent_shape((5, 1, 28, 32)) == (5, 2, 7, 8)
    with pytest.raises(ValueError, match="image_shape's height and width must be divisible by 4"):
        ae.latent_shape((5, 1, 30, 32))
    with pytest.raises(ValueError, match=r"image_shape must be a shape \(N, C, H, W\)"):
        ae.latent_shape((28, 28))
    with pytest.raises(ValueError, match=r"z must have shape \(N, 2, H, W\)"):
        ae.decode(torch.zeros(1, 3, 2, 2))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        encode_images(ae, x, batch_size=0)
    with pytest.raises(TypeError, match="autoencoder must be a diffu.nn.Autoencoder"):
        encode_images(torch.nn.Identity(), x)
    with pytest.raises(TypeError, match="model must be a diffu.nn.Autoencoder"):
        autoencoder_loss(torch.nn.Identity(), x)
    with pytest.raises(ValueError, match="kl_weight must be a finite number >= 0"):
        autoencoder_loss(ae, x, kl_weight=-1.0)
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\]"):
        autoencoder_loss(ae, x, momentum=2.0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        autoencoder_loss(ae, x, generator=1)


def test_regression_autoencoder_scale_factor_of_constant_latents():
    """set_scale_factor on latents of zero spread divided by zero (ZeroDivisionError) or stored NaN."""
    ae = Autoencoder(channels=8, latent_channels=2, groups=4)
    for p in ae.parameters():
        torch.nn.init.zeros_(p)  # every latent is 0
    with pytest.raises(ValueError, match="x must give latents of finite, non-zero standard deviation"):
        ae.set_scale_factor(torch.randn(4, 1, 8, 8))
    assert float(ae.scale_factor) == 1.0  # unchanged


def test_drunet_helpers_check_their_arguments():
    from diffu.nn.drunet import drunet_data, drunet_loss, natural_patches

    with pytest.raises(TypeError, match="config must be a DRUNetConfig"):
        DRUNet({"channels": (4, 8)})
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        natural_patches(2, size=0)
    with pytest.raises(ValueError, match="names must be skimage.data image names, got unknown"):
        natural_patches(2, names=("astronaut", "nope"))
    with pytest.raises(ValueError, match="names must be a non-empty tuple"):
        natural_patches(2, names="astronaut")
    with pytest.raises(ValueError, match="each entry of scales must be a finite number > 0"):
        natural_patches(2, names=("coins",), scales=(0.0,))
    with pytest.raises(ValueError, match="size 5000 is larger than every image"):
        natural_patches(2, size=5000, names=("coins",))
    with pytest.raises(ValueError, match="n_patches must be an integer >= 1"):
        drunet_data(torch.zeros(2, 1, 8, 8), n_patches=0)
    with pytest.raises(ValueError, match="x must hold square images"):
        drunet_data(torch.zeros(2, 1, 8, 6))
    with pytest.raises(ValueError, match="sigma_max must be a finite number > 0"):
        drunet_loss(NETS["drunet"], torch.zeros(2, 1, 8, 8), sigma_max=0.0)
    with pytest.raises(TypeError, match="model must be callable"):
        drunet_loss(None, torch.zeros(2, 1, 8, 8))


def test_controlnet_parts_check_their_arguments():
    from diffu.nn import RestorerConfig, zero_conv

    with pytest.raises(ValueError, match="kernel_size must be odd"):
        zero_conv(4, 4, 2)
    with pytest.raises(ValueError, match="cout must be an integer >= 1"):
        zero_conv(4, 0)
    with pytest.raises(ValueError, match="channel_mult must be a non-empty tuple"):
        RestorerConfig(channel_mult=())
    with pytest.raises(ValueError, match="hint_channels must be an integer >= 1"):
        ControlNet(NETS["unet"], hint_channels=0)
    with pytest.raises(TypeError, match="base must be a diffu.nn.UNet"):
        ControlNet(NETS["restorer"])
    with pytest.raises(TypeError, match="restorer must be a torch.nn.Module"):
        ControlledUNet(NETS["unet"], restorer=lambda y: y)


# ---------------------------------------------------------------------------------------------------------------
# NaN: propagated by the networks (documented), refused by the training data and losses
# ---------------------------------------------------------------------------------------------------------------


def _nan(shape):
    x = torch.zeros(shape)
    x.view(-1)[0] = float("nan")
    return x


@pytest.mark.parametrize("net", ["unet", "dit", "mlp", "ncls", "drunet", "ae", "patch"])
def test_nan_in_the_input_propagates_as_the_module_docstring_says(net):
    """The forward checks shapes and dtypes only (no pass over the data at every sampler step): NaN in ``x`` comes
    out as NaN — never as a plausible number — and the network's module docstring says so."""
    import importlib
    import re

    m = NETS[net]
    x = _nan((4, 2)) if net == "mlp" else _nan(X.shape)
    args = {"unet": (x, T), "dit": (x, T), "mlp": (x, torch.zeros(4)), "ncls": (x, T), "drunet": (x, 0.1)}
    with torch.no_grad():
        out = m(*args.get(net, (x,)))
    assert torch.isnan(out).any()
    doc = importlib.import_module(type(m).__module__).__doc__
    assert re.search(r"NaN or inf in .{0,200}propagates to the output", doc, re.S)


def test_regression_drunet_data_refuses_nan():
    """drunet_data(x with NaN) returned a training set holding the NaN (the loss would train on it); now a named
    error, as does drunet_loss."""
    from diffu.nn.drunet import drunet_data, drunet_loss

    with pytest.raises(ValueError, match="x must be finite, got 1 NaN or infinite of 128 entries"):
        drunet_data(_nan((2, 1, 8, 8)), n_patches=1)
    with pytest.raises(ValueError, match="x must be finite"):
        drunet_loss(NETS["drunet"], _nan((2, 1, 8, 8)))
    inf = torch.zeros(2, 1, 8, 8)
    inf[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="x must be finite"):
        drunet_data(inf, n_patches=1)


def test_regression_autoencoder_loss_refuses_nan_and_leaves_scale_factor():
    """autoencoder_loss(x with NaN) stored a NaN running scale_factor in the model (and returned NaN); now a named
    error before the buffer is touched."""
    from diffu.nn.autoencoder import autoencoder_loss

    ae = Autoencoder(channels=8, latent_channels=2, groups=4)
    before = ae.scale_factor.clone()
    with pytest.raises(ValueError, match="x must be finite"):
        autoencoder_loss(ae, _nan((2, 1, 8, 8)))
    assert torch.equal(ae.scale_factor, before)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, H, W\)"):  # shape first, then values
        autoencoder_loss(ae, torch.zeros(2, 8, 8))


# ---------------------------------------------------------------------------------------------------------------
# check_input(x, name): what each network's forward checks first, for wrappers that check x before the labels
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("net, bad", [("unet", (2, 3, 28, 28)), ("dit", (1, 28, 28)), ("mmdit", (2, 1, 24, 24)),
                                      ("mlp", (4, 3)), ("ncls", (2, 1, 14, 14)),
                                      ("controlled", (2, 1, 30, 30))])  # fmt: skip
def test_check_input_method_names_the_argument(net, bad):
    m = NETS[net]
    good = (4, 2) if net == "mlp" else X.shape
    m.check_input(torch.zeros(good))  # valid: nothing raised
    m.check_input(torch.zeros(good), "x0")
    with pytest.raises(ValueError, match=r"^x0 must "):
        m.check_input(torch.zeros(bad), "x0")
    with pytest.raises(ValueError, match=r"^x must "):  # the forward's own message is unchanged
        m(torch.zeros(bad), T[:1].expand(bad[0]) if len(bad) > 1 else T[:1])
