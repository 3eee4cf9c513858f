"""Uncertainty from posterior samples (diffu.medical.uncertainty): ranks and correlations against scipy/numpy, and
calibration on an exact Gaussian posterior — samples from the true posterior cover what exchangeability predicts
(within the binomial spread over independent pixels), a too-narrow sampler under-covers."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from diffu.medical.uncertainty import (
    average_ranks,
    coverage_curve,
    error_correlation,
    expected_coverage,
    interval_coverage,
    posterior_interval,
    posterior_moments,
)

D = 20_000  # independent pixels: the number of covered ones is binomial


def gaussian_posterior(k, seed=0, width=1.0):
    """A denoising problem with a closed-form posterior, per pixel: prior x ~ N(0.1, 0.5²), y = x + 0.3 n, so
    x | y ~ N(m, v) with m = 0.1 + τ²/(τ² + σ²)(y − 0.1), v = τ²σ²/(τ² + σ²). Returns the truth x, and ``k``
    samples of x | y with their std scaled by ``width`` (1: the exact posterior sampler)."""
    g = torch.Generator().manual_seed(seed)
    tau, sig = 0.5, 0.3
    x = 0.1 + tau * torch.randn(1, 1, 100, D // 100, generator=g, dtype=torch.float64)
    y = x + sig * torch.randn(x.shape, generator=g, dtype=torch.float64)
    m = 0.1 + tau**2 / (tau**2 + sig**2) * (y - 0.1)
    sd = math.sqrt(tau**2 * sig**2 / (tau**2 + sig**2))
    return x, m + width * sd * torch.randn(k, *x.shape, generator=g, dtype=torch.float64)


def _binomial_sd(p):
    return math.sqrt(p * (1 - p) / D)


def test_average_ranks_match_scipy():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(200, generator=g) * 10).round().double()  # many ties
    np.testing.assert_array_equal(average_ranks(x).numpy(), rankdata(x.numpy()))
    assert average_ranks(torch.tensor([3.0, 1.0, 2.0])).tolist() == [3.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="x must be a 1-D tensor"):
        average_ranks(x.reshape(10, 20))
    with pytest.raises(ValueError, match="x must be finite"):
        average_ranks(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="x must be finite"):
        average_ranks(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        average_ranks(torch.tensor([1, 2]))


def test_posterior_moments():
    _, s = gaussian_posterior(5)
    mean, std = posterior_moments(s)
    assert torch.equal(mean, s.mean(0))
    np.testing.assert_allclose(std.numpy(), np.std(s.numpy(), axis=0, ddof=1), rtol=1e-12)
    assert mean.dtype == torch.float64 and mean.shape == s.shape[1:]
    with pytest.raises(ValueError, match="at least 2 posterior samples"):
        posterior_moments(s[:1])
    with pytest.raises(ValueError, match="samples must be finite"):
        posterior_moments(s.masked_fill(s > 1, float("inf")))
    with pytest.raises(ValueError, match=r"samples must have shape \(K, N, C, H, W\)"):
        posterior_moments(s[:, 0])


def test_error_correlation_matches_numpy_and_scipy():
    g = torch.Generator().manual_seed(0)
    std = torch.rand(2, 1, 10, 10, generator=g, dtype=torch.float64)
    err = (std * 2 + 0.3 * torch.rand(std.shape, generator=g, dtype=torch.float64)).round(decimals=1)  # ties
    want = np.corrcoef(std.flatten().numpy(), err.flatten().numpy())[0, 1]
    assert error_correlation(std, err) == pytest.approx(want, abs=1e-12)
    assert error_correlation(std, err, method="spearman") == pytest.approx(
        spearmanr(std.flatten().numpy(), err.flatten().numpy()).statistic, abs=1e-12
    )
    assert error_correlation(std, std**3, method="spearman") == pytest.approx(1.0)  # any monotone relation
    region = std > 0.5
    want_r = np.corrcoef(std[region].numpy(), err[region].numpy())[0, 1]
    assert error_correlation(std, err, region=region) == pytest.approx(want_r, abs=1e-12)
    with pytest.raises(ValueError, match="correlation is undefined"):
        error_correlation(std, torch.ones_like(std))
    with pytest.raises(ValueError, match="method must be one of"):
        error_correlation(std, err, method="kendall")
    with pytest.raises(ValueError, match="error must have std's shape"):
        error_correlation(std, err[:1])
    with pytest.raises(ValueError, match="region must select"):
        error_correlation(std, err, region=torch.zeros_like(region))


def test_posterior_std_points_at_the_error_of_an_exact_posterior():
    """With a posterior std s ~ U(0.05, 0.55) that varies over the pixels, the std of 16 exact samples follows the
    error |mean − truth| = √(17/16) s |Z|. The population Pearson correlation is Var(s) E[R] E|Z| /
    √(Var(sR) Var(s|Z|)) = 0.458 (R = the sample std's ratio to s, E[R] ≈ 0.983), measured 0.456; its sampling
    spread over 20 000 pixels is (1 − ρ²)/√N ≈ 0.006, so 0.4 is 10σ below. A sampler whose spread ignores s has
    correlation 0 (measured 0.005; 4/√N = 0.028)."""
    g = torch.Generator().manual_seed(1)
    s = 0.05 + 0.5 * torch.rand(1, 1, 100, D // 100, generator=g, dtype=torch.float64)  # posterior std per pixel
    truth = s * torch.randn(s.shape, generator=g, dtype=torch.float64)
    samples = s * torch.randn(16, *s.shape, generator=g, dtype=torch.float64)
    mean, std = posterior_moments(samples)
    assert error_correlation(std, (mean - truth).abs()) > 0.4
    blind = 0.3 * torch.randn(16, *s.shape, generator=g, dtype=torch.float64) + mean
    _, std_blind = posterior_moments(blind)
    assert abs(error_correlation(std_blind, (mean - truth).abs())) < 4 / math.sqrt(D)


def test_posterior_interval():
    _, s = gaussian_posterior(8)
    lo, hi = posterior_interval(s, method="gaussian")
    mean, std = posterior_moments(s)
    torch.testing.assert_close(hi - mean, 1.6448536269514722 * std)
    torch.testing.assert_close(lo, 2 * mean - hi)
    lo, hi = posterior_interval(s, level=0.5)
    torch.testing.assert_close(lo, torch.quantile(s, 0.25, dim=0))
    torch.testing.assert_close(hi, torch.quantile(s, 0.75, dim=0))
    assert posterior_interval(s.float())[0].dtype == torch.float32
    with pytest.raises(ValueError, match="level must be"):
        posterior_interval(s, level=1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        posterior_interval(s, method="hpd")
    with pytest.raises(ValueError, match="at least 2 posterior samples"):
        posterior_interval(s[:1], method="gaussian")


def test_expected_coverage():
    assert expected_coverage(21) == pytest.approx(0.9 * 20 / 22)
    assert expected_coverage(1) == 0.0  # one sample: a zero-width interval
    assert expected_coverage(10_000) == pytest.approx(0.9, abs=2e-4)
    assert expected_coverage(10_000, method="gaussian") == pytest.approx(0.9, abs=2e-4)
    g2 = expected_coverage(2, method="gaussian")  # 2 F_t1(z/√1.5) − 1 = (2/π) arctan(z/√1.5) for 1 d.o.f.
    assert g2 == pytest.approx(2 / math.pi * math.atan(1.6448536269514722 / math.sqrt(1.5)), abs=1e-12)
    with pytest.raises(ValueError, match="k must be"):
        expected_coverage(1, method="gaussian")
    with pytest.raises(ValueError, match="level must be"):
        expected_coverage(5, level=0.0)


@pytest.mark.parametrize("k", [21, 41, 101])
def test_exact_posterior_samples_cover_as_exchangeability_predicts_quantile(k):
    """At these K both interpolation positions 0.05 (K − 1) and 0.95 (K − 1) are integers: the quantile interval is
    an order-statistic interval and its coverage exactly 0.9 (K − 1)/(K + 1) for any continuous posterior; the
    covered count over 20 000 independent pixels is binomial (measured +2.0σ, −0.0σ, −0.9σ)."""
    x, s = gaussian_posterior(k, seed=k)
    c, e = interval_coverage(s, x), expected_coverage(k)
    assert abs(c - e) < 4 * _binomial_sd(e)


@pytest.mark.parametrize("k", [2, 5, 10, 101])
def test_exact_posterior_samples_cover_as_student_t_predicts_gaussian(k):
    x, s = gaussian_posterior(k, seed=k + 1)
    c, e = interval_coverage(s, x, method="gaussian"), expected_coverage(k, method="gaussian")
    assert abs(c - e) < 4 * _binomial_sd(e)  # measured −2.1σ, +0.3σ, +0.6σ, +0.7σ


def test_quantile_reference_is_approximate_between_exact_counts():
    """At K = 10 the positions 0.45 and 8.55 are interpolated: for a Gaussian posterior the coverage is 0.751, not
    the linear reference 0.736 (measured; a 1.5-point bias, 4.8σ) — why §5.1.3 quotes K = 21, 41, 101."""
    x, s = gaussian_posterior(10, seed=3)
    c, e = interval_coverage(s, x), expected_coverage(10)
    assert 0.01 < c - e < 0.03


@pytest.mark.parametrize("method", ["quantile", "gaussian"])
def test_a_too_narrow_sampler_under_covers(method):
    """Samples with half the posterior's spread: the 90 % interval covers about P(|Z| < 1.645/2) ≈ 0.59 of the
    truths (measured 0.574 and 0.587 at K = 101), far below the calibrated 0.882 and 0.895."""
    x, s = gaussian_posterior(101, seed=7, width=0.5)
    c, e = interval_coverage(s, x, method=method), expected_coverage(101, method=method)
    assert c < e - 0.2


def test_coverage_curve(gen):
    x, s = gaussian_posterior(41, seed=9)
    curve = coverage_curve(s, x)
    assert list(curve) == [1, 2, 4, 8, 16, 32, 41]
    assert curve[1] == 0.0 and curve[41] == interval_coverage(s, x)
    assert curve[16] == interval_coverage(s[:16], x)
    vals = list(curve.values())
    # more samples, wider intervals: measured 0, 0.30, 0.55, 0.72, 0.80, 0.85, 0.85 (reference 0.9 (K − 1)/(K + 1))
    assert all(b > a for a, b in zip(vals, vals[1:]))
    g = coverage_curve(s, x, [2, 21], method="gaussian", level=0.8)
    assert list(g) == [2, 21] and abs(g[21] - expected_coverage(21, level=0.8, method="gaussian")) < 4 * _binomial_sd(
        0.78
    )
    region = x > 0
    assert coverage_curve(s, x, [41], region=region)[41] == interval_coverage(s, x, region=region)
    with pytest.raises(ValueError, match="each entry of ks"):
        coverage_curve(s, x, [1, 50])
    with pytest.raises(ValueError, match="strictly increasing"):
        coverage_curve(s, x, [4, 2])
    with pytest.raises(ValueError, match="each entry of ks"):
        coverage_curve(s, x, [1], method="gaussian")
    with pytest.raises(ValueError, match="ks must be a sequence"):
        coverage_curve(s, x, 5)
    with pytest.raises(ValueError, match="truth must have the shape of one sample"):
        coverage_curve(s, x[..., :5])
    with pytest.raises(ValueError, match="region must be a tensor"):
        interval_coverage(s, x, region=region[0])
    with pytest.raises(ValueError, match="truth must be a tensor"):
        interval_coverage(s, None)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["quantile", "gaussian"])
def test_half_precision_samples_are_computed_in_float32(dtype, method):
    """torch.quantile takes float32/float64 only: float16/bfloat16 samples are computed in float32, the bounds of
    posterior_interval rounded back to the samples' dtype, and the coverage compared with the float32 bounds."""
    x, s = gaussian_posterior(21, seed=3)
    x, s = x[..., :20], s[..., :20]  # 2000 pixels
    sh = s.to(dtype)
    lo, hi = posterior_interval(sh, method=method)
    lo32, hi32 = posterior_interval(sh.float(), method=method)
    assert lo.dtype == hi.dtype == dtype and lo.shape == x.shape
    torch.testing.assert_close(lo, lo32.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(hi, hi32.to(dtype), rtol=0, atol=0)
    assert interval_coverage(sh, x, method=method) == interval_coverage(sh.float(), x, method=method)
    curve = coverage_curve(sh, x.to(dtype), [5, 21], method=method)
    assert curve == coverage_curve(sh.float(), x.to(dtype).float(), [5, 21], method=method)


@pytest.mark.gpu
def test_uncertainty_follows_a_cuda_device():
    x, s = gaussian_posterior(21)
    lo, hi = posterior_interval(s.cuda())
    assert lo.is_cuda and interval_coverage(s.cuda(), x.cuda()) == pytest.approx(interval_coverage(s, x))
