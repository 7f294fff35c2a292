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


_POOLS: dict[int, cf.ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
_IN_POOL = threading.local()


def _mark_pool_thread():
    _IN_POOL.active = True


def _forget_pools_after_fork():
    # A forked child has none of the parent's threads, so its runs start new pools.
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools_after_fork)


@contextlib.contextmanager
def _thread_pool(n_workers):
    """Yield postfit's pool of ``n_workers`` threads, shared by runs.

    Starting two threads took about 3 ms here (profiled), a tenth of a
    linear model's run on 2,000,000 rows, so the pool lives across runs. A run inside a block of
    another run (a wrapped estimator that is itself a ParallelPostFit) gets a
    pool of its own: waiting on the shared pool from one of its own threads
    could deadlock.
    """
    if getattr(_IN_POOL, "active", False):
        with cf.ThreadPoolExecutor(
            max_workers=n_workers, thread_name_prefix="postfit", initializer=_mark_pool_thread
        ) as pool:
            yield pool
        return
    with _POOLS_LOCK:
        pool = _POOLS.get(n_workers)
        if pool is None:
            pool = cf.ThreadPoolExecutor(
                max_workers=n_workers,
                thread_name_prefix="postfit",
                initializer=_mark_pool_thread,
            )
            _POOLS[n_workers] = pool
    yield pool


class ThreadingBackend(Backend):
    """Score blocks in ``n_workers`` threads of the calling process.

    The threads are kept between runs (one pool per worker count), so a run
    does not pay for starting them.
    """

    name = "threading"
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
