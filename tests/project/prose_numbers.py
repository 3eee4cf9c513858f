"""Numbers quoted in a chapter's prose must come from a computation the reader can see, or be declared constants.

The rule (CONTRIBUTING, "Numbers in the prose"): a number the text quotes from a computation is inserted from it
(myst-nb ``glue``), so text and output cannot drift apart. This module finds the decimal numbers and percentages
written literally in the markdown of an *executed* notebook and accepts each one only if

1. it is one of the notebook's outputs (a stream, a ``text/plain`` or ``text/html`` result, a glued value): the
   prose number agrees with an output number rounded to as many decimals as the prose writes (15.13 matches an
   output 15.1289);
2. it is written in the notebook's code (a hyperparameter the prose repeats: ``ZETA = 0.3``), or in a committed
   results file of ``book/results/`` (``*.json``, ``*.csv``) that the chapter reads;
3. it is a paper's number: the same sentence cites the paper (``{cite}``, ``{cite:p}``, ``{cite:t}``);
4. it is declared in the notebook's metadata, ``metadata["diffu"]["quoted_constants"]``: ``{"0.02": "why"}`` — a
   reviewed list, each with its reason (a schedule endpoint, a textbook constant).

Anything else is reported: either it drifted from the output it once copied, or it was typed by hand from a run
nobody can see. Section numbers (§2.3), equation and figure labels, versions, dates and integers are not checked.

Command line (prints the unverified numbers of each executed notebook, exit status 1 if any)::

    python tests/project/prose_numbers.py _build/jupyter_execute/book/*.ipynb
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "book" / "results"

# a decimal (12.5, 0.02, .5 is not used in the book) or a percentage (12 %, 12.5%); not part of a word, a version
# (2.13.0), a section (§2.6.1) or a label (fig-2.1)
_NUMBER = re.compile(r"(?<![\w.§\-/])(-?\d+\.\d+)(?![\w.]*\d)(?!\.\d)|(?<![\w.§\-/])(\d+(?:\.\d+)?)\s?%")
_NUMBER_ANY = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_CITE = re.compile(r"\{cite(?::\w+)?\}`")
# things that look like numbers and are not quantities: roles' targets, links, labels, code spans, image paths
_STRIP = [
    re.compile(r"\{(?:glue|glue:\w+|ref|numref|eq|doc|download|cite(?::\w+)?)\}`[^`]*`"),
    re.compile(r"`[^`]*`"),  # inline code (a call written as code: its numbers are code)
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"^\s*:(?:label|name|width|height|scale|class):.*$", re.M),
    re.compile(r"^\(.*\)=\s*$", re.M),  # MyST targets
    re.compile(r"<[^>]+>"),  # html tags and their attributes
    re.compile(r"§\s?[\d.]+"),
    re.compile(r"^#+\s*[\d.]+", re.M),  # a numbered heading (## 10.1 Summary)
    re.compile(r"arXiv:\s?\S+", re.I),
]


def _sentences(paragraph: str) -> list[str]:
    """A paragraph cut into sentences (a full stop, ! or ? followed by a space and a capital, an opening mark or
    a list item), keeping decimals and abbreviations such as "et al." whole."""
    return re.split(r"(?<=[.!?])(?<!et al\.)(?<!e\.g\.)(?<!i\.e\.)\s+(?=[A-Z*_(\[`$]|- )", paragraph)


def _markdown_numbers(text: str) -> list[tuple[str, str]]:
    """``[(number, sentence)]`` for every decimal or percentage in a markdown cell's text, except in sentences that
    cite a paper (rule 3: the paper's own numbers)."""
    found = []
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # fenced code and directives' bodies that are code
    for para in re.split(r"\n\s*\n", text):
        for sentence in _sentences(para):
            if _CITE.search(sentence):
                continue
            clean = sentence
            for pattern in _STRIP:
                clean = pattern.sub(" ", clean)
            for m in _NUMBER.finditer(clean):
                found.append((m.group(1) or m.group(2), sentence.strip()))
    return found


def _output_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            data = out.get("data", {})
            for mime in ("text/plain", "text/html", "text/markdown", "text/latex"):
                if mime in data:
                    value = data[mime]
                    parts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


def _results_text(code: str | None = None) -> str:
    """The committed results files (all of them, or those whose name the ``code`` mentions)."""
    if not RESULTS.is_dir():
        return ""
    files = [p for p in sorted(RESULTS.iterdir()) if p.suffix in {".json", ".csv"}]
    return "\n".join(p.read_text() for p in files if code is None or p.name in code or p.stem in code)


def _agrees(number: str, haystack_values: list[tuple[str, float]]) -> bool:
    """Does the prose ``number`` (its written decimals) equal some value of the haystack rounded to as many?"""
    decimals = len(number.split(".")[1]) if "." in number else 0
    p = float(number)
    half = 0.5 * 10.0**-decimals + 1e-12
    for text, v in haystack_values:
        if text == number:
            return True
        if math.isfinite(v) and abs(v - p) <= half:
            # 0.3 in the prose must not match 0.25 of an output by rounding both ways: the output is the more
            # precise one, so it rounds to the prose, never the other way round
            out_decimals = len(text.split(".")[1].split("e")[0].split("E")[0]) if "." in text else 0
            if out_decimals >= decimals or "e" in text.lower():
                return True
        if math.isfinite(v) and decimals == 0 and "%" not in text and abs(100 * v - p) <= 0.5 and abs(v) < 1:
            return True  # a fraction printed as 0.123 quoted as 12 %
    return False


def _values(text: str) -> list[tuple[str, float]]:
    values = []
    for m in _NUMBER_ANY.finditer(text):
        s = m.group(0)
        try:
            values.append((s, float(s)))
        except ValueError:
            pass
    return values


def outputs_of(paths) -> str:
    """The output text of executed notebooks and every committed results file (what a summary page may quote)."""
    return "\n".join(_output_text(nbformat.read(str(p), as_version=4)) for p in paths) + "\n" + _results_text()


def unverified(path: str | Path, *, extra_sources: str = "") -> list[tuple[str, str]]:
    """The prose numbers of the executed notebook (or MyST markdown page) at ``path`` that no output, code, results
    file, citation or declared constant supports: ``[(number, paragraph)]``. ``extra_sources``: more output text
    to accept numbers from (for a page that quotes other chapters, :func:`outputs_of` them)."""
    path = Path(path)
    if path.suffix == ".md":  # a markdown page: one markdown cell, constants in its front matter's diffu key
        text = path.read_text()
        meta = {}
        if text.startswith("---\n"):
            import yaml

            head, _, text = text[4:].partition("\n---\n")
            meta = yaml.safe_load(head) or {}
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)], metadata=meta)
    else:
        nb = nbformat.read(str(path), as_version=4)
    constants = nb.metadata.get("diffu", {}).get("quoted_constants", {})
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    outputs = _values(_output_text(nb) + "\n" + _results_text(code) + "\n" + extra_sources)
    code_values = _values(code)
    bad = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for number, para in _markdown_numbers(cell.source):
            plain = number.rstrip("%").strip()
            if plain in constants or number in constants:
                continue
            if any(text == plain for text, _ in code_values):
                continue
            if _agrees(plain, outputs):
                continue
            bad.append((number, para))
    return bad


def main(argv: list[str]) -> int:
    status = 0
    for path in argv:
        bad = unverified(path)
        print(f"{Path(path).name}: {len(bad)} unverified")
        for number, para in bad:
            status = 1
            snippet = para.replace("\n", " ")
            i = snippet.find(number)
            print(f"  {number:>8}  …{snippet[max(0, i - 70) : i + 50]}…")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
