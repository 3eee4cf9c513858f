"""A T2I-Adapter for the frozen DDPM UNet (chapter §6.1, controllability): a small condition encoder whose
multi-scale features are *added* to the UNet encoder's features.

Mou et al. 2023, "T2I-Adapter: Learning Adapters to Dig out More Controllable Ability for Text-to-Image Diffusion
Models" (AAAI 2024); official code ``TencentARC/T2I-Adapter``, branch ``SD``, ``ldm/modules/encoders/adapter.py``
(``Adapter``) and ``ldm/modules/diffusionmodules/openaimodel.py`` (``UNetModel.forward``, ``features_adapter``).
:class:`T2IAdapter` maps a condition map to one feature map per resolution of the UNet; :class:`AdaptedUNet` runs
the frozen UNet and adds ``s · F_ℓ`` to the encoder's hidden state after the last block of each resolution level
``ℓ`` — the state that goes both into the skip connection and on down the encoder, exactly where the official
``UNetModel.forward`` adds ``features_adapter``.

Compared with the ControlNet of :mod:`diffu.nn.controlnet` (a trainable *copy* of the encoder and middle block,
which sees ``x_t``, ``t`` and the label), the adapter sees only the condition: it is several times smaller, and its
features do not depend on ``t``, so a sampler could compute them once per image instead of once per step.

NaN or inf in the input (``x``, ``t``, ``cond``) propagates to the output: forward checks shapes and dtypes only
(:mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_bool, check_int, check_real
from .controlnet import exclude_frozen, zero_conv
from .embeddings import timestep_embedding
from .inputs import check_input, labels_for, make_config, timesteps_for
from .unet import ResBlock, UNet

__all__ = ["AdaptedUNet", "T2IAdapter", "T2IAdapterConfig", "adapter_levels"]


@dataclass
class T2IAdapterConfig:
    """Hyper-parameters of :class:`T2IAdapter` (stored next to shipped weights), validated on construction
    (``ValueError``/``TypeError`` naming the field otherwise).

    The fields:

    - ``cond_channels``: channels of the condition map (an integer ≥ 1).
    - ``num_res_blocks``: adapter blocks per resolution level (an integer ≥ 1). The official SD-1 adapters use 2,
      one per ResBlock of SD's encoder levels; ours default to 1, one per ResBlock of the shipped UNets
      (``num_res_blocks=1``), which keeps the official adapter-to-ControlNet size ratio.
    - ``kernel_size``: the second convolution of each block (odd, ≥ 1); 1 as in every released SD-1 adapter
      (``ksize=1``; the class's own default is 3).
    - ``unshuffle``: the pixel-unshuffle factor (an integer ≥ 1): the condition map is ``unshuffle`` times the UNet's
      input resolution and is folded into ``cond_channels · unshuffle²`` channels at that resolution. The
      official factor is 8 (512-pixel maps for SD's 64-latent UNet); our UNets work in pixel space, where
      the map already has the UNet's resolution, so the default is 1 (no unshuffle).
    - ``zero_init``: end each level with a zero-initialised 1×1 convolution (:func:`~diffu.nn.controlnet.zero_conv`)
      so that the adapted UNet starts as the frozen UNet, exactly. The official adapter has none (its
      features are random perturbations at initialisation): ``False`` is the official design.
    """

    cond_channels: int = 1
    num_res_blocks: int = 1
    kernel_size: int = 1
    unshuffle: int = 1
    zero_init: bool = False

    def __post_init__(self):
        for name in ("cond_channels", "num_res_blocks", "kernel_size", "unshuffle"):
            check_int(name, getattr(self, name), 1)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a 'same' convolution), got {self.kernel_size}")
        check_bool("zero_init", self.zero_init)

    def to_dict(self):
        return asdict(self)


def _check_base(base) -> None:
    if not isinstance(base, UNet):
        raise TypeError(f"base must be a diffu.nn.UNet, got {type(base).__name__}")


def _width(block) -> int:
    """Output width of a down block: [ResBlock], [ResBlock, AttnBlock] or [strided Conv2d]."""
    first = block[0]
    return first.conv2.out_channels if isinstance(first, ResBlock) else first.out_channels


def adapter_levels(base: UNet) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Where a T2I-Adapter feeds a :class:`~diffu.nn.UNet`: one point per resolution level, after its last block.

    The UNet's encoder saves the features ``h_0 = conv_in(x)``, ``h_k = down_k(h_{k−1})`` (``k = 1, …, K``). The
    adapter's level-``ℓ`` feature is added to the last ``h_p`` at resolution level ``ℓ``: the one just before each
    strided (downsampling) block, and ``h_K``. For SD's encoder (two ResBlocks per level, ``h_0`` the input conv)
    these are the input blocks 2, 5, 8 and 11 of the official ``(id + 1) % 3 == 0`` rule.

    Args:
        base: the UNet.

    Returns:
        ``(positions, widths)``: the indices ``p`` into ``h_0, …, h_K`` (increasing, one per level) and the channels
        of each ``h_p`` (the adapter's output widths).

    Raises:
        TypeError: ``base`` is not a :class:`~diffu.nn.UNet`.

    Used in chapter §6.1.
    """
    _check_base(base)
    widths = [base.config.channels] + [_width(block) for block in base.down]  # one per h_p
    strided = [k for k, block in enumerate(base.down) if not isinstance(block[0], ResBlock)]
    positions = tuple(strided) + (len(base.down),)  # h_k with k = index of the strided block: just before it
    return positions, tuple(widths[p] for p in positions)


class _AdapterBlock(nn.Module):
    """The official ``ResnetBlock`` with ``sk=True``: an optional 1×1 ``in_conv`` to a new width, then
    ``h + conv_k(ReLU(conv_3(h)))`` (no normalisation, no time input)."""

    def __init__(self, cin: int, cout: int, kernel_size: int):
        super().__init__()
        self.in_conv = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.block1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.block2 = nn.Conv2d(cout, cout, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        x = self.in_conv(x)
        return x + self.block2(F.relu(self.block1(x)))


class T2IAdapter(nn.Module):
    """T2I-Adapter (Mou et al. 2023) for a :class:`~diffu.nn.UNet`: ``adapter(cond) -> [F_0, …, F_{L−1}]``, one
    feature map per resolution level, each of the UNet encoder's width and size at that level.

    ``c = PixelUnshuffle_u(cond)``; ``h = conv_in(c)``; for each level ``ℓ``: ``h = AvgPool_2(h)`` (``ℓ > 0``),
    ``h = B_{ℓ,R}(… B_{ℓ,1}(h))``, ``F_ℓ = h`` (or ``Z_ℓ(h)``, a zero-initialised 1×1 conv, with ``zero_init``),
    with blocks ``B(h) = h' + conv_k(ReLU(conv_3(h')))``, ``h' = in_conv(h)`` (1×1, only where the width changes).
    The chain continues on ``h``, not on ``Z_ℓ(h)``, so zero-initialised outputs do not cut the deeper levels off.

    Args:
        base: the UNet the features are made for (read for its widths; not stored).
        config: a :class:`T2IAdapterConfig`, or None and its fields as keyword arguments (not both):
            ``T2IAdapter(unet, cond_channels=4, zero_init=True)``.

    The call ``adapter(cond)`` takes a float ``(N, cond_channels, H, W)`` with ``H, W`` divisible by
    ``unshuffle · 2^(L−1)`` and raises ``ValueError``/``TypeError`` naming ``cond`` otherwise.

    Raises:
        TypeError: ``base`` is not a :class:`~diffu.nn.UNet`, a bad ``config``.
        ValueError: a config field out of its domain (see :class:`T2IAdapterConfig`).

    Notes:
        Official code: ``TencentARC/T2I-Adapter`` (branch ``SD``), ``ldm/modules/encoders/adapter.py``
        (``Adapter``, ``ResnetBlock``), configured as in ``train_seg.py`` and the released SD-1 adapters
        (``nums_rb=2, ksize=1, sk=True, use_conv=False``: average-pool downsampling, identity skips). Deviations:
        the widths are read from the UNet (the official ones are SD's ``[320, 640, 1280, 1280]``); the unshuffle
        factor and the number of blocks are scaled down (see :class:`T2IAdapterConfig`); ``zero_init`` is an option
        the official code does not have. Its ``Adapter_light`` and ``StyleAdapter`` variants are left out.

    Used in chapter §6.1.
    """

    def __init__(self, base: UNet, config: T2IAdapterConfig | None = None, **kwargs):
        super().__init__()
        _check_base(base)
        cfg = make_config(T2IAdapterConfig, config, kwargs)
        self.config = cfg
        self.positions, self.widths = adapter_levels(base)
        self.multiple = cfg.unshuffle * 2 ** (len(self.widths) - 1)
        self.unshuffle = nn.PixelUnshuffle(cfg.unshuffle)  # the identity for unshuffle = 1
        self.conv_in = nn.Conv2d(cfg.cond_channels * cfg.unshuffle**2, self.widths[0], 3, padding=1)
        self.levels = nn.ModuleList()
        cur = self.widths[0]
        for width in self.widths:
            cins = [cur] + [width] * (cfg.num_res_blocks - 1)  # the first block of a level changes the width
            self.levels.append(nn.Sequential(*(_AdapterBlock(c, width, cfg.kernel_size) for c in cins)))
            cur = width
        self.outs = nn.ModuleList(zero_conv(w, w) if cfg.zero_init else nn.Identity() for w in self.widths)

    def check_cond(self, cond, x: torch.Tensor | None = None) -> None:
        """Raise ``ValueError``/``TypeError`` naming ``cond`` unless it is a float ``(N, cond_channels, H, W)``
        whose size survives the unshuffle and the downsamplings — with ``x`` (the UNet's input ``(N, C, h, w)``),
        of ``x``'s batch and of size ``(unshuffle·h, unshuffle·w)``."""
        cfg = self.config
        check_input(cond, (cfg.cond_channels, None, None), "cond", multiple=self.multiple,
                    why=f" (pixel-unshuffle by {cfg.unshuffle}, then {len(self.widths) - 1} halvings)")  # fmt: skip
        if x is not None:
            want = (x.shape[0], cfg.cond_channels, *(cfg.unshuffle * s for s in x.shape[2:]))
            if tuple(cond.shape) != want:
                raise ValueError(f"cond must have shape {want} (x's batch, {cfg.cond_channels} channels, "
                                 f"{cfg.unshuffle}× x's size), got {tuple(cond.shape)}")  # fmt: skip

    def forward(self, cond: torch.Tensor) -> list[torch.Tensor]:
        """The features ``[F_0, …, F_{L−1}]``, ``F_ℓ`` of shape ``(N, widths[ℓ], H/(u·2^ℓ), W/(u·2^ℓ))``."""
        self.check_cond(cond)
        return self._features(cond)

    def _features(self, cond):
        h = self.conv_in(self.unshuffle(cond))  # (N, widths[0], H/u, W/u)
        feats = []
        for level, (blocks, out) in enumerate(zip(self.levels, self.outs)):
            if level > 0:
                h = F.avg_pool2d(h, 2)  # the official use_conv=False downsampling
            h = blocks(h)
            feats.append(out(h))
        return feats


class AdaptedUNet(nn.Module):
    """A frozen UNet steered by a :class:`T2IAdapter`: ``model(x_t, t, cond=map, y=None, control_scale=1.0) -> ε̂``.

    The frozen encoder runs as in :class:`~diffu.nn.UNet` except that after the last block of each level ``ℓ`` its
    hidden state becomes ``h_p + s·F_ℓ(cond)`` (``s = control_scale``, the official adapter weight ω), which both
    the skip connection and the rest of the encoder then read (``UNetModel.forward`` of the official code). The
    decoder is unchanged. With ``zero_init`` (or ``s = 0``) the model is the frozen UNet, exactly.

    Only ``adapter`` is trainable and only its tensors are in ``state_dict()``; an adapter-only state dict loads into
    a model built around the same base (as :class:`~diffu.nn.ControlledUNet`).

    Args:
        base: the pretrained ε-prediction UNet (frozen in place: ``requires_grad_(False)``, kept in eval mode).
        adapter: a :class:`T2IAdapter` built for ``base``; or None, and then ``config`` / keyword arguments build one
            (``AdaptedUNet(unet, cond_channels=4, zero_init=True)``: how :func:`diffu.pretrained.build` rebuilds it).
        config: a :class:`T2IAdapterConfig` for the new adapter (only without ``adapter``).

    The call checks ``x``, ``t`` and ``y`` as :class:`~diffu.nn.UNet` does, ``cond`` (a float
    ``(N, cond_channels, u·H, u·W)`` for ``x`` of size ``H×W``) and ``control_scale`` (a finite number), raising
    ``ValueError``/``TypeError`` naming the argument.

    Raises:
        TypeError: ``base`` not a UNet, ``adapter`` not a T2IAdapter, ``adapter`` together with a config.
        ValueError: an adapter built for a UNet of other widths; bad config fields.

    Notes:
        Official code: ``TencentARC/T2I-Adapter`` (branch ``SD``), ``openaimodel.py::UNetModel.forward``. There the
        adapter features enter the frozen UNet's input blocks; the sampler scales them by the adapter weight and
        (optionally) drops them after a fraction of the steps (``cond_tau``) — pass ``control_scale=0`` for those
        steps to do the same.

    Used in chapter §6.1.
    """

    def __init__(self, base: UNet, adapter: T2IAdapter | None = None, config: T2IAdapterConfig | None = None,
                 **kwargs):  # fmt: skip
        super().__init__()
        _check_base(base)
        if adapter is None:
            adapter = T2IAdapter(base, config, **kwargs)
        elif not isinstance(adapter, T2IAdapter):
            raise TypeError(f"adapter must be a T2IAdapter or None, got {type(adapter).__name__}")
        elif config is not None or kwargs:
            raise TypeError("give either adapter or its config / keyword arguments, not both")
        elif (adapter.positions, adapter.widths) != adapter_levels(base):
            raise ValueError(f"adapter was built for a UNet with level widths {adapter.widths}, but base has "
                             f"{adapter_levels(base)[1]}")  # fmt: skip
        self.adapter = adapter.requires_grad_(True)
        self.base = base.requires_grad_(False).eval()
        self.config = adapter.config  # the manifest records it: pretrained.build passes it back with the base
        self.prediction = getattr(base, "prediction", "eps")
        self.num_classes = base.num_classes
        exclude_frozen(self)

    @property
    def null_class(self) -> int | None:
        return self.num_classes

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.eval()  # the frozen part stays in eval mode (dropout)
        return self

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """The frozen UNet's :meth:`~diffu.nn.UNet.check_input` (what :meth:`forward` checks first)."""
        self.base.check_input(x, name)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                y: torch.Tensor | None = None, control_scale: float = 1.0) -> torch.Tensor:  # fmt: skip
        base = self.base
        base.check_input(x)
        self.adapter.check_cond(cond, x)
        t = timesteps_for(t, x.shape[0], x.device)
        y = labels_for(y, self.num_classes, x.shape[0], x.device, owner="this AdaptedUNet")
        check_real("control_scale", control_scale)
        emb = base.time_mlp(timestep_embedding(t * base.config.time_scale, base.config.channels).to(x.dtype))
        if y is not None:
            emb = emb + base.label_emb(y)  # (N, 4ch)
        feats = self.adapter._features(cond.to(x.dtype)) if control_scale != 0 else None
        points = dict(zip(self.adapter.positions, range(len(self.adapter.positions))))

        def inject(h, p):  # 1. F̂_enc = F_enc + s·F_c at each level's end (Mou et al. 2023)
            return h + control_scale * feats[points[p]] if feats is not None and p in points else h

        h = inject(base.conv_in(x), 0)  # (N, ch, H, W); position 0 only for a UNet without ResBlocks
        hs = [h]
        for k, block in enumerate(base.down, start=1):
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            h = inject(h, k)
            hs.append(h)  # the adapted state is both the skip and the next block's input
        for layer in base.mid:  # 2. the frozen middle block and decoder, unchanged
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for block in base.up:
            if isinstance(block[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return base.conv_out(F.silu(base.norm_out(h)))  # (N, C_out, H, W)
