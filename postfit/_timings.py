"""Timings of estimators that the automatic backend measured, kept for later calls.

Measuring costs the automatic backend a few percent of a run: its probes
score the first rows on one thread, then two blocks on two threads. A user
who scores batch after batch with the same fitted estimator would pay that
on every call, for the same result. So each measurement is kept, per
estimator object and input layout, and later calls plan from it.

A kept measurement is dropped when it is older than ``REUSE_SECONDS``, when
its estimator is garbage-collected, and when a run planned from it takes far
more or far less time than it predicted (an estimator fitted again in place,
or a machine that became busy).
"""

from __future__ import annotations

import contextlib
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

    def single_thread_seconds(self, rows: int) -> float:
        """Return the predicted time of one call on ``rows`` rows on one thread."""
        return self.seconds_per_call + self.seconds_per_row * rows

    def disagrees(self, rows: int, elapsed: float, n_workers: int) -> bool:
        """Return whether a run of ``rows`` rows that took ``elapsed`` seconds contradicts it."""
        predicted = self.single_thread_seconds(rows)
        too_slow = elapsed > MISMATCH_FACTOR * predicted
        too_fast = elapsed * MISMATCH_FACTOR * max(n_workers, 1) < predicted
        return too_slow or too_fast


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
    """Timings per estimator object and input layout, dropped with their estimator."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_estimator = weakref.WeakKeyDictionary()

    def get(self, estimator, layout) -> Timing | None:
        """Return the kept timing of ``estimator`` on ``layout``, or None."""
        if layout is None:
            return None
        with self._lock:
            try:
                timings = self._by_estimator.get(estimator)
            except TypeError:
                return None
            timing = None if timings is None else timings.get(layout)
            if timing is not None and time.monotonic() - timing.taken_at > REUSE_SECONDS:
                del timings[layout]
                timing = None
        return timing

    def put(self, estimator, layout, timing: Timing) -> None:
        """Keep ``timing`` for ``estimator`` on ``layout``.

        Estimators that cannot be weakly referenced or hashed are skipped.
        """
        if layout is None:
            return
        with self._lock, contextlib.suppress(TypeError):
            self._by_estimator.setdefault(estimator, {})[layout] = timing

    def forget(self, estimator, layout) -> None:
        """Drop the timing of ``estimator`` on ``layout``, if kept."""
        with self._lock:
            try:
                timings = self._by_estimator.get(estimator)
            except TypeError:
                return
            if timings is not None:
                timings.pop(layout, None)

    def clear(self) -> None:
        """Drop every kept timing."""
        with self._lock:
            self._by_estimator.clear()


#: The process-wide memory that automatic in-memory runs share.
MEMORY = TimingMemory()
