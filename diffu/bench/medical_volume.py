"""Volumes, stability and uncertainty of chapter §5.1.3: ``python -m diffu.bench medical_volume``.

Three measurements with the shipped 32 × 32 priors, all on held-out data (σ_y = 0.01 on the physical scale, as the
reconstruction benchmark :mod:`diffu.bench.medical`):

**3D** (``volume`` rows). The held-out band of the MNI152 T1 template (:data:`diffu.data.mni.HELD_OUT`, 24 axial
slices) cut into blocks of ``depth`` consecutive slices, each slice measured by sparse-view CT with ``views`` angles
(:class:`~diffu.inverse.dds.SliceStack`). Methods: FBP slice by slice; DDS with the 2D ``mni_t1_prior`` on every
slice independently (``z_weight = 0``); DDS with total variation along z (``dds_volume``, the official λ = 0.04,
ρ = 10, one ADMM iteration per step: DDS's 3D solver and DiffusionMBIR); the same with five ADMM iterations per step
(the split ``(z, u)`` then nearly converges within each step instead of lagging behind the changing x̂_0). Per block
and seed: the volume PSNR, the
slice inconsistency against the truth (:func:`diffu.medical.volumes.slice_inconsistency`) and the raw z-roughness.

**Stability** (``stability`` rows). ``n`` held-out MNI slices measured by 16-view CT (the setting of the chapter's
page, where CG iterations matter: for single-coil MRI one iteration already solves the data step exactly): DPS over a
grid of step sizes ζ and step counts, DDS over CG iterations and step counts; per image: PSNR and whether the run
failed (non-finite, or a PSNR below FBP's).

**Uncertainty** (``uncertainty`` rows). ``K`` posterior samples per image from DDS (η = 0.85: the stochastic
sampler of the chapter; γ = 1, the official data step for noisy CT) and from DPS, for ``n`` held-out MNI slices
measured by 16-view CT: the correlation between the per-pixel
standard deviation and the error of the posterior mean (Pearson and Spearman, inside the brain), the coverage of the
90 % quantile intervals for K = 2, 4, …, ``K`` against the value a calibrated sampler would have
(:func:`diffu.medical.uncertainty.expected_coverage`), and the PSNR of the mean.

Writes ``medical_volume.json`` (every per-block, per-seed and per-image number, so that a page can put a spread on
each mean) to ``--out``.
"""

from __future__ import annotations

import time

import torch

from ..data.mni import HELD_OUT, mni_volume
from ..inverse import Radon
from ..medical.anomaly import brain_mask
from ..medical.measurements import analytic_reconstruction, measure_physical, signed_measurement
from ..medical.uncertainty import coverage_curve, error_correlation, expected_coverage, posterior_moments
from ..medical.volumes import slice_inconsistency, to_volume, z_roughness
from ..metrics import psnr
from ..schedules import linear_schedule
from .common import environment, resolve_device, results_dir, write_json
from .common import finite_mean as _avg
from .medical import SIGMA_Y, SIZE, make_operator, measure, test_images

#: The 3D methods: name → ``(z_weight, admm_iters)`` of :func:`diffu.inverse.dds.dds_volume` (``None``: FBP slice by
#: slice). "DDS + TV-z" is the official setting (λ = 0.04, one ADMM iteration per diffusion step).
VOLUME_METHODS = {"FBP (slice-wise)": None, "DDS (slice-wise)": (0.0, 1), "DDS + TV-z": (0.04, 1),
                  "DDS + TV-z, 5 ADMM": (0.04, 5)}  # fmt: skip
#: DPS's step sizes and step counts of the stability grid (CPU budget; the official count is 1000).
DPS_ZETAS = (0.03, 0.1, 0.3, 1.0, 3.0)
DPS_STEPS = (20, 50, 100)
#: DDS's CG iterations and step counts of the stability grid (the official 5 and 50).
DDS_CG = (0, 1, 2, 5, 10)
DDS_STEPS = (10, 20, 50)


def _volume_psnr(x: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """PSNR of each volume ``(N, C, D, H, W)`` over all its voxels ([-1, 1] scale, range 2)."""
    return psnr(x.flatten(1, 2), truth.flatten(1, 2)).tolist()


def blocks(depth: int, size: int = SIZE, device=None) -> torch.Tensor:
    """The held-out band cut into ``len // depth`` blocks of ``depth`` consecutive axial slices, ``(B, 1, depth,
    size, size)`` in [-1, 1]."""
    vol = mni_volume(size)  # (1, 1, 24, H, W): the held-out band
    n = vol.shape[2] // depth
    return vol[0, :, : n * depth].unflatten(1, (n, depth)).transpose(0, 1).contiguous().to(device)


def bench_volume(model, views=(8, 16), depth: int = 8, seeds: int = 3, steps: int = 50, device=None,
                 progress: bool = True) -> tuple[list[dict], dict]:  # fmt: skip
    """The ``volume`` rows (see the module docstring) and what they share (the blocks, the truth's roughness)."""
    from tqdm.auto import tqdm

    from ..inverse.dds import SliceStack, dds_volume

    dev = resolve_device(device)
    truth = blocks(depth, device=dev)
    names = [f"z {HELD_OUT[0] + i * depth}–{HELD_OUT[0] + (i + 1) * depth - 1}" for i in range(truth.shape[0])]
    rows = []
    jobs = [(v, m, s) for v in views for m in VOLUME_METHODS for s in range(seeds)]
    for v, method, seed in tqdm(jobs, disable=not progress, desc="medical volume"):
        z_weight, admm_iters = VOLUME_METHODS[method] or (None, None)
        if z_weight is None and seed > 0:
            continue  # FBP is deterministic given the measurement (seed 0's)
        stack = SliceStack(Radon(v))
        y = measure_physical(stack, truth.cpu(), SIGMA_Y, torch.Generator().manual_seed(100 + seed)).to(dev)
        start = time.perf_counter()
        if z_weight is None:
            x = to_volume(analytic_reconstruction(Radon(v), y.flatten(0, 1)), truth.shape[0])
        else:
            ys = signed_measurement(stack, y, tuple(truth.shape))
            g = torch.Generator(dev).manual_seed(seed)
            x = dds_volume(model, ys, stack, linear_schedule(), z_weight=z_weight, admm_iters=admm_iters,
                           steps=steps, gamma=1.0, generator=g, progress=False, x_T=tuple(truth.shape))  # fmt: skip
            x = x.clamp(-1, 1)
        secs = time.perf_counter() - start
        rows.append({"views": v, "method": method, "z_weight": z_weight, "admm_iters": admm_iters, "seed": seed,
                     "blocks": names, "psnr": _volume_psnr(x, truth),
                     "inconsistency": slice_inconsistency(x, truth).tolist(),
                     "roughness": z_roughness(x).tolist(), "seconds_per_volume": secs / truth.shape[0],
                     "nfe": 0 if z_weight is None else steps})  # fmt: skip
    return rows, {"truth_roughness": z_roughness(truth).tolist(), "depth": depth, "blocks": names}


#: The view count of the stability and uncertainty parts.
VIEWS = 16


def _ct_problem(n: int, seed: int, device):
    """``n`` held-out MNI slices (the benchmark's MRI test images) measured by ``VIEWS``-view CT."""
    op = make_operator(f"ct{VIEWS}", device=device)
    x, names = test_images("mri", n, device)
    y = measure(op, x, SIGMA_Y, seed)
    return op, x, names, y


def bench_stability(model, n: int = 4, seeds: int = 2, *, zetas=DPS_ZETAS, dps_steps=DPS_STEPS, cg_iters=DDS_CG,
                    dds_steps=DDS_STEPS, device=None, progress: bool = True) -> tuple[list[dict], dict]:  # fmt: skip
    """The ``stability`` rows: DPS over (ζ, steps), DDS over (CG iterations, steps), 16-view CT of ``n`` held-out
    MNI slices × ``seeds`` (the seeds stacked along the batch: one sampler call per setting)."""
    from tqdm.auto import tqdm

    from ..inverse import dds, dps

    dev = resolve_device(device)
    op, x, names, y = _ct_problem(n, 0, dev)
    floor = psnr(analytic_reconstruction(op, y), x)  # FBP: the floor of "working"
    shape = (n * seeds, 1, SIZE, SIZE)
    ys = signed_measurement(op, y, (n, 1, SIZE, SIZE)).repeat(seeds, *([1] * (y.ndim - 1)))
    xs = x.repeat(seeds, 1, 1, 1)
    jobs = [("DPS", z, s) for z in zetas for s in dps_steps] + [("DDS", c, s) for c in cg_iters for s in dds_steps]
    rows = []
    for method, knob, steps in tqdm(jobs, disable=not progress, desc="medical stability"):
        g = torch.Generator(dev).manual_seed(1)
        start = time.perf_counter()
        if method == "DPS":
            out = dps(model, ys, op, linear_schedule(), steps=steps, scale=knob, generator=g, progress=False,
                      x_T=shape)  # fmt: skip
        else:
            out = dds(model, ys, op, linear_schedule(), steps=steps, cg_iters=knob, gamma=1.0, generator=g,
                      progress=False, x_T=shape)  # fmt: skip
        secs = time.perf_counter() - start
        finite = torch.isfinite(out.flatten(1)).all(1)
        p = psnr(torch.where(finite[:, None, None, None], out, torch.zeros_like(out)).clamp(-1, 1), xs)
        p = torch.where(finite, p, torch.full_like(p, float("nan")))
        diverged = (~finite) | (p < floor.repeat(seeds))
        rows.append({"method": method, "knob": knob, "steps": steps, "psnr": p.tolist(),
                     "diverged": diverged.tolist(), "seconds_per_image": secs / shape[0],
                     "nfe": steps})  # fmt: skip
    return rows, {"images": names, "seeds": seeds, "fbp_psnr": floor.tolist()}


def bench_uncertainty(model, n: int = 8, k: int = 32, steps: int = 50, dps_steps: int = 100, dps_scale: float = 0.1,
                      device=None, progress: bool = True) -> list[dict]:  # fmt: skip
    """The ``uncertainty`` rows: ``k`` samples per image from DDS and from DPS (16-view CT of ``n`` held-out
    slices). DPS's ζ = 0.1 is the value the reconstruction benchmark validated for 8-view CT and the best of the
    chapter's 20-step sweep at 16 views."""
    from ..inverse import dds, dps

    dev = resolve_device(device)
    op, x, names, y = _ct_problem(n, 0, dev)
    ys = signed_measurement(op, y, (n, 1, SIZE, SIZE)).repeat(k, *([1] * (y.ndim - 1)))
    brain = brain_mask(x)
    rows = []
    for method in ("DDS", "DPS"):
        g = torch.Generator(dev).manual_seed(2)
        start = time.perf_counter()
        if method == "DDS":
            s = dds(model, ys, op, linear_schedule(), steps=steps, gamma=1.0, generator=g, progress=progress,
                    x_T=(n * k, 1, SIZE, SIZE))  # fmt: skip
        else:
            s = dps(model, ys, op, linear_schedule(), steps=dps_steps, scale=dps_scale, generator=g,
                    progress=progress, x_T=(n * k, 1, SIZE, SIZE))  # fmt: skip
        secs = time.perf_counter() - start
        samples = s.clamp(-1, 1).unflatten(0, (k, n))  # (K, N, 1, H, W)
        mean, std = posterior_moments(samples)
        err = (mean - x).abs()
        per = []
        for i in range(n):
            m = brain[i : i + 1]
            per.append({"pearson": error_correlation(std[i : i + 1], err[i : i + 1], region=m),
                        "spearman": error_correlation(std[i : i + 1], err[i : i + 1], method="spearman", region=m),
                        "coverage": coverage_curve(samples[:, i : i + 1], x[i : i + 1], region=m)})  # fmt: skip
        ks = list(per[0]["coverage"])
        rows.append({"method": method, "k": k, "steps": steps if method == "DDS" else dps_steps,
                     "scale": None if method == "DDS" else dps_scale, "images": names,
                     "pearson": [p["pearson"] for p in per], "spearman": [p["spearman"] for p in per],
                     "coverage": {str(kk): [p["coverage"][kk] for p in per] for kk in ks},
                     "expected_coverage": {str(kk): expected_coverage(kk) for kk in ks},
                     "mean_psnr": psnr(mean, x).tolist(), "sample_psnr": psnr(samples[0], x).tolist(),
                     "mean_std_brain": [float(std[i][brain[i]].mean()) for i in range(n)],
                     "mean_error_brain": [float(err[i][brain[i]].mean()) for i in range(n)],
                     "seconds_per_sample": secs / (n * k)})  # fmt: skip
    return rows


def bench_medical_volume(*, depth=8, seeds=3, views=(8, 16), n_stab=4, n_unc=8, k=32, steps=50, dps_steps=100,
                         stability_grid=None, device=None, progress=True, model=None) -> dict:  # fmt: skip
    """All three parts with ``mni_t1_prior`` (or ``model``: tests pass a tiny network); ``stability_grid``
    overrides the keyword grids of :func:`bench_stability` (``zetas``, ``dps_steps``, ``cg_iters``, ``dds_steps``)."""
    from ..pretrained import load

    dev = resolve_device(device)
    if model is None:
        model = load("mni_t1_prior", device=dev)
    vol_rows, vol_info = bench_volume(model, views, depth, seeds, steps, dev, progress)
    stab_rows, stab_info = bench_stability(model, n_stab, **(stability_grid or {}), device=dev, progress=progress)
    unc_rows = bench_uncertainty(model, n_unc, k, steps, dps_steps, device=dev, progress=progress)
    return {"sigma_y": SIGMA_Y, "size": SIZE, "volume": vol_rows, "volume_info": vol_info, "stability": stab_rows,
            "stability_info": stab_info, "uncertainty": unc_rows, **environment(dev)}  # fmt: skip


def run_medical_volume(args) -> dict:
    """``python -m diffu.bench medical_volume``: :func:`bench_medical_volume` (tiny: two 12-slice blocks at 8 views,
    one seed, 3-step samplers, K = 4), printed and written to ``--out`` as ``medical_volume.json``."""
    out = results_dir(args.out, full_run=not args.tiny)
    command = " ".join(["python -m diffu.bench medical_volume", *(args.argv or [])])
    if args.tiny:
        grid = dict(zetas=(1.0,), dps_steps=(3,), cg_iters=(0, 5), dds_steps=(3,))
        kw = dict(depth=12, seeds=1, views=(8,), n_stab=1, n_unc=2, k=4, steps=3, dps_steps=3, stability_grid=grid)
    else:
        kw = {}
    res = bench_medical_volume(**kw, device=args.device, progress=not args.tiny)
    res["command"] = command
    print(f"[medical_volume] sigma_y = {res['sigma_y']}, {res['size']}x{res['size']}, {res['machine']}")
    for r in res["volume"]:
        print(f"  3D  views {r['views']:3d} {r['method']:18s} seed {r['seed']} PSNR {_avg(r['psnr']):6.2f} "
              f"inconsistency {_avg(r['inconsistency']):.4f} roughness {_avg(r['roughness']):.4f}")  # fmt: skip
    for r in res["stability"]:
        print(f"  stab {r['method']} knob {r['knob']:<5g} steps {r['steps']:4d} PSNR {_avg(r['psnr']):6.2f} "
              f"diverged {sum(r['diverged'])}/{len(r['diverged'])}")  # fmt: skip
    for r in res["uncertainty"]:
        cov = ", ".join(f"K={kk}: {_avg(v):.3f} (calibrated {r['expected_coverage'][kk]:.3f})"
                        for kk, v in r["coverage"].items())  # fmt: skip
        print(f"  unc {r['method']}: corr {_avg(r['pearson']):.3f} (Spearman {_avg(r['spearman']):.3f}); {cov}")
    if out is not None:
        write_json(out / "medical_volume.json", res)
    return res
