"""The adversarial suite: every cheating or tampered submission of attacks.ATTACKS, graded by labs/grade.py in a
temporary copy of the course (course.graded, shared with tests/project/test_labs.py), gets the score it must get,
and grade.py says per student what it restored or refused. About 2.5 minutes on two CPUs."""

import pytest

from .attacks import ATTACKS
from .course import LABS, NAMES, graded

BY_NAME = {a.name: a for a in ATTACKS}


@pytest.fixture(scope="module")
def run():
    return graded()


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_attack_gets_its_score(run, name):
    if BY_NAME[name].score is None:  # nbgrader cannot read it: reported, not graded
        assert run.report(name)[0].startswith(f"{name} {BY_NAME[name].lab}: not graded — "), run.report(name)
        return
    got, full = run.score(name)
    want = full if BY_NAME[name].score == "full" else BY_NAME[name].score
    assert got == want, (BY_NAME[name].what, run.report(name))


@pytest.mark.parametrize("lab", NAMES)
def test_the_solution_scores_full_points_and_the_student_version_zero(run, lab):
    got, full = run.score(f"solution-{lab}")
    assert got == full > 0, run.report(f"solution-{lab}")
    assert run.score(f"blank-{lab}") == (0, full), run.report(f"blank-{lab}")


def test_an_honest_submission_is_graded_without_any_remark(run):
    """A student version filled in with the solutions: full points, nothing restored, refused or to review (the
    released test cells lack their hidden tests, which is no change), and no checksum warning in nbgrader's log."""
    got, full = run.score("honest")
    assert got == full
    assert run.report("honest") == [f"honest lab2_dit_blocks: {full:g}/{full:g} + 2 by hand (written_why_zero_init)"]
    assert not any(run.findings("honest").values())
    for student in ("honest", *(f"solution-{lab}" for lab in NAMES), *(f"blank-{lab}" for lab in NAMES)):
        assert not any(run.findings(student).get(k) for k in ("restored", "refused", "tampering")), student


def test_delegation_is_refused_with_the_reason(run):
    for lab in NAMES:
        report = "\n".join(run.report(f"delegate_{lab}"))
        assert "refused:" in report and "Delegation" in report and "the diffu implementation" in report, report


def test_tampering_refuses_the_notebook_and_says_why(run):
    for name in ("patch_compare_lab1_ddpm", "mirror", "tensor_subclass", "swallow_errors", "silence_errors",
                 "skip_checks", "forge_done", "rebind_builtins", "time_magic_ast_transformer",
                 "patch_defaults", "runpy_rewritten_copy", "copy_of_diffu", "pause_the_watch",
                 "run_the_solution_source"):  # fmt: skip
        report = "\n".join(run.report(name))
        assert "refused: the whole notebook" in report, (name, report)


def test_deleted_stripped_and_renamed_test_cells_are_put_back_in_working_order(run):
    for name in ("delete_tests", "strip_metadata", "rename_test"):
        restored = run.findings(name)["restored"]
        assert restored, name
        executed = run.executed(name)
        errors = [
            o.ename for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
        ]
        assert not errors, (name, errors)  # every restored test found what it needs above it
    assert any("test_patches_renamed is not a cell of the lab" in r for r in run.findings("rename_test")["restored"])


def test_changed_cell_flags_are_restored_and_reported(run):
    restored = run.findings("flip_flags")["restored"]
    assert sum("nbgrader flags" in r for r in restored) == 2, restored
    assert run.report("flip_flags")[0].endswith("+ 2 by hand (written_why_zero_init)")  # no test in the manual queue


def test_a_notebook_that_rewrites_the_checks_is_refused_and_the_file_put_back(run):
    report = "\n".join(run.report("rewrite_labkit"))
    assert "changed the grader's labkit.py (put back)" in report, report
    course = run.course("rewrite_labkit")
    assert (course / "labkit.py").read_bytes() == (LABS / "labkit.py").read_bytes()


def test_edited_locked_cells_are_restored_and_reported(run):
    restored = run.findings("edit_tests")["restored"]
    assert any("was edited" in r for r in restored) and any("points were changed" in r for r in restored)


def test_results_set_in_unlocked_cells_earn_nothing(run):
    for lab in ("lab3_guidance", "lab4_dps"):
        got, _ = run.score(f"set_results_{lab}")
        assert got == 0, run.report(f"set_results_{lab}")


def test_grading_several_students_in_one_call_goes_on_after_a_refusal(run):
    students = [line.split()[0] for line in run.output.splitlines() if line and not line.startswith(" ")]
    assert sorted(students) == sorted(run.courses)
    assert "Traceback" not in run.output and "CalledProcessError" not in run.log


def test_the_suite_stays_quick(run):
    """About 225 CPU seconds (222 and 227 measured); far more means that refused notebooks run again or that a lab got
    slow. CPU time, not wall time: the wall time depends on what runs beside it (the other pytest-xdist worker) and
    on stalls that cost no work (labs/grade.py, LabExecute)."""
    assert run.cpu_seconds < 450, (run.cpu_seconds, run.seconds)
