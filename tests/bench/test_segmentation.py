"""The §6.2 segmentation benchmark (diffu/bench/segmentation.py) end to end with tiny seeded networks in place of the
shipped segmenters, and the committed results against the shipped models."""

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from diffu import pretrained
from diffu.bench import segmentation as sb
from diffu.metrics import dice
from diffu.nn import UNetConfig
from diffu.nn.concat import ConcatUNet, ConcatUNetConfig
from diffu.nn.medsegdiff import MedSegDiffConfig, MedSegDiffUNet
from diffu.nn.segnet import SegmentationUNet

RESULTS = Path(__file__).resolve().parents[2] / "book" / "results" / "segmentation.json"
KW = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=32)


@pytest.fixture(scope="module")
def nets():
    """A tiny network of each kind under every model name of METHODS."""
    out = {}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for dataset in sb.METHODS:
            for _, name, kind in sb.METHODS[dataset]:
                if kind == "unet":
                    out[name] = SegmentationUNet(UNetConfig(**KW, in_channels=1, out_channels=4))
                elif "medsegdiff" in name:
                    out[name] = MedSegDiffUNet(MedSegDiffConfig(**KW, in_channels=4, out_channels=4, cond_channels=1))
                else:
                    scale = 1000.0 if kind == "recursive" else 1.0
                    out[name] = ConcatUNet(ConcatUNetConfig(**KW, in_channels=4, out_channels=4, cond_channels=1,
                                                            time_scale=scale))  # fmt: skip
    for m in out.values():
        with torch.no_grad():  # a zero-initialised output layer would make every prediction the same
            for p in m.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return {k: m.eval() for k, m in out.items()}


@pytest.fixture(scope="module")
def res(nets):
    return sb.bench_segmentation(n=3, ensemble=5, steps=2, progress=False, models=nets, parts=("segmentation",))


@pytest.fixture(scope="module")
def others():
    """Tiny networks for the SDSeg, control and attention parts."""
    from diffu.captions import vocabulary
    from diffu.nn import MMDiT, MMDiTConfig, UNet
    from diffu.nn.adapter import AdaptedUNet
    from diffu.nn.autoencoder import Autoencoder, AutoencoderConfig
    from diffu.nn.controlnet import ControlledUNet

    with torch.random.fork_rng():
        torch.manual_seed(0)
        base = UNet(UNetConfig(**{**KW, "image_size": 28}))
        out = {
            "cardiac_mask_autoencoder": Autoencoder(AutoencoderConfig(channels=8, latent_channels=2, groups=4)),
            "cardiac_sdseg": ConcatUNet(
                ConcatUNetConfig(
                    **{**KW, "image_size": 8}, in_channels=2, out_channels=2, cond_channels=16, num_classes=3
                )
            ),  # fmt: skip
            "fmnist_mask_controlnet": ControlledUNet(base, cond_channels=2),
            "fmnist_mask_adapter": AdaptedUNet(base, cond_channels=2),
            "mni_label_controlnet": ControlledUNet(UNet(UNetConfig(**KW)), cond_channels=4),
            "fmnist_t2i": MMDiT(
                MMDiTConfig(
                    vocab=tuple(vocabulary()),
                    image_size=28,
                    in_channels=1,
                    patch_size=7,
                    hidden_size=16,
                    depth=2,
                    num_heads=2,
                    max_len=12,
                )
            ),  # fmt: skip
        }
    return {k: m.eval() for k, m in out.items()}


@pytest.fixture(scope="module")
def res_others(others):
    return sb.bench_segmentation(n=3, parts=("sdseg", "control", "attention"), sdseg_steps=(1, 3), seeds=2,
                                 n_control=3, control_steps=2, attention_timesteps=(100, 700), progress=False,
                                 models=others)  # fmt: skip


def test_rows_cover_every_dataset_and_method(res):
    want = [(d, label, name) for d in sb.DATASETS for label, name, _ in sb.METHODS[d]]
    assert [(r["dataset"], r["method"], r["model"]) for r in res["rows"]] == want and res["missing"] == []
    assert "sdseg" not in res and "control" not in res and "attention" not in res
    for r in res["rows"]:
        assert r["classes"] == list(sb.DATASETS[r["dataset"]][1:])
        sizes = [1] if r["kind"] == "unet" else [1, 2, 5]  # the SIZES that fit an ensemble of 5
        assert sorted(r["dice"]) == sizes
        for d in r["dice"].values():
            assert len(d) == 3 and all(len(row) == 3 for row in d)
            assert all(math.isnan(v) or 0 <= v <= 1 for row in d for v in row)
        if r["kind"] == "unet":
            assert r["uncertainty"] is None and r["nfe"] == 1
        else:
            u = r["uncertainty"]
            assert len(u["bin_error"]) == len(u["bin_uncertainty"]) == 10 and 0 <= u["error_rate"] <= 1
            assert r["nfe"] == (sb.RECURSIVE_STEPS if r["kind"] == "recursive" else 2)


def test_baseline_row_is_the_argmax_of_the_logits(nets, res):
    images, labels = sb.held_out_set("cardiac", 3)
    with torch.no_grad():
        want = dice(nets["cardiac_unet"](images).argmax(1), labels, 4)
    row = next(r for r in res["rows"] if r["model"] == "cardiac_unet")
    assert torch.allclose(torch.tensor(row["dice"][1]), want, equal_nan=True)


def test_bench_is_deterministic(nets, res):
    again = sb.bench_segmentation(n=3, ensemble=5, steps=2, progress=False, models=nets, datasets=("brain",),
                                  parts=("segmentation",))  # fmt: skip
    brain = [r for r in res["rows"] if r["dataset"] == "brain"]
    for a, b in zip(brain, again["rows"], strict=True):
        assert json.dumps(a["dice"]) == json.dumps(b["dice"])


def test_held_out_sets():
    for dataset in sb.DATASETS:
        x, y = sb.held_out_set(dataset, 6)
        assert x.shape == (6, 1, 32, 32) and y.shape == (6, 32, 32) and y.dtype == torch.int64
        assert float(x.min()) >= -1 and float(x.max()) <= 1 and set(y.unique().tolist()) == {0, 1, 2, 3}
        x2, y2 = sb.held_out_set(dataset, 6)
        assert torch.equal(x, x2) and torch.equal(y, y2)
    from diffu.data.cardiac import cardiac_phantoms

    train_x, _ = cardiac_phantoms(6, 32, seed=0)
    assert not any(torch.equal(a, b) for a in sb.held_out_set("cardiac", 6)[0] for b in train_x)


def test_dice_summary_by_hand():
    row = {"classes": ["a", "b"], "dice": {"1": [[1.0, float("nan")], [0.5, 0.25]], "2": [[1.0, 1.0], [1.0, 0.5]]}}
    assert sb.dice_summary(row, 1) == {"a": 0.75, "b": 0.25, "mean": 0.5}
    assert sb.dice_summary(row) == {"a": 1.0, "b": 0.75, "mean": 0.875}  # the largest ensemble
    with pytest.raises(ValueError, match="size"):
        sb.dice_summary(row, 5)


def test_missing_models_are_listed_not_fatal(nets, monkeypatch):
    monkeypatch.setattr(pretrained, "available", lambda: [])
    few = {k: v for k, v in nets.items() if k == "brain_unet"}
    out = sb.bench_segmentation(n=2, ensemble=2, steps=1, progress=False, models=few, datasets=("brain",),
                                parts=("segmentation", "sdseg"))  # fmt: skip
    assert [r["model"] for r in out["rows"]] == ["brain_unet"] and "sdseg" not in out
    assert out["missing"] == ["brain_wolleb", "brain_recursive", "cardiac_sdseg", "cardiac_mask_autoencoder"]


@pytest.mark.parametrize(
    "kw, match",
    [(dict(n=0), "n"), (dict(ensemble=0), "ensemble"), (dict(steps=0), "steps"),
     (dict(datasets=("liver",)), "datasets")],
)  # fmt: skip
def test_bad_input_names_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        sb.bench_segmentation(**kw, progress=False)


def test_run_writes_json_only_with_out(tmp_path, monkeypatch, nets):
    monkeypatch.setattr(sb, "bench_segmentation", lambda **kw: {**kw, "rows": [], "missing": [], "machine": "m"})
    args = argparse.Namespace(out=None, tiny=True, device=None, n_images=64, argv=[])
    sb.run_segmentation(args)
    assert not (tmp_path / "segmentation.json").exists()
    sb.run_segmentation(argparse.Namespace(**{**vars(args), "out": str(tmp_path)}))
    assert json.loads((tmp_path / "segmentation.json").read_text())["command"].startswith("python -m diffu.bench")


def test_sdseg_rows_match_a_direct_call(others, res_others):
    from diffu.segmentation import sdseg_schedule, sdseg_segment

    ceiling, *rows = res_others["sdseg"]
    assert ceiling["steps"] == 0 and len(ceiling["autoencoder_dice"]) == 3
    assert [(r["steps"], r["seed"]) for r in rows] == [(1, 0), (1, 1), (3, 0), (3, 1)]
    assert res_others["sdseg_classes"] == ["LV blood pool", "myocardium", "RV"]
    images, labels = sb.held_out_set("cardiac", 3)
    g = torch.Generator().manual_seed(1)
    out = sdseg_segment(others["cardiac_sdseg"], others["cardiac_mask_autoencoder"], images, sdseg_schedule(),
                        num_structures=3, steps=3, generator=g, progress=False)  # fmt: skip
    assert torch.allclose(torch.tensor(rows[3]["dice"]), dice(out.labels, labels, 4), equal_nan=True)
    want = dice((out.scores[:, 1] > 0).long(), (labels == 2).long(), 2)[:, 0]
    assert torch.allclose(torch.tensor(rows[3]["query_dice"])[:, 1], want, equal_nan=True)
    assert rows[0]["nfe"] == 3 and rows[2]["nfe"] == 9 and all(r["seconds_per_image"] > 0 for r in rows)


def test_control_rows(others, res_others):
    from diffu.recipes import mask_fidelity_score

    rows = res_others["control"]
    assert [r["method"] for r in rows] == ["ControlNet", "T2I-Adapter"]
    for r in rows:
        assert list(r["fidelity"]) == [str(s) for s in sb.CONTROL_SCALES]
        assert all(len(v["dice"]) == 3 for v in r["fidelity"].values())
        m = others[r["model"]]
        assert r["trainable_parameters"] == sum(p.numel() for p in m.parameters() if p.requires_grad) > 0
        frozen = sum(p.numel() for p in m.base.parameters())
        assert r["trainable_parameters"] == sum(p.numel() for p in m.parameters()) - frozen
    # strength 0 is the frozen UNet: the same samples, so the same fidelity, for both models
    assert rows[0]["fidelity"]["0.0"] == rows[1]["fidelity"]["0.0"]
    direct = mask_fidelity_score(others["fmnist_mask_controlnet"], n=3, steps=2, seed=2, per_image=True)
    assert rows[0]["fidelity"]["1.0"] == direct


def test_attention_part(others, res_others):
    a = res_others["attention"]
    assert a["timesteps"] == [100, 700] and a["layers"] == ["0", "1", "mean"]
    for which in ("own", "other_class"):
        iou = torch.tensor(a[which]["iou"])
        assert iou.shape == (2, 3, 3) and bool(((iou >= 0) & (iou <= 1)).all())
    assert len(a["image_otsu"]) == len(a["all_foreground"]) == 3
    assert all(b >= o for b, o in zip(a["image_otsu_best"], a["image_otsu"]))


def _tiny_segmenter():
    return SegmentationUNet(UNetConfig(**KW, in_channels=1, out_channels=4))


@pytest.fixture(scope="module")
def res_synthesis(nets, others):
    models = {"mni_label_controlnet": others["mni_label_controlnet"], "brain_unet": nets["brain_unet"]}
    return sb.bench_segmentation(n=3, parts=("synthesis",), control_steps=2, progress=False, models=models)


def test_synthesis_part(nets, others, res_synthesis):
    """Fidelity per strength is brain_unet's Dice of the slice drawn for each held-out map against that map;
    strength 0 is the frozen prior (a ControlNet at strength 0 adds nothing); ``real`` is the ceiling."""
    from diffu.control import label_fidelity, label_map_condition
    from diffu.samplers import ddim
    from diffu.schedules import linear_schedule

    sy = res_synthesis["synthesis"]
    assert sy["classes"] == list(sb.DATASETS["brain"][1:]) and sy["n"] == 3 and sy["steps"] == 2
    assert list(sy["fidelity"]) == [str(s) for s in sb.CONTROL_SCALES]
    images, labels = sb.held_out_set("brain", 3)
    seg, cn = nets["brain_unet"], others["mni_label_controlnet"]
    with torch.no_grad():
        assert torch.allclose(torch.tensor(sy["real"]), dice(seg(images).argmax(1), labels, 4), equal_nan=True)
    base = cn.base
    x = ddim(base, (3, 1, 32, 32), linear_schedule(), steps=2, generator=torch.Generator().manual_seed(0),
             progress=False)  # fmt: skip
    want = label_fidelity(x, labels, seg, 4).dice
    assert torch.allclose(torch.tensor(sy["fidelity"]["0.0"]), want, equal_nan=True)
    x = ddim(cn, (3, 1, 32, 32), linear_schedule(), steps=2, generator=torch.Generator().manual_seed(0),
             model_kwargs={"cond": label_map_condition(labels, 4)}, progress=False)  # fmt: skip
    want = label_fidelity(x, labels, seg, 4).dice
    assert torch.allclose(torch.tensor(sy["fidelity"]["1.0"]), want, equal_nan=True)
    assert sy["trainable_parameters"] == sum(p.numel() for p in cn.parameters()) - sum(
        p.numel() for p in base.parameters()
    )


def test_augmentation_arms_differ_only_in_the_added_pairs(others, monkeypatch):
    """Each arm trains the same initialisation on its own pairs: real only, real + synthetic, real + the real slices
    of the synthetic pairs' maps. The run is deterministic; a bad configuration names its key."""
    from diffu import train as train_module

    seen = []
    real_train = train_module.train

    def spy(model, loss, data, config, **kw):
        seen.append((data, config, [p.detach().clone() for p in model.parameters()]))
        return real_train(model, loss, data, config, **kw)

    monkeypatch.setattr(train_module, "train", spy)
    cfg = dict(n_real=3, n_synthetic=4, steps=2, batch_size=4, seeds=2, ddim_steps=2)
    gen = others["mni_label_controlnet"]
    out = sb.bench_augmentation(gen, n=3, build_segmenter=_tiny_segmenter, progress=False, **cfg)
    assert out["arms"] == list(sb.AUGMENTATION_ARMS) and out["config"] == {**sb.AUGMENTATION, **cfg}
    assert all(len(out["dice"][a]) == 2 and all(len(r) == 3 for r in out["dice"][a]) for a in out["arms"])
    assert len(seen) == 6  # seeds × arms, seed-major
    (r, _, w0), (rs, _, w1), (rr, c2, w2) = seen[:3]
    assert r[0].shape[0] == 3 and rs[0].shape[0] == rr[0].shape[0] == 7
    assert torch.equal(rs[0][:3], r[0]) and torch.equal(rr[0][:3], r[0])  # the same labelled slices
    assert torch.equal(rs[1], rr[1]) and not torch.equal(rs[0][3:], rr[0][3:])  # same maps, other images
    assert all(torch.equal(a, b) for a, b in zip(w0, w1)) and all(torch.equal(a, b) for a, b in zip(w0, w2))
    assert not all(torch.equal(a, b) for a, b in zip(w0, seen[3][2]))  # seed 1: another initialisation
    assert c2.steps == 2 and c2.batch_size == 4 and c2.ema_decay is None and c2.seed == 0
    again = sb.bench_augmentation(gen, n=3, build_segmenter=_tiny_segmenter, progress=False, **cfg)
    assert again["dice"] == out["dice"]
    with pytest.raises(TypeError, match="epochs"):
        sb.bench_augmentation(gen, epochs=3)
    with pytest.raises(ValueError, match="n_real"):
        sb.bench_augmentation(gen, n_real=0)


def test_parts_choose_what_runs(nets):
    out = sb.bench_segmentation(n=2, parts=(), progress=False, models=nets)
    assert out["parts"] == [] and "rows" not in out and out["missing"] == []
    with pytest.raises(ValueError, match="parts"):
        sb.bench_segmentation(parts=("everything",), progress=False)


def test_committed_results_cover_every_shipped_segmenter():
    """book/results/segmentation.json has a row for each method whose model is shipped (and lists the rest as
    missing), from the full configuration: 64 held-out images, ensembles of 10, DDIM 10."""
    r = json.loads(RESULTS.read_text())
    shipped = set(pretrained.available())
    want = [(d, name) for d in sb.DATASETS for _, name, _ in sb.METHODS[d] if name in shipped]
    assert [(row["dataset"], row["model"]) for row in r["rows"]] == want
    every = [name for d in sb.DATASETS for _, name, _ in sb.METHODS[d]]
    every += ["cardiac_sdseg", "cardiac_mask_autoencoder", *(name for _, name in sb.CONTROL_MODELS)]
    every += [sb.SYNTHESIS_MODEL, "fmnist_t2i"]
    assert r["missing"] == [name for name in every if name not in shipped]
    assert r["parts"] == list(sb.PARTS) and r["command"] == "python -m diffu.bench segmentation"
    assert (r["n"], r["ensemble"], r["steps"]) == (64, 10, 10)
    for row in r["rows"]:
        assert all(len(d) == 64 for d in row["dice"].values())
    assert ("sdseg" in r) == ({"cardiac_sdseg", "cardiac_mask_autoencoder"} <= shipped)
    assert [c["model"] for c in r["control"]] == [name for _, name in sb.CONTROL_MODELS if name in shipped]
    assert all(len(v["dice"]) == 256 for c in r["control"] for v in c["fidelity"].values())
    assert [c["trainable_parameters"] for c in r["control"]] == [pretrained.info(c["model"])["parameters"]
                                                                 for c in r["control"]]  # fmt: skip
    from diffu.control import sudden_convergence

    for c in r["control"]:  # the verdicts are the rule applied to the stored curve (the manifest's monitor)
        assert c["curve"] == pretrained.info(c["model"])["monitor"]
        steps, d = [p["step"] for p in c["curve"]], [p["dice"] for p in c["curve"]]
        assert c["sudden_convergence"] == sudden_convergence(steps, d)._asdict()
        progress = [(x - d[0]) / (max(d) - d[0]) for x in d]
        assert c["sudden_convergence_progress"] == sudden_convergence(steps, progress)._asdict()
    assert ("synthesis" in r) == ("augmentation" in r) == (sb.SYNTHESIS_MODEL in shipped)
    if sb.SYNTHESIS_MODEL in shipped:
        sy, au = r["synthesis"], r["augmentation"]
        assert sy["curve"] == pretrained.info(sb.SYNTHESIS_MODEL)["monitor"] and (sy["n"], sy["steps"]) == (64, 20)
        assert list(sy["fidelity"]) == [str(s) for s in sb.CONTROL_SCALES] and len(sy["real"]) == 64
        assert all(len(v) == 64 for v in sy["fidelity"].values())
        assert sy["trainable_parameters"] == pretrained.info(sb.SYNTHESIS_MODEL)["parameters"]
        assert au["config"] == sb.AUGMENTATION and au["arms"] == list(sb.AUGMENTATION_ARMS) and au["n"] == 64
        assert all(len(au["dice"][a]) == sb.AUGMENTATION["seeds"] for a in au["arms"])
