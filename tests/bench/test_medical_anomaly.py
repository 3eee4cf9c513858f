"""The §5.1.4 benchmark (diffu/bench/medical_anomaly.py) end to end with tiny seeded networks in place of the shipped
prior and autoencoder."""

import argparse
import json

import pytest
import torch

from diffu.bench import medical_anomaly as ma
from diffu.data.mni import HELD_OUT, mni_slices
from diffu.medical.anomaly import brain_mask, masked_dps_map, mirror_difference, pixel_auroc
from diffu.nn import UNet, UNetConfig
from diffu.nn.autoencoder import Autoencoder, AutoencoderConfig
from diffu.schedules import linear_schedule


@pytest.fixture(scope="module")
def nets():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        prior = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=32))
        ae = Autoencoder(AutoencoderConfig(channels=8, groups=4, in_channels=1, latent_channels=2))
    return {"prior": prior.eval(), "autoencoder": ae.eval()}


KW = dict(n=2, seeds=2, n_val=1, masks=3, steps=2, anoddpm_steps=2, mdps_grid=((200, 10.0), (100, 3.0)),
          anoddpm_grid=(50, 100), progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def res(nets):
    return ma.bench_medical_anomaly(**KW, models=nets)


def test_rows_cover_every_set_and_method(res):
    methods = ["masked DPS (K = 1)", "masked DPS (K = 2)", "masked DPS (K = 3)", *ma.BASELINES]
    assert [(r["set"], r["method"]) for r in res["rows"]] == [(s, m) for s in ma.LESION_SETS for m in methods]
    for r in res["rows"]:
        assert len(r["auroc"]) == len(r["dice"]) == 4 == len(res["images"])  # 2 slices × 2 draws
        assert 0 <= r["auroc_pooled"] <= 1 and 0 <= r["dice_pooled"] <= 1
        assert set(r["auroc_split"]) == {"small/faint", "large/strong"}
    rows = {(r["set"], r["method"]): r for r in res["rows"]}
    assert rows["one-sided", "masked DPS (K = 3)"]["nfe"] == 2 * 2 * 3  # 2 NFE per step, per mask
    assert rows["one-sided", "masked DPS, no guidance"]["nfe"] == 2 * 3
    assert rows["one-sided", "AnoDDPM"]["nfe"] == 2 and rows["one-sided", "autoencoder"]["nfe"] == 0
    assert res["validation"]["masked DPS"]["chosen"] in ([200, 10.0], [100, 3.0])
    assert res["validation"]["AnoDDPM"]["chosen"] in (50, 100) and len(res["validation"]["AnoDDPM"]["auroc"]) == 2


def test_mirror_rows_match_a_direct_computation(res):
    """The mirror difference needs no network: recompute its pooled AUROC from the documented test set."""
    x, _ = ma.test_slices(2)
    sets = ma.lesion_sets(x, 2, 0)
    for name in ma.LESION_SETS:
        xl, truth = sets[name]
        want = pixel_auroc(mirror_difference(xl), truth, region=brain_mask(x).repeat(2, 1, 1, 1))
        row = next(r for r in res["rows"] if r["set"] == name and r["method"] == "mirror difference")
        assert row["auroc_pooled"] == pytest.approx(want, abs=1e-12)
    # blind to symmetric lesions: the lesioned slices stay symmetric, the map is float round-off
    assert float(mirror_difference(sets["symmetric"][0]).max()) < 1e-5


def test_test_and_validation_slices_are_disjoint():
    x, zs = ma.test_slices(24)
    assert zs == list(range(*HELD_OUT)) and torch.equal(x, mni_slices(size=32, split="test"))
    val = ma.validation_slices(6)
    assert (brain_mask(val).float().mean((1, 2, 3)) >= 0.5).all()
    assert not any(torch.equal(v, t) for v in val for t in x)


def test_per_mask_maps_average_to_the_library_map(nets):
    x = ma.test_slices(1)[0]
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    per = ma.mdps_per_mask(nets["prior"], x, linear_schedule(), masks=2, steps=2, t_start=50, scale=1.0, generator=g())
    ref = masked_dps_map(nets["prior"], x, linear_schedule(), masks=2, steps=2, t_start=50, scale=1.0, **ma.MDPS,
                         generator=g(), progress=False)  # fmt: skip
    assert per.shape == (2, 1, 1, 32, 32) and torch.allclose(per.mean(0), ref, atol=1e-6)


def test_mask_counts():
    assert ma._mask_counts(8) == [1, 2, 4, 8] and ma._mask_counts(6) == [1, 2, 4, 6] and ma._mask_counts(1) == [1]


def test_bench_is_deterministic(nets, res):
    again = ma.bench_medical_anomaly(**KW, models=nets)

    def strip(rows):  # everything but the timings
        return json.dumps([{k: v for k, v in r.items() if "seconds" not in k} for r in rows])

    assert strip(res["rows"]) == strip(again["rows"])


@pytest.mark.parametrize(
    "kw, match",
    [(dict(n=0), "n must"), (dict(n=25), "n must"), (dict(seeds=0), "seeds"), (dict(masks=0), "masks"),
     (dict(n_val=0), "n_val"), (dict(steps=0), "steps"), (dict(anoddpm_steps=0), "anoddpm_steps"),
     (dict(mdps_grid=()), "mdps_grid"), (dict(anoddpm_grid=()), "anoddpm_grid"),
     (dict(models={"unet": None}), "models")],
)  # fmt: skip
def test_bad_input_names_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        ma.bench_medical_anomaly(**{"progress": False, **kw})


def test_models_must_be_a_dict():
    with pytest.raises(TypeError, match="models"):
        ma.bench_medical_anomaly(models=["prior"], progress=False)


def test_run_writes_json_only_with_out(tmp_path, monkeypatch, nets):
    monkeypatch.setattr("diffu.pretrained.load", lambda name, device=None: nets[
        "autoencoder" if name == "mni_autoencoder" else "prior"])  # fmt: skip
    args = argparse.Namespace(out=None, tiny=True, device=None, argv=["--tiny"])
    res = ma.run_medical_anomaly(args)
    assert res["command"] == "python -m diffu.bench medical_anomaly --tiny"
    assert not list(tmp_path.iterdir())
    args.out = str(tmp_path)
    ma.run_medical_anomaly(args)
    saved = json.loads((tmp_path / "medical_anomaly.json").read_text())
    assert set(saved) >= {"rows", "validation", "images", "lesions", "command", "machine"}
    assert len(saved["rows"]) == 2 * (2 + len(ma.BASELINES))  # K = 1, 2 and the four baselines, per set
