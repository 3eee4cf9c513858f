"""The §5.1.1 memorisation benchmark (diffu/bench/medical_memorisation.py) with tiny seeded networks and x̂₀-predicting
stand-ins in place of the shipped prior, against a small reference."""

import argparse
import base64
import json
import math

import pytest
import torch

from diffu.bench import medical_memorisation as mm
from diffu.data.mni import augmented_slices, mni_slices
from diffu.metrics import nearest_neighbour
from diffu.nn import UNet, UNetConfig

N_TRAIN = 200  # a 200-image reference: augmented_slices(200, seed=0)


class Returns(torch.nn.Module):
    """A "prior" that predicts x̂₀ = the given images (rows 0…N−1 of every batch): DDPM then ends on them exactly."""

    prediction = "x0"

    def __init__(self, images):
        super().__init__()
        self.register_buffer("images", images)

    def forward(self, x, t):
        return self.images[: x.shape[0]].to(x)


@pytest.fixture(scope="module")
def train():
    return augmented_slices(N_TRAIN, 32, seed=mm.TRAIN_SEED)["t1"]


@pytest.fixture(scope="module")
def net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=32))


KW = dict(n_samples=6, steps=2, n_fresh=40, n_train=N_TRAIN, progress=False)


@pytest.fixture(scope="module")
def res(net):
    return mm.bench_medical_memorisation(**KW, models={"prior": net.eval()})


def test_result_layout_and_distances_match_the_library(res, train):
    assert res["n_train"] == N_TRAIN and res["n_template"] == 123 and res["n_band"] == 24
    sizes = {"samples": 6, "fresh": 40, "band": 24}
    for name, n in sizes.items():
        p = res["per_image"][name]
        assert len(p["brain"]) == n
        assert all(len(v) == n for v in p["template"].values()) and all(len(v) == n for v in p["augmented"].values())
        assert max(p["augmented"]["index"]) < N_TRAIN and max(p["template"]["index"]) < 123
        # the nearest is never farther than the second nearest
        assert all(a <= b + 1e-6 for a, b in zip(p["augmented"]["distance"], p["augmented"]["second"]))
    # the band's distances, recomputed with the library from the documented references
    band = mni_slices(size=32, split="test")
    d, i = nearest_neighbour(band, train)
    assert res["per_image"]["band"]["augmented"]["index"] == i.tolist()
    assert res["per_image"]["band"]["augmented"]["distance"] == pytest.approx(d.tolist(), abs=1e-5)
    s = res["summary"]["augmented"]
    assert s["gap_fresh"]["gap"] == pytest.approx(s["samples"]["mean"] - s["fresh"]["mean"], abs=1e-9)
    assert [r["rank"] for r in res["copy_test"]["distance"]] == [1, 1]  # ⌈0.01 · 40⌉ = 1
    assert len(res["closest"]) == len(res["closest_relative"]) == 6 and len(res["closest_fresh"]) == mm.N_FRESH_PAIRS


def test_closest_pairs_store_the_images(res, train):
    c = res["closest"][0]
    assert c["distance"] == pytest.approx(min(res["per_image"]["samples"]["augmented"]["distance"]), abs=1e-5)
    img = torch.from_numpy(mm.decode_image(c["train_pixels"])).float()
    assert (img - train[c["train"], 0]).abs().max() <= 1 / 255 + 1e-6  # quantised to 2/255
    p = res["per_image"]["samples"]["augmented"]
    rel = [a / b for a, b in zip(p["distance"], p["second"])]
    assert [c["image"] for c in res["closest_relative"]] == sorted(range(6), key=rel.__getitem__)
    assert [c["relative"] for c in res["closest_relative"]] == pytest.approx(sorted(rel), abs=1e-4)
    with pytest.raises(ValueError, match="text must encode"):
        mm.decode_image(base64.b64encode(bytes(10)).decode())


def test_bench_is_deterministic(net, res):
    again = mm.bench_medical_memorisation(**KW, models={"prior": net.eval()})
    assert again["per_image"] == res["per_image"] and again["copy_test"] == res["copy_test"]


def test_a_copying_prior_is_caught(train):
    """Samples that are training images: every one is below the closest fresh draw, p tiny, gap ≪ 0."""
    pick = torch.tensor([3, 50, 77, 120, 150, 199])
    res = mm.bench_medical_memorisation(**KW, models={"prior": Returns(train[pick])})
    assert res["per_image"]["samples"]["augmented"]["index"] == pick.tolist()
    assert max(res["per_image"]["samples"]["augmented"]["distance"]) < 1e-4
    for stat in ("distance", "relative"):
        for row in res["copy_test"][stat]:
            assert row["count"] == 6
            assert row["p_value"] == pytest.approx(math.comb(6, 6) / math.comb(46, 6))  # = 1 / C(46, 6), r = 1
    g = res["summary"]["augmented"]["gap_fresh"]
    assert g["gap"] < -2 * g["se"]


def test_fresh_like_samples_are_not_flagged():
    """Samples that are other fresh draws of the training distribution: nothing to detect."""
    other = augmented_slices(6, 32, seed=3000)["t1"]
    res = mm.bench_medical_memorisation(**KW, models={"prior": Returns(other)})
    for stat in ("distance", "relative"):
        row = res["copy_test"][stat][0]
        assert row["p_value"] > 0.01 and row["count"] <= 1


def test_copy_p_value_is_exact():
    # r = 1: P(K ≥ k) = C(n, k) / C(n + m, k); P(K ≥ 1) = n / (n + m)
    assert mm.copy_p_value(1, 5, 9, 1) == pytest.approx(5 / 14)
    assert mm.copy_p_value(2, 5, 9, 1) == pytest.approx(math.comb(5, 2) / math.comb(14, 2))
    assert mm.copy_p_value(0, 5, 9, 3) == 1.0
    # brute force over all arrangements of n = 3 samples among n + m = 7 positions, threshold = 2nd fresh draw
    from itertools import combinations

    n, m, r = 3, 4, 2
    counts = []
    for pos in combinations(range(n + m), n):
        fresh = [p for p in range(n + m) if p not in pos]
        counts.append(sum(p < fresh[r - 1] for p in pos))
    for k in range(n + 1):
        assert mm.copy_p_value(k, n, m, r) == pytest.approx(sum(c >= k for c in counts) / len(counts))
    # E K = n r / (m + 1)
    assert sum(counts) / len(counts) == pytest.approx(n * r / (m + 1))


def test_copy_test_thresholds():
    fresh = torch.arange(1, 201, dtype=torch.float64) / 100  # 0.01 … 2.00
    rows = mm.copy_test(torch.tensor([0.005, 0.015, 0.5]), fresh)
    assert [(r["rank"], r["threshold"], r["count"]) for r in rows] == [(1, 0.01, 1), (2, 0.02, 2)]
    assert rows[0]["expected"] == pytest.approx(3 / 201)


def test_second_nearest():
    ref = torch.tensor([[0.0], [1.0], [3.0]])
    x = torch.tensor([[0.9], [2.8]])
    d, i = nearest_neighbour(x, ref)
    assert i.tolist() == [1, 2]
    assert mm.second_nearest(x, ref, i).tolist() == pytest.approx([0.9, 1.8])
    with pytest.raises(ValueError, match="reference"):
        mm.second_nearest(x, ref[:1], i)


@pytest.mark.parametrize(
    "kw, match",
    [(dict(n_samples=1), "n_samples"), (dict(steps=0), "steps"), (dict(steps=1001), "steps"),
     (dict(n_fresh=1), "n_fresh"), (dict(n_train=20_001), "n_train"), (dict(n_train=1), "n_train"),
     (dict(seed=-1), "seed"), (dict(models={"unet": None}), "models")],
)  # fmt: skip
def test_bad_input_names_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        mm.bench_medical_memorisation(**{"progress": False, **kw})


def test_models_must_be_a_dict():
    with pytest.raises(TypeError, match="models"):
        mm.bench_medical_memorisation(models=["prior"], progress=False)


def test_run_writes_json_only_with_out(tmp_path, monkeypatch, net):
    monkeypatch.setattr("diffu.pretrained.load", lambda name, device=None: net.eval())
    args = argparse.Namespace(out=None, tiny=True, device=None, argv=["--tiny"])
    res = mm.run_medical_memorisation(args)
    assert res["command"] == "python -m diffu.bench medical_memorisation --tiny"
    assert not list(tmp_path.iterdir())
    args.out = str(tmp_path)
    mm.run_medical_memorisation(args)
    assert [p.name for p in tmp_path.iterdir()] == ["medical_memorisation.json"]
    saved = json.loads((tmp_path / "medical_memorisation.json").read_text())
    assert set(saved) >= {"summary", "copy_test", "closest", "per_image", "command", "machine", "cpu_seconds"}
    assert saved["n_samples"] == 4 and saved["n_train"] == 200
