"""The nbgrader labs (labs/): a released student version hides the solutions and hidden tests and scores zero, the
solution source scores full points, and labs/grade.py reports a submission's score. Everything runs in a temporary
copy of the course folder, so the repository stays clean; one nbgrader call autogrades all labs (about 90 s)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LABS = ROOT / "labs"
NAMES = sorted(p.name for p in (LABS / "source").iterdir() if (p / f"{p.name}.ipynb").is_file())
# nbgrader starts the "python3" kernel with this Python and calls this environment's alembic
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
}


def _cells(path):
    return json.loads(Path(path).read_text())["cells"]


def _meta(cell):
    return cell["metadata"].get("nbgrader", {})


def _errors(cell):
    return [o["ename"] for o in cell.get("outputs", []) if o["output_type"] == "error"]


def _run(*args, cwd):
    res = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A copy of the course with every lab released (by grade.py) and autograded twice: student "solution" submitted
    the solution source, student "blank" the untouched student version."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(LABS / "nbgrader_config.py", course)
    shutil.copytree(LABS / "source", course / "source")
    _run(LABS / "grade.py", "--course", course, "release", cwd=ROOT)
    for lab in NAMES:
        for student, folder in (("solution", "source"), ("blank", "release")):
            dest = course / "submitted" / student / lab
            dest.mkdir(parents=True)
            shutil.copy(course / folder / lab / f"{lab}.ipynb", dest)
    _run("-m", "nbgrader", "autograde", "*", "--force", cwd=course)
    return course


def _grades(course, lab, student):
    """{grade_id: (score, max_score)} of a submission's graded cells, from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        nb = gb.find_submission_notebook(lab, lab, student)
        return {g.name: (g.score, g.max_score) for g in nb.grades}


def test_there_are_four_labs():
    assert NAMES == ["lab1_ddpm", "lab2_dit_blocks", "lab3_guidance", "lab4_dps"]


@pytest.mark.parametrize("lab", NAMES)
def test_release_hides_solutions_and_hidden_tests(course, lab):
    source, release = (
        _cells(course / "source" / lab / f"{lab}.ipynb"),
        _cells(course / "release" / lab / f"{lab}.ipynb"),
    )
    text = "\n".join("".join(c["source"]) for c in release)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text, marker
    assert "BEGIN HIDDEN TESTS" in "\n".join("".join(c["source"]) for c in source)
    solutions = [c for c in release if _meta(c).get("solution")]
    assert solutions and all("raise NotImplementedError()" in "".join(c["source"]) for c in solutions)
    graded = {_meta(c)["grade_id"]: _meta(c)["points"] for c in source if _meta(c).get("grade")}
    assert graded == {_meta(c)["grade_id"]: _meta(c)["points"] for c in release if _meta(c).get("grade")}
    assert all(not c.get("outputs") for c in release if c["cell_type"] == "code")


@pytest.mark.parametrize("lab", NAMES)
def test_solution_scores_full_points(course, lab):
    grades = _grades(course, lab, "solution")
    assert grades and all(score == full > 0 for score, full in grades.values()), grades
    executed = _cells(course / "autograded" / "solution" / lab / f"{lab}.ipynb")
    assert not [(c["id"], _errors(c)) for c in executed if _errors(c)]


@pytest.mark.parametrize("lab", NAMES)
def test_student_version_scores_zero(course, lab):
    grades = _grades(course, lab, "blank")
    assert grades and all(score == 0 < full for score, full in grades.values()), grades
    executed = _cells(course / "autograded" / "blank" / lab / f"{lab}.ipynb")
    first = next(i for i, c in enumerate(executed) if _meta(c).get("grade"))
    assert not [c["id"] for c in executed[:first] if _errors(c)]  # setup and the first exercise's definitions run
    assert _errors(executed[first]) == ["NotImplementedError"]
    for c in executed:  # every failure is an unimplemented exercise or a value it would have produced
        if _meta(c).get("grade"):
            assert _errors(c), c["id"]
        assert set(_errors(c)) <= {"NotImplementedError", "NameError"}, (c["id"], _errors(c))


def test_grade_py_prints_the_score(course, tmp_path):
    lab = "lab2_dit_blocks"  # the quickest lab
    submission = tmp_path / "alice.ipynb"
    shutil.copy(course / "source" / lab / f"{lab}.ipynb", submission)
    out = _run(
        LABS / "grade.py", "--course", course, "autograde", submission, "--lab", lab, "--student", "alice", cwd=ROOT
    )
    assert out.strip().splitlines()[-1] == "alice lab2_dit_blocks: 12/12"
    assert (course / "submitted" / "alice" / lab / f"{lab}.ipynb").is_file()


def test_grade_py_rejects_an_unknown_lab(tmp_path):
    res = subprocess.run([sys.executable, LABS / "grade.py", "autograde", tmp_path / "x.ipynb", "--lab", "lab9",
                          "--student", "bob"], env=ENV, capture_output=True, text=True)  # fmt: skip
    assert res.returncode != 0 and "lab must be one of" in res.stderr
