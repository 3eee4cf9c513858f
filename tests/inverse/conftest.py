"""Fixtures shared by the tests of diffu.inverse."""

import pytest
import torch

from diffu.nn.unet import UNet, UNetConfig


@pytest.fixture(scope="module")
def unet():
    """A tiny unconditional ε-UNet with seeded random weights (8 channels, two levels, no attention)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_classes=None)
        return UNet(cfg).eval()
