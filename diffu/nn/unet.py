"""A DDPM-style UNet (Ho et al. 2020, Appendix B), scaled down for 28×28 Fashion-MNIST (chapters §2.2, §2.6).

Residual blocks with GroupNorm and SiLU, the timestep embedding added inside every block, self-attention at the
low resolutions, and optional class conditioning with an extra *null* class (index ``num_classes``) so that one
network serves conditional, unconditional and classifier-free-guided sampling.

NaN or inf in ``x``, ``t`` or ``k_t`` propagates to the output: forward checks shapes and dtypes only (no pass over
the data at every sampler step; :mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, check_int, check_real
from .embeddings import timestep_embedding
from .inputs import check_input, check_int_tuple, labels_for, make_config, timesteps_for

__all__ = ["KernelUNet", "KernelUNetConfig", "UNet", "UNetConfig", "group_norm"]


# the outputs a UNet may be trained to predict (CONTRIBUTING.md, convention 3)
_PREDICTIONS = ("eps", "x0", "v", "velocity")


def _check_levels(name: str, size: int, channel_mult: tuple) -> None:
    """``size`` survives the UNet's ``len(channel_mult) - 1`` halvings (and the doublings back) exactly."""
    m = 2 ** (len(channel_mult) - 1)
    if size % m:
        raise ValueError(f"{name} must be divisible by {m} (the UNet halves it {len(channel_mult) - 1} times for "
                         f"channel_mult {channel_mult}), got {size}")  # fmt: skip


def _check_groups(groups: int, widths) -> None:
    """GroupNorm's ``min(groups, width)`` groups divide every width of the network (see :func:`group_norm`)."""
    bad = [w for w in widths if w % min(groups, w)]
    if bad:
        raise ValueError(f"groups {groups} must divide the widths {sorted(set(widths))} (channels × channel_mult), "
                         f"got widths {bad} that it does not divide")  # fmt: skip


@dataclass
class UNetConfig:
    """Hyper-parameters of :class:`UNet` (stored next to shipped weights), validated on construction: sizes are
    integers ≥ 1 (``num_res_blocks`` ≥ 0), ``channel_mult`` a non-empty tuple, ``image_size`` divisible by
    ``2^(len(channel_mult) − 1)``, ``groups`` dividing every width, ``dropout`` in [0, 1), ``num_classes`` None or
    ≥ 1, ``prediction`` one of "eps", "x0", "v", "velocity", ``time_scale`` > 0 (``ValueError``/``TypeError`` naming
    the field otherwise). Lists are stored as tuples."""

    in_channels: int = 1
    out_channels: int = 1
    channels: int = 32
    channel_mult: tuple = (1, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (7,)
    image_size: int = 28
    dropout: float = 0.0
    num_classes: int | None = None
    groups: int = 8
    prediction: str = "eps"  # what the network outputs: "eps" (DDPM) or "velocity" (flow matching, §2.5)
    time_scale: float = 1.0  # t is multiplied by this before the sinusoidal embedding (1000 for t in [0, 1])

    def __post_init__(self):
        for name in ("in_channels", "out_channels", "channels", "image_size", "groups"):
            check_int(name, getattr(self, name), 1)
        check_int("num_res_blocks", self.num_res_blocks, 0)
        self.channel_mult = check_int_tuple("channel_mult", self.channel_mult)
        self.attn_resolutions = check_int_tuple("attn_resolutions", self.attn_resolutions, empty=True)
        _check_levels("image_size", self.image_size, self.channel_mult)
        _check_groups(self.groups, [self.channels] + [self.channels * m for m in self.channel_mult])
        check_real("dropout", self.dropout, 0, 1, high_open=True)
        if self.num_classes is not None:
            check_int("num_classes", self.num_classes, 1)
        check_choice("prediction", self.prediction, _PREDICTIONS)
        check_real("time_scale", self.time_scale, 0, low_open=True)

    def to_dict(self):
        return asdict(self)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm (Wu & He 2018) over ``channels`` in ``min(groups, channels)`` groups, with affine parameters — the
    normalisation of every DDPM UNet block (Ho et al. 2020 use 32 groups; this book's narrow UNets use 8).

    Args:
        channels: C of the ``(N, C, H, W)`` input (``groups`` must divide it when ``groups < channels``).
        groups: the number of groups; capped at ``channels`` so a narrow layer still normalises per channel.

    Returns:
        ``nn.GroupNorm`` mapping ``(N, C, H, W)`` to ``(N, C, H, W)``.

    Raises:
        ValueError: ``channels`` or ``groups`` is not an integer >= 1, or the groups do not divide the channels.
    """
    check_int("channels", channels, 1)
    check_int("groups", groups, 1)
    if channels % min(groups, channels):
        raise ValueError(f"groups {groups} must divide channels {channels}")
    return nn.GroupNorm(min(groups, channels), channels)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → Conv, + time/class embedding, GroupNorm → SiLU → Dropout → Conv, plus a skip."""

    def __init__(self, cin, cout, emb_dim, dropout, groups):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = group_norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts close to the identity, as in the DDPM code
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))  # (N, cout, H, W)
        h = h + self.emb(F.silu(emb))[:, :, None, None]  # time enters every block
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H·W positions, with a residual connection."""

    def __init__(self, ch, groups):
        super().__init__()
        self.norm = group_norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(-1, -2).unbind(1)  # 3 × (N, HW, C)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (N, HW, C)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class UNet(nn.Module):
    """DDPM UNet: ``model(x_t, t, y=None) -> ε̂`` with ``x_t`` of shape ``(N, C, H, W)`` and float ``t`` ``(N,)``.

    ``y`` (``(N,)`` long) is used only when ``num_classes`` is set; ``y = num_classes`` (or ``y=None``) is the
    null label, i.e. the unconditional model.

    Args:
        config: a :class:`UNetConfig`, or None and its fields as keyword arguments (not both).

    The call checks its input (:mod:`diffu.nn.inputs`): ``x`` a float ``(N, in_channels, H, W)`` with ``H, W``
    divisible by ``2^(len(channel_mult) − 1)`` (any size otherwise: the network is convolutional), ``t`` a number or
    ``(N,)``, ``y`` ``(N,)`` integer labels in ``[0, num_classes]`` — or raises ``ValueError``/``TypeError`` naming
    the argument.
    """

    def __init__(self, config: UNetConfig | None = None, **kwargs):
        super().__init__()
        cfg = make_config(UNetConfig, config, kwargs)
        self.config = cfg
        self.prediction = cfg.prediction
        ch, groups = cfg.channels, cfg.groups
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.num_classes = cfg.num_classes
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes + 1, emb_dim)  # last row: the null class
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skips, cur, res = [ch], ch, cfg.image_size
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                block = nn.ModuleList([ResBlock(cur, ch * mult, emb_dim, cfg.dropout, groups)])
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    block.append(AttnBlock(cur, groups))
                self.down.append(block)
                skips.append(cur)
            if level != len(cfg.channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
                res = (res + 1) // 2

        self.mid = nn.ModuleList(
            [ResBlock(cur, cur, emb_dim, cfg.dropout, groups), AttnBlock(cur, groups),
             ResBlock(cur, cur, emb_dim, cfg.dropout, groups)]
        )  # fmt: skip

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(cur + skips.pop(), ch * mult, emb_dim, cfg.dropout, groups)])
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    block.append(AttnBlock(cur, groups))
                self.up.append(block)
            if level != 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(cur, cur, 3, padding=1)]))  # fmt: skip
                res *= 2
        self.norm_out = group_norm(cur, groups)
        self.conv_out = nn.Conv2d(cur, cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def null_class(self) -> int | None:
        return self.num_classes

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError``/``TypeError`` naming ``name`` unless ``x`` is a float ``(N, in_channels, H, W)``
        whose ``H, W`` survive the downsamplings (what :meth:`forward` checks first; wrappers such as
        :class:`~diffu.guidance.ClassifierFreeGuidance` call it before matching labels to ``x``)."""
        levels = len(self.config.channel_mult) - 1
        check_input(x, (self.config.in_channels, None, None), name, multiple=2**levels,
                    why=f" (the UNet halves it {levels} times)")  # fmt: skip

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x)
        n = x.shape[0]
        t = timesteps_for(t, n, x.device)
        y = labels_for(y, self.num_classes, n, x.device, owner="this UNet")
        emb = timestep_embedding(t * self.config.time_scale, self.config.channels).to(x.dtype)
        emb = self.time_mlp(emb)  # (N, 4ch)
        if y is not None:
            emb = emb + self.label_emb(y)

        h = self.conv_in(x)  # (N, ch, H, W)
        hs = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)  # one skip per block: the saved features are what the decoder concatenates
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for block in self.up:
            if isinstance(block[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)  # skip connection from the matching encoder level
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (N, C_out, H, W)


@dataclass
class KernelUNetConfig:
    """Hyper-parameters of :class:`KernelUNet` (stored next to shipped weights), validated on construction: an odd
    ``kernel_size`` ≥ 1 no larger than ``canvas``, a ``canvas`` divisible by ``2^(len(channel_mult) − 1)``, and the
    UNet fields as in :class:`UNetConfig`."""

    kernel_size: int = 9  # the blur kernels of the Fashion-MNIST chapters (28×28 images)
    canvas: int = 12
    channels: int = 32
    channel_mult: tuple = (1, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple = (6,)

    def __post_init__(self):
        for name in ("kernel_size", "canvas", "channels"):
            check_int(name, getattr(self, name), 1)
        check_int("num_res_blocks", self.num_res_blocks, 0)
        if self.kernel_size % 2 == 0 or self.canvas < self.kernel_size:
            raise ValueError(f"need an odd kernel_size <= canvas, got kernel_size={self.kernel_size} and "
                             f"canvas={self.canvas}")  # fmt: skip
        self.channel_mult = check_int_tuple("channel_mult", self.channel_mult)
        self.attn_resolutions = check_int_tuple("attn_resolutions", self.attn_resolutions, empty=True)
        _check_levels("canvas", self.canvas, self.channel_mult)

    def to_dict(self):
        return asdict(self)


class KernelUNet(torch.nn.Module):
    """ε-prediction network over blur kernels ``(N, 1, k, k)`` (odd ``k``): the state is zero-padded onto an even
    ``canvas × canvas`` grid (the UNet halves and doubles the resolution, which odd sizes do not survive), run
    through :class:`UNet` and cropped back, so the diffusion itself lives on exactly the ``k × k`` kernel.

    The kernel prior of Blind-DPS (:func:`diffu.inverse.blind.blind_dps`; shipped as ``kernel_prior``, §4.2.2).
    Blind-DPS's own kernel prior is an ADM UNet on 64×64 kernels (``configs/kernel_model_config.yaml``: 64 channels,
    one res block per level, learned variance); ours is the same family, small enough for 9×9 kernels.

    Args:
        config: a :class:`KernelUNetConfig`, or None and its fields as keyword arguments (not both).

    The call ``net(k_t, t)`` takes float kernels ``(N, 1, kernel_size, kernel_size)`` and ``t`` a number or ``(N,)``.
    """

    def __init__(self, config: KernelUNetConfig | None = None, **kwargs):
        super().__init__()
        cfg = make_config(KernelUNetConfig, config, kwargs)
        self.config, self.kernel_size, self.prediction = cfg, cfg.kernel_size, "eps"
        self.unet = UNet(UNetConfig(in_channels=1, out_channels=1, channels=cfg.channels,
                                    channel_mult=tuple(cfg.channel_mult), num_res_blocks=cfg.num_res_blocks,
                                    attn_resolutions=tuple(cfg.attn_resolutions), image_size=cfg.canvas))  # fmt: skip

    def forward(self, k_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s, c = self.kernel_size, self.config.canvas
        check_input(k_t, (1, s, s), "k_t")
        lo, hi = (c - s) // 2, (c - s + 1) // 2
        out = self.unet(F.pad(k_t, (lo, hi, lo, hi)), t)  # (N, 1, canvas, canvas)
        return out[..., lo : lo + s, lo : lo + s]  # (N, 1, s, s)
