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


def test_fd_fmnist_orders_quality():
    """Real held-out images score far better than noise or blurred images; the classifier is accurate."""
    fd = FDFMNIST()
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


def test_fd_fmnist_one_shot_matches_class():
    from diffu.metrics import fd_fmnist

    x, _ = fashion_mnist("train", n=300)
    assert fd_fmnist(x) == pytest.approx(FDFMNIST()(x), rel=1e-6)


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
