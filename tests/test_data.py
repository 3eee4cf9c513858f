import pytest
import torch

from diffu.data import FMNIST_CLASSES, TOY_DATASETS, digits, fashion_mnist, to_uint8, toy_2d


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_toys_shape_scale_determinism(name):
    a = toy_2d(name, 500, generator=torch.Generator().manual_seed(0))
    b = toy_2d(name, 500, generator=torch.Generator().manual_seed(0))
    c = toy_2d(name, 500, generator=torch.Generator().manual_seed(1))
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.3 < float(a.std()) < 3.0 and float(a.mean(0).abs().max()) < 1.0


def test_toy_errors():
    with pytest.raises(ValueError, match="name must be"):
        toy_2d("galaxy", 10)
    with pytest.raises(ValueError, match="n must be"):
        toy_2d("moons", 0)
    with pytest.raises(ValueError, match="noise"):
        toy_2d("moons", 10, noise=-1)


def test_fashion_mnist_subset():
    x, y = fashion_mnist("train")
    assert x.shape == (20000, 1, 28, 28) and y.shape == (20000,)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(torch.bincount(y), torch.full((10,), 2000))
    xt, yt = fashion_mnist("test")
    assert xt.shape == (2000, 1, 28, 28) and torch.equal(torch.bincount(yt), torch.full((10,), 200))
    assert len(FMNIST_CLASSES) == 10
    x5, y5 = fashion_mnist("test", n=5, classes=[9])
    assert x5.shape[0] == 5 and bool((y5 == 9).all())
    # no test image is a copy of a training image
    assert not bool((xt[:50, None] == x[None, :2000]).flatten(2).all(-1).any())


def test_fashion_mnist_errors():
    with pytest.raises(ValueError, match="split"):
        fashion_mnist("val")
    with pytest.raises(ValueError, match="n must be"):
        fashion_mnist("test", n=0)
    with pytest.raises(ValueError, match="classes"):
        fashion_mnist("test", classes=[10])


def test_uint8_roundtrip_and_digits():
    x, _ = fashion_mnist("test", n=8)
    u = to_uint8(x)
    assert u.dtype == torch.uint8 and torch.equal(to_uint8(u.float() / 127.5 - 1), u)
    d, t = digits()
    assert d.shape == (1797, 1, 8, 8) and float(d.min()) == -1.0 and float(d.max()) == 1.0 and int(t.max()) == 9


def _write_idx(path, arr):
    import gzip

    import numpy as np

    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_build_subset_from_idx_files(tmp_path):
    import numpy as np

    from diffu.data import build_fashion_mnist_subset

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 30)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    out = build_fashion_mnist_subset(tmp_path, tmp_path / "s.npz", n_train_per_class=4, n_test_per_class=2)
    with np.load(out) as z:
        assert z["train_images"].shape == (40, 28, 28) and z["test_images"].shape == (20, 28, 28)
        assert (np.bincount(z["train_labels"]) == 4).all() and z["train_images"].dtype == np.uint8


# ----------------------------------------------------------------------------------------------------------------
# argument checks (issue 18)
# ----------------------------------------------------------------------------------------------------------------


def test_regression_toy_2d_noise_must_be_finite():
    """noise=nan passed ``noise < 0`` and every point came out NaN."""
    for noise in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
            toy_2d("moons", 10, noise=noise)


def test_toy_2d_checks_n_and_generator():
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        toy_2d("moons", 10.0)
    with pytest.raises(ValueError, match="n must be an integer"):
        toy_2d("moons", True)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator.*manual_seed\(0\)"):
        toy_2d("moons", 10, generator=0)
    with pytest.raises(ValueError, match="name must be one of"):
        toy_2d(["moons"], 10)


def test_fashion_mnist_checks_n_and_classes():
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        fashion_mnist("test", n=2.5)
    with pytest.raises(ValueError, match=r"classes must be in \[0, 9\]"):
        fashion_mnist("test", classes=[2.5])  # matched no image before (an empty result)
    with pytest.raises(TypeError, match="classes must be a collection of class indices"):
        fashion_mnist("test", classes=5)
    with pytest.raises(ValueError, match="classes must name at least one class"):
        fashion_mnist("test", classes=[])
    x, y = fashion_mnist("test", n=3, classes=torch.tensor([1, 2]))
    assert x.shape == (3, 1, 28, 28) and set(y.tolist()) <= {1, 2}


def test_uint8_conversions_refuse_what_they_cannot_convert():
    x, _ = fashion_mnist("test", n=2)
    with pytest.raises(ValueError, match=r"x must have values in \[-2, 2\].*from_uint8"):
        to_uint8((x + 1) * 127.5)  # a 0–255 float image was clamped to white before
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        to_uint8(to_uint8(x))
    with pytest.raises(ValueError, match="x must be finite"):
        to_uint8(torch.full((2,), float("nan")))
    from diffu.data import from_uint8

    with pytest.raises(ValueError, match="x must be an integer"):
        from_uint8(x)
    with pytest.raises(ValueError, match=r"x must have values in \[0, 255\]"):
        from_uint8(torch.tensor([300]))
    assert torch.equal(to_uint8(from_uint8(to_uint8(x))), to_uint8(x))


def test_regression_build_subset_refuses_more_images_than_a_class_has(tmp_path):
    """Asking for more images per class than the files hold silently returned fewer (and an unbalanced set)."""
    import numpy as np

    from diffu.data import build_fashion_mnist_subset

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 30)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    with pytest.raises(ValueError, match="n_train_per_class must be at most 6"):
        build_fashion_mnist_subset(tmp_path, tmp_path / "s.npz", n_train_per_class=7, n_test_per_class=2)
    with pytest.raises(ValueError, match="n_test_per_class must be at most 3"):
        build_fashion_mnist_subset(tmp_path, tmp_path / "s.npz", n_train_per_class=2, n_test_per_class=4)
    with pytest.raises(ValueError, match="n_train_per_class must be an integer >= 1"):
        build_fashion_mnist_subset(tmp_path, tmp_path / "s.npz", n_train_per_class=0)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        build_fashion_mnist_subset(tmp_path / "nowhere", tmp_path / "s.npz")
    with pytest.raises(TypeError, match="out must be a str or a path"):
        build_fashion_mnist_subset(tmp_path, None)
