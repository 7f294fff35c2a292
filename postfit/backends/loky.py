"""The loky backend: blocks in worker processes, for estimators that hold the GIL.

The model is pickled once per run into a private temporary file; each worker
process loads it on its first block and keeps it (see ``postfit._kernel``), so
it crosses the process boundary once per worker, not once per block. NumPy
inputs are written once to a memory-mapped ``.npy`` file (or used in place
when they already are a file-backed ``np.memmap``) and workers read their rows
from the map, so no block of a NumPy input is pickled.

joblib's own ``Parallel`` memory-maps large arrays too, but it hashes the whole
array each time a task is pickled; a hand-written map of one shared file per
run avoids that cost for inputs of many blocks.

postfit keeps its own pool of loky workers rather than loky's process-wide
reusable executor: joblib's ``Parallel`` (and every scikit-learn ``n_jobs``)
expects that shared executor to be joblib's own subclass, and fails with an
AttributeError on ``_temp_folder_manager`` after another user replaced it.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import shutil
import signal
import tempfile
import threading
import warnings

import cloudpickle
import numpy as np
from joblib.externals.loky import ProcessPoolExecutor

from .._errors import interrupt_behind
from .._kernel import ModelRef, content_token
from ..exceptions import WorkerCrashedError
from ._base import Backend, InputSlicer
from .threading import bounded_imap

logger = logging.getLogger(__name__)

__all__ = ["LokyBackend", "SharedRows", "private_temp_dir"]

# Idle worker processes are kept this many seconds for the next run, which
# then skips process start-up and, for the same model, the model load.
WORKER_IDLE_TIMEOUT = 300

_POOL_LOCK = threading.Lock()
_POOL: ProcessPoolExecutor | None = None

_MAPS_LOCK = threading.Lock()
_OPEN_MAPS: dict[str, np.ndarray] = {}


def private_temp_dir() -> str:
    """Create a directory only the current user can read, in RAM when possible."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="postfit-", dir=base)


def _create_private(path: str) -> str:
    """Create ``path`` readable by the current user only and return it.

    The directory is private already; the file mode keeps the model and the
    input private should a file be moved or the directory's mode changed.
    """
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
    return path


class SharedRows:
    """Rows ``start:stop`` of an array stored in a ``.npy`` file or raw memmap.

    A worker opens each file once and slices it, so loading a block reads
    only its rows from the page cache.
    """

    def __init__(self, path, start, stop, layout=None):
        self.path = path
        self.start = start
        self.stop = stop
        self.layout = layout

    def _open(self):
        with _MAPS_LOCK:
            array = _OPEN_MAPS.get(self.path)
            if array is None:
                if self.layout is None:
                    array = np.load(self.path, mmap_mode="r")
                else:
                    dtype, shape, order, offset = self.layout
                    array = np.memmap(
                        self.path, dtype=dtype, mode="r", shape=shape, order=order, offset=offset
                    )
                # Keep only the maps of the current run: a new path means a new run.
                _OPEN_MAPS.clear()
                _OPEN_MAPS[self.path] = array
            return array

    def load(self):
        return self._open()[self.start : self.stop]


def _memmap_layout(X):
    """Return (dtype, shape, order, offset) when X is a whole file-backed memmap."""
    if not isinstance(X, np.memmap) or not isinstance(X.base, mmap.mmap):
        return None
    if X.filename is None or not (X.flags.c_contiguous or X.flags.f_contiguous):
        return None
    order = "C" if X.flags.c_contiguous else "F"
    return (X.dtype, X.shape, order, X.offset)


class _SharedArraySlicer(InputSlicer):
    def __init__(self, path, layout=None):
        self.path = path
        self.layout = layout

    def __call__(self, start, stop):
        return SharedRows(self.path, start, stop, self.layout)


class _WritingSlicer(_SharedArraySlicer):
    """Write each block's rows of a C-ordered array to the shared file as it is cut.

    The workers start on the first blocks while the driver writes the next
    ones, instead of waiting for the whole array to be copied (0.12 s for
    2,000,000 × 20 float64). Rows before the first block cut, already scored
    by the planner's probes, are never written or read.
    """

    def __init__(self, path, X, fd, offset):
        super().__init__(path)
        self.rows = X.reshape(X.shape[0], -1) if X.ndim > 1 else X.reshape(-1, 1)
        self.fd = fd
        self.offset = offset
        self.row_nbytes = self.rows.shape[1] * X.itemsize
        # Rows written so far: one range, extended as blocks come in order.
        self.written = (0, 0)

    def __call__(self, start, stop):
        lo, hi = self.written
        if lo <= start <= hi:
            self._write(hi, stop)
            self.written = (lo, max(hi, stop))
        else:
            self._write(start, stop)
            self.written = (start, stop)
        return super().__call__(start, stop)

    def _write(self, start, stop):
        if stop <= start:
            return
        data = memoryview(self.rows[start:stop]).cast("B")
        position = self.offset + start * self.row_nbytes
        while len(data):
            done = os.pwrite(self.fd, data, position)
            data, position = data[done:], position + done


def call_recording_warnings(func, block):
    """Return ``(func(block), warnings)`` with the warnings raised during the call.

    Runs in a worker process, which scores one block at a time, so the
    process-wide ``catch_warnings`` cannot catch another block's warnings.
    """
    with warnings.catch_warnings(record=True) as caught:
        # Record every warning: the caller's filters decide what is shown.
        warnings.simplefilter("always")
        result = func(block)
    return result, [(w.category, str(w.message)) for w in caught]


def reraise_warnings(result_and_warnings):
    """Raise again, in the caller, the warnings recorded in a worker; return the result."""
    result, caught = result_and_warnings
    for category, message in caught:
        warnings.warn(message, category, stacklevel=2)
    return result


def _is_usable(pool, n_workers) -> bool:
    # NOTE: ``_flags`` is private to loky (checked with joblib 1.6.0); a pool
    # without it is taken as usable and fails loudly on submit if it is not.
    flags = getattr(pool, "_flags", None)
    broken = getattr(flags, "broken", None) or getattr(flags, "shutdown", False)
    return pool._max_workers == n_workers and not broken


def _interruptible(call, *args):
    """Return ``call(*args)``, raising the KeyboardInterrupt behind any error it raises."""
    try:
        return call(*args)
    except Exception as exc:
        interrupt = interrupt_behind(exc)
        if interrupt is None:
            raise
        raise interrupt from exc


def get_pool(n_workers: int) -> ProcessPoolExecutor:
    """Return postfit's pool of ``n_workers`` loky workers, starting one when needed.

    The pool lives across runs, so its idle workers (kept for
    ``WORKER_IDLE_TIMEOUT`` seconds) skip start-up and, for the same model,
    the model load.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and not _is_usable(_POOL, n_workers):
            _POOL.shutdown(wait=False)
            _POOL = None
        if _POOL is None:
            _POOL = ProcessPoolExecutor(max_workers=n_workers, timeout=WORKER_IDLE_TIMEOUT)
        return _POOL


def discard_pool(pool) -> None:
    """Shut ``pool`` down, kill its workers, and start a new pool on the next run."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is pool:
            _POOL = None
    try:
        pool.shutdown(wait=True, kill_workers=True)
    except RuntimeError:
        # A Ctrl-C that lands inside ``submit`` can stop loky after it spawned
        # the workers but before it started the thread that manages them, so
        # ``shutdown`` cannot join that thread and nothing would kill them.
        # NOTE: ``_processes`` is private to loky (checked with joblib 1.6.0).
        logger.debug("loky pool interrupted while starting; killing its workers")
        for process in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


class LokyBackend(Backend):
    """Score blocks in ``n_workers`` reusable loky worker processes.

    Warnings raised inside a worker process are recorded there and raised
    again in the caller, where the caller's warning filters apply.
    """

    name = "loky"
    in_process = False

    def __init__(self, n_workers=1, **options):
        super().__init__(n_workers, **options)
        self._temp_dir = None

    def _temp(self):
        if self._temp_dir is None:
            self._temp_dir = private_temp_dir()
        return self._temp_dir

    @contextlib.contextmanager
    def ship_model(self, estimator):
        payload = cloudpickle.dumps(estimator, protocol=5)
        token = content_token(payload)
        path = os.path.join(self._temp(), f"model-{token}.pkl")
        with open(_create_private(path), "wb") as f:
            f.write(payload)
        del payload
        try:
            yield ModelRef(path, token)
        finally:
            self._cleanup()

    @contextlib.contextmanager
    def ship_input(self, X):
        if not isinstance(X, np.ndarray) or X.dtype.hasobject or X.ndim == 0:
            yield InputSlicer(X)
            return
        layout = _memmap_layout(X)
        if layout is not None:
            yield _SharedArraySlicer(os.fspath(X.filename), layout)
            return
        path = os.path.join(self._temp(), f"input-{id(X):x}.npy")
        if not X.flags.c_contiguous:
            # Writing the buffer to the file takes less than half the time of
            # assigning into a fresh memmap, which faults in every page first.
            with open(_create_private(path), "wb") as f:
                np.lib.format.write_array(f, X, allow_pickle=False)
            yield _SharedArraySlicer(path)
            return
        with open(_create_private(path), "wb") as f:
            np.lib.format.write_array_header_2_0(f, np.lib.format.header_data_from_array_1_0(X))
            offset = f.tell()
            f.truncate(offset + X.nbytes)
            yield _WritingSlicer(path, X, f.fileno(), offset)

    def imap_unordered(self, func, blocks, max_in_flight):
        pool = _interruptible(get_pool, self.n_workers)

        def stop_workers(exc):
            # On KeyboardInterrupt, when the consumer stops early, or when a
            # worker died (which breaks a loky pool), stop the running blocks
            # at once and start a fresh pool next time. An error raised by the
            # estimator leaves the pool for the next run.
            if isinstance(exc, WorkerCrashedError) or not isinstance(exc, Exception):
                discard_pool(pool)

        yield from bounded_imap(
            lambda block: _interruptible(pool.submit, call_recording_warnings, func, block),
            blocks,
            max_in_flight,
            on_error=stop_workers,
            unwrap=reraise_warnings,
        )

    def _cleanup(self):
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def close(self):
        self._cleanup()
