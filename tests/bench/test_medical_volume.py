"""The §5.1.3 benchmark (diffu/bench/medical_volume.py) end to end with a tiny seeded UNet in place of the prior."""

import argparse
import json

import pytest
import torch

from diffu.bench import medical_volume as mv
from diffu.data.mni import HELD_OUT, mni_volume
from diffu.medical.uncertainty import expected_coverage
from diffu.nn import UNet, UNetConfig


@pytest.fixture(scope="module")
def net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                               image_size=32)).eval()  # fmt: skip


GRID = dict(zetas=(1.0,), dps_steps=(2,), cg_iters=(0, 3), dds_steps=(2,))


@pytest.fixture(scope="module")
def res(net):
    return mv.bench_medical_volume(depth=12, seeds=2, views=(8,), n_stab=1, n_unc=2, k=4, steps=2, dps_steps=2,
                                   stability_grid=GRID, progress=False, model=net)  # fmt: skip


def test_blocks_are_the_held_out_band_in_order():
    b = mv.blocks(8)
    vol = mni_volume(32)
    assert b.shape == (3, 1, 8, 32, 32) and vol.shape[2] == HELD_OUT[1] - HELD_OUT[0] == 24
    assert torch.equal(b[1, :, 3], vol[0, :, 11])  # block 1 holds slices 8–15 of the band
    assert mv.blocks(10).shape[0] == 2  # the remainder (4 slices) is dropped


def test_volume_psnr_is_over_all_voxels():
    t = torch.zeros(2, 1, 3, 4, 4)
    x = t.clone()
    x[0, 0, 1] = 0.2  # one slice of 3 off by 0.2: MSE = 0.04 / 3
    p = mv._volume_psnr(x, t)
    assert p[0] == pytest.approx(10 * torch.log10(torch.tensor(4 / (0.04 / 3))).item(), rel=1e-5)
    assert p[1] == float("inf")


def test_volume_rows(res):
    rows = res["volume"]
    assert [(r["method"], r["seed"]) for r in rows] == [("FBP (slice-wise)", 0), ("DDS (slice-wise)", 0),
                                                        ("DDS (slice-wise)", 1), ("DDS + TV-z", 0),
                                                        ("DDS + TV-z", 1), ("DDS + TV-z, 5 ADMM", 0),
                                                        ("DDS + TV-z, 5 ADMM", 1)]  # fmt: skip
    assert [(r["z_weight"], r["admm_iters"]) for r in rows[3:]] == [(0.04, 1)] * 2 + [(0.04, 5)] * 2
    assert rows[3]["psnr"] != rows[5]["psnr"]  # more ADMM iterations change the reconstruction
    for r in rows:
        assert len(r["psnr"]) == len(r["inconsistency"]) == len(r["roughness"]) == 2  # two 12-slice blocks
        assert all(v >= 0 for v in r["inconsistency"])
    assert rows[0]["nfe"] == 0 and rows[1]["nfe"] == 2
    assert rows[1]["psnr"] != rows[2]["psnr"]  # another seed, another sample
    assert len(res["volume_info"]["truth_roughness"]) == 2


def test_fbp_rows_match_a_direct_fbp(res):
    from diffu.inverse import Radon
    from diffu.inverse.dds import SliceStack
    from diffu.medical.measurements import analytic_reconstruction, measure_physical
    from diffu.medical.volumes import slice_inconsistency, to_volume

    truth = mv.blocks(12)
    y = measure_physical(SliceStack(Radon(8)), truth, mv.SIGMA_Y, torch.Generator().manual_seed(100))
    x = torch.stack([to_volume(analytic_reconstruction(Radon(8), y[i]), 1)[0] for i in range(2)])
    assert res["volume"][0]["psnr"] == pytest.approx(mv._volume_psnr(x, truth), rel=1e-5)
    assert res["volume"][0]["inconsistency"] == pytest.approx(slice_inconsistency(x, truth).tolist(), rel=1e-5)


def test_stability_rows(res):
    rows = res["stability"]
    assert [(r["method"], r["knob"], r["steps"]) for r in rows] == [("DPS", 1.0, 2), ("DDS", 0, 2), ("DDS", 3, 2)]
    for r in rows:
        assert len(r["psnr"]) == len(r["diverged"]) == 2  # 1 image × 2 seeds
    assert len(res["stability_info"]["fbp_psnr"]) == 1


def test_uncertainty_rows(res):
    for r, method in zip(res["uncertainty"], ("DDS", "DPS")):
        assert r["method"] == method and r["k"] == 4
        assert set(r["coverage"]) == {"1", "2", "4"} and all(len(v) == 2 for v in r["coverage"].values())
        assert r["expected_coverage"]["4"] == pytest.approx(expected_coverage(4))
        assert all(-1 <= c <= 1 for c in r["pearson"] + r["spearman"])
        assert all(0 <= c <= 1 for v in r["coverage"].values() for c in v)


def test_bench_is_deterministic(net, res):
    again = mv.bench_medical_volume(depth=12, seeds=2, views=(8,), n_stab=1, n_unc=2, k=4, steps=2, dps_steps=2,
                                    stability_grid=GRID, progress=False, model=net)  # fmt: skip
    for part in ("volume", "stability", "uncertainty"):
        a = [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in res[part]]
        b = [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in again[part]]
        assert json.dumps(a) == json.dumps(b)


def test_run_writes_json_only_with_out(tmp_path, monkeypatch, net):
    monkeypatch.setattr("diffu.pretrained.load", lambda name, device=None: net)
    args = argparse.Namespace(out=None, tiny=True, device=None, argv=["--tiny"])
    res = mv.run_medical_volume(args)
    assert res["command"] == "python -m diffu.bench medical_volume --tiny"
    assert not list(tmp_path.iterdir())
    args.out = str(tmp_path)
    mv.run_medical_volume(args)
    saved = json.loads((tmp_path / "medical_volume.json").read_text())
    assert set(saved) >= {"volume", "stability", "uncertainty", "command", "machine"}
