"""The dask backend: blocks as tasks on a ``distributed`` cluster.

postfit never starts a cluster. The backend uses the client given as
``client=`` in the backend options, or else the current default client: the
last ``distributed.Client`` created, or the one made current with
``client.as_current()``.

The model is scattered once to every worker (``broadcast=True``), so each
worker process receives and deserialises it once per run, and every task takes
the worker's copy as a dependency. A client keeps the last model it scattered
for five minutes after its last use: a later call with the same model (the
same pickled bytes) sends nothing again.

Rows of an in-memory input are scattered block by block just before their
task is submitted, so no task graph embeds input data. Blocks of file
sources carry only a small loader, which the worker calls to read its own
rows. A file sink's ``write`` also runs on the worker.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import ipaddress
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from functools import partial

import distributed

from .._errors import attach_block
from .._kernel import Block, model_token, pickle_model
from .._malloc import block_heap
from ..exceptions import WorkerCrashedError
from ._base import Backend, submit_until_full

logger = logging.getLogger(__name__)

__all__ = ["DaskBackend", "current_client", "scatter_model"]

#: How many times a block is scattered and submitted again when the worker
#: that held its rows died before scoring them. Dask recomputes lost tasks
#: itself, but scattered data has no task to recompute it from.
LOST_INPUT_RETRIES = 3
#: Seconds before the first new try to send a block's rows, doubled each try.
SCATTER_RETRY_DELAY = 0.1
#: Seconds that a client keeps its last scattered model after the last call that used it.
KEEP_SCATTERED_SECONDS = 300.0

_HOW_TO_START = (
    "Start one first, for example `from distributed import Client; client = Client()` "
    "for a cluster on this machine, or `Client('tcp://scheduler:8786')` for an existing "
    "one; postfit never starts a cluster itself."
)


def current_client(client=None, required=True):
    """Return ``client``, or the current default ``distributed.Client``.

    Parameters
    ----------
    client : distributed.Client, optional
        A client to use as it is.
    required : bool, default=True
        Raise when there is no client, else return None.
    """
    if client is not None:
        if not isinstance(client, distributed.Client):
            raise TypeError(
                f"client must be a distributed.Client, got {type(client).__name__}. "
                + _HOW_TO_START
            )
        return _check_open(client)
    try:
        client = distributed.default_client()
    except ValueError:
        if not required:
            return None
        raise RuntimeError(
            "The 'dask' backend needs a running Dask cluster, but no distributed.Client "
            "was given or is current. " + _HOW_TO_START + " Pass it as "
            "ParallelPostFit(..., backend='dask', backend_options={'client': client}), or "
            "create it before the call so that it is the default client."
        ) from None
    return _check_open(client)


def _check_open(client):
    """Return ``client``, or raise when it has been closed."""
    if client.status in ("closing", "closed"):
        raise RuntimeError(
            f"The Dask client {client} is {client.status}. Create a new "
            "distributed.Client for the cluster, and pass it or make it current "
            "before the call."
        )
    return client


def _is_loopback(address) -> bool:
    """Return whether a Dask address is in this process or on this machine's loopback."""
    from distributed.comm import get_address_host, parse_address

    try:
        scheme, _ = parse_address(address)
        if scheme == "inproc":
            return True
        host = get_address_host(address)
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sends_directly(client, addresses) -> bool:
    """Return whether ``client`` should send data straight to the workers at ``addresses``.

    Through the scheduler, as a client does by default, every byte travels
    twice. When the scheduler and the workers are on this machine's loopback
    (a ``LocalCluster``), the client reaches the workers itself. A fresh
    cluster then scored 20,000 rows with the 80 MiB forest in 1.93 to
    2.16 s in six runs, against 2.04 to 2.23 s in three. A client created with
    ``direct_to_workers`` keeps its own choice.
    """
    if client.direct_to_workers is not None or not addresses:
        return False
    return _is_loopback(client.scheduler.address) and all(map(_is_loopback, addresses))


def scatter(client, data, direct, **options):
    """Scatter the list ``data`` and return its futures, straight to the workers if ``direct``.

    When sending straight to the workers fails (a worker that listens on
    another machine's loopback, behind a tunnel), the data goes through the
    scheduler instead.
    """
    if direct:
        try:
            return client.scatter(data, hash=False, direct=True, **options)
        except OSError as exc:
            # distributed's CommClosedError is an OSError.
            logger.debug(
                "dask backend: sending straight to the workers failed (%r); "
                "sending through the scheduler",
                exc,
            )
    return client.scatter(data, hash=False, **options)


def estimator_modules(estimator) -> list[str]:
    """Return the modules of ``estimator`` and of the estimators among its parameters.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.linear_model import LogisticRegression
    >>> estimator_modules(make_pipeline(StandardScaler(), LogisticRegression()))
    ['sklearn.linear_model._logistic', 'sklearn.pipeline', 'sklearn.preprocessing._data']
    """
    modules = set()
    seen = set()
    pending = [estimator]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (list, tuple)):
            pending.extend(item)
            continue
        if isinstance(item, dict):
            pending.extend(item.values())
            continue
        get_params = getattr(item, "get_params", None)
        if isinstance(item, type) or not callable(get_params):
            continue
        modules.add(type(item).__module__)
        try:
            pending.extend(get_params(deep=False).values())
        except Exception as exc:  # noqa: BLE001 - the list only speeds up a first block
            logger.debug("no parameters of %s: %r", type(item).__name__, exc)
    return sorted(modules)


#: Warm-up tasks still running: each drops out, and its key is released, once it finishes.
_WARM_UPS: set = set()


def _warm_up(client, address, key, func, argument):
    """Submit ``func(argument)`` to the worker at ``address`` and hold it until it finishes.

    Holding the future keeps a release from cancelling a task still queued.
    """
    future = client.submit(
        func, argument, key=key, workers=[address], allow_other_workers=True, pure=False
    )
    _WARM_UPS.add(future)
    future.add_done_callback(_WARM_UPS.discard)


@dataclass
class _Scattered:
    """The last model that one client scattered, kept for a later call."""

    token: str
    future: distributed.Future
    timer: threading.Timer


_SCATTERED_LOCK = threading.Lock()
#: The kept model of each client, by ``client.id``.
_SCATTERED: dict[str, _Scattered] = {}


def _forget_scattered(client_id, token=None) -> None:
    """Drop the model kept for ``client_id`` (only if it is ``token``), releasing its key."""
    with _SCATTERED_LOCK:
        entry = _SCATTERED.get(client_id)
        if entry is None or (token is not None and entry.token != token):
            return
        del _SCATTERED[client_id]
    entry.timer.cancel()
    _release(entry.future)


def _forget_closed_clients() -> None:
    """Drop the models kept for clients that have closed since."""
    with _SCATTERED_LOCK:
        closed = [
            client_id
            for client_id, entry in _SCATTERED.items()
            if entry.future.client.status in ("closing", "closed")
        ]
    for client_id in closed:
        _forget_scattered(client_id)


def _release(future) -> None:
    """Release ``future``, whose client may have closed in the meantime."""
    try:
        future.release()
    except Exception as exc:  # noqa: BLE001 - a closed client has nothing left to release
        logger.debug("dask backend: releasing %s failed: %r", future.key, exc)


def _keep_scattered(client, token, future) -> None:
    """Keep ``future`` as ``client``'s last scattered model, for ``KEEP_SCATTERED_SECONDS``."""
    _forget_closed_clients()
    timer = threading.Timer(KEEP_SCATTERED_SECONDS, _forget_scattered, (client.id, token))
    timer.daemon = True
    # A Future of its own: the caller may release the one it gets.
    entry = _Scattered(token, distributed.Future(future.key, client), timer)
    with _SCATTERED_LOCK:
        previous = _SCATTERED.pop(client.id, None)
        _SCATTERED[client.id] = entry
    if previous is not None:
        previous.timer.cancel()
        _release(previous.future)
    timer.start()


def _kept_model(client, token):
    """Return a new Future of the model that ``client`` kept as ``token``, or None.

    The kept model is used while at least one worker has a copy: Dask's
    active memory manager drops the extra copies of a broadcast key within
    seconds, and a worker without one fetches it from a worker that has it.
    """
    with _SCATTERED_LOCK:
        entry = _SCATTERED.get(client.id)
        if entry is None or entry.token != token:
            return None
        # The reference is taken under the lock: a thread that replaces or
        # expires the entry releases the entry's own Future only after it has
        # left the dict, so the scheduler cannot forget the key before this.
        future = distributed.Future(entry.future.key, client)
    if future.status != "finished":
        _release(future)
        _forget_scattered(client.id, token)
        return None
    try:
        holders = set(client.who_has([future]).get(future.key, ()))
    except OSError as exc:
        # distributed's CommClosedError is an OSError.
        logger.debug("dask backend: who_has for the kept model failed: %r", exc)
        _release(future)
        return None
    if not holders:
        _release(future)
        return None
    # Kept for another five minutes from this use.
    _keep_scattered(client, token, future)
    return future


def scatter_model(client, estimator, extra_modules=()):
    """Send ``estimator`` once to every worker of ``client`` and return its future.

    The model travels pickled (``postfit._kernel.pickle_model``). Before it
    is sent, a task on each worker imports the estimator's modules, so that
    the import runs while the model travels. After it, a task on each worker
    unpickles it into the worker's cache while the graph and the rows
    travel, so that the first block on each worker finds the model loaded.
    When the cluster still has the same pickled model from an earlier call,
    nothing is sent. Each worker imports ``extra_modules`` as well.
    """
    from .. import _dask_tasks

    token = model_token(estimator)
    reused = _kept_model(client, token)
    if reused is not None:
        logger.debug("dask backend: the cluster has the model already (%s)", reused.key)
        return reused

    run_id = uuid.uuid4().hex[:12]
    addresses = list(client.nthreads())
    # postfit's own task functions come first: the scoring tasks need them.
    modules = ["postfit._dask_tasks", *estimator_modules(estimator), *extra_modules]
    for number, address in enumerate(addresses):
        for name in modules:
            # importlib's own function, because a worker imports a task's
            # function before it runs the task, in the loop that receives
            # data, and importing postfit there takes as long as scikit-learn.
            key = f"postfit-import-{run_id}-{number}-{name}"
            _warm_up(client, address, key, importlib.import_module, name)
    # A list of one item, because scatter takes a bare tuple as items to
    # scatter one by one. It passes hash=False: the payload is hashed already.
    pickled = pickle_model(estimator, token)
    future = scatter(client, [pickled], sends_directly(client, addresses), broadcast=True)[0]
    del pickled
    for number, address in enumerate(addresses):
        key = f"postfit-load-{run_id}-{number}"
        _warm_up(client, address, key, _dask_tasks.load_model, future)
    _keep_scattered(client, token, future)
    return future


def _split_partial(func):
    """Return ``(target, args, keywords)`` so that ``func(x) == target(*args, x, **keywords)``.

    distributed replaces futures found in a task's arguments (inside tuples,
    lists and dicts) by their values on the worker, but not futures inside a
    ``functools.partial``, so the partial's parts are passed separately.
    """
    if isinstance(func, partial):
        return func.func, tuple(func.args), dict(func.keywords)
    return func, (), {}


def _run_task(target, args, keywords, index, start, stop, data):
    """Rebuild the block on the worker and score it."""
    with block_heap():
        return target(*args, Block(index, start, stop, data), **keywords)


def _is_lost_input(exc: BaseException) -> bool:
    """Return True for the error of a task whose scattered input died with its worker."""
    return isinstance(exc, concurrent.futures.CancelledError)


class DaskBackend(Backend):
    """Score blocks as tasks on the workers of a ``distributed`` cluster.

    Parameters
    ----------
    n_workers : int
        Ignored: the number of worker threads in the cluster sets how many
        blocks run at once.
    client : distributed.Client, optional
        The client of the cluster to run on. Default: the current client.
    """

    name = "dask"
    rejects_unknown_options = True
    in_process = False

    def __init__(self, n_workers: int = 1, client=None, **options):
        super().__init__(n_workers, **options)
        self.client = current_client(client)
        nthreads = self.client.nthreads()
        threads = sum(nthreads.values())
        if threads == 0:
            raise RuntimeError(
                f"The Dask cluster of {self.client} has no workers. Start workers, or "
                "wait for them with client.wait_for_workers(n), before running on it."
            )
        self.n_workers = threads
        self._run_id = uuid.uuid4().hex[:12]
        self._direct = sends_directly(self.client, list(nthreads))

    def inner_threads(self, n_cores):
        # Dask's nanny starts workers with OMP_NUM_THREADS, MKL_NUM_THREADS and
        # OPENBLAS_NUM_THREADS set to 1 (``distributed.nanny.pre-spawn-environ``),
        # and a cluster's own settings win over a guess made from the client's cores.
        return None

    @contextlib.contextmanager
    def ship_model(self, estimator):
        future = scatter_model(self.client, estimator)
        logger.debug("dask backend: model scattered to every worker as %s", future.key)
        self._model = (estimator, future)
        try:
            yield future
        finally:
            self._model[1].release()
            self._model = None

    def _model_lost(self, future) -> bool:
        """Return True when no worker has a copy of the scattered model ``future`` any more."""
        if future.status != "finished":
            return True
        try:
            return not self.client.who_has([future]).get(future.key)
        except OSError as exc:
            # distributed's CommClosedError is an OSError.
            logger.debug("dask backend: who_has for the model failed: %r", exc)
            return False

    def _refresh_model(self, args):
        """Return ``args`` with the model scattered again when its workers died with it.

        Dask's active memory manager drops the extra copies of a broadcast
        key within seconds, so one worker's death can take the last copy, and
        every task that depends on it is then cancelled.
        """
        if getattr(self, "_model", None) is None:
            return args
        estimator, old = self._model
        if not any(arg is old for arg in args) or not self._model_lost(old):
            return args
        logger.warning("dask backend: the model was lost with a worker; sending it again")
        new = scatter_model(self.client, estimator)
        self._model = (estimator, new)
        old.release()
        return tuple(new if arg is old else arg for arg in args)

    def _scatter_rows(self, block):
        """Send a block's rows to one worker and return their future."""
        for attempt in range(LOST_INPUT_RETRIES + 1):
            try:
                # A list in a list: scatter would otherwise scatter each item.
                return scatter(self.client, [block.data], self._direct)[0]
            except OSError as exc:
                # distributed's CommClosedError is an OSError: the chosen
                # worker died, and the scheduler drops it within moments.
                error = exc
                logger.warning(
                    "dask backend: sending the rows of %s failed (%s); retry %d of %d",
                    block.describe(),
                    exc,
                    attempt + 1,
                    LOST_INPUT_RETRIES,
                )
                time.sleep(SCATTER_RETRY_DELAY * 2**attempt)
        raise WorkerCrashedError(
            f"Sending the rows of {block.describe()} to a Dask worker failed "
            f"{LOST_INPUT_RETRIES + 1} times ({error}). Nothing was returned or marked "
            "complete. Check the workers' logs for why they die."
        ) from error

    def _submit(self, target, args, keywords, block, attempt):
        data = block.data
        if not hasattr(data, "load"):
            data = self._scatter_rows(block)
        return self.client.submit(
            _run_task,
            target,
            args,
            keywords,
            block.index,
            block.start,
            block.stop,
            data,
            key=f"postfit-{self._run_id}-block-{block.index}-{attempt}",
            pure=False,
        )

    def imap_unordered(self, func, blocks, max_in_flight):
        target, args, keywords = _split_partial(func)
        # as_completed takes the client's event loop, where distributed.wait
        # would look for a default client, which a given client need not be.
        finished = distributed.as_completed(loop=self.client.loop, raise_errors=False)
        pending = {}
        attempts = {}
        blocks = iter(blocks)
        exhausted = False

        def submit_first(block):
            attempts[block.index] = 0
            future = self._submit(target, args, keywords, block, 0)
            finished.add(future)
            return future

        try:
            while True:
                if not exhausted:
                    exhausted = not submit_until_full(pending, blocks, max_in_flight, submit_first)
                if not pending:
                    return
                future = next(finished)
                block = pending.pop(future)
                retry = self._retry_if_input_lost(future, block, attempts)
                if retry is not None:
                    args = self._refresh_model(args)
                    future = self._submit(target, args, keywords, block, retry)
                    pending[future] = block
                    finished.add(future)
                    continue
                yield block, self._result(future, block)
        except BaseException as exc:
            self._cancel(pending)
            if self.client.status in ("closing", "closed") and isinstance(exc, Exception):
                raise RuntimeError(
                    f"The Dask client {self.client.id} was closed while postfit was running "
                    f"on it ({type(exc).__name__}: {exc}). Nothing was returned or marked "
                    "complete. Keep the client open until the call returns."
                ) from exc
            raise

    def _cancel(self, pending):
        """Cancel the pending tasks, and log a failure so that the run's own error is raised."""
        if not pending:
            return
        try:
            self.client.cancel(list(pending))
        except Exception as exc:  # noqa: BLE001 - the run's own error is raised instead
            logger.warning(
                "dask backend: cancelling %d pending tasks failed: %r", len(pending), exc
            )

    def _retry_if_input_lost(self, future, block, attempts):
        """Return the next attempt number when ``block`` must be submitted again, else None."""
        if future.status != "error" and future.status != "cancelled":
            return None
        exc = future.exception() if future.status == "error" else None
        if future.status == "error" and not _is_lost_input(exc):
            return None
        attempts[block.index] += 1
        if attempts[block.index] > LOST_INPUT_RETRIES:
            return None
        logger.warning(
            "dask backend: %s lost its input with a worker (status %s); submitting it "
            "again, attempt %d of %d",
            block.describe(),
            future.status,
            attempts[block.index],
            LOST_INPUT_RETRIES,
        )
        return attempts[block.index]

    def _result(self, future, block):
        try:
            with attach_block(block):
                return future.result()
        except distributed.scheduler.KilledWorker as exc:
            raise WorkerCrashedError(
                f"Dask workers died while scoring {block.describe()} ({exc}). Nothing was "
                "returned or marked complete. A worker that dies is often out of memory: "
                "lower memory_budget or block_size, or give the workers more memory."
            ) from exc
        except Exception as exc:
            if _is_lost_input(exc) or future.status == "cancelled":
                raise WorkerCrashedError(
                    f"The input of {block.describe()} was lost with a Dask worker "
                    f"{LOST_INPUT_RETRIES + 1} times ({type(exc).__name__}: {exc}). Nothing "
                    "was returned or marked complete. Check the workers' logs for why they "
                    "die."
                ) from exc
            raise
