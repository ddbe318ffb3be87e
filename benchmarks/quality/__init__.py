"""The decision benchmark as a package: :mod:`quality.protocol` (pools, metric, trainings,
phases), :mod:`quality.ledger` (the typed ledger) and :mod:`quality.render` (tables from
the ledgers). ``benchmarks/mixture_quality.py`` is its command; the variance pilot and the
machine check use the same protocol. Run from the repository root (``python
benchmarks/<script>.py``): Python puts ``benchmarks/`` first on the path, so ``import
quality`` needs no path edit.
"""
