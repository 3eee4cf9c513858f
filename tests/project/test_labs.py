"""The nbgrader labs (labs/): a released student version hides the solutions and hidden tests and scores zero, the
solution source scores full points, every graded cell is a self-contained locked check built on labs/labkit.py, and
labs/grade.py reports each submission's score. The grading run (in temporary copies of the course, so the repository
stays clean) is shared with the adversarial suite, tests/labs_attacks (about two minutes for both)."""

import ast
import builtins
import inspect
import shutil

import nbformat
import pytest

from tests.labs_attacks.course import LABS, NAMES, grade_module, graded, run


def _cells(path):
    return nbformat.read(path, as_version=4).cells


def _meta(cell):
    return cell.metadata.get("nbgrader", {})


def _errors(cell):
    return [o.ename for o in cell.get("outputs", []) if o.output_type == "error"]


@pytest.fixture(scope="module")
def course():
    return graded()


def test_there_are_nine_labs():
    assert NAMES == ["lab1_ddpm", "lab2_dit_blocks", "lab3_guidance", "lab4_dps", "lab5_ddim", "lab6_cfg_training",
                     "lab7_score_flow", "lab8_ct_dds", "lab9_distillation"]  # fmt: skip


@pytest.mark.parametrize("lab", NAMES)
def test_release_hides_solutions_and_hidden_tests(course, lab):
    copy = course.course(f"solution-{lab}")
    source, release = _cells(copy / "source" / lab / f"{lab}.ipynb"), _cells(copy / "release" / lab / f"{lab}.ipynb")
    text = "\n".join(c.source for c in release)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text, marker
    assert "BEGIN HIDDEN TESTS" in "\n".join(c.source for c in source)
    solutions = [c for c in release if _meta(c).get("solution")]
    assert solutions and all("raise NotImplementedError()" in c.source for c in solutions if c.cell_type == "code")
    assert all(c.source.strip() == "YOUR ANSWER HERE" for c in solutions if c.cell_type == "markdown")
    graded_cells = {_meta(c)["grade_id"]: _meta(c)["points"] for c in source if _meta(c).get("grade")}
    assert graded_cells == {_meta(c)["grade_id"]: _meta(c)["points"] for c in release if _meta(c).get("grade")}
    assert all(not c.get("outputs") for c in release if c.cell_type == "code")
    assert not (copy / "release" / lab / "labkit.py").exists()  # the checks live in the course folder only


@pytest.mark.parametrize("lab", NAMES)
def test_every_graded_cell_is_a_self_contained_locked_check(lab):
    """A graded cell is locked, loads labkit anew for its lab, rebuilds its inputs (it reads no variable of another
    cell but the student's functions), ends with lk.done; a task with nothing to write carries no points."""
    cells = _cells(LABS / "source" / lab / f"{lab}.ipynb")
    defined_by_answers = set()
    written_since_last_test = False
    assert _meta(cells[1]).get("grade_id") == "setup" and _meta(cells[1]).get("locked")
    for cell in cells:
        meta = _meta(cell)
        if meta.get("solution") and cell.cell_type == "code":
            written_since_last_test = True
            for node in ast.parse(cell.source.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", "")).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    defined_by_answers.add(node.name)
        if cell.cell_type != "code" or not (meta.get("grade") or meta.get("locked")) or meta["grade_id"] == "setup":
            continue
        assert meta.get("locked"), meta["grade_id"]
        assert f'lk = labkit.fresh("{lab}")' in cell.source, meta["grade_id"]
        if meta.get("grade"):
            assert meta["points"] > 0 and written_since_last_test, meta["grade_id"]  # something to write was graded
            assert cell.source.rstrip().endswith(f'lk.done("{meta["grade_id"]}")'), meta["grade_id"]
            written_since_last_test = False
        tree = ast.parse(cell.source.replace("### BEGIN HIDDEN TESTS", "").replace("### END HIDDEN TESTS", ""))
        bound = {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                 for a in n.names}  # fmt: skip
        bound |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        bound |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        bound |= {a.arg for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Lambda)) for a in n.args.args}
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        outside = used - bound - defined_by_answers - set(dir(builtins))
        if not meta.get("grade"):  # an ungraded check may plot with the setup's plt, and lab 1's uses its network
            outside -= {"plt", "net"}
        assert not outside, (meta["grade_id"], outside)


def test_every_lab_names_the_library_functions_it_forbids():
    library = grade_module(LABS)._library(LABS)
    assert set(NAMES) <= set(library) and all(library[lab] for lab in NAMES)


@pytest.mark.parametrize("lab", NAMES)
def test_solution_scores_full_points(course, lab):
    student = f"solution-{lab}"
    got, full = course.score(student)
    assert got == full > 0, course.report(student)
    executed = course.executed(student).cells
    assert not [(c.get("id"), _errors(c)) for c in executed if _errors(c)]


@pytest.mark.parametrize("lab", NAMES)
def test_written_answers_land_in_the_manual_grading_queue(course, lab):
    """The solution's written answers wait for the instructor (points counted apart from the autograded ones); the
    student version's untouched "YOUR ANSWER HERE" scores 0 and waits for nobody."""
    copy = course.course(f"solution-{lab}")
    written = {_meta(c)["grade_id"]: _meta(c)["points"] for c in _cells(copy / "source" / lab / f"{lab}.ipynb")
               if c.cell_type == "markdown" and _meta(c).get("grade")}  # fmt: skip
    assert written
    grade = grade_module(copy)
    assert dict(grade.by_hand(lab, f"solution-{lab}", copy)) == written
    assert f" + {sum(written.values()):g} by hand (" in course.report(f"solution-{lab}")[0]
    blank = course.course(f"blank-{lab}")
    assert grade_module(blank).by_hand(lab, f"blank-{lab}", blank) == []
    rows = grade_module(blank).grades(lab, f"blank-{lab}", blank)
    assert {name: score for name, kind, score, *_ in rows if kind == "markdown"} == dict.fromkeys(written, 0.0)


@pytest.mark.parametrize("lab", NAMES)
def test_student_version_scores_zero(course, lab):
    student = f"blank-{lab}"
    got, full = course.score(student)
    assert got == 0 < full, course.report(student)
    executed = course.executed(student).cells
    first = next(i for i, c in enumerate(executed) if _meta(c).get("grade"))
    assert not [c.get("id") for c in executed[:first] if _errors(c)]  # setup and the first exercise's definitions run
    assert _errors(executed[first]) == ["NotImplementedError"]
    for c in executed:  # every failure is an unimplemented exercise or a value it would have produced
        if _meta(c).get("grade") and c.cell_type == "code":
            assert _errors(c), c.get("id")
        assert set(_errors(c)) <= {"NotImplementedError", "NameError"}, (c.get("id"), _errors(c))


def test_grade_py_prints_the_score(course, tmp_path):
    lab = "lab2_dit_blocks"  # the quickest lab
    copy = course.course(f"solution-{lab}")
    submission = tmp_path / "alice.ipynb"
    shutil.copy(copy / "source" / lab / f"{lab}.ipynb", submission)
    res = run(LABS / "grade.py", "--course", copy, "autograde", submission, "--lab", lab, "--student", "alice")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # the autograded points, and the written answer that waits in nbgrader's manual-grading queue
    assert res.stdout.strip().splitlines()[-1] == "alice lab2_dit_blocks: 12/12 + 2 by hand (written_why_zero_init)"
    assert (copy / "submitted" / "alice" / lab / f"{lab}.ipynb").is_file()


def test_grade_py_rejects_an_unknown_lab(tmp_path):
    res = run(LABS / "grade.py", "autograde", tmp_path / "x.ipynb", "--lab", "lab9", "--student", "bob")
    assert res.returncode != 0 and "lab must be one of" in res.stderr


def test_autograding_polls_for_kernel_replies_in_slices(monkeypatch, tmp_path):
    """LabExecute installs diffu's sliced reply polling before it runs a notebook: a lost zmq wake-up would otherwise
    idle a cell for the whole 300 s timeout (labs/grade.py). The unpatched method is put back first, so the check
    does not pass on a patch another test installed."""
    from jupyter_client.channels import AsyncZMQSocketChannel

    original = inspect.unwrap(AsyncZMQSocketChannel.get_msg)
    assert not getattr(original, "_diffu_sliced", False)
    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", original)
    _, lab_execute, _ = grade_module(LABS).make_preprocessors()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb, _ = lab_execute(timeout=60).preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert nb.cells[0].outputs[0]["text"] == "42\n"
    assert getattr(AsyncZMQSocketChannel.get_msg, "_diffu_sliced", False)
