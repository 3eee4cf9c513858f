"""The medical-imaging benchmark of chapter §5: ``python -m diffu.bench medical``.

**Reconstruction** (``--parts recon``). Sparse-view CT with 8, 16 and 30 views over 180° and accelerated single-coil
MRI with 1D Cartesian masks at ×4 and ×8 (a fully sampled centre of 8 % of the lines, as DDS's MRI setting), both
with Gaussian measurement noise σ_y = 0.01 on ``y = A x`` (images on the [-1, 1] scale, 32 × 32).

- CT test images: ``n`` held-out random-ellipse phantoms (seed 10 000 onwards, never a training seed) plus
  scikit-image's Shepp–Logan phantom and pydicom's real ``CT_small`` slice, reconstructed with the ``ct_prior``;
- MRI test images: ``n`` axial T1 slices spread evenly over the held-out MNI band (:data:`diffu.data.mni.HELD_OUT`),
  reconstructed with the ``mni_t1_prior``.

Measurements are taken of the physical image (attenuation or intensity in [0, 1], air 0) with σ_y = 0.01 on that
scale (:func:`diffu.medical.measurements.measure_physical`); the diffusion solvers and TV receive the equivalent
measurement of the [-1, 1] image (noise 2σ_y, :func:`~diffu.medical.measurements.signed_measurement`).

Methods: the analytic baseline (FBP for CT, zero-filled for MRI, on the physical scale), total variation (λ chosen
on validation images), DPS (ζ chosen on validation images, per modality; ``dps_steps``, official 1000), DDS (50
steps, η = 0.85, 5 CG iterations; γ = 1 for CT's noisy data and the projection (the noiseless form) for
single-coil MRI, as the official solver), and the score-SDE predictor–corrector
with a data-consistency projection (the official tuned snr and λ: CT 0.246 and 0.841, MRI 0.517 and 1).
Validation images are *training* images (phantoms of seed 0, MNI training slices), never test images. Every row
stores the per-image PSNR and SSIM (so a page can put a spread on each mean), NFE, and seconds per image on the
machine that ran it. Writes
``medical_recon.json`` and ``medical_recon_examples.safetensors`` to ``--out``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data.mni import HELD_OUT, mni_slices
from ..data.phantoms import ellipse_phantoms, shepp_logan
from ..data.scans import scan
from ..inverse import MRI, Radon, cartesian_mask, tv_reconstruct
from ..medical.measurements import analytic_reconstruction, measure_physical, signed_measurement
from ..metrics import psnr, ssim
from ..schedules import linear_schedule
from .common import environment, resolve_device, results_dir, write_json
from .common import finite_mean as _avg

#: Measurement noise σ_y of every task, on the physical scale (``y = A μ``, μ = (x + 1)/2 in [0, 1]).
SIGMA_Y = 0.01
#: Image side of the §5 benchmark (the priors are trained at 32 × 32 on the CPU).
SIZE = 32
#: The tasks: CT view counts and MRI accelerations.
TASKS = ("ct8", "ct16", "ct30", "mri4", "mri8")
#: The fully sampled centre of the MRI masks (DDS's MRI setting).
CENTER_FRACTION = 0.08
#: Total variation's validation grid of λ.
TV_LAMBDAS = (0.003, 0.01, 0.03, 0.1)
#: DPS's validation grid of ζ per modality (a pilot at 100 steps peaked at 0.1 for CT, 1 for MRI).
DPS_SCALES = {"ct": (0.03, 0.1, 0.3), "mri": (0.3, 1.0, 3.0)}
#: The predictor–corrector's (snr, λ) per modality: the official tuned values of Song et al. 2022.
PC_SETTINGS = {"ct": (0.246, 0.841), "mri": (0.517, 1.0)}


def make_operator(task: str, size: int = SIZE, device=None):
    """The forward model of ``task``: ``Radon(views)`` for ``ct<views>``, ``MRI`` with a fixed (seed 7) 1D
    Cartesian mask for ``mri<acceleration>``."""
    if task.startswith("ct"):
        return Radon(int(task[2:]))
    if task.startswith("mri"):
        g = torch.Generator().manual_seed(7)
        mask = cartesian_mask(size, size, int(task[3:]), center_fraction=CENTER_FRACTION, generator=g)
        return MRI(mask.to(device) if device is not None else mask)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def measure(op, x: torch.Tensor, sigma_y: float, seed: int) -> torch.Tensor:
    """The physical measurement of ``x`` (:func:`~diffu.medical.measurements.measure_physical`), noise from a CPU
    generator seeded by ``seed`` (device-independent draws)."""
    y = measure_physical(op, x.cpu(), sigma_y, torch.Generator().manual_seed(seed))
    return y.to(x.device)


def test_images(kind: str, n: int, device=None) -> tuple[torch.Tensor, list[str]]:
    """The test images of ``kind`` (``"ct"`` or ``"mri"``) and their names (see the module docstring)."""
    if kind == "ct":
        x = torch.cat([ellipse_phantoms(n, SIZE, seed=10_000), shepp_logan(SIZE), scan("CT_small", SIZE)])
        names = [f"phantom {i}" for i in range(n)] + ["Shepp–Logan", "CT_small"]
    else:
        band = mni_slices(size=SIZE, split="test")
        idx = torch.linspace(0, band.shape[0] - 1, n).round().long()
        x, names = band[idx], [f"MNI z={HELD_OUT[0] + int(i)}" for i in idx]
    return x.to(device), names


def validation_images(kind: str, n: int, device=None) -> torch.Tensor:
    """Training images (never test images) on which the tuned knobs are chosen."""
    x = ellipse_phantoms(n, SIZE, seed=0) if kind == "ct" else mni_slices(size=SIZE)[::17][:n]
    return x.to(device)


@dataclass
class Method:
    """``run(y, op, model, generator, knob, steps) -> (x, nfe)`` on the physical measurement ``y``; the validation
    ``grid`` of its knob per modality (None: nothing tuned)."""

    name: str
    run: Callable
    grid: dict | None = None


def _shape(y, op):
    return (y.shape[0], 1, SIZE, SIZE)


def _analytic(y, op, model, g, knob, steps):
    return analytic_reconstruction(op, y), 0


def _tv(y, op, model, g, lam, steps):
    return tv_reconstruct(op, signed_measurement(op, y, _shape(y, op)), lam, iters=300).clamp(-1, 1), 0


def _dps(y, op, model, g, scale, steps):
    from ..inverse import dps

    n = steps["dps"]
    ys = signed_measurement(op, y, _shape(y, op))
    x = dps(model, ys, op, linear_schedule(), steps=n, scale=scale, generator=g, progress=False, x_T=_shape(y, op))
    return x.clamp(-1, 1), n


def _dds(y, op, model, g, knob, steps):
    from ..inverse import dds

    n = steps["dds"]
    ys = signed_measurement(op, y, _shape(y, op))
    # the official data step: γ = 1 for noisy sparse-view CT, the projection (noiseless form) for single-coil MRI
    gamma = None if isinstance(op, MRI) else 1.0
    x = dds(model, ys, op, linear_schedule(), steps=n, gamma=gamma, generator=g, progress=False, x_T=_shape(y, op))
    return x.clamp(-1, 1), n


def _pc(y, op, model, g, knob, steps):
    from ..inverse import pc_projection

    n = steps["pc"]
    snr, lam = PC_SETTINGS["ct" if isinstance(op, Radon) else "mri"]
    ys = signed_measurement(op, y, _shape(y, op))
    x = pc_projection(model, ys, op, linear_schedule(), steps=n, snr=snr, lam=lam, generator=g, progress=False,
                      x_T=_shape(y, op))  # fmt: skip
    return x.clamp(-1, 1), 2 * n  # one predictor and one corrector evaluation per step


#: Every benchmarked reconstruction method.
METHODS = (
    Method("FBP / zero-filled", _analytic),
    Method("TV", _tv, {"ct": TV_LAMBDAS, "mri": TV_LAMBDAS}),
    Method("DPS", _dps, DPS_SCALES),
    Method("DDS", _dds),
    Method("PC + projection", _pc),
)


def _scores(x, gt):
    return psnr(x, gt).tolist(), ssim(x, gt).tolist()


def bench_medical_recon(n=8, n_val=4, tasks=TASKS, methods=None, dps_steps=1000, dds_steps=50, pc_steps=200,
                        seed=0, device=None, progress=True, models=None, on_row=None) -> dict:  # fmt: skip
    """Run every method on every task; returns the rows (with per-image scores) and example reconstructions.
    ``models`` (``{"ct": net, "mri": net}``) replaces the shipped priors (tests pass tiny networks)."""
    from tqdm.auto import tqdm

    from ..pretrained import load

    dev = resolve_device(device)
    if models is None:
        models = {"ct": load("ct_prior", device=dev), "mri": load("mni_t1_prior", device=dev)}
    steps = {"dps": dps_steps, "dds": dds_steps, "pc": pc_steps}
    chosen = [m for m in METHODS if methods is None or m.name in methods]
    rows, examples, data = [], {}, {}
    jobs = [(t, m) for t in tasks for m in chosen]
    for task, m in tqdm(jobs, disable=not progress, desc="medical recon"):
        kind = "ct" if task.startswith("ct") else "mri"
        if kind not in data:  # the images of a modality are made once, not once per (task, method)
            data[kind] = (*test_images(kind, n, dev), validation_images(kind, n_val, dev))
        x_test, names, x_val = data[kind]
        op, model = make_operator(task, device=dev), models[kind]
        knob = None
        if m.grid is not None:
            y_val = measure(op, x_val, SIGMA_Y, seed + 1)
            val = []
            grid = m.grid[kind]
            for k in grid:
                xv, _ = m.run(y_val, op, model, torch.Generator(dev).manual_seed(seed), k, steps)
                val.append(float(psnr(xv, x_val).mean()))
            knob = grid[max(range(len(val)), key=val.__getitem__)]
        y = measure(op, x_test, SIGMA_Y, seed)
        start = time.perf_counter()
        x, nfe = m.run(y, op, model, torch.Generator(dev).manual_seed(seed + 2), knob, steps)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - start
        p, s = _scores(x, x_test)
        rows.append({"task": task, "method": m.name, "knob": knob, "psnr": p, "ssim": s, "images": names,
                     "nfe": int(nfe), "seconds_per_image": secs / x_test.shape[0]})  # fmt: skip
        if on_row is not None:
            on_row(rows)
        examples[f"{task}/{m.name}"] = x.cpu()
        examples.setdefault(f"{task}/ground_truth", x_test.cpu().clone())  # not shared between tasks: safetensors
    return {"n_per_kind": n, "n_val": n_val, "sigma_y": SIGMA_Y, "size": SIZE, "steps": steps, "rows": rows,
            **environment(dev), "_examples": examples}  # fmt: skip


def run_medical(args) -> dict:
    """``python -m diffu.bench medical``: :func:`bench_medical_recon` (``--n-images``, ``--dps-steps``,
    ``--methods``, ``--tasks``; tiny: 2 images, two tasks, 3-step samplers), printed and written to ``--out`` as
    ``medical_recon.json`` and ``medical_recon_examples.safetensors``; rows so far are kept in
    ``medical_recon.partial.json`` while it runs."""
    from safetensors.torch import save_file

    out = results_dir(args.out, full_run=not args.tiny)
    command = " ".join(["python -m diffu.bench medical", *(args.argv or [])])

    def partial(rows):
        if out is not None:
            write_json(out / "medical_recon.partial.json", {"command": command, "rows": rows})

    if args.tiny:
        kw = dict(n=2, n_val=1, tasks=("ct8", "mri4"), dps_steps=3, dds_steps=3, pc_steps=3)
    else:
        kw = dict(n=args.n_images, dps_steps=args.dps_steps)
        if args.tasks:
            kw["tasks"] = tuple(args.tasks)
    res = bench_medical_recon(**kw, methods=args.methods, device=args.device, progress=not args.tiny,
                              on_row=partial)  # fmt: skip
    examples = res.pop("_examples")
    res["command"] = command
    print(f"[medical] sigma_y = {res['sigma_y']}, {res['size']}x{res['size']}, {res['machine']}")
    print(f"  {'task':6s} {'method':20s} {'knob':>8s} {'PSNR':>6s} {'SSIM':>6s} {'NFE':>5s} {'s/img':>7s}")
    for r in res["rows"]:
        knob = "" if r["knob"] is None else str(r["knob"])
        print(f"  {r['task']:6s} {r['method']:20s} {knob:>8s} {_avg(r['psnr']):6.2f} {_avg(r['ssim']):6.3f} "
              f"{r['nfe']:5d} {r['seconds_per_image']:7.3f}")  # fmt: skip
    if out is not None:
        write_json(out / "medical_recon.json", res)
        save_file({k: v.contiguous() for k, v in examples.items()}, str(out / "medical_recon_examples.safetensors"))
        (out / "medical_recon.partial.json").unlink(missing_ok=True)
    return res
