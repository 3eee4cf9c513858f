"""The book's frame: every notebook is in the table of contents, titled, output-free; citations resolve; chapters
have claim-checks, widgets and exercises, labs are nbgrader assignments."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# labs: the solution sources only (release/, submitted/, autograded/ hold nbgrader's generated copies)
NOTEBOOKS = sorted(
    p
    for d in ("book", "labs/source")
    for p in (ROOT / d).rglob("*.ipynb")
    if "_build" not in p.parts and ".ipynb_checkpoints" not in p.parts
)


def _cells(p):
    return json.loads(p.read_text())["cells"]


def test_every_notebook_in_toc_titled_and_clean():
    """Chapters are in the table of contents; a lab is there by its student page (labs/student/<lab>), never by its
    solution source (tests/project/test_student_book.py checks the student pages)."""
    toc = (ROOT / "_toc.yml").read_text()
    for p in NOTEBOOKS:
        rel = p.relative_to(ROOT).with_suffix("").as_posix()
        if p.is_relative_to(ROOT / "labs" / "source"):
            assert f"file: {rel}" not in toc, f"{rel} is a solution source: the book lists labs/student/{p.stem}"
            rel = f"labs/student/{p.stem}"
        assert f"file: {rel}" in toc, f"{rel} is missing from _toc.yml"
        cells = _cells(p)
        assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# "), p
        assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{p} has outputs"


def test_setup_cell_uses_diffu_book_and_is_collapsed():
    """The second cell sets the notebook up with one ``diffu.book.setup`` call (device, FAST, seed, generator factory,
    threads) and is collapsed (``hide-input``) in the rendered book; no notebook repeats that boilerplate by hand."""
    for p in NOTEBOOKS:
        cells = _cells(p)
        setup = cells[1]
        assert setup["cell_type"] == "code", f"{p.name}: the second cell is not the setup cell"
        assert "hide-input" in setup["metadata"].get("tags", []), f"{p.name}: the setup cell is not collapsed"
        src = "".join(setup["source"])
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        if re.search(r"\b(DEVICE|FAST|SEED)\b", code):
            assert re.search(r"^DEVICE\b.*= (diffu\.book\.)?setup\(", src, re.M), f"{p.name}: no setup() call"
        for boilerplate in ("diffu.device()", "set_num_threads(", "SEED = "):
            assert boilerplate not in code, f"{p.name}: {boilerplate} (use diffu.book.setup)"
        helpers = re.findall(r"^def (gen|rng|uncond|unconditional)\(", code, re.M)
        assert not helpers, f"{p.name}: defines {helpers} (use diffu.book: setup's gen, null_labels, Unconditional)"


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
        if p.parts[-2] != "book":
            continue
        cells = _cells(p)
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        md = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert re.search(r"^assert ", code, re.M), f"{p.name}: no claim-check assert"
        assert "widgets." in code, f"{p.name}: no widget"
        assert "{exercise}" in md, f"{p.name}: no exercise"


def test_every_chapter_states_objectives_prerequisites_notation_and_a_summary():
    """The teaching frame of each chapter and appendix: an "In this chapter" (or "In this appendix", or the
    introduction's "How to read this book") box right after the setup cell with objectives and prerequisites, a link
    to the notation page, and a Summary section. The conclusion is a summary itself."""
    for p in NOTEBOOKS:
        if p.parts[-2] != "book" or p.stem == "10_conclusion":
            continue
        cells = _cells(p)
        md = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
        box = next(
            (m for m in md if re.search(r"\{admonition\} (In this (chapter|appendix)|How to read this book)", m)), ""
        )
        assert box, f"{p.name}: no objectives box"
        assert re.search(r"(learn|objective|teaches you)", box, re.I) and "Prerequisite" in box, (
            f"{p.name}: objectives box incomplete"
        )
        assert "notation.md" in box, f"{p.name}: the objectives box does not link the notation page"
        assert any(re.search(r"^##+ .*Summary", m, re.M) for m in md), f"{p.name}: no Summary section"


def test_every_exercise_has_a_hint_and_a_solution():
    """Every {exercise} of a chapter is labelled, followed by a collapsed {hint} and its collapsed {solution}; code that
    belongs to a solution (the code cells right after it) runs, collapsed (tag hide-input)."""
    for p in NOTEBOOKS:
        if p.parts[-2] != "book":
            continue
        cells = _cells(p)
        md = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        fenced = re.findall(r"^(`{3,})\{(exercise|hint|solution)\}([^\n]*)\n(.*?)^\1[ \t]*$", md, re.M | re.S)
        blocks = [(k, a.strip(), b) for _, k, a, b in fenced]
        for at, (kind, title, body) in enumerate(blocks):
            if kind != "exercise":
                continue
            label = re.search(r"^:label: ([\w-]+)", body, re.M)
            assert label, f"{p.name}: an exercise without :label: ({title})"
            label = label.group(1)
            found = [i for i, (k, a, _) in enumerate(blocks) if k == "solution" and a == label]
            assert found, f"{p.name}: exercise {label} has no solution"
            hints = [i for i in range(at + 1, found[0]) if blocks[i][0] == "hint"]
            assert hints, f"{p.name}: exercise {label} has no hint between it and its solution"
            for i in (hints[0], found[0]):
                assert re.search(r"^:class:.*\bdropdown\b", blocks[i][2], re.M), f"{p.name}: {label} not collapsed"
        for i, c in enumerate(cells[:-1]):
            if c["cell_type"] == "markdown" and "{solution}" in "".join(c["source"]):
                nxt = cells[i + 1]
                if nxt["cell_type"] == "code" and "solution" in nxt["metadata"].get("tags", []):
                    assert "hide-input" in nxt["metadata"]["tags"], f"{p.name}: a solution's code is not collapsed"


def test_every_lab_is_an_nbgrader_assignment():
    """Solution cells (collapsed in the instructor's book) and graded test cells with points and asserts, some of them
    hidden."""
    labs = [p for p in NOTEBOOKS if p.parts[-3] == "source"]
    assert len(labs) >= 4
    for p in labs:
        assert p.stem == p.parent.name, f"{p}: nbgrader expects source/<lab>/<lab>.ipynb"
        cells = [c for c in _cells(p) if c["cell_type"] == "code"]
        meta = [c["metadata"].get("nbgrader", {}) for c in cells]
        solutions = [c for c, m in zip(cells, meta) if m.get("solution")]
        tests = [c for c, m in zip(cells, meta) if m.get("grade")]
        assert solutions and tests, f"{p.name}: needs solution cells and graded test cells"
        for c in solutions:
            src = "".join(c["source"])
            assert "### BEGIN SOLUTION" in src and "### END SOLUTION" in src, f"{p.name}: {c['id']}"
            assert "hide-input" in c["metadata"].get("tags", []), f"{p.name}: {c['id']} not collapsed"
        # at least one written answer graded by hand: a markdown solution cell with points, its model answer and
        # rubric inside the solution block (the release replaces it by "YOUR ANSWER HERE")
        markdown = [c for c in _cells(p) if c["cell_type"] == "markdown"]
        written = [c for c in markdown if c["metadata"].get("nbgrader", {}).get("grade")]
        assert written, f"{p.name}: no written question graded by hand"
        for c in written:
            m, src = c["metadata"]["nbgrader"], "".join(c["source"])
            assert m.get("solution") and not m.get("locked") and m["points"] > 0, f"{p.name}: {c['id']}"
            assert re.search(r"### BEGIN SOLUTION.*\*\*Rubric.*### END SOLUTION", src, re.S), f"{p.name}: {c['id']}"
        for c, m in zip(cells, meta):
            if m.get("grade"):
                src = "".join(c["source"])
                assert m["points"] > 0 and m["locked"], f"{p.name}: {c['id']}"
                # a locked check loads labkit anew, checks with it (or asserts) and ends by printing that it passed
                assert f'labkit.fresh("{p.stem}")' in src, f"{p.name}: {c['id']} does not load labkit.fresh"
                checks = re.search(r"^assert |\blk\.(close|equal|check|near|shape)\(", src, re.M)
                assert checks, f"{p.name}: {c['id']} asserts nothing"
                assert src.rstrip().endswith(f'lk.done("{m["grade_id"]}")'), f"{p.name}: {c['id']} lacks lk.done"
        assert any("### BEGIN HIDDEN TESTS" in "".join(c["source"]) for c in tests), f"{p.name}: no hidden tests"


def test_every_reference_is_cited_and_md_citations_resolve():
    """All 41 references are cited somewhere in the book (chapters, the conclusion, appendix A.1), and every
    {cite} in a markdown page names a key of references.bib."""
    keys = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text()))
    texts = ["".join("".join(c["source"]) for c in _cells(p) if c["cell_type"] == "markdown") for p in NOTEBOOKS]
    texts += [p.read_text() for d in ("book", "labs") for p in (ROOT / d).rglob("*.md") if "_build" not in p.parts]
    cited = set()
    for text in texts:
        for group in re.findall(r"\{cite[^}]*\}`([^`]+)`", text):
            cited |= {k.strip() for k in group.split(",")}
    assert cited <= keys, f"unknown keys: {sorted(cited - keys)}"
    assert keys <= cited, f"never cited: {sorted(keys - cited)}"
