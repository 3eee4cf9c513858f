"""The labs in the book: the student versions the book shows, and the instructor's copy with the solutions.

    python labs/pages.py student      # labs/student/LAB.ipynb ← the release of labs/source/LAB/LAB.ipynb
    python labs/pages.py check        # exit 1, naming them, if student pages differ from what `student` writes
    python labs/pages.py instructor   # the instructor's book: the solution sources, executed → _build/instructor/

``student`` releases every lab with ``grade.py release`` in a temporary copy of this course folder (so the
gradebook and ``release/`` here are untouched) and writes each student version to ``student/LAB.ipynb``: the exact
nbgrader release (stubs that raise ``NotImplementedError``, hidden tests removed, nbgrader metadata and checksums
kept, so a page downloaded from the book is a valid submission), except that the solution cells lose their
``hide-input`` tag — in the sources it collapses the solutions in the instructor's book, in the student's page the
stub is the task. The pages are committed; ``tests/project/test_student_book.py`` fails when they are stale. The
book renders them without executing them (``execute: exclude_patterns`` in ``_config.yml``: their stubs raise).

``instructor`` builds the labs' solution sources with their hidden tests — executed, like every page of the book —
into ``_build/instructor/_build/html``, from ``_config.yml`` minus the exclusions that keep the solutions out of
the student-facing book, and a table of contents of ``instructor.md``, every lab's source and the bibliography.
Keep that site to the course staff.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STUDENT = HERE / "student"
#: what nbgrader and this script write into the course folder; not copied into the temporary course
COURSE_STATE = ["release", "submitted", "autograded", "feedback", "student", "gradebook.db", "grades.csv", "*.log"]
#: exclude_patterns of _config.yml that keep the instructor's pages out of the student-facing book
INSTRUCTOR_ONLY = ["labs/source", "labs/instructor.md"]


def lab_names(course: Path = HERE) -> list[str]:
    """The labs of the course: every ``source/LAB/LAB.ipynb``."""
    return sorted(p.name for p in (course / "source").iterdir() if (p / f"{p.name}.ipynb").is_file())


def _env() -> dict:
    # nbgrader calls this environment's alembic and starts its "python3" kernel (as grade.py expects)
    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def student_page(nb):
    """The book's page of a released notebook: the release with the solution cells (the stubs) not collapsed."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.metadata.get("nbgrader", {}).get("solution") and "hide-input" in tags:
            tags.remove("hide-input")
            if not tags:
                del cell.metadata["tags"]
    return nb


def student_pages() -> dict[str, str]:
    """``{LAB: text of student/LAB.ipynb}`` released from the current sources (``grade.py release`` in a temporary
    copy of the whole course folder, whatever its sources, helpers and nbgrader configuration are now)."""
    import nbformat

    with tempfile.TemporaryDirectory(prefix="diffu-labs-") as tmp:
        course = Path(tmp) / "labs"
        shutil.copytree(HERE, course, ignore=shutil.ignore_patterns(*COURSE_STATE, "__pycache__", ".ipynb_checkpoints"))
        cmd = [sys.executable, str(course / "grade.py"), "release"]
        res = subprocess.run(cmd, cwd=course, env=_env(), capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"grade.py release failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
        pages = {}
        for lab in lab_names(course):
            nb = nbformat.read(course / "release" / lab / f"{lab}.ipynb", as_version=4)
            pages[lab] = nbformat.writes(student_page(nb)) + "\n"
        return pages


def stale_pages(pages: dict[str, str] | None = None) -> list[str]:
    """Student pages that differ from the release of the current sources, are missing, or have no lab."""
    pages = student_pages() if pages is None else pages
    have = {p.stem: p for p in STUDENT.glob("*.ipynb")} if STUDENT.is_dir() else {}
    bad = [f"student/{lab}.ipynb" for lab, text in pages.items() if lab not in have or have[lab].read_text() != text]
    return bad + [f"student/{lab}.ipynb (no lab)" for lab in sorted(set(have) - set(pages))]


def write_student_pages() -> list[Path]:
    pages = student_pages()
    STUDENT.mkdir(exist_ok=True)
    for old in STUDENT.glob("*.ipynb"):
        if old.stem not in pages:
            old.unlink()
    written = []
    for lab, text in pages.items():
        path = STUDENT / f"{lab}.ipynb"
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


def instructor_book(out: Path = ROOT / "_build" / "instructor") -> Path:
    """Build the instructor's book of the labs (the solution sources, executed) into ``out/_build/html``."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    missing = [p for p in INSTRUCTOR_ONLY if p not in config.get("exclude_patterns", [])]
    if missing:
        raise SystemExit(f"_config.yml's exclude_patterns lack {missing}: the student-facing book would show them")
    config["exclude_patterns"] = [p for p in config["exclude_patterns"] if p not in INSTRUCTOR_ONLY]
    config["title"] = f"{config.get('title', 'diffu')} — labs, instructor's copy"
    local = config.get("sphinx", {}).get("local_extensions") or {}
    for name, path in local.items():  # jupyter-book resolves them against the config file's folder
        local[name] = str(ROOT / path)
    chapters = [{"file": f"labs/source/{lab}/{lab}"} for lab in lab_names()] + [{"file": "book/bibliography"}]
    toc = {"format": "jb-book", "root": "labs/instructor", "chapters": chapters}
    out.mkdir(parents=True, exist_ok=True)
    (out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    (out / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    env = {k: v for k, v in _env().items() if k != "MPLBACKEND"}  # as for the book: figures through the kernel
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", "--all", "-W", str(ROOT)]
    cmd += ["--config", str(out / "_config.yml"), "--toc", str(out / "_toc.yml"), "--path-output", str(out)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return out / "_build" / "html"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("student", help="write labs/student/LAB.ipynb from the sources")
    sub.add_parser("check", help="exit 1 if a student page is stale")
    ins = sub.add_parser("instructor", help="build the instructor's book of the labs")
    ins.add_argument("--out", type=Path, default=ROOT / "_build" / "instructor", help="default: _build/instructor")
    args = parser.parse_args(argv)
    if args.command == "student":
        written = write_student_pages()
        print("\n".join(f"wrote {p.relative_to(ROOT)}" for p in written) or "student pages up to date")
    elif args.command == "check":
        if bad := stale_pages():
            raise SystemExit("stale (run python labs/pages.py student): " + ", ".join(bad))
        print("student pages up to date")
    else:
        html = instructor_book(args.out.resolve())
        print(f"the instructor's book: {html / 'index.html'}")


if __name__ == "__main__":
    main()
