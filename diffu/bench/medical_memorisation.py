"""Memorisation of the T1 slice prior at the scale of its training set, chapter §5.1.1:
``python -m diffu.bench medical_memorisation``.

**What it measures.** Whether ``mni_t1_prior`` copies its training images. ``n_samples`` DDPM samples are compared
with the prior's **whole training set** — the 20 000 augmented slices the recipe drew,
``augmented_slices(20_000, 32, seed=0)["t1"]`` (``diffu.recipes.RECIPES["mni_t1_prior"]``'s data hook), regenerated
bit for bit — and with the template's 123 training slices, by the RMSE to the nearest neighbour
(:func:`diffu.metrics.nearest_neighbour`). The reference behaviour is that of ``n_fresh`` **fresh draws** of the same
augmentation (a seed the recipe never used), i.e. new images of the training distribution: a prior that generalises
produces samples that are no closer to the training images than fresh draws are. The held-out band
(:data:`diffu.data.mni.HELD_OUT`, undeformed template slices) is measured as well. Stored: every image's distance to
and index of its nearest neighbour in both references, each image's brain fraction, the two statistics below, the
closest sample–training pairs by RMSE and by relative distance (with their pixels, so that a page can show them
without re-running anything), the closest fresh–training pairs, and the CPU seconds of each phase. (The relative
distance of an image is ``distance / second`` of its ``per_image`` entry.)

**Command.** ``python -m diffu.bench medical_memorisation`` (``--tiny``: a seconds-long run that writes only with
``--out``); writes ``medical_memorisation.json``.

**Statistics.**

- *Mean gap*: mean distance of the samples minus that of the fresh draws, with the standard error of a difference of
  two independent means (samples are independent chains, fresh draws independent augmentations). A memorising prior
  has a negative gap; "no memorisation detectable" means a gap above −2 s.e.
- *Copy test* (Carlini et al., USENIX Security 2023, with RMSE in place of their distance): the threshold is the
  ``r``-th smallest distance of the ``m`` fresh draws — ``r = 1`` (their minimum) and ``r = ⌈0.01 m⌉`` (their 1 %
  quantile) — and the statistic the number ``K`` of samples strictly below it. If samples behave like fresh draws the
  ``n + m`` distances are exchangeable, every arrangement of the two groups in their sorted order is equally likely,
  and ``K ≥ k`` exactly when at least ``k`` of the ``k + r − 1`` smallest distances are samples': ``K`` follows a
  negative hypergeometric law and the p-value ``P(K ≥ k)`` is a hypergeometric tail (:func:`copy_p_value`; for
  ``r = 1`` it is ``C(n, k) / C(n + m, k)``). ``E K = n r / (m + 1)``; the binomial tail with that rate, which ignores
  that all samples share one random threshold, is stored alongside (``p_binomial``). The test is run on the RMSE and
  on the *relative* distance ``d₁ / d₂`` (nearest over second-nearest training image, in the spirit of Carlini et al.'s
  distance relative to the nearest neighbours): near-empty slices at the top and bottom of the brain are within a
  few thousandths of RMSE of many training images, so they set the RMSE threshold; a copy has ``d₁ / d₂`` near 0
  whatever its content.

**Choices.**

- *Sampler*: DDPM (ancestral, β̃ variance, clipped x̂₀) respaced to ``steps`` = 50 steps, as the live test of the
  chapter's page on a CPU; the deterministic DDIM sampler leaves grain that adds to every distance (the page shows
  it). Samples are drawn in batches of :data:`BATCH` from one generator seeded ``seed``, and clamped to [-1, 1].
- *Fresh draws*: ``augmented_slices(n_fresh, 32, seed=FRESH_SEED)``: :func:`~diffu.data.mni.augment` seeds 1000,
  1001, … (one per chunk of 1000), while every recipe that trains on augmented MNI slices draws
  ``augmented_slices(20_000, 32, seed=0)``, seeds 0–19 (and the page's live test also uses seed 1000, with another
  batch size and so other images).
- Distances are computed on the CPU in float64 (:func:`~diffu.metrics.nearest_neighbour`), on the [-1, 1] scale.

Nothing here is for clinical use: one template (an average of 152 brains) and its augmentations are the whole data.
"""

from __future__ import annotations

import base64
import math
import time

import numpy as np
import torch

from ..checks import check_int, check_tensor
from ..data.mni import augmented_slices, mni_slices
from ..metrics import nearest_neighbour
from ..samplers import ddpm
from ..schedules import linear_schedule
from .common import environment, finite_mean, resolve_device, results_dir, write_json

#: The size of ``mni_t1_prior``'s training set, ``augmented_slices(N_TRAIN, 32, seed=TRAIN_SEED)["t1"]``.
N_TRAIN = 20_000
#: The seed of the recipe's ``augmented_slices`` call (augment seeds 0–19, one per chunk of 1000).
TRAIN_SEED = 0
#: The seed of the fresh draws (augment seeds 1000, 1001, …; the recipes use 0–19).
FRESH_SEED = 1000
#: Samples per sampler call.
BATCH = 64
#: The quantiles of the fresh draws' distances used as copy-test thresholds (0: their minimum).
QUANTILES = (0.0, 0.01)
#: Closest sample–training pairs stored with their pixels.
N_PAIRS = 8
#: Closest fresh–training pairs stored with their pixels (for comparison).
N_FRESH_PAIRS = 4
#: The images' side (the prior's resolution).
SIZE = 32


def brain_fraction(x: torch.Tensor) -> torch.Tensor:
    """The fraction of pixels above the background (> −0.9 on the [-1, 1] scale) of each image (N,)."""
    return (x > -0.9).flatten(1).float().mean(1)


def second_nearest(x: torch.Tensor, reference: torch.Tensor, index: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each sample of ``x`` (N, …), the RMSE to its nearest neighbour in ``reference`` (M ≥ 2, …) other than
    ``reference[index[i]]`` (the nearest, from :func:`~diffu.metrics.nearest_neighbour`): (N,) in ``x``'s dtype. As
    in that function, the search expands ``‖a − r‖²`` in float64 on data centred by the reference mean and the
    distance is recomputed from the difference itself."""
    check_tensor(x, "x", floating=True, finite=True)
    check_tensor(reference, "reference", floating=True, finite=True)
    if reference.shape[0] < 2 or x.shape[1:] != reference.shape[1:] or index.shape != x.shape[:1]:
        raise ValueError(f"x (N, …), reference (M ≥ 2, …) and index (N,) must match, got {tuple(x.shape)}, "
                         f"{tuple(reference.shape)} and {tuple(index.shape)}")  # fmt: skip
    with torch.no_grad():
        r = reference.detach().flatten(1).to(x.device, torch.float64)
        centre = r.mean(0)
        r = r - centre
        r2 = r.pow(2).sum(1)
        out = []
        for i in range(0, x.shape[0], chunk):
            a = x[i : i + chunk].detach().flatten(1).double() - centre
            d2 = a.pow(2).sum(1, keepdim=True) - 2 * a @ r.T + r2  # (n, M)
            d2.scatter_(1, index[i : i + chunk, None].to(x.device), math.inf)  # leave out the nearest
            j = d2.argmin(1)
            out.append((a - r[j]).pow(2).mean(1).sqrt())
    return torch.cat(out).to(x.dtype)


def copy_p_value(count: int, n: int, m: int, rank: int) -> float:
    """``P(K ≥ count)`` for ``K`` the number of ``n`` samples strictly below the ``rank``-th smallest of ``m`` fresh
    draws' distances, when the ``n + m`` distances are exchangeable (samples behave like fresh draws): the
    hypergeometric tail ``P(X ≥ count)``, ``X`` the samples among the ``count + rank − 1`` smallest distances."""
    check_int("n", n, 1)
    check_int("m", m, 1)
    check_int("rank", rank, 1, m)
    check_int("count", count, 0, n)
    if count == 0:
        return 1.0
    draws = count + rank - 1
    total = math.comb(n + m, draws)
    tail = sum(math.comb(n, k) * math.comb(m, draws - k) for k in range(count, min(n, draws) + 1))
    return tail / total


def binomial_tail(count: int, n: int, p: float) -> float:
    """``P(Bin(n, p) ≥ count)``."""
    return float(sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(count, n + 1)))


def copy_test(d_samples: torch.Tensor, d_fresh: torch.Tensor, quantiles=QUANTILES) -> list[dict]:
    """The copy test of the module docstring at each quantile of ``quantiles`` (0: the minimum): the threshold (the
    ``r``-th smallest fresh distance, ``r = max(1, ⌈q m⌉)``), the count of samples strictly below it, its expectation
    ``n r / (m + 1)`` and the exact and binomial p-values."""
    n, m = d_samples.numel(), d_fresh.numel()
    fresh = d_fresh.double().sort().values
    rows = []
    for q in quantiles:
        rank = max(1, math.ceil(q * m - 1e-9))
        thr = float(fresh[rank - 1])
        count = int((d_samples.double() < thr).sum())
        rows.append({"quantile": q, "rank": rank, "threshold": thr, "count": count, "expected": n * rank / (m + 1),
                     "p_value": copy_p_value(count, n, m, rank),
                     "p_binomial": binomial_tail(count, n, rank / (m + 1))})  # fmt: skip
    return rows


def mean_gap(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Mean of ``a`` minus mean of ``b`` with the standard error of a difference of independent means, and z."""
    a, b = a.double(), b.double()
    se = math.sqrt(float(a.var()) / a.numel() + float(b.var()) / b.numel()) if min(a.numel(), b.numel()) > 1 else 0.0
    gap = float(a.mean() - b.mean())
    return {"gap": gap, "se": se, "z": gap / se if se > 0 else math.nan}


def encode_image(x: torch.Tensor) -> str:
    """A (H, W) image in [-1, 1] as base64 of its uint8 pixels ``round((x + 1) / 2 · 255)``, row-major (a page
    decodes it with :func:`decode_image`)."""
    u8 = ((x.detach().cpu().double().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).numpy()
    return base64.b64encode(u8.tobytes()).decode("ascii")


def decode_image(text: str, size: int = SIZE) -> np.ndarray:
    """The (size, size) float image in [-1, 1] of :func:`encode_image` (quantised to 2/255)."""
    u8 = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    if u8.size != size * size:
        raise ValueError(f"text must encode {size}×{size} = {size * size} pixels, got {u8.size}")
    return u8.reshape(size, size).astype(np.float64) / 255 * 2 - 1


def _r(v: torch.Tensor, digits: int = 5) -> list:
    return [round(float(a), digits) for a in v]


def bench_medical_memorisation(*, n_samples: int = 256, steps: int = 50, n_fresh: int = 2000, n_train: int = N_TRAIN,
                               seed: int = 0, device=None, progress: bool = True,
                               models: dict | None = None) -> dict:  # fmt: skip
    """Samples of ``mni_t1_prior`` against its whole training set (see the module docstring).

    Args:
        n_samples: DDPM samples, an integer ≥ 2.
        steps: DDPM steps, an integer in [1, 1000] (the page's live test: 50).
        n_fresh: fresh augmented draws, an integer ≥ 2.
        n_train: the reference's size (default the whole training set, 20 000; tests pass fewer, an integer in
            [2, 20 000]: ``augmented_slices(n_train, seed=0)`` is the start of the training set when ``n_train`` is
            a multiple of 1000, see :func:`~diffu.data.mni.augmented_slices`).
        seed: the sampler's seed.
        device: where the prior samples (default the CPU); distances are computed on the CPU.
        progress: a progress bar over the sampler's batches.
        models: ``{"prior": net}`` replacing the shipped ``mni_t1_prior`` (tests pass tiny seeded networks, and
            x̂₀-predicting stand-ins that return chosen images, to check the statistics).

    Raises:
        ValueError: a count out of range, unknown ``models`` keys.
        TypeError: ``models`` not a dict.
    """
    from tqdm.auto import tqdm

    from ..pretrained import load

    check_int("n_samples", n_samples, 2)
    check_int("steps", steps, 1, 1000)
    check_int("n_fresh", n_fresh, 2)
    check_int("n_train", n_train, 2, N_TRAIN)
    check_int("seed", seed, 0)
    if models is not None and not isinstance(models, dict):
        raise TypeError(f"models must be a dict such as {{'prior': net}}, got {type(models).__name__}")
    if models and set(models) - {"prior"}:
        raise ValueError(f"models must have the key 'prior' only, got {sorted(models)}")
    dev = resolve_device(device)
    prior = models["prior"] if models and "prior" in models else load("mni_t1_prior", device=dev)
    cpu = {}

    # 1. samples: DDPM in batches of BATCH from one seeded generator
    t0 = time.process_time()
    g = torch.Generator(dev).manual_seed(seed)
    sizes = [min(BATCH, n_samples - i) for i in range(0, n_samples, BATCH)]
    parts = []
    for b in tqdm(sizes, disable=not progress, desc="memorisation: DDPM samples"):
        parts.append(ddpm(prior, (b, 1, SIZE, SIZE), linear_schedule(), steps=steps, generator=g, progress=False))
    samples = torch.cat(parts).clamp(-1, 1).float().cpu()  # (n_samples, 1, 32, 32)
    cpu["sampling"] = time.process_time() - t0
    # 2. the references: the training set exactly as the recipe drew it, the template's training slices
    t0 = time.process_time()
    train = augmented_slices(n_train, SIZE, seed=TRAIN_SEED)["t1"]  # (n_train, 1, 32, 32)
    template = mni_slices(size=SIZE, split="train")  # (123, 1, 32, 32)
    cpu["training_set"] = time.process_time() - t0
    # 3. the unseen real images: fresh draws of the training distribution, the held-out band
    t0 = time.process_time()
    fresh = augmented_slices(n_fresh, SIZE, seed=FRESH_SEED)["t1"]  # (n_fresh, 1, 32, 32)
    band = mni_slices(size=SIZE, split="test")  # (24, 1, 32, 32)
    cpu["fresh"] = time.process_time() - t0
    # 4. nearest neighbours in (a) the template's slices and (b) the augmented training set
    t0 = time.process_time()
    groups = {"samples": samples, "fresh": fresh, "band": band}
    dist = {}
    for name, x in groups.items():
        da, ia = nearest_neighbour(x, template)
        db, ib = nearest_neighbour(x, train)
        d2 = second_nearest(x, train, ib)
        dist[name] = {"template": {"distance": da, "index": ia},
                      "augmented": {"distance": db, "index": ib, "second": d2,
                                    "relative": db / d2.clamp_min(1e-12)}}  # fmt: skip
    cpu["nearest_neighbours"] = time.process_time() - t0

    summary = {}
    for ref in ("template", "augmented"):
        d = {k: v[ref]["distance"].double() for k, v in dist.items()}
        summary[ref] = {k: {"mean": float(v.mean()), "se": float(v.std() / v.numel() ** 0.5)} for k, v in d.items()}
        summary[ref]["gap_fresh"] = mean_gap(d["samples"], d["fresh"])
        summary[ref]["gap_band"] = mean_gap(d["samples"], d["band"])
    copy = {stat: copy_test(dist["samples"]["augmented"][stat], dist["fresh"]["augmented"][stat])
            for stat in ("distance", "relative")}  # fmt: skip

    def pairs(name, x, k, by="distance"):
        d, idx = dist[name]["augmented"]["distance"], dist[name]["augmented"]["index"]
        order = dist[name]["augmented"][by].argsort()[:k].tolist()
        return [{"image": i, "train": int(idx[i]), "distance": float(d[i]),
                 "relative": float(dist[name]["augmented"]["relative"][i]), "brain": float(brain_fraction(x[i:i + 1])),
                 "pixels": encode_image(x[i, 0]), "train_pixels": encode_image(train[idx[i], 0])}
                for i in order]  # fmt: skip

    def listed(v):
        return _r(v) if v.is_floating_point() else v.tolist()

    per_image = {}
    for name, x in groups.items():
        per_image[name] = {"brain": _r(brain_fraction(x), 4)}
        for ref in ("template", "augmented"):
            per_image[name][ref] = {k: listed(v) for k, v in dist[name][ref].items() if k != "relative"}
    return {"n_samples": n_samples, "steps": steps, "sampler": "ddpm (fixedsmall variance, leading spacing, clipped "
            "x0), linear schedule T = 1000", "batch": BATCH, "seed": seed, "n_fresh": n_fresh,
            "fresh_seed": FRESH_SEED, "n_train": n_train, "train_seed": TRAIN_SEED, "n_template": template.shape[0],
            "n_band": band.shape[0], "size": SIZE, "quantiles": list(QUANTILES), "summary": summary,
            "copy_test": copy, "closest": pairs("samples", samples, N_PAIRS),
            "closest_relative": pairs("samples", samples, N_PAIRS, by="relative"),
            "closest_fresh": pairs("fresh", fresh, N_FRESH_PAIRS), "per_image": per_image,
            "cpu_seconds": {**cpu, "total": sum(cpu.values())}, **environment(dev)}  # fmt: skip


def run_medical_memorisation(args) -> dict:
    """``python -m diffu.bench medical_memorisation``: :func:`bench_medical_memorisation` (tiny: 4 samples of 2 steps,
    20 fresh draws, a 200-image reference), printed and written to ``--out`` as ``medical_memorisation.json``."""
    out = results_dir(args.out, full_run=not args.tiny)
    command = " ".join(["python -m diffu.bench medical_memorisation", *(args.argv or [])])
    kw = dict(n_samples=4, steps=2, n_fresh=20, n_train=200) if args.tiny else {}
    res = bench_medical_memorisation(**kw, device=args.device, progress=not args.tiny)
    res["command"] = command
    print(f"[medical_memorisation] {res['n_samples']} DDPM-{res['steps']} samples of mni_t1_prior vs "
          f"{res['n_train']} augmented training images and {res['n_template']} template slices; {res['n_fresh']} "
          f"fresh draws (seed {res['fresh_seed']}), {res['n_band']} held-out slices; {res['machine']}, "
          f"{res['cpu_seconds']['total']:.0f} CPU s")  # fmt: skip
    for ref, s in res["summary"].items():
        d = {k: finite_mean(res["per_image"][k][ref]["distance"]) for k in ("samples", "fresh", "band")}
        gf = s["gap_fresh"]
        print(f"  NN-RMSE to {ref:9s}: samples {d['samples']:.4f}, fresh {d['fresh']:.4f}, band {d['band']:.4f}; "
              f"samples - fresh {gf['gap']:+.4f} ± {gf['se']:.4f} (z = {gf['z']:+.1f})")  # fmt: skip
    for stat, rows in res["copy_test"].items():
        for r in rows:
            print(f"  copy test ({stat:8s}, fresh rank {r['rank']:3d}, threshold {r['threshold']:.4f}): "
                  f"{r['count']} samples below (expected {r['expected']:.2f}), p = {r['p_value']:.3g} "
                  f"(binomial {r['p_binomial']:.3g})")  # fmt: skip
    c = res["closest"][0]
    print(f"  closest sample {c['image']} to training image {c['train']}: RMSE {c['distance']:.4f}, d1/d2 "
          f"{c['relative']:.3f}, brain {100 * c['brain']:.0f} %")  # fmt: skip
    if out is not None:
        write_json(out / "medical_memorisation.json", res)
    return res
