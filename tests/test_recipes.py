import json

import pytest
import torch
from safetensors.torch import load_file

from diffu import pretrained, recipes
from diffu.pretrained.__main__ import main as cli
from diffu.schedules import linear_schedule
from diffu.train import TrainConfig, seeded


def test_every_shipped_weight_has_a_recipe_and_back():
    assert sorted(recipes.RECIPES) == pretrained.available()
    for r in recipes.RECIPES.values():
        assert {"description", "build", "config", "use_ema"} <= set(r) and isinstance(r["config"], TrainConfig)
        assert callable(r.get("loss")) != callable(r.get("make_loss"))  # a loss, or a factory of a stateful one


def _inputs(m):
    """A fixed input for each architecture family (forward passes of the shipped networks)."""
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([10.0, 500.0, 900.0])
    x = torch.randn(3, 1, 28, 28, generator=g)
    kind = type(m).__name__
    if kind in ("UNet", "DiT", "StudentUNet"):
        c = m.config
        size = c.image_size
        x = torch.randn(3, c.in_channels, size, size, generator=g)
        return (x, t), ({"y": torch.tensor([0, 3, 10])} if m.num_classes else {})
    if kind in ("ConcatUNet", "MedSegDiffUNet"):  # the paired T1 → T2 model of §5: the condition is concatenated to x_t
        c = m.config
        x = torch.randn(3, c.in_channels, c.image_size, c.image_size, generator=g)
        return (x, t), {"cond": torch.randn(3, c.cond_channels, c.image_size, c.image_size, generator=g)}
    if kind == "MMDiT":
        return (x, t), {"text": ["a photo of a bag", "", "a dark ankle boot"]}
    if kind == "NoisyClassifier":
        return (x, t), {}
    if kind == "DRUNet":
        return (x, 0.1), {}
    if kind == "ControlledUNet":
        return (x, t), {"cond": torch.rand(3, m.control.cond_channels, 28, 28, generator=g)}
    if kind == "GuidedUNet":
        return (x, t), {"y": torch.tensor([0, 3, 10]), "scale": 3.0}
    if kind == "AdaptedUNet":
        return (x, t), {"cond": torch.rand(3, m.config.cond_channels, 28, 28, generator=g)}
    if kind == "KernelUNet":
        return (torch.randn(3, 1, 9, 9, generator=g), t), {}
    return (x,), {}  # FMNISTClassifier, Autoencoder, Restorer


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_manifest_network_is_the_recipes_network(name):
    """The loader builds each network from the manifest alone; the recipe builds it in Python. Both must be the same
    network: same class and config, the same fresh weights from the same seed (so pretrained.build can stand in for
    the recipe's build), and with the shipped weights the same outputs."""
    ours = pretrained.load(name)
    with seeded(0):
        theirs = recipes.RECIPES[name]["build"]()
    with seeded(0):
        fresh = pretrained.build(pretrained.info(name))
    assert type(ours) is type(theirs) is type(fresh)
    assert getattr(ours, "config", None) == getattr(theirs, "config", None) == getattr(fresh, "config", None)
    a, b = fresh.state_dict(), theirs.state_dict()
    assert list(a) == list(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    theirs.load_state_dict(load_file(str(pretrained.WEIGHTS_DIR / pretrained.info(name)["file"])))
    theirs.eval()
    args, kwargs = _inputs(ours)
    with torch.no_grad():
        assert torch.equal(ours(*args, **kwargs), theirs(*args, **kwargs))
    entry = recipes.network_entry(theirs, recipes.RECIPES[name].get("network"))
    info = pretrained.info(name)
    assert json.loads(json.dumps(entry)) == {k: info[k] for k in entry}  # what a retrain would write


def test_network_entry_needs_a_config():
    from diffu.nn import FMNISTClassifier, UNet

    e = recipes.network_entry(UNet(channels=8, channel_mult=(1,), attn_resolutions=()))
    assert e["arch"] == "diffu.nn.unet:UNet" and e["config_class"] == "diffu.nn.unet:UNetConfig"
    assert e["config"]["channels"] == 8 and isinstance(pretrained.build(e), UNet)
    with pytest.raises(ValueError, match="no config dataclass"):
        recipes.network_entry(FMNISTClassifier())
    assert recipes.network_entry(FMNISTClassifier(), {"config": {}})["config"] == {}


def test_train_recipe_rejects_unknown_names():
    with pytest.raises(ValueError, match="name must be one of"):
        recipes.train_recipe("imagenet_unet")


def test_retrain_command_writes_an_entry_the_loader_reads(tmp_path):
    """The retrain path works end to end (tiny run through the CLI), writing weights and a manifest entry in the
    loader's format; an older entry's notes survive, its old-format network keys do not."""
    old = {"fmnist_classifier": {"arch": "FMNISTClassifier", "fmnistclassifier_config": {"width": 32}, "note": "kept"}}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    cli(["train", "fmnist_classifier", "--steps", "3", "--out-dir", str(tmp_path), "--workdir", str(tmp_path / "runs")])
    e = json.loads((tmp_path / "manifest.json").read_text())["fmnist_classifier"]
    assert e["command"] == "python -m diffu.pretrained train fmnist_classifier --steps 3"
    assert pretrained.sha256(tmp_path / "fmnist_classifier.safetensors") == e["sha256"]
    assert e["note"] == "kept" and "fmnistclassifier_config" not in e and e["train_config"]["steps"] == 3
    assert e["arch"] == "diffu.nn.classifier:FMNISTClassifier" and "config_class" not in e
    m = pretrained.build(e)
    m.load_state_dict(load_file(str(tmp_path / e["file"])))  # strict: every key, every shape
    assert len(e["loss_curve_50"]) == 1 and 0 < e["test_accuracy"] <= 1


def test_retrain_of_a_config_dataclass_network(tmp_path):
    path, e = recipes.train_recipe("fmnist_restorer", steps=2, out_dir=tmp_path, workdir=tmp_path, progress=False)
    assert e["arch"] == "diffu.nn.controlnet:Restorer" and e["config_class"] == "diffu.nn.controlnet:RestorerConfig"
    assert json.loads((tmp_path / "manifest.json").read_text())["fmnist_restorer"] == json.loads(json.dumps(e))
    m = pretrained.build(json.loads(json.dumps(e)))  # through JSON, as the loader reads it
    m.load_state_dict(load_file(str(path)))
    assert m.config == pretrained.load("fmnist_restorer").config


def test_retrain_of_a_network_with_components(tmp_path, monkeypatch):
    """A ControlNet adapter's entry names its frozen parts; the loader rebuilds them from the shipped weights."""
    recipe = dict(recipes.RECIPES["fmnist_controlnet"])
    recipe["config"] = TrainConfig(steps=2, batch_size=4, lr=1e-3, ema_decay=0.9, seed=0)
    monkeypatch.setitem(recipes.RECIPES, "fmnist_controlnet", recipe)
    path, e = recipes.train_recipe("fmnist_controlnet", out_dir=tmp_path, workdir=tmp_path, progress=False)
    assert e["components"] == {"base": "fmnist_unet", "restorer": "fmnist_restorer"}
    m = pretrained.build(json.loads(json.dumps(e)))
    saved = load_file(str(path))
    m.load_state_dict(saved)  # strict: the adapter-only file is complete
    shipped = pretrained.load("fmnist_controlnet").state_dict()
    assert sorted(saved) == sorted(shipped) and any(not torch.equal(saved[k], shipped[k]) for k in saved)


def test_recipes_train_as_recorded():
    """Each recipe's TrainConfig is the one its shipped weights were trained with (the manifest's train_config), up
    to the step count that a recorded ``--steps`` overrides."""
    from dataclasses import asdict

    for name, recipe in recipes.RECIPES.items():
        e = pretrained.info(name)
        cfg, cmd = asdict(recipe["config"]), e["command"].split()
        if "--steps" in cmd:
            cfg["steps"] = int(cmd[cmd.index("--steps") + 1])
        assert cfg == e["train_config"], name
        assert e["description"] == recipe["description"], name


def test_train_recipe_and_network_entry_check_their_arguments(tmp_path):
    from diffu.nn import UNet

    for kwargs, error, match in (
        ({"steps": 0}, ValueError, "steps must be an integer >= 1, got 0"),
        ({"steps": 2.5}, ValueError, "steps must be an integer >= 1"),
        ({"out_dir": None}, TypeError, "out_dir must be a folder"),
        ({"workdir": 3}, TypeError, "workdir must be a folder"),
        ({"progress": "no"}, TypeError, "progress must be True or False"),
        ({"device": "gpu0"}, ValueError, "device must name a torch device"),
    ):
        with pytest.raises(error, match=match):
            recipes.train_recipe("fmnist_classifier", **{"out_dir": tmp_path, "workdir": tmp_path, **kwargs})
    assert not list(tmp_path.iterdir())  # nothing was trained or written
    with pytest.raises(ValueError, match=r"name must be one of \(.*'fmnist_unet'"):
        recipes.train_recipe(["fmnist_unet"])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        recipes.network_entry("UNet")
    with pytest.raises(TypeError, match="network must be a dict"):
        recipes.network_entry(UNet(channels=8, channel_mult=(1,), attn_resolutions=()), ["config"])


def test_regression_train_command_refuses_nonpositive_steps(capsys):
    """``--steps 0`` or ``--threads -1`` reached the training loop; argparse now refuses them with its usage."""
    for argv in (["train", "fmnist_classifier", "--steps", "0"], ["train", "fmnist_classifier", "--threads", "-1"]):
        with pytest.raises(SystemExit):
            cli(argv)
        assert "invalid _positive_int value" in capsys.readouterr().err
    with pytest.raises(TypeError, match="argv must be a list of strings"):
        cli("train fmnist_classifier")
    with pytest.raises(TypeError, match="argv must be a list of strings"):
        recipes.main(["fmnist_classifier", 3])


def test_a_monitored_recipe_trains_as_the_plain_one_and_records_its_curve(tmp_path, monkeypatch):
    """A recipe with a ``monitor`` trains in chunks resumed from the checkpoint: the same weights as one plain run,
    and a curve scored at step 0 and after every chunk (a resumed run scores from its resume point on)."""
    base = dict(recipes.RECIPES["fmnist_restorer"])
    base["config"] = TrainConfig(steps=5, batch_size=4, lr=1e-3, ema_decay=0.9, seed=0)
    seen = []

    def score(model):
        seen.append(model.training)
        return {"norm": float(sum(p.detach().double().square().sum() for p in model.parameters()))}

    monkeypatch.setitem(recipes.RECIPES, "fmnist_restorer", base)
    plain_path, _ = recipes.train_recipe("fmnist_restorer", out_dir=tmp_path / "a", workdir=tmp_path / "wa",
                                         progress=False)  # fmt: skip
    monkeypatch.setitem(recipes.RECIPES, "fmnist_restorer", {**base, "monitor": {"every": 2, "fn": score}})
    path, e = recipes.train_recipe("fmnist_restorer", out_dir=tmp_path / "b", workdir=tmp_path / "wb",
                                   progress=False)  # fmt: skip
    a, b = load_file(str(plain_path)), load_file(str(path))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert [p["step"] for p in e["monitor"]] == [0, 2, 4, 5] and not any(seen)  # scored in eval mode
    assert e["monitor"][-1]["norm"] == pytest.approx(float(sum(v.double().square().sum() for v in b.values()
                                                                 if v.is_floating_point())), rel=1e-9)  # fmt: skip
    assert len({p["norm"] for p in e["monitor"]}) == 4  # the weights change between the points
    # interrupted after step 3 (a checkpoint at step 3): the rerun scores steps 4 and 5 only
    from diffu.data import fashion_mnist
    from diffu.train import train

    with seeded(base["config"].seed):
        m = base["build"]()
    (tmp_path / "wc").mkdir()
    ckpt = tmp_path / "wc" / "fmnist_restorer.ckpt.safetensors"
    train(
        m,
        base["loss"],
        base["data"](*fashion_mnist("train")),
        base["config"],
        checkpoint=ckpt,
        progress=False,
        stop_after=3,
    )
    path, e = recipes.train_recipe("fmnist_restorer", out_dir=tmp_path / "c", workdir=tmp_path / "wc",
                                   progress=False)  # fmt: skip
    assert [p["step"] for p in e["monitor"]] == [4, 5]
    c = load_file(str(path))
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_monitor_steps_every_and_at():
    steps = recipes._monitor_steps
    assert steps({"every": 100, "fn": None}, 350) == [100, 200, 300, 350]
    assert steps({"every": 100, "at": [10, 20, 100, 999, 0], "fn": None}, 350) == [10, 20, 100, 200, 300, 350]
    assert steps({"at": [3], "fn": None}, 5) == [3, 5]
    m = recipes.MASK_MONITOR
    assert steps(m, 1200)[:20] == [*range(10, 200, 10), 200] and steps(m, 1200)[-1] == 1200


def test_a_stateful_loss_is_made_fresh_for_every_run(tmp_path, monkeypatch):
    """A recipe's ``make_loss`` (a loss that keeps state between steps, such as RecursiveLevelLoss) is called once
    per training run, and that run trains with the object it returns."""
    base = dict(recipes.RECIPES["fmnist_restorer"])
    base["config"] = TrainConfig(steps=2, batch_size=4, lr=1e-3, ema_decay=None, seed=0)
    made = []

    def make_loss():
        calls = []
        made.append(calls)

        def loss(m, x, generator):
            calls.append(1)
            return base["loss"](m, x, generator)

        return loss

    monkeypatch.setitem(recipes.RECIPES, "fmnist_restorer", {**base, "make_loss": make_loss, "use_ema": False})
    for run in ("a", "b"):
        recipes.train_recipe("fmnist_restorer", out_dir=tmp_path / run, workdir=tmp_path / run, progress=False)
    assert [len(c) for c in made] == [2, 2]


class _MaskOracle(torch.nn.Module):
    """An ε-model whose x̂_0 is ``sign`` × the requested foreground map (``cond[:, 1]``, +1 on the item): DDIM then
    returns exactly that map, so a positive oracle follows every mask and a negative one draws nothing."""

    def __init__(self, sign):
        super().__init__()
        self.sign, self.w = sign, torch.nn.Parameter(torch.zeros(()))
        self.abar = linear_schedule().alpha_bar

    def forward(self, x, t, cond):
        a = self.abar[t.long()].view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.sign * cond[:, 1:2]) / (1 - a).sqrt()


def test_mask_fidelity_score_of_oracles():
    """The monitor of the mask-control recipes: a model that draws exactly the requested mask scores 1, one that
    draws nothing scores 0; the same seed gives the same score."""
    good = recipes.mask_fidelity_score(_MaskOracle(1.0), n=6, steps=5)
    assert good == pytest.approx({"dice": 1.0, "iou": 1.0})
    assert recipes.mask_fidelity_score(_MaskOracle(-1.0), n=6, steps=5) == {"dice": 0.0, "iou": 0.0}
    per = recipes.mask_fidelity_score(_MaskOracle(1.0), n=6, steps=5, per_image=True)
    assert per == {"dice": [1.0] * 6, "iou": [1.0] * 6}
    with pytest.raises(TypeError, match="model"):
        recipes.mask_fidelity_score(lambda x, t, cond: x)


class _TissueOracle(torch.nn.Module):
    """An ε-model whose x̂_0 paints each tissue of the requested one-hot map (``cond``, ±1) with one intensity
    (``means[k]`` for class k): with the T1 slices' mean intensities it draws a cartoon of the requested anatomy."""

    def __init__(self, means):
        super().__init__()
        self.means, self.w = torch.as_tensor(means, dtype=torch.float32), torch.nn.Parameter(torch.zeros(()))
        self.abar = linear_schedule().alpha_bar.float()

    def forward(self, x, t, cond):
        a = self.abar[t.long()].view(-1, 1, 1, 1)
        x0 = ((cond + 1) / 2 * self.means.view(1, 4, 1, 1)).sum(1, keepdim=True)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()


def test_label_fidelity_score_of_oracles():
    """The monitor of mni_label_controlnet: a model painting the requested map with the tissues' mean T1 intensities
    (measured on augmented slices: background −0.98, CSF −0.17, GM 0.27, WM 0.63) is segmented by brain_unet as that
    map (Dice > 0.9 on each image); one that ignores the map and draws background scores 0."""
    from diffu.data.mni import augmented_slices

    s = augmented_slices(100, seed=100)
    means = [float(s["t1"][:, 0][s["labels"] == k].mean()) for k in range(4)]
    per = recipes.label_fidelity_score(_TissueOracle(means), n=6, steps=5, per_image=True)
    assert len(per["dice"]) == 6 and min(per["dice"]) > 0.9
    assert [len(r) for r in per["per_class"]] == [3] * 6
    mean = recipes.label_fidelity_score(_TissueOracle(means), n=6, steps=5)
    assert mean["dice"] == pytest.approx(sum(per["dice"]) / 6)
    assert recipes.label_fidelity_score(_TissueOracle([-1.0] * 4), n=6, steps=5) == {"dice": 0.0}
    with pytest.raises(TypeError, match="model"):
        recipes.label_fidelity_score(lambda x, t, cond: x)
    with pytest.raises(ValueError, match="steps"):
        recipes.label_fidelity_score(_TissueOracle(means), steps=0)


def test_label_control_recipe_pairs_slices_with_their_tissue_maps(monkeypatch):
    """mni_label_controlnet trains on the slices of brain_unet/mni_t1_prior (20 000 augmented slices, seed 0; 64 of
    them here, to keep the test short) with their own 4-class maps, one-hot on the ±1 scale, and its control branch
    starts from the frozen prior (zero convolutions: the same output)."""
    from diffu.data import mni
    from diffu.pretrained import load

    calls, real = [], mni.augmented_slices

    def few(n, size=32, **kw):
        calls.append((n, size, kw))
        return real(64, size, **kw)

    monkeypatch.setattr(mni, "augmented_slices", few)
    r = recipes.RECIPES["mni_label_controlnet"]
    images, cond = r["data"](None, None)
    t1, labels = recipes.RECIPES["brain_unet"]["data"](None, None)
    assert calls == [(20_000, 32, {"seed": 0})] * 2
    assert torch.equal(images, t1) and cond.shape == (64, 4, 32, 32)
    assert torch.equal(cond.argmax(1), labels) and set(cond.unique().tolist()) == {-1.0, 1.0}
    m = r["build"]()
    x, t = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 900])
    with torch.no_grad():
        assert torch.equal(m(x, t, cond=cond[:2]), load("mni_t1_prior")(x, t))


def test_mask_recipe_data_are_shifted_pairs():
    """The mask-control recipes train on items shifted by up to MASK_SHIFT pixels with the masks of the shifted items
    as two-channel label-map conditions (+1 in channel 1 on the item)."""
    from diffu.data import fashion_mnist
    from diffu.data.textured import foreground_masks

    x, y = fashion_mnist("train")
    images, cond = recipes.RECIPES["fmnist_mask_controlnet"]["data"](x[:50], y[:50])
    assert images.shape == (50, 1, 28, 28) and cond.shape == (50, 2, 28, 28)
    assert torch.equal(cond[:, 1] > 0, foreground_masks(images).bool()) and torch.equal(cond[:, 0], -cond[:, 1])
    # the items moved (centroids differ from the originals'), by at most MASK_SHIFT pixels
    rows = torch.arange(28.0).view(1, 28, 1)
    cy = lambda m: (m * rows).sum((1, 2)) / m.sum((1, 2))  # noqa: E731
    moved = (cy(foreground_masks(images).float()) - cy(foreground_masks(x[:50]).float())).abs()
    assert moved.max() > 2 and moved.max() <= recipes.MASK_SHIFT + 1


def test_a_stateful_loss_history_is_recorded_in_windows(tmp_path, monkeypatch):
    """A make_loss object with a per-step ``history`` (ADD's discriminator record) is stored in the manifest entry
    as means over windows of 50 steps, NaN entries skipped."""
    base = dict(recipes.RECIPES["fmnist_restorer"])
    base["config"] = TrainConfig(steps=3, batch_size=4, lr=1e-3, ema_decay=None, seed=0)

    class Loss:
        def __init__(self):
            self.history = []

        def __call__(self, m, x, generator):
            self.history.append({"a": float(len(self.history)), "b": float("nan")})
            return base["loss"](m, x, generator)

    monkeypatch.setitem(recipes.RECIPES, "fmnist_restorer", {**base, "make_loss": Loss, "use_ema": False})
    _, entry = recipes.train_recipe("fmnist_restorer", out_dir=tmp_path, workdir=tmp_path, progress=False)
    assert entry["loss_history_50"] == {"a": [1.0], "b": [None]}
