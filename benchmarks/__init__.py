"""Benchmarks of postfit against the plain estimator and other tools.

Run every suite with ``python -m benchmarks.run`` (``--quick`` for a small
smoke run, ``--only NAME`` for one suite). Results are saved as JSON under
``benchmarks/results/`` and rendered into ``docs/benchmarks.md``.
"""
