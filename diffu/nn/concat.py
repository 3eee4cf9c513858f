"""A UNet conditioned by channel concatenation: ``model(x_t, t, cond=image)`` (chapter §5.2, paired translation).

The simplest way to condition a diffusion network on an image of the same size — SR3 (Saharia et al. 2022) for
super-resolution, Palette (Saharia et al. 2022) for image-to-image translation, Wolleb et al. 2021 for segmentation —
is to stack the condition onto the noisy state as extra input channels: the network sees ``[x_t, cond]`` with
``C + C_cond`` channels at every step and predicts ε for the ``C`` state channels only. Training is the ordinary ε
loss with the condition passed along (:func:`diffu.medical.translation.paired_loss`); sampling is any sampler of
:mod:`diffu.samplers` with ``model_kwargs={"cond": image}``.

NaN or inf in ``x``, ``t`` or ``cond`` propagates to the output: forward checks shapes and dtypes only (no pass
over the data at every sampler step; :mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..checks import check_int
from .inputs import check_input, make_config
from .unet import UNet, UNetConfig

__all__ = ["ConcatUNet", "ConcatUNetConfig"]


@dataclass
class ConcatUNetConfig(UNetConfig):
    """Hyper-parameters of :class:`ConcatUNet`: every field of :class:`~diffu.nn.unet.UNetConfig` (validated the same
    way; ``in_channels`` is the number of channels of the diffused state ``x_t``) plus ``cond_channels``, the
    channels of the condition image (an integer ≥ 1). The inner UNet has ``in_channels + cond_channels`` inputs."""

    cond_channels: int = 1

    def __post_init__(self):
        super().__post_init__()
        check_int("cond_channels", self.cond_channels, 1)

    def unet_config(self) -> UNetConfig:
        """The :class:`~diffu.nn.unet.UNetConfig` of the inner UNet (``in_channels + cond_channels`` inputs)."""
        fields = self.to_dict()
        cond = fields.pop("cond_channels")
        fields["in_channels"] += cond
        return UNetConfig(**fields)


class ConcatUNet(nn.Module):
    """``model(x_t, t, cond, y=None) -> ε̂``: a :class:`~diffu.nn.unet.UNet` whose input is ``[x_t, cond]``
    concatenated along the channels (SR3/Palette-style conditioning).

    Args:
        config: a :class:`ConcatUNetConfig`, or None and its fields as keyword arguments (not both).

    The call takes ``x_t`` a float ``(N, in_channels, H, W)`` (``H, W`` divisible by ``2^(len(channel_mult) − 1)``),
    ``t`` a number or ``(N,)``, ``cond`` a float ``(N, cond_channels, H, W)`` of ``x_t``'s batch, size and device
    (cast to ``x_t``'s dtype), and ``y`` class labels as :class:`~diffu.nn.unet.UNet` takes them; it returns
    ``(N, out_channels, H, W)``. Built from its config alone, so :func:`diffu.pretrained.build` rebuilds it from a
    manifest entry (``arch`` ``"diffu.nn.concat:ConcatUNet"``, ``config_class``
    ``"diffu.nn.concat:ConcatUNetConfig"``).

    Raises:
        ValueError: (at the call) ``x_t`` of the wrong shape or dtype; ``cond`` missing, not a floating tensor of
            shape ``(N, cond_channels, H, W)`` matching ``x_t``, or on another device (messages name ``x`` or
            ``cond``).
        TypeError: (at construction) a config that is not a :class:`ConcatUNetConfig`, or config and keywords.

    Notes:
        Palette (``Janspiry/Palette-Image-to-Image-Diffusion-Models``, ``models/network.py``) concatenates
        ``torch.cat([y_cond, y_t], dim=1)`` — condition first; we put the state first. The order is a convention
        of the weights, not of the method. Used for the paired T1 → T2 model of §5.2 (and reusable for
        segmentation, with the mask as the state and the image as ``cond``).
    """

    def __init__(self, config: ConcatUNetConfig | None = None, **kwargs):
        super().__init__()
        cfg = make_config(ConcatUNetConfig, config, kwargs)
        self.config = cfg
        self.prediction = cfg.prediction
        self.num_classes = cfg.num_classes
        self.unet = UNet(cfg.unet_config())

    @property
    def null_class(self) -> int | None:
        return self.num_classes

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError``/``TypeError`` naming ``name`` unless ``x`` is a float ``(N, in_channels, H, W)``
        whose ``H, W`` survive the UNet's downsamplings."""
        levels = len(self.config.channel_mult) - 1
        check_input(x, (self.config.in_channels, None, None), name, multiple=2**levels,
                    why=f" (the UNet halves it {levels} times)")  # fmt: skip

    def check_cond(self, cond, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``cond`` is a float ``(N, cond_channels, H, W)`` of ``x``'s batch, size and
        device (what :meth:`forward` checks; :func:`diffu.medical.translation.paired_loss` calls it too)."""
        want = (x.shape[0], self.config.cond_channels, *x.shape[2:])
        if cond is None:
            raise ValueError(f"cond must be given: this {type(self).__name__} is conditioned on an image of shape "
                             f"{want} (N, cond_channels, H, W); samplers take "
                             f"model_kwargs={{'cond': image}}")  # fmt: skip
        if not isinstance(cond, torch.Tensor) or tuple(cond.shape) != want:
            got = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
            raise ValueError(f"cond must be a tensor of shape {want} (N, cond_channels, H, W) matching x, got {got}")
        check_input(cond, (self.config.cond_channels, None, None), "cond")
        if cond.device != x.device:
            raise ValueError(f"cond must be on x's device {x.device}, got {cond.device}")

    def forward(self, x: torch.Tensor, t, cond: torch.Tensor | None = None, y: torch.Tensor | None = None):
        self.check_input(x)
        self.check_cond(cond, x)
        h = torch.cat([x, cond.to(dtype=x.dtype)], dim=1)  # (N, C + C_cond, H, W)
        return self.unet(h, t, y)  # (N, out_channels, H, W)
