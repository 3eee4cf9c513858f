"""diffu.bench.distill: the §7 frontier benchmark (tiny configurations; the full run writes book/results)."""

from __future__ import annotations

import pytest

from diffu.bench.cli import main
from diffu.bench.distill import ADD_ABLATION, FRONTIER, STUDENTS, bench_frontier, training_costs
from diffu.distill import frontier_samples
from diffu.metrics import FDFMNIST
from diffu.pretrained import available, load


def test_frontier_rows_equal_direct_calls():
    """A row is the FD-FMNIST / accuracy of frontier_samples' output for each seed, summarised."""
    runs = (("teacher DDIM", "ddim", "fmnist_unet", (2,), 1.0),)
    res = bench_frontier(n=6, seeds=(0, 1), runs=runs, batch=4, progress=False)
    (row,) = res["rows"]
    assert row["nfe"] == 2 and row["steps"] == 2 and res["missing"] == []
    fd, model = FDFMNIST(), load("fmnist_unet")
    for i, seed in enumerate((0, 1)):
        r = frontier_samples("ddim", model, 6, steps=2, seed=seed, batch=4)
        assert row["fd"]["values"][i] == pytest.approx(fd(r["x"]), rel=1e-6)
        assert row["accuracy"]["values"][i] == pytest.approx(fd.accuracy(r["x"], r["y"]))
    assert row["fd"]["mean"] == pytest.approx(sum(row["fd"]["values"]) / 2)


def test_missing_models_are_skipped_and_listed():
    runs = (("ghost", "ddim", "no_such_model", (1,), 1.0),)
    res = bench_frontier(n=2, seeds=(0,), runs=runs, progress=False)
    assert res["rows"] == [] and res["missing"] == ["no_such_model"]


def test_every_frontier_run_names_a_known_method_and_the_costs_are_read_from_the_manifest():
    from diffu.distill import FRONTIER_METHODS

    assert all(run[1] in FRONTIER_METHODS for run in FRONTIER + ADD_ABLATION)
    # the ablation's three arms: one per ADD loss mode, each a shipped recipe trained alike, at 1 and 4 steps
    from diffu.distill import MODES
    from diffu.recipes import RECIPES

    assert sorted(run[2] for run in ADD_ABLATION) == sorted(f"fmnist_add_{m}_500" for m in MODES)
    configs = [RECIPES[run[2]]["config"] for run in ADD_ABLATION]
    assert all(c == configs[0] for c in configs)
    assert all(run[3] == (1, 4) and run[2] in STUDENTS for run in ADD_ABLATION)
    costs = training_costs()
    assert {c["model"] for c in costs} <= set(available())
    for c in costs:
        assert c["steps"] >= 1 and c["seconds"] > 0


def test_tiny_command_runs(capsys):
    res = main(["distill", "--tiny"])["distill"]
    assert len(res["frontier"]["rows"]) == 2 and "teacher DDIM" in capsys.readouterr().out
    assert res["add_ablation"] == {"rows": [], "missing": []}
