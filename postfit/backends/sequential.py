"""The sequential backend: blocks one after another in the calling thread."""

from __future__ import annotations

from .._errors import attach_block
from ._base import Backend


class SequentialBackend(Backend):
    """Score blocks one at a time in the calling thread.

    Useful for debugging and for bounding memory without parallelism: the
    estimator keeps its own thread pools.
    """

    name = "sequential"
    rejects_unknown_options = True

    def __init__(self, n_workers: int = 1, **options):
        super().__init__(1, **options)

    def inner_threads(self, n_cores):
        return None

    def imap_unordered(self, func, blocks, max_in_flight):
        for block in blocks:
            with attach_block(block):
                result = func(block)
            yield block, result
