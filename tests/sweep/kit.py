"""The machinery of the bad-input sweep (issue 18): probes, expectations, the classifier and the probe builders.

A *probe* is one call of a public name of diffu with one argument made bad (or the valid baseline call itself) and
what must happen: :class:`Err` (a ``ValueError``/``TypeError`` whose message names the argument), :class:`Ok` (the
valid baseline returns, optionally with a property), :class:`Doc` (a documented result, e.g. NaN that is documented
to propagate) or :class:`NanOrErr` (NaN data: a named error, or NaN in the result with the docstring saying so —
never a plausible number). :func:`classify` runs a probe under a time limit and returns its outcome.

Names are resolved when a probe runs (:func:`get`), so the same table runs against another checkout of the package
(``python -m tests.sweep.runner --root DIR``); a name that does not exist there makes the probe "n/a".
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import math
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

NAN = float("nan")
INF = float("inf")
#: Seconds after which a probe counts as a hang (or as "takes very long", issue 18).
TIME_LIMIT = 5.0

# Outcomes, in report order. PASS are the ones the committed test accepts.
CLEAR = "clear error"
OK = "ok"
DOCUMENTED = "documented result"
OBSCURE = "obscure error"
SILENT = "silently wrong"
UNDOC_NAN = "undocumented NaN"
HANG = "hang"
REFUSED = "valid input refused"
NA = "n/a"
OUTCOMES = (CLEAR, DOCUMENTED, OK, OBSCURE, SILENT, UNDOC_NAN, HANG, REFUSED, NA)
PASS = (CLEAR, DOCUMENTED, OK)


class Missing(Exception):
    """A public name (or module) that the checked-out package does not have: the probe is "n/a"."""


class ProbeTimeout(BaseException):
    """Raised by the alarm in a probe that runs past :data:`TIME_LIMIT` (a BaseException, so that no
    ``except Exception`` inside the code under test swallows it)."""


def get(path: str):
    """The object at ``"diffu.module:attr.attr"`` (``"diffu.module"`` for the module), or :class:`Missing`."""
    mod, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(mod)
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == "diffu":
            raise Missing(path) from None
        raise
    for part in filter(None, attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise Missing(path) from None
    return obj


# ----------------------------------------------------------------------------------------------------------------
# Lazy values: built when the probe runs, fresh each time
# ----------------------------------------------------------------------------------------------------------------


class L:
    """A value built when the probe runs (a fresh tensor, a fixture): ``L(lambda: torch.zeros(3))``."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn

    def __call__(self):
        return self.fn()


def resolve(v):
    return v() if isinstance(v, L) else v


class TM:
    """A bad value derived from the argument's baseline value: ``TM(lambda x: x[0])`` drops the batch dim."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn


# ----------------------------------------------------------------------------------------------------------------
# Expectations
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Err:
    """A ``ValueError`` or ``TypeError`` (subclasses count) whose message names the argument: one of ``frags``
    as a whole word (``"x"`` does not match inside ``"x_T"``). ``types`` widens the accepted exceptions where
    another one is the documented answer (``FileNotFoundError`` for a missing file)."""

    frags: tuple
    types: tuple = (ValueError, TypeError)

    def __init__(self, *frags: str, types: tuple = (ValueError, TypeError)):
        self.frags, self.types = frags, types


@dataclass
class Ok:
    """The valid call returns (and ``pred(result)`` holds, when given)."""

    pred: Callable | None = None
    why: str = ""


@dataclass
class Doc:
    """A documented result: the call returns and ``pred(result)`` holds; ``why`` points to the docstring."""

    pred: Callable
    why: str


@dataclass
class NanOrErr:
    """NaN/inf in the data: a named error (preferred), or NaN in the result *and* the docstring (of the function, its
    class or its module) says that NaN propagates. Turning NaN into a plausible number is "silently wrong"."""

    frags: tuple
    doc: str | None = None  # the path whose docstring must mention NaN (default: the probe's target)

    def __init__(self, *frags: str, doc: str | None = None):
        self.frags, self.doc = frags, doc


@dataclass
class Either:
    """Two right answers: a named error, or a result for which ``pred`` holds (e.g. ``motion_kernel(1)``: the 1×1
    identity kernel, or an error naming ``size``)."""

    frags: tuple
    pred: Callable
    why: str = ""


@dataclass
class Probe:
    id: str
    module: str  # the area it reports under: "samplers", "inverse.dps", "nn.unet", …
    names: tuple  # the public names it calls, "diffu.samplers:ddim"
    thunk: Callable[[], Any]
    expect: Any
    doc: str | None = None  # path of the object whose docstring a NanOrErr probe reads


@dataclass
class Result:
    probe: Probe
    outcome: str
    detail: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def names_in(msg: str, frags) -> bool:
    """Does ``msg`` name one of ``frags`` (as a whole word: not preceded or followed by a letter, digit or _)?"""
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(f)}(?![A-Za-z0-9_])", msg) for f in frags)


def has_nan(v, depth: int = 0) -> bool:
    """Does the result hold a NaN or an infinity anywhere (tensors, arrays, numbers, containers)?"""
    if depth > 4:
        return False
    if isinstance(v, torch.Tensor):
        return bool((v.is_floating_point() or v.is_complex()) and not torch.isfinite(v).all())
    if isinstance(v, np.ndarray):
        return bool(np.issubdtype(v.dtype, np.inexact) and not np.isfinite(v).all())
    if isinstance(v, (float, np.floating)):
        return not math.isfinite(float(v))
    if isinstance(v, dict):
        return any(has_nan(x, depth + 1) for x in v.values())
    if isinstance(v, (tuple, list)):
        return any(has_nan(x, depth + 1) for x in v[:64])
    for name in ("x", "sample", "samples"):  # result objects (PlugAndPlayResult, …)
        if hasattr(v, name) and not callable(getattr(v, name)):
            return has_nan(getattr(v, name), depth + 1)
    return False


_NAN_WORD = re.compile(r"\bnan\b|not-a-number", re.IGNORECASE)


def documents_nan(path: str) -> bool:
    """Does the docstring of ``path`` mention NaN — or that of its class (with the class's ``__init__``, ``forward``
    and ``__call__``), or that of its module?"""
    mod, _, attr = path.partition(":")
    parts = [p for p in attr.split(".") if p]
    objs = [get(mod)]
    for i in range(len(parts)):
        try:
            objs.append(get(mod + ":" + ".".join(parts[: i + 1])))
        except Missing:
            break
    for o in list(objs):
        if isinstance(o, type):
            objs += [o.__dict__[m] for m in ("__init__", "forward", "__call__") if m in o.__dict__]
    return any(_NAN_WORD.search(getattr(o, "__doc__", None) or "") for o in objs)


def short(v, n: int = 110) -> str:
    if isinstance(v, torch.Tensor):
        v = v.detach()
        s = f"tensor{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
        if v.numel() and (v.is_floating_point()):
            s += f" in [{float(v.nan_to_num().min()):.3g}, {float(v.nan_to_num().max()):.3g}]"
            if not torch.isfinite(v).all():
                s += f" ({int((~torch.isfinite(v)).sum())} non-finite)"
        return s
    s = repr(v) if not isinstance(v, str) else v
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


# ----------------------------------------------------------------------------------------------------------------
# Running one probe
# ----------------------------------------------------------------------------------------------------------------


def _alarm(signum, frame):
    raise ProbeTimeout()


def run_limited(fn: Callable[[], Any], limit: float):
    """``fn()`` under a wall-clock limit: ``signal.setitimer`` in the main thread (it interrupts Python code; a long
    C call is noticed when it returns), else a daemon worker thread that is abandoned on timeout."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    box: dict = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 (re-raised in the caller's thread)
            box["error"] = err

    th = threading.Thread(target=work, daemon=True)
    th.start()
    th.join(limit)
    if th.is_alive():
        raise ProbeTimeout()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _close_figures():
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")


def classify(probe: Probe, limit: float = TIME_LIMIT) -> Result:
    """Run ``probe`` and sort what happened into one of :data:`OUTCOMES`."""
    exp = probe.expect
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("ignore")
            value = run_limited(probe.thunk, limit)
    except ProbeTimeout:
        return Result(probe, HANG, f"no result after {limit:g} s", time.perf_counter() - t0)
    except Missing as m:
        return Result(probe, NA, f"{m} does not exist here", time.perf_counter() - t0)
    except SystemExit as e:  # a command line's usage error (argparse prints it and exits with status 2)
        dt = time.perf_counter() - t0
        msg = err.getvalue().strip().splitlines()
        msg = msg[-1] if msg else f"SystemExit({e.code})"
        if isinstance(exp, (Err, NanOrErr, Either)) and e.code == 2:
            return Result(probe, CLEAR if names_in(msg, exp.frags) else OBSCURE, f"usage error: {msg}", dt)
        return Result(probe, REFUSED if isinstance(exp, Ok) else OBSCURE, f"SystemExit({e.code}): {msg}", dt)
    except Exception as e:  # noqa: BLE001 (every exception is classified)
        dt = time.perf_counter() - t0
        msg = f"{type(e).__name__}: {short(str(e), 160)}"
        if dt > limit:
            return Result(probe, HANG, f"took {dt:.1f} s, then {msg}", dt)
        if isinstance(exp, (Ok, Doc)):
            return Result(probe, REFUSED, msg, dt)
        if isinstance(exp, Either):
            named = isinstance(e, (ValueError, TypeError)) and names_in(str(e), exp.frags)
            return Result(probe, CLEAR if named else OBSCURE, msg, dt)
        named = isinstance(e, getattr(exp, "types", (ValueError, TypeError))) and names_in(str(e), exp.frags)
        return Result(probe, CLEAR if named else OBSCURE, msg, dt)
    finally:
        _close_figures()
    dt = time.perf_counter() - t0
    if dt > limit:
        return Result(probe, HANG, f"returned after {dt:.1f} s", dt)
    if isinstance(exp, Err):
        return Result(probe, SILENT, f"returned {short(value)}", dt)
    if isinstance(exp, NanOrErr):
        if not has_nan(value):
            return Result(probe, SILENT, f"NaN/inf input gave a finite result: {short(value)}", dt)
        path = exp.doc or probe.doc
        if path and documents_nan(path):
            return Result(probe, DOCUMENTED, f"NaN propagates (documented): {short(value)}", dt)
        return Result(probe, UNDOC_NAN, f"NaN propagates but {path}'s docstring does not say so", dt)
    if isinstance(exp, Either):
        try:
            good = bool(exp.pred(value))
        except Exception:  # noqa: BLE001
            good = False
        if good:
            return Result(probe, DOCUMENTED, f"returned the accepted result ({exp.why})", dt)
        return Result(probe, SILENT, f"returned {short(value)}", dt)
    pred = getattr(exp, "pred", None)
    if pred is not None:
        try:
            good = bool(pred(value))
        except Exception as e:  # noqa: BLE001
            good, value = False, f"{value!r:.60} (check raised {type(e).__name__}: {e})"
        if not good:
            why = f" ({exp.why})" if exp.why else ""
            return Result(probe, SILENT, f"returned {short(value)}{why}", dt)
    return Result(probe, OK if isinstance(exp, Ok) else DOCUMENTED, "", dt)


# ----------------------------------------------------------------------------------------------------------------
# Building probes
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class B:
    """One bad value of an argument: ``B("nan", float("nan"))``, ``B("rank 3", TM(lambda x: x[0]))``; ``expect``
    defaults to ``Err(<the argument>)``; ``arg`` overrides the name the message must contain."""

    label: str
    value: Any
    expect: Any = None
    arg: Any = None


def _label(v) -> str:
    if isinstance(v, B):
        return v.label
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (int, float, bool)) or v is None:
        return repr(v)
    return type(v).__name__


def _as_b(v) -> B:
    return v if isinstance(v, B) else B(_label(v), v)


class Table:
    """Collects probes: ``T.sweep(...)`` for a baseline and its one-argument mutations, ``T.case(...)`` for one
    hand-written probe."""

    def __init__(self):
        self.probes: list[Probe] = []

    def add(self, probe: Probe):
        if any(p.id == probe.id for p in self.probes):
            raise ValueError(f"duplicate probe id {probe.id!r}")
        self.probes.append(probe)

    def case(self, module: str, pid: str, names, thunk, expect, doc: str | None = None):
        names = (names,) if isinstance(names, str) else tuple(names)
        self.add(Probe(pid, module, names, thunk, expect, doc or (names[0] if names else None)))

    def sweep(
        self,
        module: str,
        target,
        pos: str = "",
        kw: dict | None = None,
        bad: dict | None = None,
        *,
        names=None,
        label: str | None = None,
        ok=True,
        ok_pred=None,
        alias: dict | None = None,
        post=None,
    ):
        """A baseline call of ``target`` and one probe per bad value of each argument in ``bad``.

        Args:
            module: the area the probes report under (``"samplers"``).
            target: ``"diffu.x:name"`` (resolved when the probe runs) or an :class:`L` returning the callable
                (a bound method of a fixture).
            pos: the names of ``kw`` passed positionally, in order (``"model x_T schedule"``).
            kw: the baseline arguments; values may be :class:`L` (built fresh for each call).
            bad: ``{arg: [bad values or B(...)]}``; a :class:`TM` value is derived from the baseline value. An
                argument missing from ``kw`` is left at its default in the baseline and passed only when bad.
            names: the public names covered (default: ``target`` when it is a path).
            label: the probe id's stem (default: the target's name).
            ok: add the baseline as an ``Ok`` probe.
            alias: ``{arg: (names the message may use)}`` (default: the argument's own name).
            post: ``post(result)`` applied to the call's result (e.g. calling a constructed object).
        """
        kw = dict(kw or {})
        posn = pos.split()
        if names is None:
            names = (target,) if isinstance(target, str) else ()
        names = (names,) if isinstance(names, str) else tuple(names)
        stem = label or (target.partition(":")[2] if isinstance(target, str) else "call")
        alias = alias or {}
        doc = target if isinstance(target, str) else (names[0] if names else None)

        def make(over: dict):
            def thunk():
                fn = get(target) if isinstance(target, str) else target()
                vals = {}
                for k in {**kw, **over}:
                    if k in over:
                        o = over[k]
                        vals[k] = o.fn(resolve(kw[k])) if isinstance(o, TM) else resolve(o)
                    else:
                        vals[k] = resolve(kw[k])
                args = [vals.pop(k) for k in posn]
                res = fn(*args, **vals)
                return post(res) if post is not None else res

            return thunk

        if ok:
            self.add(Probe(f"{module}.{stem}(ok)", module, names, make({}), Ok(ok_pred), doc))
        for arg, values in (bad or {}).items():
            if arg not in kw and any(isinstance(_as_b(v).value, TM) for v in values):
                raise ValueError(f"{stem}: {arg!r} has no baseline value to derive a bad value from")
            for v in values:
                b = _as_b(v)
                frags = b.arg if b.arg is not None else alias.get(arg, (arg,))
                frags = (frags,) if isinstance(frags, str) else tuple(frags)
                exp = copy.copy(b.expect) if b.expect is not None else Err(*frags)
                if isinstance(exp, (Err, NanOrErr)) and not exp.frags:
                    exp.frags = frags
                self.add(Probe(f"{module}.{stem}({arg}={b.label})", module, names, make({arg: b.value}), exp, doc))


# ----------------------------------------------------------------------------------------------------------------
# Bad values by kind
# ----------------------------------------------------------------------------------------------------------------


def INT(low: int = 1, *, none: bool = False, big=None) -> list:
    """Bad values of an integer argument that must be ``>= low``."""
    out = [B(repr(low - 1), low - 1), B("2.5", 2.5), B("True", True), B("'3'", "3")]
    if low - 1 != -1:
        out.insert(1, B("-1", -1))
    if none:
        out.append(B("None", None))
    if big is not None:
        out.append(B(repr(big), big))
    return out


def POS(*, none: bool = False, extra=()) -> list:
    """Bad values of a finite number that must be > 0."""
    out = [NAN, INF, B("-1", -1.0), B("0", 0.0), B("True", True), B("'1'", "1"), *extra]
    return out + ([B("None", None)] if none else [])


def NONNEG(*, none: bool = False, extra=()) -> list:
    """Bad values of a finite number that must be >= 0."""
    out = [NAN, INF, B("-1", -1.0), B("True", True), B("'1'", "1"), *extra]
    return out + ([B("None", None)] if none else [])


def UNIT(*, extra=()) -> list:
    """Bad values of a number in [0, 1]."""
    return [NAN, B("-0.5", -0.5), B("1.5", 1.5), B("True", True), *extra]


def FINITE(*, extra=()) -> list:
    """Bad values of any finite real number."""
    return [NAN, INF, B("True", True), B("'1'", "1"), *extra]


def CHOICE(*extra) -> list:
    return [B("'bogus'", "bogus"), B("3", 3), *extra]


BOOL = [B("'yes'", "yes")]
GEN = [B("int seed", 0), B("'cpu'", "cpu"), B("numpy Generator", L(lambda: np.random.default_rng(0)))]
DEVICE = [B("'nodevice'", "nodevice"), B("3.5", 3.5)]
CALL = [B("'model'", "model"), B("3", 3)]


def nan_at(x, value=NAN):
    y = x.clone()
    y.view(-1)[0] = value
    return y


def to_255(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round()


def TENSOR(*, nan="either", rank=True, ints=True, extra=(), frags=None) -> list:
    """Bad versions of a required floating tensor argument: NaN/inf (``nan="err"``: must raise; ``"either"``: raise
    or documented propagation; ``None``: no NaN probe), one dimension less and more, int64 and uint8 (0–255) data,
    a list in place of a tensor, and None."""
    fr = frags or ()
    out = []
    if nan == "err":
        out += [B("nan", TM(nan_at), Err(*fr)), B("inf", TM(lambda x: nan_at(x, INF)), Err(*fr))]
    elif nan == "either":
        out += [B("nan", TM(nan_at), NanOrErr(*fr)), B("inf", TM(lambda x: nan_at(x, INF)), NanOrErr(*fr))]
    if rank:
        out += [B("rank-1", TM(lambda x: x[0])), B("rank+1", TM(lambda x: x[None]))]
    if ints:
        out += [B("int64", TM(lambda x: to_255(x).long())), B("uint8", TM(lambda x: to_255(x).to(torch.uint8)))]
    out += [B("list", TM(lambda x: x.tolist())), B("None", None)]
    return out + list(extra)


def IMAGE(nan="either", channels=False, **kw) -> list:
    """:func:`TENSOR` for an ``(N, C, H, W)`` image argument; with ``channels`` (where the callee has a fixed
    number of channels: a network, a metric's feature extractor) also a wrong channel count."""
    out = TENSOR(nan=nan, **kw)
    return out + ([B("channels+1", TM(lambda x: torch.cat([x, x[:, :1]], 1)))] if channels else [])


def BATCH(label="batch+1", arg=None) -> B:
    """The tensor with one more sample (mismatching the other arguments' batch size); ``arg``: the names the message
    may use (a mismatch may be reported against either argument)."""
    return B(label, TM(lambda x: torch.cat([x, x[:1]])), arg=arg)


def SHAPE(label="shape") -> B:
    """The tensor with a different trailing size (mismatching another argument's shape)."""
    return B(label, TM(lambda x: torch.cat([x, x[..., :1]], -1)))
