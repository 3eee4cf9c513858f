"""Release and autograde the diffu labs with nbgrader; this folder is the course root (labs/README.md).

    python labs/grade.py release [LAB ...]                            # student versions of all (or the given) labs
    python labs/grade.py autograde NOTEBOOK --lab LAB --student ID    # grade one submission
    python labs/grade.py autograde A.ipynb B.ipynb --lab LAB          # several: each student named by its file
    python labs/grade.py autograde                                    # every submission in submitted/ID/LAB/

``release`` runs ``nbgrader generate_assignment LAB --force`` for each lab (sources in ``source/LAB/LAB.ipynb``,
student versions written to ``release/LAB/``). ``autograde`` copies the given notebooks to
``submitted/ID/LAB/LAB.ipynb`` and grades each submission with nbgrader's autograder (the executed notebook lands in
``autograded/ID/LAB/``), one student after the other in this process: a submission nbgrader refuses is reported and
the next one is graded. For each it prints the score from the gradebook and what the grader found::

    alice lab1_ddpm: 12/12
    bob lab2_dit_blocks: 9/12
      restored: test_patches was missing (deleted): put back after the cell it follows in the lab
      refused: test_adaln_zero_block — Delegation: AdaLNZeroBlock calls diffu.nn.dit.AdaLNZeroBlock.forward, …
      review: answer patches imports sys
    carol lab1_ddpm: 0/12
      refused: the whole notebook — answer forward_process rebinds torch.allclose (and 2 more)

``restored`` lines are tampering nbgrader undid; ``refused`` lines are graded cells whose check refused the answer
(labkit.py's ``Delegation``, ``Tampering``; ``Incomplete``: the cell did not run to its end) or the whole notebook,
when an answer cell holds a construct only tampering with the grader needs (read before execution, outside the
kernel: :func:`scan`); ``review`` lines are unusual constructs and uses of the library functions the lab forbids.
The exit status is 1 when a submission could not be graded. ``--course DIR`` works on another copy of the course
folder (the tests use one).

The preprocessors below are nbgrader's side of the labs' defences; ``nbgrader_config.py`` installs them, so that
``nbgrader autograde`` run by hand grades the same way:

- :class:`LabOverwriteCells` (replaces nbgrader's ``OverwriteCells``): restores locked cells that were edited,
  deleted or stripped of their metadata — in place, or at their place in the source notebook, after the cells they
  need — drops the metadata of a cell whose grade_id is unknown, warns only about real changes (a released test
  cell lacks its hidden tests: that is not a change), reads the answer cells (:func:`scan`) and records all of it
  in the notebook's metadata (``diffu_grading``) and in a report cell at its top.
- :class:`LabExecute` (replaces nbgrader's ``Execute``): does not run a notebook refused for tampering, and waits for
  kernel replies in one-second polls (a lost wake-up otherwise stalls a cell until its timeout).
- :class:`RequireDone` (after execution): a graded cell scores only if its last line, ``lk.done(...)``, printed;
  every graded cell of a notebook refused for tampering scores 0.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the line labkit.Kit.done prints at the end of a graded cell (labkit.DONE)
DONE = "labkit: all checks of {} passed"
#: notebook metadata key of the grader's findings
REPORT_KEY = "diffu_grading"


def lab_names(course: Path = HERE) -> list[str]:
    """The labs of the course: every ``source/LAB/LAB.ipynb``."""
    return sorted(p.name for p in (course / "source").iterdir() if (p / f"{p.name}.ipynb").is_file())


# ----------------------------------------------------------------------------------------------------------------------
# reading the answer cells (before execution, outside the kernel)

#: what no answer needs and only tampering with the grader does: a submission using any is refused (scores 0)
_TAMPER_IMPORTS = {
    "builtins",
    "ctypes",
    "gc",
    "IPython",
    "ipykernel",
    "jupyter_client",
    "nbgrader",
    "labkit",
    "_thread",
    "threading",  # a thread started in an answer cell runs outside the checks' watch
    "concurrent",
    "asyncio",
    "multiprocessing",
    "subprocess",
    "runpy",  # runs a module anew: a copy of diffu the watch does not know
    "ast",  # rewriting code (the library's, or the checks')
    "marshal",
    "code",  # interpreters, debuggers and profilers run code the reading never sees, or reach into frames
    "codeop",
    "timeit",
    "cProfile",
    "profile",
    "pdb",
    "bdb",
    "trace",
    "importlib",
    "inspect",
}
_TAMPER_NAMES = {
    "__builtins__", "__import__", "get_ipython", "__code__", "__globals__", "__closure__", "__torch_function__",
    "__torch_dispatch__", "set_custom_exc", "input_transformers_cleanup", "input_transformers_post", "showtraceback",
    "_showtraceback", "settrace", "setprofile", "labkit", "DIFFU_LABKIT", "meta_path", "path_hooks",
    "get_referrers", "get_objects", "exec", "eval", "compile", "globals", "vars", "modules", "__dict__",
    "__subclasses__", "__mro__", "__bases__", "__base__", "__defaults__", "__kwdefaults__", "ast_transformers",
    "events", "input_transformer_manager", "register_magic_function", "__file__", "environ", "putenv",
    "write_text", "write_bytes", "copyfile", "copy2", "copytree", "rmtree", "chmod", "symlink_to", "unlink",
    "getprofile", "gettrace", "cell_contents", "f_trace", "gi_frame", "cr_frame", "tb_frame", "f_back", "f_globals",
    "f_locals", "_getframe", "__self__", "__func__", "__wrapped__",
}  # fmt: skip
#: modules (and names bound from them) whose attributes an answer must not assign: the grader's references
_GUARDED_ROOTS = {"torch", "diffu", "np", "numpy", "math", "builtins", "sys", "nn", "F", "labkit", "IPython"}
#: unusual in an answer, harmless alone: reported for review
_REVIEW_IMPORTS = {"signal", "atexit", "sys", "types", "weakref", "os", "shutil", "pathlib", "glob", "json",
                   "pickle", "sqlite3", "nbformat", "io", "tempfile", "operator", "functools"}  # fmt: skip
#: (reading files: the course's sources and gradebook are on the grader's disk — see "Limits" in README.md)
_REVIEW_NAMES = {"setattr", "delattr", "getattr", "system", "locals", "open", "read_text", "read_bytes", "glob",
                 "rglob", "listdir", "scandir", "walk", "attrgetter", "methodcaller"}  # fmt: skip
#: tampering names without an underscore that are still not prose (a string naming them is refused, as their use)
_TAMPER_WORDS = {"labkit", "getprofile", "gettrace", "setprofile", "settrace", "copytree", "rmtree", "copyfile",
                 "unlink", "chmod", "copy2"}  # fmt: skip
#: attribute functions whose name argument must be a literal (a computed name hides what it reaches)
_ATTRIBUTE_FUNCTIONS = {"getattr", "setattr", "delattr", "hasattr", "attrgetter", "methodcaller"}
#: line magics an answer may use (%time and %timeit run Python, which is read like the rest of the cell), and cell
#: magics whose body is Python; a submission running any other magic, or a shell command, is refused
_MAGICS = {"time", "timeit", "matplotlib", "whos", "who", "xmode", "precision"}
_CELL_MAGICS = {"time", "timeit", "capture"}


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _library(course: Path) -> dict[str, tuple[str, ...]]:
    """labkit.LIBRARY, read from labkit.py without importing it (the grader does not import torch)."""
    path = course / "labkit.py"
    if not path.is_file():
        return {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "LIBRARY":
            return ast.literal_eval(node.value)
    return {}


def _opens_for_writing(node) -> bool:
    """``open(path, mode)`` or ``path.open(mode)`` with a mode that writes, or one the reading cannot tell."""
    if not isinstance(node, ast.Call) or (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) != "open":
        return False
    given = node.args[1:2] if isinstance(node.func, ast.Name) else node.args[:1]
    given += [k.value for k in node.keywords if k.arg == "mode"]
    return any(not (isinstance(m, ast.Constant) and isinstance(m.value, str)) or set(m.value) & set("wax+")
               for m in given)  # fmt: skip


def scan(source: str, guarded: set[str] = frozenset(), library: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Read one answer cell: ``(tampering, review)``, short phrases. ``tampering``: constructs only tampering with
    the grader needs (the submission is refused); ``review``: unusual ones, and uses of the library functions the
    lab forbids (the checks refuse those functions when they run; the phrase says why).

    ``guarded``: names bound elsewhere in the notebook from torch and diffu (``nn``, ``MLPDenoiser``…), whose
    attributes an answer must not assign, like those of ``torch`` and ``diffu``; ``library``: the lab's entry of
    ``labkit.LIBRARY``."""
    tamper, review = [], []
    from IPython.core.inputtransformer2 import TransformerManager

    try:  # what IPython will run: magics and shell escapes become get_ipython() calls
        tree = ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError:
        return tamper, ["has a syntax error (it does not run)"]
    except Exception:  # noqa: BLE001 (IPython's transformers on a cell they cannot handle)
        return ["cannot be read as IPython input"], review
    nested: list[str] = []  # the Python that allowed magics run (%time, %%timeit…), read like the rest

    class Magics(ast.NodeTransformer):
        def visit_Call(self, node):
            func = node.func
            if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call)
                    and isinstance(func.value.func, ast.Name) and func.value.func.id == "get_ipython"
                    and func.attr in ("run_line_magic", "run_cell_magic", "system", "getoutput")):  # fmt: skip
                args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None
                        for a in node.args]  # fmt: skip
                name = args[0] if args else None
                if func.attr == "run_line_magic" and name in _MAGICS and len(args) == 2 and args[1] is not None:
                    if name in ("time", "timeit"):  # the statement it times, without the options (-n 1 -r 1 …)
                        nested.append(re.sub(r"^\s*(-\w+\s+(\d+\s+)?)*", "", args[1]))
                    return ast.copy_location(ast.Constant(None), node)
                if func.attr == "run_cell_magic" and name in _CELL_MAGICS and len(args) == 3 and args[2] is not None:
                    nested.append(args[2])
                    return ast.copy_location(ast.Constant(None), node)
                what = f"%{name}" if func.attr.startswith("run_") else "a shell command"
                tamper.append(f"runs {what}")  # a shell command can edit the grader's files; other magics, anything
                return ast.copy_location(ast.Constant(None), node)
            return self.generic_visit(node)

    tree = Magics().visit(tree)
    for body in nested:
        more_tamper, more_review = scan(body, guarded, library)
        tamper += more_tamper
        review += more_review
    roots = _GUARDED_ROOTS | set(guarded)
    whole = [spec for spec in library if ":" not in spec]  # modules the lab forbids entirely
    names = {spec.rpartition(":")[2].rpartition(".")[2]: spec.replace(":", ".") for spec in library if ":" in spec}

    def forbidden(dotted: str | None, name: str | None = None) -> None:
        for module in whole:
            if dotted and (dotted == module or dotted.startswith(module + ".")):
                review.append(f"uses {module}, which this lab forbids")
        if name in names:
            review.append(f"uses {names[name]}, which this lab asks you to write")

    def assigned(target) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                assigned(t)
        elif isinstance(target, ast.Subscript):  # torch.x.__kwdefaults__["…"] = …, diffu.REGISTRY[k] = …
            dotted = _dotted(target.value)
            if dotted and dotted.split(".")[0] in roots:
                tamper.append(f"changes {dotted}[…]")
        elif isinstance(target, ast.Attribute):
            dotted = _dotted(target)
            root = dotted.split(".")[0] if dotted else None
            if dotted and dotted.startswith("torch.backends."):
                review.append(f"sets {dotted}")
            elif root in roots or dotted is None and isinstance(target.value, ast.Call):
                tamper.append(f"rebinds {dotted or ast.unparse(target)}")

    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for alias in node.names:
                full = f"{module}.{alias.name}" if module else alias.name
                head = full.split(".")[0]
                if head in _TAMPER_IMPORTS:
                    tamper.append(f"imports {full}")
                elif head in _REVIEW_IMPORTS:
                    review.append(f"imports {full}")
                forbidden(full, alias.name if module and module.startswith("diffu") else None)
        elif isinstance(node, (ast.Assign, ast.Delete)):
            for target in node.targets:
                assigned(target)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            assigned(node.target)
        elif _opens_for_writing(node):
            tamper.append("opens a file for writing")  # the grader's files are within reach
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            first = _dotted(node.args[0]) if node.args else None
            if first and first.split(".")[0] in roots:
                tamper.append(f"calls {node.func.id} on {first}")
        if isinstance(node, ast.Call) and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) in (
            _ATTRIBUTE_FUNCTIONS
        ):
            names = node.args[1:2] if getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "getattr", "setattr", "delattr", "hasattr") else node.args  # fmt: skip
            if any(not (isinstance(a, ast.Constant) and isinstance(a.value, str)) for a in names):
                tamper.append("computes an attribute name (getattr with a name that is not a literal)")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for word in re.findall(r"[A-Za-z_][\w.]*", node.value):  # getattr(f, "__closure__"), not prose
                name = word.rpartition(".")[2]
                if name in _TAMPER_NAMES and ("_" in name or name in _TAMPER_WORDS):
                    tamper.append(f"names {name} in a string")
        if isinstance(node, ast.Name):
            if node.id in _TAMPER_NAMES:
                tamper.append(f"uses {node.id}")
            elif node.id in _REVIEW_NAMES:
                review.append(f"uses {node.id}")
        elif isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if node.attr in _TAMPER_NAMES:
                tamper.append(f"uses {dotted or '….' + node.attr}")
            elif node.attr in _REVIEW_NAMES:
                review.append(f"uses {dotted or '….' + node.attr}")
            forbidden(dotted, node.attr if not (dotted or "").startswith("self.") else None)
        elif isinstance(node, ast.FunctionDef) and node.name in _TAMPER_NAMES:
            tamper.append(f"defines {node.name}")
    return sorted(set(tamper)), sorted(set(review))


# ----------------------------------------------------------------------------------------------------------------------
# nbgrader's side: restore and report, require the checks to finish


def _nbgrader_classes():
    from nbgrader.preprocessors import NbGraderPreprocessor, OverwriteCells

    return NbGraderPreprocessor, OverwriteCells


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _released(source: str) -> str:
    """A cell's source as the student version shows it: without its hidden tests (nbgrader's ClearHiddenTests)."""
    from nbformat.v4 import new_code_cell
    from nbgrader.preprocessors import ClearHiddenTests

    cell = new_code_cell(source)
    ClearHiddenTests()._remove_hidden_test_region(cell)
    return cell.source


def _report(nb) -> dict:
    return nb.metadata.setdefault(REPORT_KEY, {"restored": [], "review": [], "refused": [], "tampering": []})


def make_preprocessors():
    """The classes nbgrader_config.py installs (built on demand: nbgrader is imported only by nbgrader's own runs)."""
    NbGraderPreprocessor, OverwriteCells = _nbgrader_classes()
    from nbformat.v4 import new_markdown_cell
    from nbformat.v4.nbbase import new_output
    from traitlets import Unicode

    class LabOverwriteCells(OverwriteCells):
        """nbgrader's OverwriteCells, which restores locked cells and reports every change it undoes, with missing
        cells put back where the source notebook has them and an answer-cell scan (see the module docstring)."""

        source_notebook = Unicode(
            "source/{assignment}/{notebook}.ipynb",
            help="the source notebook, relative to the course root: its cell order places restored cells",
        ).tag(config=True)

        def preprocess(self, nb, resources):
            self.restored, self.review, self.tampering = [], [], []
            nb, resources = super().preprocess(nb, resources)  # preprocess_cell for each cell, then add_missing_*
            self.scan_answers(nb, resources)
            report = _report(nb)
            report["restored"] += self.restored
            report["review"] += self.review
            report["tampering"] = self.tampering
            lines = [f"- restored: {r}" for r in self.restored] + [f"- review: {r}" for r in self.review]
            lines += [f"- refused: {t} (tampering with the grader: every test scores 0)" for t in self.tampering]
            if lines:
                text = "**Grader's report** (labs/grade.py)\n\n" + "\n".join(lines)
                nb.cells.insert(0, new_markdown_cell(text, metadata={REPORT_KEY: True}))
            return nb, resources

        def note(self, message: str):
            self.log.warning(message)
            self.restored.append(message)

        def preprocess_cell(self, cell, resources, cell_index):
            meta = _meta(cell)
            grade_id = meta.get("grade_id")
            if grade_id is None:
                return cell, resources
            from nbgrader.api import MissingEntry

            try:
                source_cell = self.gradebook.find_source_cell(grade_id, self.notebook_id, self.assignment_id)
            except MissingEntry:
                self.note(
                    f"{grade_id} is not a cell of the lab (its grade_id was changed): its nbgrader metadata is dropped"
                )
                del cell.metadata["nbgrader"]
                return cell, resources
            if cell.cell_type != source_cell.cell_type:
                self.note(f"{grade_id} was made a {cell.cell_type} cell: made a {source_cell.cell_type} cell again")
                self.update_cell_type(cell, source_cell.cell_type)
            from nbgrader import utils

            if utils.is_locked(cell) != source_cell.locked:
                self.note(f"{grade_id} was unlocked or locked: its lock is restored")
                cell.metadata.nbgrader["locked"] = source_cell.locked
            flags = {"grade": self.in_source("grade", grade_id), "solution": self.in_source("solution", grade_id),
                     "task": self.in_source("task", grade_id)}  # fmt: skip
            if any(bool(cell.metadata.nbgrader.get(k)) != v for k, v in flags.items()):
                self.note(f"{grade_id}'s nbgrader flags (graded, answer, task) were changed: restored")
                cell.metadata.nbgrader.update(flags)
            if utils.is_grade(cell):
                graded = self.gradebook.find_graded_cell(grade_id, self.notebook_id, self.assignment_id)
                if float(graded.max_score) != float(cell.metadata.nbgrader.get("points", -1)):
                    self.note(f"{grade_id}'s points were changed: {graded.max_score:g} again")
                    cell.metadata.nbgrader["points"] = graded.max_score
            cell.metadata.nbgrader["checksum"] = source_cell.checksum
            if source_cell.locked:
                if cell.source not in (source_cell.source, _released(source_cell.source)):
                    self.note(f"{grade_id} (a locked cell) was edited: the original is restored")
                cell.source = source_cell.source  # the released test cell gets its hidden tests back
            return cell, resources

        def in_source(self, kind: str, grade_id: str) -> bool:
            """Whether the lab's cell ``grade_id`` is a graded, solution or task cell (from the gradebook)."""
            from nbgrader.api import MissingEntry

            find = {"grade": self.gradebook.find_grade_cell, "solution": self.gradebook.find_solution_cell,
                    "task": self.gradebook.find_task_cell}[kind]  # fmt: skip
            try:
                find(grade_id, self.notebook_id, self.assignment_id)
            except MissingEntry:
                return False
            return True

        def source_order(self) -> list[str]:
            """grade_ids (or cell ids for cells without one) of the source notebook, in order."""
            import nbformat

            path = self.source_notebook.format(assignment=self.assignment_id, notebook=self.notebook_id)
            try:
                cells = nbformat.read(path, as_version=4).cells
            except (OSError, ValueError):
                return []
            return [_meta(c).get("grade_id") or f"id:{c.get('id')}" for c in cells]

        def add_missing_grade_cells(self, nb, resources):
            """Put back every locked, graded or task cell the submission lacks. A cell that kept its source but lost
            its nbgrader metadata (an editor strips it; a changed grade_id loses it above) is restored in place; a
            deleted one is inserted after the nearest cell before it in the source notebook that the submission has
            — so that it runs after the cells it needs."""
            source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
            cells = {c.name: c for c in source_nb.source_cells}
            points = {c.name: c.max_score for c in source_nb.grade_cells}
            solutions = {c.name for c in source_nb.solution_cells}
            tasks = {c.name for c in source_nb.task_cells}
            order = self.source_order() or [c.name for c in source_nb.source_cells]
            present = {_meta(c).get("grade_id") for c in nb.cells} - {None}
            unmarked = [c for c in nb.cells if not _meta(c).get("grade_id")]
            by_id = {f"id:{c.get('id')}": c for c in nb.cells}
            anchor = None  # the submission's cell after which the next deleted cell goes
            for key in order:
                if key in present:
                    anchor = next(c for c in nb.cells if _meta(c).get("grade_id") == key)
                    continue
                if key not in cells:  # a cell without grade_id in the source (markdown): found by its id, if kept
                    anchor = by_id.get(key, anchor)
                    continue
                source_cell = cells[key]
                versions = (source_cell.source, _released(source_cell.source))
                copy = next((c for c in unmarked if c.source in versions and c.cell_type == source_cell.cell_type),
                            None)  # fmt: skip
                if not (key in points or source_cell.locked or key in tasks):
                    anchor = copy or anchor  # an answer that lost its metadata: what follows goes after it
                    continue
                cell = self.restored_cell(source_cell, points.get(key), key in solutions, key in tasks, copy is None)
                if copy is not None:
                    unmarked.remove(copy)
                    nb.cells[next(i for i, c in enumerate(nb.cells) if c is copy)] = cell
                    self.note(f"{key} had lost its nbgrader metadata: restored in place")
                else:
                    index = 0 if anchor is None else next(i for i, c in enumerate(nb.cells) if c is anchor) + 1
                    nb.cells.insert(index, cell)
                    self.note(f"{key} was missing (deleted): put back after the cell it follows in the lab")
                present.add(key)
                anchor = cell
            return nb, resources

        def restored_cell(self, source_cell, points, is_solution, is_task, inserted):
            """The source's cell with its nbgrader metadata (an inserted one says so in a first line)."""
            import nbformat

            meta = {"grade": points is not None and not is_task, "grade_id": source_cell.name,
                    "locked": source_cell.locked, "solution": is_solution, "task": is_task, "schema_version": 3,
                    "checksum": source_cell.checksum}  # fmt: skip
            if points is not None:
                meta["points"] = points
            source = source_cell.source
            if inserted:
                note = self.missing_cell_notification.format(cell_id=source_cell.name)
                source = ("# " + note if source_cell.cell_type == "code" else note) + source
            make = nbformat.v4.new_code_cell if source_cell.cell_type == "code" else nbformat.v4.new_markdown_cell
            metadata = {"nbgrader": meta, "deletable": False}
            if not is_solution:
                metadata["editable"] = False
            return make(source, metadata=metadata)

        def add_missing_task_cells(self, nb, resources):
            return nb, resources  # add_missing_grade_cells puts task cells back too, in place

        def scan_answers(self, nb, resources):
            """Read every cell a student can edit (before execution); record tampering and what to review."""
            library = _library(Path(os.getcwd())).get(self.assignment_id, ())
            guarded = set()  # names the notebook binds from torch and diffu
            for cell in nb.cells:
                if cell.cell_type == "code":
                    for _, names in re.findall(r"^\s*from\s+((?:torch|diffu)[\w.]*)\s+import\s+([\w ,]+)",
                                                    cell.source, flags=re.M):  # fmt: skip
                        guarded.update(n.split(" as ")[-1].strip() for n in names.split(","))
                    guarded.update(re.findall(r"^\s*import\s+(?:torch|diffu)[\w.]*\s+as\s+(\w+)", cell.source,
                                              flags=re.M))  # fmt: skip
            number = 0
            for cell in nb.cells:
                if cell.cell_type != "code":
                    continue
                number += 1
                meta = _meta(cell)
                if meta.get("locked") or meta.get("grade") and not meta.get("solution"):
                    continue
                where = f"answer {meta['grade_id']}" if meta.get("grade_id") else f"code cell {number}"
                tamper, review = scan(cell.source, guarded, library)
                self.tampering += [f"{where} {t}" for t in tamper]
                self.review += [f"{where} {r}" for r in review]

    class RequireDone(NbGraderPreprocessor):
        """After execution: a graded code cell whose output lacks labkit's DONE line gets an error output, so it
        scores nothing (an answer cell kept its checks from running to their end)."""

        def preprocess(self, nb, resources):
            report = _report(nb)
            tampering = report.get("tampering", [])
            if tampering:
                report["refused"].append(f"the whole notebook — {tampering[0]}" + (f" (and {len(tampering) - 1} more)"
                                         if len(tampering) > 1 else ""))  # fmt: skip
            for cell in nb.cells:
                meta = _meta(cell)
                if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
                    continue
                outputs = cell.get("outputs", [])
                if tampering:
                    why = "the submission tampers with the grader: " + "; ".join(tampering)
                    cell.outputs.append(new_output("error", ename="Refused", evalue=why, traceback=[why]))
                    continue
                if any(o.get("output_type") == "error" for o in outputs):
                    err = next(o for o in outputs if o.get("output_type") == "error")
                    if err.get("ename") in ("Delegation", "Tampering"):
                        value = err.get("evalue", "").splitlines()[0] if err.get("evalue") else ""
                        report["refused"].append(f"{meta['grade_id']} — {err['ename']}: {value}")
                    continue
                text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
                if DONE.format(meta["grade_id"]) not in text:
                    why = "its checks did not run to their end (lk.done was not reached)"
                    cell.outputs.append(new_output("error", ename="Incomplete", evalue=why, traceback=[why]))
                    report["refused"].append(f"{meta['grade_id']} — Incomplete: {why}")
            return nb, resources

    from nbgrader.preprocessors import Execute

    class LabExecute(Execute):
        """nbgrader's Execute, which does not run a notebook refused for tampering (it scores 0 anyway)."""

        def preprocess(self, nb, resources):
            if _report(nb).get("tampering"):
                self.log.warning("Not executing a notebook refused for tampering")
                return nb, resources
            # A lost zmq wake-up leaves the kernel idle until the cell timeout (300 s, nbgrader_config.py) before the
            # grading goes on. Two of five gradings of the test suite on one day stalled by about that much with the
            # same CPU time (124 s without, 426 s with: 222 and 227 CPU s). Polling in one-second slices bounds the
            # cost of a lost wake-up (see the function's docstring).
            from diffu.bench.notebooks import install_sliced_reply_polling

            install_sliced_reply_polling()
            return super().preprocess(nb, resources)

    return LabOverwriteCells, LabExecute, RequireDone


# ----------------------------------------------------------------------------------------------------------------------
# running nbgrader


def _environment(course: Path) -> None:
    """nbgrader calls this environment's alembic, starts its "python3" kernel (this Python) and the labs' checks
    load the course's labkit.py."""
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    os.environ["DIFFU_LABKIT"] = str(course / "labkit.py")
    # the checks refuse to run if the file changes while a notebook runs (fresh() compares)
    os.environ["DIFFU_LABKIT_SHA256"] = hashlib.sha256((course / "labkit.py").read_bytes()).hexdigest()


def _api(course: Path):
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def release(labs: list[str], course: Path = HERE) -> None:
    """``nbgrader generate_assignment LAB --force`` for each lab (in this process)."""
    _environment(course)
    api = _api(course)
    cwd = os.getcwd()
    for lab in labs or lab_names(course):
        try:
            result = api.generate_assignment(lab, force=True)
        finally:
            os.chdir(cwd)
        if not result.get("success"):
            raise RuntimeError(f"nbgrader could not release {lab}: {_reason(result)}\n{result.get('log', '')}")


def grades(lab: str, student: str, course: Path = HERE) -> list[tuple[str, str, float, float, bool]]:
    """Every graded cell of a student's submission, from the gradebook: ``(grade_id, cell type, score, points,
    needs manual grading)`` — code cells are the autograded tests, markdown cells the written answers graded by
    hand (their score is 0 until the instructor grades them)."""
    from nbgrader.api import Gradebook

    with Gradebook("sqlite:///" + str(course / "gradebook.db")) as gb:
        sub = gb.find_submission(lab, student)
        return [
            (g.cell.name, g.cell.cell_type, float(g.score or 0), float(g.cell.max_score), bool(g.needs_manual_grade))
            for notebook in sub.notebooks
            for g in notebook.grades
        ]


def score(lab: str, student: str, course: Path = HERE) -> tuple[float, float]:
    """(points scored, points possible) of the autograded tests of a student's submission, from the gradebook. The
    written answers are graded by hand (:func:`by_hand`); ``nbgrader export`` has the total once they are."""
    auto = [(got, points) for _, kind, got, points, _ in grades(lab, student, course) if kind == "code"]
    return sum(got for got, _ in auto), sum(points for _, points in auto)


def by_hand(lab: str, student: str, course: Path = HERE) -> list[tuple[str, float]]:
    """``(grade_id, points)`` of the written answers of a submission waiting in nbgrader's manual-grading queue (a
    written answer left as released is not: it scores 0)."""
    return [(name, points) for name, kind, _, points, waiting in grades(lab, student, course) if waiting]


def findings(lab: str, student: str, course: Path = HERE) -> dict[str, list[str]]:
    """What the grader recorded in the autograded notebook: ``restored``, ``refused`` and ``review`` lines."""
    import nbformat

    path = course / "autograded" / student / lab / f"{lab}.ipynb"
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return {}
    return dict(nb.metadata.get(REPORT_KEY, {}))


def _reason(result: dict) -> str:
    """The line of nbgrader's log or traceback that says why it refused a submission."""
    lines = [line.strip() for line in (result.get("log", "") + "\n" + result.get("error", "")).splitlines()]
    errors = [line for line in lines if re.match(r"[\w.]*(Error|Exception|Warning)\b.*: ", line)
              and "NbGraderException" not in line]  # fmt: skip
    return (errors or [line for line in lines if line] or ["unknown error"])[-1].removeprefix("[ERROR] ")[:300]


def autograde_all(pairs: list[tuple[str, str]], course: Path = HERE, out=print) -> dict:
    """Grade each ``(lab, student)`` submission already in ``submitted/`` and print a report per student.
    Returns ``{(lab, student): (score, max_score) or None}`` (None: nbgrader refused the submission)."""
    _environment(course)
    unreleased = sorted({lab for lab, _ in pairs if not (course / "release" / lab).is_dir()})
    if unreleased:  # the gradebook learns the lab's tests when it is released
        release(unreleased, course)
    api = _api(course)
    results = {}
    cwd = os.getcwd()
    checks = course / "labkit.py"
    pristine = checks.read_bytes()
    for lab, student in pairs:
        try:
            result = api.autograde(lab, student, force=True, create=True)
        finally:
            os.chdir(cwd)
            changed = not checks.is_file() or checks.read_bytes() != pristine
            if changed:  # a submission wrote to the grader's checks: put them back before the next one runs
                checks.write_bytes(pristine)
        if not result.get("success"):
            results[(lab, student)] = None
            out(f"{student} {lab}: not graded — {_reason(result)}")
            continue
        got, possible = score(lab, student, course)
        results[(lab, student)] = (got, possible)
        waiting = by_hand(lab, student, course)
        manual = f" + {sum(p for _, p in waiting):g} by hand ({', '.join(n for n, _ in waiting)})" if waiting else ""
        out(f"{student} {lab}: {got:g}/{possible:g}{manual}")
        found = findings(lab, student, course)
        for kind in ("restored", "refused", "review"):
            for line in found.get(kind, []):
                out(f"  {kind}: {line}")
        if changed:
            out("  refused: the notebook changed the grader's labkit.py (put back); no check ran after the change")
    return results


def submit(notebook: Path, lab: str, student: str, course: Path = HERE) -> None:
    """Copy a notebook to ``submitted/STUDENT/LAB/LAB.ipynb``."""
    dest = course / "submitted" / student / lab / f"{lab}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if Path(notebook).resolve() != dest.resolve():
        shutil.copyfile(notebook, dest)


def autograde(notebook: Path, lab: str, student: str, course: Path = HERE) -> tuple[float, float]:
    """Submit one notebook and grade it; (points scored, points possible) of its autograded tests."""
    if lab not in lab_names(course):
        raise ValueError(f"lab must be one of {lab_names(course)}, got {lab!r}")
    submit(notebook, lab, student, course)
    result = autograde_all([(lab, student)], course)[(lab, student)]
    if result is None:
        raise RuntimeError(f"nbgrader could not grade {notebook}")
    return result


def submitted(course: Path = HERE) -> list[tuple[str, str]]:
    """Every ``(lab, student)`` with a ``submitted/STUDENT/LAB/LAB.ipynb``."""
    labs = set(lab_names(course))
    return sorted(
        (p.parent.name, p.parent.parent.name)
        for p in (course / "submitted").glob("*/*/*.ipynb")
        if p.parent.name in labs and p.stem == p.parent.name
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--course", type=Path, default=HERE, help="course folder (default: this one)")
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="generate the student versions")
    rel.add_argument("labs", nargs="*", help="labs to release (default: all)")
    auto = sub.add_parser("autograde", help="autograde submitted notebooks (default: all in submitted/)")
    auto.add_argument("notebooks", type=Path, nargs="*")
    auto.add_argument("--lab", help="the lab of the given notebooks")
    auto.add_argument("--student", help="the student of the one given notebook (default: its file name)")
    args = parser.parse_args(argv)
    course = args.course.resolve()
    if args.command == "release":
        try:
            release(args.labs, course)
        except RuntimeError as err:
            print(err, file=sys.stderr)
            return 1
        return 0
    if args.notebooks:
        if args.lab not in lab_names(course):
            parser.error(f"lab must be one of {lab_names(course)}, got {args.lab!r}")
        if args.student and len(args.notebooks) > 1:
            parser.error("--student names the student of one notebook; several are named by their files")
        pairs = []
        for notebook in args.notebooks:
            student = args.student or notebook.stem
            submit(notebook.resolve(), args.lab, student, course)
            pairs.append((args.lab, student))
    else:
        pairs = [p for p in submitted(course) if args.lab in (None, p[0])]
    results = autograde_all(pairs, course)
    return 1 if any(r is None for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
