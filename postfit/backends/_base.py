"""The backend base class: ship the model and the input once, then map blocks."""

from __future__ import annotations

import contextlib
import numbers
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator

import joblib
import numpy as np
from joblib.parallel import (
    LokyBackend,
    MultiprocessingBackend,
    ThreadingBackend,
    get_active_backend,
)

from .._blocks import take_rows

__all__ = ["Backend", "InputSlicer", "check_n_jobs", "cpu_cores", "effective_n_workers"]

#: Seconds a core count stays cached. Counting reads cgroup files and the CPU
#: affinity (0.15 ms under cProfile), and each threaded call counted twice.
#: A changed affinity shows within this time.
CPU_COUNT_TTL = 1.0
_cpu_count_cache = (float("-inf"), 1)


def cpu_cores() -> int:
    """Return the cores this process may use (``joblib.cpu_count``), cached briefly."""
    global _cpu_count_cache
    now = time.monotonic()
    counted_at, count = _cpu_count_cache
    if now - counted_at > CPU_COUNT_TTL:
        count = joblib.cpu_count()
        _cpu_count_cache = (now, count)
    return count


def effective_n_workers(n_jobs) -> int:
    """Return the number of workers for ``n_jobs``, with scikit-learn's meaning.

    ``None`` means 1 unless a ``joblib.parallel_config`` context sets another
    value, ``-1`` means all cores, ``-2`` all but one, and so on.
    """
    check_n_jobs(n_jobs)
    if n_jobs is not None and n_jobs < 0 and _counts_local_cores():
        # Resolved here from the cached count; joblib still applies its own
        # rules (one worker inside a daemon process, for example).
        n_jobs = max(cpu_cores() + 1 + int(n_jobs), 1)
    return max(1, joblib.effective_n_jobs(None if n_jobs is None else int(n_jobs)))


def _counts_local_cores() -> bool:
    """Return whether joblib's active backend reads a negative ``n_jobs`` as local cores.

    Others, such as Ray's and Dask's joblib backends, count their cluster's
    CPUs instead, so joblib resolves ``n_jobs`` for them itself.
    """
    backend, _ = get_active_backend()
    return type(backend) in (LokyBackend, ThreadingBackend, MultiprocessingBackend)


def check_n_jobs(n_jobs) -> None:
    """Raise ValueError unless ``n_jobs`` is None or a nonzero int.

    Unlike :func:`effective_n_workers` it does not count the cores, which
    takes a few hundred microseconds, so the direct path can skip that.
    """
    # NumPy integers count: parameter grids built with np.arange produce them.
    if n_jobs is not None and (
        isinstance(n_jobs, (bool, np.bool_)) or not isinstance(n_jobs, numbers.Integral)
    ):
        raise ValueError(f"n_jobs must be an int or None, got {n_jobs!r}. Use -1 for all cores.")
    if n_jobs == 0:
        raise ValueError("n_jobs == 0 has no meaning. Use -1 for all cores or a positive count.")


def submit_until_full(pending: dict, blocks: Iterator, max_in_flight: int, submit) -> bool:
    """Submit blocks until ``max_in_flight`` are pending; return False once none are left.

    ``pending`` maps each handle that ``submit(block)`` returns (a future, an
    object reference) to its block, so every backend bounds memory the same way.
    """
    while len(pending) < max_in_flight:
        block = next(blocks, None)
        if block is None:
            return False
        pending[submit(block)] = block
    return True


class InputSlicer:
    """Cut rows of an in-memory input into what a worker receives for a block.

    The default passes the slice itself, which is right for backends that
    share the driver's memory. Process backends override it to pass a
    reference to shared memory instead of a pickled copy.
    """

    def __init__(self, X):
        self.X = X

    def __call__(self, start: int, stop: int):
        return take_rows(self.X, start, stop)


class Backend(ABC):
    """What runs the per-block kernel.

    A run uses a backend in three steps: :meth:`ship_model` once, which
    returns what the kernel receives in place of the model; :meth:`ship_input`
    once per in-memory input; then :meth:`imap_unordered` over the blocks.

    Parameters
    ----------
    n_workers : int
        Number of blocks scored at the same time.
    """

    #: Registered name of the backend.
    name: str = ""
    #: True when workers share the driver's memory (no pickling of blocks).
    in_process: bool = True
    #: True when many workers in one process share the GIL.
    shares_gil: bool = False
    #: Whether ``__init__`` raises a TypeError for options left over by the
    #: subclass. postfit's own backends do, and registered ones may keep them.
    rejects_unknown_options: bool = False

    def __init__(self, n_workers: int = 1, **options):
        if options and self.rejects_unknown_options:
            raise TypeError(
                f"Unknown backend_options {sorted(options)} for the {self.name!r} backend, "
                "which takes none of them. Remove them, or pass backend='dask' for "
                "{'client': ...} and backend='ray' for {'max_retries': ...}."
            )
        self.n_workers = n_workers
        self.options = options

    @contextlib.contextmanager
    def ship_model(self, estimator):
        """Yield what the kernel receives as its model; in-process backends pass it as is."""
        yield estimator

    @contextlib.contextmanager
    def ship_input(self, X):
        """Yield an :class:`InputSlicer` over X for this backend."""
        yield InputSlicer(X)

    def inner_threads(self, n_cores: int) -> int | None:
        """Return the thread limit for each call, so that workers × threads ≤ cores."""
        if self.n_workers <= 1:
            return None
        return max(1, n_cores // self.n_workers)

    @abstractmethod
    def imap_unordered(
        self, func: Callable, blocks: Iterable, max_in_flight: int
    ) -> Iterator[tuple[object, object]]:
        """Yield ``(block, func(block))`` pairs as they finish.

        At most ``max_in_flight`` blocks are submitted and not yet yielded at
        any time, which bounds memory. An exception raised by ``func`` is
        raised here with the failing block attached by the caller.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release what the backend holds beyond the run (nothing by default)."""
