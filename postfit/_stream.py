"""Training blocks: rows of X, y and per-sample fit parameters cut at the same places.

:class:`BlockStream` turns the inputs of ``Incremental.fit`` into numbered
blocks that can be loaded one at a time, in any order, as often as the epochs
need. X decides where blocks start and stop. In-memory inputs are cut into
ranges of ``block_size`` rows, and a Dask collection keeps its own chunks or
partitions. A postfit file source cuts itself into blocks of about
``block_size`` rows at row group boundaries. y and the
per-sample fit parameters (``sample_weight`` and any other array with one
entry per row) are then cut at the same rows, whatever their own chunking:

- a column name of a frame or file source is split off each loaded block of X;
- an in-memory array is sliced by the row range of each block of X;
- a Dask collection chunked like X is loaded block by block next to X, in one
  ``dask.compute`` call so that a shared read happens once, and one chunked
  otherwise is rechunked to X's row ranges.

Row ranges that the input does not store (Dask chunks of unknown size,
partitions of a filtered frame) are counted with one pass over X, and only
when an in-memory or differently chunked companion needs them.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._blocks import column_names, is_arrow_table, is_polars, n_rows, normalize_input, take_rows
from ._inputs import is_dask_collection, is_ray_dataset, is_source

logger = logging.getLogger(__name__)

__all__ = ["BlockStream", "LoadedBlock", "take_positions"]

#: Fit parameters passed whole to every ``partial_fit`` call, even when their
#: length happens to equal the number of rows.
WHOLE_FIT_PARAMS = frozenset({"classes"})
#: Fit parameters that always have one entry per row.
PER_SAMPLE_FIT_PARAMS = frozenset({"sample_weight"})


@dataclass
class LoadedBlock:
    """The arguments of one ``partial_fit`` call: rows of X, y and per-sample parameters."""

    index: int
    start: int | None
    stop: int | None
    X: Any
    y: Any
    params: dict
    #: Names in ``params`` with one entry per row, cut with X.
    per_sample: tuple = ()

    @property
    def n_rows(self) -> int:
        return n_rows(self.X)

    def describe(self) -> str:
        if self.start is None:
            return f"block {self.index}"
        return f"block {self.index} (rows {self.start} to {self.stop})"


# X: where blocks start and stop -------------------------------------------


class _MemoryX:
    """An in-memory X cut into ranges of ``block_size`` rows."""

    def __init__(self, X, block_size):
        self.X = normalize_input(X)
        n = n_rows(self.X)
        self.ranges = [(lo, min(n, lo + block_size)) for lo in range(0, n, block_size)]
        self.n_blocks = len(self.ranges)

    def row_ranges(self):
        return self.ranges

    def known_ranges(self):
        return self.ranges

    def lazy_part(self, i):
        return None

    def load(self, i, computed):
        lo, hi = self.ranges[i]
        return take_rows(self.X, lo, hi)


class _DaskArrayX:
    """A Dask array whose row chunks are the blocks."""

    def __init__(self, X, block_size):
        if X.ndim == 2 and len(X.chunks[1]) > 1:
            # A block is whole rows, so all columns go into one chunk.
            X = X.rechunk({1: -1})
        if isinstance(block_size, int):
            if _has_unknown_chunks(X):
                # Rechunking needs the chunk sizes, which takes one pass over X.
                logger.debug("counting the rows of %d Dask chunks of X", X.numblocks[0])
                X = X.compute_chunk_sizes()
            X = X.rechunk({0: block_size})
        self.X = X
        self.n_blocks = X.numblocks[0]
        self._ranges = None

    def row_ranges(self):
        if self._ranges is None:
            if _has_unknown_chunks(self.X):
                logger.debug("counting the rows of %d Dask chunks of X", self.n_blocks)
                self.X = self.X.compute_chunk_sizes()
            self._ranges = _ranges_from_lengths(self.X.chunks[0])
        return self._ranges

    def known_ranges(self):
        if self._ranges is None and not _has_unknown_chunks(self.X):
            self._ranges = _ranges_from_lengths(self.X.chunks[0])
        return self._ranges

    def lazy_part(self, i):
        return self.X.blocks[i]

    def load(self, i, computed):
        return computed


class _DaskFrameX:
    """A Dask DataFrame or Series whose partitions are the blocks."""

    def __init__(self, X):
        self.X = X
        self.n_blocks = X.npartitions
        self._ranges = None

    def row_ranges(self):
        if self._ranges is None:
            logger.debug("counting the rows of %d Dask partitions of X", self.n_blocks)
            lengths = self.X.map_partitions(len).compute()
            self._ranges = _ranges_from_lengths([int(n) for n in lengths])
        return self._ranges

    def known_ranges(self):
        return self._ranges

    def lazy_part(self, i):
        return self.X.partitions[i]

    def load(self, i, computed):
        return computed


class _SourceX:
    """A postfit file source cut into blocks of about ``block_size`` rows by the source."""

    def __init__(self, source, block_size, target=None):
        features = source.column_names()
        if target is not None and features is not None and target not in features:
            # The target may be left out of the source's selected columns.
            features = [*features, target]
        self.blocks = list(source.blocks(block_size, features=features))
        self.n_blocks = len(self.blocks)
        self._ranges = None

    def row_ranges(self):
        if self._ranges is None and self.known_ranges() is None:
            # CSV byte ranges do not know their rows before they are read.
            logger.debug("counting the rows of %d file blocks of X", self.n_blocks)
            lengths = [n_rows(_load_source_block(b)) for b in self.blocks]
            self._ranges = _ranges_from_lengths(lengths)
        return self._ranges

    def known_ranges(self):
        if self._ranges is None and all(b.start is not None for b in self.blocks):
            self._ranges = [(b.start, b.stop) for b in self.blocks]
        return self._ranges

    def lazy_part(self, i):
        return None

    def load(self, i, computed):
        return _load_source_block(self.blocks[i])


def _load_source_block(block):
    data = block.data
    return data.load() if hasattr(data, "load") else data


def _has_unknown_chunks(X) -> bool:
    return any(np.isnan(c) for c in X.chunks[0])


def _ranges_from_lengths(lengths):
    stops = np.cumsum(lengths, dtype=np.int64)
    starts = stops - np.asarray(lengths, dtype=np.int64)
    return [(int(lo), int(hi)) for lo, hi in zip(starts, stops, strict=True)]


def _make_x(X, block_size, target):
    if is_ray_dataset(X):
        raise TypeError(
            "Incremental does not read Ray Datasets: their blocks cannot be loaded one at "
            "a time in a chosen order. Write the dataset to Parquet and pass "
            "postfit.read_parquet(path), or pass ds.to_dask()."
        )
    if is_source(X):
        return _SourceX(X, block_size, target)
    if is_dask_collection(X):
        import dask.array as da

        if isinstance(X, da.Array):
            return _DaskArrayX(X, block_size)
        if hasattr(X, "npartitions"):
            return _DaskFrameX(X)
        raise TypeError(
            f"Incremental cannot cut a {type(X).__name__} into blocks of rows. "
            "Pass a Dask Array, DataFrame or Series."
        )
    return _MemoryX(X, block_size)


# y and per-sample parameters: cut where X is cut ---------------------------


class _MemoryRows:
    """An in-memory array sliced by the row ranges of X."""

    def __init__(self, values, name):
        self.values = normalize_input(values)
        self.name = name

    def lazy_part(self, i):
        return None


class _DaskRows:
    """A Dask collection whose blocks are rows ``i`` of X, checked when loaded."""

    def __init__(self, collection, name):
        self.collection = collection
        self.name = name

    def lazy_part(self, i):
        if hasattr(self.collection, "partitions"):
            return self.collection.partitions[i]
        return self.collection.blocks[i]


def _is_aligned_dask(x_part, collection) -> bool:
    """Return True when ``collection`` has one chunk or partition per block of X at the same rows.

    Two Dask frames with the same number of partitions count as aligned when
    their divisions agree or are unknown. Their row counts are still checked
    block by block when loaded, because a filter keeps divisions but not rows.
    """
    import dask.array as da

    X = x_part.X
    if isinstance(X, da.Array) and isinstance(collection, da.Array):
        unknown = _has_unknown_chunks(X) or _has_unknown_chunks(collection)
        return not unknown and X.chunks[0] == collection.chunks[0]
    is_frame = hasattr(X, "npartitions") and not isinstance(X, da.Array)
    other_is_frame = hasattr(collection, "npartitions") and not isinstance(collection, da.Array)
    if not (is_frame and other_is_frame) or X.npartitions != collection.npartitions:
        return False
    if X.known_divisions and collection.known_divisions:
        return tuple(X.divisions) == tuple(collection.divisions)
    return True


def _rechunk_to(collection, ranges, name):
    """Return ``collection`` as a Dask array with one chunk per row range of X."""
    import dask.array as da

    if not isinstance(collection, da.Array):
        collection = collection.to_dask_array(lengths=True)
    elif _has_unknown_chunks(collection):
        collection = collection.compute_chunk_sizes()
    total = ranges[-1][1] if ranges else 0
    if collection.shape[0] != total:
        raise ValueError(
            f"{name} has {collection.shape[0]} rows, but X has {total}. "
            f"Pass a {name} with one entry per row of X."
        )
    chunks = {0: tuple(hi - lo for lo, hi in ranges)}
    if collection.ndim == 2:
        chunks[1] = -1
    return collection.rechunk(chunks)


# The stream -----------------------------------------------------------------


class BlockStream:
    """The blocks of one training input, loadable one at a time in any order.

    Parameters
    ----------
    X : array-like, frame, sparse matrix, Dask collection or postfit file source
    y : array-like, Dask collection, str or None
        Targets, or the name of a column of X that contains them.
    fit_params : dict
        Parameters of ``partial_fit``. ``sample_weight`` and every other
        array with one entry per row of X are cut with X. ``classes`` and
        all other values are passed whole to every call.
    block_size : int or "auto"
        Rows per block of an in-memory X or a file source, and of a Dask
        Array when an int. "auto" keeps the chunks of a Dask input and is
        resolved by the caller for the other inputs.
    """

    def __init__(self, X, y, fit_params, block_size):
        self.block_size = block_size
        target = y if isinstance(y, str) else None
        self.x_part = _make_x(X, block_size, target)
        self.n_blocks = self.x_part.n_blocks
        self.target_column = None
        self.companions = {}
        self.whole_params = {}

        if isinstance(y, str):
            self._check_target_column(X, y)
            self.target_column = y
        elif y is not None:
            self.companions["y"] = self._companion(y, "y")

        for key, value in fit_params.items():
            if self._is_per_sample(key, value):
                self.companions[key] = self._companion(value, key)
            else:
                self.whole_params[key] = value

    # Setting up -------------------------------------------------------------

    def _check_target_column(self, X, name):
        columns = _input_columns(X)
        if columns is None:
            raise ValueError(
                f"y={name!r} names a column, but X ({type(X).__name__}) has no column names. "
                "Pass y as an array, or X as a frame or file source that has this column."
            )
        if name not in columns:
            shown = ", ".join(map(str, list(columns)[:10]))
            raise ValueError(
                f"y={name!r} is not a column of X. The columns of X are: {shown}"
                f"{', ...' if len(columns) > 10 else ''}."
            )

    def _is_per_sample(self, key, value) -> bool:
        if key in WHOLE_FIT_PARAMS or value is None or isinstance(value, (str, bytes, dict)):
            return False
        if isinstance(value, numbers.Number) or (isinstance(value, np.ndarray) and value.ndim == 0):
            # A single value, such as sample_weight=2.0, goes to every call as it is.
            return False
        if key in PER_SAMPLE_FIT_PARAMS or is_dask_collection(value):
            return True
        if not hasattr(value, "__len__") or np.ndim(value) == 0:
            return False
        return len(value) == self.total_rows()

    def _companion(self, value, name):
        if is_dask_collection(value):
            if _is_aligned_dask(self.x_part, value):
                return _DaskRows(value, name)
            return _DaskRows(_rechunk_to(value, self.x_part.row_ranges(), name), name)
        if is_source(value):
            raise TypeError(
                f"{name} is a file source. Pass it as a column of X instead, for example "
                f"y='target' with X read from the same files."
            )
        if hasattr(value, "__array__") and not hasattr(value, "shape"):
            value = np.asarray(value)
        total = self.total_rows()
        length = n_rows(value) if not isinstance(value, (list, tuple)) else len(value)
        if length != total:
            raise ValueError(
                f"{name} has {length} rows, but X has {total}. "
                f"Pass a {name} with one entry per row of X."
            )
        return _MemoryRows(value, name)

    def total_rows(self) -> int:
        """Return the rows of X, counting them with one pass when X does not store them."""
        ranges = self.x_part.row_ranges()
        return ranges[-1][1] if ranges else 0

    # Loading ------------------------------------------------------------------

    def lazy_parts(self, i):
        """Return the Dask objects to compute for block ``i``, by name."""
        parts = {}
        x_lazy = self.x_part.lazy_part(i)
        if x_lazy is not None:
            parts["X"] = x_lazy
        for name, companion in self.companions.items():
            lazy = companion.lazy_part(i)
            if lazy is not None:
                parts[name] = lazy
        return parts

    def load(self, i) -> LoadedBlock:
        """Read block ``i`` of X with its y and per-sample parameters."""
        parts = self.lazy_parts(i)
        computed = _compute_parts(parts)

        X_block = self.x_part.load(i, computed.get("X"))
        start, stop = self._block_range(i)
        y_block = None
        if self.target_column is not None:
            X_block, y_block = split_column(X_block, self.target_column)

        values = {}
        for name, companion in self.companions.items():
            in_memory = isinstance(companion, _MemoryRows)
            if in_memory:
                values[name] = take_rows(companion.values, *self.x_part.row_ranges()[i])
            else:
                values[name] = computed[name]
            self._check_rows(i, name, values[name], X_block, in_memory)

        if "y" in values:
            y_block = values.pop("y")
        params = {**self.whole_params, **values}
        return LoadedBlock(i, start, stop, X_block, y_block, params, tuple(values))

    def _block_range(self, i):
        ranges = self.x_part.known_ranges()
        return (None, None) if ranges is None else ranges[i]

    def _check_rows(self, i, name, values, X_block, in_memory):
        got, expected = _length(values), n_rows(X_block)
        if got != expected and in_memory:
            raise ValueError(
                f"Block {i} of X has {expected} rows, but {got} rows were counted for it "
                f"when {name} was cut into blocks. The input changed during training; "
                "pass an input that stays the same until fit returns."
            )
        if got != expected:
            raise ValueError(
                f"Block {i} of X has {expected} rows, but the same block of {name} has {got}. "
                f"X and {name} are Dask collections with the same number of partitions "
                "but different rows in them (a filter applied to only one of them?). "
                f"Pass {name} as a column of X, or as a collection derived from X after "
                "the same filters."
            )


def _compute_parts(parts):
    """Compute the Dask parts of one block, by name.

    Parts of one kind are computed in one call, so a read that X and y share
    (two columns of one frame) runs once. Dask DataFrames (expressions) and
    Dask Arrays (graphs) are computed in separate calls, because Dask warns
    when one call mixes them.
    """
    if not parts:
        return {}
    import dask

    frames = {k: v for k, v in parts.items() if hasattr(v, "expr")}
    others = {k: v for k, v in parts.items() if k not in frames}
    computed = {}
    for group in (frames, others):
        if group:
            computed.update(dask.compute(group)[0])
    return computed


def _length(values) -> int:
    if isinstance(values, (list, tuple)):
        return len(values)
    return n_rows(values)


def _input_columns(X):
    """Return the column names of a frame, Dask frame or file source, or None."""
    if is_source(X):
        return X.all_column_names()
    if is_dask_collection(X):
        columns = getattr(X, "columns", None)
        return [str(c) for c in columns] if columns is not None else None
    return column_names(X)


def split_column(block, name):
    """Return ``(block without column name, that column)`` for a frame-like block."""
    if isinstance(block, pd.DataFrame):
        return block.drop(columns=[name]), block[name]
    if is_polars(block):
        return block.drop(name), block.get_column(name).to_numpy()
    if is_arrow_table(block):
        return block.drop_columns([name]), block.column(name).to_numpy()
    raise TypeError(
        f"y names the column {name!r}, but a block of X is a {type(block).__name__}, "
        "which has no columns. Pass y as an array instead."
    )


def take_positions(obj, positions):
    """Return the rows of ``obj`` at ``positions`` (an integer array), in that order."""
    if obj is None:
        return None
    if isinstance(obj, (pd.DataFrame, pd.Series)):
        return obj.iloc[positions]
    if is_arrow_table(obj):
        return obj.take(positions)
    if isinstance(obj, (list, tuple)):
        return [obj[p] for p in positions]
    if sp.issparse(obj) and obj.format not in ("csr", "csc", "lil"):
        return obj.tocsr()[positions]
    return obj[positions]
