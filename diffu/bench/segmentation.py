"""Multi-class segmentation of chapter §6.2: ``python -m diffu.bench segmentation``.

Every shipped §6.2 segmenter on held-out data of its dataset, 32 × 32, four classes:

* **cardiac** — :func:`~diffu.data.cardiac.cardiac_phantoms` with seed 1000 (the models trained on seed 0);
* **brain** — the held-out band of the MNI152 template (:data:`diffu.data.mni.HELD_OUT`, which no model saw, nor
  its guard slices), deformed and re-contrasted by :func:`~diffu.data.mni.augment` with seed 2000 at 4× the
  resolution and area-averaged down, as the training slices were made: 24 distinct slices would be too few images
  for a spread, and the deformation makes each copy a new anatomy.

Methods (:data:`METHODS`): the plain UNet baseline (argmax of its logits: one deterministic answer), Wolleb et al.'s
implicit ensembles and the MedSegDiff variants (:func:`diffu.segmentation.segment`, DDIM with ``steps`` steps and
``ensemble`` members per image), recursive noise diffusion (:func:`diffu.segmentation.recursive_segment`, its
training ``T = 10``). For each diffusion method: Dice per class of ensembles of 1, 2, 5 and 10 members
(:func:`~diffu.segmentation.ensemble_dice`, disjoint groups of members) and how well the ensemble variance marks
the errors of the ensemble's labels (:func:`~diffu.segmentation.uncertainty_error`). A model that is not shipped
is listed under ``missing`` instead of failing the run.

Three more parts share the command (each skipped, and listed under ``missing``, without its shipped models):

* **SDSeg** (§6.3, ``sdseg`` rows): ``cardiac_sdseg`` with ``cardiac_mask_autoencoder`` on the cardiac test set, one
  step from pure noise against DDIM with 10 and 50 steps, three noise seeds each: Dice per class of the assembled
  label map and of each structure asked for alone (the conditional query), and the time per image.
* **Control** (§6.1, ``control`` rows): ``fmnist_mask_controlnet`` and ``fmnist_mask_adapter`` — trainable
  parameters, the fidelity curve logged while training (the manifests' ``monitor``) and its sudden-convergence
  verdict (:func:`diffu.control.sudden_convergence`), and the mask fidelity of the final weights on 256 shifted test
  masks (a different draw than the monitor's) at control strengths from 0 (the frozen UNet) to 1.5.
* **Attention** (``attention``): masks from ``fmnist_t2i``'s attention to the item's word on Fashion-MNIST items
  pasted on textures (:func:`~diffu.data.textured.textured_fashion`, test split), IoU by timestep and block against
  the threshold baselines (:func:`diffu.segmentation.attention_iou_table`), and the same with a caption naming
  another class (is the map about the word?).

* **Synthesis** (§6.1, ``synthesis``): ``mni_label_controlnet`` draws a slice for each tissue map of the brain test
  set at the control strengths above; ``brain_unet`` segments it, and its Dice against the requested map says
  whether the generated anatomy follows the map (the same segmenter on the real images is the ceiling).
* **Augmentation** (``augmentation``): a segmenter with only 50 labelled slices, trained alone, with 500
  synthetic pairs from ``mni_label_controlnet`` added, and with the real images of the same 500 maps added instead,
  three seeds each (:data:`AUGMENTATION`); Dice on the brain test set.

Writes ``segmentation.json`` (per-image values throughout, so that a page can put a spread on each mean) to
``--out``.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..checks import check_choice, check_int
from ..data.cardiac import CARDIAC_CLASSES, cardiac_phantoms
from ..data.mni import TISSUES, augment, mni_slices
from ..schedules import linear_schedule
from .common import environment, resolve_device, results_dir, write_json
from .common import finite_mean as _avg

#: The datasets and their class names (background first).
DATASETS = {"cardiac": CARDIAC_CLASSES, "brain": TISSUES}
#: Seeds of the held-out test sets (the training sets use seed 0).
TEST_SEEDS = {"cardiac": 1000, "brain": 2000}
#: Per dataset: ``(method label, shipped model, kind)``; kind ``"unet"`` (logits), ``"wolleb"`` (mask diffusion
#: sampled by :func:`~diffu.segmentation.segment`, also the MedSegDiff variants) or ``"recursive"``.
METHODS = {
    "cardiac": (
        ("UNet (baseline)", "cardiac_unet", "unet"),
        ("Wolleb et al.", "cardiac_wolleb", "wolleb"),
        ("recursive noise diffusion", "cardiac_recursive", "recursive"),
        ("MedSegDiff", "cardiac_medsegdiff", "wolleb"),
        ("MedSegDiff, no FF-Parser", "cardiac_medsegdiff_noff", "wolleb"),
        ("MedSegDiff, no attentive fusion", "cardiac_medsegdiff_noattn", "wolleb"),
        ("MedSegDiff, neither", "cardiac_medsegdiff_plain", "wolleb"),
    ),
    "brain": (
        ("UNet (baseline)", "brain_unet", "unet"),
        ("Wolleb et al.", "brain_wolleb", "wolleb"),
        ("recursive noise diffusion", "brain_recursive", "recursive"),
    ),
}
#: The ensemble sizes of the Dice-against-ensemble-size curve.
SIZES = (1, 2, 5, 10)
#: Steps of recursive noise diffusion at inference (the training value of ``cardiac_recursive``).
RECURSIVE_STEPS = 10
#: The step counts SDSeg's single step is compared with (the claim: one step within one Dice point of both).
SDSEG_STEPS = (1, 10, 50)
#: The mask-control models of §6.1: ``(method label, shipped model)``.
CONTROL_MODELS = (("ControlNet", "fmnist_mask_controlnet"), ("T2I-Adapter", "fmnist_mask_adapter"))
#: Control strengths (``control_scale``) of the fidelity sweep; 0 is the frozen UNet.
CONTROL_SCALES = (0.0, 0.5, 1.0, 1.5)
#: Timesteps of the attention-mask table.
ATTENTION_TIMESTEPS = (50, 200, 400, 600, 800)
#: The label-map ControlNet of §6.1 (anatomy-conditioned synthesis) and the segmenter that judges its slices.
SYNTHESIS_MODEL, SYNTHESIS_SEGMENTER = "mni_label_controlnet", "brain_unet"
#: The label-scarce experiment of §6.1: a segmenter trained on ``n_real`` labelled slices, alone, with
#: ``n_synthetic`` synthetic pairs added, or with the real slices of the same maps added (the reference);
#: ``steps`` at batch ``batch_size`` from ``seeds`` initialisations. Seeds of the slice draws (training band, never
#: the held-out one; far from the chunk seeds 0–19 of the shipped models' 20 000 slices): ``real_seed``,
#: ``extra_seed`` (the maps of the added pairs).
AUGMENTATION = {"n_real": 50, "n_synthetic": 500, "steps": 300, "batch_size": 32, "seeds": 3, "real_seed": 100,
                "extra_seed": 200, "ddim_steps": 20}  # fmt: skip
#: The arms of the augmentation experiment.
AUGMENTATION_ARMS = ("real", "real + synthetic", "real + real")
#: The parts of :func:`bench_segmentation`.
PARTS = ("segmentation", "sdseg", "control", "attention", "synthesis", "augmentation")


def held_out_set(dataset: str, n: int = 64, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out images ``(n, 1, size, size)`` in [-1, 1] and labels ``(n, size, size)`` of ``dataset`` (see the
    module docstring); the same arguments give the same set."""
    check_choice("dataset", dataset, tuple(DATASETS))
    check_int("n", n, 1)
    check_int("size", size, 4)
    if dataset == "cardiac":
        return cardiac_phantoms(n, size, seed=TEST_SEEDS["cardiac"])
    big = 4 * size
    fr, t1 = augment(mni_slices(size=big, modality="fractions", split="test"), mni_slices(size=big, split="test"), n,
                     seed=TEST_SEEDS["brain"])  # fmt: skip
    return F.avg_pool2d(t1, 4), F.avg_pool2d(fr, 4).argmax(1)


def _dice_table(d: torch.Tensor) -> list[list[float]]:
    """``(N, K')`` Dice → per-image lists (NaN where a class is in neither map, kept as NaN in the JSON)."""
    return d.tolist()


def evaluate(model, kind: str, images: torch.Tensor, labels: torch.Tensor, *, ensemble: int = 10, steps: int = 10,
             seed: int = 0, progress: bool = False) -> dict:  # fmt: skip
    """One method on one test set: ``{"dice": {m: per-image per-class Dice}, "uncertainty": …, "seconds_per_image"}``
    (``dice`` of the baseline has the single key ``1``; ``uncertainty`` is None for it)."""
    from ..metrics import dice
    from ..segmentation import ensemble_dice, recursive_segment, segment, uncertainty_error

    check_choice("kind", kind, ("unet", "wolleb", "recursive"))
    k = 4
    dev = next(model.parameters()).device
    images, labels = images.to(dev), labels.to(dev)
    start = time.perf_counter()
    if kind == "unet":
        with torch.no_grad():
            pred = model(images).argmax(1)
        secs = time.perf_counter() - start
        return {"dice": {1: _dice_table(dice(pred, labels, k))}, "uncertainty": None, "nfe": 1,
                "seconds_per_image": secs / images.shape[0]}  # fmt: skip
    g = torch.Generator(dev).manual_seed(seed)
    if kind == "wolleb":
        seg = segment(model, images, linear_schedule(), num_classes=k, steps=steps, ensemble=ensemble, generator=g,
                      progress=progress)  # fmt: skip
        nfe = steps
    else:
        seg = recursive_segment(model, images, num_classes=k, steps=RECURSIVE_STEPS, ensemble=ensemble, generator=g,
                                progress=progress)  # fmt: skip
        nfe = RECURSIVE_STEPS
    secs = time.perf_counter() - start
    sizes = tuple(m for m in SIZES if m <= ensemble)
    dices = ensemble_dice(seg.samples, labels, k, sizes=sizes)
    ue = uncertainty_error(seg.variance, seg.labels, labels)
    unc = {"correlation": ue.correlation, "auroc": ue.auroc, "image_correlation": ue.image_correlation,
           "bin_uncertainty": ue.bin_uncertainty.tolist(), "bin_error": ue.bin_error.tolist(),
           "error_rate": ue.error_rate, "ensemble": ensemble}  # fmt: skip
    return {"dice": {m: _dice_table(d) for m, d in dices.items()}, "uncertainty": unc, "nfe": nfe,
            "seconds_per_image": secs / (images.shape[0] * ensemble)}  # fmt: skip


def bench_sdseg(model, autoencoder, *, n: int = 64, steps=SDSEG_STEPS, seeds: int = 3, device=None) -> list[dict]:
    """The ``sdseg`` rows: first the autoencoder's ceiling (``steps`` 0: each true structure mask encoded, decoded
    and thresholded at 0, its Dice per image in ``autoencoder_dice``), then per step count and noise seed, Dice per
    class (per image) of the assembled label map (``dice``) and of each structure asked for alone (``query_dice``:
    its decoded score > 0 against its mask), the time per image (all three structures) and the NFE."""
    from ..metrics import dice
    from ..segmentation import encode_structures, sdseg_schedule, sdseg_segment

    dev = resolve_device(device)
    images, labels = (t.to(dev) for t in held_out_set("cardiac", n))
    # the ceiling: each structure's true mask through the autoencoder and back, thresholded at 0
    with torch.no_grad():
        z = encode_structures(autoencoder, labels, 4)
        back = torch.stack([autoencoder.decode(z[:, s])[:, 0] > 0 for s in range(3)], 1)
    ceiling = torch.stack([dice(back[:, s].long(), (labels == s + 1).long(), 2)[:, 0] for s in range(3)], 1)
    rows = [{"steps": 0, "seed": None, "autoencoder_dice": ceiling.tolist()}]
    for k in steps:
        for seed in range(seeds):
            g = torch.Generator(dev).manual_seed(seed)
            start = time.perf_counter()
            out = sdseg_segment(model, autoencoder, images, sdseg_schedule(), num_structures=3, steps=k, generator=g,
                                progress=False)  # fmt: skip
            secs = time.perf_counter() - start
            query = torch.stack([dice((out.scores[:, s] > 0).long(), (labels == s + 1).long(), 2)[:, 0]
                                 for s in range(3)], 1)  # fmt: skip
            rows.append({"steps": k, "seed": seed, "dice": dice(out.labels, labels, 4).tolist(),
                         "query_dice": query.tolist(), "seconds_per_image": secs / n, "nfe": 3 * k})  # fmt: skip
    return rows


class _Strength(torch.nn.Module):
    """A controlled UNet at a fixed control strength (``control_scale``)."""

    def __init__(self, model, scale: float):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x, t, cond):
        return self.model(x, t, cond=cond, control_scale=self.scale)


def _control_parameters(model) -> int:
    """The parameters a control branch trains: those in the model's state dict (a ControlledUNet or AdaptedUNet
    saves only its branch, not the frozen UNet; loaded models have every gradient switched off, so
    ``requires_grad`` cannot tell)."""
    keys = set(model.state_dict())
    return sum(p.numel() for k, p in model.named_parameters() if k in keys)


def bench_control(models: dict, *, n: int = 256, steps: int = 20, scales=CONTROL_SCALES) -> list[dict]:
    """The ``control`` rows for ``models`` (``{model name: network}`` of :data:`CONTROL_MODELS`): the parameters of
    the control branch (what its file holds), the manifest's monitor curve and two sudden-convergence verdicts
    (:func:`diffu.control.sudden_convergence` with its defaults, Dice from below 0.3 to above 0.7 within 10 % of the
    run, on the Dice itself and on the progress ``(Dice − Dice₀)/(max Dice − Dice₀)``: the untrained model already
    scores the chance overlap of an item with a shifted mask), and per-image fidelity at each strength."""
    from ..control import sudden_convergence
    from ..pretrained import available, info
    from ..recipes import mask_fidelity_score

    rows = []
    for label, name in CONTROL_MODELS:
        if name not in models:
            continue
        m = models[name].eval()
        entry = info(name) if name in available() else {}
        curve = entry.get("monitor", [])
        verdict = progress_verdict = None
        if len(curve) >= 2:
            at, d = [c["step"] for c in curve], [c["dice"] for c in curve]
            v = sudden_convergence(at, d)
            verdict = {"sudden": v.sudden, "start": v.start, "end": v.end}
            # the same rule on the progress from the untrained model's fidelity (chance: the frozen UNet's items
            # overlap a shifted mask by accident) to the best the run reached: 0 at step 0, 1 at the best point
            span = max(d) - d[0]
            if span > 0:
                v = sudden_convergence(at, [(x - d[0]) / span for x in d])
                progress_verdict = {"sudden": v.sudden, "start": v.start, "end": v.end}
        fidelity = {str(s): mask_fidelity_score(_Strength(m, s), n=n, steps=steps, seed=2, per_image=True)
                    for s in scales}  # fmt: skip
        rows.append({"method": label, "model": name,
                     "trainable_parameters": _control_parameters(m),
                     "curve": curve, "sudden_convergence": verdict, "sudden_convergence_progress": progress_verdict,
                     "fidelity": fidelity, "n": n,
                     "steps": steps})  # fmt: skip
    return rows


def bench_attention(model, *, n: int = 64, timesteps=ATTENTION_TIMESTEPS, device=None, progress: bool = True) -> dict:
    """The ``attention`` part: :func:`~diffu.segmentation.attention_iou_table` of ``model`` (``fmnist_t2i``) on ``n``
    textured test items with their own captions ("a photo of a …"), and with each caption naming the next class."""
    from ..captions import caption
    from ..data.textured import textured_fashion
    from ..segmentation import attention_iou_table

    dev = resolve_device(device)
    images, masks, labels = textured_fashion(n, seed=0, split="test")
    images, masks = images.to(dev), masks.to(dev)
    out = {}
    for which, shift in (("own", 0), ("other_class", 1)):
        caps = [caption((int(y) + shift) % 10) for y in labels]
        tab = attention_iou_table(model, images, masks, caps, linear_schedule(), timesteps=timesteps,
                                  generator=torch.Generator(dev).manual_seed(0), progress=progress)  # fmt: skip
        out[which] = {"iou": tab.iou.tolist(), "seconds_per_image": tab.seconds_per_image}
    return {"timesteps": list(tab.timesteps), "layers": [str(x) for x in tab.layers], **out,
            "image_otsu": tab.image_otsu.tolist(), "image_otsu_best": tab.image_otsu_best.tolist(),
            "all_foreground": tab.all_foreground.tolist(), "n": n}  # fmt: skip


def _synthesize(model, labels: torch.Tensor, steps: int, scale: float = 1.0, batch: int = 128) -> torch.Tensor:
    """One DDIM-``steps`` slice per tissue map of ``labels`` from the label-map ControlNet at control strength
    ``scale``, in batches of ``batch`` maps, batch ``i`` with noise seed ``i`` (a map's draw does not depend on how
    many maps follow it)."""
    from ..control import label_map_condition
    from ..samplers import ddim

    dev = next(model.parameters()).device
    m = _Strength(model, scale).eval()
    out = []
    for i, start in enumerate(range(0, labels.shape[0], batch)):
        lab = labels[start : start + batch].to(dev)
        g = torch.Generator(dev).manual_seed(i)
        out.append(ddim(m, (lab.shape[0], 1, *lab.shape[1:]), linear_schedule(), steps=steps, generator=g,
                        model_kwargs={"cond": label_map_condition(lab, 4)}, progress=False))  # fmt: skip
    return torch.cat(out)


def bench_synthesis(model, segmenter, *, n: int = 64, steps: int = 20, scales=CONTROL_SCALES) -> dict:
    """The ``synthesis`` part (§6.1, label → image): one slice per tissue map of the ``n`` held-out brain images
    (:func:`held_out_set`) from ``model`` (``mni_label_controlnet``) at each control strength (0: the frozen prior,
    which ignores the map), segmented by ``segmenter`` (``brain_unet``): Dice per image and class against the
    requested map (:func:`diffu.control.label_fidelity`). ``real`` is the segmenter on the real images of the same
    maps, the ceiling of the measure; ``curve`` the manifest's training log."""
    from ..control import label_fidelity
    from ..metrics import dice
    from ..pretrained import available, info

    segmenter = segmenter.eval()
    dev = next(segmenter.parameters()).device
    images, labels = (t.to(dev) for t in held_out_set("brain", n))
    with torch.no_grad():
        real = dice(segmenter(images).argmax(1), labels, 4)
    fid = {}
    for sc in scales:
        x = _synthesize(model.eval(), labels, steps, sc)
        fid[str(sc)] = label_fidelity(x.to(dev), labels, segmenter, 4).dice.tolist()
    curve = info(SYNTHESIS_MODEL).get("monitor", []) if SYNTHESIS_MODEL in available() else []
    return {"classes": list(TISSUES[1:]), "n": n, "steps": steps, "real": real.tolist(), "fidelity": fid,
            "curve": curve, "trainable_parameters": _control_parameters(model)}  # fmt: skip


def _default_segmenter():
    from ..pretrained import build, info

    return build(info(SYNTHESIS_SEGMENTER))


def bench_augmentation(generator, *, n: int = 64, build_segmenter=None, device=None, progress: bool = True,
                       **config) -> dict:  # fmt: skip
    """The ``augmentation`` part (§6.1 → §6.2): does label → image synthesis help a segmenter that has only a few
    labelled slices? Per seed, the same network (``build_segmenter()``, default: a fresh ``brain_unet``
    architecture, initialised under ``torch.manual_seed(seed)``) is trained with :func:`diffu.train.train`
    (cross-entropy + soft Dice, AdamW 3e-4, no EMA) on each arm of :data:`AUGMENTATION_ARMS`: the ``n_real``
    labelled slices alone; with ``n_synthetic`` pairs (tissue maps of other slices, their images generated by
    ``generator`` with DDIM ``ddim_steps``) added; with the real images of those same maps added instead (what the
    synthetic images stand in for). ``config`` overrides :data:`AUGMENTATION`. Dice per seed, image and class on the
    ``n`` held-out brain images."""
    from tqdm.auto import tqdm

    from ..data.mni import augmented_slices
    from ..metrics import dice
    from ..segmentation import segmentation_loss
    from ..train import TrainConfig, train

    unknown = set(config) - set(AUGMENTATION)
    if unknown:
        raise TypeError(f"config: unknown keys {sorted(unknown)}; the keys are {sorted(AUGMENTATION)}")
    cfg = {**AUGMENTATION, **config}
    for k, v in cfg.items():
        check_int(k, v, 1)
    build_segmenter = build_segmenter or _default_segmenter
    dev = resolve_device(device)
    real = augmented_slices(cfg["n_real"], seed=cfg["real_seed"])
    extra = augmented_slices(cfg["n_synthetic"], seed=cfg["extra_seed"])
    start = time.perf_counter()
    synthetic = _synthesize(generator.to(dev).eval(), extra["labels"], cfg["ddim_steps"]).cpu()
    synth_seconds = time.perf_counter() - start
    arms = {
        "real": (real["t1"], real["labels"]),
        "real + synthetic": (torch.cat([real["t1"], synthetic]), torch.cat([real["labels"], extra["labels"]])),
        "real + real": (torch.cat([real["t1"], extra["t1"]]), torch.cat([real["labels"], extra["labels"]])),
    }
    images, labels = (t.to(dev) for t in held_out_set("brain", n))

    def loss(m, x, y, generator=None):
        return segmentation_loss(m(x), y)

    out = {a: [] for a in AUGMENTATION_ARMS}
    jobs = [(seed, a) for seed in range(cfg["seeds"]) for a in AUGMENTATION_ARMS]
    for seed, a in tqdm(jobs, disable=not progress, desc="augmentation"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_segmenter().to(dev)
        tc = TrainConfig(steps=cfg["steps"], batch_size=cfg["batch_size"], lr=3e-4, warmup=min(50, cfg["steps"] // 5),
                         grad_clip=1.0, ema_decay=None, seed=seed, ckpt_every=0)  # fmt: skip
        net = train(net, loss, arms[a], tc, progress=False).model.eval()
        with torch.no_grad():
            out[a].append(dice(net(images).argmax(1), labels, 4).tolist())
    return {"classes": list(TISSUES[1:]), "n": n, "config": cfg, "arms": list(AUGMENTATION_ARMS), "dice": out,
            "synthesis_seconds": synth_seconds}  # fmt: skip


def bench_segmentation(*, n: int = 64, ensemble: int = 10, steps: int = 10, datasets=tuple(DATASETS), parts=PARTS,
                       sdseg_steps=SDSEG_STEPS, seeds: int = 3, n_control: int = 256, control_steps: int = 20,
                       attention_timesteps=ATTENTION_TIMESTEPS, augmentation: dict | None = None, device=None,
                       progress: bool = True, models: dict | None = None) -> dict:  # fmt: skip
    """Every part of :data:`PARTS` asked for, with the shipped models (or those given in ``models``:
    ``{model name: network}``, used by the tests). ``segmentation``: every method of :data:`METHODS` on ``n``
    held-out images of each dataset, ``steps`` DDIM steps for the mask-diffusion models, ``ensemble`` members per
    image; ``sdseg``: ``n`` cardiac test images, ``sdseg_steps`` × ``seeds``; ``control``: ``n_control`` shifted masks,
    DDIM ``control_steps``; ``attention``: ``n`` textured items at ``attention_timesteps``; ``synthesis``: the ``n``
    held-out brain maps, DDIM ``control_steps``; ``augmentation``: :func:`bench_augmentation` with ``augmentation``
    (overrides of :data:`AUGMENTATION`)."""
    from tqdm.auto import tqdm

    from ..pretrained import available, load

    check_int("n", n, 1)
    check_int("ensemble", ensemble, 1)
    check_int("steps", steps, 1)
    check_int("seeds", seeds, 1)
    check_int("n_control", n_control, 1)
    check_int("control_steps", control_steps, 1)
    for d in datasets:
        check_choice("datasets", d, tuple(DATASETS))
    for part in parts:
        check_choice("parts", part, PARTS)
    dev = resolve_device(device)
    models = dict(models or {})
    shipped = set(available())

    def have(name):
        return name in models or name in shipped

    def get(name):
        return (models[name] if name in models else load(name, device=dev)).to(dev).eval()

    missing, res = [], {}
    if "segmentation" in parts:
        jobs = [(d, *m) for d in datasets for m in METHODS[d]]
        missing += [name for _, _, name, _ in jobs if not have(name)]
        rows = []
        for dataset, label, name, kind in tqdm([j for j in jobs if have(j[2])], disable=not progress,
                                               desc="segmentation"):  # fmt: skip
            images, labels = held_out_set(dataset, n)
            r = evaluate(get(name), kind, images, labels, ensemble=ensemble, steps=steps)
            rows.append({"dataset": dataset, "method": label, "model": name, "kind": kind,
                         "classes": list(DATASETS[dataset][1:]), **r})  # fmt: skip
        res.update(n=n, ensemble=ensemble, steps=steps, sizes=list(SIZES), test_seeds=TEST_SEEDS, rows=rows)
    if "sdseg" in parts:
        need = ("cardiac_sdseg", "cardiac_mask_autoencoder")
        missing += [m for m in need if not have(m)]
        if all(have(m) for m in need):
            res["sdseg"] = bench_sdseg(get(need[0]), get(need[1]), n=n, steps=sdseg_steps, seeds=seeds, device=dev)
            res["sdseg_classes"] = list(CARDIAC_CLASSES[1:])
    if "control" in parts:
        missing += [name for _, name in CONTROL_MODELS if not have(name)]
        control = {name: get(name) for _, name in CONTROL_MODELS if have(name)}
        res["control"] = bench_control(control, n=n_control, steps=control_steps)
    if "synthesis" in parts or "augmentation" in parts:
        need = (SYNTHESIS_MODEL, SYNTHESIS_SEGMENTER)
        missing += [m for m in need if not have(m)]
        if all(have(m) for m in need):
            if "synthesis" in parts:
                res["synthesis"] = bench_synthesis(get(SYNTHESIS_MODEL), get(SYNTHESIS_SEGMENTER), n=n,
                                                   steps=control_steps)  # fmt: skip
            if "augmentation" in parts:
                res["augmentation"] = bench_augmentation(get(SYNTHESIS_MODEL), n=n, device=dev, progress=progress,
                                                         **(augmentation or {}))  # fmt: skip
    if "attention" in parts:
        if have("fmnist_t2i"):
            res["attention"] = bench_attention(get("fmnist_t2i"), n=n, timesteps=attention_timesteps, device=dev,
                                               progress=progress)  # fmt: skip
        else:
            missing.append("fmnist_t2i")
    return {**res, "parts": list(parts), "missing": missing, **environment(dev)}


def dice_summary(row: dict, size: int | None = None) -> dict:
    """A row's mean Dice per class and over the classes, for ensemble ``size`` (default: the largest run):
    ``{class name: mean, …, "mean": mean over classes}`` (NaN-skipping over images)."""
    sizes = sorted(int(m) for m in row["dice"])
    m = sizes[-1] if size is None else size
    if m not in sizes:
        raise ValueError(f"size must be one of the row's ensemble sizes {sizes}, got {size!r}")
    d = torch.tensor(row["dice"][m] if m in row["dice"] else row["dice"][str(m)], dtype=torch.float64)
    per = d.nanmean(0).tolist()
    return {**dict(zip(row["classes"], per)), "mean": float(torch.tensor(per).nanmean())}


def run_segmentation(args) -> dict:
    """``python -m diffu.bench segmentation``: :func:`bench_segmentation` (tiny: 4 images, ensembles of 2, 2 DDIM
    steps), printed and written to ``--out`` as ``segmentation.json``."""
    out = results_dir(args.out, full_run=not args.tiny)
    command = " ".join(["python -m diffu.bench segmentation", *(args.argv or [])])
    if args.tiny:
        kw = dict(n=4, ensemble=2, steps=2, sdseg_steps=(1, 2), seeds=1, n_control=2, control_steps=2,
                  attention_timesteps=(400,), augmentation=dict(n_real=4, n_synthetic=4, steps=2, seeds=1,
                                                                ddim_steps=2))  # fmt: skip
    else:
        kw = dict(n=args.n_images)
    res = bench_segmentation(**kw, device=args.device, progress=not args.tiny)
    res["command"] = command
    print_summary(res)
    if out is not None:
        write_json(out / "segmentation.json", res)
    return res


def print_summary(res: dict) -> None:
    """Print a :func:`bench_segmentation` result as the command does: Dice single vs ensemble per method, SDSeg by
    step count, control fidelity by strength, the best attention cell against the baselines."""
    print(f"[segmentation] {res.get('n', '?')} held-out images per dataset, {res['machine']}")
    for r in res.get("rows", []):
        single, full = dice_summary(r, 1), dice_summary(r)
        cls = " ".join(f"{c} {full[c]:.3f}" for c in r["classes"])
        unc = r["uncertainty"]
        ustr = "" if unc is None else f"  var-error r {unc['correlation']:.2f} AUROC {unc['auroc']:.3f}"
        print(f"  {r['dataset']:7s} {r['method']:32s} Dice single {single['mean']:.3f} ensemble {full['mean']:.3f}"
              f" ({cls}){ustr}  {r['seconds_per_image'] * 1e3:.1f} ms/sample")  # fmt: skip
    if res.get("sdseg"):
        print(f"  SDSeg autoencoder ceiling: Dice {_avg(sum(res['sdseg'][0]['autoencoder_dice'], [])):.3f}")
    for k in sorted({r["steps"] for r in res.get("sdseg", [])} - {0}):
        rs = [r for r in res["sdseg"] if r["steps"] == k]
        d = torch.tensor([r["dice"] for r in rs], dtype=torch.float64)  # (seeds, N, 3)
        q = torch.tensor([r["query_dice"] for r in rs], dtype=torch.float64)
        print(f"  SDSeg {k:3d} step(s): Dice {float(d.nanmean()):.3f} (per seed "
              f"{', '.join(f'{float(x):.3f}' for x in d.flatten(1).nanmean(1))}), one structure asked for "
              f"{float(q.nanmean()):.3f}, {_avg([r['seconds_per_image'] for r in rs]) * 1e3:.1f} ms/image")  # fmt: skip
    for r in res.get("control", []):
        fid = ", ".join(f"s={s}: {_avg(v['dice']):.3f}" for s, v in r["fidelity"].items())
        print(f"  control {r['method']:12s} {r['trainable_parameters']:,} trainable; Dice by strength {fid}; "
              f"sudden: {r['sudden_convergence']}, on progress: {r['sudden_convergence_progress']}")  # fmt: skip
    if "attention" in res:
        a = res["attention"]
        best = torch.tensor(a["own"]["iou"]).mean(-1)
        i, j = divmod(int(best.argmax()), best.shape[1])
        other = torch.tensor(a["other_class"]["iou"]).mean(-1)[i, j]
        print(f"  attention: best IoU {float(best[i, j]):.3f} (t = {a['timesteps'][i]}, block {a['layers'][j]}); "
              f"other class's word {float(other):.3f}; Otsu {_avg(a['image_otsu']):.3f}, best polarity "
              f"{_avg(a['image_otsu_best']):.3f}, all foreground {_avg(a['all_foreground']):.3f}")  # fmt: skip
    if "synthesis" in res:
        sy = res["synthesis"]
        fid = ", ".join(f"s={k}: {_avg([_avg(r) for r in v]):.3f}" for k, v in sy["fidelity"].items())
        print(f"  label -> image: brain_unet Dice against the requested map by strength {fid}; real images "
              f"{_avg([_avg(r) for r in sy['real']]):.3f}")  # fmt: skip
    if "dice" in (res.get("augmentation") or {}):  # (a result, not the part's configuration)
        au = res["augmentation"]
        arms = ", ".join(f"{a} {_avg([_avg(r) for s in au['dice'][a] for r in s]):.3f}" for a in au["arms"])
        print(f"  augmentation ({au['config']['n_real']} real slices, {au['config']['n_synthetic']} added, "
              f"{au['config']['seeds']} seeds): Dice {arms}")  # fmt: skip
    if res["missing"]:
        print("  not shipped (skipped):", ", ".join(res["missing"]))
