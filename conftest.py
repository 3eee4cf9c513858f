"""How ``pytest`` spreads the test run over its workers (README command 2 runs two: ``-n 2 --dist loadfile`` in
pyproject.toml; ``-n 0`` runs everything in one process).

- Each test file goes whole to one worker (``--dist loadfile``): nbval runs a notebook's cells in order in one kernel,
  and a module's fixtures are built once. Files that share something costlier go together (``SHARED``): the labs'
  grading run (``tests/labs_attacks/course.py``, made once per process) serves two test files.
- Each worker's PyTorch thread pool gets its share of the cores: two workers with a pool of every core each would
  oversubscribe the CPU.
"""

from __future__ import annotations

import os

#: test files that must run in the same worker, keyed by file: the name of their shared work unit
SHARED = {
    "tests/project/test_labs.py": "labs grading run",
    "tests/labs_attacks/test_attacks.py": "labs grading run",
}


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        from diffu.book import available_cores

        torch.set_num_threads(max(1, available_cores() // int(workers)))


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile``, with the files of ``SHARED`` in one work unit (other modes: pytest-xdist's own)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return SHARED.get(file, file)

    return SharedFileScheduling(config, log)
