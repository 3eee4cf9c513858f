"""nbgrader configuration of the diffu labs. This folder is the course root: run nbgrader from here (or through
``python labs/grade.py``, see README.md). Only the offline steps are used — generate_assignment and autograde —
so no exchange directory is configured.

Autograding uses grade.py's preprocessors: LabOverwriteCells in place of nbgrader's OverwriteCells (restores and
reports edited, deleted, renamed and metadata-stripped cells, in place; reads the answer cells), LabExecute in place
of Execute (a notebook refused for tampering is not run) and RequireDone (a graded cell scores only when its checks
ran to their last line). DIFFU_LABKIT points the labs' locked cells to this folder's labkit.py, and a labkit.py
handed in with a submission is never copied."""

import importlib.util
import os

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    IgnorePattern,
    LimitOutput,
    OverwriteKernelspec,
    SaveAutoGrades,
)

c = get_config()  # noqa: F821 (traitlets provides get_config when nbgrader loads this file)

ROOT = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "diffu"
c.CourseDirectory.root = ROOT
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, "gradebook.db")  # kept out of git (.gitignore)
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "*.pyc",
    "__pycache__",
    "feedback",
    "labkit.py",
]  # never a student's copy
c.Execute.timeout = 300  # seconds per cell while autograding (nbgrader's default, 30 s, is short for a laptop CPU)
c.Execute.shutdown_kernel = "immediate"  # the outputs are in: a graceful shutdown only waits (2-3 s per notebook)

# the kernels that execute the submissions inherit this: the locked cells load this folder's labkit.py
os.environ["DIFFU_LABKIT"] = os.path.join(ROOT, "labkit.py")

_spec = importlib.util.spec_from_file_location("diffu_labs_grade", os.path.join(ROOT, "grade.py"))
_grade = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_grade)
LabOverwriteCells, LabExecute, RequireDone = _grade.make_preprocessors()

c.LabOverwriteCells.add_missing_cells = True  # deleted or metadata-stripped locked cells are put back, in place
c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    DeduplicateIds,
    OverwriteKernelspec,
    LabOverwriteCells,
    CheckCellMetadata,
]
c.Autograde.autograde_preprocessors = [
    LabExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    RequireDone,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]
