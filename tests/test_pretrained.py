import json
import shutil

import pytest
import torch

import diffu
from diffu import pretrained


def test_registry_lists_shipped_models_with_commands():
    names = pretrained.available()
    assert {"fmnist_unet", "fmnist_classifier", "fmnist_flow", "fmnist_noisy_classifier"} <= set(names)
    for name in names:
        e = pretrained.info(name)
        assert e["command"].startswith(f"python -m diffu.pretrained train {name}")
        assert len(e["sha256"]) == 64


def test_load_checks_hash_and_builds_model():
    m = pretrained.load("fmnist_unet")
    assert not m.training and m.num_classes == 10 and sum(p.numel() for p in m.parameters()) <= 4_000_000
    with torch.no_grad():
        out = m(torch.randn(2, 1, 28, 28), torch.tensor([10.0, 900.0]), y=torch.tensor([0, 10]))
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()


def test_checksum_mismatch_is_loud(tmp_path, monkeypatch):
    src = pretrained.WEIGHTS_DIR / pretrained.info("fmnist_classifier")["file"]
    bad = tmp_path / src.name
    shutil.copy(src, bad)
    with open(bad, "r+b") as f:  # flip one byte of the payload
        f.seek(-10, 2)
        b = f.read(1)
        f.seek(-10, 2)
        f.write(bytes([b[0] ^ 0xFF]))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(pretrained.ChecksumError, match="does not match"):
        pretrained.load("fmnist_classifier")


def test_unknown_name():
    with pytest.raises(ValueError, match="name must be one of"):
        pretrained.load("imagenet_unet")


def test_manifest_is_valid_json():
    data = json.loads((pretrained.WEIGHTS_DIR / "manifest.json").read_text())
    assert data["fmnist_classifier"]["test_accuracy"] > 0.85


def test_retrain_command_reproduces_prefix(tmp_path):
    """The retrain path works end to end (tiny run), writing weights + manifest entry that load() accepts."""
    pretrained.main(["train", "fmnist_classifier", "--steps", "3", "--out-dir", str(tmp_path),
                     "--workdir", str(tmp_path / "runs")])  # fmt: skip
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["fmnist_classifier"]["command"] == "python -m diffu.pretrained train fmnist_classifier --steps 3"
    assert pretrained.sha256(tmp_path / "fmnist_classifier.safetensors") == man["fmnist_classifier"]["sha256"]


def test_device_helper():
    assert diffu.device().type in ("cuda", "mps", "cpu")


def test_shipped_unet_samples_nan_free_over_whole_range():
    """All 1000 ancestral steps with the real network stay finite, and the result lies in the data range."""
    from diffu.samplers import Trajectory, ddpm
    from diffu.schedules import linear_schedule

    m = pretrained.load("fmnist_unet")
    traj = Trajectory(every=50)
    x = ddpm(m, (2, 1, 28, 28), linear_schedule(), model_kwargs={"y": torch.tensor([0, 10])}, callback=traj,
             generator=torch.Generator().manual_seed(0), progress=False)  # fmt: skip
    assert all(torch.isfinite(v).all() for v in traj.xs + traj.x0s) and torch.isfinite(x).all()
    assert float(x.abs().max()) < 1.5


def test_shipped_architecture_models_load_and_match_their_configs():
    """The four DiT conditioning variants and the text-to-image MMDiT (chapter §2.6) load with their recorded
    configs, share one training recipe, and the MMDiT's tokenizer is the one it was trained with."""
    from diffu.captions import vocabulary
    from diffu.nn import DiT, MMDiT

    recipes = set()
    for cond, name in pretrained.DIT_ABLATION.items():
        m, e = pretrained.load(name), pretrained.info(name)
        assert isinstance(m, DiT) and m.config.conditioning == cond == e["dit_config"]["conditioning"]
        assert e["parameters"] == sum(p.numel() for p in m.parameters())
        assert len(e["loss_curve_50"]) == e["train_config"]["steps"] // 50
        recipes.add(json.dumps(e["train_config"], sort_keys=True))
    assert len(recipes) == 1  # same budget for all four
    t2i, e = pretrained.load("fmnist_t2i"), pretrained.info("fmnist_t2i")
    assert isinstance(t2i, MMDiT) and list(e["mmdit_config"]["vocab"]) == vocabulary()
    with torch.no_grad():
        out = t2i(torch.randn(2, 1, 28, 28), torch.tensor([10.0, 900.0]), text=["a photo of a bag", ""])
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()
