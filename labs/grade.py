"""Release and autograde the diffu labs with nbgrader; this folder is the course root.

    python labs/grade.py release [LAB ...]                          # student versions of all (or the given) labs
    python labs/grade.py autograde NOTEBOOK --lab LAB --student ID  # grade one submission, print "score/max"

``release`` runs ``nbgrader generate_assignment LAB --force`` for each lab (sources in ``source/LAB/LAB.ipynb``,
student versions written to ``release/LAB/``); ``autograde`` copies the notebook to
``submitted/ID/LAB/LAB.ipynb``, runs ``nbgrader autograde LAB --student ID --force`` (the executed notebook lands
in ``autograded/ID/LAB/``) and reads the score from the gradebook. ``--course DIR`` works on another copy of the
course folder (the tests use one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def lab_names(course: Path = HERE) -> list[str]:
    """The labs of the course: every ``source/LAB/LAB.ipynb``."""
    return sorted(p.name for p in (course / "source").iterdir() if (p / f"{p.name}.ipynb").is_file())


def nbgrader(course: Path, *args: str) -> None:
    """Run an nbgrader command in the course folder with this Python, so that the "python3" kernel that executes the
    notebooks is this environment's; its bin folder goes first on PATH because nbgrader calls the ``alembic``
    executable to create the gradebook."""
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, check=True)


def release(labs: list[str], course: Path = HERE) -> None:
    for lab in labs or lab_names(course):
        nbgrader(course, "generate_assignment", lab, "--force")


def score(lab: str, student: str, course: Path = HERE) -> tuple[float, float]:
    """(points scored, points possible) of a student's autograded submission, from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook("sqlite:///" + str(course / "gradebook.db")) as gb:
        sub = gb.find_submission(lab, student)
        return sub.score, sub.max_score


def autograde(notebook: Path, lab: str, student: str, course: Path = HERE) -> tuple[float, float]:
    if lab not in lab_names(course):
        raise ValueError(f"lab must be one of {lab_names(course)}, got {lab!r}")
    if not (course / "release" / lab).is_dir():  # the gradebook learns the lab's tests when it is released
        release([lab], course)
    dest = course / "submitted" / student / lab / f"{lab}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, dest)
    nbgrader(course, "autograde", lab, "--student", student, "--force")
    return score(lab, student, course)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--course", type=Path, default=HERE, help="course folder (default: this one)")
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="generate the student versions")
    rel.add_argument("labs", nargs="*", help="labs to release (default: all)")
    auto = sub.add_parser("autograde", help="autograde one submitted notebook")
    auto.add_argument("notebook", type=Path)
    auto.add_argument("--lab", required=True)
    auto.add_argument("--student", required=True)
    args = parser.parse_args(argv)
    course = args.course.resolve()
    if args.command == "release":
        release(args.labs, course)
    else:
        got, possible = autograde(args.notebook.resolve(), args.lab, args.student, course)
        print(f"{args.student} {args.lab}: {got:g}/{possible:g}")


if __name__ == "__main__":
    main()
