"""Anomaly detection in brain slices, chapter §5.1.4: ``python -m diffu.bench medical_anomaly``.

**What it measures.** How well four detectors find synthetic lesions in held-out MNI152 T1 slices, 32 × 32: masked
diffusion posterior sampling (Wu et al. 2024, :func:`diffu.medical.anomaly.masked_dps_map`) with the healthy prior
``mni_t1_prior``, AnoDDPM with Gaussian noise (Wyatt et al. 2022, :func:`~diffu.medical.anomaly.anoddpm_map`), the
reconstruction error of the slice autoencoder ``mni_autoencoder`` (:func:`~diffu.medical.anomaly.autoencoder_map`)
and the left–right mirror difference (:func:`~diffu.medical.anomaly.mirror_difference`). Per (lesion set, method):
the pixel AUROC and the best-threshold Dice inside the brain (:func:`~diffu.medical.anomaly.brain_mask`), pooled over
all images of the set *and* per image (so that a page can put a spread on each number), the pooled AUROC of the
"small/faint" and "large/strong" halves of the set, NFE, and seconds per image on the machine that ran it: wall-clock
(``seconds_per_image``) and the process's CPU time (``cpu_seconds_per_image``, which on a shared machine is the
compute cost whatever else runs; with one thread the two agree on an idle machine).

**Command.** ``python -m diffu.bench medical_anomaly`` (``--tiny``: a seconds-long run that writes only with
``--out``); writes ``medical_anomaly.json``.

**Choices.**

- *Test images*: ``n`` axial slices spread evenly over the held-out band :data:`diffu.data.mni.HELD_OUT` (never
  trained on), each lesioned ``seeds`` times with independent draws: ``n · seeds`` images per lesion set.
- *Lesions* (:data:`LESIONS`, :func:`~diffu.medical.anomaly.insert_lesions`): one soft-edged ellipse per image,
  semi-major axis 5–12 % of the width (1.6–3.8 px, about 9–22 mm on the 181 mm field of view), contrast 0.3–0.7
  on the [-1, 1] scale, hyper- or hypointense at random. Two sets (:data:`LESION_SETS`): **one-sided** (the lesion in
  a random hemisphere) and **symmetric** (each lesion with its mirror copy, which the mirror difference cannot see).
  Each set is split at the median of the lesion's total intensity change ``Σ|x_lesioned − x|`` into a
  "small/faint" and a "large/strong" half.
- *Masked DPS*: ``masks`` random 4 × 4-patch masks per image (half the patches observed), ``steps`` DDIM steps
  (η = 1) from ``t_start``, as the official MDPS code (its default 200 of 1000 and 10 steps, 2 NFE per step); the
  pair (``t_start``, ζ) is chosen on validation images from :data:`MDPS_GRID`. The maps for K = 1, 2, 4, … masks
  are the running means of the same run's per-mask differences (read from the sampler's last callback), so the
  K rows share their draws; their seconds are the full run's, scaled by K / ``masks``. The row "no guidance"
  runs the same sampler with ζ = 0, where the masks play no role: the partial-noise reconstruction the guidance
  improves on.
- *AnoDDPM*: Gaussian noise, every reverse step from ``t_start`` (chosen on validation images from
  :data:`ANODDPM_GRID`), one sample, as the official code's Gaussian variant.
- *Validation*: ``n_val`` *training* slices (:func:`validation_slices`: slices outside the held-out band and its
  guard whose brain covers at least half the image, like the band's), lesioned as the test sets with other seeds;
  the knob maximises the mean over the two sets of the pooled AUROC. Test images are never used to choose anything.
- The autoencoder and the mirror difference have no knob.

Nothing here is for clinical use: the lesions are uniform intensity shifts (no texture, mass effect or oedema), so
the numbers are not comparable with published ones on real lesions.
"""

from __future__ import annotations

import time

import torch

from ..checks import check_int
from ..data.mni import HELD_OUT, mni_slices
from ..medical.anomaly import (
    anoddpm_map,
    autoencoder_map,
    best_dice,
    brain_mask,
    insert_lesions,
    masked_dps_map,
    mirror_difference,
    pixel_auroc,
)
from ..schedules import linear_schedule
from .common import environment, resolve_device, results_dir, write_json
from .common import finite_mean as _avg
from .medical import SIZE

#: The lesions of every set (:func:`diffu.medical.anomaly.insert_lesions`): one per image (and its mirror copy in
#: the symmetric set), semi-major axis 5–12 % of the width, contrast 0.3–0.7 on the [-1, 1] scale, either polarity.
LESIONS = dict(n=1, radius=(0.05, 0.12), contrast=(0.3, 0.7), polarity="both", edge=1.0)
#: The lesion sets: name → ``side`` of :func:`~diffu.medical.anomaly.insert_lesions`.
LESION_SETS = {"one-sided": "both", "symmetric": "symmetric"}
#: Masked DPS's fixed settings (the official code's η = 1; half of the 4 × 4 patches observed).
MDPS = dict(keep=0.5, patch=4, eta=1.0)
#: Masked DPS's validation grid of (t_start, ζ): the official start 200 with three step sizes, and an earlier start.
MDPS_GRID = ((200, 3.0), (200, 10.0), (200, 30.0), (100, 10.0))
#: AnoDDPM's validation grid of t_start (the paper's 250 of 1000, and two smaller levels for 32 × 32 lesions).
ANODDPM_GRID = (50, 100, 250)
#: The methods in the order of the table (the masked-DPS rows with K masks are added per K).
BASELINES = ("masked DPS, no guidance", "AnoDDPM", "autoencoder", "mirror difference")


def test_slices(n: int, device=None) -> tuple[torch.Tensor, list[int]]:
    """``n`` axial slices spread evenly over the held-out band and their template z indices."""
    band = mni_slices(size=SIZE, split="test")
    idx = torch.linspace(0, band.shape[0] - 1, n).round().long()
    return band[idx].to(device), [HELD_OUT[0] + int(i) for i in idx]


def validation_slices(n: int, device=None) -> torch.Tensor:
    """``n`` training slices (outside the held-out band and its guard) spread evenly over those whose brain covers at
    least half the image, as the band's slices do (65–68 %)."""
    train = mni_slices(size=SIZE, split="train")
    pool = train[brain_mask(train).float().mean((1, 2, 3)) >= 0.5]
    return pool[torch.linspace(0, pool.shape[0] - 1, n).round().long()].to(device)


def lesion_sets(x: torch.Tensor, seeds: int, seed0: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every lesion set of :data:`LESION_SETS` on ``x`` repeated ``seeds`` times (draw ``s`` of image ``i`` is row
    ``s · N + i``), lesions from CPU generators seeded ``seed0 + 100 · set + s`` (device-independent draws)."""
    out = {}
    for j, (name, side) in enumerate(LESION_SETS.items()):
        gens = [torch.Generator().manual_seed(seed0 + 100 * j + s) for s in range(seeds)]
        parts = [insert_lesions(x.cpu(), side=side, **LESIONS, generator=g) for g in gens]
        out[name] = (torch.cat([p[0] for p in parts]).to(x.device), torch.cat([p[1] for p in parts]).to(x.device))
    return out


def scores(maps: torch.Tensor, truth: torch.Tensor, region: torch.Tensor) -> dict:
    """Pooled AUROC and best Dice (with its threshold) and the per-image lists, inside ``region``."""
    dice, tau = best_dice(maps, truth, region=region)
    one = [(maps[i : i + 1], truth[i : i + 1], region[i : i + 1]) for i in range(maps.shape[0])]
    per = [(pixel_auroc(m, t, region=r), best_dice(m, t, region=r)[0]) for m, t, r in one]
    return {"auroc_pooled": pixel_auroc(maps, truth, region=region), "dice_pooled": dice, "threshold": tau,
            "auroc": [a for a, _ in per], "dice": [d for _, d in per]}  # fmt: skip


def _mask_counts(masks: int) -> list[int]:
    """K = 1, 2, 4, … up to ``masks`` (and ``masks`` itself)."""
    ks = [k for k in (2**i for i in range(masks.bit_length())) if k < masks]
    return [*ks, masks]


def mdps_per_mask(model, x, schedule, *, masks, steps, t_start, scale, generator) -> torch.Tensor:
    """The ``masks`` per-mask maps ``|x − x̂_k|`` ``(K, N, 1, H, W)`` of one :func:`masked_dps_map` run: the final
    samples are read from its last callback (row ``k · N + i`` is mask ``k`` of image ``i``); their mean is the
    returned map (checked)."""
    last = {}

    def keep_last(state):
        last["x"] = state.x

    mean = masked_dps_map(model, x, schedule, masks=masks, steps=steps, t_start=t_start, scale=scale, **MDPS,
                          generator=generator, progress=False, callback=keep_last)  # fmt: skip
    per = (x.repeat(masks, 1, 1, 1) - last["x"]).abs().mean(1, keepdim=True).unflatten(0, (masks, x.shape[0]))
    if not torch.allclose(per.mean(0), mean, atol=1e-5):  # pragma: no cover - the callback contract changed
        raise RuntimeError("masked_dps_map's last callback state is not its final sample")
    return per


def _validate(run, grid, val_sets) -> tuple[object, list[float]]:
    """The knob of ``grid`` with the best mean (over the sets) pooled AUROC on the validation sets, and every knob's
    value; the sets are run as one batch per knob."""
    xl = torch.cat([v[0] for v in val_sets])
    bounds = torch.tensor([0, *(v[0].shape[0] for v in val_sets)]).cumsum(0).tolist()
    values = []
    for knob in grid:
        maps = run(xl, knob)
        aucs = [pixel_auroc(maps[a:b], truth, region=region) for (a, b), (_, truth, region) in
                zip(zip(bounds, bounds[1:]), val_sets)]  # fmt: skip
        values.append(sum(aucs) / len(aucs))
    return grid[max(range(len(grid)), key=values.__getitem__)], values


def bench_medical_anomaly(n: int = 12, seeds: int = 2, *, n_val: int = 6, masks: int = 8, steps: int = 10,
                          anoddpm_steps: int | None = None, mdps_grid=MDPS_GRID, anoddpm_grid=ANODDPM_GRID,
                          seed: int = 0, device=None, progress: bool = True,
                          models: dict | None = None) -> dict:  # fmt: skip
    """Every detector on every lesion set (see the module docstring); returns the rows and the chosen knobs.

    Args:
        n: held-out slices, an integer in [1, 24] (the band's size).
        seeds: independent lesion draws per slice (an integer ≥ 1): ``n · seeds`` images per set.
        n_val: validation (training) slices, an integer ≥ 1.
        masks: masked DPS's masks per image (K, an integer ≥ 1); rows for K = 1, 2, 4, … up to it.
        steps: masked DPS's DDIM steps (official 10).
        anoddpm_steps: AnoDDPM's reverse steps (None: every step from t_start, as the official code).
        mdps_grid, anoddpm_grid: the validation grids ((t_start, ζ) pairs; t_start values).
        seed: the base seed of lesions and samplers.
        device: where the networks run (default the CPU).
        progress: a progress bar over the jobs.
        models: ``{"prior": net, "autoencoder": ae}`` replacing the shipped ``mni_t1_prior`` and ``mni_autoencoder``
            (either key may be left out; tests pass tiny seeded networks).

    Raises:
        ValueError: a count out of range, an empty grid, unknown ``models`` keys.
        TypeError: ``models`` not a dict.
    """
    from tqdm.auto import tqdm

    from ..pretrained import load

    check_int("n", n, 1, HELD_OUT[1] - HELD_OUT[0])
    check_int("seeds", seeds, 1)
    check_int("n_val", n_val, 1)
    check_int("masks", masks, 1)
    check_int("steps", steps, 1)
    if anoddpm_steps is not None:
        check_int("anoddpm_steps", anoddpm_steps, 1)
    for name, grid in (("mdps_grid", mdps_grid), ("anoddpm_grid", anoddpm_grid)):
        if len(grid) == 0:
            raise ValueError(f"{name} must hold at least one setting, got {grid!r}")
    if models is not None and not isinstance(models, dict):
        raise TypeError(
            f"models must be a dict such as {{'prior': net, 'autoencoder': ae}}, got {type(models).__name__}"
        )
    if models and set(models) - {"prior", "autoencoder"}:
        raise ValueError(f"models must have keys among 'prior' and 'autoencoder', got {sorted(models)}")
    dev = resolve_device(device)
    models = dict(models or {})
    prior = models["prior"] if "prior" in models else load("mni_t1_prior", device=dev)
    ae = models["autoencoder"] if "autoencoder" in models else load("mni_autoencoder", device=dev)
    sched = linear_schedule()

    def gen(k):
        return torch.Generator(dev).manual_seed(seed + k)

    def run_mdps(xl, knob, k=None, g=1):
        return mdps_per_mask(prior, xl, sched, masks=k or masks, steps=steps, t_start=knob[0], scale=knob[1],
                             generator=gen(g))  # fmt: skip

    def run_anoddpm(xl, t_start, g=2):
        return anoddpm_map(prior, xl, sched, t_start=t_start, steps=anoddpm_steps, generator=gen(g), progress=False)

    # 1. the knobs, on training slices (lesions of other seeds; masked DPS with at most 4 masks, to save time)
    x_val = validation_slices(n_val, dev)
    val_sets = [(xl, t, brain_mask(x_val)) for xl, t in lesion_sets(x_val, 1, seed + 10_000).values()]
    mdps_knob, mdps_val = _validate(lambda xl, kb: run_mdps(xl, kb, k=min(masks, 4)).mean(0), list(mdps_grid),
                                    val_sets)  # fmt: skip
    ano_knob, ano_val = _validate(run_anoddpm, list(anoddpm_grid), val_sets)
    # 2. the test sets
    x, zs = test_slices(n, dev)
    sets = lesion_sets(x, seeds, seed)
    region = brain_mask(x).repeat(seeds, 1, 1, 1)
    names = [f"z={z}, draw {s}" for s in range(seeds) for z in zs]
    ks = _mask_counts(masks)
    rows = []
    jobs = [(s, m) for s in sets for m in ("masked DPS", *BASELINES)]
    for set_name, method in tqdm(jobs, disable=not progress, desc="medical anomaly"):
        xl, truth = sets[set_name]
        change = (xl - x.repeat(seeds, 1, 1, 1)).abs().flatten(1).sum(1)  # Σ|Δ| per image: the lesion's signal
        large = change > change.median()
        start, cpu = time.perf_counter(), time.process_time()
        if method == "masked DPS":
            per = run_mdps(xl, mdps_knob)
            found = [(f"masked DPS (K = {k})", per[:k].mean(0), 2 * steps * k, k / masks, mdps_knob) for k in ks]
        elif method == "masked DPS, no guidance":
            maps = run_mdps(xl, (mdps_knob[0], 0.0), g=3).mean(0)
            found = [(method, maps, steps * masks, 1.0, (mdps_knob[0], 0.0))]
        elif method == "AnoDDPM":
            nfe = ano_knob + 1 if anoddpm_steps is None else anoddpm_steps
            found = [(method, run_anoddpm(xl, ano_knob), nfe, 1.0, ano_knob)]
        elif method == "autoencoder":
            found = [(method, autoencoder_map(ae, xl), 0, 1.0, None)]
        else:
            found = [(method, mirror_difference(xl), 0, 1.0, None)]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        secs = (time.perf_counter() - start) / xl.shape[0]
        cpu = (time.process_time() - cpu) / xl.shape[0]
        for name, maps, nfe, share, knob in found:
            row = {"set": set_name, "method": name, "knob": list(knob) if isinstance(knob, tuple) else knob,
                   "nfe": int(nfe), "seconds_per_image": secs * share, "cpu_seconds_per_image": cpu * share,
                   **scores(maps, truth, region)}  # fmt: skip
            row["auroc_split"] = {half: pixel_auroc(maps[sel], truth[sel], region=region[sel])
                                  for half, sel in (("small/faint", ~large), ("large/strong", large))}  # fmt: skip
            rows.append(row)
    return {"n": n, "seeds": seeds, "n_val": n_val, "masks": masks, "steps": steps, "size": SIZE,
            "lesions": {k: list(v) if isinstance(v, tuple) else v for k, v in LESIONS.items()},
            "lesion_sets": dict(LESION_SETS), "mdps": dict(MDPS), "images": names,
            "validation": {"masked DPS": {"grid": [list(g) for g in mdps_grid], "auroc": mdps_val,
                                          "chosen": list(mdps_knob)},
                           "AnoDDPM": {"grid": list(anoddpm_grid), "auroc": ano_val, "chosen": ano_knob}},
            "rows": rows, **environment(dev)}  # fmt: skip


def run_medical_anomaly(args) -> dict:
    """``python -m diffu.bench medical_anomaly``: :func:`bench_medical_anomaly` (tiny: 2 slices, one draw, one
    validation slice, 2 masks, 2-step samplers, one knob each), printed and written to ``--out`` as
    ``medical_anomaly.json``."""
    out = results_dir(args.out, full_run=not args.tiny)
    command = " ".join(["python -m diffu.bench medical_anomaly", *(args.argv or [])])
    if args.tiny:
        kw = dict(n=2, seeds=1, n_val=1, masks=2, steps=2, anoddpm_steps=2, mdps_grid=((200, 10.0),),
                  anoddpm_grid=(100,))  # fmt: skip
    else:
        kw = {}
    res = bench_medical_anomaly(**kw, device=args.device, progress=not args.tiny)
    res["command"] = command
    v = res["validation"]
    print(f"[medical_anomaly] {res['n']} held-out slices x {res['seeds']} lesion draws per set, {res['size']}x"
          f"{res['size']}, {res['machine']}; chosen on validation: masked DPS (t_start, zeta) = "
          f"{tuple(v['masked DPS']['chosen'])}, AnoDDPM t_start = {v['AnoDDPM']['chosen']}")  # fmt: skip
    print(f"  {'set':10s} {'method':26s} {'AUROC':>6s} {'(per-image mean)':>16s} {'Dice':>6s} {'small':>6s} "
          f"{'large':>6s} {'NFE':>5s} {'s/img':>7s} {'CPU s':>7s}")  # fmt: skip
    for r in res["rows"]:
        sp = r["auroc_split"]
        print(f"  {r['set']:10s} {r['method']:26s} {r['auroc_pooled']:6.3f} {_avg(r['auroc']):16.3f} "
              f"{r['dice_pooled']:6.3f} {sp['small/faint']:6.3f} {sp['large/strong']:6.3f} {r['nfe']:5d} "
              f"{r['seconds_per_image']:7.3f} {r['cpu_seconds_per_image']:7.3f}")  # fmt: skip
    if out is not None:
        write_json(out / "medical_anomaly.json", res)
    return res
