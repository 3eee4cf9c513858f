"""The command line of the benchmarks: ``python -m diffu.bench [COMMAND] [options]``.

Each command is a ``run_<command>(args)`` function of its chapter's module (:data:`COMMANDS`); it runs the
benchmark, prints a table and writes its result files to ``--out`` (default ``book/results`` relative to the
working directory, see :func:`diffu.bench.common.results_dir`). ``all`` (the default) runs ``speed``, ``notebooks``
and ``suite``; with ``--tiny`` the two slow ones are skipped. To add a benchmark: write ``bench_<name>`` and
``run_<name>`` in the module of its chapter, add any new flag to :func:`build_parser` and the command to
:data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import (
    arch,
    distill,
    guidance,
    inverse,
    medical,
    medical_anomaly,
    medical_cost,
    medical_memorisation,
    medical_translation,
    medical_volume,
    notebooks,
    sampling,
    segmentation,
)
from .common import DEFAULT_OUT

#: Every command of ``python -m diffu.bench`` and the function that runs it.
COMMANDS = {
    "speed": sampling.run_speed,
    "notebooks": notebooks.run_notebooks,
    "suite": notebooks.run_suite,
    "threads": notebooks.run_threads,
    "fd": sampling.run_fd,
    "nfe": sampling.run_nfe,
    "dit": arch.run_dit,
    "ablation": arch.run_ablation,
    "probe": arch.run_probe,
    "t2i": arch.run_t2i,
    "guidance": guidance.run_guidance,
    "inverse": inverse.run_inverse,
    "medical": medical.run_medical,
    "medical_cost": medical_cost.run_medical_cost,
    "medical_anomaly": medical_anomaly.run_medical_anomaly,
    "medical_volume": medical_volume.run_medical_volume,
    "medical_memorisation": medical_memorisation.run_medical_memorisation,
    "medical_translation": medical_translation.run_medical_translation,
    "segmentation": segmentation.run_segmentation,
    "distill": distill.run_distill,
}
#: What ``all`` runs (``notebooks`` and ``suite`` are skipped with ``--tiny``).
ALL = ("speed", "notebooks", "suite")


def _int_at_least(low: int):
    """An argparse ``type``: an integer >= ``low`` (argparse names the option in its usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    return parse


def _patch(text: str) -> int:
    """An argparse ``type`` for ``--patch``: a patch size that divides the 28-pixel Fashion-MNIST images."""
    value = _int_at_least(1)(text)
    if 28 % value:
        raise argparse.ArgumentTypeError(f"must divide the image size 28 (1, 2, 4, 7, 14 or 28), got {text!r}")
    return value


def _device(text: str) -> str:
    """An argparse ``type`` for ``--device``: a device torch knows and this machine has (kept as the string)."""
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"must name a torch device such as cpu, cuda or cuda:1, got {text!r}"
        ) from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(dev.type, True):
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no {dev.type.upper()} device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m diffu.bench``. Counts, ``--patch`` and ``--device`` are checked while
    parsing, so a bad value is a usage error naming its option (exit status 2), not an error deep inside torch."""
    p = argparse.ArgumentParser(prog="python -m diffu.bench", description="Benchmarks behind the book's numbers.")
    p.add_argument("what", nargs="?", default="all", choices=["all", *COMMANDS], help="the benchmark (default: all)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long configuration (used by the tests)")
    p.add_argument("--out", "--out-dir", dest="out", default=None, metavar="DIR",
                   help=f"where result files go (default: {DEFAULT_OUT}, relative to the working directory; "
                        "--tiny runs write only when --out is given)")  # fmt: skip
    p.add_argument("--device", type=_device, default=None, help="e.g. cuda (default: cpu)")
    p.add_argument("--n", type=_int_at_least(1), default=384,
                   help="fd, nfe, ablation, distill: samples per configuration")  # fmt: skip
    p.add_argument("--configs", nargs="*", default=None, help="fd: e.g. ddim-50 ddpm-1000")
    p.add_argument(
        "--n-images",
        type=_int_at_least(1),
        default=64,
        help="inverse, medical, segmentation: held-out test images per task (dataset)",
    )
    p.add_argument(
        "--dps-steps",
        type=_int_at_least(1),
        default=250,
        help="inverse, medical: steps of DPS and Blind-DPS (official 1000)",
    )
    p.add_argument("--repaint-steps", type=_int_at_least(1), default=100, help="inverse: RePaint levels (official 250)")
    p.add_argument("--methods", nargs="*", default=None, help="inverse, medical: a subset of the methods")
    p.add_argument("--tasks", nargs="*", default=None, help="inverse, medical: a subset of the tasks")
    p.add_argument("--batch", type=_int_at_least(1), default=64, help="dit: batch size")
    p.add_argument("--patch", type=_patch, default=2, help="dit: patch size (28 must be divisible by it)")
    p.add_argument("--n-train", type=_int_at_least(1), default=2000, help="probe: training images")
    p.add_argument("--n-test", type=_int_at_least(1), default=1000, help="probe: test images")
    p.add_argument("--sizes", type=_int_at_least(4), nargs="+", default=None,
                   help="medical_cost: volume edges (default 16 … 64 on CPU, 32 … 160 on CUDA)")  # fmt: skip
    p.add_argument("--ts", type=_int_at_least(0), nargs="+", default=[0, 50, 200, 500, 900], help="probe: timesteps")
    return p


def main(argv=None) -> dict:
    """Run ``python -m diffu.bench`` with ``argv`` (default ``sys.argv[1:]``); returns ``{command: result}``."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # recorded with the inverse results
    names = [n for n in ALL if not (args.tiny and n in ("notebooks", "suite"))] if args.what == "all" else [args.what]
    return {name: COMMANDS[name](args) for name in names}


if __name__ == "__main__":
    main()
