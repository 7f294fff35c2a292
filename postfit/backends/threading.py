"""The threading backend: blocks in a pool of threads in the calling process.

Estimators whose prediction releases the GIL (OpenMP, BLAS, most Cython
loops) scale with threads, and threads share the model and the input
without copying either.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import threading

from .._errors import attach_block
from ._base import Backend, submit_until_full


def _drain(pending, first_only):
    """Wait for pending futures and return the finished ones, in submission order."""
    return_when = cf.FIRST_COMPLETED if first_only else cf.ALL_COMPLETED
    done, _ = cf.wait(pending.keys(), return_when=return_when)
    return [future for future in pending if future in done]


def bounded_imap(submit, blocks, max_in_flight, on_error=None, unwrap=None):
    """Submit blocks through ``submit`` with at most ``max_in_flight`` pending.

    Yields ``(block, result)`` as futures finish, where ``result`` is
    ``unwrap(future.result())`` when ``unwrap`` is given. On an error, the
    pending futures are cancelled, ``on_error(exc)`` runs, and the error is
    raised with its block attached.
    """
    pending = {}
    blocks = iter(blocks)
    exhausted = False
    try:
        while True:
            if not exhausted:
                exhausted = not submit_until_full(pending, blocks, max_in_flight, submit)
            if not pending:
                return
            for future in _drain(pending, first_only=True):
                block = pending.pop(future)
                with attach_block(block):
                    result = future.result()
                    if unwrap is not None:
                        result = unwrap(result)
                yield block, result
    except BaseException as exc:
        for future in pending:
            future.cancel()
        if on_error is not None:
            on_error(exc)
        raise


_SHARED = {"pool": None, "workers": 0}
_SHARED_IN_USE = threading.Lock()


def _forget_pool_after_fork():
    # A forked child has none of the parent's threads, so its runs start a new pool.
    global _SHARED_IN_USE
    _SHARED["pool"] = None
    _SHARED["workers"] = 0
    _SHARED_IN_USE = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


@contextlib.contextmanager
def _thread_pool(n_workers):
    """Yield a pool of ``n_workers`` threads: the shared one when it is free.

    Starting two threads took about 3 ms here (profiled), a tenth of a
    linear model's run on 2,000,000 rows, so one pool lives across runs.
    One run at a time uses it. A run that starts while another holds it (a
    run nested in a block of another, from any thread, or a second caller)
    gets a pool of its own, as waiting on the shared pool could deadlock.
    The shared pool is replaced when a run needs another worker count,
    so idle threads never pile up.
    """
    in_use = _SHARED_IN_USE
    if not in_use.acquire(blocking=False):
        with cf.ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="postfit") as pool:
            yield pool
        return
    try:
        pool = _SHARED["pool"]
        if pool is None or _SHARED["workers"] != n_workers:
            if pool is not None:
                pool.shutdown(wait=False)
            pool = cf.ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="postfit")
            _SHARED.update(pool=pool, workers=n_workers)
        yield pool
    finally:
        in_use.release()


class ThreadingBackend(Backend):
    """Score blocks in ``n_workers`` threads of the calling process.

    One pool of threads is kept between runs, so a run does not pay for
    starting them.
    """

    name = "threading"
    rejects_unknown_options = True
    shares_gil = True

    def imap_unordered(self, func, blocks, max_in_flight):
        running = set()

        def submit(block):
            future = executor.submit(func, block)
            running.add(future)
            future.add_done_callback(running.discard)
            return future

        with _thread_pool(self.n_workers) as executor:
            try:
                yield from bounded_imap(submit, blocks, max_in_flight)
            finally:
                # After an error or an interrupt, the blocks already running
                # finish before the run ends, so that none writes after it.
                cf.wait(list(running))
