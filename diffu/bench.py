"""Benchmarks: ``python -m diffu.bench [all|speed|notebooks|suite|fd] …``.

- ``speed``: images/second of DDPM-1000 and DDIM-50 with the shipped UNet, and the wall-time ratio of our DDIM loop
  to a diffusers ``DDIMScheduler`` loop around the same network (goal ≤ 1.0).
- ``notebooks``: seconds to execute each notebook of ``book/`` and ``labs/`` (budget: 60 s each).
- ``suite``: seconds for the whole test command (``python -m pytest``; budget: 15 min).
- ``fd``: FD-FMNIST versus NFE for DDPM (ancestral, respaced) and DDIM (η = 0); writes the JSON and sample grids
  that chapter §2.2 shows (``book/results/``). This is the heavy run behind the chapter's DDIM claim.
- ``nfe``: quality versus NFE for every sampler of §2.2 and §2.5 (DDPM, DDIM, PF-ODE Euler/Heun, reverse SDE,
  predictor–corrector, flow matching Euler/Heun): MMD² on 2D with exact models, FD-FMNIST on Fashion-MNIST with
  the shipped ``fmnist_unet`` and ``fmnist_flow``; writes ``book/results/nfe_*.json`` and a sample grid (§2.5).
- ``dit``, ``ablation``, ``probe``, ``t2i``: the architectures chapter (§2.6), see :mod:`diffu.bench_arch` — DiT
  versus diffusers' ``DiTTransformer2DModel`` speed (goal ≥ 1.2×), the DiT conditioning ablation, linear probes on
  the UNet's features, the text-to-image MMDiT.
- ``guidance``: chapter §2.3, see :mod:`diffu.bench_guidance` — the noise-aware classifier's accuracy per t-range
  and FD-FMNIST / accuracy / diversity versus scale for classifier-free and classifier guidance; plug-and-play
  priors (§2.4): class constraints and inpainting.
- ``inverse``: chapter §4.3, see :mod:`diffu.bench_inverse` — PSNR, SSIM, FD-FMNIST, NFE and seconds per image of
  TV, DPIR, DDRM, DiffPIR, DPS, RePaint, ReSample and the blind Blind-DPS/BIRD on six Fashion-MNIST tasks.
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
#: The committed benchmark results that the chapters show (``book/results/`` of the repository).
#:
#: :meta hide-value:
RESULTS = ROOT / "book" / "results"


def _labels(n, device):
    return (torch.arange(n, device=device) % len(FMNIST_CLASSES)).long()


def class_batches(n, batch, seed, device):
    """Batches ``(x_T, labels, generator)`` of ``n`` class-balanced (label ``i mod 10``) Fashion-MNIST-sized
    samples; each batch has its own generator, seeded from ``seed`` and its start index."""
    for start in range(0, n, batch):
        m = min(batch, n - start)
        g = torch.Generator(device=device).manual_seed(seed * 100_003 + start)
        yield torch.randn(m, 1, 28, 28, generator=g, device=device), _labels(start + m, device)[start:], g


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
# nfe: quality versus NFE across the samplers of §2.2 and §2.5
# ----------------------------------------------------------------------------------------------------------------

NFE_2D = (4, 6, 10, 20, 50)
NFE_FMNIST = (10, 20, 50)


def bench_nfe_2d(nfes=NFE_2D, n=2000, seed=0):
    """MMD² to held-out data for every sampler with the *exact* ε / velocity of the eight-Gaussians mixture."""
    from .compare import SAMPLERS, sample_at_nfe
    from .gmm import ExactModel, GaussianMixture
    from .metrics import mmd

    gmm = GaussianMixture.ring()
    sched = linear_schedule()
    ref = gmm.sample(n, torch.Generator().manual_seed(seed + 1))
    eps_m, vel_m = ExactModel(gmm, schedule=sched), ExactModel(gmm, flow_sigma_min=0.0)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed + 3))
    rows = []
    for name in SAMPLERS:
        for k in nfes:
            x, used = sample_at_nfe(name, k, x_T, eps_model=eps_m, velocity_model=vel_m, schedule=sched,
                                    generator=torch.Generator().manual_seed(seed + 12))  # fmt: skip
            rows.append({"sampler": name, "nfe": used, "nfe_budget": k, "mmd2": mmd(x, ref).item()})
    return {"data": "eight Gaussians (GaussianMixture.ring()), exact models", "n_samples": n, "nfes": list(nfes),
            "noise_mmd2": mmd(x_T, ref).item(), "rows": rows}  # fmt: skip


def bench_nfe_fmnist(nfes=NFE_FMNIST, samplers=None, n=384, batch=128, seed=0, device=None, progress=True,
                     grid_path=None):  # fmt: skip
    """FD-FMNIST and classifier accuracy of class-balanced conditional samples for each sampler and NFE budget."""
    from .compare import SAMPLERS, sample_at_nfe
    from .metrics import FDFMNIST
    from .viz import image_grid

    dev = torch.device(device) if device else torch.device("cpu")
    eps_m, vel_m = load("fmnist_unet", device=dev), load("fmnist_flow", device=dev)
    sched = linear_schedule()
    fd = FDFMNIST(device=dev)
    rows, grid_rows = [], []
    for name in samplers or list(SAMPLERS):
        for k in nfes:
            t0 = time.perf_counter()
            out = []
            for x_T, y, g in class_batches(n, batch, seed, dev):
                x, used = sample_at_nfe(name, k, x_T, eps_model=eps_m, velocity_model=vel_m, schedule=sched,
                                        clip_x0=True, model_kwargs={"y": y}, generator=g)  # fmt: skip
                out.append(x.cpu())
            x = torch.cat(out)
            row = {"sampler": name, "nfe": used, "nfe_budget": k, "n": n, "fd": fd(x),
                   "accuracy": fd.accuracy(x, _labels(n, "cpu")), "seconds": time.perf_counter() - t0}  # fmt: skip
            rows.append(row)
            if k == nfes[0]:
                grid_rows.append(x[:10])
            if progress:
                print(json.dumps(row), flush=True)
    if grid_path is not None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(grid_rows), 1, figsize=(8, 0.95 * len(grid_rows)))
        for ax, name, xs in zip(list(axes), samplers or list(SAMPLERS), grid_rows):
            ax.imshow(image_grid(xs, nrow=10)[..., 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
            ax.set_title(f"{name}, NFE ≈ {nfes[0]}", fontsize=8, loc="left")
        fig.tight_layout()
        fig.savefig(grid_path, dpi=110)
        plt.close(fig)
    return rows


def bench_nfe(out_dir=RESULTS, tiny=False, n=384, device=None, progress=True):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"}
    if tiny:
        two_d = bench_nfe_2d(nfes=(4,), n=200)
        rows = bench_nfe_fmnist(nfes=(2,), samplers=["ddim", "fm-euler"], n=4, batch=4, device=device,
                                progress=progress, grid_path=out_dir / "nfe_grid_2.png")  # fmt: skip
        nfes = [2]
    else:
        two_d = bench_nfe_2d()
        rows = bench_nfe_fmnist(n=n, device=device, progress=progress,
                                grid_path=out_dir / f"nfe_grid_{NFE_FMNIST[0]}.png")  # fmt: skip
        nfes = list(NFE_FMNIST)
    two_d.update(meta, command="python -m diffu.bench nfe")
    (out_dir / "nfe_2d.json").write_text(json.dumps(two_d, indent=2) + "\n")
    fm = {"command": "python -m diffu.bench nfe" + (f" --n {n}" if n != 384 else ""), "n_samples": 4 if tiny else n,
          "nfes": nfes, "reference": "shipped Fashion-MNIST test split (2000 images)",
          "models": {"diffusion": "fmnist_unet", "flow": "fmnist_flow"}, "spacing": "linspace", "rows": rows,
          **meta}  # fmt: skip
    (out_dir / "nfe_fmnist.json").write_text(json.dumps(fm, indent=2) + "\n")
    return {"2d": two_d, "fmnist": fm}


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m diffu.bench", description=__doc__.split("\n")[0])
    commands = ["all", "speed", "notebooks", "suite", "fd", "nfe", "dit", "ablation", "probe", "t2i", "guidance"]
    commands.append("inverse")
    p.add_argument("what", nargs="?", default="all", choices=commands)
    p.add_argument("--tiny", action="store_true", help="a seconds-long configuration (used by the tests)")
    p.add_argument("--n", type=int, default=384, help="fd: samples per configuration")
    p.add_argument("--n-images", type=int, default=64, help="inverse: held-out test images per task")
    p.add_argument("--dps-steps", type=int, default=250, help="inverse: steps of DPS and Blind-DPS (official 1000)")
    p.add_argument("--repaint-steps", type=int, default=100, help="inverse: RePaint levels (official 250)")
    p.add_argument("--methods", nargs="*", default=None, help="inverse: a subset of the methods")
    p.add_argument("--tasks", nargs="*", default=None, help="inverse: a subset of the tasks")
    p.add_argument("--configs", nargs="*", default=None, help="fd: e.g. ddim-50 ddpm-1000")
    p.add_argument("--out-dir", default=str(RESULTS), help="fd: where the JSON and grids go")
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=64, help="dit: batch size")
    p.add_argument("--patch", type=int, default=2, help="dit: patch size (28 must be divisible by it)")
    p.add_argument("--n-train", type=int, default=2000, help="probe: training images")
    p.add_argument("--n-test", type=int, default=1000, help="probe: test images")
    p.add_argument("--ts", type=int, nargs="+", default=[0, 50, 200, 500, 900], help="probe: timesteps")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])
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
    if args.what == "nfe":
        res = bench_nfe(out_dir=args.out_dir, tiny=args.tiny, n=args.n, device=args.device)
        d2 = res["2d"]
        print(f"[nfe] 2D eight Gaussians, exact models, MMD² x 1e3 (noise: {1e3 * d2['noise_mmd2']:.1f})")
        _print_table(d2["rows"], d2["nfes"], "mmd2", 1e3)
        fm = res["fmnist"]
        print(f"[nfe] Fashion-MNIST, FD-FMNIST over {fm['n_samples']} samples (NFE budget per column)")
        _print_table(fm["rows"], fm["nfes"], "fd", 1.0)
        report["nfe"] = res
    if args.what in ("dit", "ablation", "probe", "t2i"):
        report.update(_arch_main(args))
    if args.what == "guidance":
        report["guidance"] = _guidance_main(args)
    if args.what == "inverse":
        report["inverse"] = _inverse_main(args)
    return report


def _guidance_main(args):
    from .bench_guidance import bench_guidance, bench_pnp

    kw = dict(n=20, steps=2, ddpm_steps=2, cfg_scales=(0.0, 1.0), cg_scales=(0.0, 1.0), n_test=100) if args.tiny else {}
    res = bench_guidance(**kw, device=args.device, progress=not args.tiny)
    kw = dict(n=20, steps=2, class_runs=(("c on x_t", 1.0, True),), inpaint_weights=(10.0,)) if args.tiny else {}
    res["pnp"] = bench_pnp(**kw, device=args.device, progress=not args.tiny)
    res.update(torch=torch.__version__, machine=f"{platform.machine()}, {torch.get_num_threads()} threads")
    print(f"[guidance] {res['n_samples']} class-balanced samples per row; test set: accuracy "
          f"{res['test_set']['accuracy']:.3f}, diversity {res['test_set']['diversity']:.3f}")  # fmt: skip
    print("  noisy classifier accuracy by t: " + ", ".join(f"{k}: {v:.3f}" for k, v in
                                                       res["classifier_accuracy_by_t"].items()))  # fmt: skip
    for key in ("cfg_ddim", "classifier_ddim", "classifier_ddpm"):
        print(f"  {key} ({res[key]['sampler']}): scale  FD  accuracy  diversity")
        for r in res[key]["rows"]:
            print(f"    {r['scale']:5.1f}  {r['fd']:8.3f}  {r['accuracy']:.3f}  {r['diversity']:.3f}")
    p = res["pnp"]
    print(f"  plug-and-play ({p['n_images']} images, {p['steps']} Adam steps): class constraint -> accuracy, diversity")
    for r in p["class"]:
        print(f"    {r['constraint']:24s} weight {r['weight']:4.1f}  {r['accuracy']:.3f}  {r['diversity']:.3f}")
    b = p["inpaint_baseline_mean_fill"]
    print(f"  plug-and-play inpainting (top half observed): mean-fill baseline PSNR {b['psnr']:.2f} dB")
    for r in p["inpaint"]:
        print(f"    weight {r['weight']:5.1f}: PSNR {r['psnr']:.2f} dB (missing half {r['psnr_missing_half']:.2f} dB), "
              f"residual rms {r['residual_rms']:.3f}")  # fmt: skip
    if not args.tiny or args.out_dir != str(RESULTS):
        out = Path(args.out_dir) / "guidance.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
    return res


def _inverse_main(args):
    from safetensors.torch import save_file

    from .bench_inverse import bench_inverse

    out = Path(args.out_dir)
    save = not args.tiny or args.out_dir != str(RESULTS)
    command = " ".join(["python -m diffu.bench inverse", *(args.argv or [])])

    def partial(rows):  # nothing is lost if a long run stops half-way
        if save:
            out.mkdir(parents=True, exist_ok=True)
            (out / "inverse.partial.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2))

    if args.tiny:
        kw = dict(n=4, n_val=2, tasks=("gaussian_deblur", "box_inpaint"), dps_steps=3, repaint_steps=3, tiny=True)
        args.methods = args.methods or ["TV", "DPIR", "DDRM", "DiffPIR", "DPS", "RePaint"]
    else:
        kw = dict(n=args.n_images, dps_steps=args.dps_steps, repaint_steps=args.repaint_steps)
        if args.tasks:
            kw["tasks"] = tuple(args.tasks)
    res = bench_inverse(**kw, methods=args.methods, device=args.device, progress=not args.tiny, on_row=partial)
    examples = res.pop("_examples")
    res["command"] = command
    print(f"[inverse] {res['n_images']} test images, sigma_y = {res['sigma_y']}, {res['machine']}; "
          f"FD-FMNIST of the ground truth {res['fd_of_ground_truth']:.3f}")  # fmt: skip
    print(f"  {'task':16s} {'method':24s} {'knob':>16s} {'PSNR':>6s} {'SSIM':>6s} {'FD':>7s} {'NFE':>5s} {'s/img':>7s}")
    for r in res["rows"]:
        knob = "" if r["knob"] is None else str(r["knob"])
        print(f"  {r['task']:16s} {r['method']:24s} {knob:>16s} {r['psnr']:6.2f} {r['ssim']:6.3f} {r['fd']:7.3f} "
              f"{r['nfe']:5d} {r['seconds_per_image']:7.3f}")  # fmt: skip
    if save:
        (out / "inverse.json").write_text(json.dumps(res, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in examples.items()}, str(out / "inverse_examples.safetensors"))
        (out / "inverse.partial.json").unlink(missing_ok=True)
    return res


def _arch_main(args):
    from . import bench_arch

    report = {}
    if args.what == "dit":
        kw = dict(batch=4, depth=1, repeats=1) if args.tiny else dict(batch=args.batch, patch=args.patch)
        r = report["dit"] = bench_arch.bench_dit(device=args.device, **kw)
        print(f"[dit] {r['device']}, {r['threads']} threads, batch {r['batch']}, {r['config']}: forward + backward")
        for name in ("ours", "diffusers"):
            e = r[name]
            print(f"  {name:10s} {e['params']:>9,d} params  {e['images_per_s']:8.1f} img/s  "
                  f"activations {e['activation_MiB']:7.1f} MiB")  # fmt: skip
        print(f"  speed ratio ours/diffusers {r['speedup']:.2f}x (goal >= 1.2), activation memory "
              f"diffusers/ours {r['memory_ratio']:.2f}x")  # fmt: skip
    if args.what == "probe":
        res = report["probe"] = bench_arch.bench_probe(n_train=args.n_train, n_test=args.n_test, ts=args.ts)
        for t in args.ts:
            for kind in ("accuracy", "untrained"):
                row = "  ".join(f"{k.split()[0]} {v:.3f}" for k, v in res[kind][str(t)].items())
                print(f"[probe] t={t:4d} {'trained' if kind == 'accuracy' else 'untrained':9s} {row}")
        print(f"[probe] raw pixels {res['pixels']:.3f}")
        out = Path(args.out_dir) / "unet_probe.json"
        if args.out_dir != str(RESULTS) or (args.n_train, args.n_test) == (2000, 1000):
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=2) + "\n")
    if args.what in ("ablation", "t2i"):
        out_dir = Path(args.out_dir)
        if args.what == "ablation":
            res = bench_arch.bench_ablation(**(dict(n=4, steps=2) if args.tiny else dict(n=args.n)), device=args.device)
            print(f"[ablation] DiT-T/4 conditionings, {res['n_samples']} samples, {res['sampler']}")
            for r in res["rows"]:
                print(f"  {r['conditioning']:16s} {r['parameters']:>8,d} params  final loss "
                      f"{r['final_loss_mean_last_100']:.4f}  FD {r['fd']:7.3f}  acc {r['accuracy']:.3f}")  # fmt: skip
        else:
            kw = dict(per_caption=1, scales=(3.0,), steps=2) if args.tiny else {}
            res = bench_arch.bench_t2i(**kw, device=args.device)
            print(f"[t2i] text-to-image MMDiT, {res['per_caption']} samples per caption, {res['sampler']}")
            for r in res["accuracy"]:
                print(
                    f"  'a photo of a <class>'  scale {r['scale']:4.1f}  accuracy {r['accuracy']:.3f}  FD {r['fd']:.3f}"
                )
            b = res["brightness"]
            print(f"  dark vs light captions: samples darker in {b['classes_darker_when_dark']}/10 classes")
        res.update(torch=torch.__version__, machine=f"{platform.machine()}, {torch.get_num_threads()} threads")
        if not args.tiny:
            out_dir.mkdir(parents=True, exist_ok=True)
            name = "dit_ablation.json" if args.what == "ablation" else "t2i.json"
            (out_dir / name).write_text(json.dumps(res, indent=2) + "\n")
        report[args.what] = res
    return report


def _print_table(rows, nfes, key, scale):
    print("  " + f"{'sampler':10s}" + "".join(f"{k:>9d}" for k in nfes))
    for name in dict.fromkeys(r["sampler"] for r in rows):
        vals = {r["nfe_budget"]: r[key] * scale for r in rows if r["sampler"] == name}
        print("  " + f"{name:10s}" + "".join(f"{vals[k]:9.3f}" for k in nfes))


if __name__ == "__main__":
    main()
