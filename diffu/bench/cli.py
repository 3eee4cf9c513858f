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

from . import arch, guidance, inverse, notebooks, sampling
from .common import DEFAULT_OUT

#: Every command of ``python -m diffu.bench`` and the function that runs it.
COMMANDS = {
    "speed": sampling.run_speed,
    "notebooks": notebooks.run_notebooks,
    "suite": notebooks.run_suite,
    "fd": sampling.run_fd,
    "nfe": sampling.run_nfe,
    "dit": arch.run_dit,
    "ablation": arch.run_ablation,
    "probe": arch.run_probe,
    "t2i": arch.run_t2i,
    "guidance": guidance.run_guidance,
    "inverse": inverse.run_inverse,
}
#: What ``all`` runs (``notebooks`` and ``suite`` are skipped with ``--tiny``).
ALL = ("speed", "notebooks", "suite")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m diffu.bench``."""
    p = argparse.ArgumentParser(prog="python -m diffu.bench", description="Benchmarks behind the book's numbers.")
    p.add_argument("what", nargs="?", default="all", choices=["all", *COMMANDS], help="the benchmark (default: all)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long configuration (used by the tests)")
    p.add_argument("--out", "--out-dir", dest="out", default=None, metavar="DIR",
                   help=f"where result files go (default: {DEFAULT_OUT}, relative to the working directory; "
                        "--tiny runs write only when --out is given)")  # fmt: skip
    p.add_argument("--device", default=None, help="e.g. cuda (default: cpu)")
    p.add_argument("--n", type=int, default=384, help="fd, nfe, ablation: samples per configuration")
    p.add_argument("--configs", nargs="*", default=None, help="fd: e.g. ddim-50 ddpm-1000")
    p.add_argument("--n-images", type=int, default=64, help="inverse: held-out test images per task")
    p.add_argument("--dps-steps", type=int, default=250, help="inverse: steps of DPS and Blind-DPS (official 1000)")
    p.add_argument("--repaint-steps", type=int, default=100, help="inverse: RePaint levels (official 250)")
    p.add_argument("--methods", nargs="*", default=None, help="inverse: a subset of the methods")
    p.add_argument("--tasks", nargs="*", default=None, help="inverse: a subset of the tasks")
    p.add_argument("--batch", type=int, default=64, help="dit: batch size")
    p.add_argument("--patch", type=int, default=2, help="dit: patch size (28 must be divisible by it)")
    p.add_argument("--n-train", type=int, default=2000, help="probe: training images")
    p.add_argument("--n-test", type=int, default=1000, help="probe: test images")
    p.add_argument("--ts", type=int, nargs="+", default=[0, 50, 200, 500, 900], help="probe: timesteps")
    return p


def main(argv=None) -> dict:
    """Run ``python -m diffu.bench`` with ``argv`` (default ``sys.argv[1:]``); returns ``{command: result}``."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # recorded with the inverse results
    names = [n for n in ALL if not (args.tiny and n in ("notebooks", "suite"))] if args.what == "all" else [args.what]
    return {name: COMMANDS[name](args) for name in names}


if __name__ == "__main__":
    main()
