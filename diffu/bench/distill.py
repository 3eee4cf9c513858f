"""The distillation benchmark of chapter §7: ``python -m diffu.bench distill``.

The frontier: FD-FMNIST, class accuracy (the FD-FMNIST classifier's) and wall time per image of class-balanced
samples against the number of network evaluations, for the teacher ``fmnist_unet`` with DDIM, the flow-matching
model of §2.5 with Euler steps, and each few-step student (progressive, consistency, adversarial), each over several
noise seeds (the spread the §7 claim-checks use). A student whose weights are not shipped is skipped and listed
under ``missing``. Each student's training cost is read from its manifest entry.

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
#: The students whose training cost the result reports.
STUDENTS = ("fmnist_pd8", "fmnist_pd4", "fmnist_pd2", "fmnist_pd1", "fmnist_cd", "fmnist_add", "fmnist_pnp_guide",
            *(run[2] for run in ADD_ABLATION))  # fmt: skip


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


def bench_distill(n=384, seeds=(0, 1, 2), runs=FRONTIER, ablation=ADD_ABLATION, device=None, progress=True) -> dict:
    """The whole §7 benchmark: :func:`bench_frontier` of ``runs`` (key ``frontier``) and of the ADD ablation's
    ``ablation`` (key ``add_ablation``), and :func:`training_costs`."""
    res = {"n_samples": n, "seeds": list(seeds), "reference": "shipped Fashion-MNIST test split (2000 images)",
           "labels": "class-balanced (i mod 10)",
           "frontier": bench_frontier(n, seeds, runs, device=device, progress=progress),
           "add_ablation": bench_frontier(n, seeds, ablation, device=device, progress=progress),
           "training": training_costs()}  # fmt: skip
    res.update(environment(device))
    return res


def run_distill(args) -> dict:
    """``python -m diffu.bench distill``: :func:`bench_distill` (``--n``; tiny: 8 samples, one seed, the teacher at
    1 and 2 steps), printed and written to ``--out`` as ``distill.json``."""
    if args.tiny:
        kw = dict(n=8, seeds=(0,), runs=(("teacher DDIM", "ddim", "fmnist_unet", (1, 2), 1.0),), ablation=())
    else:
        kw = dict(n=args.n)
    res = bench_distill(**kw, device=args.device, progress=not args.tiny)
    res["command"] = " ".join(["python -m diffu.bench distill", *(args.argv or [])])
    print(f"[distill] {res['n_samples']} class-balanced samples × {len(res['seeds'])} seeds per row, {res['machine']}")
    for r in res["frontier"]["rows"] + res["add_ablation"]["rows"]:
        print(f"  {r['label']:20s} NFE {r['nfe']:5.1f}  FD {r['fd']['mean']:7.3f} ± {r['fd']['sd']:.3f}  "
              f"acc {r['accuracy']['mean']:.3f}  {r['seconds_per_image']['mean'] * 1e3:.2f} ms/image")  # fmt: skip
    missing = res["frontier"]["missing"] + res["add_ablation"]["missing"]
    if missing:
        print(f"  not shipped (skipped): {', '.join(missing)}")
    for t in res["training"]:
        print(f"  training {t['model']:12s} {t['steps']} steps of batch {t['batch_size']}: {t['seconds']} s on "
              f"{t['device']}")  # fmt: skip
    out = results_dir(args.out, full_run=not args.tiny)
    if out is not None:
        write_json(out / "distill.json", res)
    return res
