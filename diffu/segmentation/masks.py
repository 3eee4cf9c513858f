"""Mask encodings for diffusion segmentation (chapter §6.2), and the loss of the plain segmenter they are compared with.

A label map ``(N, H, W)`` with ``K`` classes becomes a continuous ``(N, C, H, W)`` state on the [-1, 1] scale that a
Gaussian diffusion can noise: :func:`one_hot` (``C = K``) or :func:`analog_bits` (``C = ⌈log₂ K⌉``, Chen, Zhang &
Hinton 2023, "Analog Bits", ICLR); :func:`from_one_hot` and :func:`from_analog_bits` invert them exactly, and
:func:`encode_masks` / :func:`decode_masks` dispatch on ``encoding``. :func:`segmentation_loss` (cross-entropy +
soft Dice) trains the UNet baseline.

**Bad input** raises ``ValueError``/``TypeError`` naming the argument (:mod:`diffu.checks`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..checks import check_choice, check_finite, check_image, check_int, check_labels, check_rank, check_real

__all__ = [
    "ENCODINGS",
    "analog_bits",
    "decode_masks",
    "encode_masks",
    "encoding_channels",
    "from_analog_bits",
    "from_one_hot",
    "one_hot",
    "segmentation_loss",
]

#: The mask encodings, ``"onehot"`` (K channels) and ``"bits"`` (⌈log₂ K⌉ analog bits), of :func:`encode_masks`.
ENCODINGS = ("onehot", "bits")


# ----------------------------------------------------------------------------------------------------------------
# Mask encodings
# ----------------------------------------------------------------------------------------------------------------


def _check_label_map(labels, num_classes: int, name: str = "labels") -> None:
    check_int("num_classes", num_classes, 2)
    check_rank(labels, 3, name, "(N, H, W) label maps")
    check_labels(labels, num_classes, name=name)


def encoding_channels(num_classes: int, encoding: str = "onehot") -> int:
    """The channels of a mask encoding: ``num_classes`` for ``"onehot"``, ``⌈log₂ num_classes⌉`` for ``"bits"``.

    Raises:
        ValueError: ``num_classes`` not an integer >= 2, an unknown ``encoding``.
    """
    check_int("num_classes", num_classes, 2)
    check_choice("encoding", encoding, ENCODINGS)
    return num_classes if encoding == "onehot" else math.ceil(math.log2(num_classes))


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Label maps ``(N, H, W)`` → one-hot masks ``(N, K, H, W)`` on the [-1, 1] scale (+1 for the class, −1 elsewhere).

    Args:
        labels: integer label maps in ``[0, num_classes)``.
        num_classes: ``K`` >= 2, background included.
        dtype: a floating dtype of the result (on ``labels``' device).

    Raises:
        ValueError: ``labels`` not an integer ``(N, H, W)`` tensor in range, ``num_classes`` < 2, ``dtype`` not
            floating.

    Used in chapter §6.2; :func:`from_one_hot` inverts it exactly.
    """
    _check_label_map(labels, num_classes)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r:.60}")
    return (F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).to(dtype) * 2 - 1).contiguous()  # (N, K, H, W)


def from_one_hot(x: torch.Tensor) -> torch.Tensor:
    """One-hot masks or class scores ``(N, K, H, W)`` → label maps ``(N, H, W)`` int64: the argmax over the channels
    (ties to the lower class). Exact inverse of :func:`one_hot`.

    Raises:
        ValueError: ``x`` not a finite floating ``(N, K, H, W)`` tensor with ``K`` >= 2.
    """
    check_image(x, "x")
    check_finite(x, "x")
    if x.shape[1] < 2:
        raise ValueError(f"x must have at least 2 class channels, got shape {tuple(x.shape)}")
    return x.argmax(1)


def _codebook(num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """``(K, B)`` ±1 codewords, most significant bit first (Chen et al.'s ``int2bits``)."""
    bits = encoding_channels(num_classes, "bits")
    k = torch.arange(num_classes, device=like.device)
    shifts = torch.arange(bits - 1, -1, -1, device=like.device)
    return ((k[:, None] >> shifts[None, :]) & 1).to(like.dtype) * 2 - 1


def analog_bits(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Label maps ``(N, H, W)`` → analog bits ``(N, B, H, W)``, ``B = ⌈log₂ K⌉``: the binary code of each label,
    most significant bit first, each bit mapped {0, 1} → {−1, +1} (Chen, Zhang & Hinton 2023, Eq. 1 and §2).

    Arguments and errors as :func:`one_hot`. Used in chapter §6.2; :func:`from_analog_bits` inverts it exactly.
    """
    _check_label_map(labels, num_classes)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r:.60}")
    code = _codebook(num_classes, torch.empty(0, dtype=dtype, device=labels.device))
    return code[labels.long()].permute(0, 3, 1, 2).contiguous()  # (N, B, H, W)


def from_analog_bits(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Analog bits ``(N, B, H, W)`` → label maps ``(N, H, W)`` int64: the nearest valid codeword.

    Chen et al. threshold each bit at 0 (their ``bits2int``). When ``K`` is not a power of two some thresholded codes
    name no class (3 classes: code 3); we pick the class whose ±1 codeword has the largest inner product with ``x``
    (equivalently the nearest in Euclidean distance, all codewords having one norm). This *is* the thresholded code
    whenever that code is a class, because ``sign(x)`` maximises the inner product over all codes; ties go to the
    lower class. Exact inverse of :func:`analog_bits`.

    Raises:
        ValueError: ``x`` not a finite floating ``(N, B, H, W)`` tensor with ``B = ⌈log₂ num_classes⌉``.
    """
    check_image(x, "x")
    check_finite(x, "x")
    bits = encoding_channels(num_classes, "bits")
    if x.shape[1] != bits:
        raise ValueError(f"x must have ⌈log2 num_classes⌉ = {bits} bit channels, got shape {tuple(x.shape)}")
    code = _codebook(num_classes, x)
    return torch.einsum("nbhw,kb->nkhw", x, code).argmax(1)


def encode_masks(labels: torch.Tensor, num_classes: int, encoding: str = "onehot", dtype=torch.float32):
    """:func:`one_hot` or :func:`analog_bits` by ``encoding`` (one of :data:`ENCODINGS`)."""
    check_choice("encoding", encoding, ENCODINGS)
    return (one_hot if encoding == "onehot" else analog_bits)(labels, num_classes, dtype)


def decode_masks(x: torch.Tensor, num_classes: int, encoding: str = "onehot") -> torch.Tensor:
    """:func:`from_one_hot` or :func:`from_analog_bits` by ``encoding``; for ``"onehot"`` ``x`` must have
    ``num_classes`` channels (``ValueError`` naming ``x`` otherwise)."""
    check_choice("encoding", encoding, ENCODINGS)
    if encoding == "bits":
        return from_analog_bits(x, num_classes)
    check_int("num_classes", num_classes, 2)
    check_image(x, "x")
    if x.shape[1] != num_classes:
        raise ValueError(f"x must have num_classes = {num_classes} channels, got shape {tuple(x.shape)}")
    return from_one_hot(x)


# ----------------------------------------------------------------------------------------------------------------
# Baseline: a plain segmenter
# ----------------------------------------------------------------------------------------------------------------


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, *, dice_weight: float = 1.0, eps: float = 1.0):
    """Cross-entropy + soft Dice, the standard loss of a UNet segmenter (Milletari et al. 2016; nnU-Net's default).

    ``L = CE(logits, labels) + dice_weight · (1 − mean_c (2 Σ p_c y_c + eps) / (Σ p_c + Σ y_c + eps))`` with
    ``p = softmax(logits)`` and ``y`` the one-hot labels; the Dice sums run over the batch and the pixels of each
    class (a "batch Dice"), the mean over all classes, background included.

    Args:
        logits: ``(N, K, H, W)`` floating class scores.
        labels: ``(N, H, W)`` integer label maps in ``[0, K)``, on the logits' device.
        dice_weight: the weight >= 0 of the Dice term (0: cross-entropy alone).
        eps: smoothing > 0 of the soft Dice (keeps an absent class's term at 1 − eps/eps = 0 loss).

    Returns:
        A 0-d differentiable tensor. NaN in ``logits`` propagates to a NaN loss (no pass over the data per step).

    Raises:
        ValueError: logits not a floating ``(N, K, H, W)`` tensor with K >= 2, labels not matching it or out of
            range, bad ``dice_weight`` or ``eps``.

    Used in chapter §6.2 (the baseline the diffusion segmenters must beat).
    """
    check_image(logits, "logits")
    if logits.shape[1] < 2:
        raise ValueError(f"logits must have at least 2 class channels, got shape {tuple(logits.shape)}")
    _check_label_map(labels, logits.shape[1])
    if labels.shape != logits.shape[:1] + logits.shape[2:] or labels.device != logits.device:
        raise ValueError(f"labels must be (N, H, W) = {(logits.shape[0], *logits.shape[2:])} on {logits.device}, "
                         f"got {tuple(labels.shape)} on {labels.device}")  # fmt: skip
    check_real("dice_weight", dice_weight, 0)
    check_real("eps", eps, 0)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    ce = F.cross_entropy(logits, labels.long())
    p = logits.softmax(1)
    y = F.one_hot(labels.long(), logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    inter, total = (p * y).sum((0, 2, 3)), p.sum((0, 2, 3)) + y.sum((0, 2, 3))
    return ce + dice_weight * (1 - ((2 * inter + eps) / (total + eps)).mean())
