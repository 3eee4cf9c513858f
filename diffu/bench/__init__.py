"""Benchmarks: ``python -m diffu.bench [COMMAND] [--tiny] [--out DIR] [--device DEV] …`` (see :mod:`diffu.bench.cli`).

The heavy runs behind the numbers that the chapters show from committed result files. One module per chapter:

- :mod:`diffu.bench.sampling` (§2.2, §2.5): ``speed``, ``fd``, ``nfe``;
- :mod:`diffu.bench.guidance` (§2.3, §2.4): ``guidance``;
- :mod:`diffu.bench.arch` (§2.6): ``dit``, ``ablation``, ``probe``, ``t2i``;
- :mod:`diffu.bench.inverse` (§4.3): ``inverse``;
- :mod:`diffu.bench.medical` (§5): ``medical`` (sparse-view CT and accelerated MRI);
- :mod:`diffu.bench.medical_cost` (§5.1): ``medical_cost`` (2D vs 3D denoisers as the volume grows);
- :mod:`diffu.bench.medical_anomaly` (§5.1.4): ``medical_anomaly`` (masked DPS against AnoDDPM, an autoencoder and the
  mirror difference on synthetic lesions);
- :mod:`diffu.bench.medical_volume` (§5.1.3): ``medical_volume`` (3D reconstruction with a 2D prior, stability,
  uncertainty);
- :mod:`diffu.bench.notebooks` (the project's time budgets): ``notebooks``, ``suite``;
- ``all`` (the default): speed, notebooks and suite.

What they share (results directory, timing, the environment stored with each result, JSON writing) is in
:mod:`diffu.bench.common`. Results go to ``--out DIR``, by default ``book/results`` relative to the working
directory (run from the repository root); ``--tiny`` runs, which the tests use so that the committed numbers stay
reproducible, write only where ``--out`` says. Nothing in the library imports this package.
"""
