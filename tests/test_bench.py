"""Each bench command runs in a tiny configuration, so the committed numbers stay reproducible."""

import json

from diffu import bench


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
