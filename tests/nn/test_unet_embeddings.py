import math

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding

from diffu.nn import FMNISTClassifier, KernelUNet, MLPDenoiser, TimestepEmbedder, UNet, UNetConfig, timestep_embedding


def test_timestep_embedding_matches_dit_convention():
    t = torch.tensor([0.0, 1.0, 50.0, 999.0])
    ours = timestep_embedding(t, 64)
    ref = get_timestep_embedding(t, 64, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_survey_worked_example():
    """§2.6.1: t = 50, d = 8 → freqs [1, .1, .01, .001], args [50, 5, 0.5, 0.05] (the survey prints 0.5 last)."""
    e = timestep_embedding(torch.tensor([50.0]), 8)[0]
    args = torch.tensor([50.0, 5.0, 0.5, 0.05])
    torch.testing.assert_close(e, torch.cat([torch.cos(args), torch.sin(args)]), atol=1e-6, rtol=1e-5)


def test_timestep_embedding_odd_and_errors():
    assert timestep_embedding(torch.tensor([3.0]), 7).shape == (1, 7)
    with pytest.raises(ValueError, match="dim"):
        timestep_embedding(torch.tensor([1.0]), 1)
    with pytest.raises(ValueError, match="shape"):
        timestep_embedding(torch.tensor([[1.0]]), 8)
    with pytest.raises(ValueError, match="max_period"):
        timestep_embedding(torch.tensor([1.0]), 8, max_period=1)
    assert TimestepEmbedder(16, 32)(torch.tensor([1.0, 2.0])).shape == (2, 16)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)  # the test (not the library) seeds the weights it uses
    m = UNet(UNetConfig(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(14,), num_classes=10))
    for p in m.parameters():  # the zero-initialised output layers would hide a broken forward pass
        torch.nn.init.normal_(p, std=0.05)
    return m.eval()


def test_unet_shapes_and_conditioning(unet):
    x = torch.randn(3, 1, 28, 28)
    t = torch.tensor([0.0, 500.0, 999.0])
    out_null = unet(x, t)
    assert out_null.shape == x.shape
    torch.testing.assert_close(unet(x, t, y=torch.full((3,), 10)), out_null)  # y=None is the null label
    assert not torch.allclose(unet(x, t, y=torch.tensor([0, 1, 2])), out_null)
    assert not torch.allclose(unet(x, t + 100), out_null)  # time enters the network
    with pytest.raises(ValueError, match="y must be"):
        unet(x, t, y=torch.tensor([0, 1, 11]))


def test_unet_unconditional_rejects_labels():
    m = UNet(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=())
    assert m.num_classes is None and m.null_class is None
    with pytest.raises(ValueError, match="no class conditioning"):
        m(torch.randn(1, 1, 28, 28), torch.tensor([1.0]), y=torch.tensor([0]))


def test_unet_zero_init_output_and_param_count():
    m = UNet(UNetConfig(num_classes=10, num_res_blocks=1))
    with torch.no_grad():
        assert float(m(torch.randn(2, 1, 28, 28), torch.tensor([1.0, 2.0])).abs().max()) == 0.0
    assert sum(p.numel() for p in m.parameters()) < 4_000_000


def test_unet_batch_independence(unet):
    """Each sample's output depends only on its own input (GroupNorm, not BatchNorm)."""
    x = torch.randn(4, 1, 28, 28)
    t = torch.full((4,), 300.0)
    torch.testing.assert_close(unet(x, t)[:1], unet(x[:1], t[:1]), atol=1e-5, rtol=1e-4)


def test_mlp_denoiser():
    m = MLPDenoiser(2, 32, 2)
    assert m(torch.randn(5, 2), torch.arange(5.0)).shape == (5, 2)
    with pytest.raises(ValueError, match="shape"):
        m(torch.randn(5, 3), torch.arange(5.0))
    with pytest.raises(ValueError, match="hidden must be an integer >= 1"):
        MLPDenoiser(2, 0)
    mc = MLPDenoiser(2, 32, 2, num_classes=3)
    assert mc(torch.randn(2, 2), torch.zeros(2), y=torch.tensor([0, 3])).shape == (2, 2)


def test_classifier_shapes():
    c = FMNISTClassifier()
    assert c(torch.randn(2, 1, 28, 28)).shape == (2, 10) and c.features(torch.randn(2, 1, 28, 28)).shape == (
        2,
        128,
    )
    with pytest.raises(ValueError, match="shape"):
        c.features(torch.randn(2, 1, 32, 32))


def test_sinusoid_periods():
    e = timestep_embedding(torch.tensor([0.0, 2 * math.pi]), 2)  # the highest frequency is 1
    torch.testing.assert_close(e[0], e[1], atol=1e-5, rtol=0)


def test_group_norm_caps_groups_at_channels(gen):
    from diffu.nn import group_norm

    x = torch.randn(2, 16, 5, 5, generator=gen(1))
    norm = group_norm(16, 8)
    assert (norm.num_groups, norm.num_channels, norm.affine) == (8, 16, True)
    g = x.reshape(2, 8, -1)  # each group: 2 channels × 25 positions
    expected = (g - g.mean(-1, keepdim=True)) / (g.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    with torch.no_grad():  # float32 rounding of the two-pass statistics: 1e-6 on unit-variance values
        torch.testing.assert_close(norm(x), expected.reshape(x.shape), rtol=0, atol=1e-6)
    # 4 channels, 8 groups asked: one group per channel (instance norm over H, W)
    small = group_norm(4, 8)
    assert small.num_groups == 4
    y = small(x[:, :4])
    torch.testing.assert_close(y.mean((2, 3)), torch.zeros(2, 4), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="must divide"):
        group_norm(12, 8)
    with pytest.raises(ValueError, match=">= 1"):
        group_norm(0, 8)


def test_kernel_unet_pads_runs_the_unet_and_crops(gen):
    """KernelUNet is exactly its UNet on the zero-padded canvas, cropped back to the k × k kernel."""
    net = KernelUNet(kernel_size=5, canvas=8, channels=8, channel_mult=(1, 2), attn_resolutions=())
    k = torch.randn(3, 1, 5, 5, generator=gen(0))
    t = torch.tensor([0.0, 10.0, 999.0])
    padded = torch.nn.functional.pad(k, (1, 2, 1, 2))  # (3, 1, 8, 8): (8 - 5) // 2 before, the rest after
    assert torch.equal(net(k, t), net.unet(padded, t)[..., 1:6, 1:6])
    assert net.prediction == "eps" and net.config.to_dict()["canvas"] == 8
    with pytest.raises(ValueError, match="k_t must have shape"):
        net(torch.zeros(2, 1, 7, 7), torch.zeros(2))
    for bad in ({"kernel_size": 8}, {"kernel_size": 9, "canvas": 8}):
        with pytest.raises(ValueError, match="odd kernel_size"):
            KernelUNet(**bad)


# ---------------------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------------------


def test_regression_timestep_embedding_refuses_fractional_dim():
    """timestep_embedding(t, 2.5) returned a (N, 2) embedding with float arithmetic on the size; dim and
    max_period are checked as numbers now."""
    t = torch.tensor([1.0, 2.0])
    for dim in (2.5, 8.0, "8", True, 0):
        with pytest.raises(ValueError, match="dim must be an integer >= 2"):
            timestep_embedding(t, dim)
    for bad, error in ((float("nan"), ValueError), (float("inf"), ValueError), (0.5, ValueError), ("1e4", TypeError)):
        with pytest.raises(error, match="max_period must be a finite number"):
            timestep_embedding(t, 8, bad)
    with pytest.raises(ValueError, match="t must hold real"):
        timestep_embedding(torch.tensor([True, False]), 8)
    with pytest.raises(TypeError, match=r"t must be a tensor of shape \(N,\)"):
        timestep_embedding("abc", 8)
    assert torch.equal(timestep_embedding([1.0, 2.0], 8), timestep_embedding(t, 8))  # a list is fine
    for kwargs, match in (({"hidden_size": 0}, "hidden_size"), ({"frequency_size": 1}, "frequency_size")):
        with pytest.raises(ValueError, match=f"{match} must be an integer"):
            TimestepEmbedder(**{"hidden_size": 8, **kwargs})
    with pytest.raises(ValueError, match="max_period must be a finite number > 1"):
        TimestepEmbedder(8, max_period=1.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"channels": 0}, ValueError, "channels must be an integer >= 1, got 0"),
        ({"channels": 32.0}, ValueError, "channels must be an integer >= 1"),
        ({"in_channels": -1}, ValueError, "in_channels must be an integer >= 1"),
        ({"num_res_blocks": -1}, ValueError, "num_res_blocks must be an integer >= 0"),
        ({"num_res_blocks": 1.5}, ValueError, "num_res_blocks must be an integer >= 0"),
        ({"channel_mult": ()}, ValueError, "channel_mult must be a non-empty tuple"),
        ({"channel_mult": (1, 0)}, ValueError, "each entry of channel_mult must be an integer >= 1"),
        ({"channel_mult": 2}, TypeError, "channel_mult must be a tuple of integers"),
        ({"attn_resolutions": (7.5,)}, ValueError, "each entry of attn_resolutions"),
        ({"image_size": 30}, ValueError, r"image_size must be divisible by 4 \(the UNet halves it 2 times"),
        ({"groups": 0}, ValueError, "groups must be an integer >= 1"),
        ({"channels": 12}, ValueError, "groups 8 must divide the widths"),
        ({"dropout": 1.0}, ValueError, r"dropout must be a finite number in \[0, 1\)"),
        ({"num_classes": 0}, ValueError, "num_classes must be an integer >= 1"),
        ({"prediction": "score"}, ValueError, "prediction must be one of"),
        ({"time_scale": float("nan")}, ValueError, "time_scale must be a finite number > 0"),
    ],
)
def test_regression_unet_config_refuses_nonsense(kwargs, error, match):
    """UNetConfig validates itself on construction (before: negative or fractional sizes failed inside torch, an
    image size the UNet cannot halve failed only at the first call, a dropout of 1 zeroed everything)."""
    with pytest.raises(error, match=match):
        UNetConfig(**kwargs)
    with pytest.raises(error, match=match):
        UNet(**kwargs)


def test_regression_unet_input_that_cannot_be_halved():
    """A 7×7 (or 30×30) input crashed in torch.cat deep in the decoder; the UNet now names the size it needs."""
    m = UNet(channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=())
    for size in (7, 30):
        with pytest.raises(ValueError, match=rf"x must have a height and width divisible by 4 .*got {size}×{size}"):
            m(torch.zeros(1, 1, size, size), torch.zeros(1))
    assert m(torch.zeros(1, 1, 12, 20), torch.zeros(1)).shape == (1, 1, 12, 20)


def test_kernel_unet_and_classifier_configs_are_checked():
    from diffu.nn import KernelUNetConfig, NoisyClassifier, NoisyClassifierConfig

    with pytest.raises(ValueError, match="need an odd kernel_size <= canvas"):
        KernelUNetConfig(kernel_size=8)
    with pytest.raises(ValueError, match="kernel_size must be an integer >= 1"):
        KernelUNetConfig(kernel_size=9.0)
    with pytest.raises(ValueError, match=r"canvas must be divisible by 4 \(the UNet halves it 2 times"):
        KernelUNetConfig(kernel_size=9, canvas=14, channel_mult=(1, 2, 2))
    assert KernelUNetConfig(channel_mult=[1, 2]).channel_mult == (1, 2)  # JSON lists become tuples
    for kwargs, match in (({"channels": 0}, "channels"), ({"num_classes": 2.0}, "num_classes")):
        with pytest.raises(ValueError, match=f"{match} must be an integer >= 1"):
            NoisyClassifierConfig(**kwargs)
    with pytest.raises(TypeError, match="either config or keyword arguments"):
        NoisyClassifier(NoisyClassifierConfig(), channels=8)
    for kwargs, match in (({"width": 12}, "width must be divisible by 8"), ({"feature_dim": 4}, "feature_dim must")):
        with pytest.raises(ValueError, match=match):
            FMNISTClassifier(**kwargs)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        FMNISTClassifier(num_classes=0)
    with pytest.raises(ValueError, match="groups must be an integer >= 1, got 0"):
        from diffu.nn import group_norm

        group_norm(8, 0)


def test_mlp_denoiser_arguments_are_checked():
    for kwargs, error, match in (
        ({"dim": 2.0}, ValueError, "dim must be an integer >= 1"),
        ({"depth": 0}, ValueError, "depth must be an integer >= 1"),
        ({"t_dim": 1}, ValueError, "t_dim must be an integer >= 2"),
        ({"num_classes": 0}, ValueError, "num_classes must be an integer >= 1"),
        ({"time_scale": "1000"}, TypeError, "time_scale must be a finite number"),
    ):
        with pytest.raises(error, match=match):
            MLPDenoiser(**kwargs)
