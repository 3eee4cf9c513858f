"""Benchmarks: ``python -m diffu.bench [all|speed|notebooks|suite|fd] …``.

- ``speed``: images/second of DDPM-1000 and DDIM-50 with the shipped UNet, and the wall-time ratio of our DDIM loop
  to a diffusers ``DDIMScheduler`` loop around the same network (goal ≤ 1.0).
- ``notebooks``: seconds to execute each notebook of ``book/`` and ``labs/`` (budget: 60 s each).
- ``suite``: seconds for the whole test command (``python -m pytest``; budget: 15 min).
- ``fd``: FD-FMNIST versus NFE for DDPM (ancestral, respaced) and DDIM (η = 0); writes the JSON and sample grids
  that chapter §2.2 shows (``book/results/``). This is the heavy run behind the chapter's DDIM claim.
- ``all`` (default): speed, notebooks and suite.

Every sub-command has a ``--tiny`` flag used by the tests so the committed numbers stay reproducible.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from .data import FMNIST_CLASSES
from .pretrained import load
from .samplers import ddim, ddpm
from .schedules import linear_schedule

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "book" / "results"


def _labels(n, device):
    return (torch.arange(n, device=device) % len(FMNIST_CLASSES)).long()


def _timed(fn, repeats=1):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# ----------------------------------------------------------------------------------------------------------------
# speed
# ----------------------------------------------------------------------------------------------------------------


def diffusers_ddim_loop(model, x_T, steps, y):
    """The reference: a diffusers DDIMScheduler loop (no clipping) around the same network."""
    from diffusers import DDIMScheduler

    sch = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, timestep_spacing="leading")
    sch.set_timesteps(steps)
    x = x_T
    with torch.no_grad():
        for t in sch.timesteps:
            eps = model(x, t.to(x.device).float().expand(len(x)), y=y)
            x = sch.step(eps, t, x).prev_sample
    return x


def bench_speed(batch=64, ddpm_steps=1000, ddim_steps=50, repeats=3, device=None):
    dev = torch.device(device) if device else torch.device("cpu")
    model = load("fmnist_unet", device=dev)
    sched = linear_schedule()
    y = _labels(batch, dev)
    x_T = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(dev)
    g = torch.Generator(device=dev)
    kw = dict(model_kwargs={"y": y}, progress=False)
    t_ddim, ours = _timed(lambda: ddim(model, x_T, sched, steps=ddim_steps, **kw), repeats)
    t_ref, ref = _timed(lambda: diffusers_ddim_loop(model, x_T, ddim_steps, y), repeats)
    t_ddpm, _ = _timed(lambda: ddpm(model, x_T, sched, steps=ddpm_steps, generator=g.manual_seed(0), **kw), 1)
    return {
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "batch": batch,
        f"ddpm{ddpm_steps}_images_per_s": batch / t_ddpm,
        f"ddim{ddim_steps}_images_per_s": batch / t_ddim,
        "ddim_ours_s": t_ddim,
        "ddim_diffusers_s": t_ref,
        "ratio_ours_to_diffusers": t_ddim / t_ref,
        "max_abs_diff_vs_diffusers": float((ours - ref).abs().max()),
    }


# ----------------------------------------------------------------------------------------------------------------
# notebooks and suite
# ----------------------------------------------------------------------------------------------------------------


def notebook_paths():
    return sorted(p for d in ("book", "labs") for p in (ROOT / d).rglob("*.ipynb") if "_build" not in p.parts)


def bench_notebooks(paths=None, timeout=600):
    import nbformat
    from nbclient import NotebookClient

    out = {}
    for p in paths or notebook_paths():
        nb = nbformat.read(p, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(p.parent)}}
        ).execute()
        out[str(p.relative_to(ROOT))] = time.perf_counter() - t0
    return out


def bench_suite(args=()):
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=ROOT, capture_output=True, text=True)
    tail = (res.stdout.strip().splitlines() or [""])[-1]
    return {"seconds": time.perf_counter() - t0, "returncode": res.returncode, "summary": tail}


# ----------------------------------------------------------------------------------------------------------------
# FD-FMNIST versus NFE
# ----------------------------------------------------------------------------------------------------------------

DEFAULT_CONFIGS = [f"ddim-{k}" for k in (5, 10, 20, 50, 100)] + [f"ddpm-{k}" for k in (10, 20, 50, 100, 1000)]


def _sample(model, sched, kind, steps, n, batch, seed, dev):
    """``n`` class-balanced samples with a sampler config; the noise of sample i depends only on (seed, i)."""
    out = []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        g = torch.Generator(device=dev).manual_seed(seed * 100_003 + start)
        y = _labels(start + m, dev)[start:]
        x_T = torch.randn(m, 1, 28, 28, generator=g, device=dev)
        kw = dict(model_kwargs={"y": y}, generator=g, progress=False)
        if kind == "ddim":
            x = ddim(model, x_T, sched, steps=steps, eta=0.0, **kw)
        else:
            x = ddpm(model, x_T, sched, steps=steps, **kw)
        out.append(x.cpu())
    return torch.cat(out)


def bench_fd(configs=None, n=384, batch=128, seed=0, out_dir=RESULTS, device=None, progress=True):
    from .metrics import FDFMNIST
    from .viz import image_grid

    dev = torch.device(device) if device else torch.device("cpu")
    model = load("fmnist_unet", device=dev)
    sched = linear_schedule()
    fd = FDFMNIST(device=dev)
    rows = []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for cfg in configs or DEFAULT_CONFIGS:
        kind, steps = cfg.split("-")
        if kind not in ("ddim", "ddpm"):
            raise ValueError(f"config must look like 'ddim-50' or 'ddpm-1000', got {cfg!r}")
        t0 = time.perf_counter()
        x = _sample(model, sched, kind, int(steps), n, batch, seed, dev)
        secs = time.perf_counter() - t0
        row = {"config": cfg, "sampler": kind, "nfe": int(steps), "n": n, "fd": fd(x),
               "accuracy": fd.accuracy(x, _labels(n, "cpu")), "seconds": secs}  # fmt: skip
        rows.append(row)
        if progress:
            print(json.dumps(row), flush=True)
        grid = image_grid(x[:40], nrow=10)
        import matplotlib.pyplot as plt

        plt.imsave(out_dir / f"samples_{cfg}.png", grid[..., 0].numpy(), cmap="gray", vmin=0, vmax=1)
    result = {
        "command": "python -m diffu.bench fd" + (f" --n {n}" if n != 384 else ""),
        "n_samples": n,
        "reference": "shipped Fashion-MNIST test split (2000 images)",
        "labels": "class-balanced (i mod 10), conditional sampling without guidance",
        "seed": seed,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "rows": rows,
    }
    (out_dir / "fd_vs_nfe.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m diffu.bench", description=__doc__.split("\n")[0])
    p.add_argument("what", nargs="?", default="all", choices=["all", "speed", "notebooks", "suite", "fd"])
    p.add_argument("--tiny", action="store_true", help="a seconds-long configuration (used by the tests)")
    p.add_argument("--n", type=int, default=384, help="fd: samples per configuration")
    p.add_argument("--configs", nargs="*", default=None, help="fd: e.g. ddim-50 ddpm-1000")
    p.add_argument("--out-dir", default=str(RESULTS), help="fd: where the JSON and grids go")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    report = {}
    if args.what in ("all", "speed"):
        kw = dict(batch=4, ddpm_steps=5, ddim_steps=5, repeats=1) if args.tiny else {}
        report["speed"] = bench_speed(device=args.device, **kw)
        s = report["speed"]
        print(f"[speed] {s['device']}, {s['threads']} threads, batch {s['batch']}")
        for k, v in s.items():
            if k.endswith("_per_s"):
                print(f"  {k:28s} {v:8.2f}")
        print(f"  DDIM loop: ours {s['ddim_ours_s']:.2f} s vs diffusers {s['ddim_diffusers_s']:.2f} s -> ratio "
              f"{s['ratio_ours_to_diffusers']:.3f} (max |diff| {s['max_abs_diff_vs_diffusers']:.2e})")  # fmt: skip
    if args.what in ("all", "notebooks") and not args.tiny:
        report["notebooks"] = bench_notebooks()
        print("[notebooks] seconds to execute (budget 60 s each)")
        for k, v in report["notebooks"].items():
            print(f"  {k:45s} {v:6.1f}" + ("" if v <= 60 else "  OVER BUDGET"))
    if args.what in ("all", "suite") and not args.tiny:
        report["suite"] = bench_suite()
        s = report["suite"]
        print(f"[suite] python -m pytest: {s['seconds']:.0f} s (budget 900 s), exit {s['returncode']}: {s['summary']}")
    if args.what == "fd":
        kw = dict(configs=["ddim-2", "ddpm-2"], n=8, batch=8) if args.tiny else dict(configs=args.configs, n=args.n)
        res = bench_fd(out_dir=args.out_dir, device=args.device, **kw)
        print(f"[fd] FD-FMNIST over {res['n_samples']} samples, reference: {res['reference']}")
        for r in res["rows"]:
            fd, acc, secs = r["fd"], r["accuracy"], r["seconds"]
            print(f"  {r['config']:10s} NFE {r['nfe']:5d}  FD {fd:8.3f}  acc {acc:.3f}  {secs:7.1f} s")
        report["fd"] = res
    return report


if __name__ == "__main__":
    main()
