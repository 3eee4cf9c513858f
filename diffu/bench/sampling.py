"""Benchmarks of the sampling chapters (§2.2 DDPM/DDIM, §2.5 samplers at equal cost): ``speed``, ``fd``, ``nfe``.

- ``speed``: images/second of DDPM-1000 and DDIM-50 with the shipped UNet, and the wall-time ratio of our DDIM loop
  to a diffusers ``DDIMScheduler`` loop around the same network (goal ≤ 1.0).
- ``fd``: FD-FMNIST versus NFE for DDPM (ancestral, respaced) and DDIM (η = 0); writes ``fd_vs_nfe.json`` and the
  sample grids ``samples_<config>.png`` that chapter §2.2 shows. The heavy run behind the chapter's DDIM claim.
- ``nfe``: quality versus NFE for every sampler of §2.2 and §2.5 (DDPM, DDIM, PF-ODE Euler/Heun, reverse SDE,
  predictor–corrector, flow matching Euler/Heun): MMD² on 2D with exact models, FD-FMNIST on Fashion-MNIST with
  the shipped ``fmnist_unet`` and ``fmnist_flow``; writes ``nfe_2d.json``, ``nfe_fmnist.json`` and a sample grid.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..guidance import balanced_labels, class_batches
from ..pretrained import load
from ..samplers import ddim, ddpm
from ..schedules import linear_schedule
from .common import environment, resolve_device, results_dir, timed, write_json

# ----------------------------------------------------------------------------------------------------------------
# speed
# ----------------------------------------------------------------------------------------------------------------


def diffusers_ddim_loop(model, x_T, steps, y):
    """The reference: a diffusers ``DDIMScheduler`` loop (no clipping, "leading" spacing) around the same network."""
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
    """Images/second of DDPM-``ddpm_steps`` and DDIM-``ddim_steps`` with the shipped ``fmnist_unet``, and our DDIM
    loop's time and samples against :func:`diffusers_ddim_loop` (best of ``repeats``)."""
    dev = resolve_device(device)
    model = load("fmnist_unet", device=dev)
    sched = linear_schedule()
    y = balanced_labels(batch, device=dev)
    x_T = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(dev)
    g = torch.Generator(device=dev)
    kw = dict(model_kwargs={"y": y}, progress=False)
    t_ddim, ours = timed(lambda: ddim(model, x_T, sched, steps=ddim_steps, **kw), repeats)
    t_ref, ref = timed(lambda: diffusers_ddim_loop(model, x_T, ddim_steps, y), repeats)
    t_ddpm, _ = timed(lambda: ddpm(model, x_T, sched, steps=ddpm_steps, generator=g.manual_seed(0), **kw), 1)
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


def run_speed(args) -> dict:
    """``python -m diffu.bench speed``: run :func:`bench_speed` (tiny with ``--tiny``) and print it."""
    kw = dict(batch=4, ddpm_steps=5, ddim_steps=5, repeats=1) if args.tiny else {}
    s = bench_speed(device=args.device, **kw)
    print(f"[speed] {s['device']}, {s['threads']} threads, batch {s['batch']}")
    for k, v in s.items():
        if k.endswith("_per_s"):
            print(f"  {k:28s} {v:8.2f}")
    print(f"  DDIM loop: ours {s['ddim_ours_s']:.2f} s vs diffusers {s['ddim_diffusers_s']:.2f} s -> ratio "
          f"{s['ratio_ours_to_diffusers']:.3f} (max |diff| {s['max_abs_diff_vs_diffusers']:.2e})")  # fmt: skip
    return s


# ----------------------------------------------------------------------------------------------------------------
# fd: FD-FMNIST versus NFE of DDPM and DDIM (§2.2)
# ----------------------------------------------------------------------------------------------------------------

#: The sampler configurations of ``python -m diffu.bench fd``: ``"<ddim|ddpm>-<steps>"``.
DEFAULT_CONFIGS = [f"ddim-{k}" for k in (5, 10, 20, 50, 100)] + [f"ddpm-{k}" for k in (10, 20, 50, 100, 1000)]


def sample_configs(model, sched, kind, steps, n, batch, seed, device):
    """``n`` class-balanced samples (:func:`~diffu.guidance.class_batches`) of ``kind`` "ddim" (η = 0) or "ddpm"
    with ``steps`` steps, conditional without guidance; the noise of sample i depends only on (seed, batch, i)."""
    if kind not in ("ddim", "ddpm"):
        raise ValueError(f"kind must be 'ddim' or 'ddpm', got {kind!r}")
    out = []
    for x_T, y, g in class_batches(n, batch, seed, device):
        kw = dict(model_kwargs={"y": y}, generator=g, progress=False)
        if kind == "ddim":
            x = ddim(model, x_T, sched, steps=steps, eta=0.0, **kw)
        else:
            x = ddpm(model, x_T, sched, steps=steps, **kw)
        out.append(x.cpu())
    return torch.cat(out)


def bench_fd(configs=None, n=384, batch=128, seed=0, out_dir=None, device=None, progress=True):
    """FD-FMNIST and classifier accuracy of ``n`` samples per sampler configuration (default
    :data:`DEFAULT_CONFIGS`). With ``out_dir``, writes ``fd_vs_nfe.json`` and a 40-sample grid per configuration
    there; ``None`` writes nothing."""
    from ..metrics import FDFMNIST
    from ..viz import image_grid

    configs = list(configs or DEFAULT_CONFIGS)
    for cfg in configs:
        kind, _, steps = cfg.partition("-")
        if kind not in ("ddim", "ddpm") or not steps.isdigit():
            raise ValueError(f"config must look like 'ddim-50' or 'ddpm-1000', got {cfg!r}")
    dev = resolve_device(device)
    model = load("fmnist_unet", device=dev)
    sched = linear_schedule()
    fd = FDFMNIST(device=dev)
    rows = []
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    for cfg in configs:
        kind, _, steps = cfg.partition("-")
        t0 = time.perf_counter()
        x = sample_configs(model, sched, kind, int(steps), n, batch, seed, dev)
        secs = time.perf_counter() - t0
        row = {"config": cfg, "sampler": kind, "nfe": int(steps), "n": n, "fd": fd(x),
               "accuracy": fd.accuracy(x, balanced_labels(n)), "seconds": secs}  # fmt: skip
        rows.append(row)
        if progress:
            print(json.dumps(row), flush=True)
        if out_dir is not None:
            import matplotlib.pyplot as plt

            grid = image_grid(x[:40], nrow=10)
            plt.imsave(out_dir / f"samples_{cfg}.png", grid[..., 0].numpy(), cmap="gray", vmin=0, vmax=1)
    env = environment()
    result = {
        "command": "python -m diffu.bench fd" + (f" --n {n}" if n != 384 else ""),
        "n_samples": n,
        "reference": "shipped Fashion-MNIST test split (2000 images)",
        "labels": "class-balanced (i mod 10), conditional sampling without guidance",
        "seed": seed,
        "torch": env["torch"],
        "machine": env["machine"],
        "rows": rows,
    }
    if out_dir is not None:
        write_json(out_dir / "fd_vs_nfe.json", result)
    return result


def run_fd(args) -> dict:
    """``python -m diffu.bench fd``: :func:`bench_fd` (``--configs``, ``--n``; tiny: DDIM-2 and DDPM-2 on 8
    samples), written to ``--out``."""
    if args.tiny:
        kw = dict(configs=["ddim-2", "ddpm-2"], n=8, batch=8)
    else:
        kw = dict(configs=args.configs, n=args.n)
    res = bench_fd(out_dir=results_dir(args.out, full_run=not args.tiny), device=args.device, **kw)
    print(f"[fd] FD-FMNIST over {res['n_samples']} samples, reference: {res['reference']}")
    for r in res["rows"]:
        fd, acc, secs = r["fd"], r["accuracy"], r["seconds"]
        print(f"  {r['config']:10s} NFE {r['nfe']:5d}  FD {fd:8.3f}  acc {acc:.3f}  {secs:7.1f} s")
    return res


# ----------------------------------------------------------------------------------------------------------------
# nfe: quality versus NFE across the samplers of §2.2 and §2.5
# ----------------------------------------------------------------------------------------------------------------

#: The NFE budgets of the 2D comparison (exact models).
NFE_2D = (4, 6, 10, 20, 50)
#: The NFE budgets of the Fashion-MNIST comparison (shipped networks).
NFE_FMNIST = (10, 20, 50)


def bench_nfe_2d(nfes=NFE_2D, n=2000, seed=0):
    """MMD² to held-out data for every sampler with the *exact* ε / velocity of the eight-Gaussians mixture."""
    from ..compare import SAMPLERS, sample_at_nfe
    from ..gmm import ExactModel, GaussianMixture
    from ..metrics import mmd

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
    """FD-FMNIST and classifier accuracy of class-balanced conditional samples for each sampler and NFE budget;
    with ``grid_path``, a figure of 10 samples per sampler at the first budget."""
    from ..compare import SAMPLERS, sample_at_nfe
    from ..metrics import FDFMNIST
    from ..viz import image_grid

    dev = resolve_device(device)
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
                   "accuracy": fd.accuracy(x, balanced_labels(n)), "seconds": time.perf_counter() - t0}  # fmt: skip
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


def bench_nfe(out_dir=None, tiny=False, n=384, device=None, progress=True):
    """Both NFE comparisons (:func:`bench_nfe_2d`, :func:`bench_nfe_fmnist`); with ``out_dir``, writes
    ``nfe_2d.json``, ``nfe_fmnist.json`` and ``nfe_grid_<nfe>.png`` there (``None``: nothing)."""
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    meta = environment()
    if tiny:
        two_d = bench_nfe_2d(nfes=(4,), n=200)
        grid = None if out_dir is None else out_dir / "nfe_grid_2.png"
        rows = bench_nfe_fmnist(nfes=(2,), samplers=["ddim", "fm-euler"], n=4, batch=4, device=device,
                                progress=progress, grid_path=grid)  # fmt: skip
        nfes = [2]
    else:
        two_d = bench_nfe_2d()
        grid = None if out_dir is None else out_dir / f"nfe_grid_{NFE_FMNIST[0]}.png"
        rows = bench_nfe_fmnist(n=n, device=device, progress=progress, grid_path=grid)
        nfes = list(NFE_FMNIST)
    two_d.update(meta, command="python -m diffu.bench nfe")
    fm = {"command": "python -m diffu.bench nfe" + (f" --n {n}" if n != 384 else ""), "n_samples": 4 if tiny else n,
          "nfes": nfes, "reference": "shipped Fashion-MNIST test split (2000 images)",
          "models": {"diffusion": "fmnist_unet", "flow": "fmnist_flow"}, "spacing": "linspace", "rows": rows,
          **meta}  # fmt: skip
    if out_dir is not None:
        write_json(out_dir / "nfe_2d.json", two_d)
        write_json(out_dir / "nfe_fmnist.json", fm)
    return {"2d": two_d, "fmnist": fm}


def print_nfe_table(rows, nfes, key, scale):
    """Print ``rows`` as a sampler × NFE-budget table of ``row[key] · scale``."""
    print("  " + f"{'sampler':10s}" + "".join(f"{k:>9d}" for k in nfes))
    for name in dict.fromkeys(r["sampler"] for r in rows):
        vals = {r["nfe_budget"]: r[key] * scale for r in rows if r["sampler"] == name}
        print("  " + f"{name:10s}" + "".join(f"{vals[k]:9.3f}" for k in nfes))


def run_nfe(args) -> dict:
    """``python -m diffu.bench nfe``: :func:`bench_nfe` (``--n``; tiny with ``--tiny``), written to ``--out``."""
    out = results_dir(args.out, full_run=not args.tiny)
    res = bench_nfe(out_dir=out, tiny=args.tiny, n=args.n, device=args.device)
    d2 = res["2d"]
    print(f"[nfe] 2D eight Gaussians, exact models, MMD² x 1e3 (noise: {1e3 * d2['noise_mmd2']:.1f})")
    print_nfe_table(d2["rows"], d2["nfes"], "mmd2", 1e3)
    fm = res["fmnist"]
    print(f"[nfe] Fashion-MNIST, FD-FMNIST over {fm['n_samples']} samples (NFE budget per column)")
    print_nfe_table(fm["rows"], fm["nfes"], "fd", 1.0)
    return res
