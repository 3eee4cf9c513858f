"""A plain UNet segmenter: the non-diffusion baseline of chapter §6.2, ``model(images) -> logits``.

The same :class:`~diffu.nn.unet.UNet` as the diffusion segmenters (widths, blocks, attention), with the image as its
only input and ``K`` class logits as its output. Its time input is held at 0, so the time embedding is one learned
constant per block, a bias: the network is an ordinary UNet of the diffusion models' size, trained with
cross-entropy + Dice (:func:`diffu.segmentation.segmentation_loss`) in one forward pass per image.

NaN or inf in the images propagates to the logits: forward checks shapes and dtypes only (:mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

import torch

from .unet import UNet

__all__ = ["SegmentationUNet"]


class SegmentationUNet(UNet):
    """``model(images) -> logits``: a :class:`~diffu.nn.unet.UNet` (config :class:`~diffu.nn.unet.UNetConfig`,
    ``in_channels`` the image's channels, ``out_channels`` the number of classes ``K`` ≥ 2) called at ``t = 0``.

    Built from its config alone (``arch`` ``"diffu.nn.segnet:SegmentationUNet"``), so :func:`diffu.pretrained.build`
    rebuilds it from a manifest entry. The call takes ``images`` float ``(N, in_channels, H, W)`` and returns
    ``(N, K, H, W)`` logits; the label map is ``logits.argmax(1)``.

    Raises:
        ValueError: (at construction) ``out_channels`` < 2 or a config :class:`~diffu.nn.unet.UNet` rejects; (at the
            call) images of the wrong shape or dtype (the message names ``x``).

    Used in chapter §6.2 (the baseline every diffusion segmenter is compared with).
    """

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        if self.config.out_channels < 2:
            raise ValueError(f"out_channels must be the number of classes (>= 2), got {self.config.out_channels}")

    def forward(self, x: torch.Tensor, t=None, y=None) -> torch.Tensor:
        """Logits ``(N, K, H, W)`` of ``x``; ``t`` and ``y`` must be left out (the network has no time)."""
        if t is not None or y is not None:
            raise ValueError("SegmentationUNet takes the images only: t and y must be None")
        self.check_input(x)
        return super().forward(x, torch.zeros(x.shape[0], device=x.device, dtype=x.dtype))
