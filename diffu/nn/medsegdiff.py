"""A MedSegDiff-style segmentation network: ``model(x_t, t, cond=image) -> ε̂`` (chapter §6.2).

MedSegDiff (Wu et al. 2022, "MedSegDiff: Medical Image Segmentation with Diffusion Probabilistic Model"; v2: Wu et
al. 2023) diffuses the mask, like Wolleb et al. 2021, but does not simply stack the image onto the noisy mask: a
separate **conditioning encoder** reads the image and its features are fused into the diffusion UNet's encoder,

* at full resolution after the diffusion UNet's first block (the v2 code's "anchor"), by addition;
* after every downsampling, where the conditioning features are first re-weighted by the current state's features
  — the **dynamic conditional encoding** of v1, ``A(m_I, m_x) = (LN(m_I) ⊙ LN(m_x)) ⊙ m_I`` with ``m_I`` the
  image features and ``m_x`` the noisy mask's, so the condition adapts to the step — and then added;
* at the bottleneck, by addition (v1: the decoder reads the sum of the two encodings, ``D(E^I + E^x, t)``).

Before the state's features meet the condition, the **FF-Parser** filters them in Fourier space,
``m_x ← F⁻¹[W ⊙ F[m_x]]`` with a learnable complex weight ``W`` per channel and frequency (:class:`FFParser`), which
the paper motivates as a way to damp the high-frequency noise of ``x_t`` in the features.

Training and sampling are those of :mod:`diffu.segmentation.ensemble`: :func:`~diffu.segmentation.mask_diffusion_loss`
and :func:`~diffu.segmentation.segment` take this network exactly as they take :class:`~diffu.nn.concat.ConcatUNet`.

NaN or inf in ``x``, ``t`` or ``cond`` propagates to the output: forward checks shapes and dtypes only (no pass
over the data at every sampler step; :mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_bool, check_int
from .concat import ConcatUNet
from .embeddings import timestep_embedding
from .inputs import check_input, labels_for, make_config, timesteps_for
from .unet import ResBlock, UNet, UNetConfig, group_norm

__all__ = ["FFParser", "MedSegDiffConfig", "MedSegDiffUNet"]


class FFParser(nn.Module):
    """The Feature-Frequency Parser of MedSegDiff: ``m ← F⁻¹[W ⊙ F[m]]``, a learnable filter in Fourier space.

    ``F`` is the orthonormal real 2-D FFT over the last two dimensions (``torch.fft.rfft2``, ``norm="ortho"``),
    ``W`` a complex weight of shape ``(channels, height, width // 2 + 1)`` — one gain and phase per channel and
    frequency of the half-spectrum — and ``F⁻¹`` the inverse real FFT back to ``height × width``, so the output is
    real. ``W`` starts at 1 (:meth:`reset_parameters`): the module begins as the identity (up to float round-off),
    and a weight of 0 at a frequency removes it (a cosine ``cos 2π(k h/H + l w/W)`` with ``0 < l < W/2`` lives at
    the single half-spectrum entry ``(k, l)``).

    Args:
        channels: C of the ``(N, C, H, W)`` features, an integer ≥ 1.
        height, width: H and W the weight is built for (integers ≥ 1): the filter is a fixed-size map, so the
            features must have exactly this size.

    The call takes ``x`` a float ``(N, channels, height, width)`` (float16/bfloat16 are filtered in float32, as
    the official code casts to float32) and returns a tensor of ``x``'s shape, dtype and device. The weight is
    stored as a real parameter ``weight`` of shape ``(channels, height, width // 2 + 1, 2)`` (real and imaginary
    parts, as the official ``complex_weight``; the weights file format holds real tensors). NaN or inf in ``x``
    spreads over its whole channel (every frequency mixes every position); nothing is checked beyond the shape.

    Raises:
        ValueError: (at construction) a size that is not an integer ≥ 1; (at the call) ``x`` not a float tensor of
            shape ``(N, channels, height, width)`` (the message names ``x``).

    Notes:
        Wu et al. 2022, Sec. "FF-Parser"; official code ``KidsWithTokens/MedSegDiff``, ``guided_diffusion/unet.py``,
        class ``FFParser``. Deviations: the official weight starts at ``randn · 0.02`` (a filter that scales every
        frequency by about 0.02 with a random phase); we start at 1, the identity, so that switching the parser on
        does not change the untrained network's function. The official module requires square features; ours takes
        any ``height × width``. Used in chapter §6.2 (the FF-Parser ablation).
    """

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        for name, value in (("channels", channels), ("height", height), ("width", width)):
            check_int(name, value, 1)
        self.channels, self.height, self.width = channels, height, width
        self.weight = nn.Parameter(torch.empty(channels, height, width // 2 + 1, 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set ``W = 1 + 0i`` at every channel and frequency: the identity filter."""
        with torch.no_grad():
            self.weight.zero_()
            self.weight[..., 0] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, (self.channels, self.height, self.width), "x")
        dtype = torch.promote_types(x.dtype, torch.float32)  # FFTs of half-precision tensors are CUDA-only
        w = torch.view_as_complex(self.weight.to(dtype).contiguous())  # (C, H, W//2 + 1) complex
        spec = torch.fft.rfft2(x.to(dtype), norm="ortho")  # (N, C, H, W//2 + 1)
        out = torch.fft.irfft2(spec * w, s=(self.height, self.width), norm="ortho")  # (N, C, H, W), real
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, height={self.height}, width={self.width}"


@dataclass
class MedSegDiffConfig(UNetConfig):
    """Hyper-parameters of :class:`MedSegDiffUNet`: every field of :class:`~diffu.nn.unet.UNetConfig` (validated the
    same way; ``in_channels`` = ``out_channels`` = the mask encoding's channels, ``image_size`` the size the
    FF-Parsers are built for) plus

    * ``cond_channels``: the channels of the condition image (an integer ≥ 1);
    * ``ff_parser``: an :class:`FFParser` on the diffusion features at every fusion after a downsampling (a bool);
    * ``cond_attention``: the dynamic conditional encoding — the condition features re-weighted by the state's,
      ``(LN(m_I) ⊙ LN(m_x)) ⊙ m_I``, at the same fusions (a bool); without it they are added as they are.

    With both flags False the network is the plain conditioning encoder of the ablation (features added at every
    fusion). ``ValueError``/``TypeError`` naming the field otherwise."""

    cond_channels: int = 1
    ff_parser: bool = True
    cond_attention: bool = True

    def __post_init__(self):
        super().__post_init__()
        check_int("cond_channels", self.cond_channels, 1)
        check_bool("ff_parser", self.ff_parser)
        check_bool("cond_attention", self.cond_attention)
        self.ff_parser, self.cond_attention = bool(self.ff_parser), bool(self.cond_attention)  # JSON-safe

    def unet_config(self) -> UNetConfig:
        """The :class:`~diffu.nn.unet.UNetConfig` of the diffusion UNet (over the noisy mask alone)."""
        fields = self.to_dict()
        for name in ("cond_channels", "ff_parser", "cond_attention"):
            fields.pop(name)
        return UNetConfig(**fields)


class _CondBlock(nn.Module):
    """GroupNorm → SiLU → Conv, GroupNorm → SiLU → Conv, plus a skip: a ResBlock without time (the conditioning
    encoder reads the image, which does not change with t)."""

    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = group_norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class _DynamicEncoding(nn.Module):
    """``A(m_I, m_x) = (LN(m_I) ⊙ LN(m_x)) ⊙ m_I``; LN normalises each sample over (C, H, W) with a per-channel
    affine (``GroupNorm`` with one group)."""

    def __init__(self, ch):
        super().__init__()
        self.norm_cond, self.norm_state = nn.GroupNorm(1, ch), nn.GroupNorm(1, ch)

    def forward(self, c, h):
        return self.norm_cond(c) * self.norm_state(h) * c


class MedSegDiffUNet(nn.Module):
    """``model(x_t, t, cond, y=None) -> ε̂``: a diffusion :class:`~diffu.nn.unet.UNet` over the noisy mask with a
    conditioning encoder over the image, fused MedSegDiff-style (module docstring), optionally with the FF-Parser
    and the dynamic conditional encoding.

    Args:
        config: a :class:`MedSegDiffConfig`, or None and its fields as keyword arguments (not both).

    The forward pass, with ``h`` the diffusion UNet's features and ``c`` the conditioning encoder's:

    1. ``h = conv_in(x_t) + c₀``, ``c₀`` the encoder's full-resolution features (the v2 anchor);
    2. through each encoder level of the UNet; after each downsampling, ``c`` is downsampled to ``h``'s size and
       width, ``h ← FF(h)`` (``ff_parser``), ``c ← (LN(c) ⊙ LN(h)) ⊙ c`` (``cond_attention``; the re-weighted
       ``c`` continues down the encoder), then ``h ← h + c``;
    3. ``h ← h + c_mid`` before the middle block, ``c_mid`` the encoder's last block at the lowest resolution;
    4. the UNet's middle block and decoder (skip connections from the fused encoder features), as in
       :class:`~diffu.nn.unet.UNet`.

    The conditioning encoder is a two-conv stem at full resolution, then per downsampling a 2×2 max-pool and one
    time-free residual block (two convs), and one more such block at the lowest resolution, at the diffusion
    UNet's widths (nnU-Net's two convs per stage, at our scale). ``ff_parser`` adds one :class:`FFParser` per
    downsampling (parameters ``ff.*``), ``cond_attention`` two LayerNorms per downsampling (parameters ``dyn.*``);
    with both False the parameter set is the UNet's and the encoder's (``unet.*``, ``cond_*``) only.

    The call takes ``x_t`` a float ``(N, in_channels, H, W)`` (``H, W`` divisible by ``2^(len(channel_mult) − 1)``;
    exactly ``image_size × image_size`` when ``ff_parser`` is on: the parsers' weights have a fixed size), ``t`` a
    number or ``(N,)``, ``cond`` a float ``(N, cond_channels, H, W)`` of ``x_t``'s batch, size and device (cast to
    ``x_t``'s dtype), and ``y`` class labels as :class:`~diffu.nn.unet.UNet` takes them; it returns
    ``(N, out_channels, H, W)``. Built from its config alone, so :func:`diffu.pretrained.build` rebuilds it from a
    manifest entry (``arch`` ``"diffu.nn.medsegdiff:MedSegDiffUNet"``, ``config_class``
    ``"diffu.nn.medsegdiff:MedSegDiffConfig"``).

    Raises:
        ValueError: (at the call) ``x_t`` of the wrong shape or dtype, or not ``image_size`` with the FF-Parser;
            ``cond`` missing, not a floating tensor of shape ``(N, cond_channels, H, W)`` matching ``x_t``, or on
            another device (messages name ``x`` or ``cond``).
        TypeError: (at construction) a config that is not a :class:`MedSegDiffConfig`, config and keywords, or a
            flag that is not a bool.

    Notes:
        Wu et al. 2022 (MedSegDiff) and 2023 (MedSegDiff-V2); official code ``KidsWithTokens/MedSegDiff``,
        ``guided_diffusion/unet.py`` (``UNetModel_v1preview``, ``UNetModel_newpreview``, ``Generic_UNet``,
        ``FFParser``) and ``guided_diffusion/gaussian_diffusion.py``. Deviations, at our 32×32 scale:

        * the official diffusion UNet also receives the image concatenated to the noisy mask (``in_ch`` = image
          channels + 1, inherited from Wolleb et al.'s code); ours reads the mask only, as the papers draw it, so
          the image enters through the conditioning encoder alone and the ablation measures that encoder;
        * the official conditioning encoder is an nnU-Net (``Generic_UNet``, five max-poolings, two conv–BatchNorm–
          LeakyReLU per stage, a decoder of its own); ours is a GroupNorm encoder of two convs per resolution at the
          diffusion UNet's widths, without a decoder;
        * "attention" in the conditioning path: the official conditioning encoder has no self-attention block; its
          only attention is v1's "attentive-like" dynamic conditional encoding, which the v1 code implements as a
          spatial × channel gate ``m_I ⊙ s(FF(a(m_x))) ⊙ mean_HW(FF(a(m_x)))`` (``a``, ``s`` 1×1 convs, no
          normalisation). ``cond_attention`` switches that mechanism, in the paper's LayerNorm-product form;
        * the v1 code filters a 1×1-conv copy of the diffusion features that only feeds the gate, keeps the
          gated features inside the conditioning encoder, and adds its bottleneck to the diffusion UNet's through
          a 1×1 conv created anew, with random weights, at every call. We filter the diffusion features themselves
          and add the (re-weighted) condition features at every downsampled level as well as at the bottleneck, so
          each flag acts alone (the FF-Parser also without the dynamic encoding);
        * v2 code (the default ``--version new``) adds the encoder's decoder features after the first block but
          ``.detach()``-ed, and its calibration loss is computed but not added: the official conditioning encoder
          receives no gradient there. Our anchor is not detached;
        * the FF-Parser starts as the identity, not ``randn · 0.02`` (:class:`FFParser`); it sits where the v1 code
          has it, on the downsampled diffusion features, not at full resolution nor at the bottleneck;
        * no SS-Former or uncertain spatial attention (v2 paper; not in the released code), no learned variance
          (our ε loss has fixed variances, :func:`~diffu.segmentation.mask_diffusion_loss`), no calibration output,
          and no STAPLE fusion of the ensemble (:func:`~diffu.segmentation.segment` averages the members).

        Used in chapter §6.2 (the MedSegDiff model and its FF-Parser / attention ablation).
    """

    def __init__(self, config: MedSegDiffConfig | None = None, **kwargs):
        super().__init__()
        cfg = make_config(MedSegDiffConfig, config, kwargs)
        self.config = cfg
        self.prediction = cfg.prediction
        self.num_classes = cfg.num_classes
        self.unet = UNet(cfg.unet_config())
        ch, groups = cfg.channels, cfg.groups

        # the conditioning encoder, level by level at the diffusion UNet's widths (see forward for where each fuses)
        self.cond_stem = nn.Sequential(nn.Conv2d(cfg.cond_channels, ch, 3, padding=1), group_norm(ch, groups),
                                       nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))  # fmt: skip
        self.cond_down = nn.ModuleList()
        self.ff = nn.ModuleList() if cfg.ff_parser else None
        self.dyn = nn.ModuleList() if cfg.cond_attention else None
        cur, res = ch, cfg.image_size
        for level in range(len(cfg.channel_mult) - 1):
            width = ch * cfg.channel_mult[level]  # h's width after this level's downsampling
            res = (res + 1) // 2
            self.cond_down.append(nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), _CondBlock(cur, width, groups)))
            if cfg.ff_parser:
                self.ff.append(FFParser(width, res, res))
            if cfg.cond_attention:
                self.dyn.append(_DynamicEncoding(width))
            cur = width
        self.cond_mid = _CondBlock(cur, ch * cfg.channel_mult[-1], groups)

    @property
    def null_class(self) -> int | None:
        return self.num_classes

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError``/``TypeError`` naming ``name`` unless ``x`` is a float ``(N, in_channels, H, W)``
        whose ``H, W`` survive the UNet's downsamplings (and equal ``image_size`` when the FF-Parser is on)."""
        levels, s = len(self.config.channel_mult) - 1, self.config.image_size
        check_input(x, (self.config.in_channels, None, None), name, multiple=2**levels,
                    why=f" (the UNet halves it {levels} times)")  # fmt: skip
        if self.config.ff_parser and tuple(x.shape[-2:]) != (s, s):
            raise ValueError(f"{name} must be {s}×{s} (image_size: the FF-Parsers' weights have a fixed size; build "
                             f"with ff_parser=False for other sizes), got {x.shape[-2]}×{x.shape[-1]}")  # fmt: skip

    def check_cond(self, cond, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``cond`` is a float ``(N, cond_channels, H, W)`` of ``x``'s batch, size and
        device (what :meth:`forward` checks): :meth:`diffu.nn.concat.ConcatUNet.check_cond`, which reads only the
        config."""
        ConcatUNet.check_cond(self, cond, x)

    def forward(self, x: torch.Tensor, t, cond: torch.Tensor | None = None, y: torch.Tensor | None = None):
        self.check_input(x)
        self.check_cond(cond, x)
        unet, n = self.unet, x.shape[0]
        t = timesteps_for(t, n, x.device)
        y = labels_for(y, self.num_classes, n, x.device, owner="this MedSegDiffUNet")
        emb = unet.time_mlp(timestep_embedding(t * self.config.time_scale, self.config.channels).to(x.dtype))
        if y is not None:
            emb = emb + unet.label_emb(y)  # (N, 4ch)

        # 1. the anchor: the image's full-resolution features added after the first block
        c = self.cond_stem(cond.to(dtype=x.dtype))  # (N, ch, H, W)
        h = unet.conv_in(x) + c  # (N, ch, H, W)
        hs, level = [h], 0
        # 2. the encoder; at each downsampling: FF-Parser, dynamic conditional encoding, addition
        for block in unet.down:
            if isinstance(block[0], ResBlock):
                for layer in block:
                    h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            else:
                h = block[0](h)  # (N, C_l, H/2^l, W/2^l)
                c = self.cond_down[level](c)  # the same shape
                if self.ff is not None:
                    h = self.ff[level](h)
                if self.dyn is not None:
                    c = self.dyn[level](c, h)
                h = h + c
                level += 1
            hs.append(h)
        # 3. the bottleneck: the decoder reads the sum of the two encodings
        h = h + self.cond_mid(c)
        # 4. middle block and decoder, as in UNet.forward
        for layer in unet.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for block in unet.up:
            if isinstance(block[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return unet.conv_out(F.silu(unet.norm_out(h)))  # (N, out_channels, H, W)
