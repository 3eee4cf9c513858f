"""Evaluating segmentation ensembles (chapter §6.2): Dice against the ensemble size, and how well the ensemble's
spread predicts its errors.

Wolleb et al. (2022) make two claims that these functions test: averaging more sampled masks raises the Dice
(:func:`ensemble_dice`), and the per-pixel variance over the ensemble marks where the segmentation is wrong
(:func:`uncertainty_error`: the correlation of variance and error, the AUROC of variance as an error detector, and
the error rate by variance bin — the "uncertainty–error curve").

**Bad input** raises ``ValueError``/``TypeError`` naming the argument (:mod:`diffu.checks`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..checks import check_finite, check_int, check_labels, check_rank, check_tensor
from ..metrics import dice
from .masks import decode_masks, encoding_channels

__all__ = ["UncertaintyError", "ensemble_dice", "uncertainty_error"]


def ensemble_dice(
    samples: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    encoding: str = "onehot",
    sizes=(1, 2, 5, 10),
    ignore_background: bool = True,
) -> dict[int, torch.Tensor]:
    """Dice of ensembles of ``m`` members, for each ``m`` in ``sizes``, from one set of ``E`` sampled masks.

    The ``E`` members are split into ``⌊E/m⌋`` disjoint groups of ``m`` (in order); each group's mean is decoded
    (argmax for one-hot, the nearest codeword for bits, as :func:`~diffu.segmentation.segment` decodes its mean)
    and scored with :func:`diffu.metrics.dice`; the result for ``m`` is the mean over the groups (NaN-skipping),
    so ``m = 1`` is the average single sample, not one lucky draw, and every size uses as many members as it can.

    Args:
        samples: ``(E, N, C, H, W)`` members (``Segmentation.samples``) on the encoding's scale, finite.
        target: ``(N, H, W)`` integer label maps in ``[0, num_classes)``.
        num_classes: ``K`` >= 2; encoding: the members' encoding (``"onehot"``, ``"bits"``).
        sizes: ensemble sizes, integers in ``[1, E]``.
        ignore_background: passed to :func:`diffu.metrics.dice`.

    Returns:
        ``{m: (N, K') Dice}`` for each size (``K' = K − 1`` without the background).

    Raises:
        ValueError: ``samples`` not a finite floating ``(E, N, C, H, W)`` tensor matching ``target`` and the
            encoding's channels; a size outside ``[1, E]``; bad ``target``/``num_classes``/``encoding``.

    Used in chapter §6.2 (Dice against the ensemble size).
    """
    check_int("num_classes", num_classes, 2)
    check_tensor(samples, "samples", floating=True)
    check_rank(samples, 5, "samples", "(E, N, C, H, W) ensemble members")
    check_finite(samples, "samples")
    check_rank(target, 3, "target", "(N, H, W) label maps")
    check_labels(target, num_classes, name="target")
    channels = encoding_channels(num_classes, encoding)
    e = samples.shape[0]
    if samples.shape[1] != target.shape[0] or samples.shape[2] != channels or samples.shape[3:] != target.shape[1:]:
        want = f"(E, {target.shape[0]}, {channels}, {', '.join(map(str, target.shape[1:]))})"
        raise ValueError(f"samples must be (E, N, C, H, W) = {want} for this target and encoding, got "
                         f"{tuple(samples.shape)}")  # fmt: skip
    if isinstance(sizes, (int, str)) or not len(sizes):
        raise ValueError(f"sizes must be a non-empty sequence of ensemble sizes, got {sizes!r:.60}")
    out = {}
    for m in sizes:
        check_int("sizes", m, 1, e)
        groups = samples[: e // m * m].reshape(e // m, m, *samples.shape[1:]).mean(1)  # (G, N, C, H, W)
        scores = torch.stack([dice(decode_masks(g, num_classes, encoding), target, num_classes,
                                   ignore_background=ignore_background) for g in groups])  # fmt: skip
        out[int(m)] = scores.nanmean(0)
    return out


class UncertaintyError(NamedTuple):
    """What :func:`uncertainty_error` returns.

    ``correlation``: Pearson's r between the per-pixel uncertainty and the error indicator (the point-biserial
    correlation); ``auroc``: the probability that an error pixel has a higher uncertainty than a correct one (ties
    count one half; 0.5 = no information, 1 = perfect ranking); ``image_correlation``: Spearman's ρ between each
    image's mean uncertainty and its error fraction; ``bin_uncertainty``, ``bin_error`` ``(bins,)``: the mean
    uncertainty and the error rate of the pixels in each equal-count uncertainty bin, low to high (the
    uncertainty–error curve); ``error_rate``: the overall fraction of wrong pixels.
    """

    correlation: float
    auroc: float
    image_correlation: float
    bin_uncertainty: torch.Tensor
    bin_error: torch.Tensor
    error_rate: float


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based; ties share the mean of their ranks), float64."""
    x = x.double()
    order = x.argsort(stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64, device=x.device)
    uniq, inverse = x.unique(return_inverse=True)
    total = torch.zeros(uniq.numel(), dtype=torch.float64, device=x.device).index_add_(0, inverse, ranks)
    count = torch.zeros(uniq.numel(), dtype=torch.float64, device=x.device).index_add_(0, inverse, torch.ones_like(x))
    return (total / count)[inverse]


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = (a.square().sum() * b.square().sum()).sqrt()
    return float((a * b).sum() / den) if den > 0 else float("nan")


def uncertainty_error(uncertainty: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, *, bins: int = 10):
    """How well a per-pixel uncertainty map predicts the segmentation's errors.

    With ``u`` the uncertainty (e.g. ``Segmentation.variance``) and ``e = [pred ≠ target]`` the error indicator over
    all ``N·H·W`` pixels: Pearson's ``r(u, e)``; the AUROC of ``u`` as a detector of ``e`` (Mann–Whitney ``U``
    from average ranks, ``(R_err − n_err(n_err + 1)/2) / (n_err · n_ok)``); Spearman's ρ over images between mean
    ``u`` and the error fraction; and the pixels sorted by ``u`` (stable: ties keep pixel order) cut into ``bins``
    equal-count bins, each bin's mean ``u`` and error rate.

    Args:
        uncertainty: ``(N, H, W)`` finite floating per-pixel uncertainty.
        pred, target: ``(N, H, W)`` integer label maps (the prediction and the truth), of one shape and device.
        bins: number of bins >= 1 (at most the number of pixels).

    Returns:
        An :class:`UncertaintyError`. ``correlation``/``image_correlation`` are NaN when either variable is
        constant; ``auroc`` is NaN when there are no errors or no correct pixels.

    Raises:
        ValueError: inputs of the wrong rank, dtype or shape, non-finite uncertainty, a bad ``bins``.

    Used in chapter §6.2 (does the ensemble variance mark the errors? Wolleb et al. 2022, Fig. 4).
    """
    check_tensor(uncertainty, "uncertainty")
    check_rank(uncertainty, 3, "uncertainty", "(N, H, W) per-pixel uncertainty")
    check_finite(uncertainty, "uncertainty")
    if not uncertainty.is_floating_point():
        raise ValueError(f"uncertainty must be a floating tensor, got {uncertainty.dtype}")
    for name, x in (("pred", pred), ("target", target)):
        check_tensor(x, name)
        if x.shape != uncertainty.shape or x.is_floating_point() or x.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer (N, H, W) label map of uncertainty's shape "
                             f"{tuple(uncertainty.shape)}, got {x.dtype} {tuple(x.shape)}")  # fmt: skip
        if x.device != uncertainty.device:
            raise ValueError(f"{name} must be on uncertainty's device {uncertainty.device}, got {x.device}")
    check_int("bins", bins, 1, uncertainty.numel())
    u, err = uncertainty.reshape(-1).double(), (pred != target).reshape(-1).double()
    n_err = float(err.sum())
    n_ok = err.numel() - n_err
    auroc = float("nan")
    if n_err > 0 and n_ok > 0:
        auroc = float((_ranks(u)[err > 0].sum() - n_err * (n_err + 1) / 2) / (n_err * n_ok))
    per_image_u = uncertainty.double().mean((1, 2))
    per_image_e = (pred != target).double().mean((1, 2))
    image_rho = _pearson(_ranks(per_image_u), _ranks(per_image_e))
    order = u.argsort(stable=True)
    chunks_u, chunks_e = u[order].tensor_split(bins), err[order].tensor_split(bins)
    bin_u = torch.stack([c.mean() for c in chunks_u]).to(uncertainty.dtype)
    bin_e = torch.stack([c.mean() for c in chunks_e]).to(uncertainty.dtype)
    return UncertaintyError(_pearson(u, err), auroc, image_rho, bin_u, bin_e, n_err / err.numel())
