"""labs/labkit.py (what the labs' locked cells check with) and grade.py's reading of the answer cells, without
nbgrader: what they accept in an untouched process and what they refuse. A few seconds."""

import builtins
import importlib.util
import sys

import nbformat
import pytest
import torch

import diffu.nn
import diffu.samplers
import diffu.schedules

from .attacks import DELEGATE, FAKE, PATCH_COMPARISONS
from .course import LABS, NAMES

spec = importlib.util.spec_from_file_location("labkit", LABS / "labkit.py")
labkit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(labkit)
grade_spec = importlib.util.spec_from_file_location("diffu_labs_grade_unit", LABS / "grade.py")
grade = importlib.util.module_from_spec(grade_spec)
grade_spec.loader.exec_module(grade)


def test_an_untouched_process_passes_the_guard():
    import diffu.book  # noqa: F401 (the modules the labs import)
    import diffu.guidance  # noqa: F401
    import diffu.inverse  # noqa: F401
    import diffu.pretrained  # noqa: F401

    assert labkit.problems() == []
    lk = labkit.fresh("lab1_ddpm")
    assert lk.forbidden()  # the lab's library functions, resolved to code objects


@pytest.mark.parametrize(
    "owner, name, value",
    [
        (torch, "allclose", lambda *a, **k: True),
        (torch, "equal", torch.allclose),  # another C function
        (torch.Tensor, "allclose", lambda *a, **k: True),  # shadows TensorBase's
        (diffu.samplers, "ddpm_step", lambda *a, **k: None),
        (diffu.nn, "patchify", lambda x, p: x),
        (diffu.schedules.Schedule, "q_sample", lambda self, x0, t, noise: x0),
        (builtins, "abs", lambda x: 0.0),
        (builtins, "isinstance", lambda obj, cls: True),
    ],
)
def test_the_guard_names_a_rebound_function(owner, name, value):
    missing = object()
    old = owner.__dict__.get(name, missing)
    setattr(owner, name, value)
    try:
        found = labkit.problems()
    finally:
        if old is missing:
            delattr(owner, name)
        else:
            setattr(owner, name, old)
    assert any(name in p for p in found), found
    assert labkit.problems() == []


def test_the_guard_sees_a_swapped_code_object():
    f = diffu.samplers.ddpm_step
    old = f.__code__
    f.__code__ = (lambda schedule, x_t, t, eps, **kw: (x_t, x_t)).__code__
    try:
        found = labkit.problems()
    finally:
        f.__code__ = old
    assert any("ddpm_step" in p for p in found), found


def test_run_refuses_delegation_even_through_an_alias():
    lk = labkit.fresh("lab2_dit_blocks")
    alias = diffu.nn.patchify  # captured before anything could patch the module
    x = torch.randn(1, 2, 4, 4)

    def delegating(x, p):
        return alias(x, p)

    with pytest.raises(AssertionError, match="delegating calls diffu.nn.embeddings.patchify") as refused:
        lk.run(delegating, x, 2)
    assert type(refused.value).__name__ == "Delegation"  # (a class of the fresh copy of labkit)

    def patchify(x, p):  # the student's own
        n, c, h, w = x.shape
        return x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, -1, p * p * c)

    lk.equal(lk.run(patchify, x, 2), diffu.nn.patchify(x, 2))
    assert sys.getprofile() is None


def test_run_refuses_a_function_that_switches_the_watch_off():
    lk = labkit.fresh("lab2_dit_blocks")
    with pytest.raises(AssertionError, match="switched off the grader's watch") as refused:
        lk.run(lambda: sys.setprofile(None))
    assert type(refused.value).__name__ == "Tampering"
    assert sys.getprofile() is None


def test_run_refuses_pausing_the_watch_through_a_c_function():
    """``map(sys.setprofile, [None])`` makes no ``c_call`` event for the watch; the audit hook refuses it before it
    takes effect, so pausing the watch around a delegated call and restoring it afterwards fails."""
    lk = labkit.fresh("lab2_dit_blocks")
    x = torch.randn(2, 3, 4, 4)

    def patchify(x, p):
        w = sys.getprofile()
        list(map(sys.setprofile, [None]))  # the watch off …
        out = diffu.nn.patchify(x, p)  # … for the call it would refuse …
        list(map(sys.setprofile, [w]))  # … and back on
        return out

    with pytest.raises(AssertionError, match="grader's watch") as refused:
        lk.run(patchify, x, 2)
    assert type(refused.value).__name__ == "Tampering"
    assert sys.getprofile() is None
    with pytest.raises(AssertionError, match="grader's watch"):
        lk.run(lambda: list(map(sys.settrace, [None])))
    assert sys.gettrace() is None
    # the same call hidden in a pickle payload (which a static scan of the answer cannot read)
    payload = b"\x80\x04csys\nsetprofile\nN\x85R."  # pickle of sys.setprofile(None), protocol 4 opcodes
    with pytest.raises(AssertionError, match="grader's watch"):
        lk.run(lambda: __import__("pickle").loads(payload))
    assert sys.getprofile() is None


def test_the_audit_hook_leaves_profiling_outside_a_run_alone():
    """Outside Kit.run (no watch) the hook lets setprofile through: a profiler, a debugger, coverage still work."""
    seen = []
    sys.setprofile(lambda frame, event, arg: seen.append(event))
    try:
        len("x")
    finally:
        sys.setprofile(None)
    assert "c_call" in seen and sys.getprofile() is None


def test_the_comparisons_refuse_what_is_not_a_plain_tensor():
    class Agree(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func in (torch.allclose, torch.equal):
                return True
            return super().__torch_function__(func, types, args, kwargs or {})

    lk = labkit.Kit()
    fake = torch.zeros(3).as_subclass(Agree)
    with pytest.raises(AssertionError, match="must be a torch.Tensor"):
        lk.close(fake, torch.ones(3))
    with pytest.raises(AssertionError, match="differs from the reference by up to 1"):
        lk.close(torch.zeros(3), torch.ones(3))
    with pytest.raises(AssertionError, match="shape"):
        lk.equal(torch.zeros(3), torch.zeros(4))
    with pytest.raises(AssertionError):
        lk.check(torch.tensor([True, False]), "a bool, not a tensor of two")
    lk.check(torch.tensor(True), "a one-element bool tensor counts")


def _answers(lab):
    nb = nbformat.read(LABS / "source" / lab / f"{lab}.ipynb", as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code" and not c.metadata.get("nbgrader", {}).get("locked")]


@pytest.mark.parametrize("lab", NAMES)
def test_the_scan_finds_nothing_in_the_solutions(lab):
    library = grade._library(LABS)[lab]
    for source in _answers(lab):
        assert grade.scan(source, {"nn", "MLPDenoiser"}, library) == ([], []), source


@pytest.mark.parametrize("lab", sorted(DELEGATE))
def test_the_scan_names_delegation_and_tampering(lab):
    library = grade._library(LABS)[lab]
    reviews = [r for code in DELEGATE[lab].values() for r in grade.scan(code, set(), library)[1]]
    assert any("which this lab" in r for r in reviews), reviews
    tamper, _ = grade.scan(PATCH_COMPARISONS + next(iter(FAKE[lab].values())), set(), library)
    assert "rebinds torch.allclose" in tamper and "rebinds torch.Tensor.allclose" in tamper


@pytest.mark.parametrize(
    "code",
    [
        "get_ipython().set_custom_exc((Exception,), None)",
        "import builtins\nbuiltins.abs = max",
        "import sys\nsys.modules['torch'].allclose = max",
        "nn.Module.__call__ = lambda *a: 0",
        "setattr(torch, 'equal', max)",
        "f.__code__ = g.__code__",
        "class T(torch.Tensor):\n    def __torch_function__(cls, *a):\n        return True",
        "exec('import builtins')",
        "globals()['torch'] = None",
        "import labkit",
    ],
)
def test_the_scan_refuses_tampering(code):
    tamper, _ = grade.scan(code, {"nn"})
    assert tamper, code


@pytest.mark.parametrize("lab", sorted(labkit.LIBRARY))
def test_every_library_entry_names_functions_that_exist(lab):
    """A LIBRARY entry that named nothing (a typo, a renamed function) would watch nothing and let delegation pass."""
    for spec in labkit.LIBRARY[lab]:
        assert labkit._resolve(spec), f"{lab}: {spec} resolves to no function"


def test_the_guard_sees_changed_default_arguments():
    f = diffu.samplers.ddim
    old = dict(f.__kwdefaults__)
    f.__kwdefaults__["eta"] = 1.0
    try:
        found = labkit.problems()
    finally:
        f.__kwdefaults__.clear()
        f.__kwdefaults__.update(old)
    assert any("diffu.samplers.ddim has other keyword-only defaults" in p for p in found), found
    assert labkit.problems() == []


def test_run_refuses_a_copy_of_a_forbidden_function(tmp_path):
    """The same code compiled from another file (a copy of diffu's folder, a pasted function) is still diffu's."""
    import shutil

    shutil.copytree(LABS.parent / "diffu", tmp_path / "copieddiffu", ignore=shutil.ignore_patterns("weights", "*.npz"))
    sys.path.insert(0, str(tmp_path))
    try:
        copied = importlib.import_module("copieddiffu.nn.embeddings")
        lk = labkit.fresh("lab2_dit_blocks")
        with pytest.raises(AssertionError, match="calls a copy of diffu.nn.embeddings.patchify"):  # Delegation
            lk.run(lambda x: copied.patchify(x, 2), torch.randn(1, 2, 4, 4))
        assert lk.run(lambda x: x + 1, torch.zeros(2)).tolist() == [1.0, 1.0]  # an own function runs
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith("copieddiffu")]:
            del sys.modules[name]


def test_run_hides_what_the_check_bound_since_fresh():
    """While a student's function runs, the check's own variables (its references) are not in the namespace: new
    names are gone and rebound ones hold their earlier value; afterwards everything is back."""
    ns = {"__name__": "__main__", "SCHED": "the setup's", "torch": torch, "labkit": labkit}
    exec("lk = labkit.fresh('lab5_ddim')\nSCHED = 'the check\\'s'\nref = 42", ns)

    def peek():
        return ns.get("ref"), ns.get("SCHED"), "lk" in ns

    assert ns["lk"].run(peek) == (None, "the setup's", False)
    assert (ns["ref"], ns["SCHED"]) == (42, "the check's")
