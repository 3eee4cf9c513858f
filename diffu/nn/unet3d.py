"""A 3D DDPM UNet for volumes (chapter §5.1): the block-for-block 3D analogue of :class:`diffu.nn.unet.UNet`.

Conv3d in place of Conv2d, GroupNorm and SiLU, the sinusoidal timestep embedding of :mod:`diffu.nn.embeddings`
added inside every residual block, self-attention over all ``D·H·W`` positions of the lowest resolution (and of any
level listed in ``attn_resolutions``), ε-prediction. Its modules carry the 2D UNet's names, so a 2D network can be
inflated into it (:meth:`UNet3D.from_unet2d`, centre-slice inflation as in I3D, Carreira & Zisserman 2017): on a
volume whose slices are all equal the inflated network returns the 2D network's output on every slice — the test
that it is the 2D architecture with one more axis. §5.1 uses it to measure what the third axis costs
(``python -m diffu.bench medical_cost``): a 3D denoiser sees the whole volume at once, and its memory and time grow
with ``D·H·W`` per sample where a 2D prior pays for one slice at a time.

NaN or inf in ``x`` or ``t`` propagates to the output: forward checks shapes and dtypes only (:mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, check_int, check_real
from .embeddings import timestep_embedding
from .inputs import check_input, check_int_tuple, make_config, timesteps_for
from .unet import UNet, group_norm

__all__ = ["UNet3D", "UNet3DConfig"]

# the outputs a UNet may be trained to predict (CONTRIBUTING.md, convention 3), as for the 2D UNet
_PREDICTIONS = ("eps", "x0", "v")


@dataclass
class UNet3DConfig:
    """Hyper-parameters of :class:`UNet3D`, validated on construction like :class:`~diffu.nn.unet.UNetConfig`:
    sizes are integers ≥ 1 (``num_res_blocks`` ≥ 0), ``channel_mult`` a non-empty tuple, ``volume_size`` (the edge
    of the cubic volume that ``attn_resolutions`` refers to) divisible by ``2^(len(channel_mult) − 1)``, ``groups``
    dividing every width, ``dropout`` in [0, 1), ``prediction`` one of "eps", "x0", "v", ``time_scale`` > 0
    (``ValueError``/``TypeError`` naming the field otherwise). Lists are stored as tuples."""

    in_channels: int = 1
    out_channels: int = 1
    channels: int = 32
    channel_mult: tuple = (1, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple = ()  # attention over D·H·W positions is quadratic in the volume: only the middle
    volume_size: int = 32
    dropout: float = 0.0
    groups: int = 8
    prediction: str = "eps"
    time_scale: float = 1.0  # t is multiplied by this before the sinusoidal embedding

    def __post_init__(self):
        for name in ("in_channels", "out_channels", "channels", "volume_size", "groups"):
            check_int(name, getattr(self, name), 1)
        check_int("num_res_blocks", self.num_res_blocks, 0)
        self.channel_mult = check_int_tuple("channel_mult", self.channel_mult)
        self.attn_resolutions = check_int_tuple("attn_resolutions", self.attn_resolutions, empty=True)
        m = 2 ** (len(self.channel_mult) - 1)
        if self.volume_size % m:
            raise ValueError(f"volume_size must be divisible by {m} (the UNet3D halves it {len(self.channel_mult) - 1} "
                             f"times for channel_mult {self.channel_mult}), got {self.volume_size}")  # fmt: skip
        widths = [self.channels] + [self.channels * k for k in self.channel_mult]
        bad = [w for w in widths if w % min(self.groups, w)]
        if bad:
            raise ValueError(f"groups {self.groups} must divide the widths {sorted(set(widths))} (channels × "
                             f"channel_mult), got widths {bad} that it does not divide")  # fmt: skip
        check_real("dropout", self.dropout, 0, 1, high_open=True)
        check_choice("prediction", self.prediction, _PREDICTIONS)
        check_real("time_scale", self.time_scale, 0, low_open=True)

    def to_dict(self):
        return asdict(self)


class ResBlock3D(nn.Module):
    """GroupNorm → SiLU → Conv3d, + time embedding, GroupNorm → SiLU → Dropout → Conv3d, plus a skip (the 2D
    ``ResBlock`` with one more axis; the second convolution starts at zero, so each block starts as the identity)."""

    def __init__(self, cin, cout, emb_dim, dropout, groups):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin, groups), nn.Conv3d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = group_norm(cout, groups), nn.Conv3d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))  # (N, cout, D, H, W)
        h = h + self.emb(F.silu(emb))[:, :, None, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock3D(nn.Module):
    """Single-head self-attention over the ``D·H·W`` positions of a volume, with a residual connection."""

    def __init__(self, ch, groups):
        super().__init__()
        self.norm = group_norm(ch, groups)
        self.qkv = nn.Conv3d(ch, 3 * ch, 1)
        self.proj = nn.Conv3d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        n, c, d, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, d * h * w).transpose(-1, -2).unbind(1)  # 3 × (N, L, C)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (N, L, C)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, d, h, w))


class UNet3D(nn.Module):
    """3D DDPM UNet: ``model(x_t, t) -> ε̂`` with ``x_t`` of shape ``(N, C, D, H, W)`` and float ``t`` ``(N,)``.

    The architecture of Ho et al. 2020 (Appendix B) with 3×3×3 convolutions, stride-2 downsampling and nearest
    upsampling along all three axes, as the 3D UNets of volumetric medical diffusion models (e.g. MedSyn, Xu et
    al. 2024, at far larger width); unconditional. Chapter §5.1.

    Args:
        config: a :class:`UNet3DConfig`, or None and its fields as keyword arguments (not both).

    The call checks its input: ``x`` a float ``(N, in_channels, D, H, W)`` whose ``D``, ``H``, ``W`` are divisible
    by ``2^(len(channel_mult) − 1)``, ``t`` a number or ``(N,)`` — or raises ``ValueError``/``TypeError`` naming
    the argument.
    """

    def __init__(self, config: UNet3DConfig | None = None, **kwargs):
        super().__init__()
        cfg = make_config(UNet3DConfig, config, kwargs)
        self.config = cfg
        self.prediction = cfg.prediction
        ch, groups = cfg.channels, cfg.groups
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv3d(cfg.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skips, cur, res = [ch], ch, cfg.volume_size
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                block = nn.ModuleList([ResBlock3D(cur, ch * mult, emb_dim, cfg.dropout, groups)])
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    block.append(AttnBlock3D(cur, groups))
                self.down.append(block)
                skips.append(cur)
            if level != len(cfg.channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv3d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
                res = (res + 1) // 2

        self.mid = nn.ModuleList(
            [ResBlock3D(cur, cur, emb_dim, cfg.dropout, groups), AttnBlock3D(cur, groups),
             ResBlock3D(cur, cur, emb_dim, cfg.dropout, groups)]
        )  # fmt: skip

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock3D(cur + skips.pop(), ch * mult, emb_dim, cfg.dropout, groups)])
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    block.append(AttnBlock3D(cur, groups))
                self.up.append(block)
            if level != 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv3d(cur, cur, 3, padding=1)]))  # fmt: skip
                res *= 2
        self.norm_out = group_norm(cur, groups)
        self.conv_out = nn.Conv3d(cur, cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the network starts by predicting ε̂ = 0, as the 2D UNet
        nn.init.zeros_(self.conv_out.bias)

    @classmethod
    def from_unet2d(cls, unet: UNet) -> UNet3D:
        """Inflate a 2D :class:`~diffu.nn.unet.UNet` into a :class:`UNet3D` (centre-slice inflation: each
        ``k×k`` kernel becomes a ``k×k×k`` kernel that is zero except on its middle depth slice; every other
        parameter is copied). On a volume whose depth slices are all the same image ``x``, the result returns the
        2D network's ``ε̂(x, t)`` on every slice (GroupNorm statistics and attention weights over repeated slices
        equal those over one); on other volumes it is a 3D network initialised from 2D weights, as I3D (Carreira &
        Zisserman 2017) does for video.

        Args:
            unet: an unconditional 2D UNet (``num_classes`` None).

        Returns:
            A new :class:`UNet3D` with ``volume_size = image_size`` and the same widths, on ``unet``'s device and
            dtype, in training mode like a fresh module.

        Raises:
            TypeError: ``unet`` is not a :class:`~diffu.nn.unet.UNet`.
            ValueError: ``unet`` is class-conditional, or predicts ``"velocity"`` (flow matching has no 3D version).
        """
        if not isinstance(unet, UNet):
            raise TypeError(f"unet must be a diffu.nn.UNet, got {type(unet).__name__}")
        c2 = unet.config
        if c2.num_classes is not None:
            raise ValueError(f"unet must be unconditional (num_classes None) to inflate, got num_classes "
                             f"{c2.num_classes}")  # fmt: skip
        if c2.prediction not in _PREDICTIONS:
            raise ValueError(f"unet must predict one of {_PREDICTIONS} to inflate, got prediction {c2.prediction!r}")
        cfg = UNet3DConfig(in_channels=c2.in_channels, out_channels=c2.out_channels, channels=c2.channels,
                           channel_mult=c2.channel_mult, num_res_blocks=c2.num_res_blocks,
                           attn_resolutions=c2.attn_resolutions, volume_size=c2.image_size, dropout=c2.dropout,
                           groups=c2.groups, prediction=c2.prediction, time_scale=c2.time_scale)  # fmt: skip
        ref = next(unet.parameters())
        net = cls(cfg).to(ref.device, ref.dtype)
        src = unet.state_dict()
        state = {}
        for key, value in net.state_dict().items():
            w = src[key]
            if value.ndim == w.ndim + 1:  # a convolution kernel (O, I, k, k) -> (O, I, k, k, k)
                value = torch.zeros_like(value)
                value[:, :, value.shape[2] // 2] = w
                state[key] = value
            else:
                state[key] = w.clone()
        net.load_state_dict(state)
        return net

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError``/``TypeError`` naming ``name`` unless ``x`` is a float ``(N, in_channels, D, H, W)``
        whose ``D, H, W`` survive the downsamplings (what :meth:`forward` checks first)."""
        check_input(x, (self.config.in_channels, None, None, None), name, dims=("C", "D", "H", "W"))
        levels = len(self.config.channel_mult) - 1
        m = 2**levels
        if any(s % m for s in x.shape[2:]):
            d, h, w = x.shape[2:]
            raise ValueError(f"{name} must have a depth, height and width divisible by {m} (the UNet3D halves them "
                             f"{levels} times), got {d}×{h}×{w}")  # fmt: skip

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        t = timesteps_for(t, x.shape[0], x.device)
        emb = timestep_embedding(t * self.config.time_scale, self.config.channels).to(x.dtype)
        emb = self.time_mlp(emb)  # (N, 4ch)

        h = self.conv_in(x)  # (N, ch, D, H, W)
        hs = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock3D) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock3D) else layer(h)
        for block in self.up:
            if isinstance(block[0], ResBlock3D):
                h = torch.cat([h, hs.pop()], dim=1)  # skip connection from the matching encoder level
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock3D) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (N, C_out, D, H, W)
