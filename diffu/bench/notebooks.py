"""The project's time budgets: ``python -m diffu.bench notebooks`` and ``python -m diffu.bench suite``.

- ``notebooks``: seconds to execute each notebook of ``book/`` and ``labs/source/`` (budget: 60 s each);
- ``suite``: seconds for the whole test command (``python -m pytest``; budget: 15 min).

Both read the repository from ``root`` (default: the working directory, i.e. run them from the repository root).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

#: Seconds each notebook may take on the 2-core CPU.
NOTEBOOK_BUDGET_S = 60
#: Seconds the whole test command may take on the 2-core CPU.
SUITE_BUDGET_S = 900


def notebook_paths(root: str | Path = ".") -> list[Path]:
    """Every ``*.ipynb`` under ``root/book`` and ``root/labs/source`` (the labs' solution sources; not the student
    pages of ``labs/student`` nor nbgrader's copies, whose stubs raise), sorted, without built copies (``_build``)."""
    root = Path(root)
    return sorted(p for d in ("book", "labs/source") for p in (root / d).rglob("*.ipynb") if "_build" not in p.parts)


#: The longest single wait of one poll for a kernel message, in seconds: the most a lost wake-up can cost.
POLL_SLICE_S = 1.0


def install_sliced_reply_polling() -> None:
    """Make jupyter_client wait for kernel messages in polls of at most :data:`POLL_SLICE_S` seconds (idempotent).

    Why: nbclient waits for a cell's ``execute_reply`` with one ``await socket.poll(timeout)`` on the shell channel
    (``jupyter_client.channels.AsyncZMQSocketChannel.get_msg``) while it reads IOPub on the same event loop. pyzmq's
    asyncio poll watches zmq's edge-triggered file descriptor, and a wake-up can be lost when both sockets are busy
    (many widget comm messages, then the reply): the reply is already queued, but the poll only notices it at its
    timeout. The kernel then sits idle for the whole cell timeout (120 s in the book build) — jupyter/nbclient#312,
    zeromq/pyzmq#2173; measured on §2.5, 160 s instead of 40 s, and a plain nbclient run of it that hung. Polling in
    slices bounds the cost of a lost wake-up by one slice; a message that is really missing still times out when
    the caller asked for it to. Used by the book build (``book/_ext/kernel_reply_poll.py``) and
    :func:`bench_notebooks`.
    """
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    original = AsyncZMQSocketChannel.get_msg
    if getattr(original, "_diffu_sliced", False):
        return

    async def get_msg_sliced(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait = POLL_SLICE_S if left is None else min(POLL_SLICE_S, left)
            try:
                return await original(self, wait)
            except Empty:
                if left is not None and left <= POLL_SLICE_S:
                    raise

    get_msg_sliced._diffu_sliced = True
    get_msg_sliced.__doc__ = original.__doc__
    get_msg_sliced.__wrapped__ = original  # inspect.unwrap finds jupyter_client's method
    AsyncZMQSocketChannel.get_msg = get_msg_sliced


def bench_notebooks(paths=None, timeout=600, root: str | Path = ".") -> dict:
    """``{path relative to root: seconds}`` to execute each notebook (default :func:`notebook_paths`) in a fresh
    ``python3`` kernel, in the notebook's own folder."""
    import nbformat
    from nbclient import NotebookClient

    install_sliced_reply_polling()  # a lost zmq wake-up would otherwise idle a cell until its timeout
    root = Path(root)
    out = {}
    for p in paths or notebook_paths(root):
        p = Path(p)
        nb = nbformat.read(p, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(p.parent)}}
        ).execute()
        secs = time.perf_counter() - t0
        try:
            out[str(p.resolve().relative_to(root.resolve()))] = secs
        except ValueError:  # a notebook outside root
            out[str(p)] = secs
    return out


def bench_suite(args=(), root: str | Path = ".") -> dict:
    """Seconds, return code and summary line of ``python -m pytest -q *args`` run in ``root``."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=root, capture_output=True, text=True)
    tail = (res.stdout.strip().splitlines() or [""])[-1]
    return {"seconds": time.perf_counter() - t0, "returncode": res.returncode, "summary": tail}


def run_notebooks(args) -> dict:
    """``python -m diffu.bench notebooks``: print :func:`bench_notebooks` against the budget."""
    res = bench_notebooks()
    print(f"[notebooks] seconds to execute (budget {NOTEBOOK_BUDGET_S} s each)")
    for k, v in res.items():
        print(f"  {k:45s} {v:6.1f}" + ("" if v <= NOTEBOOK_BUDGET_S else "  OVER BUDGET"))
    return res


def run_suite(args) -> dict:
    """``python -m diffu.bench suite``: print :func:`bench_suite` against the budget."""
    s = bench_suite()
    print(f"[suite] python -m pytest: {s['seconds']:.0f} s (budget {SUITE_BUDGET_S} s), exit {s['returncode']}: "
          f"{s['summary']}")  # fmt: skip
    return s


#: The workload of ``python -m diffu.bench threads``, run in a child process: ``small`` times ``steps`` Adam steps
#: of a 3-layer MLP on 512 points (thousands of tiny operations, like the chapters' toy trainings), ``conv`` ten
#: 64-channel 3×3 convolutions of a 64×64×28×28 batch (one large operation each, like sampling the UNet).
_THREADS_CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1])); steps = int(sys.argv[2]); g = torch.Generator().manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(3, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128), torch.nn.SiLU(),
                          torch.nn.Linear(128, 2))
opt = torch.optim.Adam(net.parameters(), 1e-3); x = torch.randn(512, 3, generator=g)
t0 = time.perf_counter()
for _ in range(steps):
    loss = net(x).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()
small = time.perf_counter() - t0
conv = torch.nn.Conv2d(64, 64, 3, padding=1); z = torch.randn(64, 64, 28, 28, generator=g)
t0 = time.perf_counter()
with torch.no_grad():
    for _ in range(max(1, steps // 40)):
        conv(z)
print(json.dumps({"small": small, "conv": time.perf_counter() - t0}))
"""


def bench_threads(threads=(1, 2), steps: int = 400, busy: bool = True) -> list[dict]:
    """Seconds of a tiny-operation and a large-operation workload at each PyTorch thread count, with the machine
    otherwise idle and (``busy``) with one other process spinning on a core — the situation of a notebook whose
    thread pool spans every core while anything else runs. Returns one row per (threads, competitor)."""
    import json

    rows = []
    for competitor in (False, True) if busy else (False,):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
        try:
            for n in threads:
                out = subprocess.run(
                    [sys.executable, "-c", _THREADS_CHILD, str(n), str(steps)], capture_output=True, text=True
                )
                if out.returncode:
                    raise RuntimeError(f"threads benchmark child failed: {out.stderr[-500:]}")
                rows.append({"threads": n, "busy_core": competitor, **json.loads(out.stdout)})
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    return rows


def run_threads(args) -> list[dict]:
    """``python -m diffu.bench threads``: :func:`bench_threads` for 1 thread and for every core."""
    from ..book import available_cores

    cores = available_cores()
    rows = bench_threads(threads=sorted({1, cores}), steps=40 if args.tiny else 400)
    print(f"[threads] seconds, {cores} cores: a small MLP's Adam steps (tiny ops) and 64-channel convolutions")
    print(f"  {'threads':>7} {'other process':>14} {'tiny ops':>9} {'convs':>7}")
    for r in rows:
        busy = "busy on 1 core" if r["busy_core"] else "none"
        print(f"  {r['threads']:7d} {busy:>14} {r['small']:9.2f} {r['conv']:7.2f}")
    return rows
