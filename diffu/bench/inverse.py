"""The inverse-problems benchmark of chapter §4.3: ``python -m diffu.bench inverse``.

``n`` held-out Fashion-MNIST test images, six tasks with Gaussian measurement noise σ_y = 0.05 on the [-1, 1]
scale — ×4 super-resolution (bicubic), Gaussian deblurring, motion deblurring, box and random inpainting, phase
retrieval — and the methods of the chapter: total variation (classical), DPIR, DDRM, DiffPIR, DPS, RePaint
(inpainting, with and without resampling), ReSample, and the blind Blind-DPS and BIRD (motion deblurring, kernel
unknown). Metrics: PSNR and SSIM against the ground truth, FD-FMNIST of the reconstructions (against the shipped
test split, so it rewards realistic images more than faithful ones), NFE (network evaluations per image) and
seconds per image on the machine that ran it.

Protocol: each method's main knob that the papers tune per task (TV's λ, DPS's ζ) is chosen from a small grid by
PSNR on ``n_val`` *training* images with the same degradation; everything else uses the official defaults scaled
to our setting (docstrings of each solver). Phase retrieval is scored after undoing its trivial ambiguities
(:func:`diffu.inverse.fourier.register_phase`). Writes ``inverse.json`` and a file of example reconstructions
(``inverse_examples.safetensors``) that the chapter plots to the directory of ``--out``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import fashion_mnist
from ..inverse import (
    Bicubic,
    Blur,
    Inpainting,
    box_mask,
    gaussian_kernel,
    hio,
    motion_kernel,
    random_mask,
    tv_reconstruct,
)
from ..inverse.fourier import ShiftedPhaseRetrieval, register_phase
from ..metrics import FDFMNIST, psnr, ssim
from ..schedules import linear_schedule
from .common import environment, resolve_device, results_dir, write_json

#: The measurement noise σ_y of every task, on the [-1, 1] scale.
SIGMA_Y = 0.05
#: The six tasks of the benchmark, each a ``task`` that :func:`make_operator` builds.
TASKS = ("sr4", "gaussian_deblur", "motion_deblur", "box_inpaint", "random_inpaint", "phase_retrieval")
KERNEL_SIZE = 9
GAUSS_STD = 1.6
#: The validation grid of total variation's weight λ (the one knob tuned per task).
TV_LAMBDAS = (0.01, 0.03, 0.1)
#: The validation grid of DPS's step size ζ.
DPS_SCALES = (0.3, 1.0, 3.0)


def make_operator(task: str, size: int = 28, device=None):
    """The forward model of ``task`` for ``size × size`` images; the motion kernel and the random mask are fixed
    by seed so every method sees the same problem."""
    g = torch.Generator().manual_seed(7)
    if task == "sr4":
        return Bicubic(4)
    if task == "gaussian_deblur":
        return Blur(gaussian_kernel(KERNEL_SIZE, GAUSS_STD).to(device))
    if task == "motion_deblur":
        return Blur(motion_kernel(KERNEL_SIZE, 0.5, generator=g).to(device))
    if task == "box_inpaint":
        return Inpainting(box_mask(size, size, 0.5).to(device))
    if task == "random_inpaint":
        return Inpainting(random_mask(size, size, 0.7, generator=g).to(device))
    if task == "phase_retrieval":
        return ShiftedPhaseRetrieval(2.0)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def measure(op, x: torch.Tensor, sigma_y: float, seed: int) -> torch.Tensor:
    """``y = A(x) + σ_y n`` with ``n`` from a CPU generator seeded by ``seed`` (device-independent draws)."""
    ax = op.A(x)
    n = torch.randn(ax.shape, generator=torch.Generator().manual_seed(seed), dtype=ax.dtype)
    return ax + sigma_y * n.to(ax.device)


@dataclass
class Method:
    """A benchmarked method: ``run(y, op, models, generator, knob) -> (x, nfe)``; ``tasks`` it applies to; the
    validation ``grid`` of its tuned knob (None: nothing tuned)."""

    name: str
    tasks: tuple
    run: Callable
    grid: tuple | None = None
    blind: bool = False


def _uncond(models, y):
    return {"y": torch.full((y.shape[0],), models["unet"].num_classes, device=y.device)}


def _x_shape(op, y):
    return (y.shape[0], 1, 28, 28)


def _tv(y, op, models, g, lam, task):
    if task == "phase_retrieval":  # the classical answer is HIO (§A.2.2); λ is unused
        x01 = hio(op.pr, y, iters=500, er_iters=50, bounds=(0.0, 1.0), generator=g)
        return x01 * 2 - 1, 0
    return tv_reconstruct(op, y, lam, iters=300).clamp(-1, 1), 0


def _dpir(y, op, models, g, knob, task):
    from ..inverse.pnp import dpir

    iters = 24 if task == "sr4" else 8  # the official numbers (deblurring 8, SR 24)
    return dpir(models["drunet"], y, op, sigma_y=SIGMA_Y, iters=iters, progress=False).clamp(-1, 1), 0


def _ddrm(y, op, models, g, knob, task):
    from ..inverse.ddrm import ddrm

    x = ddrm(models["unet"], y, op, models["schedule"], sigma_y=SIGMA_Y, steps=20, eta=0.85, eta_b=1.0,
             model_kwargs=_uncond(models, y), generator=g, progress=False)  # fmt: skip
    return x.clamp(-1, 1), 20


def _diffpir(y, op, models, g, knob, task):
    from ..inverse.pnp import diffpir

    lam, zeta = knob
    steps = 20 if task.endswith("inpaint") else 100  # the official NFE: 20 for inpainting, 100 otherwise
    x = diffpir(models["unet"], y, op, models["schedule"], sigma_y=SIGMA_Y, steps=steps, lam=lam, zeta=zeta,
                model_kwargs=_uncond(models, y), generator=g, progress=False)  # fmt: skip
    return x.clamp(-1, 1), steps - 1  # the official last call at t = 0 is discarded, so we skip it


def _dps_steps(models):
    return models.get("dps_steps", 250)


def _dps(y, op, models, g, scale, task):
    from ..inverse.dps import dps

    steps = _dps_steps(models)
    x = dps(models["unet"], y, op, models["schedule"], steps=steps, scale=scale, per_image=True,
            model_kwargs=_uncond(models, y), generator=g, progress=False, x_T=_x_shape(op, y))  # fmt: skip
    return x.clamp(-1, 1), steps


def _repaint(jump_n_sample):
    def run(y, op, models, g, knob, task):
        from ..inverse.repaint import repaint, repaint_schedule

        steps = models.get("repaint_steps", 100)
        jl = min(10, steps)
        x = repaint(models["unet"], y, op.mask, models["schedule"], steps=steps, jump_length=jl,
                    jump_n_sample=jump_n_sample, model_kwargs=_uncond(models, y), generator=g,
                    progress=False)  # fmt: skip
        times = repaint_schedule(steps, jl, jump_n_sample)
        return x.clamp(-1, 1), sum(b < a for a, b in zip(times[:-1], times[1:]))

    return run


def _blind_dps(y, op, models, g, knob, task):
    from ..inverse.blind import blind_dps

    scale, by_alpha_bar = knob
    steps = models["dps_steps"]
    x, _ = blind_dps(models["unet"], models["kernel_prior"], y, models["schedule"], kernel_size=KERNEL_SIZE,
                     steps=steps, scale=scale, scale_by_alpha_bar=by_alpha_bar, per_image=True,
                     model_kwargs=_uncond(models, y), generator=g, progress=False)  # fmt: skip
    return x.clamp(-1, 1), 2 * steps  # two networks per step


def _bird(y, op, models, g, knob, task):
    from ..inverse.blind import bird

    iters, lr_x, lr_k = knob
    x, _ = bird(models["unet"], y, models["schedule"], kernel_size=KERNEL_SIZE, ddim_steps=10, iters=iters, lr_x=lr_x,
                lr_k=lr_k, model_kwargs=_uncond(models, y), generator=g, progress=False)  # fmt: skip
    return x.clamp(-1, 1), 10 * iters


def _resample(y, op, models, g, knob, task):
    from ..inverse.resample import resample

    ldm = models["latent"]
    kw = {"y": torch.full((y.shape[0],), ldm.num_classes, device=y.device)}
    x = resample(ldm, models["autoencoder"], y, op, models["schedule"], steps=100, model_kwargs=kw, generator=g,
                 progress=False, x_T=None)  # fmt: skip
    return x.clamp(-1, 1), 100


def _two_stage(y, op, models, g, knob, task):
    from ..inverse.two_stage import two_stage_restore

    cnet = models["controlnet"]
    lq = y if y.shape[-1] == 28 else F.interpolate(y, size=(28, 28), mode="bilinear", align_corners=False)
    x = two_stage_restore(cnet.restorer, cnet, lq.clamp(-1, 1), models["schedule"], steps=50,
                          model_kwargs=_uncond(models, y), generator=g, progress=False)  # fmt: skip
    return x.clamp(-1, 1), 50


#: DiffPIR's (λ, ζ) grid, the official defaults and the setting that works for our small model (§4.1).
DIFFPIR_KNOBS = ((1.0, 0.1), (3.0, 1.0))
#: Blind-DPS's (ζ, scale by √ᾱ_t as the official sampler does) grid, the paper's constant step and the official
#: code's.
BLIND_DPS_KNOBS = ((0.3, False), (1.0, False), (1.0, True))
#: BIRD's (iterations, lr of the noise, lr of the kernel) grid, the official defaults and a longer, faster run.
BIRD_KNOBS = ((100, 3e-3, 2e-4), (200, 1e-2, 1e-3))

#: Every benchmarked method with the tasks it applies to.
METHODS = (
    Method("TV", TASKS, _tv, TV_LAMBDAS),
    Method("DPIR", TASKS[:5], _dpir),
    # DDRM needs an SVD: a motion kernel is not separable (DiffPIR's table has no DDRM entry there either)
    Method("DDRM", ("sr4", "gaussian_deblur", "box_inpaint", "random_inpaint"), _ddrm),
    Method("DiffPIR", TASKS[:5], _diffpir, DIFFPIR_KNOBS),
    Method("DPS", TASKS, _dps, DPS_SCALES),
    Method("RePaint (no resampling)", ("box_inpaint", "random_inpaint"), _repaint(1)),
    Method("RePaint", ("box_inpaint", "random_inpaint"), _repaint(10)),
    # the slowest method on a CPU (≈ 5 s per image: inner optimisations), so two tasks only
    Method("ReSample", ("sr4", "box_inpaint"), _resample),
    Method("Blind-DPS", ("motion_deblur",), _blind_dps, BLIND_DPS_KNOBS, blind=True),
    Method("BIRD", ("motion_deblur",), _bird, BIRD_KNOBS, blind=True),
    # a blind restorer trained on its own degradations (Gaussian blur, downsampling, noise): §4.2.1
    Method("two-stage (ControlNet)", ("sr4", "gaussian_deblur"), _two_stage, blind=True),
)

#: The shipped weights each method needs, beyond the pixel UNet.
NEEDS = {"DPIR": {"drunet": "drunet_gray"}, "ReSample": {"latent": "fmnist_latent_dit",
         "autoencoder": "fmnist_autoencoder"}, "Blind-DPS": {"kernel_prior": "kernel_prior"},
         "two-stage (ControlNet)": {"controlnet": "fmnist_controlnet"}}  # fmt: skip


def _score(x, gt, task, op):
    if task == "phase_retrieval":
        x = register_phase(op.pr, x, gt)
    return x, float(psnr(x, gt).mean()), float(ssim(x, gt).mean())


def bench_inverse(n=64, n_val=8, tasks=TASKS, methods=None, dps_steps=250, repaint_steps=100, seed=0,
                  device=None, progress=True, tiny=False, on_row=None) -> dict:  # fmt: skip
    """Run every method on every task it applies to; returns the rows and the example reconstructions.

    ``dps_steps`` (DPS and Blind-DPS; official 1000, 250 fit a CPU run) and ``repaint_steps`` (official 250; we
    default to 100, with the official jumps of 10 and 10 resamplings; "no resampling" uses the same levels without
    jumps) set the long samplers; ``on_row(rows)`` is
    called after every finished row (the CLI saves partial results there, so nothing is lost to a crash)."""
    from tqdm.auto import tqdm

    from ..pretrained import load

    dev = resolve_device(device)
    models = {"unet": load("fmnist_unet", device=dev), "schedule": linear_schedule(), "dps_steps": dps_steps,
              "repaint_steps": repaint_steps}  # fmt: skip
    x_test = fashion_mnist("test")[0][:n].to(dev)
    x_val = fashion_mnist("train")[0][-n_val:].to(dev)  # the last training images: never the test set
    fd = FDFMNIST(device=dev)
    chosen = [m for m in METHODS if methods is None or m.name in methods]
    for m in chosen:
        for key, name in NEEDS.get(m.name, {}).items():
            models[key] = load(name, device=dev)
    rows, examples = [], {"ground_truth": x_test[:6].cpu()}
    jobs = [(t, m) for t in tasks for m in chosen if t in m.tasks]
    for task, m in tqdm(jobs, disable=not progress, desc="inverse"):
        op = make_operator(task, device=dev)
        knob = None
        if m.grid is not None and not (m.name == "TV" and task == "phase_retrieval"):
            y_val = measure(op, x_val, SIGMA_Y, seed + 1)
            scores = []
            for k in m.grid:
                xv, _ = m.run(y_val, op, models, torch.Generator(dev).manual_seed(seed), k, task)
                scores.append(_score(xv, x_val, task, op)[1])
            knob = m.grid[max(range(len(scores)), key=scores.__getitem__)]
        y = measure(op, x_test, SIGMA_Y, seed)
        start = time.perf_counter()
        x, nfe = m.run(y, op, models, torch.Generator(dev).manual_seed(seed + 2), knob, task)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - start
        x, p, s = _score(x, x_test, task, op)
        label = "HIO" if m.name == "TV" and task == "phase_retrieval" else m.name
        rows.append({"task": task, "method": label, "knob": knob, "blind": m.blind, "psnr": p, "ssim": s,
                     "fd": fd(x), "nfe": int(nfe), "seconds_per_image": secs / n})  # fmt: skip
        if on_row is not None:
            on_row(rows)
        examples[f"{task}/{label}"] = x[:6].cpu()
        if not tiny and m.name == chosen[0].name:
            examples[f"{task}/measurement"] = y[:6].cpu()
    return {
        "n_images": n,
        "n_val": n_val,
        "sigma_y": SIGMA_Y,
        "fd_of_ground_truth": fd(x_test),
        "dps_steps": dps_steps,
        "repaint_steps": repaint_steps,
        "rows": rows,
        **environment(dev),
        "_examples": examples,
    }


def run_inverse(args) -> dict:
    """``python -m diffu.bench inverse``: :func:`bench_inverse` (``--n-images``, ``--dps-steps``,
    ``--repaint-steps``, ``--methods``, ``--tasks``; tiny: 4 images, two tasks, 3-step samplers), printed and
    written to ``--out`` as ``inverse.json`` and ``inverse_examples.safetensors``. While it runs, the rows so far are
    kept in ``inverse.partial.json``, so nothing is lost if a long run stops half-way."""
    from safetensors.torch import save_file

    out = results_dir(args.out, full_run=not args.tiny)
    command = " ".join(["python -m diffu.bench inverse", *(args.argv or [])])

    def partial(rows):
        if out is not None:
            write_json(out / "inverse.partial.json", {"command": command, "rows": rows})

    methods = args.methods
    if args.tiny:
        kw = dict(n=4, n_val=2, tasks=("gaussian_deblur", "box_inpaint"), dps_steps=3, repaint_steps=3, tiny=True)
        methods = methods or ["TV", "DPIR", "DDRM", "DiffPIR", "DPS", "RePaint"]
    else:
        kw = dict(n=args.n_images, dps_steps=args.dps_steps, repaint_steps=args.repaint_steps)
        if args.tasks:
            kw["tasks"] = tuple(args.tasks)
    res = bench_inverse(**kw, methods=methods, device=args.device, progress=not args.tiny, on_row=partial)
    examples = res.pop("_examples")
    res["command"] = command
    print(f"[inverse] {res['n_images']} test images, sigma_y = {res['sigma_y']}, {res['machine']}; "
          f"FD-FMNIST of the ground truth {res['fd_of_ground_truth']:.3f}")  # fmt: skip
    print(f"  {'task':16s} {'method':24s} {'knob':>16s} {'PSNR':>6s} {'SSIM':>6s} {'FD':>7s} {'NFE':>5s} {'s/img':>7s}")
    for r in res["rows"]:
        knob = "" if r["knob"] is None else str(r["knob"])
        print(f"  {r['task']:16s} {r['method']:24s} {knob:>16s} {r['psnr']:6.2f} {r['ssim']:6.3f} {r['fd']:7.3f} "
              f"{r['nfe']:5d} {r['seconds_per_image']:7.3f}")  # fmt: skip
    if out is not None:
        write_json(out / "inverse.json", res)
        save_file({k: v.contiguous() for k, v in examples.items()}, str(out / "inverse_examples.safetensors"))
        (out / "inverse.partial.json").unlink(missing_ok=True)
    return res
