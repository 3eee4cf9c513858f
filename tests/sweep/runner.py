"""Run the bad-input sweep and print its report: ``python -m tests.sweep.runner [--root DIR] [--module M] [-v]``.

Prints the count of each outcome (:data:`tests.sweep.kit.OUTCOMES`) overall and per module, then every probe that
is not a clear error or an accepted result, with its message. ``--root DIR`` runs the sweep against another
checkout of the package (a repository root holding ``diffu/``, or the ``diffu`` folder itself): it is put first on
``sys.path`` before diffu is imported, and probes of names that do not exist there count as "n/a".
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path


def _use_root(root: str) -> Path:
    p = Path(root).resolve()
    if (p / "diffu" / "__init__.py").exists():
        top = p
    elif p.name == "diffu" and (p / "__init__.py").exists():
        top = p.parent
    else:
        raise SystemExit(f"--root {root}: neither DIR/diffu/__init__.py nor DIR/__init__.py (a diffu folder) exists")
    if "diffu" in sys.modules:
        raise SystemExit("--root must be applied before diffu is imported")
    sys.path.insert(0, str(top))
    return top


#: Seconds the parent waits beyond the per-probe limit before it kills a worker stuck in C code (a long scipy or
#: LAPACK call does not return to Python, so the in-worker alarm cannot interrupt it).
GRACE = 3.0


def _preimport():
    """Import diffu's modules once in the parent, so that a worker forked after a hang starts warm."""
    import importlib

    from .probes import MODULES

    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 (a module that does not import shows up in its probes)
            pass


def _worker(probes, start, limit, conn):
    """Forked worker: classify ``probes[start:]`` one by one and send each result to the parent."""
    import os

    import torch

    from .kit import classify

    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        for j in range(start, len(probes)):
            r = classify(probes[j], limit)
            conn.send((j, r.outcome, r.detail, r.seconds))
    finally:
        conn.close()
        os._exit(0)


def _run_forked(probes, limit, progress):
    """Run the probes in forked workers: a worker that sends nothing for ``limit + GRACE`` seconds is killed, its probe
    counted as a hang, and a fresh worker goes on with the next probe (a hang never blocks the sweep)."""
    import multiprocessing as mp

    from .kit import HANG, OBSCURE, Result

    ctx = mp.get_context("fork")
    results, i, n = [None] * len(probes), 0, len(probes)
    while i < n:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(probes, i, limit, send), daemon=True)
        proc.start()
        send.close()
        while i < n:
            if not recv.poll(limit + GRACE):
                proc.kill()
                results[i] = Result(
                    probes[i], HANG, f"no result after {limit + GRACE:g} s (worker killed)", limit + GRACE
                )
            else:
                try:
                    j, outcome, detail, secs = recv.recv()
                except EOFError:  # the worker died (a crash inside torch or a C library)
                    proc.join()
                    results[i] = Result(probes[i], OBSCURE, f"the process crashed (exit code {proc.exitcode})", 0.0)
                else:
                    results[j] = Result(probes[j], outcome, detail, secs)
                    if progress:
                        progress(j, n, results[j])
                    i = j + 1
                    continue
            if progress:
                progress(i, n, results[i])
            i += 1
            break
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
        recv.close()
    return results


def run_sweep(probes=None, modules=None, limit=None, progress=None, isolate=True):
    """Classify ``probes`` (default: the whole table, or the probes of ``modules``); returns the list of results.

    With ``isolate`` (the default where ``os.fork`` exists) the probes run in forked worker processes, so that a
    probe stuck in C code is killed after ``limit + GRACE`` seconds; otherwise in this process, where only a hang in
    Python code is interrupted. Torch runs on one thread; the caller's RNG state and thread count are restored;
    matplotlib uses the Agg backend."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import torch

    from . import fixtures
    from .kit import TIME_LIMIT, classify
    from .probes import all_probes

    limit = TIME_LIMIT if limit is None else limit
    probes = all_probes() if probes is None else probes
    if modules:
        probes = [p for p in probes if p.module in modules or p.module.split(".")[0] in modules]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    fixtures.tmp_root()
    try:
        with torch.random.fork_rng():
            if isolate and hasattr(os, "fork"):
                _preimport()
                return _run_forked(probes, limit, progress)
            torch.manual_seed(0)
            results = []
            for i, p in enumerate(probes):
                torch.set_num_threads(1)
                results.append(classify(p, limit))
                if progress:
                    progress(i, len(probes), results[-1])
            return results
    finally:
        torch.set_num_threads(threads)
        fixtures.clear()
        fixtures.remove_tmp()


def counts(results) -> tuple[Counter, dict]:
    total = Counter(r.outcome for r in results)
    per = defaultdict(Counter)
    for r in results:
        per[r.probe.module][r.outcome] += 1
    return total, per


def _commit(root) -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
        return out.stdout.strip()[:90]
    except OSError:
        return ""


def report(results, seconds: float | None = None, root: str | None = None, failures="all") -> str:
    """The text report: counts overall and per module, then (``failures``: "all", "none" or a collection of module
    names) every probe that is neither a clear error nor an accepted result, with its message."""
    from .kit import OUTCOMES, PASS

    total, per = counts(results)
    key = ("clear error", "obscure error", "silently wrong", "hang")
    cols = [o for o in OUTCOMES if total[o] or o in key]
    lines = []
    here = root or Path(__file__).resolve().parents[2]
    commit = _commit(here)
    where = f" against {root}" if root else ""
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    lines.append(f"bad-input sweep{where}: {len(results)} probes{took}" + (f"\ncommit: {commit}" if commit else ""))
    lines.append("overall: " + ", ".join(f"{o}: {total[o]}" for o in cols))
    w = max(len(m) for m in per) + 2
    widths = [max(len(o), 5) + 2 for o in cols]
    lines.append("")
    lines.append(f"{'module':{w}}" + "".join(f"{o:>{k}}" for o, k in zip(cols, widths)))
    for m in sorted(per):
        lines.append(f"{m:{w}}" + "".join(f"{per[m][o]:>{k}}" for o, k in zip(cols, widths)))
    if failures != "none":
        bad = [r for r in results if r.outcome not in PASS and r.outcome != "n/a"]
        lines.append("")
        lines.append(f"not a clear error or an accepted result ({len(bad)}):")
        if failures != "all":
            bad = [r for r in bad if r.probe.module in failures]
            lines.append(f"(listed for {', '.join(sorted(failures))} only; `python -m tests.sweep.runner` lists all)")
        by = defaultdict(list)
        for r in bad:
            by[r.probe.module].append(r)
        for m in sorted(by):
            lines.append(f"  [{m}]")
            for r in by[m]:
                lines.append(f"    {r.outcome:>19} | {r.probe.id} | {r.detail}")
    slow = sorted(results, key=lambda r: -r.seconds)[:8]
    lines.append("")
    lines.append("slowest probes: " + ", ".join(f"{r.probe.id} {r.seconds:.2f}s" for r in slow))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.sweep.runner", description=__doc__.splitlines()[0])
    p.add_argument(
        "--root", default=None, help="run against this checkout of the package (a repository root or its diffu/)"
    )
    p.add_argument("--module", action="append", default=None, help="only these modules (repeatable), e.g. samplers")
    p.add_argument("--out", default=None, help="also write the report to this file")
    p.add_argument(
        "--list",
        default="all",
        metavar="WHICH",
        help="which failing probes to list: all (default), none, or comma-separated modules (e.g. issue18)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print each probe as it runs")
    args = p.parse_args(argv)
    root = _use_root(args.root) if args.root else None

    def show(i, n, r):
        if args.verbose:
            print(f"[{i + 1}/{n}] {r.outcome:>19} {r.seconds:6.2f}s {r.probe.id} | {r.detail}", flush=True)

    t0 = time.perf_counter()
    results = run_sweep(modules=args.module, progress=show)
    which = args.list if args.list in ("all", "none") else set(args.list.split(","))
    text = report(results, time.perf_counter() - t0, str(root) if root else None, which)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
