"""diffu.medical.volumes (§5.1): concentration of the noise norm against the chi distribution's closed forms, the
slice inconsistency of a volume against hand computations and the Gaussian closed form 2σ/√π, and slice-wise
application of a 2D function. Every threshold is a computed sampling error (4 standard errors), not a measured value."""

import math
import sys

import numpy as np
import pytest
import torch

from diffu.medical.volumes import (
    apply_slicewise,
    chi_moments,
    noise_norm_stats,
    slice_inconsistency,
    to_slices,
    to_volume,
    z_roughness,
)

K = 4.0  # standard errors allowed: a fixed seed, and a false alarm has probability 6e-5 per comparison


def g(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------------
# chi moments and the concentration of ‖ε‖
# ----------------------------------------------------------------------------------------------------------------


def test_chi_moments_closed_forms_for_small_dimensions():
    m1, v1 = chi_moments(1)  # half-normal: E|ε| = √(2/π), Var = 1 − 2/π
    assert m1 == pytest.approx(math.sqrt(2 / math.pi), rel=1e-14) and v1 == pytest.approx(1 - 2 / math.pi, rel=1e-13)
    m2, v2 = chi_moments(2)  # Rayleigh: √(π/2), 2 − π/2
    assert m2 == pytest.approx(math.sqrt(math.pi / 2), rel=1e-14) and v2 == pytest.approx(2 - math.pi / 2, rel=1e-13)
    m3, _ = chi_moments(3)  # Maxwell: 2√(2/π)
    assert m3 == pytest.approx(2 * math.sqrt(2 / math.pi), rel=1e-14)


def test_chi_moments_series_matches_lgamma_and_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    for d in (63, 64, 65, 1000, 262144, 10**7):
        x = mpmath.mpf(d) / 2
        mean = mpmath.sqrt(2) * mpmath.gamma(x + mpmath.mpf(1) / 2) / mpmath.gamma(x)
        var = d - mean**2
        m, v = chi_moments(d)
        # the series' error is < 4e-14 relative on the mean at D = 64; Var = D − mean² multiplies it by ~4D
        assert m == pytest.approx(float(mean), rel=1e-13), d
        assert v == pytest.approx(float(var), rel=1e-10), d
    assert chi_moments(10**7)[1] == pytest.approx(0.5, abs=1e-7)  # Var‖ε‖ → 1/2: a shell of constant width


def _se_of_std(mu4, var, m):
    """Standard error of a sample standard deviation over m i.i.d. draws with variance var and 4th central moment
    mu4: Var(s²) = mu4/m − var²(m−3)/(m(m−1)) exactly, then the delta method s ≈ σ + (s² − σ²)/(2σ)."""
    var_s2 = mu4 / m - var**2 * (m - 3) / (m * (m - 1))
    return math.sqrt(max(var_s2, 0.0)) / (2 * math.sqrt(var))


def _chi_mu4(d):
    """4th central moment of ‖ε‖/√D from E r^(k+2) = (D + k) E r^k: μ4 = D(D+2) + m²(2D − 4) − 3m⁴, over D²."""
    m, _ = chi_moments(d)
    return (d * (d + 2) + m**2 * (2 * d - 4) - 3 * m**4) / d**2


@pytest.fixture(scope="module")
def stats():
    return noise_norm_stats((1, 2, 10, 100, 1000, 10000), 2000, generator=g(0))


def test_noise_norm_matches_the_chi_distribution_within_sampling_error(stats):
    for r in stats:
        d, n = r["dim"], r["n"]
        var = r["std_exact"] ** 2
        assert abs(r["mean"] - r["mean_exact"]) <= K * r["std_exact"] / math.sqrt(n), r
        assert abs(r["std"] - r["std_exact"]) <= K * _se_of_std(_chi_mu4(d), var, n), r
        p = r["within_exact"]
        assert abs(r["within"] - p) <= K * math.sqrt(p * (1 - p) / n) + 1 / n, r


def test_two_noise_draws_are_nearly_orthogonal(stats):
    for r in stats:
        d, pairs = r["dim"], r["n"] // 2
        s = r["cos_std_exact"]
        assert s == pytest.approx(1 / math.sqrt(d))
        assert abs(r["cos_mean"]) <= K * s / math.sqrt(pairs), r
        mu4 = 3 / (d * (d + 2))  # E u₁⁴ for a uniform unit vector in R^D; cos θ is distributed as u₁
        assert abs(r["cos_std"] - s) <= K * _se_of_std(mu4, s**2, pairs), r
        assert abs(r["angle_mean_deg"] - 90) <= K * r["angle_std_deg"] / math.sqrt(pairs) + 1e-9, r  # θ ↔ π − θ


def test_the_norm_concentrates_as_the_dimension_grows(stats):
    stds = [r["std"] for r in stats]
    assert all(a > b for a, b in zip(stds, stds[1:]))  # measured, each dimension 10× the last
    assert stats[0]["within_exact"] < 0.1 and stats[-1]["within_exact"] == 1.0  # exact: 0.097 at D = 1
    assert stats[-1]["within"] == 1.0 and stats[-1]["angle_std_deg"] < 1.0  # measured 0.57° at D = 10⁴ (≈ 180/(π√D))


def test_outside_probability_is_the_two_chi_square_tails():
    """``outside_exact`` adds the tails directly: it equals 1 − within where that is representable, and stays
    accurate where 1 − within rounds to 0 (scipy's chi-square gives 2.6e-19 at D = 64², rel = 0.1)."""
    from scipy.stats import chi2

    for d in (1, 10, 100, 4096):
        r = noise_norm_stats(d, 2, generator=g(1))[0]
        ref = chi2.cdf(0.81 * d, d) + chi2.sf(1.21 * d, d)
        assert r["outside_exact"] == pytest.approx(ref, rel=1e-9, abs=1e-300)
        if d <= 100:
            assert r["outside_exact"] == pytest.approx(1 - r["within_exact"], rel=1e-9)
    assert 1 - r["within_exact"] == 0.0 and r["outside_exact"] == pytest.approx(2.6e-19, rel=0.05)


def test_noise_norm_stats_is_deterministic_and_chunks_large_dimensions():
    # 2.2·10⁶ > 2²¹: two rows per chunk, and n = 3 leaves a last chunk of one row (no pair in it)
    a = noise_norm_stats([5, 2_200_000], 3, generator=g(3))
    torch.testing.assert_close(a, noise_norm_stats([5, 2_200_000], 3, generator=g(3)), rtol=0, atol=0, equal_nan=True)
    assert a[0]["mean"] != noise_norm_stats([5], 3, generator=g(4))[0]["mean"]
    assert abs(a[1]["mean"] - 1) < K * a[1]["std_exact"] and a[1]["std_exact"] < 5e-4
    assert math.isnan(a[1]["cos_std"]) and abs(a[1]["cos_mean"]) < K * a[1]["cos_std_exact"]  # one pair


def test_noise_norm_stats_in_float32_and_for_one_dimension():
    (r,) = noise_norm_stats(np.int64(4096), 400, generator=g(1), dtype=torch.float32)
    assert r["dim"] == 4096 and abs(r["mean"] - r["mean_exact"]) <= K * r["std_exact"] / math.sqrt(400)
    assert math.isnan(noise_norm_stats(3, 2, generator=g(1))[0]["cos_std"])  # one pair: no spread to measure


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(dims=[]), ValueError, "dims must be a non-empty"),
        (dict(dims=[4, 0]), ValueError, r"each of dims must be an integer in \[1, "),
        (dict(dims=[2.5]), ValueError, "each of dims"),
        (dict(dims="12"), ValueError, "dims must be"),
        (dict(dims=True), ValueError, "dims must be"),
        (dict(dims=[2**27 + 1]), ValueError, r"each of dims must be an integer in \[1, 134217728\]"),
        (dict(dims=[4], n=1), ValueError, "n must be an integer >= 2"),
        (dict(dims=[4], n=3.0), ValueError, "n must be"),
        (dict(dims=[4], generator=3), TypeError, "generator must be a torch.Generator"),
        (dict(dims=[4], dtype=torch.int64), ValueError, "dtype must be a floating-point"),
        (dict(dims=[4], rel=0), ValueError, "rel must be"),
        (dict(dims=[4], rel=float("nan")), ValueError, "rel must be"),
        (dict(dims=[4], rel="0.1"), TypeError, "rel must be"),
    ],
)
def test_noise_norm_stats_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        noise_norm_stats(**kwargs)


def test_chi_moments_errors():
    for bad in (0, 2.0, True, "3"):
        with pytest.raises(ValueError, match="dim must be an integer >= 1"):
            chi_moments(bad)
    for huge in (10**400, 10**5000):  # beyond a float: a ValueError naming dim, not float()'s OverflowError
        with pytest.raises(ValueError, match=r"dim must be at most 1\.798e\+308"):
            chi_moments(huge)


def test_chi_moments_of_huge_dimensions_do_not_overflow():
    """The series is evaluated in 1/x: no power of x overflows, up to the largest float (x⁶ did from D ≈ 5·10⁵¹)."""
    for d in (10**60, 10**200, int(sys.float_info.max)):
        m, v = chi_moments(d)
        assert m == pytest.approx(math.sqrt(d), rel=1e-15) and v == pytest.approx(0.5, rel=1e-15), d
    m, v = chi_moments(10**20)  # √D (1 − 1/(4D)) and 1/2 − 1/(8D): the first-order terms vanish in float
    assert m == 1e10 and v == 0.5


# ----------------------------------------------------------------------------------------------------------------
# differences along depth and the slice inconsistency
# ----------------------------------------------------------------------------------------------------------------


def _volume(seed=0, shape=(2, 1, 6, 5, 4), dtype=torch.float64):
    return torch.randn(shape, generator=g(seed), dtype=dtype)


def test_z_roughness_by_hand():
    x = torch.tensor([0.0, 1.0, 3.0, 2.0], dtype=torch.float64).reshape(1, 1, 4, 1, 1)
    assert z_roughness(x).tolist() == [4 / 3]  # mean of |1|, |2|, |−1|


def test_slice_inconsistency_by_hand():
    # one volume, 3 slices of 1×2 pixels; d = x − x*: slice differences (d₁ − d₀, d₂ − d₁) per pixel
    x_true = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]).reshape(1, 1, 3, 1, 2)
    x = torch.tensor([[0.5, 0.0], [1.0, 2.0], [2.0, 2.0]]).reshape(1, 1, 3, 1, 2)
    # d = [[0.5, 0], [0, 1], [0, 0]] → differences [[-0.5, 1], [0, -1]] → mean |·| = 2.5 / 4
    assert slice_inconsistency(x, x_true).tolist() == [0.625]


def test_slice_inconsistency_is_zero_for_the_truth_and_ignores_z_constant_offsets():
    x_true, x = _volume(0), _volume(1)
    assert slice_inconsistency(x_true, x_true).tolist() == [0.0, 0.0]
    base = slice_inconsistency(x, x_true)
    assert (base > 0).all()
    image = torch.randn(2, 1, 1, 5, 4, generator=g(2), dtype=torch.float64)  # one image repeated on every slice
    torch.testing.assert_close(slice_inconsistency(x + 0.7, x_true), base, rtol=0, atol=1e-14)
    torch.testing.assert_close(slice_inconsistency(x + image, x_true), base, rtol=0, atol=1e-14)
    torch.testing.assert_close(slice_inconsistency(x, x_true + image), base, rtol=0, atol=1e-14)
    torch.testing.assert_close(slice_inconsistency(x, x_true), z_roughness(x - x_true), rtol=0, atol=1e-15)


def test_slice_inconsistency_of_independent_noise_is_two_sigma_over_root_pi():
    """x = x* + σξ with ξ independent per slice and pixel: (d_{z+1} − d_z) ~ N(0, 2σ²), E|·| = 2σ/√π."""
    sigma = 0.1
    x_true = _volume(0, (2, 1, 16, 32, 32))
    x = x_true + sigma * torch.randn(x_true.shape, generator=g(1), dtype=torch.float64)
    m = 2 * 15 * 32 * 32  # terms averaged; each is correlated with at most its two z-neighbours: Var(mean) ≤ 3 Var/m
    se = math.sqrt(3 * 2 * sigma**2 * (1 - 2 / math.pi) / m)
    assert abs(float(slice_inconsistency(x, x_true).mean()) - 2 * sigma / math.sqrt(math.pi)) <= K * se


def test_slice_inconsistency_of_a_brightness_offset_per_slice():
    """The flicker of slice-by-slice reconstruction: one random offset σ b_z per slice (all pixels alike)."""
    sigma, n, depth = 0.05, 400, 16
    x_true = _volume(0, (n, 1, depth, 2, 2))
    offsets = sigma * torch.randn(n, 1, depth, 1, 1, generator=g(5), dtype=torch.float64)
    got = slice_inconsistency(x_true + offsets, x_true)
    se = math.sqrt(3 * 2 * sigma**2 * (1 - 2 / math.pi) / (n * (depth - 1)))  # as above, over n·(D − 1) offsets
    assert abs(float(got.mean()) - 2 * sigma / math.sqrt(math.pi)) <= K * se


def test_smoothing_along_z_lowers_roughness_but_not_the_inconsistency():
    """A ramp along z flattened to its mean: raw roughness drops to 0 (below the truth's), the inconsistency
    against the truth is the truth's whole z-structure — the reason it is defined against the truth."""
    x_true = (0.1 * torch.arange(8, dtype=torch.float64)).reshape(1, 1, 8, 1, 1).expand(1, 1, 8, 4, 4)
    flat = x_true.mean(2, keepdim=True).expand_as(x_true)
    assert z_roughness(flat).tolist() == [0.0]
    assert z_roughness(x_true).item() == pytest.approx(0.1, rel=1e-12)
    assert slice_inconsistency(flat, x_true).item() == pytest.approx(0.1, rel=1e-12)


def test_volume_metrics_keep_dtype_and_device():
    for dtype in (torch.float32, torch.float64):
        x, y = _volume(0, dtype=dtype), _volume(1, dtype=dtype)
        for out in (slice_inconsistency(x, y), z_roughness(x)):
            assert out.dtype == dtype and out.device == x.device


@pytest.mark.gpu
def test_volume_functions_on_cuda():
    x, y = _volume(0).cuda(), _volume(1).cuda()
    assert slice_inconsistency(x, y).device.type == "cuda"
    assert apply_slicewise(lambda s: s * 2, x, batch=3, progress=False).device.type == "cuda"
    gen = torch.Generator("cuda").manual_seed(0)
    assert noise_norm_stats(100, 10, generator=gen)[0]["dim"] == 100


def test_volume_metric_errors():
    x = _volume()
    with pytest.raises(ValueError, match=r"x must have 5 dimensions \(N, C, D, H, W\)"):
        slice_inconsistency(x[:, :, 0], x[:, :, 0])
    with pytest.raises(ValueError, match="x must have at least 2 depth slices"):
        slice_inconsistency(x[:, :, :1], x[:, :, :1])
    with pytest.raises(ValueError, match="x_true must be a tensor of x's shape"):
        slice_inconsistency(x, x[:1])
    with pytest.raises(ValueError, match="x_true must be finite"):
        slice_inconsistency(x, x.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        z_roughness(x.long())
    with pytest.raises(ValueError, match="x must be finite"):
        z_roughness(x / 0)
    with pytest.raises(ValueError, match="x must be a tensor"):
        z_roughness([[1.0]])
    with pytest.raises(ValueError, match="x_true must be a floating-point"):
        slice_inconsistency(x, x.int())


# ----------------------------------------------------------------------------------------------------------------
# slices and volumes
# ----------------------------------------------------------------------------------------------------------------


def test_to_slices_and_to_volume_are_inverse_and_ordered():
    v = _volume(0, (2, 3, 4, 5, 6))
    s = to_slices(v)
    assert s.shape == (8, 3, 5, 6)
    assert torch.equal(s[1 * 4 + 2], v[1, :, 2])  # slice z of volume n at n·D + z
    assert torch.equal(to_volume(s, 2), v)
    with pytest.raises(ValueError, match="n must divide the number of slices"):
        to_volume(s, 3)
    with pytest.raises(ValueError, match=r"slices must have 4 dimensions"):
        to_volume(v, 2)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        to_volume(s, 0)
    with pytest.raises(ValueError, match=r"volume must have 5 dimensions"):
        to_slices(s)


def test_apply_slicewise_applies_fn_to_every_slice_in_any_batch():
    v = _volume(0, (2, 1, 5, 8, 8))
    calls = []

    def pool(s):
        calls.append(s.shape[0])
        return torch.nn.functional.avg_pool2d(s, 2).repeat(1, 2, 1, 1)  # (B, 2, H/2, W/2)

    out = apply_slicewise(pool, v, batch=3, progress=False)
    assert out.shape == (2, 2, 5, 4, 4) and calls == [3, 3, 3, 1]
    for z in range(5):
        torch.testing.assert_close(out[:, :, z], pool(v[:, :, z]), rtol=0, atol=0)
    assert torch.equal(apply_slicewise(pool, v, progress=False), out)  # all 10 slices at once
    assert torch.equal(apply_slicewise(lambda s: s, v, batch=1, progress=False), v)


def test_apply_slicewise_with_a_stochastic_fn_is_deterministic_per_generator():
    v = _volume(0, (1, 1, 4, 4, 4), dtype=torch.float32)

    def run(seed):
        gen = g(seed)
        return apply_slicewise(lambda s: s + torch.randn(s.shape, generator=gen), v, batch=2, progress=False)

    assert torch.equal(run(7), run(7)) and not torch.equal(run(7), run(8))
    assert run(7).dtype == torch.float32


def test_apply_slicewise_runs_a_2d_unet_on_a_stack(unet_2d):
    v = _volume(0, (1, 1, 3, 8, 8), dtype=torch.float32)
    t = torch.full((1,), 10.0)
    out = apply_slicewise(lambda s: unet_2d(s, t.expand(s.shape[0])), v, batch=2, progress=False)
    torch.testing.assert_close(out[:, :, 1], unet_2d(v[:, :, 1], t), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def unet_2d():
    from diffu.nn.unet import UNet, UNetConfig

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8))
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.2)  # not the zero-initialised output layer: a non-trivial function
    return net.eval()


def test_apply_slicewise_errors():
    v = _volume()
    with pytest.raises(TypeError, match="fn must be callable"):
        apply_slicewise(3, v)
    with pytest.raises(ValueError, match=r"fn must return a tensor \(B, C', H', W'\) for a batch of B = 12"):
        apply_slicewise(lambda s: s[:1], v, progress=False)
    with pytest.raises(ValueError, match="fn must return a tensor"):
        apply_slicewise(lambda s: s.tolist(), v, progress=False)
    with pytest.raises(ValueError, match="fn must return slices of one shape"):
        apply_slicewise(lambda s: s[..., : s.shape[0]], v, batch=5, progress=False)
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        apply_slicewise(lambda s: s, v, batch=0)
    with pytest.raises(TypeError, match="progress must be True or False"):
        apply_slicewise(lambda s: s, v, progress="no")
    with pytest.raises(ValueError, match="volume must have 5 dimensions"):
        apply_slicewise(lambda s: s, v[0])
    with pytest.raises(ValueError, match="volume must hold at least one volume"):
        apply_slicewise(lambda s: s, v[:0])
    with pytest.raises(ValueError, match="volume must have at least one channel, row and column"):
        apply_slicewise(lambda s: s, v[..., :0])
