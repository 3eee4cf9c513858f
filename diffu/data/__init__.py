"""Data sources for the book: 2D toys, a shipped Fashion-MNIST subset and scikit-learn digits.

Nothing here touches the network (CONTRIBUTING.md, convention 11). Images come out as ``(N, C, H, W)`` float tensors in
``[-1, 1]``; 2D toy data as ``(N, 2)``. Used from chapter §2.1 onwards.
"""

from __future__ import annotations

import gzip
import math
import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..checks import (
    check_choice,
    check_dtype,
    check_floating,
    check_generator,
    check_int,
    check_range,
    check_real,
    check_tensor,
)

__all__ = [
    "FMNIST_CLASSES",
    "TOY_DATASETS",
    "build_fashion_mnist_subset",
    "digits",
    "fashion_mnist",
    "from_uint8",
    "to_uint8",
    "toy_2d",
]

#: The ten Fashion-MNIST class names, indexed by label.
FMNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FMNIST_FILE = "fashion_mnist_subset.npz"


# ----------------------------------------------------------------------------------------------------------------
# 2D toy distributions
# ----------------------------------------------------------------------------------------------------------------


def _randn(n, d, g):
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def _rand(n, g):
    return torch.rand(n, generator=g, dtype=torch.float64)


def _moons(n, g):
    n1 = n // 2
    a = math.pi * _rand(n, g)
    upper = torch.stack([torch.cos(a), torch.sin(a)], 1)
    lower = torch.stack([1 - torch.cos(a), 0.5 - torch.sin(a)], 1)
    x = torch.cat([upper[:n1], lower[n1:]])
    return (x - torch.tensor([0.5, 0.25], dtype=x.dtype)) * 2.0


def _swiss_roll(n, g):
    t = 1.5 * math.pi * (1 + 2 * _rand(n, g))
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 5.0


def _eight_gaussians(n, g):
    k = torch.randint(0, 8, (n,), generator=g)
    ang = k.double() * (2 * math.pi / 8)
    centers = 2.0 * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    return centers + 0.1 * _randn(n, 2, g)


def _checkerboard(n, g):
    x1 = 4 * _rand(n, g) - 2
    x2 = 2 * _rand(n, g) - 2 + 2 * torch.randint(0, 2, (n,), generator=g).double()
    x2 = x2 + (torch.floor(x1) % 2)
    x2 = torch.where(x2 > 2, x2 - 4, x2)
    return torch.stack([x1, x2], 1)


def _circles(n, g):
    r = torch.where(_rand(n, g) < 0.5, 1.0, 2.0).double()
    a = 2 * math.pi * _rand(n, g)
    return torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)


def _spirals(n, g):
    t = torch.sqrt(_rand(n, g)) * 3 * math.pi
    sign = torch.where(_rand(n, g) < 0.5, -1.0, 1.0).double()
    return sign[:, None] * torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 4.0


#: Name → generator of the 2D toy datasets of :func:`toy_2d`.
#:
#: :meta hide-value:
TOY_DATASETS = {
    "moons": _moons,
    "swiss_roll": _swiss_roll,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "circles": _circles,
    "spirals": _spirals,
}


def toy_2d(name: str, n: int, *, noise: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``n`` points of a 2D toy distribution, roughly centred with unit scale (chapter §2.1).

    Args:
        name: one of ``TOY_DATASETS`` ("moons", "swiss_roll", "8gaussians", "checkerboard", "circles", "spirals").
        n: number of points (> 0).
        noise: standard deviation of isotropic Gaussian jitter added to every point (≥ 0).
        generator: torch generator for reproducibility.

    Returns:
        ``(n, 2)`` float32 tensor.

    Raises:
        ValueError: an unknown name, ``n`` not an integer >= 1, ``noise`` not a finite number >= 0.
        TypeError: a generator that is not a ``torch.Generator``.
    """
    check_choice("name", name, tuple(sorted(TOY_DATASETS)))
    check_int("n", n, 1)
    check_real("noise", noise, 0)
    check_generator(generator)
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU generator (the toys are drawn on the CPU), got {generator.device}")
    x = TOY_DATASETS[name](int(n), generator)
    if noise > 0:
        x = x + noise * _randn(int(n), 2, generator)
    return x.float()


# ----------------------------------------------------------------------------------------------------------------
# Fashion-MNIST (shipped subset) and digits
# ----------------------------------------------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def build_fashion_mnist_subset(
    src: str | Path,
    out: str | Path,
    *,
    n_train_per_class: int = 2000,
    n_test_per_class: int = 200,
    seed: int = 0,
) -> Path:
    """Build the class-balanced uint8 Fashion-MNIST subset shipped in ``diffu/data`` from the original idx files.

    Run once by a maintainer (``python -m diffu.data --src /usr/share/datasets/fashion-mnist``); the result is
    committed so that nothing is downloaded at run time.

    Raises:
        FileNotFoundError: ``src`` is not a folder.
        ValueError: counts that are not integers >= 1 (or more images per class than the files hold), a seed that is
            not an integer >= 0.
        TypeError: paths that are not strings or paths.
    """
    for name, value in (("src", src), ("out", out)):
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name} must be a str or a path, got {type(value).__name__}")
    check_int("n_train_per_class", n_train_per_class, 1)
    check_int("n_test_per_class", n_test_per_class, 1)
    check_int("seed", seed, 0)
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"src must be the folder of the Fashion-MNIST idx files, {src} is not a folder")
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, prefix, per_class in (
        ("train", "train", n_train_per_class),
        ("test", "t10k", n_test_per_class),
    ):
        images = _read_idx(src / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(src / f"{prefix}-labels-idx1-ubyte.gz")
        fewest = min(int((labels == c).sum()) for c in range(10))
        if fewest < per_class:
            arg = "n_train_per_class" if split == "train" else "n_test_per_class"
            raise ValueError(f"{arg} must be at most {fewest} (the images of the rarest class), got {per_class}")
        idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(10)])
        idx = rng.permutation(idx)
        arrays[f"{split}_images"] = images[idx]
        arrays[f"{split}_labels"] = labels[idx]
    out = Path(out)
    np.savez_compressed(out, **arrays)
    return out


_CACHE: dict[str, dict[str, np.ndarray]] = {}


def _fmnist_arrays() -> dict[str, np.ndarray]:
    if "fmnist" not in _CACHE:
        with resources.files(__package__).joinpath(_FMNIST_FILE).open("rb") as f:
            with np.load(f) as z:
                _CACHE["fmnist"] = {k: z[k] for k in z.files}
    return _CACHE["fmnist"]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Map images in [-1, 1] to uint8 in [0, 255], rounding.

    A sampler's output may overshoot [-1, 1] a little; values in [-2, 2] are clamped to [-1, 1] for display. Anything
    further out is not a [-1, 1] image (a 0–255 image, most likely) and raises ``ValueError``, as do NaN and integer
    tensors: clamping them would give a plausible-looking, wrong picture.

    Args:
        x: a floating-point tensor of any shape with values in [-2, 2].

    Returns:
        A ``torch.uint8`` tensor of ``x``'s shape; :func:`from_uint8` is its inverse up to rounding.
    """
    check_floating(x, "x")
    check_range(x, -2.0, 2.0, "x", "[-1, 1] images; up to ±2 is clamped as sampler overshoot")
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Map uint8 (or integer) images in [0, 255] to floating-point images in [-1, 1]: ``x / 127.5 - 1``.

    The conversion every diffu function expects for 0–255 data (CONTRIBUTING.md, convention 1).

    Args:
        x: an integer tensor with values in [0, 255] (e.g. a ``torch.uint8`` image batch).
        dtype: the floating dtype of the result.

    Returns:
        A tensor of ``x``'s shape and ``dtype`` with values in [-1, 1].
    """
    check_tensor(x, "x")
    check_dtype("dtype", dtype)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"x must be an integer (e.g. uint8) tensor of 0–255 values, got {x.dtype}")
    if x.numel() and (x.min() < 0 or x.max() > 255):
        raise ValueError(f"x must have values in [0, 255], got values in [{int(x.min())}, {int(x.max())}]")
    return x.to(dtype) / 127.5 - 1


def fashion_mnist(split: str = "train", n: int | None = None, *, classes=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped Fashion-MNIST subset (20 000 train + 2 000 test images, class-balanced).

    Fashion-MNIST is © Zalando SE, MIT licence (see ``diffu/data/LICENSE-fashion-mnist.txt``).

    Args:
        split: "train" or "test".
        n: keep the first ``n`` images (the subset is stored in random order), or all if None.
        classes: optional iterable of class indices to keep.

    Returns:
        images ``(N, 1, 28, 28)`` float32 in [-1, 1] and labels ``(N,)`` int64.

    Raises:
        ValueError: an unknown split, ``n`` not an integer in ``[1, N]``, classes that are not a non-empty
            collection of integers in [0, 9].
        TypeError: classes that are not iterable.
    """
    check_choice("split", split, ("train", "test"))
    arr = _fmnist_arrays()
    images = torch.from_numpy(arr[f"{split}_images"].copy())
    labels = torch.from_numpy(arr[f"{split}_labels"].astype(np.int64))
    if classes is not None:
        if isinstance(classes, torch.Tensor):
            classes = classes.reshape(-1).tolist()
        try:
            if isinstance(classes, (str, bytes)):
                raise TypeError
            classes = list(classes)
        except TypeError:
            raise TypeError(f"classes must be a collection of class indices, got {type(classes).__name__}") from None
        if not classes:
            raise ValueError("classes must name at least one class in [0, 9], got none")
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < 10:
                raise ValueError(f"classes must be in [0, 9], got {classes}")
        keep = torch.isin(labels, torch.tensor(classes))
        images, labels = images[keep], labels[keep]
    if n is not None:
        check_int("n", n, 1)
        if n > len(labels):
            raise ValueError(f"n must be in [1, {len(labels)}], got {n}")
        images, labels = images[:n], labels[:n]
    x = images.float().div(127.5).sub(1.0).unsqueeze(1)  # (N, 1, 28, 28)
    return x, labels


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8×8 digits (1797 images) as ``(N, 1, 8, 8)`` float32 in [-1, 1] and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().div(8.0).sub(1.0).unsqueeze(1)  # pixel values are 0..16
    return x, torch.from_numpy(d.target).long()
