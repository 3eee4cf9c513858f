"""Hypothesis profiles of the property-based tests (issue 18, item 4).

Two profiles are registered here, and one is loaded for the whole session:

- ``quick``, the default (the ordinary test command and CI): 20 examples per property, derandomized, so that
  every run draws the same examples and a failure reproduces exactly; the folder runs in well under a minute on the
  2-core CPU.
- ``nightly``: 1000 examples per property (a few minutes), with fresh randomness on every run, to search deeper
  for counterexamples. Run it with::

      HYPOTHESIS_PROFILE=nightly .venv/bin/python -m pytest tests/property

  A failure prints the falsifying example and a ``@reproduce_failure`` blob; turn the example into a regression
  test (``test_regression_<what>`` in the tests file of the module that had the bug) and into an ``@example`` of
  the property.

A property that fails because of a library bug not fixed yet is marked ``xfail(strict=True)`` with the falsifying
example as an ``@example`` (so that the quick profile always meets it): once the bug is fixed the test passes,
which a strict xfail reports as a failure — then remove the mark and keep the example.

Both profiles switch off Hypothesis' example database (``database=None``) and its on-disk cache lives in the
system's temporary directory (``HYPOTHESIS_STORAGE_DIRECTORY`` overrides it), so no ``.hypothesis`` folder is written
into the repository. Neither has a deadline: one example's time depends on the machine's load (two CPUs shared
with other tests), not on the property, and the folder's total time is bounded by ``max_examples`` instead.
``HealthCheck.too_slow`` is suppressed for the same reason: several strategies build whole schedules, operators or
sampler runs per example, and that cost is the point of the test, not a sign of a bad strategy.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(
    os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY") or Path(tempfile.gettempdir()) / "diffu-hypothesis"
)

_COMMON = dict(database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)

settings.register_profile("quick", max_examples=20, derandomize=True, **_COMMON)
settings.register_profile("nightly", max_examples=1000, derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))
