"""The §5.2 benchmark (diffu/bench/medical_translation.py) end to end with tiny seeded networks in place of the
shipped ones (never loads a weight file)."""

import argparse
import json

import pytest
import torch

from diffu.bench import medical_translation as mt
from diffu.data.mni import mni_slices
from diffu.metrics import psnr
from diffu.nn import UNet, UNetConfig
from diffu.nn.autoencoder import Autoencoder, AutoencoderConfig
from diffu.nn.concat import ConcatUNet, ConcatUNetConfig
from diffu.nn.dit import DiT, DiTConfig

DIT = DiTConfig(image_size=8, patch_size=2, in_channels=3, hidden_size=16, depth=1, num_heads=2, num_classes=None)
SMALL = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=32)
RS = {"ReSample-4": dict(steps=4, pixel_iters=2, latent_iters=2, hard_every=2)}
KW = dict(n=2, ddib_steps=(2,), paired_steps=2, paired_k=3, ddpm_steps=2, n_samples=3, sample_steps=2, n_mri=2,
          dds_steps=2, resample_configs=RS, progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def nets():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return {
            "mni_t1_prior": UNet(UNetConfig(**SMALL)).eval(),
            "mni_t2_prior": UNet(UNetConfig(**SMALL)).eval(),
            "mni_t1_to_t2": ConcatUNet(ConcatUNetConfig(**SMALL, cond_channels=1)).eval(),
            "mni_autoencoder": Autoencoder(AutoencoderConfig(channels=8, groups=4)).eval(),
            "mni_latent_dit": DiT(DIT).eval(),
        }


@pytest.fixture(scope="module")
def res(nets):
    return mt.bench_medical_translation(**KW, models=nets)


def test_held_out_pairs_are_the_band():
    d = mt.held_out_pairs()
    assert d["t1"].shape == (24, 1, 32, 32) and d["labels"].shape == (24, 32, 32)
    assert torch.equal(d["t2"], mni_slices(modality="t2", split="test"))
    two = mt.held_out_pairs(2)
    assert two["names"] == ["MNI z=72", "MNI z=95"] and torch.equal(two["t1"][1], d["t1"][-1])


def test_translation_rows(res):
    rows = res["translation"]
    assert [r["method"] for r in rows] == ["T1-intensity map", "tissue oracle", "DDIB-2", "paired DDIM-2",
                                           "paired DDIM-2, mean of 3", "paired DDPM-2",
                                           "paired DDPM-2, mean of 3"]  # fmt: skip
    assert [r["nfe"] for r in rows] == [0, 0, 4, 2, 6, 2, 6]
    for r in rows:
        assert len(r["psnr"]) == len(r["ssim"]) == 2 and r["data"] == mt.DATA[r["family"]]
        assert r["seconds_per_image"] >= 0 and all(-1 <= s <= 1 for s in r["ssim"])
    for r in (rows[4], rows[6]):
        assert len(r["sample_std"]) == 2 and all(s >= 0 for s in r["sample_std"])
    assert res["translation_info"]["images"] == ["MNI z=72", "MNI z=95"]


def test_baseline_rows_match_a_direct_computation(res):
    imap, tmap = mt.fit_baselines()
    d = mt.held_out_pairs(2)
    assert res["translation"][0]["psnr"] == pytest.approx(psnr(imap(d["t1"]).clamp(-1, 1), d["t2"]).tolist())
    oracle = tmap(d["labels"]).float().clamp(-1, 1)
    assert res["translation"][1]["psnr"] == pytest.approx(psnr(oracle, d["t2"]).tolist(), rel=1e-5)
    # the intensity map is a function of the T1 value: equal T1 pixels get equal T2
    x = torch.tensor([[[[-0.3, -0.3], [0.5, 0.5]]]])
    out = imap(x)
    assert out[0, 0, 0, 0] == out[0, 0, 0, 1] and out[0, 0, 1, 0] == out[0, 0, 1, 1]


def test_ddib_and_paired_rows_match_direct_calls(nets, res):
    from diffu.medical.translation import ddib
    from diffu.samplers import ddim
    from diffu.schedules import linear_schedule

    d = mt.held_out_pairs(2)
    x = ddib(nets["mni_t1_prior"], nets["mni_t2_prior"], d["t1"], linear_schedule(), steps=2, progress=False)
    assert res["translation"][2]["psnr"] == pytest.approx(psnr(x.clamp(-1, 1), d["t2"]).tolist(), rel=1e-5)
    xs = ddim(nets["mni_t1_to_t2"], (6, 1, 32, 32), linear_schedule(), steps=2, eta=0.0, clip_x0=True,
              generator=torch.Generator().manual_seed(0), model_kwargs={"cond": d["t1"].repeat(3, 1, 1, 1)},
              progress=False).clamp(-1, 1).unflatten(0, (3, 2))  # fmt: skip
    assert res["translation"][3]["psnr"] == pytest.approx(psnr(xs[0], d["t2"]).tolist(), rel=1e-5)
    assert res["translation"][4]["psnr"] == pytest.approx(psnr(xs.mean(0), d["t2"]).tolist(), rel=1e-5)


def test_latent_part(res):
    lat = res["latent"]
    assert lat["pixel"]["values_per_sample"] == 1024 and lat["latent"]["values_per_sample"] == 192
    for name in ("pixel", "latent"):
        r = lat[name]
        assert r["nfe"] == 2 and len(r["nn_rmse"]) == 3 and all(v >= 0 for v in r["nn_rmse"])
        assert r["peak_bytes_per_nfe"] > 0 and r["seconds_per_nfe_per_image"] > 0
    assert "decode_seconds_per_image" in lat["latent"] and "decode_seconds_per_image" not in lat["pixel"]
    assert len(lat["real_nn_rmse"]) == 3 and len(lat["autoencoder_ceiling"]["psnr"]) == 24


def test_mri_rows(res):
    rows = res["mri"]
    assert [r["method"] for r in rows] == ["zero-filled", "autoencoder of the truth (ceiling)", "DDS-2", "ReSample-4"]
    assert rows[2]["nfe"] == 2  # DDS: one evaluation per step (counted)
    assert rows[3]["nfe"] >= 4  # ReSample: the steps and the time-travel evaluations (counted)
    for r in rows:
        assert len(r["psnr"]) == len(r["residual"]) == 2 and all(v >= 0 for v in r["residual"])
    assert res["mri_info"]["task"] == "mri4" and 0 < res["mri_info"]["observed_fraction"] < 1
    assert rows[3]["settings"]["tol"] == pytest.approx(2 * mt.SIGMA_Y * res["mri_info"]["observed_fraction"] ** 0.5)


def test_counted_forwards_attributes():
    class Net:
        prediction = "v"

        def __call__(self, x, t):
            return x

    c = mt._Counted(Net())
    c(torch.zeros(1), 0)
    c(torch.zeros(1), 0)
    assert c.calls == 2 and c.prediction == "v"


def test_bench_is_deterministic(nets, res):
    again = mt.bench_medical_translation(**KW, models=nets)
    for part in ("translation", "mri"):
        a = [{k: v for k, v in r.items() if "seconds" not in k} for r in res[part]]
        b = [{k: v for k, v in r.items() if "seconds" not in k} for r in again[part]]
        assert json.dumps(a) == json.dumps(b)
    assert res["latent"]["latent"]["nn_rmse"] == again["latent"]["latent"]["nn_rmse"]


def test_run_writes_json_only_with_out(tmp_path, monkeypatch, nets):
    monkeypatch.setattr("diffu.pretrained.load", lambda name, device=None: nets[name])
    args = argparse.Namespace(out=None, tiny=True, device=None, argv=["--tiny"])
    out = mt.run_medical_translation(args)
    assert out["command"] == "python -m diffu.bench medical_translation --tiny"
    assert not list(tmp_path.iterdir())
    args.out = str(tmp_path)
    mt.run_medical_translation(args)
    saved = json.loads((tmp_path / "medical_translation.json").read_text())
    assert set(saved) >= {"translation", "latent", "mri", "command", "machine"}
    from safetensors.torch import load_file

    ex = load_file(str(tmp_path / "medical_translation_examples.safetensors"))
    assert ex["translation/t2"].shape == (2, 1, 32, 32) and "mri/truth" in ex
