"""What every benchmark shares: where results go, timing, the machine a number was measured on, writing JSON.

Results are written to a directory given on the command line (``--out DIR``), by default :data:`DEFAULT_OUT`,
``book/results`` *relative to the working directory* (run the commands from the repository root, as the README
does). A run in a tiny or non-default configuration writes nothing unless ``--out`` is given, so the test suite
can never overwrite the committed results (:func:`results_dir`). Class-balanced sampling batches are library
code: :func:`diffu.guidance.class_batches` and :func:`diffu.guidance.balanced_labels`.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

#: The default results directory of ``python -m diffu.bench``: ``book/results``, relative to the working directory.
DEFAULT_OUT = Path("book") / "results"


def results_dir(out: str | Path | None, *, full_run: bool) -> Path | None:
    """The directory a command writes to: ``out`` when it was given (``--out DIR``); otherwise :data:`DEFAULT_OUT`
    for a full run (the configuration behind the committed numbers) and ``None`` (write nothing) for a tiny or
    partial one."""
    if out is not None:
        return Path(out)
    return DEFAULT_OUT if full_run else None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``torch.device(device)``, the CPU when ``None`` (the benchmarks' numbers are CPU numbers unless told)."""
    return torch.device(device) if device is not None else torch.device("cpu")


def timed(fn: Callable, repeats: int = 1) -> tuple[float, object]:
    """``(best wall-clock seconds over repeats, the last result)`` of ``fn()``."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def finite_mean(values) -> float:
    """The mean of the non-NaN entries of ``values`` (a diverged run stores NaN); NaN when none is left.

    The benchmarks' summary lines print it; the stored JSON keeps every value, NaN included."""
    v = [float(a) for a in values]
    v = [a for a in v if a == a]
    return sum(v) / len(v) if v else math.nan


def environment(device: str | torch.device | None = None) -> dict:
    """``{"torch": version, "machine": "<arch>[, <device>], <n> threads"}``: stored with every result file."""
    dev = "" if device is None else f", {device}"
    return {"torch": torch.__version__, "machine": f"{platform.machine()}{dev}, {torch.get_num_threads()} threads"}


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON (with a final newline) to ``path``, creating its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path
