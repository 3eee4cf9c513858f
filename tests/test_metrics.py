import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diffu.data import fashion_mnist
from diffu.metrics import FDFMNIST, frechet_distance, gaussian_stats, mmd, psnr, ssim


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    return x, (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def test_psnr_matches_skimage():
    x, y = _pair()
    ours = psnr(x, y)
    for i in range(3):
        ref = peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=2.0)
        assert float(ours[i]) == pytest.approx(ref, rel=1e-5)
    assert torch.isinf(psnr(x, x)).all()


def test_ssim_matches_skimage():
    x, y = _pair(1)
    ours = ssim(x, y)
    for i in range(3):
        ref = structural_similarity(x[i, 0].double().numpy(), y[i, 0].double().numpy(), data_range=2.0,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)  # fmt: skip
        assert float(ours[i]) == pytest.approx(ref, abs=1e-4)
    assert float(ssim(x, x).min()) == pytest.approx(1.0, abs=1e-6)


def test_image_metric_errors():
    x, y = _pair()
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, y[:2])
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, y, data_range=0)
    with pytest.raises(ValueError, match="win_size"):
        ssim(x, y, win_size=4)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        psnr(x[0], y[0])


def test_mmd_separates_distributions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    c = torch.randn(400, 2, generator=g) + torch.tensor([1.0, 0.0])
    same, diff = float(mmd(a, b)), float(mmd(a, c))
    assert abs(same) < 0.02 and diff > 10 * abs(same) and diff > 0.05
    with pytest.raises(ValueError, match="need at least 2"):
        mmd(a[:1], b)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        mmd(a, b[:, :1])


def test_frechet_distance_closed_form():
    """For diagonal covariances FD = ‖μ1 - μ2‖² + Σ (√s1 - √s2)²."""
    mu1, mu2 = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(5 + (1 - 3) ** 2 + (2 - 1) ** 2)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance(mu1, s1, np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(torch.zeros(1, 3))


def test_fd_fmnist_orders_quality(fd):
    """Real held-out images score far better than noise or blurred images; the classifier is accurate."""
    x, y = fashion_mnist("train", n=1000)
    real = fd(x)
    blurred = fd(torch.nn.functional.avg_pool2d(x, 3, 1, 1))
    noise = fd(torch.rand(1000, 1, 28, 28) * 2 - 1)
    assert real < 0.5 * blurred < noise
    assert fd.accuracy(*fashion_mnist("test")) > 0.85
    with pytest.raises(ValueError, match="shape"):
        fd(torch.zeros(4, 1, 8, 8))


def test_fd_fmnist_imports_no_training_code():
    """FD-FMNIST loads its classifier through the light weights registry (a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys; from diffu.metrics import FDFMNIST; FDFMNIST(); "
        "bad = [m for m in sys.modules if m in ('diffu.recipes', 'diffu.train') or m.startswith('diffu.inverse')]; "
        "assert 'diffu.pretrained' in sys.modules and not bad, bad"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_fd_fmnist_one_shot_matches_class(fd):
    from diffu.metrics import fd_fmnist

    x, _ = fashion_mnist("train", n=300)
    assert fd_fmnist(x) == pytest.approx(fd(x), rel=1e-6)


def test_within_class_diversity():
    from diffu.metrics import within_class_diversity

    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert within_class_diversity(f, y) == pytest.approx((5.0 + 0.0) / 2)
    assert within_class_diversity(2 * f, y) == pytest.approx(5.0)
    assert within_class_diversity(f[:3], y[:3]) == pytest.approx(5.0)  # a class with one sample is skipped
    with pytest.raises(ValueError, match="at least one class"):
        within_class_diversity(f[1:3], y[1:3])
    with pytest.raises(ValueError, match="features must be"):
        within_class_diversity(f, y[:3])


# ----------------------------------------------------------------------------------------------------------------
# argument checks (issue 18)
# ----------------------------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def fd():
    """FD-FMNIST against the shipped test split, built once for the module (it takes the 2 000 images' features)."""
    return FDFMNIST()


@pytest.mark.parametrize("sigma", [0, 0.0, -1.0, NAN, INF])
def test_regression_ssim_sigma_must_be_positive(sigma):
    """ssim(sigma=0) divided by zero in the window (NaN SSIM); now a named error."""
    x, y = _pair()
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        ssim(x, y, sigma=sigma)


@pytest.mark.parametrize("win_size", [4, 2, 1, 33, 101])
def test_regression_ssim_win_size_odd_and_within_the_image(win_size):
    x, y = _pair()  # 32 × 32
    with pytest.raises(ValueError, match="win_size must be"):
        ssim(x, y, win_size=win_size)
    with pytest.raises(ValueError, match="win_size must be an integer"):
        ssim(x, y, win_size=5.0)
    assert ssim(x, y, win_size=31).shape == (3,)  # the largest odd window that fits


@pytest.mark.parametrize("data_range", [0, -2.0, NAN, INF])
def test_regression_psnr_and_ssim_data_range_positive_and_finite(data_range):
    """psnr(data_range=nan) returned NaN without an error (``nan <= 0`` is false)."""
    x, y = _pair()
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match="data_range must be a finite number > 0"):
            metric(x, y, data_range=data_range)
    with pytest.raises(TypeError, match="data_range must be a finite number"):
        psnr(x, y, data_range="2")


def test_regression_psnr_ssim_refuse_integer_nan_and_0_255_images():
    x, y = _pair()
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor.*from_uint8"):
        psnr(((x + 1) * 127.5).to(torch.uint8), y)
    with pytest.raises(ValueError, match=r"y must be a floating-point tensor.*from_uint8"):
        ssim(x, ((y + 1) * 127.5).long())
    bad = x.clone()
    bad[0, 0, 0, 0] = NAN
    with pytest.raises(ValueError, match="x must be finite"):
        psnr(bad, y)
    with pytest.raises(ValueError, match="y must be finite"):
        ssim(x, bad.clone().fill_(INF))
    # 0–255 float images with the default data_range = 2: the scales disagree (SSIM came out near 1 before)
    x255, y255 = (x + 1) * 127.5, (y + 1) * 127.5
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match=r"data_range=2 does not fit the images.*from_uint8"):
            metric(x255, y255)
    # with their own data_range they are fine, and PSNR does not depend on the scale
    torch.testing.assert_close(psnr(x255, y255, data_range=255.0), psnr(x, y), rtol=1e-5, atol=1e-5)
    # an estimate may overshoot the range (an unclamped pseudo-inverse): only the reference must fit
    assert torch.isfinite(psnr(3 * x, y)).all() and torch.isfinite(psnr(y, 3 * x)).all()


def test_image_metric_argument_types():
    x, y = _pair()
    with pytest.raises(ValueError, match="x must be a tensor"):
        psnr(x.numpy(), y)
    with pytest.raises(ValueError, match="y must have 4 dimensions"):
        ssim(x, y[0])


@pytest.mark.parametrize("bandwidths", [(0,), (), (NAN,), (-1.0,), (0.5, INF), [0.1, 0.0]])
def test_regression_mmd_bandwidths_positive_and_non_empty(bandwidths):
    """mmd(bandwidths=(0,)) divided by zero (NaN); an empty tuple gave the integer 0 as every kernel."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, 2, generator=g), torch.randn(20, 2, generator=g)
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(a, b, bandwidths)


def test_mmd_checks_samples_and_accepts_one_bandwidth():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, 2, generator=g), torch.randn(20, 2, generator=g)
    assert torch.equal(mmd(a, b, 0.5), mmd(a, b, (0.5,)))
    with pytest.raises(TypeError, match="bandwidths"):
        mmd(a, b, None)
    with pytest.raises(TypeError, match=r"bandwidths\[0\]"):
        mmd(a, b, ["wide"])
    bad = a.clone()
    bad[3, 1] = NAN
    with pytest.raises(ValueError, match="x must be finite"):
        mmd(bad, b)
    with pytest.raises(ValueError, match="y must be a tensor"):
        mmd(a, b.tolist())


def test_regression_frechet_distance_refuses_nan_before_sqrtm():
    """NaN statistics reached scipy's sqrtm, which spent seconds on them and failed obscurely."""
    mu, s = np.zeros(3), np.eye(3)
    bad = s.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="sigma2 must be finite"):
        frechet_distance(mu, s, mu, bad)
    with pytest.raises(ValueError, match="mu1 must be finite"):
        frechet_distance(np.array([np.inf, 0, 0]), s, mu, s)
    with pytest.raises(ValueError, match="sigma1 and sigma2 must be"):
        frechet_distance(mu, np.eye(2), mu, np.eye(2))
    with pytest.raises(TypeError, match="mu1 must be a real array"):
        frechet_distance("zero", s, mu, s)
    with pytest.raises(ValueError, match="features must be finite"):
        gaussian_stats(torch.tensor([[0.0, 1.0], [NAN, 2.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="features must be a tensor"):
        gaussian_stats(np.zeros((4, 2)))
    # tensors and float64 arrays give the same number
    assert frechet_distance(torch.zeros(3), torch.eye(3), mu, 4 * s) == pytest.approx(3.0)


def test_within_class_diversity_checks_labels_and_features():
    from diffu.metrics import within_class_diversity

    f, y = torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([0, 0])
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        within_class_diversity(f, y.float())
    with pytest.raises(ValueError, match="features must be finite"):
        within_class_diversity(f.clone().fill_(NAN), y)
    with pytest.raises(ValueError, match="labels must be a tensor"):
        within_class_diversity(f, [0, 0])


def test_regression_fd_fmnist_nan_is_a_fast_named_error(fd):
    """Samples with NaN reached sqrtm (~11 s) and failed obscurely; now check_finite refuses them first."""
    x, _ = fashion_mnist("test", n=16)
    x = x.clone()
    x[3, 0, 5, 5] = NAN
    with pytest.raises(ValueError, match="samples must be finite, got 1 NaN"):
        fd(x)
    with pytest.raises(ValueError, match="x must be finite"):
        fd.features(x)
    with pytest.raises(ValueError, match="x must be finite"):
        fd.accuracy(x, torch.zeros(16, dtype=torch.long))
    with pytest.raises(ValueError, match="x must be finite"):
        fd.diversity(x, torch.zeros(16, dtype=torch.long))
    with pytest.raises(ValueError, match="reference must be finite"):
        FDFMNIST(reference=x)


def test_regression_fd_fmnist_refuses_0_255_images_instead_of_clamping(fd):
    """0–255 images were clamped to [-1, 1] (a white square) and scored; now they raise with the from_uint8 hint."""
    from diffu.data import from_uint8, to_uint8

    x, y = fashion_mnist("test", n=32)
    u8 = to_uint8(x)
    for bad in (u8, u8.long(), u8.float()):
        with pytest.raises(ValueError, match=r"samples must be .*from_uint8"):
            fd(bad)
        with pytest.raises(ValueError, match=r"x must be .*from_uint8"):
            fd.accuracy(bad, y)
        with pytest.raises(ValueError, match=r"x must be .*from_uint8"):
            fd.features(bad)
    with pytest.raises(ValueError, match=r"reference must be .*from_uint8"):
        FDFMNIST(reference=u8.float())
    assert fd(from_uint8(u8)) == pytest.approx(fd(x), rel=1e-3)  # the conversion the message points to


def test_fd_fmnist_clamps_sampler_overshoot(fd):
    """Overshoot (seen up to ±2 with DDIM-2 and past ±10 with predictor–corrector at 10 NFE) is judged as the
    clamped image, as before; only all-non-negative batches beyond 2 (0–255 data) are refused."""
    x, y = fashion_mnist("test", n=64)
    over = x * 3.0
    assert fd(over) == fd(over.clamp(-1, 1))
    assert fd.diversity(over, y) == fd.diversity(over.clamp(-1, 1), y)
    assert 0 <= fd.accuracy(over, y) <= 1  # accuracy reads the images as given, without clamping


def test_fd_fmnist_checks_labels_shapes_and_arguments(fd):
    x, y = fashion_mnist("test", n=8)
    with pytest.raises(ValueError, match=r"y must have shape \(8,\)"):
        fd.accuracy(x, y[:1])  # broadcast against the 8 predictions before
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 9\]"):
        fd.diversity(x, y + 10)
    with pytest.raises(ValueError, match="y must be an integer tensor"):
        fd.accuracy(x, y.float())
    with pytest.raises(ValueError, match="samples must hold at least 2 images"):
        fd(x[:1])
    with pytest.raises(ValueError, match="x must hold at least 1 image"):
        fd.features(x[:0])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        FDFMNIST(batch_size=0)
    with pytest.raises(TypeError, match="device must be"):
        FDFMNIST(device=3)
    with pytest.raises(ValueError, match="reference must hold at least 2 images"):
        FDFMNIST(reference=x[:1])


def test_regression_fd_fmnist_leaves_the_global_rng_alone():
    """Building the classifier (random initialisation before the shipped weights replace it) advanced torch's
    global RNG."""
    before = torch.random.get_rng_state()
    FDFMNIST(reference=fashion_mnist("test", n=16)[0])
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_regression_psnr_ssim_refuse_one_0_255_image(metric):
    """A 0–255 float estimate against a [-1, 1] reference passed the reference-span check (psnr gave -37 dB)."""
    x, y = _pair()
    x255 = (x + 1) * 127.5
    with pytest.raises(ValueError, match=r"x must be an image on data_range's scale.*0–255 data.*from_uint8"):
        metric(x255, y)
    with pytest.raises(ValueError, match=r"y must be an image on data_range's scale.*from_uint8"):
        metric(x, (y + 1) * 127.5)
    # an unclamped estimate overshoots on both sides of 0 and is still measured (chapter §3's A⁺y reaches ±6000)
    wild = 3000 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(metric(wild, y)).all()
    # values >= 0 within 8 × data_range: a [0, 1] estimate overshooting, measured
    assert torch.isfinite(metric((x + 1) / 2 * 1.5, (y + 1) / 2, data_range=1.0)).all()


def test_psnr_valid_results_unchanged_by_the_0_255_check():
    x, y = _pair()
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    assert torch.equal(psnr(x, y), (10 * torch.log10(2.0**2 / mse)).float())
    x255, y255 = (x + 1) * 127.5, (y + 1) * 127.5  # 0–255 images with their own data_range stay valid
    assert torch.isfinite(psnr(x255, y255, data_range=255.0)).all()


def test_regression_frechet_distance_refuses_indefinite_and_asymmetric_covariances():
    """-Σ gave 0.26 and Σ + an upper triangle 1.98: plausible numbers from matrices that are no covariance."""
    f = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    mu, s = gaussian_stats(f)
    mu2, s2 = gaussian_stats(f + 1)
    with pytest.raises(ValueError, match="sigma1 must be a positive semi-definite covariance matrix"):
        frechet_distance(mu, -s, mu2, s2)
    with pytest.raises(ValueError, match="sigma2 must be a positive semi-definite covariance matrix"):
        frechet_distance(mu, s, mu2, s2 - 2 * np.eye(4) * np.linalg.eigvalsh(s2).max())
    with pytest.raises(ValueError, match="sigma1 must be a symmetric covariance matrix"):
        frechet_distance(mu, s + np.triu(np.ones_like(s), 1), mu2, s2)
    with pytest.raises(ValueError, match="sigma2 must be a symmetric"):
        frechet_distance(mu, s, mu2, s2 + np.tril(np.ones_like(s2), -1))
    # rounding (float32 covariances) and singular covariances (N <= D samples) are accepted
    assert frechet_distance(mu, s.astype(np.float32), mu2, s2) >= 0
    mu3, s3 = gaussian_stats(f[:3])  # rank 2 of 4
    assert np.linalg.eigvalsh(s3).min() < 1e-12
    assert frechet_distance(mu3, s3, mu2, s2) >= 0


def test_regression_within_class_diversity_names_labels():
    """All-distinct labels raised "need at least one class …" without naming the argument."""
    from diffu.metrics import within_class_diversity

    f = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="labels must hold at least one class with 2 or more samples"):
        within_class_diversity(f, torch.arange(5))


def test_nearest_neighbour_matches_brute_force():
    from diffu.metrics import nearest_neighbour

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(50, 1, 4, 4, generator=g, dtype=torch.float64)
    x = torch.cat([ref[7:8] + 1e-3, torch.randn(9, 1, 4, 4, generator=g, dtype=torch.float64)])
    d, i = nearest_neighbour(x, ref, chunk=4)
    brute = ((x[:, None] - ref[None]) ** 2).flatten(2).mean(-1)  # (10, 50) mean squared error
    assert torch.equal(i, brute.argmin(1)) and torch.allclose(d, brute.min(1).values.sqrt())
    assert int(i[0]) == 7 and float(d[0]) == pytest.approx(1e-3, rel=1e-6)
    assert d.dtype == torch.float64
    with pytest.raises(ValueError, match="same shape"):
        nearest_neighbour(x, ref[:, :, :2])
    with pytest.raises(ValueError, match="chunk"):
        nearest_neighbour(x, ref, chunk=0)
