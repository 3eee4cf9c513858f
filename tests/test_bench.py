"""Each bench command runs in a tiny configuration, so the committed numbers stay reproducible."""

import json

from diffu import bench
from diffu.compare import SAMPLERS


def test_bench_fd_tiny(tmp_path):
    res = bench.main(["fd", "--tiny", "--out-dir", str(tmp_path)])["fd"]
    saved = json.loads((tmp_path / "fd_vs_nfe.json").read_text())
    assert [r["config"] for r in saved["rows"]] == ["ddim-2", "ddpm-2"] == [r["config"] for r in res["rows"]]
    assert all(r["fd"] > 0 and 0 <= r["accuracy"] <= 1 for r in saved["rows"])
    assert (tmp_path / "samples_ddim-2.png").exists()


def test_bench_speed_tiny():
    s = bench.main(["speed", "--tiny"])["speed"]
    assert s["ddim5_images_per_s"] > 0 and s["ddpm5_images_per_s"] > 0
    assert s["max_abs_diff_vs_diffusers"] < 1e-4  # the two DDIM loops compute the same samples


def test_committed_fd_results_are_complete():
    saved = json.loads((bench.RESULTS / "fd_vs_nfe.json").read_text())
    configs = {r["config"] for r in saved["rows"]}
    assert {"ddim-50", "ddpm-1000", "ddim-10", "ddpm-10"} <= configs
    assert saved["command"].startswith("python -m diffu.bench fd")


def test_bench_nfe_tiny(tmp_path):
    res = bench.main(["nfe", "--tiny", "--out-dir", str(tmp_path)])["nfe"]
    two_d = json.loads((tmp_path / "nfe_2d.json").read_text())
    fm = json.loads((tmp_path / "nfe_fmnist.json").read_text())
    assert {r["sampler"] for r in two_d["rows"]} == set(SAMPLERS) == {r["sampler"] for r in res["2d"]["rows"]}
    assert all(r["nfe"] <= r["nfe_budget"] for r in two_d["rows"])
    assert [r["sampler"] for r in fm["rows"]] == ["ddim", "fm-euler"] and all(r["fd"] > 0 for r in fm["rows"])
    assert (tmp_path / "nfe_grid_2.png").exists()


def test_committed_nfe_results_are_complete():
    fm = json.loads((bench.RESULTS / "nfe_fmnist.json").read_text())
    assert fm["command"].startswith("python -m diffu.bench nfe") and fm["n_samples"] >= 256
    assert {(r["sampler"], r["nfe_budget"]) for r in fm["rows"]} == {(s, k) for s in SAMPLERS for k in fm["nfes"]}
    two_d = json.loads((bench.RESULTS / "nfe_2d.json").read_text())
    assert {r["sampler"] for r in two_d["rows"]} == set(SAMPLERS)


def test_bench_dit_tiny():
    r = bench.main(["dit", "--tiny"])["dit"]
    for name in ("ours", "diffusers"):
        assert r[name]["images_per_s"] > 0 and r[name]["activation_MiB"] > 0
    assert r["speedup"] > 0 and r["memory_ratio"] > 0


def test_bench_architecture_tiny_and_committed_results():
    """The ablation and text-to-image benchmarks run (tiny), and their committed results cover every variant."""
    from diffu.pretrained import DIT_ABLATION

    res = bench.main(["ablation", "--tiny"])["ablation"]
    assert [r["conditioning"] for r in res["rows"]] == list(DIT_ABLATION)
    assert all(r["fd"] > 0 and 0 <= r["accuracy"] <= 1 for r in res["rows"])
    t2i = bench.main(["t2i", "--tiny"])["t2i"]
    assert 0 <= t2i["accuracy"][0]["accuracy"] <= 1 and 0 <= t2i["brightness"]["classes_darker_when_dark"] <= 10
    saved = json.loads((bench.RESULTS / "dit_ablation.json").read_text())
    assert saved["n_samples"] >= 256 and {r["conditioning"] for r in saved["rows"]} == set(DIT_ABLATION)
    saved = json.loads((bench.RESULTS / "t2i.json").read_text())
    assert saved["per_caption"] >= 20 and len(saved["accuracy"]) >= 2


def test_bench_guidance_tiny_and_committed_results(tmp_path):
    """The guidance benchmark runs (tiny, into a temporary folder), and the committed sweep behind chapter §2.3/§2.4
    has every row the chapters read."""
    from diffu.bench_guidance import CFG_SCALES, CG_SCALES

    res = bench.main(["guidance", "--tiny", "--out-dir", str(tmp_path)])["guidance"]
    assert [r["scale"] for r in res["cfg_ddim"]["rows"]] == [0.0, 1.0]
    assert all(0 <= r["accuracy"] <= 1 and r["fd"] > 0 for r in res["classifier_ddpm"]["rows"])
    assert 0 <= res["pnp"]["class"][0]["accuracy"] <= 1 and res["pnp"]["inpaint"][0]["psnr"] > 0
    assert json.loads((tmp_path / "guidance.json").read_text())["n_samples"] == 20
    saved = json.loads((bench.RESULTS / "guidance.json").read_text())
    assert saved["n_samples"] >= 256 and [r["scale"] for r in saved["cfg_ddim"]["rows"]] == list(CFG_SCALES)
    assert [r["scale"] for r in saved["classifier_ddim"]["rows"]] == list(CG_SCALES)
    assert len(saved["classifier_accuracy_by_t"]) == 6 and saved["pnp"]["n_images"] >= 50


def test_bench_inverse_tiny(tmp_path):
    """The §4.3 benchmark runs end to end (tiny: 4 images, 3-step samplers) and saves its table and examples."""
    from safetensors.torch import load_file

    res = bench.main(["inverse", "--tiny", "--out-dir", str(tmp_path)])["inverse"]
    saved = json.loads((tmp_path / "inverse.json").read_text())
    assert saved["n_images"] == 4 and saved["command"].startswith("python -m diffu.bench inverse")
    pairs = {(r["task"], r["method"]) for r in res["rows"]}
    assert ("gaussian_deblur", "DPIR") in pairs and ("box_inpaint", "RePaint") in pairs
    assert ("gaussian_deblur", "RePaint") not in pairs  # RePaint solves inpainting only
    assert all(5 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1 and r["fd"] > 0 for r in saved["rows"])
    examples = load_file(str(tmp_path / "inverse_examples.safetensors"))
    assert examples["ground_truth"].shape == (4, 1, 28, 28) and examples["box_inpaint/DPS"].shape == (4, 1, 28, 28)
    assert not (tmp_path / "inverse.partial.json").exists()


def test_register_phase_undoes_shift_and_twin():
    """Phase retrieval is scored after undoing its trivial ambiguities: a shifted, 180°-rotated copy of the image
    (inside the support) registers back exactly, and the measurement cannot tell them apart."""
    import torch
    import torch.nn.functional as F

    from diffu.bench_inverse import ShiftedPhaseRetrieval, register_phase

    g = torch.Generator().manual_seed(0)
    x = torch.full((2, 1, 12, 12), -1.0)
    x[..., 3:9, 4:8] = torch.rand(2, 1, 6, 4, generator=g) * 2 - 1  # an object with a margin of background
    op = ShiftedPhaseRetrieval(2.0)
    twin = x.flip(-2, -1).roll((1, -2), (-2, -1))  # rotated and shifted, still inside the image
    torch.testing.assert_close(op.A(twin), op.A(x), atol=1e-4, rtol=0)
    torch.testing.assert_close(register_phase(op.pr, twin, x), x)
    assert float((twin - x).abs().max()) > 0.5  # the unregistered twin is a different image
    assert F.mse_loss(register_phase(op.pr, -x, x), x) > 0.1  # a wrong image stays wrong


def test_committed_inverse_results_are_complete():
    """book/results/inverse.json, which chapter §4.3 reads, has a row for every (task, method) the benchmark defines."""
    from safetensors.torch import load_file

    from diffu.bench_inverse import METHODS, TASKS

    saved = json.loads((bench.RESULTS / "inverse.json").read_text())
    assert saved["n_images"] >= 32 and saved["command"].startswith("python -m diffu.bench inverse")
    have = {(r["task"], r["method"]) for r in saved["rows"]}
    for m in METHODS:
        for task in m.tasks:
            label = "HIO" if m.name == "TV" and task == "phase_retrieval" else m.name
            assert (task, label) in have, (task, label)
    assert len(saved["rows"]) == len(have) == sum(len(m.tasks) for m in METHODS)
    # the official budgets of the long samplers (§4.3's prose quotes them) and example reconstructions of every task
    assert saved["dps_steps"] == 1000 and saved["repaint_steps"] == 250, saved["command"]
    for flag in ("n_images", "dps_steps", "repaint_steps"):  # the recorded command is the one that made the file
        assert f"--{flag.replace('_', '-')} {saved[flag]}" in saved["command"], (flag, saved["command"])
    examples = load_file(str(bench.RESULTS / "inverse_examples.safetensors"))
    assert {k.split("/")[0] for k in examples} == {*TASKS, "ground_truth"}
    for task, label in have:
        assert examples[f"{task}/{label}"].shape == examples["ground_truth"].shape == (6, 1, 28, 28), (task, label)
