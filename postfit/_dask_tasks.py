"""The functions that Dask workers run on each chunk or partition.

They live apart from ``postfit._dask``, which builds graphs and imports
``dask.dataframe``: a worker unpickles a task's function by importing its
module, and that import cost about 0.6 s on a fresh worker, four times a
chunk's work in the cluster benchmark.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._blocks import EmptyOutput
from ._errors import attach_block
from ._kernel import Block, resolve_model, run_block
from ._malloc import block_heap
from ._meta import coerce_to_meta

__all__ = ["load_model", "rows_of", "score_chunk", "score_chunks", "score_partition"]


def load_model(model) -> None:
    """Unpickle ``model`` into this worker's cache, so that the first block finds it there."""
    resolve_model(model)


def score_chunk(data, model, method, kwargs, restore_names, meta, block_info=None):
    """Score one chunk of a Dask Array and return the output as ``meta``'s type."""
    index, start, stop = 0, None, None
    if block_info is not None and 0 in block_info:
        index = block_info[0]["chunk-location"][0]
        start, stop = block_info[0]["array-location"][0]
        if np.isnan(start) or np.isnan(stop):
            start = stop = None
    block = Block(index, start, stop, data)
    with attach_block(block):
        with block_heap():
            out = run_block(model, method, block, kwargs, restore_names=restore_names)
        if isinstance(out, EmptyOutput):
            return meta
        if sp.issparse(meta):
            out = out if sp.issparse(out) else sp.csr_matrix(np.asarray(out))
            return out.asformat(meta.format).astype(meta.dtype)
        return coerce_to_meta(np.asarray(out), meta, method)


def score_chunks(chunks, model, *, method, kwargs, restore_names, meta, location):
    """Score neighbouring chunks of a Dask Array as one block, with output of ``meta``'s type.

    ``chunks`` are dense NumPy chunks in row order, and ``location`` is
    ``(first_chunk, last_chunk, start, stop)``: the input chunks and rows
    that they cover, so that errors name the user's chunks.
    """
    first, last, start, stop = location
    data = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)
    block = Block(first, start, stop, data, last)
    with attach_block(block):
        with block_heap():
            out = run_block(model, method, block, kwargs, restore_names=restore_names)
        if isinstance(out, EmptyOutput):
            return meta
        return coerce_to_meta(np.asarray(out), meta, method)


def rows_of(out, start, stop):
    """Return rows ``start:stop`` of a merged chunk's output: one chunk of the result."""
    return out[start:stop]


def score_partition(part, model, method, kwargs, to_numpy, meta, partition_info=None):
    """Score one partition of a Dask DataFrame or Series and return it as ``meta``'s type.

    The output takes the partition's index, so the result keeps the input's
    index and divisions.
    """
    number = partition_info["number"] if partition_info else 0
    data = part.to_numpy() if to_numpy else part
    block = Block(number, None, None, data)
    with attach_block(block):
        with block_heap():
            out = run_block(model, method, block, kwargs)
        if isinstance(out, EmptyOutput):
            return meta.set_axis(part.index[:0], axis=0)
        result = coerce_to_meta(out, meta, method)
        return result.set_axis(part.index, axis=0)
