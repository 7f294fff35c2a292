"""The base class of file sources and the loader that reads one block of a table.

A source is lazy: building one only lists its files. Metadata (schema, row
counts) is read on first use, and rows are read only by loaders, inside the
worker that scores them. Loaders are small picklable objects, so process and
cluster backends send a description of the rows, never the rows themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ._paths import expand_paths, file_fingerprint, input_patterns

__all__ = [
    "ArraySchema",
    "InputError",
    "InvalidFileError",
    "Source",
    "TableLoader",
    "check_column_list",
    "table_to_frame",
]


class InvalidFileError(ValueError):
    """A file could not be read as the format it was given as."""


class InputError(ValueError):
    """The input, its columns or the output options do not fit the estimator or each other.

    Raised before any block is scored.
    """


def check_column_list(columns, name="columns"):
    """Return ``columns`` as a list of str, or None; raise for anything else."""
    if columns is None:
        return None
    if isinstance(columns, str):
        return [columns]
    if isinstance(columns, (list, tuple)) and all(isinstance(c, str) for c in columns):
        if len(set(columns)) != len(columns):
            raise ValueError(f"{name} lists a column more than once: {list(columns)!r}.")
        return list(columns)
    raise TypeError(f"{name} must be a column name or a list of column names, got {columns!r}.")


def table_to_frame(table, as_numpy=False):
    """Convert an Arrow table to what the estimator receives: a pandas frame or an array.

    ``as_numpy`` is for estimators fitted without feature names, which
    scikit-learn would otherwise warn about for every block.
    """
    frame = table.to_pandas()
    return frame.to_numpy() if as_numpy else frame


@dataclass(frozen=True)
class ArraySchema:
    """Element type and shape of an array source (NumPy ``.npy`` or Zarr)."""

    dtype: np.dtype
    shape: tuple


class TableLoader(ABC):
    """Read one block of a table inside the worker.

    ``load()`` returns the feature columns (a pandas frame, or an array when
    ``as_numpy``) and keeps the ``keep`` columns as an Arrow table in
    ``carried``, which the output sink writes next to the predictions. The
    loader and the sink run in the same worker call, so the rows are read
    once.
    """

    def __init__(self, features, keep=None, as_numpy=False):
        self.features = features
        self.keep = keep or []
        self.as_numpy = as_numpy
        self.carried = None

    @abstractmethod
    def read_table(self, columns):
        """Return the block's rows of ``columns`` as an Arrow table."""

    def columns_to_read(self):
        if self.features is None:
            return None
        return list(dict.fromkeys([*self.features, *self.keep]))

    def load(self):
        table = self.read_table(self.columns_to_read())
        if self.keep:
            self.carried = table.select(self.keep)
        if self.features is not None:
            table = table.select(self.features)
        return table_to_frame(table, self.as_numpy)

    def __getstate__(self):
        # The carried columns are output of this worker call, never input of another.
        state = self.__dict__.copy()
        state["carried"] = None
        return state


class Source(ABC):
    """A lazy input stored in one or more files, read block by block in the workers.

    Create one with :func:`postfit.read_parquet`, :func:`postfit.read_csv`,
    :func:`postfit.read_npy` or :func:`postfit.read_zarr` and pass it to any
    post-fit method of :class:`postfit.ParallelPostFit`.
    """

    #: Name of the file format, used in messages and logs.
    format: str = ""
    #: File name endings that a directory is filtered by.
    suffixes: tuple = ()
    #: True for tables with named columns, False for arrays.
    tabular: bool = True

    def __init__(self, path, columns=None):
        self.fs, self.paths = expand_paths(path, self.suffixes, what=f"{self.format} file")
        #: The paths, folders and patterns as given, which later files may join.
        self.inputs = input_patterns(self.fs, path)
        self.columns = check_column_list(columns)

    def __repr__(self):
        shown = self.paths[:3] + (["..."] if len(self.paths) > 3 else [])
        columns = "" if self.columns is None else f", columns={self.columns!r}"
        return f"{type(self).__name__}({shown!r}{columns})"

    @property
    @abstractmethod
    def schema(self):
        """The columns and their types (a ``pyarrow.Schema``), or an :class:`ArraySchema`."""

    @property
    def n_rows(self) -> int | None:
        """The number of rows, where the format stores it, else None."""
        return None

    def column_names(self) -> list[str] | None:
        """Return the names of the selected columns, or None for arrays."""
        if not self.tabular:
            return None
        return list(self.schema.names)

    def all_column_names(self) -> list[str] | None:
        """Return the names of every column in the files, selected or not."""
        return self.column_names()

    def estimated_rows(self) -> int:
        """Return the number of rows, or an estimate where the format does not store it."""
        return self.n_rows or 0

    def read_unit(self) -> tuple[int | None, int]:
        """Return ``(rows, count)`` of the units the format decodes whole, such as row groups.

        ``rows`` is the largest unit's row count, or None where the format
        reads any range of rows without decoding more.
        """
        return None, 0

    @abstractmethod
    def row_nbytes(self, columns=None) -> int:
        """Estimate the bytes one row of ``columns`` takes in memory once read."""

    @abstractmethod
    def blocks(self, block_rows, features=None, keep=None, as_numpy=False):
        """Return the list of :class:`postfit._kernel.Block` whose loaders read the rows.

        Block boundaries depend only on the files and ``block_rows``, so a
        resumed run cuts the input exactly as the interrupted one did.
        """

    @abstractmethod
    def read(self):
        """Read the whole input into memory (a pandas frame for tables, else an array)."""

    def fingerprint(self) -> dict:
        """Return what identifies this input's version: its files, sizes and change times."""
        return {
            "format": self.format,
            "columns": self.columns,
            "files": [file_fingerprint(self.fs, path) for path in self.paths],
        }
