"""A ControlNet adapter for the frozen DDPM UNet and a small restoration network (chapter §4, two-stage restoration).

:class:`ControlNet` is the trainable half of Zhang et al. 2023 ("Adding Conditional Control to Text-to-Image
Diffusion Models", official code ``lllyasviel/ControlNet``, ``cldm/cldm.py``): a copy of the UNet's encoder and
middle block initialised from the frozen weights, a condition image entering through a small conv stack that ends
in a zero-initialised conv (added after the copy's first conv), and one zero-initialised 1×1 conv per encoder
output and on the middle output. :class:`ControlledUNet` adds those outputs to the frozen UNet's skip features and
middle block, so at initialisation it *is* the frozen UNet. :class:`Restorer` is the stage-1 regression network of
the two-stage restorer in :mod:`diffu.inverse.two_stage` (DiffBIR's "restoration module", a SwinIR there).

NaN or inf in the input (``x``, ``t``, ``cond``, the restorer's ``y``) propagates to the output: forward checks
shapes and dtypes only (:mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int, check_real
from .embeddings import timestep_embedding
from .inputs import check_input, check_int_tuple, labels_for, make_config, timesteps_for
from .unet import ResBlock, UNet, group_norm

__all__ = ["ControlNet", "ControlledUNet", "Restorer", "RestorerConfig", "exclude_frozen", "zero_conv"]


def zero_conv(cin: int, cout: int, kernel_size: int = 1) -> nn.Conv2d:
    """A convolution whose weight and bias start at zero (ControlNet's ``zero_module(conv_nd(...))``).

    Args:
        cin, cout: input and output channels, integers ≥ 1.
        kernel_size: an odd integer ≥ 1 (padded by ``kernel_size // 2``, so the output keeps the input's size).

    Returns:
        ``nn.Conv2d`` mapping ``(N, cin, H, W)`` to ``(N, cout, H, W)``, zero at initialisation.

    Raises:
        ValueError: a size that is not an integer ≥ 1, or an even ``kernel_size``.
    """
    check_int("cin", cin, 1)
    check_int("cout", cout, 1)
    check_int("kernel_size", kernel_size, 1)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (a 'same' convolution), got {kernel_size}")
    conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


# ----------------------------------------------------------------------------------------------------------------
# Stage 1: a small regression UNet without time input
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class RestorerConfig:
    """Hyper-parameters of :class:`Restorer` (stored next to shipped weights), validated on construction: sizes
    are integers ≥ 1 and ``channel_mult`` a non-empty tuple (lists are stored as tuples)."""

    in_channels: int = 1
    channels: int = 32
    channel_mult: tuple = (1, 2, 2)
    groups: int = 8

    def __post_init__(self):
        for name in ("in_channels", "channels", "groups"):
            check_int(name, getattr(self, name), 1)
        self.channel_mult = check_int_tuple("channel_mult", self.channel_mult)

    def to_dict(self):
        return asdict(self)


class _Block(nn.Module):
    """GroupNorm → SiLU → Conv, twice, plus a (1×1 when the width changes) skip: a ResBlock without time."""

    def __init__(self, cin, cout, groups):
        super().__init__()
        self.body = nn.Sequential(group_norm(cin, groups), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  group_norm(cout, groups), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))  # fmt: skip
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class Restorer(nn.Module):
    """Stage 1 of the two-stage restorer: ``restorer(y) -> x̂``, a small conv UNet with no time input (§4).

    One :class:`_Block` per level (strided-conv down, nearest-up + conv, skip concatenation), a global residual
    ``x̂ = y + f(y)`` whose last conv starts at zero (so the untrained net is the identity). Trained by regression
    (:func:`diffu.inverse.two_stage.restorer_loss`), it outputs the posterior *mean*: high PSNR, smooth details —
    the role of DiffBIR's SwinIR stage. Input/output ``(N, C, H, W)``, any ``H, W``.

    Args:
        config: a :class:`RestorerConfig`, or None and its fields as keyword arguments (not both).

    The call takes a float ``y`` ``(N, in_channels, H, W)`` and raises ``ValueError`` naming ``y`` otherwise.
    """

    def __init__(self, config: RestorerConfig | None = None, **kwargs):
        super().__init__()
        cfg = make_config(RestorerConfig, config, kwargs)
        self.config = cfg
        ch, g = cfg.channels, cfg.groups
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.enc, self.downs, widths, cur = nn.ModuleList(), nn.ModuleList(), [], ch
        for level, mult in enumerate(cfg.channel_mult):
            self.enc.append(_Block(cur, ch * mult, g))
            cur = ch * mult
            widths.append(cur)
            if level != len(cfg.channel_mult) - 1:
                self.downs.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
        self.mid = _Block(cur, cur, g)
        self.ups, self.dec = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(cfg.channel_mult))):
            if level != len(cfg.channel_mult) - 1:  # nearest-up, then a conv to this level's width
                self.ups.append(nn.Conv2d(cur, widths[level], 3, padding=1))
                cur = widths[level]
            self.dec.append(_Block(cur + widths[level], widths[level], g))
            cur = widths[level]
        self.norm_out = group_norm(cur, g)
        self.conv_out = zero_conv(cur, cfg.in_channels, 3)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        check_input(y, (self.config.in_channels, None, None), "y")
        h = self.conv_in(y)  # (N, ch, H, W)
        skips = []
        for i, block in enumerate(self.enc):
            h = block(h)
            skips.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)  # (N, c, ⌈H/2⌉, ⌈W/2⌉)
        h = self.mid(h)
        for i, block in enumerate(self.dec):
            skip = skips.pop()
            if i > 0:  # back to the skip's size (odd sizes such as 7 → 14 → 28 included)
                h = self.ups[i - 1](F.interpolate(h, size=skip.shape[-2:], mode="nearest"))
            h = block(torch.cat([h, skip], 1))
        return y + self.conv_out(F.silu(self.norm_out(h)))  # (N, C, H, W)


# ----------------------------------------------------------------------------------------------------------------
# The UNet's halves, shared by the frozen model and its trainable copy (same operations as UNet.forward)
# ----------------------------------------------------------------------------------------------------------------


def _embed(net, x, t, y):
    """Time (+ label) embedding exactly as :meth:`UNet.forward` computes it; ``net`` is a UNet or its copy, ``t``
    and ``y`` are checked already (:func:`~diffu.nn.inputs.timesteps_for`, :func:`~diffu.nn.inputs.labels_for`)."""
    emb = net.time_mlp(timestep_embedding(t * net.config.time_scale, net.config.channels).to(x.dtype))  # (N, 4ch)
    if y is not None:
        emb = emb + net.label_emb(y)
    return emb


def _check_cond(cond, x, channels: int) -> None:
    """``cond`` is a float condition image ``(N, channels, H, W)`` of ``x``'s batch and size."""
    want = (x.shape[0], channels, *x.shape[2:])
    if not isinstance(cond, torch.Tensor) or cond.shape != want:
        got = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
        raise ValueError(f"cond must be a tensor of shape {want} (N, C_cond, H, W), got {got}")
    check_input(cond, (channels, None, None), "cond")


def _run(layers, h, emb):
    for layer in layers:
        h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
    return h


def _encode(net, h, emb):
    """The encoder and middle block after ``conv_in``: returns the skip features (``conv_in`` output first) and
    the middle block's output."""
    hs = [h]
    for block in net.down:
        h = _run(block, h, emb)
        hs.append(h)
    return hs, _run(net.mid, h, emb)


def _out_channels(block) -> int:
    """Width of a down block's output: [ResBlock], [ResBlock, AttnBlock] (same width) or [strided Conv2d]."""
    first = block[0]
    return first.conv2.out_channels if isinstance(first, ResBlock) else first.out_channels


class _EncoderCopy(nn.Module):
    """The trainable copy: ``time_mlp``, ``label_emb``, ``conv_in``, ``down`` and ``mid`` of a UNet, deep-copied."""

    check_input = UNet.check_input  # the UNet's input check reads only the config, which the copy shares

    def __init__(self, base: UNet):
        super().__init__()
        self.config, self.num_classes = base.config, base.num_classes
        for name in ("time_mlp", "conv_in", "down", "mid") + (("label_emb",) if base.num_classes is not None else ()):
            setattr(self, name, copy.deepcopy(getattr(base, name)))


class ControlNet(nn.Module):
    """ControlNet (Zhang et al. 2023, ``cldm/cldm.py::ControlNet``) for our :class:`~diffu.nn.UNet`: returns the
    residuals that :class:`ControlledUNet` adds to the frozen UNet's skip features and middle block.

    ``h_0 = conv_in(x_t) + Z_hint(cond)``; ``h_k = down_k(h_{k−1})``; ``m = mid(h_K)``; outputs
    ``[Z_0(h_0), …, Z_K(h_K), Z_mid(m)]`` with every ``Z`` zero-initialised. The copy of the encoder (and of the
    time/label embeddings, which ControlNet also copies) starts from the frozen weights. The hint stack is a
    3×3 conv → SiLU → zero 3×3 conv at full resolution (ControlNet's ``input_hint_block`` downsamples 512² hints ×8
    to SD's latent; our condition is already at the UNet's resolution).

    Args:
        base: the UNet to copy (not stored here).
        cond_channels: channels of the condition image ``cond`` ``(N, cond_channels, H, W)``, an integer ≥ 1.
        hint_channels: width of the hint stack's hidden layer, an integer ≥ 1.

    The call ``controlnet(x, t, cond, y=None)`` checks its arguments as :class:`~diffu.nn.UNet` does, and ``cond``
    (a float ``(N, cond_channels, H, W)`` of ``x``'s size), raising ``ValueError``/``TypeError`` naming the argument.
    """

    def __init__(self, base: UNet, cond_channels: int = 1, hint_channels: int = 16):
        super().__init__()
        if not isinstance(base, UNet):
            raise TypeError(f"base must be a diffu.nn.UNet, got {type(base).__name__}")
        check_int("cond_channels", cond_channels, 1)
        check_int("hint_channels", hint_channels, 1)
        self.cond_channels = cond_channels
        ch = base.config.channels
        self.copy = _EncoderCopy(base)
        self.hint = nn.Sequential(nn.Conv2d(cond_channels, hint_channels, 3, padding=1), nn.SiLU(),
                                  zero_conv(hint_channels, ch, 3))  # fmt: skip
        widths = [ch] + [_out_channels(block) for block in base.down]  # one per skip feature
        self.zero_convs = nn.ModuleList(zero_conv(c, c) for c in widths)
        self.mid_out = zero_conv(widths[-1], widths[-1])
        self.requires_grad_(True)  # the copy is trainable even when base was loaded frozen

    def forward(self, x, t, cond, y=None) -> list[torch.Tensor]:
        """The residuals ``[Z_0(h_0), …, Z_K(h_K), Z_mid(m)]``, each of its skip feature's shape."""
        self.copy.check_input(x)
        _check_cond(cond, x, self.cond_channels)
        t = timesteps_for(t, x.shape[0], x.device)
        y = labels_for(y, self.copy.num_classes, x.shape[0], x.device, owner="this ControlNet")
        return self._residuals(x, t, cond, y)

    def _residuals(self, x, t, cond, y) -> list[torch.Tensor]:
        """:meth:`forward` on checked arguments (``t`` a tensor, ``y`` the labels or None)."""
        emb = _embed(self.copy, x, t, y)
        h = self.copy.conv_in(x) + self.hint(cond)  # (N, ch, H, W): the condition enters after the first conv
        hs, mid = _encode(self.copy, h, emb)
        return [z(h) for z, h in zip(self.zero_convs, hs)] + [self.mid_out(mid)]


# ----------------------------------------------------------------------------------------------------------------
# The frozen UNet + the adapter
# ----------------------------------------------------------------------------------------------------------------

_FROZEN = ("base", "restorer")


def exclude_frozen(module: nn.Module, names: tuple[str, ...] = ("base",)) -> None:
    """Keep the frozen submodules ``names`` of ``module`` out of its ``state_dict()``: a post-hook drops their
    tensors, and a ``load_state_dict`` pre-hook fills them from the module itself, so an adapter-only state dict
    (what a shipped adapter, ControlNet or guide file holds) loads into a model built around the same frozen
    networks. A name whose attribute is None is skipped.

    Args:
        module: the wrapper (``ControlledUNet``, ``AdaptedUNet``, ``GuidedUNet``).
        names: attribute names of its frozen parts, a non-empty tuple of strings.

    Raises:
        TypeError: ``module`` not an ``nn.Module``, ``names`` not a tuple of strings.
        ValueError: ``names`` empty.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names must be a tuple of attribute names, got {names!r:.60}")
    if not names:
        raise ValueError("names must name at least one frozen submodule")

    def drop(mod, state_dict, prefix, local_metadata):
        for key in [k for k in state_dict if k.startswith(tuple(f"{prefix}{name}." for name in names))]:
            del state_dict[key]

    def fill(mod, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        for name in names:
            part = getattr(mod, name)
            if part is not None:
                for k, v in part.state_dict(keep_vars=True).items():
                    state_dict.setdefault(f"{prefix}{name}.{k}", v.detach())

    module.register_state_dict_post_hook(drop)
    module.register_load_state_dict_pre_hook(fill)


class ControlledUNet(nn.Module):
    """A frozen UNet steered by a :class:`ControlNet`: ``model(x_t, t, cond=image, y=None) -> ε̂`` (§4).

    The decoder of the frozen UNet reads ``h_k + s·Z_k(…)`` instead of each skip feature ``h_k`` and
    ``mid + s·Z_mid(…)`` instead of the middle output (``ControlledUnetModel`` in ``cldm/cldm.py``), with the
    control strength ``s = control_scale`` (ControlNet's ``control_scales``/"strength", DiffBIR's
    ``strength``). The zero convs make the model equal the frozen UNet at initialisation, exactly.

    Only ``control`` is trainable and only its tensors are in ``state_dict()``: ``base`` (and the optional frozen
    stage-1 ``restorer``, kept here so that the training loss can run it on the model's device) are rebuilt from
    their own weights and an adapter-only state dict loads into a model built around them.

    Args:
        base: the pretrained ε-prediction UNet (frozen in place: ``requires_grad_(False)``, kept in eval mode).
        restorer: optional frozen stage-1 network ``restorer(y) -> x̂`` used by the training loss (an
            ``nn.Module``).
        cond_channels, hint_channels: see :class:`ControlNet`.

    The call ``model(x, t, cond, y=None, control_scale=1.0)`` checks ``x``, ``t`` and ``y`` as
    :class:`~diffu.nn.UNet` does, ``cond`` (a float ``(N, cond_channels, H, W)`` of ``x``'s size) and
    ``control_scale`` (a finite number), raising ``ValueError``/``TypeError`` naming the argument.
    """

    def __init__(self, base: UNet, restorer: nn.Module | None = None, cond_channels: int = 1,
                 hint_channels: int = 16):  # fmt: skip
        super().__init__()
        if restorer is not None and not isinstance(restorer, nn.Module):
            raise TypeError(f"restorer must be a torch.nn.Module or None, got {type(restorer).__name__}")
        self.control = ControlNet(base, cond_channels, hint_channels)  # copies the weights before freezing
        self.base = base.requires_grad_(False).eval()
        self.restorer = restorer.requires_grad_(False).eval() if restorer is not None else None
        self.prediction = getattr(base, "prediction", "eps")
        self.num_classes = base.num_classes
        exclude_frozen(self, _FROZEN)

    @property
    def null_class(self) -> int | None:
        return self.num_classes

    def train(self, mode: bool = True):
        super().train(mode)
        for name in _FROZEN:  # frozen parts stay in eval mode (dropout, normalisation statistics)
            if getattr(self, name) is not None:
                getattr(self, name).eval()
        return self

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """The frozen UNet's :meth:`~diffu.nn.UNet.check_input` (what :meth:`forward` checks first)."""
        self.base.check_input(x, name)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                y: torch.Tensor | None = None, control_scale: float = 1.0) -> torch.Tensor:  # fmt: skip
        base = self.base
        base.check_input(x)
        _check_cond(cond, x, self.control.cond_channels)
        t = timesteps_for(t, x.shape[0], x.device)
        y = labels_for(y, self.num_classes, x.shape[0], x.device, owner="this ControlledUNet")
        check_real("control_scale", control_scale)
        emb = _embed(base, x, t, y)
        hs, h = _encode(base, base.conv_in(x), emb)  # frozen encoder: skip features and middle output
        if control_scale != 0:
            res = self.control._residuals(x, t, cond.to(x.dtype), y)
            hs = [f + control_scale * r for f, r in zip(hs, res)]
            h = h + control_scale * res[-1]
        for block in base.up:
            if isinstance(block[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)  # (controlled) skip connection
            h = _run(block, h, emb)
        return base.conv_out(F.silu(base.norm_out(h)))  # (N, C_out, H, W)
