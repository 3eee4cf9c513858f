"""Fixed-step (Euler, Heun) and adaptive (RK45) integration of ``dx/dt = f(x, t)`` — shared by the probability-flow
ODE (:mod:`diffu.sde`) and flow matching (:mod:`diffu.flow`), chapter §2.5.

``f(x, t) -> (dx/dt, x0_hat)``: the drift and the denoised estimate at ``(x, t)`` (reported to callbacks).
Time runs along the given grid in either direction; ``t`` reaches ``f`` as a Python float.

The initial state must be finite and the times finite; :func:`solve_adaptive` also refuses a drift with NaN or
infinity and stops after ``max_nfe`` evaluations, so that no input makes it run forever.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .checks import check_bool, check_callable, check_choice, check_finite, check_floating, check_int, check_real
from .sampling import SamplerState

__all__ = ["SOLVERS", "integrate", "solve_adaptive"]

#: The fixed-step solvers of :func:`integrate`.
SOLVERS = ("euler", "heun")


class _BudgetExceeded(Exception):
    """Raised inside scipy's right-hand side to stop a run that has used up its evaluations."""


def _check_state(x, name: str = "x") -> None:
    check_floating(x, name)
    check_finite(x, name)


def _check_drift(d, x: torch.Tensor, t: float) -> None:
    if not isinstance(d, torch.Tensor) or d.shape != x.shape:
        got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
        raise ValueError(f"f must return dx/dt as a tensor of x's shape {tuple(x.shape)} at t = {t:g}, got {got}")


def integrate(
    f: Callable,
    x: torch.Tensor,
    ts,
    *,
    solver: str = "euler",
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
    desc: str = "ODE",
) -> tuple[torch.Tensor, int]:
    """Integrate from ``ts[0]`` to ``ts[-1]`` with Euler or Heun (2nd-order trapezoidal predictor–corrector, Alg. 1 of
    Karras et al. 2022). Returns ``(x, nfe)``. Heun costs two evaluations per step.

    Args:
        f: ``f(x, t) -> (dx/dt, x0_hat)``, both tensors of ``x``'s shape.
        x: the initial state, a floating-point tensor without NaN or infinity.
        ts: at least two finite times (a sequence or a 1-D tensor), in either direction.
        solver: one of :data:`SOLVERS`.
        progress: show a progress bar.
        callback: None or a callable receiving a :class:`~diffu.sampling.SamplerState` after each step.
        desc: the progress bar's label.

    Raises:
        TypeError: ``f`` or ``callback`` not callable, ``progress`` not a bool, ``desc`` not a string, ``ts`` not a
            sequence of numbers.
        ValueError: an unknown ``solver``; ``x`` not floating or not finite; fewer than two times or a non-finite
            one; ``f`` not returning a pair whose first element has ``x``'s shape.
    """
    check_callable("f", f)
    check_choice("solver", solver, SOLVERS)
    check_bool("progress", progress)
    if callback is not None:
        check_callable("callback", callback)
    if not isinstance(desc, str):
        raise TypeError(f"desc must be a string, got {type(desc).__name__}")
    _check_state(x)
    if isinstance(ts, (str, bytes)) or not hasattr(ts, "__iter__"):
        raise TypeError(f"ts must be a sequence of times, got {type(ts).__name__}")
    ts = list(ts)
    for t in ts:
        check_real("ts[i]", t)
    ts = [float(t) for t in ts]
    if len(ts) < 2:
        raise ValueError(f"ts must hold at least two times, got {len(ts)}")
    nfe = 0
    for i in tqdm(range(len(ts) - 1), disable=not progress, desc=desc):
        t, t_next = ts[i], ts[i + 1]
        h = t_next - t
        d, x0 = _pair(f(x, t), x, t)
        nfe += 1
        if solver == "euler":
            x = x + h * d
        else:
            x_pred = x + h * d
            d2, _ = _pair(f(x_pred, t_next), x, t_next)
            nfe += 1
            x = x + h * 0.5 * (d + d2)
        if callback is not None:
            callback(SamplerState(i, t, x, x0))
    return x, nfe


def _pair(out, x: torch.Tensor, t: float):
    """``f``'s ``(dx/dt, x0_hat)``: a tuple (a tensor would be unpacked along its batch dimension silently)."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError(f"f must return a pair (dx/dt, x0_hat), got {type(out).__name__}")
    _check_drift(out[0], x, t)
    return out


def solve_adaptive(
    f: Callable,
    x: torch.Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_nfe: int = 100_000,
) -> tuple[torch.Tensor, int]:
    """Adaptive Runge–Kutta 4(5) (scipy's ``solve_ivp``, as in Song et al.'s reference code). ``f(x, t) -> dx/dt``
    (a tensor). The state is flattened to float64 for scipy and cast back. Returns ``(x(t1), nfe)``.

    Args:
        f: ``f(x, t) -> dx/dt``, a tensor of ``x``'s shape.
        x: the state at ``t0``, a floating-point tensor without NaN or infinity.
        t0, t1: finite start and end times (either order).
        rtol, atol: the relative and absolute tolerances, finite and > 0.
        max_nfe: the most evaluations of ``f`` allowed (an integer >= 1): a guard against a run that never ends.

    Raises:
        TypeError: ``f`` not callable; a time or tolerance that is not a number.
        ValueError: ``x`` not floating or not finite; a NaN or infinite time (scipy would step forever); a
            tolerance not > 0; ``f`` returning another shape, or NaN or infinity.
        RuntimeError: scipy reports a failure, or ``max_nfe`` evaluations did not reach ``t1``.
    """
    from scipy.integrate import solve_ivp

    check_callable("f", f)
    _check_state(x)
    check_real("t0", t0)
    check_real("t1", t1)
    check_real("rtol", rtol, 0, low_open=True)
    check_real("atol", atol, 0, low_open=True)
    check_int("max_nfe", max_nfe, 1)
    t0, t1 = float(t0), float(t1)
    shape, dtype, device = x.shape, x.dtype, x.device
    calls = 0

    def rhs(t, y):
        nonlocal calls
        calls += 1
        if calls > max_nfe:
            raise _BudgetExceeded
        xt = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
        d = f(xt, float(t))
        _check_drift(d, xt, float(t))
        out = d.detach().cpu().double().reshape(-1).numpy()
        if not np.isfinite(out).all():  # scipy would shrink the step and retry without end
            raise ValueError(f"f returned NaN or infinity at t = {float(t):g}; RK45 cannot integrate it")
        return out

    try:
        sol = solve_ivp(rhs, (t0, t1), x.detach().cpu().double().reshape(-1).numpy(), rtol=rtol, atol=atol,
                        method="RK45")  # fmt: skip
    except _BudgetExceeded:
        raise RuntimeError(
            f"RK45 did not reach t1 = {t1:g} from t0 = {t0:g} within max_nfe = {max_nfe} evaluations of f (a stiff "
            f"or diverging drift); raise max_nfe or loosen rtol/atol"
        ) from None
    if not sol.success:
        raise RuntimeError(f"RK45 failed: {sol.message}")
    return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).reshape(shape).to(device=device, dtype=dtype), sol.nfev
