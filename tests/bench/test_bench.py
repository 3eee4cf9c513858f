"""Each bench command runs in a tiny configuration, so the committed numbers stay reproducible; the package writes
only where ``--out`` says (never next to the package), and the committed results cover what the chapters read."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch.cuda import is_available as torch_cuda_available

from diffu.bench import common
from diffu.bench.cli import COMMANDS, build_parser, main
from diffu.compare import SAMPLERS

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "book" / "results"  # the committed results (the tests read them; the benchmarks never write here)
BENCH_DIR = REPO / "diffu" / "bench"


def _snapshot(folder: Path) -> dict:
    """``{relative path: (size, mtime)}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# the command line and where it writes
# ----------------------------------------------------------------------------------------------------------------


def test_help_lists_every_command():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "diffu.bench", "--help"], cwd=REPO, capture_output=True, text=True,
                         env=env, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: python -m diffu.bench")
    for name in ("all", *COMMANDS):
        assert name in res.stdout, name
    assert "--out DIR" in res.stdout and "book/results" in res.stdout


def test_parser_keeps_the_old_flags_and_defaults_to_no_explicit_out():
    p = build_parser()
    args = p.parse_args([])
    assert args.what == "all" and args.out is None and not args.tiny
    assert p.parse_args(["fd", "--out-dir", "x"]).out == "x" == p.parse_args(["fd", "--out", "x"]).out  # old spelling
    assert set(COMMANDS) == {"speed", "notebooks", "suite", "threads", "fd", "nfe", "dit", "ablation", "probe", "t2i",
                             "guidance", "inverse", "medical", "medical_cost", "medical_volume",
                             "medical_anomaly", "medical_memorisation", "medical_translation",
                             "segmentation", "distill"}  # fmt: skip
    with pytest.raises(SystemExit):
        p.parse_args(["no-such-command"])


@pytest.mark.parametrize(
    "argv, option, fragment",
    [(["dit", "--tiny", "--device", "nodevice"], "--device", "must name a torch device"),
     (["dit", "--batch", "0"], "--batch", "must be an integer >= 1, got '0'"),
     (["dit", "--patch", "5"], "--patch", "must divide the image size 28"),
     (["dit", "--patch", "0"], "--patch", "must be an integer >= 1"),
     (["fd", "--n", "-3"], "--n", "must be an integer >= 1"),
     (["inverse", "--n-images", "0"], "--n-images", "must be an integer >= 1"),
     (["inverse", "--dps-steps", "2.5"], "--dps-steps", "must be an integer >= 1, got '2.5'"),
     (["inverse", "--repaint-steps", "0"], "--repaint-steps", "must be an integer >= 1"),
     (["probe", "--n-train", "0"], "--n-train", "must be an integer >= 1"),
     (["probe", "--n-test", "x"], "--n-test", "must be an integer >= 1"),
     (["probe", "--ts", "0", "-5"], "--ts", "must be an integer >= 0")],
)  # fmt: skip
def test_regression_bench_cli_checks_its_options(argv, option, fragment, capsys):
    """``dit --device nodevice`` and ``dit --batch 0`` failed deep inside torch (a device-string RuntimeError, a
    reshape of 0 elements); every count, --patch and --device are now usage errors naming the option."""
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    msg = capsys.readouterr().err
    assert f"argument {option}: {fragment}" in msg, msg


@pytest.mark.skipif(torch_cuda_available(), reason="needs a machine without CUDA")
def test_bench_cli_refuses_a_device_the_machine_lacks(capsys):
    with pytest.raises(SystemExit):
        main(["dit", "--tiny", "--device", "cuda"])
    assert "argument --device: 'cuda': this machine has no CUDA device" in capsys.readouterr().err


def test_bench_cli_valid_options_unchanged():
    args = build_parser().parse_args(["dit", "--device", "cpu", "--batch", "8", "--patch", "7", "--ts", "0", "50"])
    assert (args.device, args.batch, args.patch, args.ts) == ("cpu", 8, 7, [0, 50])  # the device stays a string
    defaults = build_parser().parse_args([])
    assert (defaults.device, defaults.n, defaults.batch, defaults.patch) == (None, 384, 64, 2)
    assert defaults.ts == [0, 50, 200, 500, 900]


def test_results_dir_default_is_relative_to_the_working_directory():
    assert common.DEFAULT_OUT == Path("book", "results") and not common.DEFAULT_OUT.is_absolute()
    assert common.results_dir(None, full_run=True) == common.DEFAULT_OUT
    assert common.results_dir(None, full_run=False) is None  # tiny runs write nothing unless told where
    assert common.results_dir("somewhere", full_run=False) == Path("somewhere")


def test_no_bench_module_derives_paths_from_its_own_location():
    for path in BENCH_DIR.glob("*.py"):
        assert "__file__" not in path.read_text(), f"{path.name} derives a path from __file__"


def test_bench_writes_to_out_and_never_next_to_the_package(tmp_path, monkeypatch):
    """From an unrelated working directory: ``--out DIR`` (relative to it) receives the files; without ``--out`` a
    tiny run writes nothing; the repository's committed results are untouched either way."""
    before = _snapshot(RESULTS)
    monkeypatch.chdir(tmp_path)
    main(["fd", "--tiny", "--out", "out"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fd_vs_nfe.json", "samples_ddim-2.png",
                                                                     "samples_ddpm-2.png"]  # fmt: skip
    main(["fd", "--tiny"])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert _snapshot(RESULTS) == before
    assert not (REPO / "diffu" / "book").exists() and not (REPO / "diffu" / "results").exists()


def test_common_helpers():
    calls = []
    secs, out = common.timed(lambda: calls.append(1) or len(calls), repeats=3)
    assert secs >= 0 and out == 3 and len(calls) == 3
    with pytest.raises(ValueError, match="repeats"):
        common.timed(lambda: None, repeats=0)
    env = common.environment("cuda:1")
    assert set(env) == {"torch", "machine"} and ", cuda:1, " in env["machine"] and env["machine"].endswith("threads")
    assert ", cpu," not in common.environment()["machine"]
    assert str(common.resolve_device(None)) == "cpu" and str(common.resolve_device("cpu")) == "cpu"


def test_write_json_creates_the_folder(tmp_path):
    path = common.write_json(tmp_path / "a" / "b.json", {"x": [1, 2]})
    assert path.read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}\n' and json.loads(path.read_text()) == {"x": [1, 2]}


# ----------------------------------------------------------------------------------------------------------------
# §2.2, §2.5: speed, fd, nfe
# ----------------------------------------------------------------------------------------------------------------


def test_bench_fd_tiny(tmp_path):
    res = main(["fd", "--tiny", "--out", str(tmp_path)])["fd"]
    saved = json.loads((tmp_path / "fd_vs_nfe.json").read_text())
    assert [r["config"] for r in saved["rows"]] == ["ddim-2", "ddpm-2"] == [r["config"] for r in res["rows"]]
    assert all(r["fd"] > 0 and 0 <= r["accuracy"] <= 1 for r in saved["rows"])
    assert (tmp_path / "samples_ddim-2.png").exists()


def test_bench_fd_rejects_a_bad_config():
    from diffu.bench.sampling import bench_fd

    with pytest.raises(ValueError, match="config must look like"):
        bench_fd(configs=["euler-5"], n=2, batch=2, progress=False)


def test_bench_speed_tiny():
    s = main(["speed", "--tiny"])["speed"]
    assert s["ddim5_images_per_s"] > 0 and s["ddpm5_images_per_s"] > 0
    assert s["max_abs_diff_vs_diffusers"] < 1e-4  # the two DDIM loops compute the same samples


def test_committed_fd_results_are_complete():
    saved = json.loads((RESULTS / "fd_vs_nfe.json").read_text())
    configs = {r["config"] for r in saved["rows"]}
    assert {"ddim-50", "ddpm-1000", "ddim-10", "ddpm-10"} <= configs
    assert saved["command"].startswith("python -m diffu.bench fd")


def test_bench_nfe_tiny(tmp_path):
    res = main(["nfe", "--tiny", "--out", str(tmp_path)])["nfe"]
    two_d = json.loads((tmp_path / "nfe_2d.json").read_text())
    fm = json.loads((tmp_path / "nfe_fmnist.json").read_text())
    assert {r["sampler"] for r in two_d["rows"]} == set(SAMPLERS) == {r["sampler"] for r in res["2d"]["rows"]}
    assert all(r["nfe"] <= r["nfe_budget"] for r in two_d["rows"])
    assert [r["sampler"] for r in fm["rows"]] == ["ddim", "fm-euler"] and all(r["fd"] > 0 for r in fm["rows"])
    assert (tmp_path / "nfe_grid_2.png").exists()


def test_committed_nfe_results_are_complete():
    fm = json.loads((RESULTS / "nfe_fmnist.json").read_text())
    assert fm["command"].startswith("python -m diffu.bench nfe") and fm["n_samples"] >= 256
    assert {(r["sampler"], r["nfe_budget"]) for r in fm["rows"]} == {(s, k) for s in SAMPLERS for k in fm["nfes"]}
    two_d = json.loads((RESULTS / "nfe_2d.json").read_text())
    assert {r["sampler"] for r in two_d["rows"]} == set(SAMPLERS)


# ----------------------------------------------------------------------------------------------------------------
# §2.6: dit, ablation, probe, t2i
# ----------------------------------------------------------------------------------------------------------------


def test_bench_dit_tiny():
    r = main(["dit", "--tiny"])["dit"]
    for name in ("ours", "diffusers"):
        assert r[name]["images_per_s"] > 0 and r[name]["activation_MiB"] > 0
    assert r["speedup"] > 0 and r["memory_ratio"] > 0


def test_bench_architecture_tiny_and_committed_results(tmp_path):
    """The ablation and text-to-image benchmarks run (tiny), and their committed results cover every variant."""
    from diffu.pretrained import DIT_ABLATION

    res = main(["ablation", "--tiny", "--out", str(tmp_path)])["ablation"]
    assert [r["conditioning"] for r in res["rows"]] == list(DIT_ABLATION)
    assert all(r["fd"] > 0 and 0 <= r["accuracy"] <= 1 for r in res["rows"])
    assert json.loads((tmp_path / "dit_ablation.json").read_text())["n_samples"] == 4
    t2i = main(["t2i", "--tiny"])["t2i"]
    assert 0 <= t2i["accuracy"][0]["accuracy"] <= 1 and 0 <= t2i["brightness"]["classes_darker_when_dark"] <= 10
    saved = json.loads((RESULTS / "dit_ablation.json").read_text())
    assert saved["n_samples"] >= 256 and {r["conditioning"] for r in saved["rows"]} == set(DIT_ABLATION)
    saved = json.loads((RESULTS / "t2i.json").read_text())
    assert saved["per_caption"] >= 20 and len(saved["accuracy"]) >= 2


def test_bench_probe_tiny_and_committed_results(tmp_path):
    res = main(["probe", "--tiny", "--out", str(tmp_path)])["probe"]
    assert res["ts"] == [0] and set(res["accuracy"]["0"]) == set(res["untrained"]["0"])
    assert all(0 <= v <= 1 for v in res["accuracy"]["0"].values()) and 0 <= res["pixels"] <= 1
    assert json.loads((tmp_path / "unet_probe.json").read_text())["n_train"] == 40
    saved = json.loads((RESULTS / "unet_probe.json").read_text())
    assert (saved["n_train"], saved["n_test"]) == (2000, 1000) and saved["command"].startswith("python -m diffu.bench")


# ----------------------------------------------------------------------------------------------------------------
# §2.3, §2.4: guidance
# ----------------------------------------------------------------------------------------------------------------


def test_bench_guidance_tiny_and_committed_results(tmp_path):
    """The guidance benchmark runs (tiny, into a temporary folder), and the committed sweep behind chapter §2.3/§2.4
    has every row the chapters read."""
    from diffu.bench.guidance import CFG_SCALES, CG_SCALES

    res = main(["guidance", "--tiny", "--out", str(tmp_path)])["guidance"]
    assert [r["scale"] for r in res["cfg_ddim"]["rows"]] == [0.0, 1.0]
    assert all(0 <= r["accuracy"] <= 1 and r["fd"] > 0 for r in res["classifier_ddpm"]["rows"])
    assert 0 <= res["pnp"]["class"][0]["accuracy"] <= 1 and res["pnp"]["inpaint"][0]["psnr"] > 0
    assert json.loads((tmp_path / "guidance.json").read_text())["n_samples"] == 20
    saved = json.loads((RESULTS / "guidance.json").read_text())
    assert saved["n_samples"] >= 256 and [r["scale"] for r in saved["cfg_ddim"]["rows"]] == list(CFG_SCALES)
    assert [r["scale"] for r in saved["classifier_ddim"]["rows"]] == list(CG_SCALES)
    assert len(saved["classifier_accuracy_by_t"]) == 6 and saved["pnp"]["n_images"] >= 50


# ----------------------------------------------------------------------------------------------------------------
# §4.3: inverse
# ----------------------------------------------------------------------------------------------------------------


def test_bench_inverse_tiny(tmp_path):
    """The §4.3 benchmark runs end to end (tiny: 4 images, 3-step samplers) and saves its table and examples."""
    from safetensors.torch import load_file

    res = main(["inverse", "--tiny", "--out", str(tmp_path)])["inverse"]
    saved = json.loads((tmp_path / "inverse.json").read_text())
    assert saved["n_images"] == 4 and saved["command"].startswith("python -m diffu.bench inverse")
    pairs = {(r["task"], r["method"]) for r in res["rows"]}
    assert ("gaussian_deblur", "DPIR") in pairs and ("box_inpaint", "RePaint") in pairs
    assert ("gaussian_deblur", "RePaint") not in pairs  # RePaint solves inpainting only
    assert all(5 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1 and r["fd"] > 0 for r in saved["rows"])
    examples = load_file(str(tmp_path / "inverse_examples.safetensors"))
    assert examples["ground_truth"].shape == (4, 1, 28, 28) and examples["box_inpaint/DPS"].shape == (4, 1, 28, 28)
    assert not (tmp_path / "inverse.partial.json").exists()


def test_make_operator_builds_every_task():
    import torch

    from diffu.bench.inverse import TASKS, make_operator, measure
    from diffu.inverse.fourier import ShiftedPhaseRetrieval

    x = torch.zeros(2, 1, 28, 28)
    for task in TASKS:
        y = measure(make_operator(task), x, 0.05, seed=0)
        assert torch.equal(y, measure(make_operator(task), x, 0.05, seed=0)), task  # fixed kernels, masks, noise
    assert isinstance(make_operator("phase_retrieval"), ShiftedPhaseRetrieval)
    with pytest.raises(ValueError, match="task must be one of"):
        make_operator("denoise")


def test_committed_inverse_results_are_complete():
    """book/results/inverse.json, which chapter §4.3 reads, has a row for every (task, method) the benchmark defines."""
    from safetensors.torch import load_file

    from diffu.bench.inverse import METHODS, TASKS

    saved = json.loads((RESULTS / "inverse.json").read_text())
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
    examples = load_file(str(RESULTS / "inverse_examples.safetensors"))
    assert {k.split("/")[0] for k in examples} == {*TASKS, "ground_truth"}
    for task, label in have:
        assert examples[f"{task}/{label}"].shape == examples["ground_truth"].shape == (6, 1, 28, 28), (task, label)


# ----------------------------------------------------------------------------------------------------------------
# the project's budgets: notebooks, suite
# ----------------------------------------------------------------------------------------------------------------


def test_notebook_paths_and_suite_read_the_given_root(tmp_path):
    from diffu.bench.notebooks import bench_suite, notebook_paths

    for rel in ("book/a.ipynb", "book/_build/a.ipynb", "labs/source/l/l.ipynb", "other/x.ipynb"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    found = [p.relative_to(tmp_path).as_posix() for p in notebook_paths(tmp_path)]
    assert found == ["book/a.ipynb", "labs/source/l/l.ipynb"]  # sorted, no built copies, book/ and labs/ only
    (tmp_path / "test_one.py").write_text("def test_ok():\n    assert True\n")
    s = bench_suite(["-p", "no:randomly", "-p", "no:cacheprovider", "test_one.py"], root=tmp_path)
    assert s["returncode"] == 0 and "1 passed" in s["summary"] and s["seconds"] > 0


def test_threads_benchmark_times_both_workloads_with_and_without_a_busy_core():
    from diffu.bench.notebooks import bench_threads

    rows = bench_threads(threads=(1,), steps=5)
    assert [(r["threads"], r["busy_core"]) for r in rows] == [(1, False), (1, True)]
    assert all(r["small"] > 0 and r["conv"] > 0 for r in rows)


def test_sliced_reply_polling_waits_in_slices_and_still_times_out(monkeypatch):
    """A reply that arrives is returned (even after several empty slices); a missing one still raises Empty at the
    caller's timeout, not before; installing twice wraps once."""
    import asyncio
    import time
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    from diffu.bench import notebooks as nbs

    calls = []

    async def fake_get_msg(self, timeout=None):
        calls.append(timeout)
        if self.ready_after is not None and len(calls) > self.ready_after:
            return {"msg": "reply"}
        await asyncio.sleep(timeout or 0)
        raise Empty

    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", fake_get_msg)
    monkeypatch.setattr(nbs, "POLL_SLICE_S", 0.02)
    nbs.install_sliced_reply_polling()
    wrapped = AsyncZMQSocketChannel.get_msg
    nbs.install_sliced_reply_polling()
    assert AsyncZMQSocketChannel.get_msg is wrapped  # idempotent

    class Chan:
        ready_after = 3

    assert asyncio.run(wrapped(Chan(), timeout=5.0)) == {"msg": "reply"}
    assert len(calls) == 4 and all(t <= 0.02 for t in calls)  # three empty slices, then the reply
    calls.clear()
    Chan.ready_after = None
    t0 = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(wrapped(Chan(), timeout=0.1))
    assert 0.09 <= time.monotonic() - t0 < 1.0 and len(calls) >= 4


def test_bench_medical_recon_with_tiny_priors():
    """The §5 reconstruction benchmark end to end with tiny seeded UNets in place of the shipped priors: every
    method on one CT and one MRI task, per-image scores, NFE as documented."""
    import torch

    from diffu.bench.medical import bench_medical_recon
    from diffu.nn import UNet, UNetConfig

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=32))
    res = bench_medical_recon(n=2, n_val=1, tasks=("ct8", "mri4"), dps_steps=2, dds_steps=2, pc_steps=2,
                              progress=False, models={"ct": net.eval(), "mri": net.eval()})  # fmt: skip
    rows = {(r["task"], r["method"]): r for r in res["rows"]}
    assert len(rows) == 10
    assert len(rows["ct8", "DDS"]["psnr"]) == 4 and len(rows["mri4", "DDS"]["psnr"]) == 2  # 2 phantoms + 2 scans
    assert rows["ct8", "DPS"]["nfe"] == 2 and rows["ct8", "PC + projection"]["nfe"] == 4
    assert rows["ct8", "FBP / zero-filled"]["nfe"] == 0 and rows["ct8", "TV"]["knob"] in (0.003, 0.01, 0.03, 0.1)
    assert res["_examples"]["ct8/DDS"].shape == (4, 1, 32, 32)


def test_bench_medical_recon_examples_save_and_dds_uses_the_official_data_step(monkeypatch):
    """Two tasks of one modality share their test images: the stored ground truths must not share memory (safetensors
    refuses tensors that do), and DDS's data step is γ = 1 for CT, the projection (γ = None) for MRI."""
    import torch
    from safetensors.torch import save_file

    import diffu.inverse
    from diffu.bench.medical import bench_medical_recon
    from diffu.nn import UNet, UNetConfig

    gammas = []
    real = diffu.inverse.dds

    def spy(*args, **kwargs):
        gammas.append((type(args[2]).__name__, kwargs["gamma"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(diffu.inverse, "dds", spy)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=32))
    res = bench_medical_recon(n=1, n_val=1, tasks=("ct8", "ct16", "mri4"), methods=["DDS"], dds_steps=2,
                              progress=False, models={"ct": net.eval(), "mri": net.eval()})  # fmt: skip
    assert gammas == [("Radon", 1.0), ("Radon", 1.0), ("MRI", None)]
    save_file({k: v.contiguous() for k, v in res["_examples"].items()}, "/dev/null")


def test_finite_mean_skips_nan_and_is_nan_when_nothing_is_left():
    assert common.finite_mean([1.0, float("nan"), 3.0]) == 2.0  # a diverged run (NaN) does not poison the summary
    assert common.finite_mean([2, 4]) == 3.0
    assert math.isnan(common.finite_mean([float("nan")])) and math.isnan(common.finite_mean([]))
