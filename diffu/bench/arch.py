"""Benchmarks of the architectures chapter (§2.6): ``python -m diffu.bench dit|ablation|probe|t2i``.

- ``dit``: training-step (forward + backward) throughput and activation memory of our DiT versus diffusers'
  ``DiTTransformer2DModel`` with an identical tiny configuration, as a ratio in one run (goal ≥ 1.2×).
- ``ablation``: the DiT paper's conditioning ablation at toy scale — FD-FMNIST and classifier accuracy of
  class-balanced DDIM samples from the four shipped DiT-T/4 variants, plus their training-loss summaries;
  writes ``dit_ablation.json``.
- ``probe``: linear probes on the shipped UNet's pooled features per level and timestep, with the untrained network
  and raw pixels as controls (Fuest et al. 2024); writes ``unet_probe.json``.
- ``t2i``: the shipped text-to-image MMDiT — class accuracy of samples per caption and guidance scale, and whether
  "dark"/"light" in the caption moves the samples' brightness; writes ``t2i.json``.

Result files go to the directory of ``--out`` (see :mod:`diffu.bench.common`).
"""

from __future__ import annotations

import time

import torch

from ..data import FMNIST_CLASSES
from ..guidance import balanced_labels, class_batches
from ..pretrained import DIT_ABLATION, info, load
from ..samplers import ddim
from ..schedules import linear_schedule
from .common import environment, resolve_device, results_dir, timed, write_json


def _saved_bytes(fn):
    """Bytes of the tensors autograd saves for backward while ``fn`` runs (activation memory; on CPU there is no
    allocator statistic, so this is the measure; on CUDA the peak allocation is reported as well)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def bench_dit(batch=64, hidden=96, depth=4, heads=4, patch=2, repeats=3, device=None):
    """Training-step (forward + backward) throughput and activation memory of our DiT and diffusers'
    ``DiTTransformer2DModel`` with the same tiny configuration, and their ratios (goal: speed-up ≥ 1.2)."""
    from diffusers import DiTTransformer2DModel

    from ..nn import DiT, DiTConfig
    from ..train import seeded

    dev = resolve_device(device)
    with seeded(0):
        ours = DiT(DiTConfig(hidden_size=hidden, depth=depth, num_heads=heads, patch_size=patch)).to(dev)
        ref = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=1,
                                    out_channels=1, num_layers=depth, sample_size=28, patch_size=patch,
                                    num_embeds_ada_norm=10, norm_eps=1e-6).to(dev)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).to(dev)
    t = torch.randint(0, 1000, (batch,), generator=g).to(dev)
    y = torch.randint(0, 10, (batch,), generator=g).to(dev)

    def step(model, call):
        model.zero_grad(set_to_none=True)
        loss = call().pow(2).mean()
        loss.backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    calls = {
        "ours": (ours, lambda: ours(x, t.float(), y=y)),
        "diffusers": (ref, lambda: ref(x, timestep=t, class_labels=y).sample),
    }
    res = {"device": str(dev), "threads": torch.get_num_threads(), "batch": batch,
           "config": dict(hidden=hidden, depth=depth, heads=heads, patch=patch, tokens=(28 // patch) ** 2)}  # fmt: skip
    for name, (model, call) in calls.items():
        step(model, call)  # warm-up
        secs, _ = timed(lambda m=model, c=call: step(m, c), repeats)
        _, saved = _saved_bytes(call)
        res[name] = {"params": sum(p.numel() for p in model.parameters()), "seconds_per_step": secs,
                     "images_per_s": batch / secs, "activation_MiB": saved / 2**20}  # fmt: skip
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            step(model, call)
            res[name]["cuda_peak_MiB"] = torch.cuda.max_memory_allocated(dev) / 2**20
    res["speedup"] = res["diffusers"]["seconds_per_step"] / res["ours"]["seconds_per_step"]
    res["memory_ratio"] = res["diffusers"]["activation_MiB"] / res["ours"]["activation_MiB"]
    return res


# ----------------------------------------------------------------------------------------------------------------
# ablation: the four DiT conditionings
# ----------------------------------------------------------------------------------------------------------------


def sample_classes(model, n, steps=50, batch=128, seed=0, device=None):
    """``n`` class-balanced (label ``i mod 10``) DDIM-``steps`` samples (η = 0) of a class-conditional ε-model."""
    out = []
    for x_T, y, g in class_batches(n, batch, seed, device):
        out.append(ddim(model, x_T, linear_schedule(), steps=steps, generator=g, progress=False, clip_x0=True,
                        model_kwargs={"y": y}).cpu())  # fmt: skip
    return torch.cat(out)


def bench_ablation(n=384, steps=50, device=None, progress=True):
    """FD-FMNIST (against the 2000 shipped test images) and accuracy of ``n`` class-balanced samples per variant."""
    from ..metrics import FDFMNIST

    dev = resolve_device(device)
    fd = FDFMNIST(device=dev)
    rows = []
    for cond, name in DIT_ABLATION.items():
        t0 = time.perf_counter()
        model = load(name, device=dev)
        x = sample_classes(model, n, steps=steps, device=dev)
        e = info(name)
        row = {"conditioning": cond, "model": name, "parameters": e["parameters"], "fd": fd(x),
               "accuracy": fd.accuracy(x, balanced_labels(n)),
               "final_loss_mean_last_100": e["final_loss_mean_last_100"],
               "train_seconds": e.get("train_seconds_this_run"), "seconds": time.perf_counter() - t0}  # fmt: skip
        rows.append(row)
        if progress:
            print(row, flush=True)
    return {"n_samples": n, "sampler": f"DDIM-{steps}, eta = 0, clip_x0", "reference": "shipped test split",
            "rows": rows, "command": "python -m diffu.bench ablation"}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# t2i: the tiny text-to-image MMDiT
# ----------------------------------------------------------------------------------------------------------------


def bench_t2i(per_caption=20, scales=(1.0, 3.0, 5.0), steps=50, device=None, progress=True):
    """Class accuracy (FD-FMNIST's classifier) of samples for "a photo of a <class>" per guidance scale, and the mean
    brightness of samples for "a photo of a dark <class>" versus "… light <class>"."""
    from ..captions import caption
    from ..metrics import FDFMNIST
    from ..text_to_image import sample_captions

    dev = resolve_device(device)
    model = load("fmnist_t2i", device=dev)
    fd = FDFMNIST(device=dev)
    labels = torch.arange(10).repeat_interleave(per_caption)
    res = {"per_caption": per_caption, "sampler": f"DDIM-{steps}, eta = 0, CFG", "command": "python -m diffu.bench t2i"}
    res["accuracy"] = []
    for s in scales:
        x = sample_captions(model, [caption(int(c)) for c in labels], s, steps, device=dev)
        row = {"scale": s, "accuracy": fd.accuracy(x, labels), "fd": fd(x)}
        res["accuracy"].append(row)
        if progress:
            print(row, flush=True)
    bright = {}
    for attr in ("dark", "light"):
        x = sample_captions(model, [caption(int(c), attr) for c in labels], 3.0, steps, seed=1, device=dev)
        bright[attr] = x.flatten(1).mean(1).reshape(10, per_caption).mean(1).tolist()  # per class
        res[f"accuracy_{attr}"] = fd.accuracy(x, labels)
    darker = sum(a < b for a, b in zip(bright["dark"], bright["light"]))
    res["brightness"] = {"scale": 3.0, "classes": list(FMNIST_CLASSES), **bright, "classes_darker_when_dark": darker}
    if progress:
        print(res["brightness"], flush=True)
    return res


# ----------------------------------------------------------------------------------------------------------------
# probe: what the UNet's features know (Fuest et al. 2024)
# ----------------------------------------------------------------------------------------------------------------


def bench_probe(model="fmnist_unet", n_train=2000, n_test=1000, ts=(0, 50, 200, 500, 900), seed=0, progress=True):
    """Linear-probe accuracy per UNet level and timestep (null label), for the shipped and the untrained network."""
    from ..data import fashion_mnist
    from ..pretrained import build
    from ..representations import probe_sweep
    from ..train import seeded

    start = time.perf_counter()
    data = (linear_schedule(), fashion_mnist("train", n=n_train), fashion_mnist("test", n=n_test), list(ts))
    res = probe_sweep(load(model), *data, generator=torch.Generator().manual_seed(seed), progress=progress)
    # the control: the same architecture before training (same seed → the same noisy images x_t)
    with seeded(seed):
        untrained = build(info(model)).eval()
    res["untrained"] = probe_sweep(untrained, *data, generator=torch.Generator().manual_seed(seed),
                                   progress=progress)["accuracy"]  # fmt: skip
    cmd = f"python -m diffu.bench probe --n-train {n_train} --n-test {n_test} --ts " + " ".join(map(str, ts))
    res.update(model=model, n_train=n_train, n_test=n_test, seed=seed, command=cmd,
               seconds=round(time.perf_counter() - start, 1), torch=torch.__version__)  # fmt: skip
    return res


# ----------------------------------------------------------------------------------------------------------------
# The commands
# ----------------------------------------------------------------------------------------------------------------


def run_dit(args) -> dict:
    """``python -m diffu.bench dit``: :func:`bench_dit` (``--batch``, ``--patch``; tiny with ``--tiny``), printed."""
    kw = dict(batch=4, depth=1, repeats=1) if args.tiny else dict(batch=args.batch, patch=args.patch)
    r = bench_dit(device=args.device, **kw)
    print(f"[dit] {r['device']}, {r['threads']} threads, batch {r['batch']}, {r['config']}: forward + backward")
    for name in ("ours", "diffusers"):
        e = r[name]
        print(f"  {name:10s} {e['params']:>9,d} params  {e['images_per_s']:8.1f} img/s  "
              f"activations {e['activation_MiB']:7.1f} MiB")  # fmt: skip
    print(f"  speed ratio ours/diffusers {r['speedup']:.2f}x (goal >= 1.2), activation memory "
          f"diffusers/ours {r['memory_ratio']:.2f}x")  # fmt: skip
    return r


def run_probe(args) -> dict:
    """``python -m diffu.bench probe``: :func:`bench_probe` (``--n-train``, ``--n-test``, ``--ts``; tiny: 40/20
    images at t = 0), printed and written to ``--out`` as ``unet_probe.json`` (by default only for the committed
    configuration, 2000/1000 images)."""
    if args.tiny:
        kw = dict(n_train=40, n_test=20, ts=[0])
    else:
        kw = dict(n_train=args.n_train, n_test=args.n_test, ts=args.ts)
    res = bench_probe(**kw, progress=not args.tiny)
    for t in kw["ts"]:
        for kind in ("accuracy", "untrained"):
            row = "  ".join(f"{k.split()[0]} {v:.3f}" for k, v in res[kind][str(t)].items())
            print(f"[probe] t={t:4d} {'trained' if kind == 'accuracy' else 'untrained':9s} {row}")
    print(f"[probe] raw pixels {res['pixels']:.3f}")
    out = results_dir(args.out, full_run=not args.tiny and (args.n_train, args.n_test) == (2000, 1000))
    if out is not None:
        write_json(out / "unet_probe.json", res)
    return res


def run_ablation(args) -> dict:
    """``python -m diffu.bench ablation``: :func:`bench_ablation` (``--n``; tiny: 4 samples, 2 steps), printed and
    written to ``--out`` as ``dit_ablation.json``."""
    res = bench_ablation(**(dict(n=4, steps=2) if args.tiny else dict(n=args.n)), device=args.device)
    print(f"[ablation] DiT-T/4 conditionings, {res['n_samples']} samples, {res['sampler']}")
    for r in res["rows"]:
        print(f"  {r['conditioning']:16s} {r['parameters']:>8,d} params  final loss "
              f"{r['final_loss_mean_last_100']:.4f}  FD {r['fd']:7.3f}  acc {r['accuracy']:.3f}")  # fmt: skip
    res.update(environment())
    out = results_dir(args.out, full_run=not args.tiny)
    if out is not None:
        write_json(out / "dit_ablation.json", res)
    return res


def run_t2i(args) -> dict:
    """``python -m diffu.bench t2i``: :func:`bench_t2i` (tiny: one sample per caption, one scale, 2 steps), printed
    and written to ``--out`` as ``t2i.json``."""
    kw = dict(per_caption=1, scales=(3.0,), steps=2) if args.tiny else {}
    res = bench_t2i(**kw, device=args.device, progress=not args.tiny)
    print(f"[t2i] text-to-image MMDiT, {res['per_caption']} samples per caption, {res['sampler']}")
    for r in res["accuracy"]:
        print(f"  'a photo of a <class>'  scale {r['scale']:4.1f}  accuracy {r['accuracy']:.3f}  FD {r['fd']:.3f}")
    b = res["brightness"]
    print(f"  dark vs light captions: samples darker in {b['classes_darker_when_dark']}/10 classes")
    res.update(environment())
    out = results_dir(args.out, full_run=not args.tiny)
    if out is not None:
        write_json(out / "t2i.json", res)
    return res
