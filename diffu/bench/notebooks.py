"""The project's time budgets: ``python -m diffu.bench notebooks`` and ``python -m diffu.bench suite``.

- ``notebooks``: seconds to execute each notebook of ``book/`` and ``labs/source/`` (budget: 60 s each);
- ``suite``: seconds for the whole test command (``python -m pytest``; budget: 15 min).

Both read the repository from ``root`` (default: the working directory, i.e. run them from the repository root).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

#: Seconds each notebook may take on the 2-core CPU.
NOTEBOOK_BUDGET_S = 60
#: Seconds the whole test command may take on the 2-core CPU.
SUITE_BUDGET_S = 900


def notebook_paths(root: str | Path = ".") -> list[Path]:
    """Every ``*.ipynb`` under ``root/book`` and ``root/labs/source`` (the labs' solution sources; not the student
    pages of ``labs/student`` nor nbgrader's copies, whose stubs raise), sorted, without built copies (``_build``)."""
    root = Path(root)
    return sorted(p for d in ("book", "labs/source") for p in (root / d).rglob("*.ipynb") if "_build" not in p.parts)


def bench_notebooks(paths=None, timeout=600, root: str | Path = ".") -> dict:
    """``{path relative to root: seconds}`` to execute each notebook (default :func:`notebook_paths`) in a fresh
    ``python3`` kernel, in the notebook's own folder."""
    import nbformat
    from nbclient import NotebookClient

    root = Path(root)
    out = {}
    for p in paths or notebook_paths(root):
        p = Path(p)
        nb = nbformat.read(p, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(p.parent)}}
        ).execute()
        secs = time.perf_counter() - t0
        try:
            out[str(p.resolve().relative_to(root.resolve()))] = secs
        except ValueError:  # a notebook outside root
            out[str(p)] = secs
    return out


def bench_suite(args=(), root: str | Path = ".") -> dict:
    """Seconds, return code and summary line of ``python -m pytest -q *args`` run in ``root``."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=root, capture_output=True, text=True)
    tail = (res.stdout.strip().splitlines() or [""])[-1]
    return {"seconds": time.perf_counter() - t0, "returncode": res.returncode, "summary": tail}


def run_notebooks(args) -> dict:
    """``python -m diffu.bench notebooks``: print :func:`bench_notebooks` against the budget."""
    res = bench_notebooks()
    print(f"[notebooks] seconds to execute (budget {NOTEBOOK_BUDGET_S} s each)")
    for k, v in res.items():
        print(f"  {k:45s} {v:6.1f}" + ("" if v <= NOTEBOOK_BUDGET_S else "  OVER BUDGET"))
    return res


def run_suite(args) -> dict:
    """``python -m diffu.bench suite``: print :func:`bench_suite` against the budget."""
    s = bench_suite()
    print(f"[suite] python -m pytest: {s['seconds']:.0f} s (budget {SUITE_BUDGET_S} s), exit {s['returncode']}: "
          f"{s['summary']}")  # fmt: skip
    return s
