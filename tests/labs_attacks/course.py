"""One autograding run of the labs shared by tests/project/test_labs.py and tests/labs_attacks/: a temporary copy of
the course, every lab released by ``grade.py release``, and these submissions graded by ``grade.py autograde`` —
the solution source and the untouched student version of every lab, an honest student version filled in with the
solutions, and every attack of ``attacks.ATTACKS``. The submissions are split over two copies of the course graded
side by side (one nbgrader process each, one CPU each); the run is made once per pytest process (one pytest-xdist
worker runs both test files that use it: ``SHARED`` in the root conftest.py)."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .attacks import ATTACKS, honest

ROOT = Path(__file__).resolve().parents[2]
LABS = ROOT / "labs"
NAMES = sorted(p.name for p in (LABS / "source").iterdir() if (p / f"{p.name}.ipynb").is_file())
#: the course files a copy needs (the rest of labs/ is the book's)
COURSE_FILES = ("nbgrader_config.py", "grade.py", "labkit.py")
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
}


def grade_module(course: Path):
    """The course's grade.py, imported (for ``score``, ``findings``, ``scan``)."""
    spec = importlib.util.spec_from_file_location("diffu_labs_grade_tests", course / "grade.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True)


def new_course(path: Path) -> Path:
    path.mkdir(parents=True)
    for name in COURSE_FILES:
        shutil.copy(LABS / name, path)
    shutil.copytree(LABS / "source", path / "source")
    return path


@dataclass
class Graded:
    """The graded run: ``courses[student]`` is the copy that graded the student, ``output`` what grade.py printed."""

    base: Path
    courses: dict[str, Path] = field(default_factory=dict)
    labs: dict[str, str] = field(default_factory=dict)
    output: str = ""
    log: str = ""
    seconds: float = 0.0  # wall clock: depends on what else runs (the other pytest-xdist worker)
    cpu_seconds: float = 0.0  # user + system time of grade.py and the kernels it ran: the work itself

    def course(self, student: str) -> Path:
        return self.courses[student]

    def score(self, student: str) -> tuple[float, float]:
        lab = self.labs[student]
        return grade_module(self.courses[student]).score(lab, student, self.courses[student])

    def findings(self, student: str) -> dict[str, list[str]]:
        lab = self.labs[student]
        return grade_module(self.courses[student]).findings(lab, student, self.courses[student])

    def executed(self, student: str):
        lab = self.labs[student]
        return nbformat.read(self.courses[student] / "autograded" / student / lab / f"{lab}.ipynb", as_version=4)

    def report(self, student: str) -> list[str]:
        """grade.py's lines about the student: ``"STUDENT LAB: x/y"`` and the indented lines under it."""
        lines = self.output.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{student} {self.labs[student]}:"))
        end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
        return lines[start:end]


def submissions(course: Path) -> dict[str, tuple[str, object]]:
    """``{student: (lab, notebook)}`` of everything the run grades."""
    out = {}
    for lab in NAMES:
        source = nbformat.read(course / "source" / lab / f"{lab}.ipynb", as_version=4)
        release = nbformat.read(course / "release" / lab / f"{lab}.ipynb", as_version=4)
        out[f"solution-{lab}"] = (lab, source)
        out[f"blank-{lab}"] = (lab, release)
        if lab == "lab2_dit_blocks":  # the quickest lab: an honest student version, filled in
            out["honest"] = (lab, honest(source, release))
    for attack in ATTACKS:
        lab = attack.lab
        source = nbformat.read(course / "source" / lab / f"{lab}.ipynb", as_version=4)
        release = nbformat.read(course / "release" / lab / f"{lab}.ipynb", as_version=4)
        out[attack.name] = (lab, attack.build(source, release))
    return out


#: rough seconds to grade a submission, to split them evenly (measured with two courses graded side by side on an idle
#: 2-core machine): a lab's solution runs fully, the rest stop early
_COST = {
    "solution-lab4_dps": 18,
    "solution-lab8_ct_dds": 17,
    "solution-lab1_ddpm": 16,
    "solution-lab6_cfg_training": 13,
    "solution-lab7_score_flow": 13,
    "solution-lab5_ddim": 12,
    "solution-lab3_guidance": 10,
    "solution-lab9_distillation": 9,
    "delegate_lab8_ct_dds": 9,
    "delegate_lab3_guidance": 9,
    "solution-lab2_dit_blocks": 6,
}

_DEFAULT_COST = 5  # a notebook that stops early: a fresh kernel, the setup cell and failing checks
_SOLUTION_COST = 12  # the solution of a lab not measured yet
#: refused for tampering (or not a notebook): never run
_NOT_RUN = ("patch_compare", "mirror", "tensor_subclass", "swallow", "silence", "skip_checks", "forge",
            "rebind_builtins", "copy_of_diffu", "time_magic", "patch_defaults", "thread_pool", "runpy",
            "pause_the_watch", "run_the_solution_source", "corrupt_file")  # fmt: skip


def _cost(student: str) -> float:
    """Seconds to grade ``student``'s submission, roughly (one refused for tampering is not run: a fraction of a
    second)."""
    if student.startswith(_NOT_RUN):
        return 0.2
    return _COST.get(student, _SOLUTION_COST if student.startswith("solution-") else _DEFAULT_COST)


@functools.cache
def graded() -> Graded:
    """Release the labs, grade every submission and return the run (made once per process)."""
    start, cpu_start = time.time(), _children_cpu()
    base = Path(tempfile.mkdtemp(prefix="diffu-labs-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    first = new_course(base / "a")
    res = run(LABS / "grade.py", "--course", first, "release")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    second = base / "b"
    shutil.copytree(first, second)  # released too, with the gradebook that knows the tests
    result = Graded(base)
    loads = {first: 0.0, second: 0.0}
    for student, (lab, nb) in sorted(submissions(first).items(), key=lambda kv: -_cost(kv[0])):
        course = min(loads, key=loads.get)
        loads[course] += _cost(student)
        path = course / "submitted" / student / lab / f"{lab}.ipynb"
        path.parent.mkdir(parents=True)
        if isinstance(nb, str):  # a file that is not a notebook
            path.write_text(nb)
        else:
            nbformat.write(nb, path)
        result.courses[student], result.labs[student] = course, lab
    procs = [
        subprocess.Popen(
            [sys.executable, str(LABS / "grade.py"), "--course", str(c), "autograde"],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for c in loads
    ]
    outputs = [p.communicate() for p in procs]
    for p, (out, err) in zip(procs, outputs):  # 1: a submission was not graded (the corrupt one), the rest were
        assert p.returncode in (0, 1) and "Traceback" not in out, out[-3000:] + err[-5000:]
    result.output = "\n".join(out for out, _ in outputs)
    result.log = "\n".join(err for _, err in outputs)
    result.seconds = time.time() - start
    result.cpu_seconds = _children_cpu() - cpu_start
    return result


def _children_cpu() -> float:
    """CPU seconds of this process's ended and waited-for descendants (grade.py, and the kernels it waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def checksum_warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(r"checksum", line, re.I)]
