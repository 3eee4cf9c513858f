"""The book's frame: every notebook is in the table of contents, titled, output-free; citations resolve."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for d in ("book", "labs") for p in (ROOT / d).rglob("*.ipynb") if "_build" not in p.parts)


def _cells(p):
    return json.loads(p.read_text())["cells"]


def test_every_notebook_in_toc_titled_and_clean():
    toc = (ROOT / "_toc.yml").read_text()
    for p in NOTEBOOKS:
        rel = p.relative_to(ROOT).with_suffix("").as_posix()
        if rel.startswith("book/"):
            assert f"file: {rel}" in toc, f"{rel} is missing from _toc.yml"
        cells = _cells(p)
        assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# "), p
        assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{p} has outputs"


def test_toc_lists_only_existing_files():
    for f in re.findall(r"file:\s*(\S+)", (ROOT / "_toc.yml").read_text()):
        assert any((ROOT / f).with_suffix(s).exists() for s in (".ipynb", ".md")), f


def test_bibliography_has_all_41_references_and_citations_resolve():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    assert len(keys) == 41
    for p in NOTEBOOKS:
        text = "".join("".join(c["source"]) for c in _cells(p) if c["cell_type"] == "markdown")
        for group in re.findall(r"\{cite[^}]*\}`([^`]+)`", text):
            for key in group.split(","):
                assert key.strip() in keys, f"{p.name} cites unknown key {key}"


def test_every_book_chapter_has_claim_check_widget_and_exercise():
    for p in NOTEBOOKS:
        cells = _cells(p)
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        md = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert re.search(r"^assert ", code, re.M), f"{p.name}: no claim-check assert"
        if p.parts[-2] == "book":
            assert "widgets." in code, f"{p.name}: no widget"
            assert "{exercise}" in md, f"{p.name}: no exercise"
