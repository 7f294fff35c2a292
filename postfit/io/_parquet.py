"""Parquet files as a source: one block per row group, or per run of small row groups.

Row groups larger than a block are cut into slices of ``block_rows`` rows.
Parquet cannot decode part of a column chunk, so the loader of each slice
decodes the row group's columns one at a time and copies out its rows: a row
group split into ``m`` blocks is decoded ``m`` times over. Writers that choose
row groups no larger than a block avoid that cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._kernel import Block
from ._paths import is_local
from ._source import InputError, InvalidFileError, Source, TableLoader

logger = logging.getLogger(__name__)

__all__ = ["ParquetSource", "read_parquet"]

# Python objects that pandas makes of Arrow strings and binaries take about
# this many bytes beyond the data itself.
_OBJECT_OVERHEAD_BYTES = 56


def _open_parquet(fs, path):
    try:
        if is_local(fs):
            # pyarrow's own file reader skips the Python file object layer.
            return pq.ParquetFile(path)
        return pq.ParquetFile(fs.open(path, "rb"))
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise InvalidFileError(
            f"Cannot read {path!r} as Parquet: {exc}. Check that the file is a complete "
            "Parquet file, or remove it from the input."
        ) from exc


@dataclass(frozen=True)
class _FileMeta:
    path: str
    schema: pa.Schema
    group_rows: tuple
    uncompressed_bytes: dict


def _read_meta(fs, path):
    parquet = _open_parquet(fs, path)
    metadata = parquet.metadata
    sizes: dict[str, int] = {}
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            name = column.path_in_schema.split(".")[0]
            sizes[name] = sizes.get(name, 0) + column.total_uncompressed_size
    rows = tuple(metadata.row_group(g).num_rows for g in range(metadata.num_row_groups))
    return _FileMeta(path, parquet.schema_arrow, rows, sizes)


def _pandas_index_columns(schema: pa.Schema) -> set[str]:
    """Return the columns that pandas wrote for an unnamed index, such as ``__index_level_0__``.

    ``pandas.read_parquet`` turns them back into the index, so they are not data
    columns and are left out unless ``columns=`` names them.
    """
    metadata = schema.pandas_metadata or {}
    return {
        name
        for name in metadata.get("index_columns", [])
        if isinstance(name, str) and name.startswith("__index_level_")
    }


def _comparable(kind):
    # pandas 3 writes large_string where pyarrow writes string; a block is
    # cast to the first file's types, which is lossless between the two.
    if kind is None:
        return None
    if pa.types.is_large_string(kind):
        return pa.string()
    if pa.types.is_large_binary(kind):
        return pa.binary()
    return kind


def _same_type(a, b) -> bool:
    # A column of Arrow type null has no values, so it matches any type. pandas
    # (2.3 and 3.1) writes an object column of only None, or of no rows, as null.
    if a is None or b is None:
        return a is b
    if pa.types.is_null(a) or pa.types.is_null(b):
        return True
    return _comparable(a) == _comparable(b)


def _unify_schemas(files: list[_FileMeta], columns) -> pa.Schema:
    """Check that the files have the same columns and types, and return their common schema.

    The common schema is the first file's, except that a column of type null
    takes the type that a later file gives it, as ``pyarrow.unify_schemas``
    does. Every block is cast to it.

    Raises ValueError when a column is missing from a file or has another type
    there. The message names that file and the file that the column's type in
    the common schema came from.
    """
    first = files[0]
    types = {field.name: field.type for field in first.schema}
    origins = dict.fromkeys(first.schema.names, first.path)
    for other in files[1:]:
        compared = columns
        if compared is None:
            # A file written from a filtered frame has an index column that
            # one written from a fresh frame lacks; neither is data.
            hidden = _pandas_index_columns(first.schema) | _pandas_index_columns(other.schema)
            names = dict.fromkeys(first.schema.names + other.schema.names)
            compared = [name for name in names if name not in hidden]
        differences: dict[str, list[str]] = {}
        for name in compared:
            a = types.get(name)
            b = other.schema.field(name).type if name in other.schema.names else None
            if not _same_type(a, b):
                origin = origins.get(name, first.path)
                differences.setdefault(origin, []).append(
                    f"{name}: {a or 'missing'} vs {b or 'missing'}"
                )
            elif a is not None and pa.types.is_null(a) and not pa.types.is_null(b):
                types[name] = b
                origins[name] = other.path
        if differences:
            origin, parts = next(iter(differences.items()))
            raise ValueError(
                f"The Parquet files {origin!r} and {other.path!r} have different "
                f"schemas ({'; '.join(parts)}). Pass files with the same columns and types, "
                "or select the columns they share with columns=."
            )
    schema = first.schema
    for i, field in enumerate(first.schema):
        if types[field.name] != field.type:
            schema = schema.set(i, field.with_type(types[field.name]))
    return schema


class ParquetPart(TableLoader):
    """Rows of one Parquet file: whole row groups, or one batch of one row group."""

    def __init__(self, fs, path, row_groups, batch=None, schema=None, **options):
        super().__init__(**options)
        self.fs = fs
        self.path = path
        self.row_groups = row_groups
        self.batch = batch
        self.schema = schema

    def read_table(self, columns):
        parquet = _open_parquet(self.fs, self.path)
        try:
            if self.batch is None:
                table = parquet.read_row_groups(self.row_groups, columns=columns)
            else:
                table = self._read_batch(parquet, columns)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            raise InvalidFileError(
                f"Cannot read row groups {self.row_groups} of {self.path!r}: {exc}."
            ) from exc
        if self.schema is not None:
            wanted = (
                self.schema
                if columns is None
                else pa.schema([self.schema.field(c) for c in columns])
            )
            table = table.cast(wanted)
        return table

    def _read_batch(self, parquet, columns):
        # One column chunk at a time, copying out this block's rows, so that
        # memory holds one column of the row group plus the block, not the
        # whole row group. pyarrow's iter_batches was measured to hold more.
        size, number = self.batch
        offset = size * number
        group = self.row_groups[0]
        names = columns if columns is not None else parquet.schema_arrow.names
        rows = None
        arrays = []
        for name in names:
            column = parquet.read_row_group(group, columns=[name], use_threads=False).column(0)
            part = column.slice(offset, size)
            if rows is None:
                rows = pa.array(np.arange(len(part)))
            arrays.append(part.take(rows))
            del column
        if rows is None:
            return pa.table({})
        return pa.table(arrays, names=names)


class ParquetSource(Source):
    """One or more Parquet files with the same schema, read by row group.

    See :func:`read_parquet`.
    """

    format = "Parquet"
    suffixes = (".parquet", ".pq", ".parq")

    @cached_property
    def _checked(self) -> tuple[list[_FileMeta], pa.Schema]:
        files = [_read_meta(self.fs, path) for path in self.paths]
        common = _unify_schemas(files, self.columns)
        first = files[0]
        if self.columns is not None:
            missing = [c for c in self.columns if c not in first.schema.names]
            if missing:
                raise InputError(
                    f"Columns {missing} not found in {first.path!r}, which has columns "
                    f"{first.schema.names}. Pick columns from that list."
                )
        return files, common

    @property
    def _files(self) -> list[_FileMeta]:
        return self._checked[0]

    @property
    def _common_schema(self) -> pa.Schema:
        """The first file's schema, with null-typed columns given the other files' types."""
        return self._checked[1]

    @property
    def schema(self) -> pa.Schema:
        first = self._common_schema
        schema = first.remove_metadata()
        if self.columns is None:
            hidden = _pandas_index_columns(first)
            return pa.schema([field for field in schema if field.name not in hidden])
        return pa.schema([schema.field(c) for c in self.columns])

    def all_column_names(self):
        first = self._files[0].schema
        hidden = _pandas_index_columns(first)
        return [name for name in first.names if name not in hidden]

    @property
    def n_rows(self) -> int:
        return sum(sum(f.group_rows) for f in self._files)

    def estimated_rows(self):
        return self.n_rows

    def read_unit(self):
        groups = [rows for meta in self._files for rows in meta.group_rows]
        return (max(groups), len(groups)) if groups else (None, 0)

    def row_nbytes(self, columns=None):
        columns = columns if columns is not None else self.column_names()
        rows = max(1, self.n_rows)
        schema = self._common_schema
        total = 0
        for name in columns:
            data = sum(f.uncompressed_bytes.get(name, 0) for f in self._files)
            total += data / rows
            kind = schema.field(name).type
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                total += _OBJECT_OVERHEAD_BYTES
        return max(1, int(total))

    def blocks(self, block_rows, features=None, keep=None, as_numpy=False):
        features = features if features is not None else self.column_names()
        schema = self._common_schema.remove_metadata()
        options = {"features": features, "keep": keep, "as_numpy": as_numpy}
        blocks = []
        start = 0
        for meta in self._files:
            for groups, batch, rows in _cut_file(meta.group_rows, block_rows):
                loader = ParquetPart(self.fs, meta.path, groups, batch, schema, **options)
                blocks.append(Block(len(blocks), start, start + rows, loader))
                start += rows
        return blocks

    def read(self):
        columns = self.column_names()
        tables = []
        for meta in self._files:
            parquet = _open_parquet(self.fs, meta.path)
            tables.append(parquet.read(columns=columns))
        schema = pa.schema([self._common_schema.field(c) for c in columns])
        table = pa.concat_tables([t.cast(schema) for t in tables])
        return table.to_pandas()


def _cut_file(group_rows, block_rows):
    """Yield ``(row_groups, batch, rows)``: runs of small row groups, or batches of a large one."""
    run, run_rows = [], 0
    for g, rows in enumerate(group_rows):
        if rows > block_rows:
            if run:
                yield run, None, run_rows
                run, run_rows = [], 0
            n_batches = -(-rows // block_rows)
            for k in range(n_batches):
                yield [g], (block_rows, k), min(block_rows, rows - k * block_rows)
            continue
        if run and run_rows + rows > block_rows:
            yield run, None, run_rows
            run, run_rows = [], 0
        run.append(g)
        run_rows += rows
    if run:
        yield run, None, run_rows


def read_parquet(path, columns=None) -> ParquetSource:
    """Open Parquet files as a lazy source whose blocks are read inside the workers.

    Nothing is read until a method runs, except the file list; the schema and
    the row count come from the files' footers on first use.

    Parameters
    ----------
    path : str, path-like or list of them
        A file, a glob such as ``"data/day=*/*.parquet"``, a directory
        (its ``.parquet``, ``.pq`` and ``.parq`` files, hidden files
        skipped), or a list of these. fsspec URLs (``file://``,
        ``memory://``, and ``s3://`` and others when their fsspec driver is
        installed) work too.
    columns : list of str, optional
        The columns to read. When the estimator was fitted on a frame, the
        columns it was fitted with are read in fit order, regardless of this parameter.

    Returns
    -------
    source : ParquetSource
        Pass it to a method of :class:`postfit.ParallelPostFit`; ``.schema``
        and ``.n_rows`` describe it and ``.read()`` loads it whole.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> from postfit import read_parquet
    >>> folder = tempfile.mkdtemp()
    >>> pd.DataFrame({"x": [1.0, 2.0, 3.0], "id": [7, 8, 9]}).to_parquet(
    ...     os.path.join(folder, "part-0.parquet"))
    >>> source = read_parquet(folder, columns=["x"])
    >>> source.n_rows
    3
    >>> source.schema
    x: double
    """
    return ParquetSource(path, columns)
