"""Fixed-step (Euler, Heun) and adaptive (RK45) integration of ``dx/dt = f(x, t)`` — shared by the probability-flow
ODE (:mod:`diffu.sde`) and flow matching (:mod:`diffu.flow`), chapter §2.5.

``f(x, t) -> (dx/dt, x0_hat)``: the drift and the denoised estimate at ``(x, t)`` (reported to callbacks).
Time runs along the given grid in either direction; ``t`` reaches ``f`` as a Python float.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .sampling import SamplerState

__all__ = ["SOLVERS", "integrate", "solve_adaptive"]

#: The fixed-step solvers of :func:`integrate`.
SOLVERS = ("euler", "heun")


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
    Karras et al. 2022). Returns ``(x, nfe)``. Heun costs two evaluations per step."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    ts = [float(t) for t in ts]
    if len(ts) < 2:
        raise ValueError(f"ts must hold at least two times, got {len(ts)}")
    nfe = 0
    for i in tqdm(range(len(ts) - 1), disable=not progress, desc=desc):
        t, t_next = ts[i], ts[i + 1]
        h = t_next - t
        d, x0 = f(x, t)
        nfe += 1
        if solver == "euler":
            x = x + h * d
        else:
            x_pred = x + h * d
            d2, _ = f(x_pred, t_next)
            nfe += 1
            x = x + h * 0.5 * (d + d2)
        if callback is not None:
            callback(SamplerState(i, t, x, x0))
    return x, nfe


def solve_adaptive(
    f: Callable, x: torch.Tensor, t0: float, t1: float, *, rtol: float = 1e-5, atol: float = 1e-5
) -> tuple[torch.Tensor, int]:
    """Adaptive Runge–Kutta 4(5) (scipy's ``solve_ivp``, as in Song et al.'s reference code). ``f(x, t) -> dx/dt``
    (a tensor). The state is flattened to float64 for scipy and cast back. Returns ``(x(t1), nfe)``."""
    from scipy.integrate import solve_ivp

    shape, dtype, device = x.shape, x.dtype, x.device

    def rhs(t, y):
        xt = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
        return f(xt, float(t)).detach().cpu().double().reshape(-1).numpy()

    sol = solve_ivp(rhs, (t0, t1), x.detach().cpu().double().reshape(-1).numpy(), rtol=rtol, atol=atol,
                    method="RK45")  # fmt: skip
    if not sol.success:
        raise RuntimeError(f"RK45 failed: {sol.message}")
    return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).reshape(shape).to(device=device, dtype=dtype), sol.nfev
