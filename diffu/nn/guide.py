"""The guide network of plug-and-play diffusion distillation (chapter §7.1): a small network whose feature maps,
added to a *frozen* class-conditional UNet, make one conditional pass reproduce classifier-free guidance.

Hsiao, Khodadadeh, Duarte, Lin, Qu, Kwon & Kalarot 2024, "Plug-and-Play Diffusion Distillation" (CVPR 2024).
Classifier-free guidance (Ho & Salimans 2022) costs two passes per step,
``ε̃ = ε(x_t, ∅) + s (ε(x_t, y) − ε(x_t, ∅))``. The paper keeps the base model frozen and trains an external guide
(about 1 % of the base's parameters) that reads ``x_t``, ``t``, the condition and the guidance scale ``s`` and
injects feature maps into the base, so that the single pass ``ε_{base+guide}(x_t, t, y, s)`` matches ``ε̃``
(:func:`diffu.distill.guide.guide_loss` trains it). Because the base is untouched, the same guide plugs into
fine-tuned copies of it.

:class:`GuideNet` makes one feature map per resolution level of the UNet (scale-conditioned as the timestep is);
:class:`GuidedUNet` runs the frozen UNet with those maps added where :class:`~diffu.nn.AdaptedUNet` adds a
T2I-Adapter's (:func:`~diffu.nn.adapter_levels`).

NaN or inf in the input (``x``, ``t``, a tensor ``scale``) propagates to the output: forward checks shapes and dtypes
only (:mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int, check_real
from .adapter import adapter_levels
from .controlnet import exclude_frozen, zero_conv
from .embeddings import timestep_embedding
from .inputs import check_input, check_int_tuple, labels_for, make_config, timesteps_for
from .unet import ResBlock, UNet

__all__ = ["GuideNet", "GuideNetConfig", "GuidedUNet"]

# the guidance scale a GuidedUNet runs at when the call gives none (the scale chapter §7.1 tests)
_DEFAULT_SCALE = 3.0


@dataclass
class GuideNetConfig:
    """Hyper-parameters of :class:`GuideNet` (stored next to shipped weights), validated on construction
    (``ValueError``/``TypeError`` naming the field otherwise).

    The fields:

    - ``channels``: the guide's width at the first level (an integer ≥ 1); its embedding width is ``4·channels``.
    - ``channel_mult``: the guide's width at level ``ℓ`` is ``channels · channel_mult[ℓ]``: a non-empty tuple of
      integers ≥ 1 with one entry per resolution level of the UNet it guides (checked when the guide is built), or
      None for the UNet's own ``channel_mult``.
    - ``num_res_blocks``: residual blocks per level (an integer ≥ 1).
    - ``groups``: GroupNorm groups of those blocks (an integer ≥ 1 that must divide every width of the guide, capped
      at the width as in :func:`~diffu.nn.group_norm`; checked when the guide is built).

    The defaults make a guide of 16 488 parameters for ``fmnist_unet`` (1 114 209): 1.48 %.
    """

    channels: int = 8
    channel_mult: tuple | None = None
    num_res_blocks: int = 1
    groups: int = 4

    def __post_init__(self):
        for name in ("channels", "num_res_blocks", "groups"):
            check_int(name, getattr(self, name), 1)
        if self.channel_mult is not None:
            self.channel_mult = check_int_tuple("channel_mult", self.channel_mult)

    def to_dict(self):
        return asdict(self)


def _check_base(base) -> None:
    if not isinstance(base, UNet):
        raise TypeError(f"base must be a diffu.nn.UNet, got {type(base).__name__}")
    if base.num_classes is None:
        raise ValueError("base must be class-conditional (num_classes set): classifier-free guidance needs the "
                         "null label")  # fmt: skip


def _scale_for(scale, n: int, x: torch.Tensor) -> torch.Tensor:
    """The guidance scale per sample, ``(n,)`` in ``x``'s dtype: a number ≥ 0 (as
    :class:`~diffu.guidance.ClassifierFreeGuidance` takes) or a real tensor of shape ``()``, ``(1,)`` or ``(n,)``."""
    if isinstance(scale, (int, float)) or not isinstance(scale, torch.Tensor):
        check_real("scale", scale, 0)
    s = timesteps_for(scale, n, x.device, name="scale")
    return s.to(x.dtype).expand(n)


class GuideNet(nn.Module):
    """The guide of plug-and-play distillation: ``guide(x_t, t, y, scale) -> [F_0, …, F_{L−1}]``, one feature map
    per resolution level of the UNet it was built for, each of that level's width and size.

    ``e = MLP_t(PE(t)) + MLP_s(PE(s)) + E_y[y]`` (sinusoidal embeddings ``PE`` of the timestep and of the guidance
    scale, a label table with the null row); ``h = conv_in(x_t)``; for each level ``ℓ``: ``h = AvgPool_2(h)``
    (``ℓ > 0``), ``h = R_{ℓ,B}(… R_{ℓ,1}(h, e), e)``, ``F_ℓ = Z_ℓ(h)``, with ``R`` the UNet's own residual block
    (:class:`~diffu.nn.unet.ResBlock`, the embedding added inside) and ``Z_ℓ`` a zero-initialised 1×1 convolution
    (:func:`~diffu.nn.controlnet.zero_conv`) to the UNet's width, so that base + guide starts as the base, exactly.

    Args:
        base: the class-conditional UNet the features are made for (read for its levels, widths, classes, input
            channels and ``time_scale``; not stored).
        config: a :class:`GuideNetConfig`, or None and its fields as keyword arguments (not both).

    The call takes ``x`` a float ``(N, C, H, W)`` (the UNet's channels, ``H, W`` divisible by ``2^(L−1)``), ``t`` a
    number or ``(N,)``, ``y`` ``(N,)`` labels in ``[0, num_classes]`` or None (the null label) and ``scale`` a number
    ≥ 0 or a ``()``/``(N,)`` tensor, raising ``ValueError``/``TypeError`` naming the argument otherwise.

    Raises:
        TypeError: ``base`` is not a :class:`~diffu.nn.UNet`, a bad ``config``.
        ValueError: an unconditional ``base``; a ``channel_mult`` with another number of levels than the UNet's,
            ``groups`` that do not divide the guide's widths, a bad config field.

    Notes:
        The paper describes a "full" and a "tiny" guide for a latent text-to-image UNet; this one is not a port of
        either but is written for our pixel-space UNets: T2I-Adapter's downsampling (average pooling) and output
        points, the UNet's residual blocks so that time, label and scale enter every block, zero-initialised
        outputs as in ControlNet. The blocks' second convolution keeps PyTorch's default initialisation instead
        of the UNet's zero one: the zero outputs already make base + guide start as the base, and a zero residual
        branch would hide ``t``, ``y`` and ``s`` from the first updates (on ``fmnist_unet``, 50 steps of batch 16
        at lr 10⁻³ closed 11 % of the s = 3 gap this way, 6 % with both zero inits). The scale is embedded like the
        timestep (sinusoids of ``s`` itself: the highest frequency is one radian per unit of ``s``, so scales in
        about ``[0, 10]`` are resolved smoothly). The guide has its own time and label embeddings rather than
        reading the base's, so that it stays valid for a fine-tuned base.

    Used in chapter §7.1.
    """

    def __init__(self, base: UNet, config: GuideNetConfig | None = None, **kwargs):
        super().__init__()
        _check_base(base)
        cfg = make_config(GuideNetConfig, config, kwargs)
        self.config = cfg
        self.positions, self.base_widths = adapter_levels(base)
        mult = base.config.channel_mult if cfg.channel_mult is None else cfg.channel_mult
        if len(mult) != len(self.base_widths):
            raise ValueError(f"channel_mult must have one entry per resolution level of base "
                             f"({len(self.base_widths)}), got {cfg.channel_mult}")  # fmt: skip
        self.widths = tuple(cfg.channels * m for m in mult)  # the guide's own width at each level
        bad = [w for w in self.widths if w % min(cfg.groups, w)]
        if bad:
            raise ValueError(f"groups {cfg.groups} must divide every width of the guide (channels × channel_mult "
                             f"= {self.widths}), got widths {bad} that it does not divide")  # fmt: skip
        self.num_classes, self.in_channels = base.num_classes, base.config.in_channels
        self.time_scale = base.config.time_scale
        self.multiple = 2 ** (len(self.base_widths) - 1)
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.scale_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(self.num_classes + 1, emb_dim)  # last row: the null class
        self.conv_in = nn.Conv2d(self.in_channels, self.widths[0], 3, padding=1)
        self.levels = nn.ModuleList()
        cur = self.widths[0]
        for width in self.widths:
            blocks = []
            for _ in range(cfg.num_res_blocks):
                block = ResBlock(cur, width, emb_dim, 0.0, cfg.groups)
                block.conv2.reset_parameters()  # the zero outputs keep base + guide = base; see the Notes
                blocks.append(block)
                cur = width
            self.levels.append(nn.ModuleList(blocks))
        self.outs = nn.ModuleList(zero_conv(w, b) for w, b in zip(self.widths, self.base_widths))

    def check_inputs(self, x, t, y, scale):
        """Check the call's arguments (see the class docstring) and return ``(t, y, scale)`` as ``(N,)`` tensors on
        ``x``'s device (``y``: the null labels when None; ``scale`` in ``x``'s dtype)."""
        levels = len(self.base_widths) - 1
        check_input(x, (self.in_channels, None, None), "x", multiple=self.multiple,
                    why=f" (the UNet halves it {levels} times)")  # fmt: skip
        n = x.shape[0]
        t = timesteps_for(t, n, x.device)
        y = labels_for(y, self.num_classes, n, x.device, owner="this GuideNet")
        return t, y, _scale_for(scale, n, x)

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None, scale=_DEFAULT_SCALE) -> list[torch.Tensor]:
        """The features ``[F_0, …, F_{L−1}]``, ``F_ℓ`` of shape ``(N, base width ℓ, H/2^ℓ, W/2^ℓ)``."""
        t, y, s = self.check_inputs(x, t, y, scale)
        return self._features(x, t, y, s)

    def _features(self, x, t, y, s):
        ch = self.config.channels
        emb = self.time_mlp(timestep_embedding(t * self.time_scale, ch).to(x.dtype))  # (N, 4ch)
        emb = emb + self.scale_mlp(timestep_embedding(s, ch).to(x.dtype)) + self.label_emb(y)
        h = self.conv_in(x)  # (N, widths[0], H, W)
        feats = []
        for level, (blocks, out) in enumerate(zip(self.levels, self.outs)):
            if level > 0:
                h = F.avg_pool2d(h, 2)  # (N, ·, H/2^ℓ, W/2^ℓ): the UNet's strided convs halve exactly here
            for block in blocks:
                h = block(h, emb)
            feats.append(out(h))  # the chain continues on h, so zero outputs do not cut the deeper levels off
        return feats


@contextlib.contextmanager
def _added(base: UNet, positions, feats):
    """While the block runs, ``base``'s forward adds ``feats[i]`` to its encoder state ``h_p`` (``p =
    positions[i]``): the output of ``conv_in`` for ``p = 0``, else of the last layer of down block ``p``. That state
    is both the skip and the next block's input, as in :class:`~diffu.nn.AdaptedUNet`; the hooks run inside
    :meth:`UNet.forward <diffu.nn.UNet.forward>` itself, so no copy of its code is needed."""
    handles = []
    try:
        for p, f in zip(positions, feats):
            layer = base.conv_in if p == 0 else base.down[p - 1][-1]
            handles.append(layer.register_forward_hook(lambda module, args, out, f=f: out + f))
        yield
    finally:
        for handle in handles:
            handle.remove()


class GuidedUNet(nn.Module):
    """A frozen class-conditional UNet steered by a :class:`GuideNet`: ``model(x_t, t, y=None, scale=3.0) -> ε̂``,
    one pass that is trained to equal classifier-free guidance at ``scale`` (Hsiao et al. 2024).

    The frozen UNet runs as :class:`~diffu.nn.UNet` does, except that after the last block of each resolution level
    ``ℓ`` its encoder state becomes ``h_p + F_ℓ(x_t, t, y, s)``, which both the skip connection and the rest of the
    encoder then read (the points and the arithmetic of :class:`~diffu.nn.AdaptedUNet`). At initialisation the
    guide's outputs are zero and the model is the frozen UNet (the conditional model, i.e. CFG at ``s = 1``),
    exactly.

    Why these points: they are the ones a T2I-Adapter feeds, so the two chapters' feature injection is one
    operation; one map per level keeps the guide at about 1.5 % of the UNet; and a map added to the encoder reaches
    the decoder twice, through the skip and through every deeper level. (On a tiny random teacher, adding the maps
    to the decoder's skip inputs and the middle block instead — ControlNet's points, one zero convolution each —
    learned no faster: 60 steps closed 14–18 % of the gap either way.)

    Only ``guide`` is trainable and only its tensors are in ``state_dict()``; a guide-only state dict loads into a
    model built around the same base, or around a fine-tuned copy of it (the paper's plug-and-play use).

    Args:
        base: the pretrained class-conditional UNet (frozen in place: ``requires_grad_(False)``, kept in eval
            mode).
        guide: a :class:`GuideNet` built for ``base``; or None, and then ``config`` / keyword arguments build one
            (``GuidedUNet(unet, channels=8)``: how :func:`diffu.pretrained.build` rebuilds it).
        config: a :class:`GuideNetConfig` for the new guide (only without ``guide``).

    The call checks ``x``, ``t`` and ``y`` as :class:`~diffu.nn.UNet` does (``y=None``: the null label) and
    ``scale`` (a number ≥ 0, or a real ``()``/``(1,)``/``(N,)`` tensor for a scale per sample), raising
    ``ValueError``/``TypeError`` naming the argument.

    Raises:
        TypeError: ``base`` not a UNet, ``guide`` not a GuideNet, ``guide`` together with a config.
        ValueError: an unconditional ``base``; a guide built for a UNet of other levels, widths, classes or input
            channels; bad config fields.

    Notes:
        The paper feeds the guide's feature maps to the frozen base's decoder, as ControlNet feeds its residuals; we
        add them at the T2I-Adapter points of the encoder, from where they reach the decoder through the skips as
        well (see "Why these points"). The paper
        then also distils the number of sampling steps (progressive distillation of base + guide); here the guide
        only removes CFG's second pass, and the step count is the sampler's (§7 has the step distillations). The
        features are added through forward hooks that live only for the duration of a call: do not run the same
        ``base`` object from two threads at once while one of them is inside a :class:`GuidedUNet` call.

    Used in chapter §7.1.
    """

    def __init__(self, base: UNet, guide: GuideNet | None = None, config: GuideNetConfig | None = None, **kwargs):
        super().__init__()
        _check_base(base)
        if guide is None:
            guide = GuideNet(base, config, **kwargs)
        elif not isinstance(guide, GuideNet):
            raise TypeError(f"guide must be a GuideNet or None, got {type(guide).__name__}")
        elif config is not None or kwargs:
            raise TypeError("give either guide or its config / keyword arguments, not both")
        else:
            fits = (guide.positions, guide.base_widths) == adapter_levels(base)
            fits = fits and (guide.num_classes, guide.in_channels) == (base.num_classes, base.config.in_channels)
            if not fits:
                raise ValueError(
                    f"guide was built for a UNet with levels {guide.positions}, widths {guide.base_widths}, "
                    f"{guide.num_classes} classes and {guide.in_channels} input channels; base has "
                    f"{adapter_levels(base)}, {base.num_classes} classes, {base.config.in_channels} channels"
                )
        self.guide = guide.requires_grad_(True)
        self.base = base.requires_grad_(False).eval()
        self.config = guide.config  # the manifest records it: pretrained.build passes it back with the base
        self.prediction = getattr(base, "prediction", "eps")
        self.num_classes = base.num_classes
        exclude_frozen(self)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.eval()  # the frozen part stays in eval mode (dropout)
        return self

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """The frozen UNet's :meth:`~diffu.nn.UNet.check_input` (what :meth:`forward` checks first)."""
        self.base.check_input(x, name)

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None, scale=_DEFAULT_SCALE) -> torch.Tensor:
        self.base.check_input(x)
        t, y, s = self.guide.check_inputs(x, t, y, scale)
        feats = self.guide._features(x, t, y, s)  # 1. the guide's maps F_ℓ(x_t, t, y, s)
        with _added(self.base, self.guide.positions, feats):  # 2. the frozen UNet with h_p + F_ℓ, one pass
            return self.base(x, t, y)  # (N, C_out, H, W)
