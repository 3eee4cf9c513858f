"""The committed bad-input sweep of issue 18 (see tests/sweep/probes.py)."""
