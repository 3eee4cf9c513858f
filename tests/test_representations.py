import json

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from diffu.bench.cli import main as bench_main  # noqa: E402
from diffu.nn import UNet, UNetConfig  # noqa: E402
from diffu.recipes import RECIPES  # noqa: E402
from diffu.representations import (  # noqa: E402
    linear_probe,
    pooled_features,
    probe_sweep,
    unet_features,
    unet_levels,
    unet_summary,
    zero_skips,
)
from diffu.schedules import linear_schedule  # noqa: E402
from diffu.viz import show_feature_maps, unet_diagram  # noqa: E402

TINY = UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), image_size=8,
                  num_classes=3, groups=4)  # fmt: skip
LEVELS = ["down0 8×8", "down1 4×4", "mid 4×4", "up1 4×4", "up0 8×8"]


@pytest.fixture
def tiny():
    torch.manual_seed(0)  # test-side seeding only; the zero-initialised layers get random weights so outputs move
    m = UNet(TINY)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m.eval()


def _x(n=5, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_levels_and_feature_shapes(tiny):
    assert unet_levels(tiny) == LEVELS
    feats = unet_features(tiny, _x(), 10)
    assert list(feats) == LEVELS
    shapes = {k: tuple(v.shape) for k, v in feats.items()}
    assert shapes == {"down0 8×8": (5, 8, 8, 8), "down1 4×4": (5, 16, 4, 4), "mid 4×4": (5, 16, 4, 4),
                      "up1 4×4": (5, 16, 4, 4), "up0 8×8": (5, 8, 8, 8)}  # fmt: skip
    assert all(not v.requires_grad for v in feats.values())
    shipped = UNet(RECIPES["fmnist_unet"]["build"]().config)
    assert unet_levels(shipped) == ["down0 28×28", "down1 14×14", "down2 7×7", "mid 7×7", "up2 7×7", "up1 14×14",
                                    "up0 28×28"]  # fmt: skip


def test_last_decoder_feature_feeds_the_output_head(tiny):
    x, t, y = _x(), torch.tensor([1.0, 5, 50, 500, 999]), torch.tensor([0, 1, 2, 3, 0])
    f = unet_features(tiny, x, t, y=y)["up0 8×8"]
    with torch.no_grad():
        out = tiny(x, t, y)
        head = tiny.conv_out(F.silu(tiny.norm_out(f)))
    torch.testing.assert_close(head, out)


def test_level_selection_and_early_exit_give_the_same_features(tiny):
    full = unet_features(tiny, _x(), 3)
    part = unet_features(tiny, _x(), 3, levels=["mid", "down0 8×8"])
    assert list(part) == ["down0 8×8", "mid 4×4"]  # forward order
    for k in part:
        torch.testing.assert_close(part[k], full[k])


def test_hooks_removed_after_success_early_exit_and_error(tiny):
    unet_features(tiny, _x(), 3)
    assert _no_hooks(tiny)
    unet_features(tiny, _x(), 3, levels="down0")
    assert _no_hooks(tiny)
    with pytest.raises(ValueError, match="y must be"):  # raised inside the network's forward, hooks in place
        unet_features(tiny, _x(), 3, y=torch.full((5,), 7))
    assert _no_hooks(tiny)


def test_features_depend_on_t_and_label(tiny):
    a, b = unet_features(tiny, _x(), 10), unet_features(tiny, _x(), 700)
    assert not torch.allclose(a["mid 4×4"], b["mid 4×4"])
    c = unet_features(tiny, _x(), 10, y=torch.zeros(5, dtype=torch.long))
    assert not torch.allclose(a["mid 4×4"], c["mid 4×4"])


def test_unet_features_rejects_bad_input(tiny):
    with pytest.raises(TypeError, match="model"):
        unet_features(torch.nn.Linear(2, 2), _x(), 1)
    with pytest.raises(ValueError, match="x must have shape"):
        unet_features(tiny, torch.zeros(2, 1, 9, 9), 1)
    with pytest.raises(ValueError, match="x must be"):
        unet_features(tiny, torch.zeros(1, 8, 8), 1)
    with pytest.raises(ValueError, match="t must be"):
        unet_features(tiny, _x(), torch.zeros(3))
    with pytest.raises(ValueError, match="t must be"):
        unet_features(tiny, _x(), -1)
    with pytest.raises(ValueError, match="levels"):
        unet_features(tiny, _x(), 1, levels=["down7"])
    with pytest.raises(ValueError, match="levels"):
        unet_features(tiny, _x(), 1, levels=[])


def test_pooled_features_deterministic_and_equal_to_manual(tiny):
    sched, x0 = linear_schedule(), _x(7)
    a = pooled_features(tiny, x0, 100, sched, generator=torch.Generator().manual_seed(1), batch_size=3)
    b = pooled_features(tiny, x0, 100, sched, generator=torch.Generator().manual_seed(1), batch_size=3)
    c = pooled_features(tiny, x0, 100, sched, generator=torch.Generator().manual_seed(2), batch_size=3)
    assert list(a) == LEVELS and a["mid 4×4"].shape == (7, 16)
    for k in a:
        assert torch.equal(a[k], b[k])
    assert not torch.allclose(a["mid 4×4"], c["mid 4×4"])
    g = torch.Generator().manual_seed(1)
    parts = []
    for i in range(0, 7, 3):
        noise = torch.randn(x0[i : i + 3].shape, generator=g)
        x_t = sched.q_sample(x0[i : i + 3], torch.full((len(noise),), 100), noise)
        parts.append(unet_features(tiny, x_t, 100.0, levels="up0")["up0 8×8"].mean((2, 3)))
    torch.testing.assert_close(a["up0 8×8"], torch.cat(parts))


def test_pooled_features_rejects_bad_input(tiny):
    sched = linear_schedule()
    with pytest.raises(ValueError, match="t must be in"):
        pooled_features(tiny, _x(), 1000, sched)
    with pytest.raises(ValueError, match="t must be one integer"):
        pooled_features(tiny, _x(), 1.5, sched)
    with pytest.raises(ValueError, match="batch_size"):
        pooled_features(tiny, _x(), 1, sched, batch_size=0)
    with pytest.raises(ValueError, match="x0 must have shape"):
        pooled_features(tiny, torch.zeros(2, 3, 8, 8), 1, sched)
    with pytest.raises(ValueError, match="y must be"):
        pooled_features(tiny, _x(), 1, sched, y=torch.zeros(2, dtype=torch.long))


def _blobs(n, d, k, sep, seed):
    g = torch.Generator().manual_seed(seed)
    centres = sep * torch.randn(k, d, generator=torch.Generator().manual_seed(99))
    y = torch.randint(0, k, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g), y


def test_probe_separable_data_and_random_labels():
    xtr, ytr = _blobs(600, 20, 4, 4.0, 0)
    xte, yte = _blobs(400, 20, 4, 4.0, 1)
    res = linear_probe(xtr, ytr, xte, yte)
    assert res.accuracy >= 0.99 and res.train_accuracy >= 0.99
    assert res.weight.shape == (20, 4) and res.bias.shape == (4,)
    assert abs(float((res.predict(xte) == yte).double().mean()) - res.accuracy) < 1e-12
    again = linear_probe(xtr, ytr, xte, yte)
    assert again.accuracy == res.accuracy and torch.equal(again.weight, res.weight)  # deterministic
    # labels independent of the features: the probe cannot beat chance (10 classes, 2000 test points: σ ≈ 0.7 %)
    g = torch.Generator().manual_seed(3)
    f, ft = torch.randn(2000, 30, generator=g), torch.randn(2000, 30, generator=g)
    r = linear_probe(f, torch.randint(0, 10, (2000,), generator=g), ft, torch.randint(0, 10, (2000,), generator=g))
    assert abs(r.accuracy - 0.1) < 0.03


def test_probe_l2_choice_and_validation():
    xtr, ytr = _blobs(200, 5, 3, 2.0, 0)
    xte, yte = _blobs(100, 5, 3, 2.0, 1)
    assert linear_probe(xtr, ytr, xte, yte, l2=0.5).l2 == 0.5
    assert linear_probe(xtr, ytr, xte, yte, l2=[1e-3, 1e-1]).l2 in (1e-3, 1e-1)
    constant = torch.cat([xtr, torch.ones(200, 1)], 1)  # a constant column must not break standardisation
    assert linear_probe(constant, ytr, torch.cat([xte, torch.ones(100, 1)], 1), yte).accuracy > 0.5
    with pytest.raises(ValueError, match="train_feats must be a 2-D"):
        linear_probe(xtr[:, 0], ytr, xte, yte)
    with pytest.raises(ValueError, match="same width"):
        linear_probe(xtr, ytr, xte[:, :3], yte)
    with pytest.raises(ValueError, match="test_y must be"):
        linear_probe(xtr, ytr, xte, yte[:-1])
    with pytest.raises(ValueError, match="train_y must be"):
        linear_probe(xtr, ytr.float(), xte, yte)
    with pytest.raises(ValueError, match="l2 must be"):
        linear_probe(xtr, ytr, xte, yte, l2=0.0)


def test_summary_counts_every_parameter_once(tiny):
    for model in (tiny, UNet(RECIPES["fmnist_unet"]["build"]().config)):
        rows = unet_summary(model)
        assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
        assert [lv for lv in dict.fromkeys(r["level"] for r in rows)] == ["embedding", *unet_levels(model)]
        assert all(set(r) == {"level", "block", "resolution", "channels", "params"} for r in rows)
    rows = unet_summary(tiny)
    assert [r["resolution"] for r in rows if r["level"] == "down1 4×4"] == [4, 4]
    assert sum("attention" in r["block"] for r in rows) == 4  # down1, mid and the two up1 blocks (attn at 4×4)
    with pytest.raises(TypeError, match="model"):
        unet_summary(torch.nn.Linear(2, 2))


def test_zero_skips_changes_output_then_restores(tiny):
    x, t = _x(), torch.full((5,), 20.0)
    with torch.no_grad():
        before = tiny(x, t)
        with zero_skips(tiny, "up0"):
            cut = tiny(x, t)
            assert not _no_hooks(tiny)
        after = tiny(x, t)
    assert not torch.allclose(before, cut) and torch.equal(before, after) and _no_hooks(tiny)
    with pytest.raises(ValueError, match="decoder levels"):
        with zero_skips(tiny, "down0"):
            pass
    assert _no_hooks(tiny)


def test_probe_sweep_and_command_line(tiny, tmp_path):
    x, y = _x(40, 1), torch.arange(40) % 3
    res = probe_sweep(tiny, linear_schedule(), (x[:30], y[:30]), (x[30:], y[30:]), [0, 500],
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert res["ts"] == [0, 500] and res["levels"] == LEVELS and set(res["accuracy"]) == {"0", "500"}
    assert all(0.0 <= a <= 1.0 for d in res["accuracy"].values() for a in d.values()) and 0 <= res["pixels"] <= 1
    with pytest.raises(ValueError, match="ts"):
        probe_sweep(tiny, linear_schedule(), (x, y), (x, y), [])
    out = tmp_path / "unet_probe.json"
    bench_main(["probe", "--n-train", "20", "--n-test", "10", "--ts", "0", "--out-dir", str(tmp_path)])  # tiny run
    saved = json.loads(out.read_text())
    assert saved["levels"][3] == "mid 7×7" and set(saved["accuracy"]["0"]) == set(saved["levels"])
    assert set(saved["untrained"]["0"]) == set(saved["levels"]) and saved["n_train"] == 20
    assert saved["command"].startswith("python -m diffu.bench probe")


def test_diagram_and_feature_maps_are_figures(tiny):
    assert isinstance(unet_diagram(tiny), Figure)
    assert isinstance(unet_diagram(TINY), Figure)
    with pytest.raises(TypeError, match="model"):
        unet_diagram("unet")
    feats = unet_features(tiny, _x(), 5)
    assert isinstance(show_feature_maps(feats, index=1, n_channels=3, image=_x()[1]), Figure)
    assert isinstance(show_feature_maps(feats, image=_x(len(feats))), Figure)  # one image per row
    with pytest.raises(ValueError, match="image must be"):
        show_feature_maps(feats, image=_x(2))
    with pytest.raises(ValueError, match="index"):
        show_feature_maps(feats, index=5)
    with pytest.raises(ValueError, match="features"):
        show_feature_maps({})
    import matplotlib.pyplot as plt

    plt.close("all")


# ----------------------------------------------------------------------------------------------------------------
# argument checks (issue 18)
# ----------------------------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


def test_features_refuse_integer_and_nan_images_and_bad_t(tiny):
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor.*from_uint8"):
        unet_features(tiny, torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 1)
    with pytest.raises(ValueError, match="x must be finite"):
        unet_features(tiny, torch.full((2, 1, 8, 8), NAN), 1)
    with pytest.raises(TypeError, match="t must be a number"):
        unet_features(tiny, _x(), "10")
    with pytest.raises(ValueError, match="t must be finite"):
        unet_features(tiny, _x(), NAN)
    with pytest.raises(TypeError, match="levels must be a level name"):
        unet_features(tiny, _x(), 1, levels=3)
    sched = linear_schedule()
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        pooled_features(tiny, _x(), 1, None)
    with pytest.raises(ValueError, match="y must hold integer class labels"):
        pooled_features(tiny, _x(), 1, sched, y=torch.zeros(5))
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        pooled_features(tiny, _x(), 1, sched, generator=1)
    with pytest.raises(ValueError, match="x0 must be finite"):
        pooled_features(tiny, torch.full((2, 1, 8, 8), INF), 1, sched)


def test_regression_linear_probe_refuses_nan_features_and_infinite_l2():
    """NaN features (or l2 = inf) gave NaN weights, whose argmax is class 0: a plausible accuracy without an error."""
    xtr, ytr = _blobs(200, 5, 3, 2.0, 0)
    xte, yte = _blobs(100, 5, 3, 2.0, 1)
    bad = xtr.clone()
    bad[7, 2] = NAN
    with pytest.raises(ValueError, match="train_feats must be finite"):
        linear_probe(bad, ytr, xte, yte)
    with pytest.raises(ValueError, match="test_feats must be finite"):
        linear_probe(xtr, ytr, bad[:100], yte)
    with pytest.raises(ValueError, match="l2 must be a finite number > 0, got inf"):
        linear_probe(xtr, ytr, xte, yte, l2=INF)
    with pytest.raises(ValueError, match=r"l2\[1\] must be a finite number > 0"):
        linear_probe(xtr, ytr, xte, yte, l2=[0.1, NAN])
    with pytest.raises(TypeError, match="l2 must be a positive number"):
        linear_probe(xtr, ytr, xte, yte, l2="0.1")
    with pytest.raises(ValueError, match="test_y must be an integer tensor"):
        linear_probe(xtr, ytr, xte, yte.bool())
    with pytest.raises(ValueError, match="test_feats must hold at least 1 sample"):
        linear_probe(xtr, ytr, xte[:0], yte[:0])
    res = linear_probe(xtr, ytr, xte, yte, l2=0.5)
    with pytest.raises(ValueError, match="feats must have width D = 5"):
        res.predict(xte[:, :3])
    with pytest.raises(ValueError, match="feats must be finite"):
        res.predict(bad[5:9])


def test_probe_sweep_validates_before_any_forward_pass(tiny):
    x, y = _x(10, 1), torch.arange(10) % 3
    s = linear_schedule()
    with pytest.raises(ValueError, match=r"ts\[0\] must be an integer in \[0, 999\]"):
        probe_sweep(tiny, s, (x, y), (x, y), [1.5])
    with pytest.raises(ValueError, match=r"ts\[1\] must be an integer in \[0, 999\]"):
        probe_sweep(tiny, s, (x, y), (x, y), [0, 1000])
    with pytest.raises(TypeError, match="train must be a pair"):
        probe_sweep(tiny, s, x, (x, y), [0])
    with pytest.raises(ValueError, match="ts must hold at least one timestep"):
        probe_sweep(tiny, s, (x, y), (x, y), 5)
    with pytest.raises(ValueError, match=r"test\[0\] must have shape"):
        probe_sweep(tiny, s, (x, y), (x[:, :, :4], y), [0])


def test_regression_probe_sweep_names_the_labels_of_train_and_test(tiny):
    """Float labels in ``train`` were reported as "train_y …" (linear_probe's argument, not probe_sweep's) and only
    after the features of every level had been computed; now "train[1]"/"test[1]", before any forward pass."""
    x, y = _x(10, 1), torch.arange(10) % 3
    s = linear_schedule()
    calls = []
    handle = tiny.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r"^train\[1\] must be an integer tensor of shape \(10,\), got "
                                             r"torch.float32 \(10,\)"):  # fmt: skip
            probe_sweep(tiny, s, (x, y.float()), (x, y), [0])
        with pytest.raises(ValueError, match=r"^test\[1\] must be an integer tensor of shape \(10,\)"):
            probe_sweep(tiny, s, (x, y), (x, y[:9]), [0])
        with pytest.raises(ValueError, match=r"^train\[1\] must hold labels >= 0, got -1"):
            probe_sweep(tiny, s, (x, y - 1), (x, y), [0])
    finally:
        handle.remove()
    assert not calls  # refused before the first forward pass
