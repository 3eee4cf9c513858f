"""The numbers the chapters' prose quotes agree with their executed outputs (``prose_numbers.py`` says how).

Reads the notebooks the book build executed (``_build/jupyter_execute``, README command 1) and the markdown pages;
skips without a build, fails under DIFFU_BROWSER_TESTS=require (``.ci/run``). The rule's own unit tests need no build.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from tests.project import prose_numbers as P

ROOT = Path(__file__).resolve().parents[2]
EXECUTED = ROOT / "_build" / "jupyter_execute" / "book"
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


def _executed(chapter: Path) -> Path:
    path = EXECUTED / chapter.name
    if not path.is_file():
        reason = f"{path} not found: build the book first (README command 1)"
        if os.environ.get("DIFFU_BROWSER_TESTS") == "require":
            pytest.fail(f"{reason} (DIFFU_BROWSER_TESTS=require)")
        pytest.skip(reason)
    return path


def _report(bad):
    return "\n".join(f"{n}: …{p.replace(chr(10), ' ')[:160]}…" for n, p in bad)


@pytest.mark.built_book
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_prose_quotes_its_outputs(chapter):
    bad = P.unverified(_executed(chapter))
    assert not bad, "numbers in the prose that no output supports (glue them, see CONTRIBUTING):\n" + _report(bad)


# ---------------------------------------------------------------------------------------------------------------
# The rule itself
# ---------------------------------------------------------------------------------------------------------------


def _nb(markdown: str, output: str = "", code: str = "", constants=None, tmp_path=None) -> Path:
    cells = [nbformat.v4.new_markdown_cell(markdown)]
    cell = nbformat.v4.new_code_cell(code)
    if output:
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
    cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    if constants:
        nb.metadata["diffu"] = {"quoted_constants": constants}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_a_number_copied_from_an_output_agrees_when_rounded(tmp_path):
    assert P.unverified(_nb("DPS reaches 15.13 dB.", "psnr 15.1289", tmp_path=tmp_path)) == []


def test_a_drifted_number_is_caught(tmp_path):
    bad = P.unverified(_nb("the margin is about 2.0 dB.", "HIO 15.11 DPS 15.13", tmp_path=tmp_path))
    assert [n for n, _ in bad] == ["2.0"]


def test_a_more_precise_prose_number_does_not_match_a_rounded_output(tmp_path):
    bad = P.unverified(_nb("we measured 0.25 here.", "0.3", tmp_path=tmp_path))
    assert [n for n, _ in bad] == ["0.25"]


def test_code_constants_cited_papers_declared_constants_and_glue_pass(tmp_path):
    md = (
        "With $\\zeta = 0.35$ the step is {glue:text}`psnr:.2f` dB.\n\n"
        "The paper reports FID 3.17 {cite:p}`ho2020`.\n\n"
        "The schedule ends at 0.02 and §2.6.1 says so; version 2.13.0; arXiv:1505.04597."
    )
    path = _nb(md, code="ZETA = 0.35", constants={"0.02": "beta_T of the linear schedule"}, tmp_path=tmp_path)
    assert P.unverified(path) == []


def test_a_citation_covers_its_own_sentence_only(tmp_path):
    md = "DDIM reaches FID 4.67 {cite:p}`song2022ddim`. Our run gives 0.52 at 10 steps, e.g. in the figure."
    assert [n for n, _ in P.unverified(_nb(md, "fd 0.61", tmp_path=tmp_path))] == ["0.52"]


def test_percentages_are_checked(tmp_path):
    assert P.unverified(_nb("accuracy 84 %", "acc 0.8412", tmp_path=tmp_path)) == []
    assert [n for n, _ in P.unverified(_nb("accuracy 91 %", "acc 0.8412", tmp_path=tmp_path))] == ["91"]
