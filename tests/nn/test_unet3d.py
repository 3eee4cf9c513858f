"""diffu.nn.unet3d (§5.1): the 3D UNet's shapes, zero-initialised output, determinism, float64, config and input
errors, and the identity that makes it the 2D UNet with one more axis: inflated from a 2D UNet, it returns the 2D
network's output on every slice of a volume whose slices are all equal."""

import pytest
import torch

from diffu.nn.unet import UNet, UNetConfig
from diffu.nn.unet3d import UNet3D, UNet3DConfig

SMALL = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, volume_size=8)


def seeded_net(seed=0, dtype=torch.float32, randomise=False, **kw):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = UNet3D(UNet3DConfig(**{**SMALL, **kw}))
        if randomise:  # away from the zero-initialised layers, so the output is a non-trivial function
            for p in net.parameters():
                torch.nn.init.normal_(p, std=0.2)
    return net.to(dtype).eval()


def vol(shape=(2, 1, 4, 8, 8), seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_shapes_channels_and_non_cubic_volumes():
    net = seeded_net(in_channels=2, out_channels=3)
    assert net(vol((2, 2, 4, 8, 12)), torch.tensor([1.0, 500.0])).shape == (2, 3, 4, 8, 12)
    assert net(vol((1, 2, 8, 8, 8)), 10).shape == (1, 3, 8, 8, 8)  # a number t is broadcast
    assert net.prediction == "eps" and net.config.to_dict()["volume_size"] == 8


def test_output_starts_at_zero_like_the_2d_unet():
    net = seeded_net()
    out = net(vol(), torch.tensor([3.0, 900.0]))
    assert torch.count_nonzero(out) == 0  # conv_out is zero-initialised: ε̂ = 0 before training


def test_inflated_2d_unet_gives_the_2d_output_on_every_equal_slice():
    """Centre-slice inflation of a random 2D UNet (attention at 4×4 and in the middle): on a volume of D copies of
    an image, GroupNorm and attention see the same statistics as on one slice, so every output slice equals the 2D
    output (to float64 rounding; measured max difference 1.3e-15)."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        u2 = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), image_size=8))
        for p in u2.parameters():
            torch.nn.init.normal_(p, std=0.3)
    u2 = u2.double().eval()
    u3 = UNet3D.from_unet2d(u2).eval()
    assert u3.config.volume_size == 8 and u3.config.attn_resolutions == (4,)
    assert next(u3.parameters()).dtype == torch.float64
    x = vol((2, 1, 8, 8), dtype=torch.float64)
    t = torch.tensor([3.0, 700.0], dtype=torch.float64)
    with torch.no_grad():
        out2 = u2(x, t)
        out3 = u3(x[:, :, None].expand(-1, -1, 4, -1, -1), t)
    assert out2.abs().mean() > 0.1  # a non-trivial function (measured 0.42)
    torch.testing.assert_close(out3, out2[:, :, None].expand_as(out3), rtol=0, atol=1e-12)
    # on a volume whose slices differ, the 3D network mixes neighbouring slices only through GroupNorm and attention
    # (the kernels are zero off-centre), so its slices are not the 2D outputs of each slice
    xv = vol((2, 1, 4, 8, 8), dtype=torch.float64)
    with torch.no_grad():
        assert not torch.allclose(u3(xv, t)[:, :, 0], u2(xv[:, :, 0], t), atol=1e-6)
    u3.conv_in.weight.data.zero_()
    assert u2.conv_in.weight.abs().sum() > 0  # the inflated network owns its parameters


def test_from_unet2d_errors():
    with pytest.raises(TypeError, match="unet must be a diffu.nn.UNet"):
        UNet3D.from_unet2d(torch.nn.Linear(2, 2))
    cond = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_classes=3,
                           image_size=8))  # fmt: skip
    with pytest.raises(ValueError, match="unet must be unconditional"):
        UNet3D.from_unet2d(cond)
    flow = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8,
                           prediction="velocity"))  # fmt: skip
    with pytest.raises(ValueError, match="unet must predict one of"):
        UNet3D.from_unet2d(flow)


def test_deterministic_and_time_dependent():
    a, b = seeded_net(0, randomise=True), seeded_net(0, randomise=True)
    x = vol()
    t = torch.tensor([10.0, 10.0])
    with torch.no_grad():
        out = a(x, t)
        assert torch.equal(out, b(x, t)) and torch.equal(out, a(x, t))
        assert not torch.equal(out, seeded_net(1, randomise=True)(x, t))
        assert not torch.allclose(out, a(x, torch.tensor([900.0, 900.0])))  # the time embedding reaches the output


def test_float64_forward_and_backward():
    net = seeded_net(dtype=torch.float64)
    x = vol(dtype=torch.float64)
    out = net(x, torch.tensor([5.0, 6.0], dtype=torch.float64))
    assert out.dtype == torch.float64
    (out - x).pow(2).mean().backward()
    assert net.conv_out.weight.grad is not None and net.conv_out.weight.grad.abs().sum() > 0


@pytest.mark.gpu
def test_runs_on_cuda():
    net = seeded_net().cuda()
    assert net(vol().cuda(), torch.tensor([1.0, 2.0], device="cuda")).device.type == "cuda"


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(channels=0), ValueError, "channels must be an integer >= 1"),
        (dict(channels=8.0), ValueError, "channels must be an integer"),
        (dict(num_res_blocks=-1), ValueError, "num_res_blocks must be an integer >= 0"),
        (dict(channel_mult=()), ValueError, "channel_mult"),
        (dict(volume_size=6, channel_mult=(1, 2, 2)), ValueError, "volume_size must be divisible by 4"),
        (dict(groups=3), ValueError, "groups 3 must divide the widths"),
        (dict(dropout=1.0), ValueError, "dropout must be"),
        (dict(prediction="velocity"), ValueError, "prediction must be one of"),
        (dict(time_scale=0), ValueError, "time_scale must be"),
        (dict(attn_resolutions=(0,)), ValueError, "attn_resolutions"),
    ],
)
def test_config_errors(kw, err, match):
    with pytest.raises(err, match=match):
        UNet3DConfig(**{**SMALL, **kw})


def test_config_and_kwargs_together_are_refused():
    with pytest.raises((TypeError, ValueError), match="config"):
        UNet3D(UNet3DConfig(**SMALL), channels=16)


def test_forward_input_errors():
    net = seeded_net()
    t = torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, D, H, W\)"):
        net(vol((2, 1, 8, 8)), t)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, D, H, W\)"):
        net(vol((2, 3, 4, 8, 8)), t)
    with pytest.raises(ValueError, match="x must have a depth, height and width divisible by 2"):
        net(vol((2, 1, 3, 8, 8)), t)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        net(vol().long(), t)
    with pytest.raises(TypeError, match="x must be a tensor"):
        net([1.0], t)
    with pytest.raises(ValueError, match=r"t must be a number or a tensor of shape \(N,\)"):
        net(vol(), torch.ones(3))
