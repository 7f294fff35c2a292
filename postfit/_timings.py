"""Timings of estimators that the automatic backend measured, kept for later calls.

Measuring costs the automatic backend a few percent of a run: its probes
score the first rows on one thread, then two blocks on two threads. A user
who scores batch after batch with the same fitted estimator would pay that
on every call, for the same result. So each measurement is kept, per
estimator object and input layout, and later calls plan from it.

A kept measurement is dropped when it is older than ``REUSE_SECONDS`` or its
estimator is garbage-collected. It is also dropped when a run planned from it
takes far more time than it predicted: the estimator was fitted again in
place, or the machine became busy. A run far faster than predicted lowers the
kept costs instead, because measuring again would cost more than the run.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Seconds for which a measurement is reused before the probes run again.
REUSE_SECONDS = 300.0
#: A run planned from a kept measurement drops it when it took more than
#: this many times its predicted single-thread time, or less than that time
#: divided by this factor and the worker count.
MISMATCH_FACTOR = 3.0


@dataclass(frozen=True)
class Timing:
    """Measurements of the probes: the fixed cost of a call, the cost of a row, thread scaling."""

    seconds_per_call: float
    seconds_per_row: float
    #: Two threads' speed-up over one; None until a run was large enough to measure it.
    two_thread_speedup: float | None
    taken_at: float
    #: How many times the speed-up was measured. A low one is measured again, up
    #: to ``SPEEDUP_PROBE_CHECKS`` or ``SPEEDUP_THREADED_CHECKS`` times in all.
    speedup_probes: int = 0

    def single_thread_seconds(self, rows: int) -> float:
        """Return the predicted time of one call on ``rows`` rows on one thread."""
        return self.seconds_per_call + self.seconds_per_row * rows

    def too_slow(self, rows: int, elapsed: float) -> bool:
        """Return whether a run of ``rows`` rows took far longer than predicted."""
        return elapsed > MISMATCH_FACTOR * self.single_thread_seconds(rows)

    def too_fast(self, rows: int, elapsed: float, n_workers: int) -> bool:
        """Return whether a run of ``rows`` rows on ``n_workers`` was far faster than predicted."""
        return elapsed * MISMATCH_FACTOR * max(n_workers, 1) < self.single_thread_seconds(rows)

    def lowered_to(self, rows: int, elapsed: float, n_workers: int) -> Timing:
        """Return this timing with its costs lowered to what a faster run allows.

        The run's single-thread time is at most ``elapsed`` times the worker
        count, ``bound``, so neither a call nor ``rows`` rows are predicted to
        cost more. The rows alone keep all of ``bound``, because the planner
        weighs the work of the rows: with the call's cost taken out, a linear
        model's 2,000,000 rows (40 ms on two threads) fell below the work that
        threads pay for. Short probes can read a first call's one-time costs
        (imports, caches) as the cost of a row, and predicted ten times the
        work of a linear model's 10,000 rows.
        """
        bound = elapsed * max(n_workers, 1)
        per_call = min(self.seconds_per_call, bound)
        per_row = min(self.seconds_per_row, bound / max(rows, 1))
        return dataclasses.replace(
            self, seconds_per_call=per_call, seconds_per_row=max(per_row, 1e-12)
        )


def input_layout(X, method: str, kwargs: dict):
    """Return a hashable key for what makes X's rows cost what they cost, or None.

    The key contains the method, the input's type, dtypes, width and memory
    order. None means that no measurement is kept: keyword arguments (such
    as ``return_std``) and sparse density change the cost in ways the key
    cannot hold.

    Examples
    --------
    >>> input_layout(np.zeros((10, 3)), "predict", {})
    ('predict', 'ndarray', '<f8', (3,), True)
    >>> input_layout(np.zeros((10, 3)), "predict", {"return_std": True}) is None
    True
    """
    if kwargs:
        return None
    if isinstance(X, np.ndarray):
        return (method, "ndarray", X.dtype.str, X.shape[1:], bool(X.flags.c_contiguous))
    if isinstance(X, pd.DataFrame):
        dtypes = tuple(str(dtype) for dtype in X.dtypes)
        return (method, "DataFrame", dtypes, tuple(map(str, X.columns)))
    return None


class TimingMemory:
    """Timings per estimator object and input layout, dropped with their estimator.

    Estimators are keyed by object identity, through weak references, so an
    estimator's own ``__hash__`` and ``__eq__`` (which may raise or return
    arrays) are never called.
    """

    def __init__(self):
        # Reentrant, because a weak reference's callback can run inside a
        # locked section when a collection starts there.
        self._lock = threading.RLock()
        self._by_id: dict[int, tuple[weakref.ref, dict]] = {}

    def _timings(self, estimator, create: bool):
        key = id(estimator)
        entry = self._by_id.get(key)
        if entry is not None and entry[0]() is not estimator:
            entry = None
        if entry is None and create:
            try:
                ref = weakref.ref(estimator, functools.partial(self._drop, key))
            except TypeError:
                return None
            entry = (ref, {})
            self._by_id[key] = entry
        return None if entry is None else entry[1]

    def _drop(self, key, ref):
        with self._lock:
            entry = self._by_id.get(key)
            if entry is not None and entry[0] is ref:
                del self._by_id[key]

    def get(self, estimator, layout) -> Timing | None:
        """Return the kept timing of ``estimator`` on ``layout``, or None."""
        if layout is None:
            return None
        with self._lock:
            timings = self._timings(estimator, create=False)
            timing = None if timings is None else timings.get(layout)
            if timing is not None and time.monotonic() - timing.taken_at > REUSE_SECONDS:
                del timings[layout]
                timing = None
        return timing

    def put(self, estimator, layout, timing: Timing) -> None:
        """Keep ``timing`` for ``estimator`` on ``layout``.

        Estimators that cannot be weakly referenced are skipped.
        """
        if layout is None:
            return
        with self._lock:
            timings = self._timings(estimator, create=True)
            if timings is not None:
                timings[layout] = timing

    def forget(self, estimator, layout) -> None:
        """Drop the timing of ``estimator`` on ``layout``, if kept."""
        with self._lock:
            timings = self._timings(estimator, create=False)
            if timings is not None:
                timings.pop(layout, None)

    def __len__(self) -> int:
        return len(self._by_id)

    def clear(self) -> None:
        """Drop every kept timing."""
        with self._lock:
            self._by_id.clear()


#: The process-wide memory that automatic in-memory runs share.
MEMORY = TimingMemory()
