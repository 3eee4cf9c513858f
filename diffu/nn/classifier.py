"""Classifiers: the Fashion-MNIST classifier whose penultimate features define FD-FMNIST (chapter §2.2,
diffu.metrics) and the noise-aware classifier of classifier guidance (chapter §2.3).

NaN or inf in the input (``x`` or ``t``) propagates to the output: forward checks shapes and dtypes only
(:mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int
from .embeddings import timestep_embedding
from .inputs import check_input, check_int_tuple, make_config, timesteps_for
from .unet import AttnBlock, ResBlock, group_norm

__all__ = ["FMNISTClassifier", "NoisyClassifier", "NoisyClassifierConfig"]


class FMNISTClassifier(nn.Module):
    """conv(32) ×2 → pool → conv(64) ×2 → pool → conv(128) → global average → 128-d features → 10 logits.

    Input ``(N, 1, 28, 28)`` in [-1, 1]. :meth:`features` returns the ``(N, feature_dim)`` vectors whose Fréchet
    distance is our stated stand-in for FID (Inception features are not available offline).

    NaN or inf in the input propagates to the output: forward checks shapes and dtypes only
    (:mod:`diffu.nn.inputs`).

    Args:
        width: the first convolutions' width, an integer ≥ 8 divisible by 8 (the GroupNorm's 8 groups).
        feature_dim: the feature size, an integer ≥ 8 divisible by 8.
        num_classes: the number of logits, an integer ≥ 1.

    :meth:`features` and the call take a float ``(N, 1, 28, 28)`` and raise ``ValueError`` naming ``x`` otherwise.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        for name, value in (("width", width), ("feature_dim", feature_dim)):
            check_int(name, value, 8)
            if value % 8:
                raise ValueError(f"{name} must be divisible by 8 (the GroupNorm's groups), got {value}")
        check_int("num_classes", num_classes, 1)
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(), nn.MaxPool2d(2),  # 14×14
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(), nn.MaxPool2d(2),  # 7×7
            nn.Conv2d(2 * w, feature_dim, 3, padding=1), nn.GroupNorm(8, feature_dim), nn.SiLU(),
        )  # fmt: skip
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features ``(N, feature_dim)`` of a float ``(N, 1, 28, 28)`` batch."""
        check_input(x, (1, None, None), size=(28, 28), of="the classifier")
        return F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)  # (N, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``(N, num_classes)`` of a float ``(N, 1, 28, 28)`` batch."""
        return self.head(self.features(x))  # (N, num_classes)


@dataclass
class NoisyClassifierConfig:
    """Hyper-parameters of :class:`NoisyClassifier` (stored next to shipped weights), validated on construction:
    sizes are integers ≥ 1 (``num_res_blocks`` ≥ 0), ``channel_mult`` a non-empty tuple, ``attn_resolutions`` a
    tuple; lists are stored as tuples."""

    in_channels: int = 1
    channels: int = 32
    channel_mult: tuple = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple = (7,)
    image_size: int = 28
    num_classes: int = 10
    groups: int = 8

    def __post_init__(self):
        for name in ("in_channels", "channels", "image_size", "num_classes", "groups"):
            check_int(name, getattr(self, name), 1)
        check_int("num_res_blocks", self.num_res_blocks, 0)
        self.channel_mult = check_int_tuple("channel_mult", self.channel_mult)
        self.attn_resolutions = check_int_tuple("attn_resolutions", self.attn_resolutions, empty=True)

    def to_dict(self):
        return asdict(self)


class NoisyClassifier(nn.Module):
    """A noise-aware classifier ``p_φ(y | x_t, t)`` for classifier guidance (Dhariwal & Nichol 2021, chapter §2.3).

    The encoder half of the DDPM UNet — residual blocks into which the timestep embedding is added, downsampling,
    the middle block with self-attention — then GroupNorm → SiLU → global average pool → linear logits. This is
    guided-diffusion's ``EncoderUNetModel`` with its ``pool="adaptive"`` head, scaled down for 28×28 images.
    ``model(x_t, t) -> (N, num_classes)`` logits; ``t`` is the float timestep ``(N,)`` (or a scalar) of the
    diffusion model's schedule, ``x_t`` in that schedule's units.

    Args:
        config: a :class:`NoisyClassifierConfig`, or None and its fields as keyword arguments (not both).

    The call checks ``x`` (a float ``(N, in_channels, image_size, image_size)``) and ``t`` (a number or ``(N,)``)
    and raises ``ValueError``/``TypeError`` naming the argument otherwise.
    """

    def __init__(self, config: NoisyClassifierConfig | None = None, **kwargs):
        super().__init__()
        cfg = make_config(NoisyClassifierConfig, config, kwargs)
        self.config, self.num_classes = cfg, cfg.num_classes
        ch, groups = cfg.channels, cfg.groups
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        layers, cur, res = [], ch, cfg.image_size
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(cur, ch * mult, emb_dim, 0.0, groups))
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    layers.append(AttnBlock(cur, groups))
            if level != len(cfg.channel_mult) - 1:
                layers.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                res = (res + 1) // 2
        layers += [
            ResBlock(cur, cur, emb_dim, 0.0, groups),
            AttnBlock(cur, groups),
            ResBlock(cur, cur, emb_dim, 0.0, groups),
        ]
        self.blocks = nn.ModuleList(layers)
        self.norm_out = group_norm(cur, groups)
        self.head = nn.Linear(cur, cfg.num_classes)

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError``/``TypeError`` naming ``name`` unless ``x`` is a float ``(N, in_channels,
        image_size, image_size)`` (what :meth:`forward` checks first; :class:`~diffu.guidance.ClassifierGuidance`
        calls it before matching labels to ``x``)."""
        cfg = self.config
        check_input(x, (cfg.in_channels, None, None), name, size=(cfg.image_size, cfg.image_size),
                    of="the classifier")  # fmt: skip

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        self.check_input(x)
        t = timesteps_for(t, x.shape[0], x.device)
        emb = self.time_mlp(timestep_embedding(t, cfg.channels).to(x.dtype))  # (N, 4ch)
        h = self.conv_in(x)
        for layer in self.blocks:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return self.head(F.adaptive_avg_pool2d(F.silu(self.norm_out(h)), 1).flatten(1))  # (N, num_classes)
