"""diffu.distill.frontier: one sampler call per (method, NFE) for the §7 frontier."""

from __future__ import annotations

import pytest
import torch

from diffu.distill import FRONTIER_METHODS, frontier_samples, guided_eps_cost
from diffu.nn.guide import GuidedUNet
from diffu.nn.student import StudentUNet

from .nets import tiny_unet


@pytest.mark.parametrize("method", [m for m in FRONTIER_METHODS if m != "guided"])
def test_every_method_samples_class_balanced_and_counts_its_evaluations(method):
    model = tiny_unet() if method in ("ddim", "cfg") else StudentUNet.from_teacher(tiny_unet(), T=1000)
    if method == "flow_euler":
        model = tiny_unet(prediction="velocity", time_scale=1000.0)
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    r = frontier_samples(method, model, 5, steps=2, seed=0, batch=3, scale=3.0)
    assert r["x"].shape == (5, 1, 8, 8) and r["y"].tolist() == [0, 1, 2, 0, 1]
    per_image = sum(calls) / 5
    assert r["nfe"] == (4 if method == "cfg" else 2)
    # CFG batches its two passes into one call of twice the batch: evaluations per image still match nfe
    assert per_image == r["nfe"]
    assert r["seconds_per_image"] > 0 and bool(torch.isfinite(r["x"]).all())


def test_guided_counts_the_guide_as_its_share_of_the_teacher():
    """A zero-initialised guide is the teacher exactly: its samples equal the teacher's conditional DDIM samples,
    and its NFE is steps × (1 + the guide's share of the multiply-adds)."""
    teacher = tiny_unet()
    guided = GuidedUNet(teacher)
    r = frontier_samples("guided", guided, 4, steps=3, seed=1, batch=4, scale=3.0)
    plain = frontier_samples("ddim", teacher, 4, steps=3, seed=1, batch=4)
    assert torch.equal(r["x"], plain["x"])
    assert r["nfe"] == pytest.approx(3 * guided_eps_cost(guided)["nfe_per_step"]) and 3 < r["nfe"] < 3.6
    with pytest.raises(ValueError, match="GuidedUNet"):
        frontier_samples("guided", teacher, 2, steps=2)


def test_deterministic_and_sample_i_depends_only_on_seed_batch_and_i():
    model = StudentUNet.from_teacher(tiny_unet(), T=1000)
    a = frontier_samples("consistency", model, 6, steps=2, seed=3, batch=3)["x"]
    b = frontier_samples("consistency", model, 6, steps=2, seed=3, batch=3)["x"]
    c = frontier_samples("consistency", model, 3, steps=2, seed=3, batch=3)["x"]
    assert torch.equal(a, b) and torch.equal(a[:3], c)


def test_bad_input():
    model = tiny_unet()
    with pytest.raises(ValueError, match="method"):
        frontier_samples("dpm", model, 2, steps=2)
    with pytest.raises(ValueError, match="steps"):
        frontier_samples("adversarial", model, 2, steps=5)
    with pytest.raises(ValueError, match="model must be a class-conditional"):
        frontier_samples("ddim", torch.nn.Identity(), 2, steps=2)
    with pytest.raises(ValueError, match="scale"):
        frontier_samples("cfg", model, 2, steps=2, scale=-1.0)
