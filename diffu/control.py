"""Spatial control of a frozen diffusion UNet (chapter §6.1): the training loss, the condition maps and how well a
generated image follows its map.

* :func:`control_loss` — the ε-loss of a :class:`~diffu.nn.ControlledUNet` (ControlNet) or
  :class:`~diffu.nn.AdaptedUNet` (T2I-Adapter) on (image, condition map) pairs;
* condition maps — :func:`label_map_condition` (a label map as one-hot channels on [-1, 1]) and :func:`edge_map`
  (Sobel edges of an image, as a {−1, +1} map);
* fidelity — :func:`mask_fidelity` (Dice/IoU of a generated image's thresholded foreground against the requested
  mask) and :func:`label_fidelity` (per-class Dice/IoU of a segmenter's labels of a generated image against the
  requested label map: label → image synthesis);
* :func:`sudden_convergence` — does a fidelity curve jump as the ControlNet paper's "sudden convergence" does?

**Bad input** raises ``ValueError``/``TypeError`` naming the argument (:mod:`diffu.checks`); NaN or inf in data
raises too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .checks import (
    check_callable,
    check_finite,
    check_floating,
    check_image,
    check_int,
    check_labels,
    check_real,
    check_tensor,
)
from .metrics import dice, iou
from .sampling import check_schedule
from .schedules import Schedule, linear_schedule
from .segmentation.masks import one_hot
from .train import diffusion_loss

__all__ = [
    "EDGE_THRESHOLD",
    "FOREGROUND_LEVEL",
    "Convergence",
    "Fidelity",
    "control_loss",
    "edge_map",
    "label_fidelity",
    "label_map_condition",
    "mask_fidelity",
    "sudden_convergence",
]

#: Foreground threshold of Fashion-MNIST images on the [-1, 1] scale (a pixel above it belongs to the item), the
#: rule of :func:`diffu.data.textured.foreground_masks` (its default 0.05 on the [0, 1] scale). The background is
#: exactly −1 (half the test pixels); −0.9 (≈ 13/255) keeps the dark items' faint regions, which −0.8 breaks up,
#: and about matches the foreground share of data (0.467) and of the shipped UNet's samples (0.465).
FOREGROUND_LEVEL = -0.9

#: Edge threshold of :func:`edge_map` on the normalised Sobel magnitude ``|∇I| / 8`` (a full-range vertical step,
#: −1 → +1, gives 1): 0.25 keeps the outline and the strong inner edges of Fashion-MNIST items (26 % of the test
#: pixels); 0.5 loses most of the dark items' outlines.
EDGE_THRESHOLD = 0.25


class Fidelity(NamedTuple):
    """How well generated images follow their maps: ``dice`` and ``iou``, each ``(N,)`` (:func:`mask_fidelity`) or
    ``(N, K)`` per class (:func:`label_fidelity`), float32, NaN where a class is in neither map."""

    dice: torch.Tensor
    iou: torch.Tensor


class Convergence(NamedTuple):
    """The verdict of :func:`sudden_convergence`: ``sudden`` (bool), ``start`` (the last step with a score below
    ``low`` before ``end``, or None), ``end`` (the first step with a score above ``high``, or None)."""

    sudden: bool
    start: float | None
    end: float | None


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def _check_images(x, name: str) -> None:
    """A finite float image batch ``(N, C, H, W)``; integer data is pointed to :func:`diffu.data.from_uint8`."""
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        check_floating(x, name)
    check_image(x, name)
    check_finite(x, name)


def _takes_cond(model) -> bool:
    fn = model.forward if isinstance(model, torch.nn.Module) else model  # Module.__call__ takes **kwargs
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature: let the call decide
        return True
    return "cond" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def control_loss(model, images: torch.Tensor, cond: torch.Tensor, generator=None, schedule: Schedule | None = None):
    """The ε-loss of a spatially controlled UNet, ``E_{t,ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t, c)‖²`` (Eq. 14 of Ho
    et al. 2020) on pairs of clean images ``x_0`` and condition maps ``c``.

    The objective of ControlNet (Zhang et al. 2023, with the text prompt left out) and of T2I-Adapter
    (Mou et al. 2023): the frozen UNet's weights get no gradient, only the control branch learns. The UNet's class
    label is the null class (the model is used unconditionally), as in
    :func:`diffu.inverse.two_stage.controlnet_loss`.

    Args:
        model: ``model(x_t, t, cond=c) -> ε̂``: a :class:`~diffu.nn.ControlledUNet`, a :class:`~diffu.nn.AdaptedUNet`
            (or any network taking ``cond``).
        images: clean images ``(N, C, H, W)`` in [-1, 1], finite.
        cond: the condition maps ``(N, C_cond, H', W')`` of the same batch (e.g. :func:`label_map_condition`,
            :func:`edge_map`), finite; the model checks their channels and size.
        generator: a ``torch.Generator`` on ``images``' device (timesteps and noise), or None.
        schedule: the frozen UNet's training schedule (default: the linear 1000-step schedule of the shipped UNets).

    Returns:
        The scalar loss (a 0-d tensor with a gradient for the control branch).

    Raises:
        ValueError: ``images`` or ``cond`` not a finite float image batch, batches that differ, a ``cond`` the model
            refuses (its message names ``cond``).
        TypeError: a ``model`` that is not callable or does not take ``cond``; a bad ``generator`` or ``schedule``.

    Notes:
        Official code: ``lllyasviel/ControlNet``, ``cldm/cldm.py`` (the ``LatentDiffusion`` loss with the hint as
        ``c_concat``); ``TencentARC/T2I-Adapter`` (branch ``SD``), ``train_seg.py`` (uniform timesteps; the paper's
        cubic timestep sampling, used in the SD-XL scripts, is left out). ControlNet replaces half of the text
        prompts by empty ones in training; our UNet is always given the null label.

    Used in chapter §6.1.
    """
    check_callable("model", model)
    if not _takes_cond(model):
        raise TypeError(f"model must take the condition map as model(x_t, t, cond=c) (a ControlledUNet or "
                        f"AdaptedUNet), got {type(model).__name__}")  # fmt: skip
    _check_images(images, "images")
    _check_images(cond, "cond")
    if cond.shape[0] != images.shape[0]:
        raise ValueError(f"cond must have batch size {images.shape[0]} (images'), got shape {tuple(cond.shape)}")
    if schedule is not None:
        check_schedule(schedule)
    return diffusion_loss(model, schedule or linear_schedule(), images, generator, model_kwargs={"cond": cond})


# ----------------------------------------------------------------------------------------------------------------
# Condition maps
# ----------------------------------------------------------------------------------------------------------------


def label_map_condition(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A label map as a condition image: ``c_k = 2·[labels = k] − 1``, one channel per class, on the [-1, 1] scale.

    The [-1, 1] scale is the images' (convention 1) and that of the masks the §6.2 segmenters diffuse
    (:func:`diffu.segmentation.masks.one_hot`, which this is), so a map enters a control branch as an image does.
    ControlNet and T2I-Adapter feed their hints (colour-coded segmentation maps, edges) on [0, 1]; the first
    convolution of a control branch is affine in its input, so either scale can be learned equally well — it is a
    convention, not a modelling choice.

    Args:
        labels: integer label maps ``(N, H, W)`` in ``[0, num_classes)`` (e.g. background/CSF/GM/WM tissue labels,
            or a binary foreground mask as integers).
        num_classes: ``K`` ≥ 2, background included.
        dtype: a floating dtype of the result (on ``labels``' device).

    Returns:
        ``(N, K, H, W)`` with values in {−1, +1}, exactly one +1 per pixel.

    Raises:
        ValueError: ``labels`` not an integer ``(N, H, W)`` tensor in range, ``num_classes`` < 2, ``dtype`` not
            floating.

    Used in chapter §6.1 (label → image synthesis).
    """
    return one_hot(labels, num_classes, dtype)


def _sobel(images: torch.Tensor) -> torch.Tensor:
    """``|∇I| / 8`` per channel with the 3×3 Sobel kernels and replicate padding (no edges at the border)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device, dtype=images.dtype)
    c = images.shape[1]
    weight = torch.stack([kx, kx.T])[:, None].repeat(c, 1, 1, 1)  # (2C, 1, 3, 3): ∂x and ∂y per channel
    g = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), weight, groups=c)  # (N, 2C, H, W)
    return torch.sqrt(g[:, 0::2] ** 2 + g[:, 1::2] ** 2) / 8


def edge_map(images: torch.Tensor, threshold: float = EDGE_THRESHOLD) -> torch.Tensor:
    """Sobel edges of images as a condition map: ``+1`` where ``|∇I| / 8 > threshold``, ``−1`` elsewhere.

    ``∇I = (S_x * I, S_y * I)`` with the Sobel kernels ``S_x = [1, 2, 1]ᵀ [−1, 0, 1]`` and ``S_y = S_xᵀ`` (Sobel &
    Feldman 1968), on replicate-padded images (the border makes no edges); dividing by 8 maps a full-range step
    (−1 → +1) to 1. Multi-channel images use the largest magnitude over the channels. Deterministic.

    Args:
        images: float images ``(N, C, H, W)`` in [-1, 1], finite.
        threshold: the edge threshold on the normalised magnitude, in (0, √2) (√2 is the largest magnitude a
            [-1, 1] image can have); default :data:`EDGE_THRESHOLD`.

    Returns:
        ``(N, 1, H, W)`` of ``images``' dtype and device, values in {−1, +1}.

    Raises:
        ValueError: ``images`` not a finite float image batch (integer data points to
            :func:`diffu.data.from_uint8`), ``threshold`` out of range.

    Notes:
        ControlNet's edge hints come from Canny (``annotator/canny``, OpenCV): Sobel gradients, then non-maximum
        suppression and hysteresis thresholds. Those two steps are left out: at 28×28 a Sobel edge two pixels wide
        is the natural width, and one threshold keeps the map a simple function of the image.

    Used in chapter §6.1.
    """
    _check_images(images, "images")
    check_real("threshold", threshold, 0, 2**0.5, low_open=True, high_open=True)
    m = _sobel(images).amax(1, keepdim=True)  # (N, 1, H, W)
    return torch.where(m > threshold, 1.0, -1.0).to(images.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Fidelity: does the generated image follow the requested map?
# ----------------------------------------------------------------------------------------------------------------


def _label_maps(masks, n_hw: tuple, name: str) -> torch.Tensor:
    """Binary masks ``(N, H, W)`` or ``(N, 1, H, W)``, bool or integer 0/1, of the given ``(N, H, W)`` → int64."""
    check_tensor(masks, name)
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if tuple(masks.shape) != n_hw:
        raise ValueError(f"{name} must have shape {n_hw} or {(n_hw[0], 1, *n_hw[1:])} (the generated images' N, "
                         f"H, W), got {tuple(masks.shape)}")  # fmt: skip
    if masks.is_floating_point() or masks.is_complex():
        raise ValueError(f"{name} must be a bool or integer 0/1 mask, got {masks.dtype}")
    if masks.numel() and ((masks != 0) & (masks != 1)).any():
        raise ValueError(f"{name} must be binary (0 or 1), got values in [{int(masks.min())}, {int(masks.max())}]")
    return masks.long()


def mask_fidelity(generated: torch.Tensor, target_masks: torch.Tensor, *, level: float = FOREGROUND_LEVEL):
    """Dice and IoU between the foreground of generated images and the requested masks: does a mask-controlled
    model put the item where it was asked to?

    The foreground is ``generated > level`` (:data:`FOREGROUND_LEVEL` for Fashion-MNIST: the rule of
    :func:`diffu.data.textured.foreground_masks`, which makes the masks of the data, applied without its [-1, 1]
    range check, since samples are not clamped); ``Dice = 2|P ∩ T| / (|P| + |T|)``, ``IoU = |P ∩ T| / |P ∪ T|``
    (:func:`diffu.metrics.dice`, :func:`diffu.metrics.iou`). A generator that reproduces the masked images exactly
    scores 1.

    Args:
        generated: generated images ``(N, 1, H, W)``, finite (samples are not clamped: values beyond [-1, 1] are
            fine).
        target_masks: the requested masks, ``(N, H, W)`` or ``(N, 1, H, W)``, bool or integer 0/1 (1 = item).
        level: the foreground threshold on the [-1, 1] scale, a finite number in (−1, 1).

    Returns:
        :class:`Fidelity` with ``dice`` and ``iou`` ``(N,)`` float32 on ``generated``'s device; **NaN** for an image
        whose foreground and mask are both empty (:func:`diffu.metrics.dice`'s convention).

    Raises:
        ValueError: ``generated`` not a finite one-channel float image batch, masks of another shape, not binary or
            floating, on another device; ``level`` out of range.

    Used in chapter §6.1 (fidelity of ControlNet and T2I-Adapter over training steps).
    """
    _check_images(generated, "generated")
    if generated.shape[1] != 1:
        raise ValueError(f"generated must have one channel (N, 1, H, W), got shape {tuple(generated.shape)}")
    check_real("level", level, -1, 1, low_open=True, high_open=True)
    n, _, h, w = generated.shape
    target = _label_maps(target_masks, (n, h, w), "target_masks")
    if target.device != generated.device:
        raise ValueError(f"target_masks must be on generated's device {generated.device}, got {target.device}")
    pred = (generated[:, 0] > level).long()  # (N, H, W): 1 = item
    return Fidelity(dice(pred, target, 2)[:, 0], iou(pred, target, 2)[:, 0])


def label_fidelity(
    generated: torch.Tensor,
    target_labels: torch.Tensor,
    segmenter: Callable,
    num_classes: int,
    *,
    ignore_background: bool = True,
):
    """Per-class Dice and IoU between a segmenter's labels of generated images and the label maps they were
    generated from (label → image synthesis: does the generated anatomy follow the map?).

    ``P = argmax_k segmenter(generated)_k`` is compared with the requested map ``T`` by :func:`diffu.metrics.dice`
    and :func:`diffu.metrics.iou`. With a perfect generator (``generated`` = the images the maps label) this is the
    segmenter's own score on real images, the ceiling of the measure; a perfect segmenter and generator give 1.

    Args:
        generated: generated images ``(N, C, H, W)``, finite.
        target_labels: the requested label maps ``(N, H, W)``, integers in ``[0, num_classes)``.
        segmenter: ``segmenter(images) -> (N, num_classes, H, W)`` class scores (logits or probabilities), called
            once under ``torch.no_grad()`` (put a network in eval mode first).
        num_classes: the number of classes, background included (≥ 2).
        ignore_background: leave class 0 out (as :func:`diffu.metrics.dice`).

    Returns:
        :class:`Fidelity` with ``dice`` and ``iou`` ``(N, K)`` float32 (``K = num_classes − 1`` without the
        background), NaN where a class is in neither map; ``.dice.nanmean(0)`` is each class's mean.

    Raises:
        ValueError: ``generated`` not a finite float image batch; labels not integer ``(N, H, W)`` in range or of
            another size; the segmenter's output not finite ``(N, num_classes, H, W)`` scores.
        TypeError: ``segmenter`` not callable, ``ignore_background`` not a bool.

    Used in chapter §6.1 (anatomy-conditioned synthesis of brain MRI slices).
    """
    _check_images(generated, "generated")
    check_callable("segmenter", segmenter)
    check_int("num_classes", num_classes, 2)
    check_tensor(target_labels, "target_labels", ndim=3)
    check_labels(target_labels, num_classes, name="target_labels")
    n, _, h, w = generated.shape
    if tuple(target_labels.shape) != (n, h, w):
        raise ValueError(f"target_labels must have shape {(n, h, w)} (the generated images' N, H, W), got "
                         f"{tuple(target_labels.shape)}")  # fmt: skip
    with torch.no_grad():
        scores = segmenter(generated)
    want = (n, num_classes, h, w)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != want or not scores.is_floating_point():
        got = f"{tuple(scores.shape)} {scores.dtype}" if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"segmenter must return float class scores of shape {want} (N, num_classes, H, W), got "
                         f"{got}")  # fmt: skip
    check_finite(scores, "segmenter output")
    labels = scores.argmax(1).to(target_labels.device)  # (N, H, W)
    kw = dict(ignore_background=ignore_background)
    return Fidelity(dice(labels, target_labels, num_classes, **kw), iou(labels, target_labels, num_classes, **kw))


# ----------------------------------------------------------------------------------------------------------------
# Sudden convergence
# ----------------------------------------------------------------------------------------------------------------


def _curve(values, name: str, n: int | None = None) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        v = values
    elif isinstance(values, Sequence) and not isinstance(values, str):
        if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in values):
            raise ValueError(f"{name} must be a 1-D sequence or tensor of numbers, got {values!r:.80}")
        v = torch.tensor(values, dtype=torch.float64)
    else:
        raise ValueError(f"{name} must be a 1-D sequence or tensor of numbers, got {type(values).__name__}")
    if v.ndim != 1 or v.dtype == torch.bool or v.is_complex():
        raise ValueError(f"{name} must be a 1-D sequence or tensor of numbers, got shape {tuple(v.shape)} {v.dtype}")
    if n is not None and v.numel() != n:
        raise ValueError(f"{name} must have one value per step ({n}), got {v.numel()}")
    v = v.detach().to("cpu", torch.float64)
    check_finite(v, name)
    return v


def sudden_convergence(steps, scores, low: float = 0.3, high: float = 0.7, window: float = 0.1) -> Convergence:
    """Does a fidelity curve show ControlNet's "sudden convergence"? Sudden: the score rises from below ``low`` to
    above ``high`` within ``window`` of the run.

    Zhang et al. 2023 (ControlNet) report that the model does not learn the condition gradually but "suddenly" starts
    following it, at about 3k–7k steps (official ``docs/train.md``, "Sudden Converge Phenomenon"; the zero
    convolutions keep the frozen model's images meaningful until then). Made measurable:
    ``end`` is the first logged step whose score is above ``high``, ``start`` the last logged step before it whose
    score is below ``low``, and the curve converges suddenly when both exist and
    ``end − start ≤ window · (steps[−1] − steps[0])``. A curve that never gets above ``high``, or that is never below
    ``low`` before it does, is not sudden. The rise can only be timed to the logging interval: a curve logged less
    often than every ``window`` of the run says nothing about suddenness (any rise then spans one interval).

    Args:
        steps: the training steps of the evaluations, 1-D (a list or tensor), strictly increasing, at least 2.
        scores: the fidelity at those steps (e.g. the mean :func:`mask_fidelity` Dice), finite, same length.
        low, high: the thresholds, finite with ``low < high`` (defaults: Dice 0.3 and 0.7, the issue's reading).
        window: the longest rise that counts as sudden, as a fraction of the run, in (0, 1].

    Returns:
        :class:`Convergence` ``(sudden, start, end)`` (``start``/``end`` as floats, or None when they do not exist).

    Raises:
        ValueError: curves that are not 1-D finite numbers, of different lengths, shorter than 2 or with steps not
            strictly increasing; bad ``low``/``high``/``window``.

    Used in chapter §6.1.
    """
    s = _curve(steps, "steps")
    if s.numel() < 2:
        raise ValueError(f"steps must hold at least 2 evaluations, got {s.numel()}")
    if not bool((s[1:] > s[:-1]).all()):
        raise ValueError("steps must be strictly increasing")
    v = _curve(scores, "scores", s.numel())
    check_real("low", low)
    check_real("high", high)
    if not low < high:
        raise ValueError(f"low must be below high, got low={low!r} and high={high!r}")
    check_real("window", window, 0, 1, low_open=True)
    above = torch.nonzero(v > high).flatten()
    if above.numel() == 0:
        return Convergence(False, None, None)
    j = int(above[0])
    below = torch.nonzero(v[:j] < low).flatten()
    end = float(s[j])
    if below.numel() == 0:
        return Convergence(False, None, end)
    start = float(s[int(below[-1])])
    return Convergence(end - start <= window * float(s[-1] - s[0]), start, end)
