"""Cross-modality translation and latent diffusion, chapter §5.2: ``python -m diffu.bench medical_translation``.

Three measurements on the 32 × 32 MNI152 slices, every number on held-out data (the band
:data:`diffu.data.mni.HELD_OUT`, never trained on):

**Translation** (``translation`` rows). T1 → synthetic T2 on the held-out band (all 24 slices by default). Methods
and the data each needs:

- *T1-intensity map* (:func:`~diffu.medical.translation.fit_intensity_map`, 64 bins): ``E[T2 | T1 = v]`` fitted on
  the aligned (T1, T2) pairs of the template's training slices (``split="train"``): paired training data, no model;
- *tissue oracle* (:func:`~diffu.medical.translation.fit_tissue_map` on the hard labels): the per-tissue mean T2 of
  the training slices, applied to the *true* tissue labels of the test slice: it needs what a translator never has
  (the segmentation of the target), so it is a reference, not a competitor;
- *DDIB* (:func:`~diffu.medical.translation.ddib`, Su et al. ICLR 2023): the T1 prior's DDIM ODE run backwards to
  ``x_T``, the T2 prior's ODE forwards; ``DDIB_STEPS`` steps each way (NFE = 2 · steps): unpaired data (a T1 and a T2
  prior trained separately);
- *paired* (:class:`diffu.nn.concat.ConcatUNet` ``mni_t1_to_t2``, SR3/Palette-style, Saharia et al. 2022): per
  sampler, ``K = paired_k`` samples per image in one batch — DDIM (η = 0, ``paired_steps`` steps) and ancestral DDPM
  on a respaced ``ddpm_steps``-step schedule, both with x̂_0 clipped to [-1, 1] (as Palette and guided-diffusion
  sample); the first sample is the "one sample" row, the average of all K the "mean of K" row (an estimate of the
  posterior mean, which maximises PSNR at the price of blur): paired data.

Per row: per-image PSNR and SSIM ([-1, 1] scale, outputs clamped), NFE, wall-clock and process CPU seconds per image.

**Latent vs pixel** (``latent`` dict). ``n_samples`` unconditional samples from the latent DiT ``mni_latent_dit``
(3 × 8 × 8 latents of ``mni_autoencoder``: 192 numbers instead of 1024) decoded, and from the pixel UNet
``mni_t1_prior``, both with DDIM (η = 0, ``sample_steps`` steps, one batch): seconds per NFE per image, the decoder's
seconds, the peak memory of one network evaluation at that batch (:func:`diffu.bench.medical_cost.peak_bytes`),
parameters, values per sample. Quality proxy (comparable settings: same sampler, steps and seed): the RMSE of each
sample to its nearest axial slice of the template (:func:`diffu.metrics.nearest_neighbour`, all 155 slices), beside
the same distance for fresh augmented slices (``augmented_slices(n_samples, seed=AUG_SEED)``: real images of the
training distribution, the value a perfect sampler would reach). And the latent model's ceiling: the autoencoder's
reconstruction PSNR/SSIM on the held-out band (no latent sample can be closer to an image than its decoder allows).

**MRI ×4** (``mri`` rows). ``n_mri`` held-out slices (:func:`diffu.bench.medical.test_images`), the ×4 Cartesian
mask and σ_y = 0.01 of :mod:`diffu.bench.medical`: zero-filled; DDS in pixel space with ``mni_t1_prior`` (50 steps,
η = 0.85, 5 CG iterations, the projection data step for single-coil MRI, as the reconstruction benchmark); ReSample
(:func:`diffu.inverse.resample`, Song et al. ICLR 2024) with ``mni_latent_dit`` + ``mni_autoencoder``
(:data:`RESAMPLE_CONFIGS`: 50 steps, 200 pixel and 100 latent AdamW iterations per hard-consistency step, or the
library's 2000 and 500; stopping at the noise level ``tol = 2σ_y √(observed fraction)``, the RMS of the noise over
all entries of ``y``); the autoencoder's
reconstruction of the truth (the latent ceiling, not a method). Per row: per-image PSNR/SSIM, NFE (counted: every
network evaluation, the time-travel steps included), the relative data residual ``‖A x − y‖ / ‖y‖``, seconds.

Writes ``medical_translation.json`` and ``medical_translation_examples.safetensors`` (every translation and MRI
output, for the page's figures) to ``--out``. ``models`` (``{manifest name: network}``) replaces shipped networks
(tests pass tiny seeded ones). Nothing here is for clinical use.
"""

from __future__ import annotations

import time

import torch

from ..data.mni import HELD_OUT, augmented_slices, mni_slices
from ..medical.measurements import analytic_reconstruction, signed_measurement
from ..medical.translation import ddib, fit_intensity_map, fit_tissue_map
from ..metrics import nearest_neighbour, psnr, ssim
from ..samplers import ddim, ddpm
from ..schedules import linear_schedule
from .common import environment, resolve_device, results_dir, write_json
from .common import finite_mean as _avg
from .medical import SIGMA_Y, SIZE, make_operator, measure, test_images
from .medical_cost import peak_bytes

#: The networks of the benchmark (manifest names), loaded with :func:`diffu.pretrained.load` unless given.
MODELS = ("mni_t1_prior", "mni_t2_prior", "mni_t1_to_t2", "mni_autoencoder", "mni_latent_dit")
#: DDIB's DDIM steps per half (NFE = 2 · steps).
DDIB_STEPS = (50, 100)
#: The bins of the T1-intensity map.
BINS = 64
#: Seed of the fresh augmented slices that calibrate the nearest-neighbour proxy (never a training chunk's seed).
AUG_SEED = 5000
#: ReSample's settings on MRI: row name → keywords of :func:`diffu.inverse.resample` (a CPU budget of 200/100
#: AdamW iterations per hard-consistency step, and the library's 2000/500; the library's default is 100 steps).
RESAMPLE_CONFIGS = {
    "ReSample-50": dict(steps=50, pixel_iters=200, latent_iters=100),
    "ReSample-50, 2000/500 iterations": dict(steps=50),
}
#: What each translation method needs.
DATA = {
    "T1-intensity map": "paired training slices",
    "tissue oracle": "paired training slices + the test slice's true tissue labels",
    "DDIB": "unpaired: a T1 prior and a T2 prior",
    "paired": "paired training slices (a conditional model)",
}


class _Counted:
    """A network wrapper that counts its evaluations (NFE) and forwards the attributes samplers read."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)

    def __getattr__(self, name):
        if name == "model":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float], n: int) -> dict:
    wall, cpu = _clocks()
    return {"seconds_per_image": (wall - start[0]) / n, "cpu_seconds_per_image": (cpu - start[1]) / n}


def _scores(x: torch.Tensor, truth: torch.Tensor) -> dict:
    x = x.clamp(-1, 1)
    return {"psnr": psnr(x, truth).tolist(), "ssim": ssim(x, truth).tolist()}


def load_models(models: dict | None = None, device=None) -> dict:
    """``{name: network}`` for every name of :data:`MODELS`: ``models[name]`` when given, else the shipped one."""
    from ..pretrained import load

    models = dict(models or {})
    return {n: (models[n] if n in models else load(n, device=device)).eval() for n in MODELS}


def held_out_pairs(n: int | None = None, device=None) -> dict:
    """The held-out band as aligned test pairs: ``t1``, ``t2`` ``(n, 1, 32, 32)``, ``labels`` ``(n, 32, 32)`` and
    ``names``; ``n`` slices spread evenly over the band (all 24 when None)."""
    t1, t2 = mni_slices(size=SIZE, split="test"), mni_slices(size=SIZE, modality="t2", split="test")
    labels = mni_slices(size=SIZE, modality="labels", split="test")
    idx = torch.arange(t1.shape[0]) if n is None else torch.linspace(0, t1.shape[0] - 1, n).round().long()
    return {"t1": t1[idx].to(device), "t2": t2[idx].to(device), "labels": labels[idx].to(device),
            "names": [f"MNI z={HELD_OUT[0] + int(i)}" for i in idx]}  # fmt: skip


def fit_baselines(bins: int = BINS):
    """The intensity map and the tissue oracle, fitted on the template's training slices (``split="train"``)."""
    t1, t2 = mni_slices(size=SIZE), mni_slices(size=SIZE, modality="t2")
    return fit_intensity_map(t1, t2, bins=bins), fit_tissue_map(mni_slices(size=SIZE, modality="labels"), t2)


def bench_translation(models: dict, n: int | None = None, *, ddib_steps=DDIB_STEPS, paired_steps: int = 50,
                      paired_k: int = 4, ddpm_steps: int = 100, seed: int = 0, device=None,
                      progress: bool = True) -> tuple[list[dict], dict, dict]:  # fmt: skip
    """The ``translation`` rows (see the module docstring), the test images' names and the outputs by method."""
    dev = resolve_device(device)
    d = held_out_pairs(n, dev)
    t1, t2, labels = d["t1"], d["t2"], d["labels"]
    m = t1.shape[0]
    sched = linear_schedule()
    rows, outs = [], {}

    def add(method, family, x, nfe, clock, n_img=m, **extra):
        rows.append({"method": method, "family": family, "data": DATA[family], **_scores(x, t2), "nfe": nfe,
                     **_since(clock, n_img), **extra})  # fmt: skip
        outs[method] = x.detach().clamp(-1, 1).cpu()
        if progress:
            print(f"  translation {method:28s} PSNR {_avg(rows[-1]['psnr']):6.2f}")

    imap, tmap = fit_baselines()
    clock = _clocks()
    add("T1-intensity map", "T1-intensity map", imap(t1), 0, clock)
    clock = _clocks()
    add("tissue oracle", "tissue oracle", tmap(labels).to(t2.dtype), 0, clock)
    for steps in ddib_steps:
        clock = _clocks()
        with torch.no_grad():
            x = ddib(models["mni_t1_prior"], models["mni_t2_prior"], t1, sched, steps=steps, progress=False)
        add(f"DDIB-{steps}", "DDIB", x, 2 * steps, clock, steps=steps)
    paired = models["mni_t1_to_t2"]
    cond = {"cond": t1.repeat(paired_k, 1, 1, 1)}
    shape = (paired_k * m, 1, SIZE, SIZE)
    for sampler, steps in (("DDIM", paired_steps), ("DDPM", ddpm_steps)):
        g = torch.Generator(dev).manual_seed(seed + (sampler == "DDPM"))
        clock = _clocks()
        with torch.no_grad():
            if sampler == "DDIM":
                xs = ddim(paired, shape, sched, steps=steps, eta=0.0, clip_x0=True, generator=g, model_kwargs=cond,
                          progress=False)  # fmt: skip
            else:
                xs = ddpm(paired, shape, sched, steps=steps, generator=g, model_kwargs=cond, progress=False)
        cost = _since(clock, m * paired_k)  # per sample
        xs = xs.clamp(-1, 1).unflatten(0, (paired_k, m))
        for name, x, k in ((f"paired {sampler}-{steps}", xs[0], 1),
                           (f"paired {sampler}-{steps}, mean of {paired_k}", xs.mean(0), paired_k)):  # fmt: skip
            rows.append({"method": name, "family": "paired", "data": DATA["paired"], **_scores(x, t2),
                         "nfe": steps * k, "samples": k, "sampler": sampler, "steps": steps,
                         **{key: v * k for key, v in cost.items()}})  # fmt: skip
            outs[name] = x.detach().cpu()
            if progress:
                print(f"  translation {name:28s} PSNR {_avg(rows[-1]['psnr']):6.2f}")
        rows[-1]["sample_std"] = xs.std(0).flatten(1).mean(1).tolist()  # spread of the K samples per image
    outs["t1"], outs["t2"] = t1.cpu(), t2.cpu()
    return rows, {"images": d["names"], "bins": BINS, "fit_on": "template training slices (split='train')"}, outs


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def bench_latent(models: dict, n_samples: int = 32, sample_steps: int = 50, seed: int = 0,
                 device=None) -> tuple[dict, dict]:  # fmt: skip
    """The ``latent`` dict (see the module docstring) and the samples ``{"pixel", "latent"}``: cost and quality
    proxy of latent vs pixel sampling."""
    dev = resolve_device(device)
    sched = linear_schedule()
    ae, latent, pixel = models["mni_autoencoder"], models["mni_latent_dit"], models["mni_t1_prior"]
    reference = mni_slices(size=SIZE, split="all").to(dev)
    zshape = tuple(ae.encode(torch.zeros(1, 1, SIZE, SIZE, device=dev)).shape[1:])
    out = {"n_samples": n_samples, "steps": sample_steps, "reference": f"all {len(reference)} axial template slices"}
    samples = {}
    for name, net, shape in (("pixel", pixel, (1, SIZE, SIZE)), ("latent", latent, zshape)):
        g = torch.Generator(dev).manual_seed(seed)
        clock = _clocks()
        with torch.no_grad():
            x = ddim(net, (n_samples, *shape), sched, steps=sample_steps, eta=0.0, generator=g, progress=False)
        cost = _since(clock, n_samples)
        row = {"values_per_sample": int(torch.Size(shape).numel()), "parameters": _params(net), "nfe": sample_steps,
               "seconds_per_nfe_per_image": cost["seconds_per_image"] / sample_steps,
               "cpu_seconds_per_nfe_per_image": cost["cpu_seconds_per_image"] / sample_steps}  # fmt: skip
        probe = torch.randn(n_samples, *shape, generator=torch.Generator().manual_seed(1)).to(dev)
        tt = torch.full((n_samples,), 500.0, device=dev)
        with torch.no_grad():
            row["peak_bytes_per_nfe"] = peak_bytes(lambda net=net, probe=probe, tt=tt: net(probe, tt), dev)[1]
        if name == "latent":
            clock = _clocks()
            with torch.no_grad():
                x = ae.decode(x)
            dec = _since(clock, n_samples)
            row.update({"decoder_parameters": _params(ae.decoder), "decode_seconds_per_image": dec["seconds_per_image"],
                        "decode_cpu_seconds_per_image": dec["cpu_seconds_per_image"]})  # fmt: skip
            with torch.no_grad():
                row["decode_peak_bytes"] = peak_bytes(lambda probe=probe: ae.decode(probe), dev)[1]
        x = x.clamp(-1, 1)
        row["total_seconds_per_image"] = row["seconds_per_nfe_per_image"] * sample_steps + row.get(
            "decode_seconds_per_image", 0.0)  # fmt: skip
        row["nn_rmse"] = nearest_neighbour(x, reference)[0].tolist()
        out[name], samples[name] = row, x.cpu()
    real = augmented_slices(n_samples, SIZE, seed=AUG_SEED)["t1"].to(dev)
    out["real_nn_rmse"] = nearest_neighbour(real, reference)[0].tolist()
    band = mni_slices(size=SIZE, split="test").to(dev)
    with torch.no_grad():
        rec = ae.decode(ae.encode(band))
    out["autoencoder_ceiling"] = _scores(rec, band)
    return out, samples


def bench_mri(models: dict, n: int = 8, task: str = "mri4", *, dds_steps: int = 50, resample_configs=None,
              seed: int = 0, device=None) -> tuple[list[dict], dict, dict]:  # fmt: skip
    """The ``mri`` rows (see the module docstring): zero-filled, pixel DDS, latent ReSample, the AE ceiling."""
    from ..inverse import dds, resample

    dev = resolve_device(device)
    sched = linear_schedule()
    ae = models["mni_autoencoder"]
    x, names = test_images("mri", n, dev)
    op = make_operator(task, device=dev)
    y = measure(op, x, SIGMA_Y, seed)
    ys = signed_measurement(op, y, tuple(x.shape))
    frac = float(op.mask.float().mean())
    rows, outs = [], {"truth": x.cpu()}

    def add(method, space, est, nfe, clock, **extra):
        est = est.detach().clamp(-1, 1)
        res = ((op.A(est) - ys).flatten(1).norm(dim=1) / ys.flatten(1).norm(dim=1)).tolist()
        rows.append({"method": method, "space": space, **_scores(est, x), "nfe": nfe, "residual": res,
                     **_since(clock, n), **extra})  # fmt: skip
        outs[method] = est.cpu()

    clock = _clocks()
    add("zero-filled", "pixel", analytic_reconstruction(op, y), 0, clock)
    clock = _clocks()
    with torch.no_grad():
        add("autoencoder of the truth (ceiling)", "latent", ae.decode(ae.encode(x)), 0, clock)
    net = _Counted(models["mni_t1_prior"])
    clock = _clocks()
    est = dds(net, ys, op, sched, steps=dds_steps, gamma=None, generator=torch.Generator(dev).manual_seed(seed + 2),
              progress=False, x_T=tuple(x.shape))  # fmt: skip
    add(f"DDS-{dds_steps}", "pixel", est, net.calls, clock, steps=dds_steps)
    for name, kw in (RESAMPLE_CONFIGS if resample_configs is None else resample_configs).items():
        rkw = {"tol": 2 * SIGMA_Y * frac**0.5, **kw}
        net = _Counted(models["mni_latent_dit"])
        clock = _clocks()
        est = resample(net, ae, ys, op, sched, **rkw, generator=torch.Generator(dev).manual_seed(seed + 2),
                       progress=False)  # fmt: skip
        add(name, "latent", est, net.calls, clock, settings=rkw)
    return rows, {"task": task, "images": names, "observed_fraction": frac}, outs


def bench_medical_translation(*, n: int | None = None, ddib_steps=DDIB_STEPS, paired_steps: int = 50,
                              paired_k: int = 4, ddpm_steps: int = 100, n_samples: int = 32, sample_steps: int = 50,
                              n_mri: int = 8, dds_steps: int = 50, resample_configs=None, seed: int = 0,
                              device=None, progress: bool = True, models: dict | None = None) -> dict:  # fmt: skip
    """All three parts with the shipped networks (or ``models``, ``{manifest name: network}``: tests pass tiny
    ones); the outputs for the examples file are under the key ``"_examples"``."""
    dev = resolve_device(device)
    nets = load_models(models, dev)
    tr_rows, tr_info, tr_out = bench_translation(nets, n, ddib_steps=ddib_steps, paired_steps=paired_steps,
                                                 paired_k=paired_k, ddpm_steps=ddpm_steps, seed=seed, device=dev,
                                                 progress=progress)  # fmt: skip
    lat, lat_samples = bench_latent(nets, n_samples, sample_steps, seed, dev)
    mri_rows, mri_info, mri_out = bench_mri(nets, n_mri, dds_steps=dds_steps, resample_configs=resample_configs,
                                            seed=seed, device=dev)  # fmt: skip
    examples = {f"translation/{k}": v for k, v in tr_out.items()}
    examples.update({f"samples/{k}": v for k, v in lat_samples.items()})
    examples.update({f"mri/{k}": v for k, v in mri_out.items()})
    return {"sigma_y": SIGMA_Y, "size": SIZE, "translation": tr_rows, "translation_info": tr_info, "latent": lat,
            "mri": mri_rows, "mri_info": mri_info, **environment(dev), "_examples": examples}  # fmt: skip


def run_medical_translation(args) -> dict:
    """``python -m diffu.bench medical_translation``: :func:`bench_medical_translation` (tiny: 2 slices, 2-step
    samplers, K = 2, 4 samples, 2 MRI slices with one 4-step ReSample), printed and written to ``--out`` as
    ``medical_translation.json`` and ``medical_translation_examples.safetensors``."""
    from safetensors.torch import save_file

    out = results_dir(args.out, full_run=not args.tiny)
    command = " ".join(["python -m diffu.bench medical_translation", *(args.argv or [])])
    if args.tiny:
        rs = {"ReSample-4": dict(steps=4, pixel_iters=2, latent_iters=2, hard_every=2)}
        kw = dict(n=2, ddib_steps=(2,), paired_steps=2, paired_k=2, ddpm_steps=2, n_samples=4, sample_steps=2,
                  n_mri=2, dds_steps=2, resample_configs=rs)  # fmt: skip
    else:
        kw = {}
    res = bench_medical_translation(**kw, device=args.device, progress=not args.tiny)
    examples = res.pop("_examples")
    res["command"] = command
    print(f"[medical_translation] {res['size']}x{res['size']}, {res['machine']}")
    print(f"  T1 -> T2 on {len(res['translation_info']['images'])} held-out slices")
    for r in res["translation"]:
        print(f"  {r['method']:28s} PSNR {_avg(r['psnr']):6.2f} SSIM {_avg(r['ssim']):6.3f} NFE {r['nfe']:5d} "
              f"s/img {r['seconds_per_image']:7.3f}  ({r['data']})")  # fmt: skip
    lat = res["latent"]
    for name in ("pixel", "latent"):
        r = lat[name]
        print(f"  sampling {name:6s} {r['values_per_sample']:5d} values, {r['nfe']} NFE, "
              f"{1000 * r['seconds_per_nfe_per_image']:.3f} ms/NFE/img, "
              f"total {r['total_seconds_per_image']:.3f} s/img, "
              f"peak {r['peak_bytes_per_nfe'] / 2**20:.1f} MiB/NFE, NN RMSE {_avg(r['nn_rmse']):.4f}")  # fmt: skip
    ceil = lat["autoencoder_ceiling"]
    print(f"  real augmented slices NN RMSE {_avg(lat['real_nn_rmse']):.4f}; autoencoder ceiling on the band "
          f"PSNR {_avg(ceil['psnr']):.2f} SSIM {_avg(ceil['ssim']):.3f}")  # fmt: skip
    for r in res["mri"]:
        print(f"  {res['mri_info']['task']} {r['method']:36s} PSNR {_avg(r['psnr']):6.2f} SSIM {_avg(r['ssim']):6.3f} "
              f"NFE {r['nfe']:5d} residual {_avg(r['residual']):.4f} s/img {r['seconds_per_image']:7.3f}")  # fmt: skip
    if out is not None:
        write_json(out / "medical_translation.json", res)
        save_file({k: v.contiguous() for k, v in examples.items()},
                  str(out / "medical_translation_examples.safetensors"))  # fmt: skip
    return res
