"""A small KL-regularised convolutional autoencoder for latent diffusion on Fashion-MNIST (chapter §4.5).

Latent diffusion (Rombach et al. 2022, ``CompVis/latent-diffusion``: ``ldm/models/autoencoder.py::AutoencoderKL``)
first compresses images with an autoencoder and runs diffusion on its latents. Its "KL-f4" first stage downsamples
by 4 per side into a few channels, is trained as a VAE with a very small KL weight (1e-6: the latent is nearly
deterministic, the KL only keeps its scale in check) and is used through the posterior *mean*; the diffusion model
sees ``scale_factor · z`` with ``scale_factor = 1 / std(z)`` (their ``scale_by_std``), so its latents have unit
variance like the images of a pixel model. Our toy version: 28×28×1 ↔ ``(C_z, 7, 7)`` (f4, ``C_z = 3`` as KL-f4),
plain L1 + KL (no perceptual or adversarial loss), and ``scale_factor`` stored as a buffer inside the network and
applied inside :meth:`Autoencoder.encode` / :meth:`Autoencoder.decode`, so ``encode`` already returns unit-std
latents and every caller (training data, samplers, ReSample) uses one convention.

NaN or inf in the input of :meth:`Autoencoder.encode`, :meth:`~Autoencoder.moments`, :meth:`~Autoencoder.decode`
and the call propagates to the output: they check shapes and dtypes only (:mod:`diffu.nn.inputs`). The training
loss :func:`autoencoder_loss` refuses NaN or inf in ``x`` instead (its running ``scale_factor`` would absorb it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_finite, check_generator, check_int, check_real, check_unit
from .inputs import check_input, make_config

__all__ = ["Autoencoder", "AutoencoderConfig", "autoencoder_loss", "encode_images"]


@dataclass
class AutoencoderConfig:
    """Hyper-parameters of :class:`Autoencoder` (stored next to shipped weights), validated on construction:
    integers ≥ 1, with ``groups`` dividing ``channels`` (the GroupNorms of widths ``channels`` and
    ``2 · channels``)."""

    in_channels: int = 1
    channels: int = 32
    latent_channels: int = 3
    groups: int = 8

    def __post_init__(self):
        for name in ("in_channels", "channels", "latent_channels", "groups"):
            check_int(name, getattr(self, name), 1)
        if self.channels % self.groups:
            raise ValueError(f"groups {self.groups} must divide channels {self.channels}")

    def to_dict(self):
        return asdict(self)


class _ResBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3, twice, with a (1×1-projected) residual."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(groups, cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1),
        )  # fmt: skip
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class Autoencoder(nn.Module):
    """``encode: (N, C, H, W) → (N, C_z, H/4, W/4)`` (posterior mean × ``scale_factor``), ``decode`` its inverse.

    Encoder: conv → res(c) → stride-2 conv → res(2c) → stride-2 conv → res(2c) → norm, SiLU, conv to ``2 C_z``
    (mean and log-variance, as LDM's ``Encoder`` with ``double_z``). Decoder mirrors it with nearest-neighbour
    upsampling. ``H`` and ``W`` must be divisible by 4. ``scale_factor`` (a buffer, 1 at init) is set by
    :meth:`set_scale_factor` or tracked during training by :func:`autoencoder_loss`.

    Args:
        config: an :class:`AutoencoderConfig`, or None and its fields as keyword arguments (not both).

    :meth:`encode`, :meth:`moments` and the call take a float ``(N, in_channels, H, W)`` with ``H, W`` divisible by
    4; :meth:`decode` a float ``(N, latent_channels, h, w)``; others raise ``ValueError`` naming the argument.
    """

    def __init__(self, config: AutoencoderConfig | None = None, **kwargs):
        super().__init__()
        cfg = make_config(AutoencoderConfig, config, kwargs)
        self.config = cfg
        c, g, cz = cfg.channels, cfg.groups, cfg.latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(cfg.in_channels, c, 3, padding=1), _ResBlock(c, c, g),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _ResBlock(2 * c, 2 * c, g),  # H/2
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), _ResBlock(2 * c, 2 * c, g),  # H/4
            nn.GroupNorm(g, 2 * c), nn.SiLU(), nn.Conv2d(2 * c, 2 * cz, 3, padding=1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv2d(cz, 2 * c, 3, padding=1), _ResBlock(2 * c, 2 * c, g),  # H/4
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * c, 2 * c, 3, padding=1),
            _ResBlock(2 * c, c, g),  # H/2
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1), _ResBlock(c, c, g),  # H
            nn.GroupNorm(g, c), nn.SiLU(), nn.Conv2d(c, cfg.in_channels, 3, padding=1),
        )  # fmt: skip
        self.register_buffer("scale_factor", torch.ones(()))

    def latent_shape(self, image_shape) -> tuple[int, ...]:
        """``(N, C_z, H/4, W/4)`` for an image shape ``(N, C, H, W)`` (integers ≥ 0, ``H, W`` divisible by 4)."""
        if not isinstance(image_shape, (tuple, list, torch.Size)) or len(image_shape) != 4:
            raise ValueError(f"image_shape must be a shape (N, C, H, W), got {image_shape!r:.80}")
        for name, v in zip(("N", "C", "H", "W"), image_shape):
            check_int(f"image_shape's {name}", v, 0)
        n, _, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"image_shape's height and width must be divisible by 4, got {h}×{w}")
        return (n, self.config.latent_channels, h // 4, w // 4)

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled posterior mean and log-variance, each ``(N, C_z, H/4, W/4)``."""
        check_input(x, (self.config.in_channels, None, None), multiple=4, why=" (the encoder halves it twice)")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)  # LDM's DiagonalGaussianDistribution clamp

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent ``scale_factor · mean(x)``, ``(N, C_z, H/4, W/4)``."""
        return self.moments(x)[0] * self.scale_factor.to(x.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image ``(N, C, 4h, 4w)`` from a scaled latent ``(N, C_z, h, w)`` (not clipped to [-1, 1])."""
        check_input(z, (self.config.latent_channels, None, None), "z")
        return self.decoder(z / self.scale_factor.to(z.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``decode(encode(x))``, ``(N, C, H, W)``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def set_scale_factor(self, x: torch.Tensor, batch_size: int = 1000) -> float:
        """Set ``scale_factor = 1 / std(mean(x))`` over the images ``x`` (LDM's ``scale_by_std``), so ``encode(x)``
        has unit standard deviation; returns the new value. ``x`` ``(N, C, H, W)`` holds at least 2 values per
        latent channel in all; ``batch_size`` is an integer ≥ 1.

        Raises:
            ValueError: a bad ``x`` or ``batch_size``, or latents whose standard deviation is not a finite number
                > 0 (a constant or NaN input), which would give an infinite or NaN scale.
        """
        check_input(x, (self.config.in_channels, None, None), multiple=4, why=" (the encoder halves it twice)")
        check_int("batch_size", batch_size, 1)
        dev = self.scale_factor.device
        mu = torch.cat([self.moments(b.to(dev))[0] for b in x.split(batch_size)])
        std = mu.float().std().item()
        if not std > 0 or std == float("inf"):
            raise ValueError(f"x must give latents of finite, non-zero standard deviation, got std {std}")
        self.scale_factor.fill_(1 / std)
        return float(self.scale_factor)


def autoencoder_loss(model: Autoencoder, x: torch.Tensor, *_, generator=None, kl_weight: float = 1e-6,
                     momentum: float = 0.1) -> torch.Tensor:  # fmt: skip
    """``mean |x − D(z)| + kl_weight · KL(q(z|x) ‖ N(0, I)) / (C H W)`` with ``z = μ + σ ε`` (reparameterised).

    LDM sums the reconstruction loss and the KL over pixels and latent entries (``LPIPSWithDiscriminator``,
    ``kl_weight = 1e-6``); we use the per-pixel mean and divide the per-image KL sum by the number of pixels, the
    same ratio. Extra batch tensors (labels) are ignored. As a side effect the model's ``scale_factor`` buffer tracks
    ``1 / std(μ)`` of the training batches as a running average (like BatchNorm's running statistics, ``momentum``
    per step), so the trained weights carry the scale LDM computes with ``scale_by_std``. Chapter §4.5.

    Args:
        model: the :class:`Autoencoder` being trained.
        x: float images ``(N, C, H, W)``, ``H, W`` divisible by 4.
        generator: the ``torch.Generator`` of the reparameterisation noise, or None.
        kl_weight: the KL weight, a finite number ≥ 0.
        momentum: the running average's step, in [0, 1].

    Raises:
        TypeError: ``model`` is not an :class:`Autoencoder`; ``generator`` is not a generator.
        ValueError: a bad ``x`` (NaN or inf included, checked before ``scale_factor`` is touched), ``kl_weight``
            or ``momentum``.
    """
    if not isinstance(model, Autoencoder):
        raise TypeError(f"model must be a diffu.nn.Autoencoder, got {type(model).__name__}")
    check_generator(generator)
    check_real("kl_weight", kl_weight, 0)
    check_unit("momentum", momentum)
    check_input(x, (model.config.in_channels, None, None), multiple=4, why=" (the encoder halves it twice)")
    check_finite(x, "x")  # once per training step: NaN would otherwise reach the running scale_factor
    mean, logvar = model.moments(x)
    with torch.no_grad():
        target = 1 / mean.detach().float().std()
        sf = model.scale_factor
        sf.copy_(target if bool(sf == 1) else torch.lerp(sf, target.to(sf), momentum))
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    z = mean + (0.5 * logvar).exp() * eps
    rec = model.decoder(z)
    kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1).mean()
    return F.l1_loss(rec, x) + kl_weight * kl / x[0].numel()


@torch.no_grad()
def encode_images(autoencoder: Autoencoder, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Scaled latents ``autoencoder.encode(x)`` computed in batches on the autoencoder's device, returned on ``x``'s
    device: the training set of a latent diffusion model (e.g. the ``fmnist_latent_dit`` recipe).

    Args:
        autoencoder: an :class:`Autoencoder`.
        x: float images ``(N, C, H, W)``, ``H, W`` divisible by 4.
        batch_size: images per batch, an integer ≥ 1.

    Raises:
        TypeError: ``autoencoder`` is not an :class:`Autoencoder`.
        ValueError: a bad ``x`` or ``batch_size``.
    """
    if not isinstance(autoencoder, Autoencoder):
        raise TypeError(f"autoencoder must be a diffu.nn.Autoencoder, got {type(autoencoder).__name__}")
    check_input(x, (autoencoder.config.in_channels, None, None), multiple=4, why=" (the encoder halves it twice)")
    check_int("batch_size", batch_size, 1)
    dev = next(autoencoder.parameters()).device
    return torch.cat([autoencoder.encode(b.to(dev)).to(x.device) for b in x.split(batch_size)])
