"""The distillation benchmark of chapter §7: ``python -m diffu.bench distill``.

The frontier: FD-FMNIST, class accuracy (the FD-FMNIST classifier's) and wall time per image of class-balanced
samples against the number of network evaluations, for the teacher ``fmnist_unet`` with DDIM, the flow-matching
model of §2.5 with Euler steps, and each few-step student (progressive, consistency, adversarial), each over several
noise seeds (the spread the §7 claim-checks use). A student whose weights are not shipped is skipped and listed
under ``missing``. Each student's training cost is read from its manifest entry. CoDi (§7.3) is scored on ×4
super-resolution of the first test images instead (:func:`bench_codi`: PSNR, FD-FMNIST, the measurement residual),
against its conditional teacher at 1 to 50 steps.

Writes ``distill.json`` to the directory of ``--out``; the §7 pages plot it.
"""

from __future__ import annotations

import statistics

from ..distill import frontier_samples
from ..metrics import FDFMNIST
from ..pretrained import available, info, load
from .common import environment, resolve_device, results_dir, write_json

#: The guidance scale of the plug-and-play claim (§7.1): where §2.3's sweep shows CFG clearly apart from s = 1.
PNP_SCALE = 3.0
#: The frontier's runs: ``(label, method of frontier_samples, shipped model, step counts, guidance scale)``.
FRONTIER = (
    ("teacher DDIM", "ddim", "fmnist_unet", (1, 2, 4, 8, 16, 50), 1.0),
    ("flow matching Euler", "flow_euler", "fmnist_flow", (1, 2, 4, 8, 16, 50), 1.0),
    ("progressive", "progressive", "fmnist_pd8", (8,), 1.0),
    ("progressive", "progressive", "fmnist_pd4", (4,), 1.0),
    ("progressive", "progressive", "fmnist_pd2", (2,), 1.0),
    ("progressive", "progressive", "fmnist_pd1", (1,), 1.0),
    ("consistency", "consistency", "fmnist_cd", (1, 2, 4, 8), 1.0),
    ("ADD", "adversarial", "fmnist_add", (1, 2, 4), 1.0),
    ("CFG s = 3", "cfg", "fmnist_unet", (8, 16, 50), PNP_SCALE),
    ("PnP guide s = 3", "guided", "fmnist_pnp_guide", (8, 16, 50), PNP_SCALE),
)
#: The ADD ablation (Sauer et al. 2023, Table 1 d): the three loss arms, trained alike for 500 steps, at 1 and 4 steps.
ADD_ABLATION = tuple((f"ADD {arm}", "adversarial", f"fmnist_add_{mode}_500", (1, 4), 1.0)
                     for arm, mode in (("adversarial only", "adversarial"), ("distillation only", "distillation"),
                                       ("both", "both")))  # fmt: skip
#: CoDi (§7.3) on ×4 super-resolution: ``(label, shipped model, step counts)``, each sampled by
#: :func:`diffu.distill.sr_sample` (deterministic trailing DDIM) on the same test images and noise seeds.
CODI_RUNS = (
    ("conditional teacher", "fmnist_sr4_teacher", (1, 2, 4, 8, 16, 50)),
    ("CoDi", "fmnist_codi", (1, 2, 4, 8)),
)
#: The students whose training cost the result reports.
STUDENTS = ("fmnist_pd8", "fmnist_pd4", "fmnist_pd2", "fmnist_pd1", "fmnist_cd", "fmnist_add", "fmnist_pnp_guide",
            *(run[2] for run in ADD_ABLATION), *(run[1] for run in CODI_RUNS))  # fmt: skip


def _summary(values: list[float]) -> dict:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "values": values}


def bench_frontier(n=384, seeds=(0, 1, 2), runs=FRONTIER, batch=128, device=None, progress=True):
    """FD-FMNIST, accuracy and seconds per image of ``n`` class-balanced samples per seed for every run of
    ``runs`` (default :data:`FRONTIER`) whose model is shipped; rows hold the mean, standard deviation and
    per-seed values."""
    dev = resolve_device(device)
    fd = FDFMNIST(device=dev)
    shipped = set(available())
    rows, missing = [], sorted({run[2] for run in runs if run[2] not in shipped})
    for label, method, name, step_counts, scale in runs:
        if name in missing:
            continue
        model = load(name, device=dev)
        for steps in step_counts:
            per = {"fd": [], "accuracy": [], "seconds_per_image": []}
            for seed in seeds:
                r = frontier_samples(method, model, n, steps=steps, seed=seed, batch=batch, scale=scale, device=dev)
                per["fd"].append(fd(r["x"]))
                per["accuracy"].append(fd.accuracy(r["x"], r["y"]))
                per["seconds_per_image"].append(r["seconds_per_image"])
            row = {"label": label, "method": method, "model": name, "steps": steps, "nfe": r["nfe"], "scale": scale,
                   **{k: _summary(v) for k, v in per.items()}}  # fmt: skip
            rows.append(row)
            if progress:
                print(f"[distill] {label:20s} {name:16s} NFE {row['nfe']:5.1f}: FD {row['fd']['mean']:7.3f} ± "
                      f"{row['fd']['sd']:.3f}  acc {row['accuracy']['mean']:.3f}  "
                      f"{row['seconds_per_image']['mean'] * 1e3:.2f} ms/image", flush=True)  # fmt: skip
    return {"rows": rows, "missing": missing}


def bench_codi(n=256, seeds=(0, 1, 2), runs=CODI_RUNS, batch=128, device=None, progress=True) -> dict:
    """×4 super-resolution of the first ``n`` Fashion-MNIST test images (:func:`diffu.distill.sr_condition`) by
    every run of ``runs`` (default :data:`CODI_RUNS`) whose model is shipped, once per noise seed: PSNR (mean over
    the images), FD-FMNIST of the ``n`` outputs, the RMS of the measurement residual ``A x̂ − A x`` (how well the
    output keeps the low-resolution image) and seconds per image; rows hold the mean, standard deviation and
    per-seed values. ``input`` scores the condition itself (the 7×7 image upsampled by pixel replication)."""
    import time

    import torch

    from ..data import fashion_mnist
    from ..distill.codi import SR_FACTOR, sr_condition, sr_sample
    from ..inverse.operators import BlockAverage
    from ..metrics import psnr

    dev = resolve_device(device)
    fd = FDFMNIST(device=dev)
    x = fashion_mnist("test", n)[0].to(dev)
    cond, op = sr_condition(x), BlockAverage(SR_FACTOR)

    def scores(out):
        return {"psnr": psnr(out, x).mean().item(), "fd": fd(out),
                "residual_rms": (op(out) - op(x)).pow(2).mean().sqrt().item()}  # fmt: skip

    res = {"n_images": n, "seeds": list(seeds), "factor": SR_FACTOR, "input": scores(cond), "rows": []}
    shipped = set(available())
    res["missing"] = sorted({name for _, name, _ in runs if name not in shipped})
    for label, name, step_counts in runs:
        if name in res["missing"]:
            continue
        model = load(name, device=dev)
        for steps in step_counts:
            per = {"psnr": [], "fd": [], "residual_rms": [], "seconds_per_image": []}
            for seed in seeds:
                g = torch.Generator(dev).manual_seed(seed)
                t0, outs = time.perf_counter(), []
                with torch.no_grad():
                    for i in range(0, n, batch):  # one generator through the batches: the run is one draw
                        outs.append(sr_sample(model, cond[i : i + batch], steps=steps, generator=g))
                out = torch.cat(outs)
                per["seconds_per_image"].append((time.perf_counter() - t0) / n)
                for k, v in scores(out).items():
                    per[k].append(v)
            row = {"label": label, "model": name, "steps": steps, "nfe": steps,
                   **{k: _summary(v) for k, v in per.items()}}  # fmt: skip
            res["rows"].append(row)
            if progress:
                print(f"[distill] {label:20s} {steps:3d} steps: PSNR {row['psnr']['mean']:6.2f} ± "
                      f"{row['psnr']['sd']:.2f} dB  FD {row['fd']['mean']:6.3f} ± {row['fd']['sd']:.3f}  "
                      f"{row['seconds_per_image']['mean'] * 1e3:.2f} ms/image", flush=True)  # fmt: skip
    return res


def training_costs(names=STUDENTS) -> list[dict]:
    """Each shipped student's training cost from its manifest entry: steps, batch, seconds, device."""
    out = []
    shipped = set(available())
    for name in names:
        if name not in shipped:
            continue
        e = info(name)
        tc = e.get("train_config", {})
        out.append({"model": name, "steps": tc.get("steps"), "batch_size": tc.get("batch_size"),
                    "seconds": e.get("train_seconds_this_run"), "device": e.get("device"),
                    "threads": e.get("threads")})  # fmt: skip
    return out


def bench_distill(n=384, seeds=(0, 1, 2), runs=FRONTIER, ablation=ADD_ABLATION, codi=CODI_RUNS, device=None,
                  progress=True) -> dict:  # fmt: skip
    """The whole §7 benchmark: :func:`bench_frontier` of ``runs`` (key ``frontier``) and of the ADD ablation's
    ``ablation`` (key ``add_ablation``), :func:`bench_codi` of ``codi`` on ``n`` test images (key ``codi``), and
    :func:`training_costs`."""
    res = {"n_samples": n, "seeds": list(seeds), "reference": "shipped Fashion-MNIST test split (2000 images)",
           "labels": "class-balanced (i mod 10)",
           "frontier": bench_frontier(n, seeds, runs, device=device, progress=progress),
           "add_ablation": bench_frontier(n, seeds, ablation, device=device, progress=progress),
           "codi": bench_codi(n, seeds, codi, device=device, progress=progress),
           "training": training_costs()}  # fmt: skip
    res.update(environment(device))
    return res


def run_distill(args) -> dict:
    """``python -m diffu.bench distill``: :func:`bench_distill` (``--n``; tiny: 8 samples, one seed, the teacher at
    1 and 2 steps), printed and written to ``--out`` as ``distill.json``."""
    if args.tiny:
        kw = dict(n=8, seeds=(0,), runs=(("teacher DDIM", "ddim", "fmnist_unet", (1, 2), 1.0),), ablation=(),
                  codi=(("CoDi", "fmnist_codi", (1,)),))  # fmt: skip
    else:
        kw = dict(n=args.n)
    res = bench_distill(**kw, device=args.device, progress=not args.tiny)
    res["command"] = " ".join(["python -m diffu.bench distill", *(args.argv or [])])
    print(f"[distill] {res['n_samples']} class-balanced samples × {len(res['seeds'])} seeds per row, {res['machine']}")
    for r in res["frontier"]["rows"] + res["add_ablation"]["rows"]:
        print(f"  {r['label']:20s} NFE {r['nfe']:5.1f}  FD {r['fd']['mean']:7.3f} ± {r['fd']['sd']:.3f}  "
              f"acc {r['accuracy']['mean']:.3f}  {r['seconds_per_image']['mean'] * 1e3:.2f} ms/image")  # fmt: skip
    for r in res["codi"]["rows"]:
        print(f"  ×4 SR {r['label']:20s} {r['steps']:3d} steps  PSNR {r['psnr']['mean']:6.2f} ± "
              f"{r['psnr']['sd']:.2f} dB  FD {r['fd']['mean']:6.3f} ± {r['fd']['sd']:.3f}")  # fmt: skip
    missing = res["frontier"]["missing"] + res["add_ablation"]["missing"] + res["codi"]["missing"]
    if missing:
        print(f"  not shipped (skipped): {', '.join(missing)}")
    for t in res["training"]:
        print(f"  training {t['model']:12s} {t['steps']} steps of batch {t['batch_size']}: {t['seconds']} s on "
              f"{t['device']}")  # fmt: skip
    out = results_dir(args.out, full_run=not args.tiny)
    if out is not None:
        write_json(out / "distill.json", res)
    return res
