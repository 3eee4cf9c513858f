"""diffu.bench.medical_cost (§5.1): the CPU peak-memory measure against known allocations, and the 2D-vs-3D cost
benchmark on one tiny volume (8³, width 8), written only where --out says."""

import json

import pytest
import torch

from diffu.bench.cli import build_parser
from diffu.bench.medical_cost import bench_medical_cost, peak_bytes, run_medical_cost


def test_peak_bytes_on_the_cpu_follows_allocations_and_frees():
    def work():
        a = torch.empty(1000, 1000)  # 4 000 000 bytes
        b = torch.empty(500, 1000)  # 2 000 000: 6 000 000 held
        del a  # 2 000 000 held
        c = torch.empty(2000, 1000)  # 8 000 000: 10 000 000 held, the peak
        return b.numel() + c.numel()

    out, peak = peak_bytes(work, "cpu")
    assert out == 2_500_000 and peak == 10_000_000

    def temporaries():
        x = torch.ones(250_000)  # 1 000 000 bytes, kept
        for _ in range(3):
            y = x + x  # 1 000 000 each, freed when y is rebound: at most 2 of them at once (no scalar operand,
            # which would add a few bytes of its own)
        return y

    assert peak_bytes(temporaries, torch.device("cpu"))[1] == 3_000_000


def test_peak_bytes_keeps_the_profilers_c_level_lines_off_stderr(capfd):
    """The CPU profiler's C++ side writes "USDT: … profiler_start/stop" to file descriptor 2 (not sys.stderr); they
    are silenced, and stderr works again afterwards."""
    import os

    peak_bytes(lambda: torch.ones(10), "cpu")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "USDT" not in err and "profiler_start" not in err
    assert "after" in err


def test_peak_bytes_counts_what_autograd_holds():
    w = torch.randn(100, 100, requires_grad=True)

    def forward_only():
        with torch.no_grad():
            return (w @ w).relu().sum()

    def forward_backward():
        (w @ w).relu().sum().backward()

    assert peak_bytes(forward_backward, "cpu")[1] > peak_bytes(forward_only, "cpu")[1]  # saved activations, grads


def test_peak_bytes_refuses_other_devices():
    with pytest.raises(ValueError, match="device must be the CPU or a CUDA device"):
        peak_bytes(lambda: None, "meta")


def test_bench_medical_cost_tiny():
    res = bench_medical_cost((8,), repeats=1, net=dict(channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                                      attn_resolutions=()), progress=False)  # fmt: skip
    assert res["device"] == "cpu" and [r["model"] for r in res["rows"]] == ["2d", "2d_slice", "3d"]
    rows = {r["model"]: r for r in res["rows"]}
    assert (rows["2d"]["batch"], rows["2d_slice"]["batch"], rows["3d"]["batch"]) == (8, 1, 1)
    for r in res["rows"]:
        assert r["voxels"] == 512 and r["train_s"] > 0 and r["sample_s"] > 0
        assert r["train_peak_MiB"] > r["sample_peak_MiB"] > 0  # a training step holds activations and gradients
    # the 3D kernels are 3×3×3 where the 2D ones are 3×3: more parameters at the same width
    assert rows["3d"]["params"] > rows["2d"]["params"] == rows["2d_slice"]["params"]
    # a whole 8³ volume costs more memory than one 8×8 slice
    (ratio,) = res["ratios"]
    assert ratio["size"] == 8 and ratio["per_sample"]["train_peak_MiB"] > 1
    assert ratio["per_volume"]["train_s"] == pytest.approx(rows["3d"]["train_s"] / rows["2d"]["train_s"])


def test_run_medical_cost_writes_only_where_told(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_medical_cost(build_parser().parse_args(["--tiny", "--out", "out"]))
    saved = json.loads((tmp_path / "out" / "medical_cost.json").read_text())
    assert saved["command"] == "python -m diffu.bench medical_cost --tiny" == res["command"]
    assert [r["size"] for r in saved["rows"]] == [8, 8, 8] and saved["environment"]["torch"] == torch.__version__
    run_medical_cost(build_parser().parse_args(["--tiny"]))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # a tiny run without --out writes nothing
