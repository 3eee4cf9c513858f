"""Image and sample-quality metrics: PSNR, SSIM, MMD for 2D samples and FD-FMNIST (chapters §2.1, §2.2, §3, §4).

FD-FMNIST is the Fréchet distance (Heusel et al. 2017) between Gaussian fits of the 128-d penultimate features of a
small Fashion-MNIST classifier that this project trains and ships (``diffu.pretrained`` "fmnist_classifier").
It is our stated, offline stand-in for FID: numbers are comparable with each other, not with published FIDs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

__all__ = [
    "FDFMNIST",
    "fd_fmnist",
    "frechet_distance",
    "gaussian_stats",
    "mmd",
    "psnr",
    "ssim",
    "within_class_diversity",
]


def _check_images(x, y):
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(range² / MSE)`` in dB; ``(N,)``.

    ``data_range`` is the span of valid values: 2 for diffu's [-1, 1] images, 1 for [0, 1], 255 for uint8.
    Identical images give ``inf``.
    """
    _check_images(x, y)
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).to(x.dtype if x.is_floating_point() else torch.float32)


def _gaussian_window(size, sigma, device, dtype):
    g = torch.exp(-((torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, win_size: int = 11, sigma: float = 1.5):
    """Structural similarity (Wang et al. 2004) per image, ``(N,)``: 11×11 Gaussian (σ = 1.5) local statistics (valid
    region only), K1 = 0.01, K2 = 0.03, averaged over channels and positions. Matches
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``
    (tested)."""
    _check_images(x, y)
    if win_size % 2 == 0 or win_size < 3 or win_size > min(x.shape[-2:]):
        raise ValueError(f"win_size must be odd, >= 3 and <= the image size, got {win_size}")
    x, y = x.double(), y.double()
    c = x.shape[1]
    w = _gaussian_window(win_size, sigma, x.device, x.dtype).expand(c, 1, win_size, win_size)

    def filt(z):
        return F.conv2d(z, w, groups=c)

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)) -> torch.Tensor:
    """Squared maximum mean discrepancy with a sum of Gaussian kernels (Gretton et al. 2012), unbiased estimate.

    For ``(N, D)`` and ``(M, D)`` samples; 0 in expectation when both come from the same distribution.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (N, D) and (M, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("x and y need at least 2 samples each")
    x, y = x.double(), y.double()

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h**2)) for h in bandwidths)

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    exx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    eyy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return (exx + eyy - 2 * kxy.mean()).float()


def gaussian_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``(N, D)`` features, in float64 numpy."""
    f = features.detach().double().cpu().numpy()
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm(m):
    """scipy's matrix square root without its accuracy printout (SciPy ≥ 1.18 dropped the ``disp`` argument)."""
    try:
        return linalg.sqrtm(m, disp=False)[0]
    except TypeError:
        return linalg.sqrtm(m)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``‖μ1 - μ2‖² + tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^{1/2})`` (Dowson & Landau 1982; FID's formula)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    s1, s2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError("the two Gaussians must have the same dimension")
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # nearly singular product: regularise as pytorch-fid does
        off = np.eye(len(s1)) * 1e-6
        covmean = _sqrtm((s1 + off) @ (s2 + off))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def within_class_diversity(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean Euclidean distance between the features of two different samples of the same class, averaged over
    the classes present (each with ≥ 2 samples): the diversity measure of the guidance trade-off (chapter §2.3)."""
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features must be (N, D) and labels (N,), got {tuple(features.shape)}, {tuple(labels.shape)}")
    per_class = []
    for c in labels.unique():
        f = features[labels == c].double()
        if len(f) >= 2:
            d = torch.cdist(f, f)
            per_class.append(float(d.sum() / (len(f) * (len(f) - 1))))
    if not per_class:
        raise ValueError("need at least one class with 2 or more samples")
    return sum(per_class) / len(per_class)


class FDFMNIST:
    """FD-FMNIST: Fréchet distance in the feature space of the shipped Fashion-MNIST classifier.

    ``fd = FDFMNIST(); fd(samples)`` compares ``(N, 1, 28, 28)`` samples in [-1, 1] with the reference statistics
    of the shipped test split (2 000 images) or of any ``reference`` images given.
    """

    def __init__(self, reference: torch.Tensor | None = None, device=None, batch_size: int = 500):
        from .data import fashion_mnist
        from .pretrained import load

        self.net = load("fmnist_classifier", device=device)
        self.batch_size = batch_size
        ref = fashion_mnist("test")[0] if reference is None else reference
        self.ref_stats = gaussian_stats(self.features(ref))

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        dev = next(self.net.parameters()).device
        return torch.cat([self.net.features(b.to(dev, torch.float32)).cpu() for b in x.split(self.batch_size)])

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        dev = next(self.net.parameters()).device
        pred = torch.cat([self.net(b.to(dev, torch.float32)).argmax(1).cpu() for b in x.split(self.batch_size)])
        return float((pred == y.cpu()).float().mean())

    def diversity(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """:func:`within_class_diversity` of ``x`` (grouped by the intended labels ``y``) in this feature space."""
        return within_class_diversity(self.features(x.clamp(-1, 1)), y.cpu())

    def __call__(self, samples: torch.Tensor) -> float:
        if samples.ndim != 4 or samples.shape[1:] != (1, 28, 28):
            raise ValueError(f"samples must have shape (N, 1, 28, 28), got {tuple(samples.shape)}")
        if len(samples) < 2:
            raise ValueError("need at least 2 samples")
        return frechet_distance(*gaussian_stats(self.features(samples.clamp(-1, 1))), *self.ref_stats)


def fd_fmnist(samples: torch.Tensor, reference: torch.Tensor | None = None) -> float:
    """One-shot FD-FMNIST of ``samples`` against the shipped test split (or ``reference``)."""
    return FDFMNIST(reference)(samples)
