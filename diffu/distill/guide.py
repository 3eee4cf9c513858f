"""Plug-and-play diffusion distillation (Hsiao et al. 2024, "Plug-and-Play Diffusion Distillation", CVPR 2024):
distil classifier-free guidance into a small guide network while the base model stays frozen.

Classifier-free guidance (Ho & Salimans 2022) needs two passes of the base per sampling step:

    ε̃(x_t, t, y, s) = ε(x_t, t, ∅) + s (ε(x_t, t, y) − ε(x_t, t, ∅)).

A :class:`~diffu.nn.guide.GuidedUNet` adds the features of a guide ``G_φ`` (≈ 1.5 % of ``fmnist_unet``'s
parameters) to the frozen base, and is trained so that one conditional pass reproduces ε̃ (:func:`guide_loss`):

    L(φ) = E_{x_0, y, t, ε, s} ‖ε_{base+G_φ}(x_t, t, y, s) − sg(ε̃(x_t, t, y, s))‖²,   x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,

with ``t`` uniform over the schedule's steps and ``s`` drawn per sample from a set of scales; the target
(:func:`cfg_target`) comes from the same frozen base with :class:`~diffu.guidance.ClassifierFreeGuidance`.
A guided step then costs one pass of the base plus the guide: :func:`guided_eps_cost` counts the guide's
multiply-adds as a share of the base's, which is how chapter §7.1 counts network evaluations (NFE) against CFG's
two per step.

NaN or inf in ``x_t`` or ``t`` propagates to :func:`cfg_target`'s output, and in ``x0`` to the loss
(shapes and dtypes are checked, not values: :func:`diffu.train.train` checks its data once, and a NaN loss stops
it).

Used in chapter §7.1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_batch, check_callable, check_floating, check_generator, check_real, check_tensor
from ..guidance import ClassifierFreeGuidance
from ..nn.guide import GuidedUNet
from ..nn.inputs import timesteps_for
from ..sampling import check_schedule
from ..schedules import Schedule
from ..train import label_kwargs

__all__ = ["DEFAULT_SCALES", "cfg_target", "guide_loss", "guided_eps_cost"]

#: The guidance scales :func:`guide_loss` draws from by default (the range of §2.3's sweep, with 3, the
#: chapter's claim, in the middle).
DEFAULT_SCALES = (1.0, 2.0, 3.0, 4.0, 5.0)


def _check_scale_tensor(scale: torch.Tensor, n: int) -> torch.Tensor:
    check_batch(scale, n, "scale")
    if scale.ndim != 1 or scale.is_complex() or scale.dtype == torch.bool:
        raise ValueError(f"scale must be a real ({n},) tensor (one scale per sample), got {scale.dtype} "
                         f"of shape {tuple(scale.shape)}")  # fmt: skip
    if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
        raise ValueError(f"scale must hold finite numbers >= 0, got values {scale.tolist()!r:.80}")
    return scale


def cfg_target(base, x_t: torch.Tensor, t, y: torch.Tensor, scale) -> torch.Tensor:
    """The classifier-free-guided prediction ``ε̃ = ε(x_t, t, ∅) + s (ε(x_t, t, y) − ε(x_t, t, ∅))`` of the frozen
    base, without gradient (Ho & Salimans 2022; the target of Hsiao et al. 2024).

    Both branches run as :class:`~diffu.guidance.ClassifierFreeGuidance` runs them (one batched pass of ``2N``
    inputs, the null label ``base.num_classes``); a per-sample ``scale`` is grouped by value, one such pass per
    distinct scale (the same ``2N`` rows in all).

    Args:
        base: the class-conditional network ``base(x, t, y=labels)`` with an integer ``num_classes`` (its null
            label).
        x_t: ``(N, C, H, W)`` noisy inputs.
        t: a number or ``(N,)`` timesteps.
        y: ``(N,)`` integer labels in ``[0, num_classes]``.
        scale: the guidance scale, a number ≥ 0 or a ``(N,)`` tensor of them (one per sample).

    Returns:
        ε̃ ``(N, C, H, W)``, detached.

    Raises:
        TypeError: ``base`` not callable, ``x_t``/``y``/``scale`` of the wrong type.
        ValueError: ``base`` without an integer ``num_classes``, an ``x_t`` the base's ``check_input`` refuses, a
            negative or non-finite ``scale`` (a tensor's values included), ``t``, ``y`` or a ``scale`` tensor of
            another batch size; what :class:`~diffu.guidance.ClassifierFreeGuidance` refuses.

    Used in chapter §7.1.
    """
    check_callable("base", base)
    k = getattr(base, "num_classes", None)
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"base must be class-conditional (an int num_classes, the null label), got num_classes={k!r}")
    if callable(getattr(base, "check_input", None)):
        base.check_input(x_t, "x_t")  # the diffu networks' own check: rank, channels, size
    check_floating(x_t, "x_t")
    if x_t.ndim == 0:
        raise ValueError("x_t must have a batch dimension (N, C, H, W), got a 0-d tensor")
    n = x_t.shape[0]
    t = timesteps_for(t, n, x_t.device).expand(n)  # a number, (1,) or (N,)
    check_batch(y, n, "y", of="x_t's")
    null = {"y": torch.full((1,), k, dtype=torch.long, device=x_t.device)}
    with torch.no_grad():
        if not isinstance(scale, torch.Tensor):
            return ClassifierFreeGuidance(base, scale, null)(x_t, t, y=y)
        scale = _check_scale_tensor(scale, n)
        out = torch.empty_like(x_t)
        for s in scale.unique().tolist():
            idx = (scale == s).nonzero().squeeze(1)
            out[idx] = ClassifierFreeGuidance(base, s, null)(x_t[idx], t[idx], y=y[idx])
        return out


def _check_scales(scales) -> tuple[float, ...]:
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence):
        raise TypeError(f"scales must be a sequence of numbers >= 0, got {type(scales).__name__}")
    if not scales:
        raise ValueError("scales must be a non-empty sequence of numbers >= 0, got an empty one")
    for s in scales:
        check_real("each entry of scales", s, 0)
    return tuple(float(s) for s in scales)


def guide_loss(model: GuidedUNet, x0: torch.Tensor, y: torch.Tensor, *, schedule: Schedule,
               scales: Sequence[float] = DEFAULT_SCALES,
               generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """The plug-and-play distillation loss on a batch (module docstring): the guided single pass against CFG of
    the model's own frozen base. With ``functools.partial`` over the keyword arguments it is a ``loss_fn`` for
    :func:`diffu.train.train`.

    Draws, in this order from ``generator``: ``t ~ U{0, …, T−1}`` ``(N,)``, ``ε ~ N(0, I)`` like ``x0``, and a scale
    index per sample, uniform over ``scales``.

    Args:
        model: the :class:`~diffu.nn.guide.GuidedUNet` being trained (its base is the teacher).
        x0: ``(N, C, H, W)`` clean training images.
        y: ``(N,)`` integer labels in ``[0, num_classes]`` (the null label teaches the guide to leave the
            unconditional prediction alone: CFG of the null label is ``ε(x_t, ∅)`` at every scale).
        schedule: the base's :class:`~diffu.schedules.Schedule`.
        scales: the guidance scales to train at, a non-empty sequence of numbers ≥ 0.
        generator: a ``torch.Generator`` on ``x0``'s device, or None.

    Returns:
        The scalar loss ``mean (ε_{base+G}(x_t, t, y, s) − ε̃(x_t, t, y, s))²`` over the batch and pixels.

    Raises:
        TypeError: ``model`` not a :class:`~diffu.nn.guide.GuidedUNet`, a bad ``schedule``, ``scales`` or
            ``generator``.
        ValueError: ``x0`` not a float image batch the base takes, ``y`` not ``(N,)`` labels in range, a scale that
            is negative or not finite.

    Notes:
        The paper draws the scale from a continuous range; a finite set lets :func:`cfg_target` batch the
        teacher's two passes by scale, and ``scales`` may list as many values as wanted. The paper also distils
        the number of steps of base + guide afterwards (progressive distillation); this loss is the CFG-distillation
        stage only. Training states are ``q(x_t | x_0)`` of the training images, not states on CFG's sampling
        trajectories (which later adapter guidance distillation, Jensen & Sadat 2025, trains on instead).

    Used in chapter §7.1.
    """
    if not isinstance(model, GuidedUNet):
        raise TypeError(f"model must be a diffu.nn.GuidedUNet, got {type(model).__name__}")
    check_schedule(schedule)
    model.check_input(x0, "x0")
    n = x0.shape[0]
    check_tensor(y, "y")
    check_batch(y, n, "y", of="x0's")
    label_kwargs(model, y, 0.0)  # (N,) integer labels in [0, num_classes]
    scales = _check_scales(scales)
    check_generator(generator)
    dev = x0.device
    # 1. x_t = q(x_0, t), t uniform over the schedule
    t = torch.randint(0, schedule.T, (n,), generator=generator, device=dev)
    noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
    x_t = schedule.q_sample(x0, t, noise)
    t = t.to(x0.dtype)
    # 2. a guidance scale per sample
    i = torch.randint(0, len(scales), (n,), generator=generator, device=dev)
    s = torch.tensor(scales, device=dev, dtype=x0.dtype)[i]
    # 3. the target: CFG of the frozen base, two passes, stop-gradient
    target = cfg_target(model.base, x_t, t, y, s)
    # 4. one pass of base + guide
    return F.mse_loss(model(x_t, t, y=y, scale=s), target)


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds of one sample through a convolution or a linear layer (bias additions not counted)."""
    per_sample = out[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_sample * (module.in_channels // module.groups) * kh * kw
    return per_sample * module.in_features


def guided_eps_cost(model: GuidedUNet) -> dict:
    """What one guided pass costs, in multiply-adds of the convolutions and linear layers for one image of the
    base's ``image_size``: the base's, the guide's, and the guide's share of the base.

    One step of CFG costs 2 passes of the base; one step of base + guide costs ``1 + share`` of them: the NFE
    count of chapter §7.1 ("half the evaluations" when the share is small).

    Args:
        model: a :class:`~diffu.nn.guide.GuidedUNet`.

    Returns:
        A dict with the integers ``"base_macs"`` and ``"guide_macs"``, ``"guide_share"`` (guide / base),
        ``"nfe_per_step"`` (1 + share) and ``"cfg_nfe_per_step"`` (2.0).

    Raises:
        TypeError: ``model`` is not a :class:`~diffu.nn.guide.GuidedUNet`.

    Notes:
        Counted with forward hooks on every ``nn.Conv2d`` and ``nn.Linear`` during one call on a
        ``(1, C, image_size, image_size)`` input. Left out for both networks: normalisation, activations,
        additions, the embedding look-ups and the base's attention products (``softmax(QKᵀ)V``; the guide has
        none), which slightly overstates the guide's share.

    Used in chapter §7.1.
    """
    if not isinstance(model, GuidedUNet):
        raise TypeError(f"model must be a diffu.nn.GuidedUNet, got {type(model).__name__}")
    p = next(model.guide.parameters())
    size, c = model.base.config.image_size, model.base.config.in_channels
    counts = {"base": 0, "guide": 0}
    handles = []

    def hook(part):
        def count(module, args, out):
            counts[part] += _macs(module, out)

        return count

    try:
        for part in counts:
            for layer in getattr(model, part).modules():
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    handles.append(layer.register_forward_hook(hook(part)))
        x = torch.zeros(1, c, size, size, device=p.device, dtype=p.dtype)
        with torch.no_grad():
            model(x, torch.zeros(1, device=p.device), torch.zeros(1, dtype=torch.long, device=p.device), scale=1.0)
    finally:
        for h in handles:
            h.remove()
    share = counts["guide"] / counts["base"]
    return {"base_macs": counts["base"], "guide_macs": counts["guide"], "guide_share": share,
            "nfe_per_step": 1.0 + share, "cfg_nfe_per_step": 2.0}  # fmt: skip
