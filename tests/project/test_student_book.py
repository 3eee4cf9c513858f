"""The student-facing book shows the labs' student versions, never a solution or a hidden test.

- The book's "Labs" pages are ``labs/student/<lab>.ipynb``, the nbgrader release of every source (``python
  labs/pages.py student``), up to date with the sources, rendered without being executed; the solution sources
  (``labs/source``) are out of ``_toc.yml`` and in ``exclude_patterns``.
- The built site (``_build/html``, from README command 1 — this test does not build it) contains no line of any
  solution or hidden test of any source and no ``BEGIN/END SOLUTION`` or ``BEGIN/END HIDDEN TESTS`` marker, in any
  page, notebook download or text file; every lab has its student page, with the stubs.

The forbidden lines are read from the sources, so new labs are covered as they are added. Lines that the book
publishes anyway are allowed: the public text of the sources (instructions, visible tests), ``diffu``'s own code
(the API pages show it) and the chapters. The built-site tests (marker ``built_book``) skip without
``_build/html``; ``.ci/run`` sets DIFFU_BROWSER_TESTS=require, which turns that skip into a failure."""

import functools
import html
import importlib.util
import json
import os
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LABS = ROOT / "labs"
HTML = ROOT / "_build" / "html"
NAMES = sorted(p.name for p in (LABS / "source").iterdir() if (p / f"{p.name}.ipynb").is_file())
SOURCES = {lab: LABS / "source" / lab / f"{lab}.ipynb" for lab in NAMES}
# a block between "### BEGIN SOLUTION" / "### END SOLUTION" or "### BEGIN HIDDEN TESTS" / "### END HIDDEN TESTS"
BLOCK = re.compile(r"^[ \t]*#+ *BEGIN (SOLUTION|HIDDEN TESTS)[ \t]*$(.*?)^[ \t]*#+ *END \1[ \t]*$", re.M | re.S)
# a marker as a line of its own (code); prose that names a marker inside a sentence is not a leak
MARKER = re.compile(r"^#+ ?(BEGIN|END) (SOLUTION|HIDDEN TESTS)$")
SUBSTRING_MIN = 30  # secret lines this long are also searched inside longer lines (JSON strings, wrapped text)
TEXT_SUFFIXES = {".html", ".ipynb", ".txt", ".md", ".py", ".json"}


def _pages_module():
    spec = importlib.util.spec_from_file_location("labs_pages", LABS / "pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _norm(line):
    return " ".join(line.split())


def _cell_sources(path):
    return ["".join(c["source"]) for c in json.loads(Path(path).read_text())["cells"]]


@functools.cache
def _published_text():
    """What the student-facing book shows on purpose, one normalised line each: the public text of the sources
    (outside the solution and hidden-test blocks: instructions, visible tests), diffu's code, the chapters."""
    lines = []
    for src in SOURCES.values():
        for text in _cell_sources(src):
            lines += BLOCK.sub("", text).splitlines()
    for p in (ROOT / "diffu").rglob("*.py"):
        lines += p.read_text().splitlines()
    for p in (ROOT / "book").rglob("*.ipynb"):
        if "_build" not in p.parts:
            for text in _cell_sources(p):
                lines += text.splitlines()
    return "\n".join(map(_norm, lines))


@functools.cache
def _secrets():
    """{normalised line: (lab, "SOLUTION" or "HIDDEN TESTS")} for every line of every block of every source that the
    book does not show on purpose (not even inside a line, as instructions quote code)."""
    found = {}
    published = _published_text()
    for lab, src in SOURCES.items():
        for text in _cell_sources(src):
            for kind, body in BLOCK.findall(text):
                for line in body.splitlines():
                    if (key := _norm(line)) and key not in published:
                        found.setdefault(key, (lab, kind))
    return found


def _text_lines(path):
    """The text a reader (or a download) gets from a built file: an HTML page without its tags, entities decoded;
    a notebook's cell sources and text outputs; other text files as they are."""
    raw = path.read_text(errors="replace")
    if path.suffix == ".html":
        raw = html.unescape(re.sub(r"<[^>]*>", "", re.sub(r"<(script|style)\b.*?</\1>", "", raw, flags=re.S | re.I)))
    elif path.suffix == ".ipynb":
        try:
            cells = json.loads(raw)["cells"]
        except (ValueError, KeyError, TypeError):
            return raw.splitlines()
        parts = []
        for c in cells:
            parts.append("".join(c.get("source", "")))
            for o in c.get("outputs", []):
                parts.append("".join(o.get("text", "")))
                parts.append("".join(o.get("data", {}).get("text/plain", "")))
        raw = "\n".join(parts)
    return raw.splitlines()


def _leaks(lines):
    """What of the sources' secrets a text shows: [(lab, kind, line)], markers as ("-", "marker", line)."""
    secrets = _secrets()
    long_secrets = [s for s in secrets if len(s) >= SUBSTRING_MIN]
    found = []
    for line in map(_norm, lines):
        if not line:
            continue
        if MARKER.match(line):
            found.append(("-", "marker", line))
        elif line in secrets:
            found.append((*secrets[line], line))
        elif len(line) > SUBSTRING_MIN:
            found += [(*secrets[s], s) for s in long_secrets if s in line]
    return found


# ---------------------------------------------------------------------------------------------------------------
# The configuration and the committed student pages (no build needed)
# ---------------------------------------------------------------------------------------------------------------


def test_the_secrets_are_read_from_every_source_and_the_scan_finds_them():
    """Every lab has solution and hidden-test lines to look for, and the scan finds them in the source itself."""
    per_lab = {lab: {kind for lab_, kind in _secrets().values() if lab_ == lab} for lab in NAMES}
    assert all(kinds == {"SOLUTION", "HIDDEN TESTS"} for kinds in per_lab.values()), per_lab
    for lab, src in SOURCES.items():
        kinds = {kind for _, kind, _ in _leaks(_text_lines(src))}
        assert kinds == {"marker", "SOLUTION", "HIDDEN TESTS"}, (lab, kinds)


def test_student_pages_are_the_release_of_the_sources():
    """labs/student/<lab>.ipynb is what ``python labs/pages.py student`` writes now (nbgrader releases the current
    sources in a temporary copy of the course): nothing stale, missing or left over; and it shows no secret."""
    pages = _pages_module()
    fresh = pages.student_pages()
    assert sorted(fresh) == NAMES
    stale = pages.stale_pages(fresh)
    assert not stale, f"stale student pages {stale}: run  python labs/pages.py student"
    for lab in NAMES:
        text = (LABS / "student" / f"{lab}.ipynb").read_text()
        assert "NotImplementedError" in text, lab
        assert not _leaks(_text_lines(LABS / "student" / f"{lab}.ipynb")), lab


def test_book_config_shows_student_pages_unexecuted_and_no_sources():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    files = re.findall(r"file:\s*(\S+)", (ROOT / "_toc.yml").read_text()) + [toc["root"]]
    assert not [f for f in files if f.startswith("labs/source")], "solution sources in _toc.yml"
    assert all(f"labs/student/{lab}" in files for lab in NAMES), files
    assert "labs/source" in config["exclude_patterns"], "labs/source must stay in _config.yml's exclude_patterns"
    no_exec = config["execute"].get("exclude_patterns", [])

    def executed(path):  # as myst-nb decides (myst_nb.core.execute.create_client)
        return not any(PurePosixPath(path.as_posix()).match(p) for p in no_exec)

    assert not [lab for lab in NAMES if executed(LABS / "student" / f"{lab}.ipynb")], no_exec
    chapters = [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").is_file() and f.startswith("book/")]
    assert chapters and all(map(executed, chapters)), "a chapter is excluded from execution"


# ---------------------------------------------------------------------------------------------------------------
# The built site
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").is_file():
        reason = f"{HTML / 'index.html'} not found: build the book first (README command 1)"
        if os.environ.get("DIFFU_BROWSER_TESTS") == "require":
            pytest.fail(f"{reason} (DIFFU_BROWSER_TESTS=require)")
        pytest.skip(reason)
    return HTML


@pytest.mark.built_book
def test_built_book_has_every_student_page(site):
    for lab, src in SOURCES.items():
        page = site / "labs" / "student" / f"{lab}.html"
        assert page.is_file(), f"no student page {page.relative_to(site)}"
        text = "\n".join(_text_lines(page))
        title = _cell_sources(src)[0].splitlines()[0].lstrip("# ").strip()
        assert title in text and "NotImplementedError" in text, f"{page.relative_to(site)}: not {lab}'s student page"
        assert (site / "_sources" / "labs" / "student" / f"{lab}.ipynb").is_file(), f"{lab}: no notebook download"


@pytest.mark.built_book
def test_built_book_shows_no_solution_and_no_hidden_test(site):
    old = site / "labs" / "source"
    assert not old.exists(), f"{old} is left from an older build: jupyter-book clean . and build again"
    files = [p for p in site.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    assert len(files) > 40 and any(p.suffix == ".ipynb" for p in files), len(files)
    leaks = {}
    for p in files:
        if found := _leaks(_text_lines(p)):
            leaks[str(p.relative_to(site))] = found[:5] + ([f"… {len(found) - 5} more"] if len(found) > 5 else [])
    assert not leaks, json.dumps(leaks, indent=1, ensure_ascii=False)
