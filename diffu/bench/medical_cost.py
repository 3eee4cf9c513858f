"""What the third axis costs (chapter §5.1): ``python -m diffu.bench medical_cost``.

A 2D UNet run on the ``D`` slices of a ``D×H×W`` volume (one batch of ``D`` images) and on one of its slices, against
the 3D UNet of the same width (:class:`diffu.nn.unet3d.UNet3D`, the block-for-block 3D analogue) on the volume
itself, as the volume grows: seconds and peak memory of one training step (forward + backward of the ε-loss) and of
one sampling step (one forward pass without gradients). Two ratios per size: 3D over 2D *per volume* (the same
number of voxels, so the cost of the third kernel axis and of the kernels' implementation) and 3D over 2D *per
training sample* (a volume against a slice: what one example costs, the memory that limits a 3D model's batch and
resolution). Writes ``medical_cost.json``.

Peak memory is what the step allocates above what was allocated before it (weights and inputs), gradients of the
weights included:

* on CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the allocation before;
* on the CPU, which keeps no allocator statistics, the allocation and free records of ``torch.profiler`` with
  ``profile_memory=True`` (every tensor storage torch allocates on the CPU, with its size and time), summed in time
  order: the highest running total is the peak (:func:`peak_bytes`; checked against known allocations in
  ``tests/bench/test_medical_cost.py``). Memory outside torch's allocator (oneDNN scratch buffers, Python objects)
  is not counted.

Times are the median of ``repeats`` runs measured without the profiler, after the profiled run, which serves as
their warm-up (the peak of a first run equals that of later ones: measured for both networks at 16³ and 32³).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable

import torch

from ..checks import check_int
from ..nn.unet import UNet, UNetConfig
from ..nn.unet3d import UNet3D, UNet3DConfig
from ..train import seeded
from .common import environment, resolve_device, results_dir, write_json

#: Volume edges of the default run on the CPU (each divisible by 4, for the two halvings of ``(1, 2, 2)``).
CPU_SIZES = (16, 24, 32, 48, 64)
#: Volume edges of the default run on a GPU.
GPU_SIZES = (32, 64, 96, 128, 160)
#: The network of both sides (matched width): no attention but the middle one, as :class:`UNet3DConfig`'s default.
NET = dict(channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(fn: Callable[[], object], device: str | torch.device) -> tuple[object, int]:
    """Run ``fn()`` and return ``(its result, the peak of the bytes it allocated on device)``: the highest number
    of bytes held at once by tensors allocated while ``fn`` ran, above what was held before (so the result's own
    storage counts if it is the largest moment).

    On CUDA this is ``max_memory_allocated − memory_allocated`` around ``fn``; on the CPU, the running sum of the
    allocation (+) and free (−) records of ``torch.profiler`` (``profile_memory=True``) in time order, whose maximum
    is the peak (torch keeps no CPU allocator statistics).

    Args:
        fn: the work to measure, called once with no arguments.
        device: ``"cpu"`` or a CUDA device (others are refused).

    Returns:
        ``(fn(), peak in bytes)``.

    Raises:
        ValueError: a device other than the CPU and CUDA.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        _sync(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        out = fn()
        _sync(dev)
        return out, int(torch.cuda.max_memory_allocated(dev) - base)
    if dev.type != "cpu":
        raise ValueError(f"device must be the CPU or a CUDA device, got {dev}")
    from torch.profiler import ProfilerActivity, profile

    with _quiet_fd(2), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)  # fmt: skip
    held = peak = 0
    for _, nbytes in records:
        held += nbytes
        peak = max(peak, held)
    return out, int(peak)


@contextlib.contextmanager
def _quiet_fd(fd: int):
    """Send the OS-level file descriptor ``fd`` to /dev/null while the block runs: the CPU profiler's C++ side
    prints ``USDT: … profiler_start/stop`` lines to stderr on every start and stop, which Python cannot catch."""
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn`` (the caller has already run it once: warm)."""
    secs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        secs.append(time.perf_counter() - t0)
    return statistics.median(secs)


def bench_medical_cost(
    sizes=CPU_SIZES, *, repeats: int = 3, device=None, net: dict | None = None, progress: bool = True
) -> dict:
    """Seconds and peak memory of a training step and a sampling step of a 2D UNet on the ``S`` slices of an
    ``S³`` volume and on one slice, versus the 3D UNet of the same width on the volume, for each edge ``S`` in
    ``sizes``.

    Args:
        sizes: volume edges (each divisible by ``2^(len(channel_mult) − 1)``).
        repeats: timed runs per measurement (the median is reported), after the run that measures the peak.
        device: where to run (default: the CPU).
        net: the shared network fields (default :data:`NET`).
        progress: print one line per measurement.

    Returns:
        ``{"device", "threads", "net", "repeats", "rows": [...], "ratios": [...]}`` where each row is
        ``{"size", "voxels", "model" ("2d": the S slices, "2d_slice": one slice, "3d": the volume), "batch",
        "params", "train_s", "sample_s", "train_peak_MiB", "sample_peak_MiB"}`` (``"oom": True`` and no numbers
        where CUDA ran out of memory) and each ratio ``{"size", "per_volume": 3d / 2d, "per_sample": 3d / 2d_slice}``
        holds the ratios of those four numbers.
    """
    check_int("repeats", repeats, 1)
    dev = resolve_device(device)
    net = dict(NET if net is None else net)
    rows, ratios = [], []
    for size in sizes:
        g = torch.Generator().manual_seed(size)
        x = torch.randn(1, 1, size, size, size, generator=g).to(dev)  # (1, 1, D, H, W), one volume
        eps = torch.randn(x.shape, generator=g).to(dev)
        t = torch.full((1,), 500.0, device=dev)
        with seeded(0):
            nets = {"2d": UNet(UNetConfig(image_size=size, **net)).to(dev),
                    "3d": UNet3D(UNet3DConfig(volume_size=size, **net)).to(dev)}  # fmt: skip
        slices = (x[0].transpose(0, 1), eps[0].transpose(0, 1), t.expand(size))  # (D, 1, H, W): the D slices
        mid = size // 2
        inputs = {
            "2d": slices,
            "2d_slice": (slices[0][mid : mid + 1], slices[1][mid : mid + 1], t),  # (1, 1, H, W): one slice
            "3d": (x, eps, t),  # (1, 1, D, H, W): the volume
        }
        got = {}
        for name, (xi, ei, ti) in inputs.items():
            model = nets[name[:2]]

            def train_step(model=model, xi=xi, ei=ei, ti=ti):
                model.zero_grad(set_to_none=True)
                loss = (model(xi, ti) - ei).pow(2).mean()  # the ε-loss of DDPM
                loss.backward()
                return loss

            def sample_step(model=model, xi=xi, ti=ti):
                with torch.no_grad():
                    return model(xi, ti)

            row = {"size": size, "voxels": size**3, "model": name, "batch": xi.shape[0],
                   "params": sum(p.numel() for p in model.parameters())}  # fmt: skip
            try:
                # the measured run is also the warm-up of the timed ones (its peak equals a later run's: checked)
                model.zero_grad(set_to_none=True)
                row["train_peak_MiB"] = peak_bytes(train_step, dev)[1] / 2**20
                row["train_s"] = _median_seconds(train_step, repeats, dev)
                model.zero_grad(set_to_none=True)
                row["sample_peak_MiB"] = peak_bytes(sample_step, dev)[1] / 2**20
                row["sample_s"] = _median_seconds(sample_step, repeats, dev)
                model.zero_grad(set_to_none=True)
            except torch.OutOfMemoryError:
                row["oom"] = True
                model.zero_grad(set_to_none=True)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            got[name] = row
            if progress:
                done = "out of memory" if row.get("oom") else (
                    f"train {row['train_s']:8.3f} s {row['train_peak_MiB']:9.1f} MiB   "
                    f"sample {row['sample_s']:8.3f} s {row['sample_peak_MiB']:9.1f} MiB")  # fmt: skip
                print(f"[medical_cost] {size:4d}^3 {name:8s}  {done}", flush=True)
        del nets
        if not any(r.get("oom") for r in got.values()):
            keys = ("train_s", "sample_s", "train_peak_MiB", "sample_peak_MiB")
            a = got["3d"]
            ratios.append({"size": size, "per_volume": {k: a[k] / got["2d"][k] for k in keys},
                           "per_sample": {k: a[k] / got["2d_slice"][k] for k in keys}})  # fmt: skip
    return {"device": str(dev), "threads": torch.get_num_threads(), "net": net, "repeats": repeats, "rows": rows,
            "ratios": ratios}  # fmt: skip


def run_medical_cost(args) -> dict:
    """``python -m diffu.bench medical_cost``: :func:`bench_medical_cost` on ``--device`` (sizes
    :data:`CPU_SIZES`, or :data:`GPU_SIZES` on CUDA, or ``args.sizes`` where the parser has such a flag; tiny:
    one 8³ volume, width 8, one repeat), printed and written to ``--out`` as ``medical_cost.json`` (by default only
    for a full run)."""
    dev = resolve_device(args.device)
    sizes = getattr(args, "sizes", None) or (GPU_SIZES if dev.type == "cuda" else CPU_SIZES)
    if args.tiny:
        res = bench_medical_cost((8,), repeats=1, device=dev, net=dict(NET, channels=8), progress=False)
    else:
        res = bench_medical_cost(tuple(sizes), device=dev)
    cmd = "python -m diffu.bench medical_cost" + (f" --device {args.device}" if args.device else "")
    if getattr(args, "sizes", None) and not args.tiny:
        cmd += " --sizes " + " ".join(str(v) for v in args.sizes)
    res["command"] = cmd + (" --tiny" if args.tiny else "")
    res["environment"] = environment(dev)
    print(f"[medical_cost] {res['device']}, {res['threads']} threads, width {res['net']['channels']}: 3D / 2D")
    for r in res["ratios"]:
        for per in ("per_volume", "per_sample"):
            q = r[per]
            print(f"  {r['size']:4d}^3 {per:10s}  train time x{q['train_s']:6.2f}  memory x{q['train_peak_MiB']:6.2f}"
                  f"   sample time x{q['sample_s']:6.2f}  memory x{q['sample_peak_MiB']:6.2f}")  # fmt: skip
    out = results_dir(args.out, full_run=not args.tiny)
    if out is not None:
        write_json(out / "medical_cost.json", res)
    return res
