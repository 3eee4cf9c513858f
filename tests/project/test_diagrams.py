"""The conceptual diagrams of the book (``book/figures/diagrams.py``): re-running the script reproduces every
committed SVG byte for byte, and every diagram has a chapter (referenced in a notebook's markdown, or listed in the
script's ``PLACEMENT`` for the lead to insert)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "book" / "figures"
SCRIPT = FIGURES / "diagrams.py"


def _diagrams():
    spec = importlib.util.spec_from_file_location("book_figures_diagrams", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Every diagram, drawn anew into a temporary folder."""
    out = tmp_path_factory.mktemp("diagrams")
    res = _run("--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_rerun_reproduces_every_committed_svg(fresh):
    drawn = sorted(p.name for p in fresh.glob("*.svg"))
    committed = sorted(p.name for p in FIGURES.glob("*.svg"))
    assert drawn == sorted(_diagrams().DIAGRAMS), "the script writes exactly its registered diagrams"
    assert committed == drawn, "book/figures holds exactly the diagrams the script draws (no missing or stale SVG)"
    stale = [n for n in drawn if (FIGURES / n).read_bytes() != (fresh / n).read_bytes()]
    assert not stale, f"{stale} differ from a fresh drawing: run `python book/figures/diagrams.py` and commit them"


def test_svgs_are_deterministic_and_fixed_size(fresh):
    for p in fresh.glob("*.svg"):
        head = p.read_text()[:2000]
        assert "<dc:date>" not in head, f"{p.name} carries a date"
        w = re.search(r'width="([\d.]+)pt"', head)
        assert w and float(w.group(1)) == 8 * 72, f"{p.name}: every diagram is 8 in (576 pt) wide, got {w}"


def _markdown(nb: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "markdown")


def test_every_diagram_belongs_to_a_chapter():
    d = _diagrams()
    texts = {nb.relative_to(ROOT).as_posix(): _markdown(nb) for nb in (ROOT / "book").glob("*.ipynb")}
    for name in d.DIAGRAMS:
        referenced = any(f"figures/{name}" in md for md in texts.values())
        assert referenced or name in d.PLACEMENT, f"{name} is referenced by no chapter and not in PLACEMENT"
    for name, chapter in d.PLACEMENT.items():
        assert name in d.DIAGRAMS, f"PLACEMENT names {name}, which the script does not draw"
        assert (FIGURES / name).is_file(), f"PLACEMENT names {name}, which is not in book/figures"
        assert chapter in texts, f"PLACEMENT puts {name} in {chapter}, which is not a chapter notebook of book/"


def test_names_select_diagrams_and_unknown_names_fail(tmp_path):
    res = _run("unet", "cfg_extrapolation.svg", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg_extrapolation.svg", "unet.svg"]
    res = _run("no_such_diagram", "--out", str(tmp_path / "bad"))
    assert res.returncode == 2 and "unknown diagrams" in res.stderr
    assert not (tmp_path / "bad").exists()
