"""Tests of diffu.nn.segnet: the plain UNet segmenter of chapter §6.2."""

import pytest
import torch

from diffu import pretrained
from diffu.nn import UNet, UNetConfig
from diffu.nn.segnet import SegmentationUNet
from diffu.recipes import network_entry
from diffu.train import seeded

CFG = dict(in_channels=1, out_channels=4, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
           image_size=8)  # fmt: skip


def test_it_is_the_unet_at_time_zero():
    """Same weights as a UNet of the same config; the logits are that UNet's output at t = 0."""
    with seeded(0):
        seg = SegmentationUNet(**CFG)
    with seeded(0):
        unet = UNet(**CFG)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(seg(x), unet(x, torch.zeros(3)), rtol=0, atol=0)
        assert seg(x).shape == (3, 4, 8, 8)
    assert sum(p.numel() for p in seg.parameters()) == sum(p.numel() for p in unet.parameters())


def test_float64_and_gradients():
    seg = SegmentationUNet(**CFG).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    out = seg(x)
    assert out.dtype == torch.float64
    out.square().mean().backward()
    assert all(p.grad is not None for p in seg.parameters() if p.requires_grad)


def test_rebuilt_from_its_manifest_entry():
    with seeded(0):
        seg = SegmentationUNet(UNetConfig(**CFG))
    entry = network_entry(seg)
    assert entry["arch"] == "diffu.nn.segnet:SegmentationUNet" and entry["config_class"] == "diffu.nn.unet:UNetConfig"
    with seeded(0):
        again = pretrained.build(entry)
    assert type(again) is SegmentationUNet
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(again(x), seg(x))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="out_channels"):
        SegmentationUNet(**{**CFG, "out_channels": 1})
    seg = SegmentationUNet(**CFG)
    with pytest.raises(ValueError, match="t and y"):
        seg(torch.randn(1, 1, 8, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="x"):
        seg(torch.randn(1, 2, 8, 8))
