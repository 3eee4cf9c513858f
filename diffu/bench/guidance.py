"""Benchmarks of the guidance chapters (§2.3, §2.4): ``python -m diffu.bench guidance``.

- the noise-aware classifier's test accuracy per range of t (clean to pure noise);
- classifier-free guidance: FD-FMNIST, class accuracy (the FD-FMNIST classifier's) and within-class diversity of
  class-balanced DDIM samples of the shipped ``fmnist_unet`` per guidance scale — the trade-off of Ho & Salimans'
  Fig. 2/Table 1 at toy scale;
- classifier guidance with the shipped ``fmnist_noisy_classifier`` on the unconditional model (``y`` = null), as an
  ε shift in DDIM and as a mean shift in ancestral sampling (DDPM respaced), per scale;
- diffusion models as plug-and-play priors (§2.4, :mod:`diffu.diffusion_priors`): class constraints (accuracy,
  diversity) and inpainting of the bottom half (PSNR against a mean-fill baseline).

Writes ``guidance.json`` (key ``"pnp"`` for §2.4) to the directory of ``--out``; the chapters plot it.
"""

from __future__ import annotations

import time

from ..data import fashion_mnist
from ..diffusion_priors import plug_and_play_class_samples, plug_and_play_inpaint, top_half_mask
from ..guidance import balanced_labels, classifier_accuracy_by_t, guided_samples
from ..metrics import FDFMNIST, within_class_diversity
from ..pretrained import load
from ..schedules import linear_schedule
from .common import environment, resolve_device, results_dir, write_json

#: Classifier-free guidance scales of the sweep (``s = 1 + w``).
CFG_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0)
#: Classifier-guidance scales of the sweep.
CG_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)


def bench_guidance(n=384, steps=50, ddpm_steps=100, cfg_scales=CFG_SCALES, cg_scales=CG_SCALES, n_test=2000,
                   device=None, progress=True):  # fmt: skip
    """The §2.3 sweep: the noisy classifier's accuracy by t, and FD-FMNIST / accuracy / within-class diversity of
    ``n`` class-balanced samples per scale for CFG (DDIM-``steps``) and classifier guidance (DDIM-``steps`` and
    DDPM-``ddpm_steps``), with the test set's accuracy and diversity as the reference."""
    dev = resolve_device(device)
    fd = FDFMNIST(device=dev)
    unet = load("fmnist_unet", device=dev)
    clf = load("fmnist_noisy_classifier", device=dev)
    x_test, y_test = (v[:n_test] for v in fashion_mnist("test"))
    res = {
        "n_samples": n,
        "device": str(dev),
        "reference": "shipped test split (2000 images); classifier accuracy on the first n_test",
        "n_test": len(x_test),
        "classifier_accuracy_by_t": classifier_accuracy_by_t(clf, linear_schedule(), x_test, y_test),
        "test_set": {"accuracy": fd.accuracy(x_test, y_test), "diversity": fd.diversity(x_test, y_test)},
        "command": "python -m diffu.bench guidance",
    }
    if progress:
        print("[guidance] noisy classifier accuracy by t:", res["classifier_accuracy_by_t"], flush=True)
    labels = balanced_labels(n)
    runs = [("cfg", "ddim", steps, s) for s in cfg_scales]
    runs += [("classifier", "ddim", steps, s) for s in cg_scales]
    runs += [("classifier", "ddpm", ddpm_steps, s) for s in cg_scales]
    for kind, sampler, k, scale in runs:
        t0 = time.perf_counter()
        x = guided_samples(unet, n, kind=kind, scale=scale, classifier=clf, sampler=sampler, steps=k, device=dev)
        div = within_class_diversity(fd.features(x.clamp(-1, 1)), labels)
        row = {"scale": scale, "fd": fd(x), "accuracy": fd.accuracy(x, labels), "diversity": div,
               "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        if kind == "cfg":
            row["w"] = scale - 1.0  # Ho & Salimans' parametrisation
        res.setdefault(f"{kind}_{sampler}", {"sampler": f"{sampler.upper()}-{k}", "rows": []})["rows"].append(row)
        if progress:
            print(f"[guidance] {kind:10s} {sampler}-{k} scale {scale:5.1f}: FD {row['fd']:7.3f} "
                  f"acc {row['accuracy']:.3f} diversity {div:.3f} ({row['seconds']} s)", flush=True)  # fmt: skip
    return res


# ----------------------------------------------------------------------------------------------------------------
# diffusion models as plug-and-play priors (§2.4)
# ----------------------------------------------------------------------------------------------------------------

#: The class-constraint runs of §2.4: ``(name, weight λ, constraint on the noisy x_t)``.
PLUG_AND_PLAY_CLASS_RUNS = (("prior only", 0.0, False), ("c on x (paper)", 1.0, False),
                            ("c on x (paper)", 3.0, False), ("c on x_t (noise-aware)", 1.0, True),
                            ("c on x_t (noise-aware)", 3.0, True))  # fmt: skip
#: The constant data-fidelity weights of the §2.4 inpainting runs.
PLUG_AND_PLAY_INPAINT_WEIGHTS = (3.0, 10.0, 30.0)


def bench_plug_and_play(n=50, steps=200, device=None, progress=True, class_runs=PLUG_AND_PLAY_CLASS_RUNS,
                        inpaint_weights=PLUG_AND_PLAY_INPAINT_WEIGHTS):  # fmt: skip
    """The §2.4 runs: accuracy and diversity of ``n`` class-constrained plug-and-play samples per
    ``class_runs`` entry, and PSNR of plug-and-play inpainting of ``n`` test images per weight against a mean-fill
    baseline."""
    from ..metrics import psnr

    dev = resolve_device(device)
    fd = FDFMNIST(device=dev)
    unet = load("fmnist_unet", device=dev)
    clf = load("fmnist_noisy_classifier", device=dev)
    labels = balanced_labels(n)
    res = {"n_images": n, "steps": steps, "lr": 0.05, "device": str(dev), "class": [], "inpaint": []}
    for name, weight, noisy in class_runs:
        t0 = time.perf_counter()
        x = plug_and_play_class_samples(unet, clf, n, weight=weight, noisy=noisy, steps=steps, device=dev)
        row = {"constraint": name, "weight": weight, "accuracy": fd.accuracy(x, labels),
               "diversity": fd.diversity(x, labels), "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        res["class"].append(row)
        if progress:
            print("[pnp class]", row, flush=True)
    x_test = fashion_mnist("test")[0][:n]
    x_train = fashion_mnist("train")[0]
    mask = top_half_mask()
    for weight in inpaint_weights:
        t0 = time.perf_counter()
        x_hat, y_obs, _ = plug_and_play_inpaint(unet, x_test, weight=weight, steps=steps, device=dev)
        row = {"weight": weight, "psnr": float(psnr(x_hat, x_test).mean()),
               "psnr_missing_half": float(psnr((1 - mask) * x_hat, (1 - mask) * x_test).mean()),
               "residual_rms": float((mask * (x_hat - y_obs)).pow(2).sum().div(mask.sum() * n).sqrt()),
               "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        res["inpaint"].append(row)
        if progress:
            print("[pnp inpaint]", row, flush=True)
    base = mask * y_obs + (1 - mask) * x_train.mean(0, keepdim=True)  # y_obs: the same seeded observation
    miss = float(psnr((1 - mask) * base, (1 - mask) * x_test).mean())
    res["inpaint_baseline_mean_fill"] = {"psnr": float(psnr(base, x_test).mean()), "psnr_missing_half": miss}
    return res


def run_guidance(args) -> dict:
    """``python -m diffu.bench guidance``: :func:`bench_guidance` and :func:`bench_plug_and_play` (tiny: 20
    samples, 2 steps, two scales), printed and written to ``--out`` as ``guidance.json``."""
    kw = dict(n=20, steps=2, ddpm_steps=2, cfg_scales=(0.0, 1.0), cg_scales=(0.0, 1.0), n_test=100) if args.tiny else {}
    res = bench_guidance(**kw, device=args.device, progress=not args.tiny)
    kw = dict(n=20, steps=2, class_runs=(("c on x_t", 1.0, True),), inpaint_weights=(10.0,)) if args.tiny else {}
    res["pnp"] = bench_plug_and_play(**kw, device=args.device, progress=not args.tiny)
    res.update(environment())
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
    out = results_dir(args.out, full_run=not args.tiny)
    if out is not None:
        write_json(out / "guidance.json", res)
    return res
