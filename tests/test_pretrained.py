import json
import shutil
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

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


def test_load_casts_to_dtype():
    m = pretrained.load("fmnist_classifier", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())


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


def test_missing_file_names_the_retrain_command(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m diffu.pretrained train fmnist_classifier"):
        pretrained.load("fmnist_classifier")


def test_unknown_name():
    with pytest.raises(ValueError, match="name must be one of"):
        pretrained.load("imagenet_unet")


def test_manifest_is_valid_json():
    data = json.loads((pretrained.WEIGHTS_DIR / "manifest.json").read_text())
    assert data["fmnist_classifier"]["test_accuracy"] > 0.85


def test_sha256_of_a_known_file(tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")
    assert pretrained.sha256(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("name", pretrained.available())
def test_every_shipped_weight_loads_exactly(name):
    """The network built from the manifest's arch/config holds exactly the file's tensors (same keys, dtypes and
    values), is of the recorded class with the recorded config, frozen in eval mode, and runs."""
    e = pretrained.info(name)
    m = pretrained.load(name)
    assert f"{type(m).__module__}:{type(m).__qualname__}" == e["arch"]
    stored, sd = load_file(str(pretrained.WEIGHTS_DIR / e["file"])), m.state_dict()
    assert sorted(sd) == sorted(stored)
    for k, v in stored.items():
        assert sd[k].dtype == v.dtype and torch.equal(sd[k], v), k
    assert e["parameters"] == sum(p.numel() for k, p in m.named_parameters() if k in sd)
    if "config_class" in e:  # the config round-trips through JSON, tuples included
        assert f"{type(m.config).__module__}:{type(m.config).__qualname__}" == e["config_class"]
        assert json.loads(json.dumps(asdict(m.config))) == e["config"]
        assert all(not isinstance(v, list) for v in asdict(m.config).values())
    for arg, component in e.get("components", {}).items():  # frozen parts are the other shipped networks
        if arg in getattr(type(m), "INIT_COMPONENTS", ()):  # a starting point (a §7 student's teacher), not held
            assert not hasattr(m, arg) and component in pretrained.available()
            continue
        part, ref = getattr(m, arg).state_dict(), pretrained.load(component).state_dict()
        assert sorted(part) == sorted(ref) and all(torch.equal(part[k], ref[k]) for k in ref)
    assert not any(mod.training for mod in m.modules()) and not any(p.requires_grad for p in m.parameters())


def test_load_imports_only_the_network_module():
    """Loading fmnist_unet imports neither the recipes, the training loop nor the inverse-problem package, and the
    `list` command imports no recipes either (fresh interpreters)."""
    code = (
        "import sys, diffu.pretrained; diffu.pretrained.load('fmnist_unet'); "
        "print(sorted(m for m in sys.modules if m.startswith('diffu')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    mods = set(eval(out))  # noqa: S307 (our own print of a list of strings)
    assert {"diffu.pretrained", "diffu.nn.unet"} <= mods
    assert not {m for m in mods if m in ("diffu.recipes", "diffu.train") or m.startswith("diffu.inverse")}
    code = (
        "import sys; from diffu.pretrained.__main__ import main; main(['list']); "
        "assert 'diffu.recipes' not in sys.modules and 'diffu.train' not in sys.modules"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "fmnist_unet" in res.stdout and "python -m diffu.pretrained train fmnist_unet" in res.stdout


def test_build_makes_fresh_networks_from_an_entry():
    from diffu.nn import UNet

    e = pretrained.info("fmnist_unet")
    fresh, shipped = pretrained.build(e), pretrained.load("fmnist_unet")
    assert isinstance(fresh, UNet) and fresh.config == shipped.config and fresh.training
    assert any(not torch.equal(v, shipped.state_dict()[k]) for k, v in fresh.state_dict().items())
    # without config_class the config holds the class's keyword arguments
    clf = pretrained.build({"arch": "diffu.nn.classifier:FMNISTClassifier", "config": {"width": 16}})
    assert clf.body[0].out_channels == 16


def test_build_validates_the_entry(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="'diffu.module:Name'"):
        pretrained.build({"arch": "os:system", "config": {}})
    with pytest.raises(ValueError, match="'diffu.module:Name'"):
        pretrained.build({"arch": "UNet", "config": {}})
    with pytest.raises(ValueError, match="has no 'Nope'"):
        pretrained.build({"arch": "diffu.nn.unet:Nope", "config": {}})
    with pytest.raises(ValueError, match="torch.nn.Module subclass"):
        pretrained.build({"arch": "diffu.nn.unet:UNetConfig", "config": {}})
    with pytest.raises(ValueError, match="'arch' and a 'config' dict"):
        pretrained.build({"config": {}})
    # two entries whose components name each other are refused, not loaded forever
    man = {}
    for name, other in (("a", "b"), ("b", "a")):
        (tmp_path / f"{name}.safetensors").write_bytes(name.encode())
        man[name] = {"file": f"{name}.safetensors", "sha256": pretrained.sha256(tmp_path / f"{name}.safetensors"),
                     "command": "", "arch": "diffu.nn.controlnet:ControlledUNet", "config": {},
                     "components": {"base": other}}  # fmt: skip
    monkeypatch.setattr(pretrained, "_manifest", lambda: man)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="form a loop: a -> b -> a"):
        pretrained.load("a")


def test_dit_ablation_names_every_conditioning():
    from diffu.nn import CONDITIONINGS

    assert tuple(pretrained.DIT_ABLATION) == CONDITIONINGS
    assert set(pretrained.DIT_ABLATION.values()) <= set(pretrained.available())


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
        assert isinstance(m, DiT) and m.config.conditioning == cond == e["config"]["conditioning"]
        assert e["parameters"] == sum(p.numel() for p in m.parameters())
        assert len(e["loss_curve_50"]) == e["train_config"]["steps"] // 50
        recipes.add(json.dumps(e["train_config"], sort_keys=True))
    assert len(recipes) == 1  # same budget for all four
    t2i, e = pretrained.load("fmnist_t2i"), pretrained.info("fmnist_t2i")
    assert isinstance(t2i, MMDiT) and list(e["config"]["vocab"]) == vocabulary()
    with torch.no_grad():
        out = t2i(torch.randn(2, 1, 28, 28), torch.tensor([10.0, 900.0]), text=["a photo of a bag", ""])
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------------------------
# argument and manifest checks
# ---------------------------------------------------------------------------------------------------------------


def _tampered(monkeypatch, name, **changes):
    """Serve a manifest whose entry ``name`` has ``changes`` (a value None deletes the key)."""
    man = json.loads((pretrained.WEIGHTS_DIR / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            del man[name][key]
        else:
            man[name][key] = value
    monkeypatch.setattr(pretrained, "_manifest", lambda: man)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"sha256": None}, "manifest entry 'fmnist_classifier' has no 'sha256'"),
        ({"file": None}, "manifest entry 'fmnist_classifier' has no 'file'"),
        ({"arch": None}, "manifest entry 'fmnist_classifier' has no 'arch'"),
        ({"sha256": 12}, "manifest entry 'fmnist_classifier': 'sha256' must be a str, got int"),
        ({"sha256": "abc"}, "'sha256' must be 64 lower-case hex digits"),
        ({"config": [32]}, "'config' must be a dict, got list"),
        ({"file": "../manifest.json"}, "'file' must be a .safetensors file name in the weights folder"),
        ({"components": {"base": 3}}, "'components' must map argument names to model names"),
        ({"config_class": 3}, "'config_class' must be a str"),
        ({"config": {"width": 0}}, "manifest entry 'fmnist_classifier': its config does not build"),
        ({"config": {"depth": 3}}, "its config does not build .*unexpected keyword argument 'depth'"),
    ],
)
def test_regression_tampered_manifest_gives_a_named_error(monkeypatch, changes, match):
    """A manifest entry without 'sha256' raised KeyError: 'sha256'; every key a load needs is checked, with the
    entry and the key in the message."""
    _tampered(monkeypatch, "fmnist_classifier", **changes)
    with pytest.raises(ValueError, match=match):
        pretrained.load("fmnist_classifier")


def test_regression_another_models_file_is_named_not_loaded(monkeypatch):
    """An entry pointing at another model's file (with that file's hash) failed inside load_state_dict; the keys,
    shapes and dtypes of the file are compared with the network the entry describes first."""
    unet = pretrained.info("fmnist_unet")
    _tampered(monkeypatch, "fmnist_classifier", file=unet["file"], sha256=unet["sha256"])
    with pytest.raises(ValueError, match=r"fmnist_unet.safetensors does not hold the weights of the network that "
                       r"manifest entry 'fmnist_classifier' describes .*missing keys.*unexpected keys"):  # fmt: skip
        pretrained.load("fmnist_classifier")
    # the same architecture with another shape: a classifier entry whose config is half as wide
    _tampered(monkeypatch, "fmnist_classifier", config={"width": 16, "feature_dim": 128, "num_classes": 10})
    with pytest.raises(ValueError, match="tensors of another shape or dtype"):
        pretrained.load("fmnist_classifier")


def test_regression_unreadable_weights_file(tmp_path, monkeypatch):
    (tmp_path / "fmnist_classifier.safetensors").write_bytes(b"not a safetensors file")
    _tampered(monkeypatch, "fmnist_classifier", sha256=pretrained.sha256(tmp_path / "fmnist_classifier.safetensors"))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        pretrained.load("fmnist_classifier")


@pytest.mark.parametrize("name", ["fmnist_classifier", "fmnist_controlnet", "fmnist_t2i"])
def test_regression_load_leaves_the_global_rng_alone(name):
    """load() drew the networks' random initialisation from torch's global RNG before replacing it with the file's
    weights, so loading changed every later torch.randn of the user. The RNG state is the same after a load, and
    the loaded weights do not depend on it (bit-identical to the file)."""
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = pretrained.load(name).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(7)
    b = pretrained.load(name).state_dict()
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_build_still_draws_from_the_global_rng():
    """build() is a constructor: the same seed gives the same fresh network, and it does advance the RNG (as the
    recipes, built under seeded(seed), rely on); its shipped components are loaded without touching it."""
    from diffu.train import seeded

    e = pretrained.info("fmnist_classifier")
    with seeded(0):
        a = pretrained.build(e).state_dict()
    with seeded(0):
        b = pretrained.build(e).state_dict()
        after = torch.random.get_rng_state()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with seeded(0):
        assert not torch.equal(torch.random.get_rng_state(), after)


def test_load_checks_device_dtype_and_name():
    with pytest.raises(ValueError, match="device must name a torch device"):
        pretrained.load("fmnist_classifier", device="gpu0")
    with pytest.raises(TypeError, match="device must be a torch.device, a string or None"):
        pretrained.load("fmnist_classifier", device=0.5)
    with pytest.raises(ValueError, match="dtype must be a floating-point torch.dtype"):
        pretrained.load("fmnist_classifier", dtype=torch.int64)
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        pretrained.load("fmnist_classifier", dtype="float32")
    with pytest.raises(ValueError, match=r"name must be one of \(.*'fmnist_classifier'.*'fmnist_unet'"):
        pretrained.load("fmnist_unet2")
    with pytest.raises(ValueError, match="name must be one of"):
        pretrained.info(["fmnist_unet"])
    with pytest.raises(TypeError, match="path must be a string or a path"):
        pretrained.sha256(None)
    with pytest.raises(ValueError, match="entry must be a dict with 'arch'"):
        pretrained.build(["diffu.nn.unet:UNet"])
    with pytest.raises(ValueError, match="'components' must map argument names to model names"):
        pretrained.build({"arch": "diffu.nn.controlnet:ControlledUNet", "config": {}, "components": ["fmnist_unet"]})
    assert pretrained.load("fmnist_classifier", device="cpu", dtype=torch.float64).head.weight.dtype == torch.float64
