"""The threading backend: blocks in a pool of threads in the calling process.

Estimators whose prediction releases the GIL (OpenMP, BLAS, most Cython
loops) scale with threads, and threads share the model and the input
without copying either.
"""

from __future__ import annotations

import concurrent.futures as cf

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


class ThreadingBackend(Backend):
    """Score blocks in ``n_workers`` threads of the calling process."""

    name = "threading"
    shares_gil = True

    def imap_unordered(self, func, blocks, max_in_flight):
        with cf.ThreadPoolExecutor(
            max_workers=self.n_workers, thread_name_prefix="postfit"
        ) as executor:
            yield from bounded_imap(
                lambda block: executor.submit(func, block), blocks, max_in_flight
            )
