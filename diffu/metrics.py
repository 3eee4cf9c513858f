"""Image and sample-quality metrics: PSNR, SSIM, MMD for 2D samples and FD-FMNIST (chapters §2.1, §2.2, §3, §4);
Dice and IoU of segmentation label maps (chapter §6).

FD-FMNIST is the Fréchet distance (Heusel et al. 2017) between Gaussian fits of the 128-d penultimate features of a
small Fashion-MNIST classifier that this project trains and ships (``diffu.pretrained`` "fmnist_classifier").
It is our stated, offline stand-in for FID: numbers are comparable with each other, not with published FIDs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from .checks import (
    UINT8_HINT,
    check_bool,
    check_device,
    check_finite,
    check_floating,
    check_int,
    check_labels,
    check_not_0_255,
    check_rank,
    check_real,
    check_tensor,
)

__all__ = [
    "FDFMNIST",
    "dice",
    "fd_fmnist",
    "frechet_distance",
    "gaussian_stats",
    "iou",
    "mmd",
    "nearest_neighbour",
    "psnr",
    "ssim",
    "within_class_diversity",
]

#: How much wider than ``data_range`` the values of the reference image of :func:`psnr` / :func:`ssim` may spread
#: (5 %: rounding and interpolation overshoot); a wider spread means the scale and ``data_range`` disagree.
_RANGE_SLACK = 0.05
#: An image given to :func:`psnr` / :func:`ssim` with no value below 0 and values above this many times
#: ``data_range`` is 0–255 data given on the wrong scale, even when the other image fits ``data_range`` (an unclamped
#: estimate may overshoot far, but on both sides of 0: the noise a pseudo-inverse amplifies is signed).
_UINT8_FACTOR = 8.0


def _check_images(x, y, data_range) -> None:
    """``x`` and ``y`` are finite floating-point image batches of one shape ``(N, C, H, W)`` whose scale fits
    ``data_range``: neither looks like 0–255 data (no value below 0, some above 8 × ``data_range``), and the values
    of at least one of them (the reference) span at most ``data_range`` (+ 5 %)."""
    check_real("data_range", data_range, 0, low_open=True)
    for name, z in (("x", x), ("y", y)):
        check_rank(z, 4, name, "(N, C, H, W)")
        check_floating(z, name)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    check_finite(x, "x")
    check_finite(y, "y")
    if x.numel():
        sx, sy = float(x.max() - x.min()), float(y.max() - y.min())
        if min(sx, sy) > float(data_range) * (1 + _RANGE_SLACK):
            raise ValueError(
                f"data_range={float(data_range):g} does not fit the images: the values of x span {sx:.4g} and those "
                f"of y {sy:.4g}, but the reference image's must span at most data_range (diffu's [-1, 1] images: "
                f"data_range=2, the default; [0, 1] images: 1); {UINT8_HINT}"
            )
        for name, z in (("x", x), ("y", y)):
            check_not_0_255(z, name, _UINT8_FACTOR * float(data_range),
                            f"an image on data_range's scale (data_range={float(data_range):g}; diffu's [-1, 1] "
                            f"images: 2)")  # fmt: skip


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(range² / MSE)`` in dB; ``(N,)``. Identical images give ``inf``.

    Args:
        x, y: floating-point image batches ``(N, C, H, W)`` of one shape, finite; the estimate and the reference, in
            either order. The estimate may overshoot the range (an unclamped pseudo-inverse has a PSNR too).
        data_range: the span of valid values (> 0): 2 for diffu's [-1, 1] images, 1 for [0, 1]. The reference
            image's values must span at most this (+ 5 %), which catches 0–255 data given with the default; and
            an image with no value below 0 and some above 8 × ``data_range`` is refused as 0–255 data even when
            the other image fits (an unclamped estimate overshoots on both sides of 0). Two 0–255 images with
            ``data_range=255`` are accepted.

    Returns:
        ``(N,)`` PSNR in dB, in ``x``'s dtype.

    Raises:
        ValueError: integer, NaN or infinite images, 0–255 float images on the default scale (convert 0–255 data
            with :func:`diffu.data.from_uint8`), shapes that differ or are not ``(N, C, H, W)``, or a
            ``data_range`` that is not a finite number > 0 or that both images' values exceed.
    """
    _check_images(x, y, data_range)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).to(x.dtype)


def _gaussian_window(size, sigma, device, dtype):
    g = torch.exp(-((torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, win_size: int = 11, sigma: float = 1.5):
    """Structural similarity (Wang et al. 2004) per image, ``(N,)``: 11×11 Gaussian (σ = 1.5) local statistics (valid
    region only), K1 = 0.01, K2 = 0.03, averaged over channels and positions. Matches
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``
    (tested).

    Args:
        x, y: floating-point image batches ``(N, C, H, W)`` of one shape, finite (as in :func:`psnr`).
        data_range: the span of valid values (> 0; 2 for [-1, 1] images), checked against the images as in
            :func:`psnr`.
        win_size: the side of the Gaussian window: an odd integer >= 3, at most the image's height and width.
        sigma: the window's standard deviation (a finite number > 0).

    Returns:
        ``(N,)`` float32 SSIM.

    Raises:
        ValueError: as :func:`psnr`, and for a bad ``win_size`` or ``sigma``.
    """
    _check_images(x, y, data_range)
    check_int("win_size", win_size, 3)
    if win_size % 2 == 0 or win_size > min(x.shape[-2:]):
        raise ValueError(
            f"win_size must be odd, >= 3 and <= the image size {min(x.shape[-2:])} (H, W = "
            f"{tuple(x.shape[-2:])}), got {win_size}"
        )
    check_real("sigma", sigma, 0, low_open=True)
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


def _bandwidths(bandwidths) -> tuple:
    """``bandwidths`` as a non-empty tuple of finite numbers > 0 (a single number is one bandwidth)."""
    if isinstance(bandwidths, torch.Tensor):
        bandwidths = bandwidths.reshape(-1).tolist()
    elif isinstance(bandwidths, (int, float, np.integer, np.floating)) and not isinstance(bandwidths, bool):
        bandwidths = (bandwidths,)
    try:
        hs = tuple(bandwidths)
    except TypeError:
        raise TypeError(
            f"bandwidths must be a sequence of numbers > 0, got {type(bandwidths).__name__} {bandwidths!r:.60}"
        ) from None
    if not hs:
        raise ValueError("bandwidths must hold at least one kernel bandwidth, got none")
    for i, h in enumerate(hs):
        check_real(f"bandwidths[{i}]", h, 0, low_open=True)
    return hs


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)) -> torch.Tensor:
    """Squared maximum mean discrepancy with a sum of Gaussian kernels (Gretton et al. 2012), unbiased estimate.

    Args:
        x, y: ``(N, D)`` and ``(M, D)`` samples, N, M >= 2, finite; 0 in expectation when both come from the same
            distribution.
        bandwidths: the kernels' bandwidths h (``exp(-‖a - b‖² / 2h²)``): a non-empty sequence of finite numbers > 0
            (or one number).

    Returns:
        A 0-d float32 tensor.

    Raises:
        ValueError: wrong shapes, fewer than 2 samples, NaN or infinite samples, a bandwidth that is not > 0.
        TypeError: bandwidths that are not numbers.
    """
    check_tensor(x, "x")
    check_tensor(y, "y")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (N, D) and (M, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"x and y need at least 2 samples each, got {len(x)} and {len(y)}")
    hs = _bandwidths(bandwidths)
    check_finite(x, "x")
    check_finite(y, "y")
    x, y = x.double(), y.double()

    def k(a, b):
        d2 = torch.cdist(a, b).pow_(2)
        out = torch.zeros_like(d2)
        for h in hs:  # in place: at 2000 points the exponentials are the whole cost
            out.add_(torch.exp(d2 * (-0.5 / h**2)))
        return out

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    exx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    eyy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return (exx + eyy - 2 * kxy.mean()).float()


def nearest_neighbour(x: torch.Tensor, reference: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """For each sample of ``x`` (N, …), the RMSE to its nearest neighbour in ``reference`` (M, …) and that
    neighbour's index: ``d_i = min_j ‖x_i − r_j‖ / √D`` (D values per sample). The memorisation test of chapter §5
    compares these distances for generated samples with those of held-out real images: a prior that copies its
    training set puts its samples much closer to the training images than new real images are.

    The search uses ``‖a − r‖² = ‖a‖² − 2 a·r + ‖r‖²`` in float64 on data centred by the reference mean (so that
    an offset common to all samples cancels before the expansion), ``chunk`` samples of ``x`` at a time; the
    returned distance is then computed from the difference ``x_i − r_j`` itself, so an exact copy has distance 0.

    Returns:
        ``(distance, index)``: (N,) RMSEs in ``x``'s dtype and (N,) int64 indices into ``reference``.

    Raises:
        ValueError: ``x`` or ``reference`` is not a finite floating-point batch with at least one sample, or their
            samples differ in shape; ``chunk`` not an integer >= 1.
    """
    check_tensor(x, "x", floating=True, finite=True)
    check_tensor(reference, "reference", floating=True, finite=True)
    if x.ndim < 2 or reference.ndim < 2 or x.shape[1:] != reference.shape[1:]:
        raise ValueError(f"x (N, …) and reference (M, …) must hold samples of the same shape, got "
                         f"{tuple(x.shape)} and {tuple(reference.shape)}")  # fmt: skip
    if x.shape[0] == 0 or reference.shape[0] == 0:
        raise ValueError(f"x (N, …) and reference (M, …) must hold at least one sample each, got "
                         f"{tuple(x.shape)} and {tuple(reference.shape)}")  # fmt: skip
    check_int("chunk", chunk, 1)
    with torch.no_grad():
        r = reference.detach().flatten(1).to(x.device, torch.float64)
        centre = r.mean(0)
        r = r - centre
        r2 = r.pow(2).sum(1)
        best_d, best_i = [], []
        for i in range(0, x.shape[0], chunk):
            ai = x[i : i + chunk].detach().flatten(1).double() - centre
            d2 = ai.pow(2).sum(1, keepdim=True) - 2 * ai @ r.T + r2  # ‖a − r‖² up to rounding, (n, M)
            j = d2.argmin(1)
            best_d.append((ai - r[j]).pow(2).mean(1).sqrt())  # the RMSE from the difference itself
            best_i.append(j)
    return torch.cat(best_d).to(x.dtype), torch.cat(best_i)


def gaussian_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``(N, D)`` features, in float64 numpy.

    Raises:
        ValueError: features that are not an ``(N, D)`` tensor with N >= 2, or that hold NaN or infinity.
    """
    check_tensor(features, "features")
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got {tuple(features.shape)}")
    check_finite(features, "features")
    f = features.detach().double().cpu().numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm(m):
    """scipy's matrix square root without its accuracy printout (SciPy ≥ 1.18 dropped the ``disp`` argument)."""
    try:
        return linalg.sqrtm(m, disp=False)[0]
    except TypeError:
        return linalg.sqrtm(m)


def _array(name: str, value, ndim: int) -> np.ndarray:
    """``value`` (a number, array or CPU tensor) as a finite real numpy array of rank ``ndim`` (after
    ``np.atleast_1d`` / ``np.atleast_2d``), unconverted otherwise."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        a = np.atleast_1d(value) if ndim == 1 else np.atleast_2d(value)
    except Exception:  # noqa: BLE001 - anything numpy cannot read is the caller's wrong type
        a = None
    if a is None or a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real array or tensor, got {type(value).__name__}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got {int((~np.isfinite(a)).sum())} NaN or infinite entries")
    return a


#: Relative tolerance of :func:`frechet_distance`'s covariance checks: ``|Σ - Σᵀ| <= tol · max|Σ|`` entry-wise and
#: eigenvalues ``>= -tol · max|eigenvalue|`` (rounding of a float32 covariance, or of a singular one from N <= D
#: samples, stays far below it).
_COV_TOL = 1e-5


def _check_covariance(name: str, s: np.ndarray) -> None:
    """``s`` is symmetric and positive semi-definite up to :data:`_COV_TOL` (a covariance matrix)."""
    scale = float(np.abs(s).max()) if s.size else 0.0
    asym = float(np.abs(s - s.T).max()) if s.size else 0.0
    if asym > _COV_TOL * scale:
        raise ValueError(
            f"{name} must be a symmetric covariance matrix, got max |{name} - {name}.T| = {asym:.3g} (entries up to "
            f"{scale:.3g})"
        )
    eig = np.linalg.eigvalsh((s + s.T) / 2)
    top = float(np.abs(eig).max()) if eig.size else 0.0
    if eig.size and float(eig.min()) < -_COV_TOL * top:
        raise ValueError(
            f"{name} must be a positive semi-definite covariance matrix, got the eigenvalue {float(eig.min()):.4g} "
            f"(largest |eigenvalue| {top:.4g})"
        )


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``‖μ1 - μ2‖² + tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^{1/2})`` (Dowson & Landau 1982; FID's formula).

    Args:
        mu1, mu2: means ``(D,)``; sigma1, sigma2: covariances ``(D, D)`` (numbers for D = 1), finite real arrays or
            tensors, symmetric and positive semi-definite (up to a relative 1e-5: rounding).

    Raises:
        ValueError: NaN or infinite entries (checked before the matrix square root, which would take seconds on
            them), covariances that are not ``(D, D)`` for the means' ``D``, not symmetric or not positive
            semi-definite (an indefinite one gives a plausible-looking but meaningless distance), or Gaussians of
            different dimensions.
        TypeError: arguments that are not real arrays.
    """
    mu1, mu2 = _array("mu1", mu1, 1), _array("mu2", mu2, 1)
    s1, s2 = _array("sigma1", sigma1, 2), _array("sigma2", sigma2, 2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(
            f"the two Gaussians must have the same dimension, got means {mu1.shape}, {mu2.shape} and covariances "
            f"{s1.shape}, {s2.shape}"
        )
    if s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"sigma1 and sigma2 must be ({len(mu1)}, {len(mu1)}) covariances of the means, got {s1.shape}")
    _check_covariance("sigma1", s1)
    _check_covariance("sigma2", s2)
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # nearly singular product: regularise as pytorch-fid does
        off = np.eye(len(s1)) * 1e-6
        covmean = _sqrtm((s1 + off) @ (s2 + off))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _check_groups(labels, n: int, name: str = "labels") -> None:
    """``labels`` is an integer tensor of shape ``(n,)`` (group indices; any integers)."""
    check_tensor(labels, name)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of class indices, got {labels.dtype}")


def within_class_diversity(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean Euclidean distance between the features of two different samples of the same class, averaged over
    the classes present (each with ≥ 2 samples): the diversity measure of the guidance trade-off (chapter §2.3).

    Args:
        features: ``(N, D)`` finite features.
        labels: ``(N,)`` integer class labels (any integers; they only group the samples).

    Raises:
        ValueError: wrong shapes, NaN or infinite features, non-integer labels, or labels without a class of at
            least 2 samples.
    """
    check_tensor(features, "features")
    check_tensor(labels, "labels")
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features must be (N, D) and labels (N,), got {tuple(features.shape)}, {tuple(labels.shape)}")
    _check_groups(labels, features.shape[0])
    check_finite(features, "features")
    per_class = []
    for c in labels.unique():
        f = features[labels == c].double()
        if len(f) >= 2:
            d = torch.cdist(f, f)
            per_class.append(float(d.sum() / (len(f) * (len(f) - 1))))
    if not per_class:
        raise ValueError(
            f"labels must hold at least one class with 2 or more samples, got {len(labels)} samples, no two of "
            "them in the same class"
        )
    return sum(per_class) / len(per_class)


#: FD-FMNIST clamps its inputs to [-1, 1]: samplers overshoot (DDIM without clipping past ±2 at a few steps, a
#: predictor–corrector at 10 NFE past ±10), and a sample is judged as it would be shown. A batch with no value below 0
#: and values above this bound is not a [-1, 1] image batch but 0–255 data, and is refused.
_UINT8_LIKE = 2.0


def _check_fmnist_images(x, name: str, min_n: int = 1) -> None:
    """``x`` is a finite floating-point ``(N, 1, 28, 28)`` batch (N >= ``min_n``) of [-1, 1] images, not 0–255 data."""
    check_tensor(x, name)
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
        raise ValueError(f"{name} must have shape (N, 1, 28, 28), got {tuple(x.shape)}")
    if len(x) < min_n:
        raise ValueError(f"{name} must hold at least {min_n} image{'s' * (min_n > 1)}, got {len(x)}")
    check_floating(x, name)
    check_finite(x, name)
    check_not_0_255(x, name, _UINT8_LIKE, "[-1, 1] images (overshoot is clamped)")


class FDFMNIST:
    """FD-FMNIST: Fréchet distance in the feature space of the shipped Fashion-MNIST classifier.

    ``fd = FDFMNIST(); fd(samples)`` compares ``(N, 1, 28, 28)`` samples in [-1, 1] with the reference statistics
    of the shipped test split (2 000 images) or of any ``reference`` images given.

    Samples are clamped to [-1, 1] before their features are taken (``fd(x)``, :meth:`diversity`): a sampler's
    overshoot is judged as the image it shows. Every image argument must be a finite floating-point
    ``(N, 1, 28, 28)`` tensor; NaN or infinity raise ``ValueError`` at once (instead of seconds in the matrix square
    root), and so do integer tensors and 0–255 float data (no value below 0, some above 2), which clamping would turn
    into white images: convert them with :func:`diffu.data.from_uint8`. Images on [0, 1] cannot be told from dark
    [-1, 1] images and are not detected.

    Args:
        reference: reference images ``(M, 1, 28, 28)``, M >= 2 (default: the shipped test split).
        device: where the classifier runs (a torch.device, a string or None: the CPU).
        batch_size: images per forward pass (an integer >= 1).

    Building the classifier leaves torch's global RNG as it was (its random initialisation runs in a forked RNG,
    before the shipped weights replace it).
    """

    def __init__(self, reference: torch.Tensor | None = None, device=None, batch_size: int = 500):
        from .data import fashion_mnist
        from .pretrained import load

        device = check_device("device", device)
        check_int("batch_size", batch_size, 1)
        if reference is not None:
            _check_fmnist_images(reference, "reference", min_n=2)
        with torch.random.fork_rng(devices=[]):  # the network is built (randomly initialised) on the CPU
            self.net = load("fmnist_classifier", device=device)
        self.batch_size = batch_size
        ref = fashion_mnist("test")[0] if reference is None else reference
        self.ref_stats = gaussian_stats(self._features(ref))

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        dev = next(self.net.parameters()).device
        return torch.cat([self.net.features(b.to(dev, torch.float32)).cpu() for b in x.split(self.batch_size)])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's ``(N, 128)`` penultimate features of ``x`` ``(N, 1, 28, 28)`` (not clamped), on the CPU.

        Raises:
            ValueError: as the class says (shape, dtype, NaN, 0–255 data).
        """
        _check_fmnist_images(x, "x")
        return self._features(x)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """The share of ``x`` ``(N, 1, 28, 28)`` (not clamped) that the classifier assigns to the labels ``y``
        ``(N,)`` (integers in [0, 9]).

        Raises:
            ValueError: as the class says for ``x``; labels of another shape, dtype or range.
        """
        _check_fmnist_images(x, "x")
        check_labels(y, self.net.head.out_features, len(x), "y")
        dev = next(self.net.parameters()).device
        pred = torch.cat([self.net(b.to(dev, torch.float32)).argmax(1).cpu() for b in x.split(self.batch_size)])
        return float((pred == y.cpu()).float().mean())

    def diversity(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """:func:`within_class_diversity` of ``x`` (clamped to [-1, 1]; grouped by the intended labels ``y``
        ``(N,)``, integers in [0, 9]) in this feature space.

        Raises:
            ValueError: as :meth:`accuracy`.
        """
        _check_fmnist_images(x, "x")
        check_labels(y, self.net.head.out_features, len(x), "y")
        return within_class_diversity(self._features(x.clamp(-1, 1)), y.cpu())

    def __call__(self, samples: torch.Tensor) -> float:
        """FD-FMNIST of ``samples`` ``(N, 1, 28, 28)``, N >= 2, clamped to [-1, 1], against the reference.

        Raises:
            ValueError: as the class says (shape, fewer than 2 samples, dtype, NaN, 0–255 data).
        """
        _check_fmnist_images(samples, "samples", min_n=2)
        return frechet_distance(*gaussian_stats(self._features(samples.clamp(-1, 1))), *self.ref_stats)


def fd_fmnist(samples: torch.Tensor, reference: torch.Tensor | None = None) -> float:
    """One-shot FD-FMNIST of ``samples`` against the shipped test split (or ``reference``); see :class:`FDFMNIST`."""
    return FDFMNIST(reference)(samples)


# ----------------------------------------------------------------------------------------------------------------
# Segmentation: Dice and IoU of label maps (chapter §6)
# ----------------------------------------------------------------------------------------------------------------


def _overlaps(pred, target, num_classes, ignore_background):
    """Checked per-image, per-class counts ``(|P ∩ T|, |P|, |T|)``, each ``(N, K)`` float64 (``K = num_classes``, or
    ``num_classes − 1`` without the background class 0)."""
    check_int("num_classes", num_classes, 2)
    check_bool("ignore_background", ignore_background)
    check_rank(target, 3, "target", "(N, H, W) label maps")
    check_labels(target, num_classes, name="target")
    check_rank(pred, (3, 4), "pred", "(N, H, W) label maps or (N, num_classes, H, W) scores")
    if pred.device != target.device:
        raise ValueError(f"pred must be on target's device {target.device}, got {pred.device}")
    if pred.ndim == 4:
        check_floating(pred, "pred")  # class scores or probabilities: the label is their argmax
        n, k, h, w = pred.shape
        if k != num_classes or (n, h, w) != tuple(target.shape):
            want = (target.shape[0], num_classes, *target.shape[1:])
            raise ValueError(
                f"pred scores must have shape (N, num_classes, H, W) = {want} (target's N, H, W), got "
                f"{tuple(pred.shape)}"
            )
        check_finite(pred, "pred")
        pred = pred.argmax(1)
    else:
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"pred must have target's shape {tuple(target.shape)}, got {tuple(pred.shape)}")
        check_labels(pred, num_classes, name="pred")
    first = 1 if ignore_background else 0
    classes = torch.arange(first, num_classes, device=target.device)
    p = pred.flatten(1)[:, None, :] == classes[None, :, None]  # (N, K, H·W)
    t = target.flatten(1)[:, None, :] == classes[None, :, None]
    return (p & t).sum(2).double(), p.sum(2).double(), t.sum(2).double()


def dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int, *, ignore_background: bool = True):
    """Dice coefficient ``2 |P ∩ T| / (|P| + |T|)`` per image and class (Dice 1945; Sørensen 1948), ``(N, K)``.

    The overlap measure of medical segmentation (ACDC, the Medical Segmentation Decathlon), computed exactly: no
    smoothing ε. A class absent from both ``pred`` and ``target`` of an image has no Dice: its entry is **NaN**, so
    that averages skip it — ``d.nanmean(0)`` is each class's mean over the images, ``d.nanmean(1)`` each image's
    mean over its classes (the convention of the Decathlon and of MONAI's ``ignore_empty``; counting it as 1 would
    reward predicting nothing). A class predicted but absent from the target (or the reverse) scores 0.

    Args:
        pred: ``(N, H, W)`` integer label maps, or ``(N, num_classes, H, W)`` floating class scores or probabilities
            (finite), whose argmax over the classes is the label (ties to the lower class).
        target: ``(N, H, W)`` integer label maps in ``[0, num_classes)``, on ``pred``'s device.
        num_classes: the number of classes, background included (>= 2).
        ignore_background: leave out class 0 (the default, as segmentation papers report): ``K = num_classes − 1``
            columns for classes 1, 2, …; else ``K = num_classes`` columns for classes 0, 1, ….

    Returns:
        ``(N, K)`` float32 on ``target``'s device, in [0, 1] or NaN.

    Raises:
        ValueError: ``num_classes`` not an integer >= 2; ``target`` or integer ``pred`` not of rank 3, not integer,
            or with labels outside ``[0, num_classes)``; scores of the wrong shape, not floating or not finite;
            shapes or devices that disagree (each named in the message).
        TypeError: ``ignore_background`` not a bool.

    Used in chapter §6 (segmentation).
    """
    inter, p, t = _overlaps(pred, target, num_classes, ignore_background)
    return (2 * inter / (p + t)).float()  # 0 / 0 = NaN where the class is in neither


def iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, *, ignore_background: bool = True):
    """Intersection over union (Jaccard index) ``|P ∩ T| / |P ∪ T|`` per image and class, ``(N, K)``.

    Arguments, shapes, errors and the empty-class convention (**NaN** where a class is in neither map) as
    :func:`dice`; the two are one function of each other, ``IoU = Dice / (2 − Dice)``, so IoU ≤ Dice with equality
    at 0 and 1.

    Used in chapter §6 (segmentation).
    """
    inter, p, t = _overlaps(pred, target, num_classes, ignore_background)
    return (inter / (p + t - inter)).float()
