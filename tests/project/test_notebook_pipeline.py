"""book/conftest.py: a chapter is tested on the build's executed copy only while that copy is fresh; the root
conftest.py: how the run is spread over the pytest-xdist workers."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _conftest(tmp_path, monkeypatch):
    mod = _load("book_conftest", ROOT / "book" / "conftest.py")
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    monkeypatch.setattr(mod, "EXECUTED", tmp_path / "_build" / "jupyter_execute")
    monkeypatch.setattr(mod, "DEPENDENCIES", [tmp_path / "diffu"])
    monkeypatch.delenv("DIFFU_NOTEBOOKS", raising=False)
    return mod


def _write(path: Path, code: list[str], mtime: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# T")] + [nbformat.v4.new_code_cell(c) for c in code]
    )
    nbformat.write(nb, str(path))
    os.utime(path, (mtime, mtime))


def test_fresh_copy_is_served_and_any_change_makes_it_stale(tmp_path, monkeypatch):
    mod = _conftest(tmp_path, monkeypatch)
    chapter, copy = tmp_path / "book" / "c.ipynb", tmp_path / "_build" / "jupyter_execute" / "book" / "c.ipynb"
    lib = tmp_path / "diffu" / "x.py"
    lib.parent.mkdir(parents=True)
    lib.write_text("A = 1\n")
    os.utime(lib, (1000, 1000))
    _write(chapter, ["x = 1", "assert x == 1"], 900)
    assert mod.executed_copy(chapter) is None  # no build yet
    _write(copy, ["x = 1", "assert x == 1"], 2000)
    assert mod.executed_copy(chapter) == copy
    monkeypatch.setenv("DIFFU_NOTEBOOKS", "execute")
    assert mod.executed_copy(chapter) is None  # forced re-execution
    monkeypatch.delenv("DIFFU_NOTEBOOKS")
    os.utime(lib, (3000, 3000))
    assert mod.executed_copy(chapter) is None  # the library changed after the build
    os.utime(lib, (1000, 1000))
    _write(chapter, ["x = 2", "assert x == 1"], 900)
    assert mod.executed_copy(chapter) is None  # the chapter's code changed


def _root_conftest():
    return _load("root_conftest", ROOT / "conftest.py")


class _Config:
    """The options the scheduler hook and pytest-xdist's file scheduler read."""

    def __init__(self, dist: str):
        self.values = {"dist": dist, "tx": ["2*popen"]}

    def getvalue(self, name):
        return self.values[name]


def test_each_test_file_is_one_work_unit_and_the_shared_files_one_together():
    mod = _root_conftest()
    for file in mod.SHARED:  # a renamed file would silently leave the group
        assert (ROOT / file).is_file(), file
    sched = mod.pytest_xdist_make_scheduler(_Config("loadfile"), None)
    scope = sched._split_scope
    assert scope("labs/source/lab1_ddpm/lab1_ddpm.ipynb::Cell 0") == scope(
        "labs/source/lab1_ddpm/lab1_ddpm.ipynb::Cell 7"
    )
    assert scope("tests/test_gmm.py::test_a[x]") == scope("tests/test_gmm.py::test_b") != scope("tests/test_sde.py::t")
    shared = {scope(f"{file}::test_x") for file in mod.SHARED}
    assert len(shared) == 1 and shared != {scope("tests/labs_attacks/test_labkit.py::test_x")}
    assert mod.pytest_xdist_make_scheduler(_Config("load"), None) is None  # other modes: pytest-xdist's own


def test_workers_share_the_cores(monkeypatch):
    import torch

    from diffu.book import available_cores

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
        _root_conftest().pytest_configure(None)
        assert torch.get_num_threads() == max(1, available_cores() // 2)
    finally:
        torch.set_num_threads(before)
