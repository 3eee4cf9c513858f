"""The book's notebooks as tests, executed once: the book build's execution serves the notebook tests.

README command 1 (``jupyter-book build --all -W .``) executes every chapter and fails on any cell error, the claim-check
asserts included; it writes each executed copy to ``_build/jupyter_execute/book/``. Running the same notebooks again
under nbval (README command 2) would double the CI time for nothing, so a chapter whose executed copy is *fresh* is
tested on that copy instead: one test item, ``<chapter>.ipynb::executed by the book build``, passes when every code cell
of the copy ran and none raised. A copy is fresh when

- its code cells are exactly the chapter's code cells now (an edited chapter is re-executed), and
- it was written after the last change to anything a chapter's execution depends on: the ``diffu`` package, the
  committed results and weights it loads (``diffu/`` and ``book/results/``), ``requirements.txt``.

Any other chapter — no build yet, a stale copy, or ``DIFFU_NOTEBOOKS=execute`` in the environment — runs under nbval
cell by cell as before. The terminal summary says which chapters came from the build. Labs are not in the book build
(their student pages are rendered unexecuted), so their solution sources always run under nbval.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "_build" / "jupyter_execute"
# what a chapter's execution depends on besides its own code cells
DEPENDENCIES = [ROOT / "diffu", ROOT / "book" / "results", ROOT / "requirements.txt"]

#: the name of the one test item that stands for a chapter tested on its executed copy
SERVED = "executed by the book build"


def _newest_mtime(paths) -> float:
    newest = 0.0
    for path in paths:
        if path.is_file():
            newest = max(newest, path.stat().st_mtime)
        elif path.is_dir():
            for p in path.rglob("*"):
                if p.is_file() and "__pycache__" not in p.parts:
                    newest = max(newest, p.stat().st_mtime)
    return newest


def _code(nb) -> list[str]:
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


def executed_copy(notebook: Path, newest: float | None = None) -> Path | None:
    """The build's executed copy of ``notebook`` if it is fresh (see the module docstring), else ``None``.
    ``newest``: the dependencies' newest modification time, when the caller has it already."""
    if os.environ.get("DIFFU_NOTEBOOKS") == "execute":
        return None
    copy = EXECUTED / notebook.resolve().relative_to(ROOT)
    if newest is None:
        newest = _newest_mtime(DEPENDENCIES)
    if not copy.is_file() or copy.stat().st_mtime < newest:
        return None
    try:
        same = _code(nbformat.read(str(copy), as_version=4)) == _code(nbformat.read(str(notebook), as_version=4))
    except Exception:  # an unreadable copy is not a fresh one
        return None
    return copy if same else None


class ExecutedByBuild(pytest.Item):
    """One chapter, tested on the book build's executed copy: every code cell ran, none raised."""

    def __init__(self, *, copy: Path, **kwargs):
        super().__init__(**kwargs)
        self.copy = copy

    def runtest(self):
        nb = nbformat.read(str(self.copy), as_version=4)
        cells = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
        errors = [
            (i, o.get("ename"), o.get("evalue"))
            for i, c in enumerate(cells)
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]
        not_run = [i for i, c in enumerate(cells) if c.get("execution_count") is None]
        if errors or not_run:
            raise AssertionError(f"{self.copy}: errors {errors}, cells not executed {not_run}")

    def repr_failure(self, excinfo):
        return str(excinfo.value)

    def reportinfo(self):
        return self.path, None, f"{self.name} ({self.copy.relative_to(ROOT)})"


def pytest_collection_modifyitems(session, config, items):
    """Replace the nbval cell items of each chapter with a fresh executed copy by one ``ExecutedByBuild`` item."""
    book = Path(__file__).resolve().parent
    keep, removed, done = [], [], {}
    newest = _newest_mtime(DEPENDENCIES)  # one walk of diffu/ for all chapters
    for item in items:
        path = Path(str(item.path)).resolve()
        if path.suffix != ".ipynb" or path.parent != book:
            keep.append(item)
            continue
        if path not in done:
            copy = executed_copy(path, newest)
            done[path] = copy
            if copy is not None:
                # the directory's collector as parent, not nbval's notebook collector, whose setup starts a kernel
                keep.append(
                    ExecutedByBuild.from_parent(item.parent.parent, name=f"{path.name}::{SERVED}", path=path, copy=copy)
                )
        if done[path] is None:
            keep.append(item)
        else:
            removed.append(item)
    if removed:
        config.hook.pytest_deselected(items=removed)
    items[:] = keep


def pytest_terminal_summary(terminalreporter):
    """Say how many chapters came from the build, counted from the test reports: under pytest-xdist the workers
    collect the items and only the reports reach this (the controlling) process."""
    served = {
        r.nodeid
        for key in ("passed", "failed")
        for r in terminalreporter.stats.get(key, [])
        if getattr(r, "when", None) == "call" and SERVED in r.nodeid
    }
    if served:
        terminalreporter.write_line(
            f"book/conftest.py: {len(served)} chapters tested on the book build's executed copies "
            f"(_build/jupyter_execute; DIFFU_NOTEBOOKS=execute re-runs them under nbval)"
        )
