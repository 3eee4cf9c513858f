"""The committed bad-input sweep of issue 18: every probe of tests/sweep/probes.py must get a clear error (a
``ValueError``/``TypeError`` naming the argument) or its accepted result, module by module; every public name of
diffu has a probe; and the classifier that sorts the outcomes is itself tested.

``python -m tests.sweep.runner`` prints the same sweep as a report (counts per outcome and module, and every probe
that is not a clear error with its message); ``--root DIR`` runs it against another checkout.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import time
from collections import Counter

import pytest

from tests.sweep import runner
from tests.sweep.kit import (
    CLEAR,
    DOCUMENTED,
    HANG,
    OBSCURE,
    OK,
    PASS,
    REFUSED,
    SILENT,
    UNDOC_NAN,
    Doc,
    Err,
    NanOrErr,
    Ok,
    Probe,
    classify,
    get,
)
from tests.sweep.probes import EXEMPT, MODULES, all_probes

PROBES = all_probes()
AREAS = sorted({p.module for p in PROBES})


@pytest.fixture(scope="module")
def results():
    """The whole sweep, run once (forked workers, so that a probe stuck in C code is killed, not waited for)."""
    t0 = time.perf_counter()
    res = runner.run_sweep(PROBES)
    print(f"\nbad-input sweep: {len(res)} probes in {time.perf_counter() - t0:.1f} s")
    by = {}
    for r in res:
        by.setdefault(r.probe.module, []).append(r)
    return by


@pytest.mark.parametrize("area", AREAS)
def test_bad_inputs(results, area):
    res = results.get(area, [])
    bad = [r for r in res if r.outcome not in PASS]
    if bad:
        counts = Counter(r.outcome for r in res)
        lines = [f"{area}: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))]
        lines += [f"  {r.outcome:>19} | {r.probe.id} | {r.detail}" for r in bad]
        pytest.fail("\n".join(lines), pytrace=False)


# ----------------------------------------------------------------------------------------------------------------
# Coverage: every public name of every module appears in a probe
# ----------------------------------------------------------------------------------------------------------------


def _covered_objects():
    objs = set()
    for p in PROBES:
        for name in p.names:
            try:
                objs.add(id(get(name)))
            except Exception:  # noqa: BLE001 (a name that does not resolve is reported by test_probe_names_exist)
                pass
    return objs


def _exempt_objects():
    out = set()
    for qual in EXEMPT:
        mod, _, name = qual.rpartition(".")
        out.add(id(getattr(importlib.import_module(mod), name)))
    return out


def test_every_public_name_has_a_probe():
    covered, exempt = _covered_objects(), _exempt_objects()
    missing = []
    for mod in MODULES:
        m = importlib.import_module(mod)
        for name in m.__all__:
            qual = f"{mod}.{name}"
            if qual in EXEMPT or id(getattr(m, name)) in exempt:  # an exempt constant, or its re-export
                continue
            if id(getattr(m, name)) not in covered:
                missing.append(qual)
    assert not missing, f"public names without a probe (add one, or an exemption with its reason): {missing}"


def test_exemptions_are_constants():
    for qual, why in EXEMPT.items():
        mod, _, name = qual.rpartition(".")
        obj = getattr(importlib.import_module(mod), name)
        assert not callable(obj), f"{qual} is callable: it needs a probe, not an exemption"
        assert why


def test_modules_list_is_complete():
    """Every module of diffu with an ``__all__`` (the command-line packages aside) is walked by the coverage test."""
    import diffu

    found = {"diffu"}
    for info in pkgutil.walk_packages(diffu.__path__, "diffu."):
        if info.name.startswith("diffu.bench") or info.name.endswith("__main__"):
            continue
        if hasattr(importlib.import_module(info.name), "__all__"):
            found.add(info.name)
    assert found == set(MODULES), (
        f"add to MODULES: {sorted(found - set(MODULES))}; remove: {sorted(set(MODULES) - found)}"
    )


def test_probe_names_exist():
    bad = sorted({n for p in PROBES for n in p.names if not _resolves(n)})
    assert not bad, f"probes name objects that do not exist: {bad}"


def _resolves(name):
    try:
        get(name)
        return True
    except Exception:  # noqa: BLE001
        return False


def test_table_covers_the_issue_and_is_large():
    ids = [p.id for p in PROBES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 700
    assert sum(i.startswith("#18 ") for i in ids) >= 40


# ----------------------------------------------------------------------------------------------------------------
# The classifier itself
# ----------------------------------------------------------------------------------------------------------------


def _probe(thunk, expect):
    return Probe("self-test", "self-test", (), thunk, expect)


def _raise(exc):
    def thunk():
        raise exc

    return thunk


@pytest.mark.parametrize(
    "thunk, expect, outcome",
    [
        (_raise(ValueError("steps must be an integer >= 1, got 0")), Err("steps"), CLEAR),
        (_raise(TypeError("x_T must be a tensor")), Err("x"), OBSCURE),  # "x" is not a word of "x_T"
        (_raise(ValueError("got 0")), Err("steps"), OBSCURE),
        (_raise(RuntimeError("steps: shape mismatch")), Err("steps"), OBSCURE),
        (_raise(FileNotFoundError("/a/b missing")), Err("/a/b", types=(OSError,)), CLEAR),
        (lambda: 3, Err("steps"), SILENT),
        (lambda: 3, Ok(), OK),
        (lambda: 3, Ok(lambda v: v == 4), SILENT),
        (_raise(ValueError("steps")), Ok(), REFUSED),
        (lambda: True, Doc(bool, "documented"), DOCUMENTED),
        (lambda: float("nan"), NanOrErr("x", doc="tests.sweep.kit:has_nan"), DOCUMENTED),
        (lambda: float("nan"), NanOrErr("x", doc="tests.sweep.runner:counts"), UNDOC_NAN),
        (lambda: 0.5, NanOrErr("x", doc="tests.sweep.kit:has_nan"), SILENT),
    ],
)
def test_classifier(thunk, expect, outcome):
    assert classify(_probe(thunk, expect), 2.0).outcome == outcome


def test_classifier_interrupts_a_python_hang():
    def spin():
        while True:
            pass

    t0 = time.perf_counter()
    assert classify(_probe(spin, Err("t1")), 0.3).outcome == HANG
    assert time.perf_counter() - t0 < 2


@pytest.mark.skipif(
    not hasattr(os, "fork"), reason="the sweep isolates probes in forked workers only where fork exists"
)
def test_worker_stuck_beyond_the_alarm_is_killed(monkeypatch):
    """A probe that the in-process alarm cannot stop (here: SIGALRM blocked, as in a long C call) is killed by the
    parent, counted as a hang, and the next probe still runs."""

    def stuck():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(30)

    monkeypatch.setattr(runner, "GRACE", 0.5)
    probes = [_probe(stuck, Err("x")), _probe(_raise(ValueError("x must be finite")), Err("x"))]
    t0 = time.perf_counter()
    res = runner.run_sweep(probes, limit=0.3)
    assert [r.outcome for r in res] == [HANG, CLEAR]
    assert time.perf_counter() - t0 < 10
