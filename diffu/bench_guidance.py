"""Benchmarks of the guidance chapter (§2.3), run through ``python -m diffu.bench guidance``.

- the noise-aware classifier's test accuracy per range of t (clean to pure noise);
- classifier-free guidance: FD-FMNIST, class accuracy (the FD-FMNIST classifier's) and within-class diversity of
  class-balanced DDIM samples of the shipped ``fmnist_unet`` per guidance scale — the trade-off of Ho & Salimans'
  Fig. 2/Table 1 at toy scale;
- classifier guidance with the shipped ``fmnist_noisy_classifier`` on the unconditional model (``y`` = null), as an
  ε shift in DDIM and as a mean shift in ancestral sampling (DDPM respaced), per scale.

Writes ``book/results/guidance.json``, which chapter §2.3 plots.
"""

from __future__ import annotations

import time

import torch

from .bench import _labels, class_batches
from .data import fashion_mnist
from .guidance import ClassifierFreeGuidance, ClassifierGuidance, classifier_accuracy_by_t
from .metrics import FDFMNIST, within_class_diversity
from .pretrained import load
from .samplers import ddim, ddpm
from .schedules import linear_schedule

CFG_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0)
CG_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)


def guided_samples(model, n, *, kind="cfg", scale=1.0, classifier=None, sampler="ddim", steps=50, batch=128,
                   seed=0, device=None):  # fmt: skip
    """``n`` class-balanced samples (label ``i mod 10``) of the class-conditional UNet ``model``:

    - ``kind="cfg"``: classifier-free guidance at ``scale`` (null label ``model.num_classes``);
    - ``kind="classifier"``: the unconditional model (null label) with classifier guidance at ``scale`` from the
      noise-aware ``classifier`` towards each sample's label.

    ``sampler``: "ddim" (η = 0, DDIM-``steps``) or "ddpm" (ancestral, respaced to ``steps``); x̂_0 clipped."""
    sched = linear_schedule()
    null = torch.tensor([model.num_classes])
    out = []
    for x_T, y, g in class_batches(n, batch, seed, device):
        if kind == "cfg":
            net, kwargs, cond_fn = ClassifierFreeGuidance(model, scale, {"y": null}), {"y": y}, None
        elif kind == "classifier":
            net, kwargs = model, {"y": torch.full_like(y, model.num_classes)}
            cond_fn = ClassifierGuidance(classifier, scale, y)
        else:
            raise ValueError(f"kind must be 'cfg' or 'classifier', got {kind!r}")
        if sampler == "ddim":
            x = ddim(net, x_T, sched, steps=steps, clip_x0=True, model_kwargs=kwargs, cond_fn=cond_fn, generator=g,
                     progress=False)  # fmt: skip
        elif sampler == "ddpm":
            x = ddpm(net, x_T, sched, steps=steps, model_kwargs=kwargs, cond_fn=cond_fn, generator=g, progress=False)
        else:
            raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        out.append(x.cpu())
    return torch.cat(out)


def bench_guidance(n=384, steps=50, ddpm_steps=100, cfg_scales=CFG_SCALES, cg_scales=CG_SCALES, n_test=2000,
                   device=None, progress=True):  # fmt: skip
    dev = torch.device(device) if device else torch.device("cpu")
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
    labels = _labels(n, "cpu")
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
# plug-and-play priors (§2.4)
# ----------------------------------------------------------------------------------------------------------------

PNP_CLASS_RUNS = (("prior only", 0.0, False), ("c on x (paper)", 1.0, False), ("c on x (paper)", 3.0, False),
                  ("c on x_t (noise-aware)", 1.0, True), ("c on x_t (noise-aware)", 3.0, True))  # fmt: skip
PNP_INPAINT_WEIGHTS = (3.0, 10.0, 30.0)


def top_half_mask(size=28):
    """The inpainting mask of chapter §2.4: the top half of the image is observed."""
    m = torch.zeros(1, 1, size, size)
    m[..., : size // 2, :] = 1
    return m


def pnp_class_samples(unet, clf, n, *, weight=1.0, noisy=False, steps=200, lr=0.05, seed=0, device=None):
    """``n`` class-balanced images (label ``i mod 10``) from the unconditional UNet (null label) as a plug-and-play
    prior, constrained by ``−log p(y | ·)`` of the noise-aware classifier (on x, or on x_t with ``noisy``)."""
    from .guidance import classifier_constraint, plug_and_play

    y = _labels(n, device)
    g = torch.Generator(device=device).manual_seed(seed)
    res = plug_and_play(unet, classifier_constraint(clf, y), (n, 1, 28, 28), linear_schedule(), steps=steps, lr=lr,
                        weight=weight, noisy_constraint=noisy, model_kwargs={"y": torch.full_like(y, unet.num_classes)},
                        generator=g, progress=False)  # fmt: skip
    return res.x.cpu()


def pnp_inpaint(unet, x_true, sigma=0.05, *, weight=10.0, steps=200, lr=0.05, seed=0, device=None):
    """Inpaint the bottom half of ``x_true`` from its noisy top half with the UNet (null label) as a plug-and-play
    prior and the data-fidelity constraint at constant ``weight``. Returns ``(x_hat, y_obs, mask)`` on the CPU."""
    from .guidance import fidelity_constraint, plug_and_play

    g = torch.Generator(device=device).manual_seed(seed)
    x_true = x_true.to(device)
    mask = top_half_mask(x_true.shape[-1]).to(x_true)
    y_obs = mask * (x_true + sigma * torch.randn(x_true.shape, generator=g, device=device))
    null = torch.full((len(x_true),), unet.num_classes, device=device)
    res = plug_and_play(unet, fidelity_constraint(lambda z: mask * z, y_obs), x_true.shape, linear_schedule(),
                        steps=steps, lr=lr, weight=weight, anneal_weight=False, model_kwargs={"y": null}, generator=g,
                        progress=False)  # fmt: skip
    return res.x.cpu(), y_obs.cpu(), mask.cpu()


def bench_pnp(n=50, steps=200, device=None, progress=True, class_runs=PNP_CLASS_RUNS,
              inpaint_weights=PNP_INPAINT_WEIGHTS):  # fmt: skip
    from .metrics import psnr

    dev = torch.device(device) if device else torch.device("cpu")
    fd = FDFMNIST(device=dev)
    unet = load("fmnist_unet", device=dev)
    clf = load("fmnist_noisy_classifier", device=dev)
    labels = _labels(n, "cpu")
    res = {"n_images": n, "steps": steps, "lr": 0.05, "device": str(dev), "class": [], "inpaint": []}
    for name, weight, noisy in class_runs:
        t0 = time.perf_counter()
        x = pnp_class_samples(unet, clf, n, weight=weight, noisy=noisy, steps=steps, device=dev)
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
        x_hat, y_obs, _ = pnp_inpaint(unet, x_test, weight=weight, steps=steps, device=dev)
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
