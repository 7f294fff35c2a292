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
import pickle
import secrets
import shutil
import signal
import tempfile
import threading
import time
import warnings

import cloudpickle
import numpy as np
from joblib.externals.loky import ProcessPoolExecutor

from .._errors import interrupt_behind
from .._kernel import ModelRef, content_token
from ..exceptions import BlockError, WorkerCrashedError
from ._base import Backend, InputSlicer
from .threading import bounded_imap

logger = logging.getLogger(__name__)

__all__ = ["LokyBackend", "SharedRows", "private_temp_dir"]

# Idle worker processes are kept this many seconds for the next run, which
# then skips process start-up and, for the same model, the model load.
WORKER_IDLE_TIMEOUT = 300

_POOL_LOCK = threading.Lock()
_POOL: ProcessPoolExecutor | None = None
#: Runs using ``_POOL`` now. A run that needs another worker count meanwhile
#: gets a pool of its own, so that the running ones keep theirs.
_POOL_USERS = 0

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
    only its rows from the page cache. ``identity`` distinguishes files at the
    same path: a user's file saved again or replaced between runs is
    opened afresh, and one changed during the run raises an error.
    """

    def __init__(self, path, start, stop, layout=None, identity=None):
        self.path = path
        self.start = start
        self.stop = stop
        self.layout = layout
        self.identity = identity

    def _open(self):
        key = (self.path, self.layout, self.identity)
        with _MAPS_LOCK:
            array = _OPEN_MAPS.get(key)
            if array is None:
                if self.layout is None:
                    array = np.load(self.path, mmap_mode="r")
                else:
                    if file_identity(self.path) != self.identity:
                        raise BlockError(
                            f"The input file {self.path} changed while postfit was scoring "
                            "it, so its rows may differ from those of the memmap that was "
                            "given. Score a file that does not change during the run."
                        )
                    dtype, shape, order, offset = self.layout
                    array = np.memmap(
                        self.path, dtype=dtype, mode="r", shape=shape, order=order, offset=offset
                    )
                # Keep only the maps of the current run: a new key means a new run.
                _OPEN_MAPS.clear()
                _OPEN_MAPS[key] = array
            return array

    def load(self):
        return self._open()[self.start : self.stop]


def file_identity(path):
    """Return what distinguishes the file at ``path`` from another file or an older version."""
    status = os.stat(path)
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _mapped_file(X):
    """Return ``(device, inode)`` of the file that X's memory maps, or None when unknown.

    Read from ``/proc/self/maps`` on Linux. A memmap whose file was replaced
    at the same path still maps the old file, which the path no longer names.
    """
    address = X.ctypes.data
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                low, high = (int(part, 16) for part in fields[0].split("-"))
                if low <= address < high and len(fields) >= 5:
                    major, minor = (int(part, 16) for part in fields[3].split(":"))
                    return os.makedev(major, minor), int(fields[4])
    except (OSError, ValueError, IndexError) as exc:
        logger.debug("loky backend: reading /proc/self/maps failed: %r", exc)
    return None


def _memmap_layout(X):
    """Return ``((dtype, shape, order, offset), identity)`` when workers can map X's file.

    That is when X is a whole, read-only or shared memmap of a file that its
    path still names. A copy-on-write memmap (``mode="c"``) can hold changes
    that its file lacks, so it is copied like any other array.
    """
    if not isinstance(X, np.memmap) or not isinstance(X.base, mmap.mmap):
        return None
    if X.filename is None or not (X.flags.c_contiguous or X.flags.f_contiguous):
        return None
    # np.memmap stores its mode as "r", "r+", "w+" or "c", whatever name it was given.
    if getattr(X, "mode", None) not in ("r", "r+", "w+"):
        return None
    try:
        identity = file_identity(X.filename)
    except OSError:
        return None
    if _mapped_file(X) != identity[:2]:
        return None
    order = "C" if X.flags.c_contiguous else "F"
    return (X.dtype, X.shape, order, X.offset), identity


class _SharedArraySlicer(InputSlicer):
    def __init__(self, path, layout=None, identity=None):
        self.path = path
        self.layout = layout
        self.identity = identity

    def __call__(self, start, stop):
        return SharedRows(self.path, start, stop, self.layout, self.identity)


class _WritingSlicer(_SharedArraySlicer):
    """Write each block's rows of a C-ordered array to the shared file as it is cut.

    The workers start on the first blocks while the driver writes the next
    ones, instead of waiting for the whole array to be copied (0.12 s for
    2,000,000 × 20 float64). Rows before the first block cut, already scored
    by the planner's probes, are never written or read.
    """

    def __init__(self, path, X, fd, offset, identity):
        super().__init__(path, identity=identity)
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
        # A byte view, because memoryview cannot cast every dtype (datetime64).
        data = memoryview(self.rows[start:stop].view(np.uint8)).cast("B")
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
        try:
            result = func(block)
        except Exception as exc:
            portable = _portable_error(exc)
            if portable is exc:
                raise
            raise portable from None
    return result, [(w.category, str(w.message)) for w in caught]


def _portable_error(exc: Exception) -> Exception:
    """Return ``exc``, or a BlockError with its message when it cannot travel back pickled.

    An exception class whose ``__init__`` takes other arguments than its
    message fails to unpickle in the caller, which loky reports as a dead
    worker.
    """
    try:
        pickle.loads(cloudpickle.dumps(exc))
    except Exception as failure:
        cls = type(exc)
        error = BlockError(
            f"{cls.__module__}.{cls.__qualname__}: {exc} (the estimator raised this exception "
            f"in a worker process, and it could not be sent back as it was: {failure!r})"
        )
        for note in getattr(exc, "__notes__", ()):
            error.add_note(note)
        return error
    return exc


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


#: Seconds between a worker's checks that the process that started it still runs.
PARENT_CHECK_SECONDS = 0.5


def _exit_with_parent(parent_pid: int) -> None:
    """Start a thread that ends this worker when the process that started it has died.

    A process killed with SIGKILL cannot stop its workers, and a loky worker
    busy with a block does not notice: it went on scoring, holding its
    memory and the caller's output pipes, for minutes. When the parent dies,
    the worker is handed to another process, so its parent id changes.
    """
    if os.getppid() != parent_pid:
        if not _process_exists(parent_pid):
            # The parent died while this worker started.
            os._exit(1)
        logger.debug(
            "loky worker %d was not started by %d: not watching it", os.getpid(), parent_pid
        )
        return

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="postfit-parent-watch", daemon=True).start()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The process exists but belongs to another user.
        return True
    return True


def _new_pool(n_workers: int, **options) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=n_workers,
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
        **options,
    )


def acquire_pool(n_workers: int) -> tuple[ProcessPoolExecutor, bool]:
    """Return a pool of ``n_workers`` loky workers and whether it is private to the caller.

    postfit's shared pool lives across runs, so its idle workers (kept for
    ``WORKER_IDLE_TIMEOUT`` seconds) skip start-up and, for the same model,
    the model load. It is replaced when a run needs another worker count,
    unless another run is using it: the new run then gets a private pool.
    Each call is paired with :func:`release_pool`.
    """
    global _POOL, _POOL_USERS
    with _POOL_LOCK:
        if _POOL is not None and not _is_usable(_POOL, n_workers):
            if _POOL_USERS > 0:
                return _new_pool(n_workers), True
            _POOL.shutdown(wait=False)
            _POOL = None
        if _POOL is None:
            _POOL = _new_pool(n_workers, timeout=WORKER_IDLE_TIMEOUT)
            _POOL_USERS = 0
        _POOL_USERS += 1
        return _POOL, False


def get_pool(n_workers: int) -> ProcessPoolExecutor:
    """Return the shared pool of ``n_workers`` workers, started when needed, without using it."""
    pool, private = acquire_pool(n_workers)
    release_pool(pool, private)
    return pool


def release_pool(pool, private: bool) -> None:
    """End a run's use of ``pool``, shutting it down when it was private."""
    global _POOL_USERS
    if private:
        pool.shutdown(wait=False)
        return
    with _POOL_LOCK:
        if pool is _POOL and _POOL_USERS > 0:
            _POOL_USERS -= 1


def discard_pool(pool) -> None:
    """Shut ``pool`` down, kill its workers, and start a new pool on the next run."""
    global _POOL, _POOL_USERS
    with _POOL_LOCK:
        if _POOL is pool:
            _POOL = None
            _POOL_USERS = 0
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
    rejects_unknown_options = True
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
        # Array subclasses other than memory maps (np.matrix, masked arrays) travel
        # pickled, so each block reaches the estimator in X's own type, as X would.
        subclass = isinstance(X, np.ndarray) and type(X) is not np.ndarray
        subclass = subclass and not isinstance(X, np.memmap)
        if subclass or not isinstance(X, np.ndarray) or X.dtype.hasobject or X.ndim == 0:
            yield InputSlicer(X)
            return
        shared = _memmap_layout(X)
        if shared is not None:
            yield _SharedArraySlicer(os.fspath(X.filename), *shared)
            return
        path = os.path.join(self._temp(), f"input-{id(X):x}.npy")
        # A private file of this run, written once: a nonce distinguishes it
        # from an earlier run's file that had the same path.
        identity = secrets.token_hex(8)
        if not X.flags.c_contiguous:
            # Writing the buffer to the file takes less than half the time of
            # assigning into a fresh memmap, which faults in every page first.
            with open(_create_private(path), "wb") as f:
                np.lib.format.write_array(f, X, allow_pickle=False)
            yield _SharedArraySlicer(path, identity=identity)
            return
        with open(_create_private(path), "wb") as f:
            np.lib.format.write_array_header_2_0(f, np.lib.format.header_data_from_array_1_0(X))
            offset = f.tell()
            f.truncate(offset + X.nbytes)
            yield _WritingSlicer(path, X, f.fileno(), offset, identity)

    def imap_unordered(self, func, blocks, max_in_flight):
        pool, private = _interruptible(acquire_pool, self.n_workers)
        try:
            yield from self._imap(pool, func, blocks, max_in_flight)
        finally:
            release_pool(pool, private)

    def _imap(self, pool, func, blocks, max_in_flight):

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
