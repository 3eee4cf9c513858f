"""Tiny networks and data for the §7 distillation tests: an 8×8 class-conditional ε UNet."""

from __future__ import annotations

import torch

from diffu.nn import UNet, UNetConfig


def tiny_unet(seed: int = 0, **kw) -> UNet:
    """An 8×8 UNet whose output convolution is randomised (a zero-initialised one would predict ε̂ = 0)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8,
                              num_classes=3, **kw))  # fmt: skip
        torch.nn.init.normal_(net.conv_out.weight, std=0.05)
    return net.eval()


def batch(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 3, (n,), generator=g)


class ConstantX0(torch.nn.Module):
    """Predicts the same x̂_0 = c everywhere."""

    prediction = "x0"

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x, t, y=None):
        return torch.full_like(x, self.c)
