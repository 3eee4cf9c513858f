"""Uncertainty from posterior samples (chapter §5.1.3, after McCann, Chung, Ye & Klasky 2023).

A posterior sampler (DPS, DDS, a predictor–corrector with data consistency) run ``K`` times on one measurement gives
``K`` plausible reconstructions ``(K, N, C, H, W)``. Their mean is the estimate and their spread the uncertainty —
*if* the sampler is calibrated. This module measures that:

* :func:`posterior_moments` — the per-pixel mean and standard deviation of the samples;
* :func:`error_correlation` — does the std point at the actual error ``|mean − truth|``? (Pearson or Spearman,
  pooled over pixels);
* :func:`posterior_interval`, :func:`interval_coverage`, :func:`coverage_curve` — the fraction of pixels whose true
  value lies in the central ``level`` interval (per-pixel empirical quantiles, or ``mean ± z·std``), as a function
  of ``K``;
* :func:`expected_coverage` — what a *perfectly calibrated* sampler gives with ``K`` samples: the finite-sample
  reference the measured curve is compared with (the quantile interval of ``K`` samples covers only
  ``level·(K − 1)/(K + 1)`` on average, 0.74 for ``K = 10`` at 90 %);
* :func:`average_ranks` — ranks with ties averaged (Spearman's correlation, the AUROC of
  :func:`diffu.medical.anomaly.pixel_auroc`).

§5.1.3 uses the quantile interval (``method="quantile"``) with ``K = 21, 41, 101`` samples: at those ``K`` its reference
:func:`expected_coverage` is exact for any continuous posterior, not only a Gaussian one (between them it is a linear
approximation, 1.5 points off for a Gaussian at ``K = 10``); ``method="gaussian"`` is the ``mean ± 1.645·std``
reading, whose Student-t reference is exact at every ``K`` but only for Gaussian posteriors.

**Bad input** raises ``ValueError``/``TypeError`` naming the argument: samples and truths must be finite
floating-point tensors of matching shapes, regions binary, levels in (0, 1). float16 and bfloat16 samples are
accepted: the intervals are computed in float32 (``torch.quantile`` takes float32/float64 only), and
:func:`posterior_interval` rounds them back to the samples' dtype.
"""

from __future__ import annotations

from statistics import NormalDist

import torch

from ..checks import check_choice, check_finite, check_floating, check_int, check_real

__all__ = [
    "COVERAGE_METHODS",
    "average_ranks",
    "coverage_curve",
    "error_correlation",
    "expected_coverage",
    "interval_coverage",
    "posterior_interval",
    "posterior_moments",
]

#: The two readings of a central interval from samples, per-pixel empirical quantiles, or ``mean ± z·std``.
COVERAGE_METHODS = ("quantile", "gaussian")

#: The correlations :func:`error_correlation` computes.
CORRELATIONS = ("pearson", "spearman")


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """The ranks ``1 … n`` of the entries of a 1-D tensor, tied values sharing the average of their ranks (the
    "average" method of ``scipy.stats.rankdata``).

    Args:
        x: a 1-D finite floating-point tensor (scores, uncertainties: an infinite one is a bug upstream).

    Returns:
        float64 ranks of ``x``'s shape and device.

    Raises:
        ValueError: ``x`` not a 1-D floating-point tensor, or with NaN (whose rank is undefined) or infinity.
    """
    check_floating(x, "x")
    if x.ndim != 1:
        raise ValueError(f"x must be a 1-D tensor, got shape {tuple(x.shape)}")
    check_finite(x, "x")
    s, order = torch.sort(x, stable=True)
    _, counts = torch.unique_consecutive(s, return_counts=True)
    ends = counts.cumsum(0).double()  # the 1-based rank of each tie group's last member
    mean_rank = ends - (counts.double() - 1) / 2  # the average of ranks end − c + 1 … end
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = mean_rank.repeat_interleave(counts)
    return ranks


def _check_samples(samples, min_k: int = 1) -> None:
    """``samples`` is a finite floating ``(K, N, C, H, W)`` tensor with ``K >= min_k``."""
    check_floating(samples, "samples")
    if samples.ndim != 5:
        raise ValueError(f"samples must have shape (K, N, C, H, W) (K posterior samples of an image batch), got "
                         f"{tuple(samples.shape)}")  # fmt: skip
    if samples.shape[0] < min_k:
        raise ValueError(f"samples must hold at least {min_k} posterior samples (dimension 0), got {samples.shape[0]}")
    check_finite(samples, "samples")


def _check_truth(samples, truth) -> None:
    """``samples`` as :func:`_check_samples`, and ``truth`` a finite floating tensor of one sample's shape."""
    _check_samples(samples)
    check_floating(truth, "truth")
    if truth.shape != samples.shape[1:]:
        raise ValueError(f"truth must have the shape of one sample {tuple(samples.shape[1:])}, got "
                         f"{tuple(truth.shape)}")  # fmt: skip
    check_finite(truth, "truth")


def _check_region(region, shape) -> torch.Tensor | None:
    """``region`` is None or a binary tensor of ``shape``; returned as bool."""
    if region is None:
        return None
    if not isinstance(region, torch.Tensor) or region.shape != shape:
        got = tuple(region.shape) if isinstance(region, torch.Tensor) else type(region).__name__
        raise ValueError(f"region must be a tensor of shape {tuple(shape)}, got {got}")
    if region.dtype != torch.bool and (region.is_complex() or ((region != 0) & (region != 1)).any()):
        raise ValueError("region must be binary (bool, or 0/1 values)")
    if not bool(region.any()):
        raise ValueError("region must select at least one pixel, got none")
    return region.bool()


def _check_level(level) -> None:
    check_real("level", level, 0, 1, low_open=True, high_open=True)


def posterior_moments(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-pixel posterior mean and standard deviation of ``K`` samples (§5.1.3).

    ``mean = (1/K) Σ_k x_k`` — the estimate of the posterior mean (MMSE) — and
    ``std = √(Σ_k (x_k − mean)² / (K − 1))`` (Bessel's correction), the uncertainty map of McCann et al. 2023.

    Args:
        samples: ``(K, N, C, H, W)``, finite, ``K >= 2``.

    Returns:
        ``(mean, std)``, each of one sample's shape, in ``samples``'s dtype and device.

    Raises:
        ValueError: ``samples`` not a finite floating-point ``(K, N, C, H, W)`` tensor with ``K >= 2``.
    """
    _check_samples(samples, min_k=2)
    return samples.mean(0), samples.std(0, correction=1)


def error_correlation(
    std: torch.Tensor, error: torch.Tensor, *, method: str = "pearson", region: torch.Tensor | None = None
) -> float:
    """The correlation, pooled over pixels, between a predicted uncertainty and the actual error (§5.1.3).

    Pearson: ``Σ (s − s̄)(e − ē) / √(Σ (s − s̄)² Σ (e − ē)²)``; Spearman: the same on :func:`average_ranks` (any
    monotone relation scores 1). With ``error = |mean − truth|`` and ``std`` from :func:`posterior_moments` this is
    §5.1.3's check that the uncertainty map is informative (it should point where the errors are).

    Args:
        std: the uncertainty map (any shape), finite floating point.
        error: the error map of ``std``'s shape, finite floating point.
        method: "pearson" or "spearman".
        region: None or a binary tensor of ``std``'s shape: only its pixels count (e.g. the brain).

    Returns:
        The correlation in [-1, 1], a Python float.

    Raises:
        ValueError: tensors that are not finite and floating point or not of one shape, an unknown ``method``, a
            region that is not binary or selects nothing, or a constant ``std`` or ``error`` in the region (the
            correlation is undefined).
    """
    for name, v in (("std", std), ("error", error)):
        check_floating(v, name)
        check_finite(v, name)
    if error.shape != std.shape:
        raise ValueError(f"error must have std's shape {tuple(std.shape)}, got {tuple(error.shape)}")
    check_choice("method", method, CORRELATIONS)
    sel = _check_region(region, std.shape)
    s, e = (std, error) if sel is None else (std[sel], error[sel])
    s, e = s.reshape(-1).double(), e.reshape(-1).double()
    if method == "spearman":
        s, e = average_ranks(s), average_ranks(e)
    s, e = s - s.mean(), e - e.mean()
    den = torch.sqrt((s * s).sum() * (e * e).sum())
    if float(den) == 0:
        raise ValueError("the correlation is undefined: std or error is constant over the region")
    return float((s * e).sum() / den)


def posterior_interval(
    samples: torch.Tensor, *, level: float = 0.9, method: str = "quantile"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-pixel central ``level`` interval ``(lo, hi)`` of ``K`` posterior samples (§5.1.3).

    "quantile": the empirical quantiles ``(1 − level)/2`` and ``(1 + level)/2`` of each pixel's samples
    (``torch.quantile``, linear interpolation between order statistics; ``K >= 1``); "gaussian":
    ``mean ± z·std`` with ``z = Φ⁻¹((1 + level)/2)`` (1.645 for 90 %) and the std of :func:`posterior_moments`
    (``K >= 2``).

    Args:
        samples: ``(K, N, C, H, W)``, finite.
        level: the interval's nominal probability in (0, 1).
        method: one of :data:`COVERAGE_METHODS`.

    Returns:
        ``(lo, hi)``, each of one sample's shape, in ``samples``'s dtype and device. float16 and bfloat16 samples
        are computed in float32 (``torch.quantile`` takes float32/float64 only) and the bounds rounded back.

    Raises:
        ValueError: ``samples`` not finite and floating point or with too few samples for ``method``; ``level`` not
            in (0, 1); an unknown ``method``.
    """
    lo, hi = _interval(samples, level, method)
    return lo.to(samples.dtype), hi.to(samples.dtype)


def _interval(samples, level, method) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`posterior_interval`'s checks and bounds, in float32 for float16/bfloat16 ``samples`` (the dtype
    ``torch.quantile`` needs, and a std that does not lose its digits), else in ``samples``'s dtype."""
    _check_level(level)
    check_choice("method", method, COVERAGE_METHODS)
    _check_samples(samples, min_k=2 if method == "gaussian" else 1)
    if samples.dtype in (torch.float16, torch.bfloat16):
        samples = samples.float()
    if method == "gaussian":
        mean, std = samples.mean(0), samples.std(0, correction=1)
        z = NormalDist().inv_cdf((1 + float(level)) / 2)
        return mean - z * std, mean + z * std
    q = torch.tensor([(1 - float(level)) / 2, (1 + float(level)) / 2], dtype=samples.dtype, device=samples.device)
    lo, hi = torch.quantile(samples, q, dim=0)
    return lo, hi


def interval_coverage(
    samples: torch.Tensor,
    truth: torch.Tensor,
    *,
    level: float = 0.9,
    method: str = "quantile",
    region: torch.Tensor | None = None,
) -> float:
    """The empirical coverage: the fraction of pixels whose true value lies in the central ``level`` interval of the
    samples (:func:`posterior_interval`, bounds included).

    A calibrated sampler covers :func:`expected_coverage` ``(K, level, method)`` on average (→ ``level`` as
    ``K → ∞``); fewer means over-confident (too narrow), more means under-confident. Pixels are pooled; with
    independent pixels the count of covered ones is binomial, which sets the spread of the estimate. float16 and
    bfloat16 samples are taken in float32 (the bounds are compared with ``truth`` unrounded).

    Args:
        samples: ``(K, N, C, H, W)`` posterior samples, finite.
        truth: the true image of one sample's shape, finite.
        level: the nominal probability in (0, 1).
        method: one of :data:`COVERAGE_METHODS`.
        region: None or a binary tensor of ``truth``'s shape: only its pixels count.

    Returns:
        The coverage in [0, 1], a Python float.

    Raises:
        ValueError: bad ``samples``/``truth`` (shapes, NaN, too few samples), ``level``, ``method`` or ``region``.
    """
    _check_truth(samples, truth)
    sel = _check_region(region, truth.shape)
    lo, hi = _interval(samples, level, method)  # float32 bounds for float16/bfloat16 samples, not rounded back
    inside = (truth >= lo) & (truth <= hi)
    return float(inside.double().mean() if sel is None else inside[sel].double().mean())


def coverage_curve(
    samples: torch.Tensor,
    truth: torch.Tensor,
    ks=None,
    *,
    level: float = 0.9,
    method: str = "quantile",
    region: torch.Tensor | None = None,
) -> dict[int, float]:
    """The empirical coverage (:func:`interval_coverage`) of the first ``k`` samples, for each ``k`` in ``ks``.

    Args:
        samples: ``(K, N, C, H, W)`` posterior samples, finite.
        truth: the true image of one sample's shape.
        ks: increasing sample counts in ``[1, K]`` (``[2, K]`` for "gaussian"); default the powers of two below
            ``K`` and ``K`` itself (from 2 for "gaussian").
        level, method, region: as :func:`interval_coverage`.

    Returns:
        ``{k: coverage}`` in the order of ``ks`` (plot it against :func:`expected_coverage`).

    Raises:
        ValueError: ``ks`` not a strictly increasing sequence of integers in range, and the errors of
            :func:`interval_coverage`.
    """
    _check_truth(samples, truth)
    check_choice("method", method, COVERAGE_METHODS)
    K, low = samples.shape[0], 2 if method == "gaussian" else 1
    if ks is None:
        ks = [2**i for i in range(K.bit_length()) if low <= 2**i < K] + [K]
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        raise ValueError(f"ks must be a sequence of sample counts, got {ks!r:.60}")
    ks = list(ks)
    for k in ks:
        check_int("each entry of ks", k, low, K)
    if not ks or any(b <= a for a, b in zip(ks, ks[1:])):
        raise ValueError(f"ks must be a non-empty, strictly increasing sequence, got {ks!r:.80}")
    return {int(k): interval_coverage(samples[:k], truth, level=level, method=method, region=region) for k in ks}


def expected_coverage(k: int, *, level: float = 0.9, method: str = "quantile") -> float:
    """The average coverage of a *calibrated* sampler with ``k`` samples: the truth and the samples are independent
    draws from the same (posterior) distribution, i.e. exchangeable.

    * "quantile": the truth falls below the ``j``-th smallest of ``k`` exchangeable draws with probability
      ``j/(k + 1)``, so the interval between the order statistics at (0-based) positions ``q (k − 1)`` of
      :func:`posterior_interval` covers ``level · (k − 1)/(k + 1)``. Exact for any continuous distribution when both
      positions ``(1 ∓ level)/2 · (k − 1)`` are integers (e.g. ``k = 21, 41, 101`` at 90 %), a close approximation
      otherwise (``torch.quantile`` interpolates linearly between order statistics).
    * "gaussian" (exact for a Gaussian posterior): ``(truth − mean)/(std √(1 + 1/k))`` follows Student's t with
      ``k − 1`` degrees of freedom, so ``mean ± z·std`` covers ``2 F_{t,k−1}(z / √(1 + 1/k)) − 1``.

    Args:
        k: the number of samples, an integer ≥ 1 (≥ 2 for "gaussian").
        level: the nominal probability in (0, 1).
        method: one of :data:`COVERAGE_METHODS`.

    Returns:
        The expected coverage, a Python float below ``level`` (→ ``level`` as ``k → ∞``).

    Raises:
        ValueError: ``k``, ``level`` or ``method`` out of range.
    """
    _check_level(level)
    check_choice("method", method, COVERAGE_METHODS)
    check_int("k", k, 2 if method == "gaussian" else 1)
    if method == "quantile":
        return float(level) * (k - 1) / (k + 1)
    from scipy.stats import t as student_t  # imported here: scipy.stats takes a noticeable time to import

    z = NormalDist().inv_cdf((1 + float(level)) / 2)
    return float(2 * student_t.cdf(z / (1 + 1 / k) ** 0.5, k - 1) - 1)
