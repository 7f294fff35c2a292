"""CSV files as a source: blocks are byte ranges, parsed by pyarrow inside the worker.

A block owns the lines that start inside its byte range. Its loader seeks to
the byte before the range, skips to the end of that line, and reads whole
lines until it passes the end of the range, so neighbouring blocks never share
or drop a line. This needs every newline to end a row: a quoted value that
contains a newline would be cut in two. ``newlines_in_values=True`` reads each
file as one block instead.

Column types are inferred once, from the first rows of the first file, and
every block is parsed with those types, so all blocks convert alike. A column
empty in those first rows is read as float64 (as pandas reads an all-empty
column); pass ``column_types=`` when the first rows do not show a column's
type.
"""

from __future__ import annotations

import io
import logging
from functools import cached_property

import pyarrow as pa
import pyarrow.csv as pacsv

from .._kernel import Block
from ._source import InputError, InvalidFileError, Source, TableLoader

logger = logging.getLogger(__name__)

__all__ = ["CsvSource", "read_csv"]

#: Bytes read from the start of the first file to infer column types and row size.
SAMPLE_BYTES = 1 << 20


def _parse(data, names, types, parse_options, null_values, columns):
    read_options = pacsv.ReadOptions(column_names=names, use_threads=False)
    convert_options = pacsv.ConvertOptions(
        column_types=types,
        include_columns=columns,
        null_values=null_values,
        strings_can_be_null=True,
    )
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=read_options,
        parse_options=parse_options,
        convert_options=convert_options,
    )


class CsvRange(TableLoader):
    """The lines of one CSV file that start in bytes ``start:stop``."""

    def __init__(self, fs, path, start, stop, schema, parse_options, null_values, **options):
        super().__init__(**options)
        self.fs = fs
        self.path = path
        self.start = start
        self.stop = stop
        self.schema = schema
        self.parse_options = parse_options
        self.null_values = null_values

    def read_bytes(self):
        with self.fs.open(self.path, "rb") as f:
            f.seek(self.start - 1)
            f.readline()
            begin = f.tell()
            if begin >= self.stop:
                return b""
            data = f.read(self.stop - begin)
            if data and not data.endswith(b"\n"):
                data += f.readline()
        return data

    def read_table(self, columns):
        data = self.read_bytes()
        columns = columns if columns is not None else self.schema.names
        if not data.strip():
            return pa.schema([self.schema.field(c) for c in columns]).empty_table()
        types = {field.name: field.type for field in self.schema}
        try:
            return _parse(
                data, self.schema.names, types, self.parse_options, self.null_values, columns
            )
        except pa.ArrowInvalid as exc:
            raise InvalidFileError(
                f"Cannot parse bytes {self.start} to {self.stop} of {self.path!r} as CSV with "
                f"the column types inferred from its first rows: {exc} (a row number counts "
                "from the start of those bytes). If a column holds other types further down, "
                "pass column_types={name: type} (--column-types NAME=TYPE on the command "
                "line). If quoted values contain newlines, pass newlines_in_values=True "
                "(--newlines-in-values)."
            ) from exc


def _type_name(kind) -> str:
    """Return the Arrow name of a column type given as an Arrow type or a name such as "float64"."""
    if isinstance(kind, str):
        try:
            return str(pa.type_for_alias(kind))
        except ValueError:
            return kind
    return str(kind)


class CsvSource(Source):
    """One or more CSV files with the same header, read by byte range.

    See :func:`read_csv`.
    """

    format = "CSV"
    suffixes = (".csv", ".csv.gz", ".tsv", ".txt")

    def __init__(
        self,
        path,
        columns=None,
        *,
        delimiter=None,
        quote_char='"',
        column_types=None,
        null_values=None,
        newlines_in_values=False,
    ):
        super().__init__(path, columns)
        if any(p.endswith(".gz") for p in self.paths):
            compressed = [p for p in self.paths if p.endswith(".gz")]
            raise ValueError(
                "Compressed CSV files cannot be split into byte ranges. Decompress them "
                f"first, or convert them to Parquet: {compressed}."
            )
        if delimiter is None:
            # Tab-separated files are named .tsv by convention.
            tabs = bool(self.paths) and all(p.endswith(".tsv") for p in self.paths)
            delimiter = "\t" if tabs else ","
        self.parse_options = pacsv.ParseOptions(
            delimiter=delimiter, quote_char=quote_char, newlines_in_values=newlines_in_values
        )
        self.column_types = dict(column_types or {})
        self.null_values = list(null_values) if null_values is not None else None
        self.newlines_in_values = newlines_in_values

    def fingerprint(self) -> dict:
        """Return the files' identity and the options that parse them.

        A resumed run that parsed the same files with another delimiter,
        other missing-value strings or column types would join parts of two
        readings, so the options are part of the input's identity.
        """
        identity = super().fingerprint()
        identity["read_options"] = {
            "delimiter": self.parse_options.delimiter,
            "quote_char": self.parse_options.quote_char,
            "column_types": {
                name: _type_name(kind) for name, kind in sorted(self.column_types.items())
            },
            "null_values": self.null_values,
            "newlines_in_values": self.newlines_in_values,
        }
        return identity

    def _header(self, path):
        with self.fs.open(path, "rb") as f:
            line = f.readline()
            offset = f.tell()
        if not line.strip():
            return None, offset
        try:
            return self._header_names(line), offset
        except pa.ArrowInvalid as exc:
            raise InvalidFileError(
                f"Cannot read the first line of {path!r} as a CSV header: {exc}. Check that it "
                "is a CSV file. A file of another format needs its own reader (read_parquet, "
                "read_npy, read_zarr), or --input-format on the command line."
            ) from exc

    def _header_names(self, line):
        read_options = pacsv.ReadOptions(autogenerate_column_names=True)
        width = pacsv.read_csv(
            io.BytesIO(line), read_options=read_options, parse_options=self.parse_options
        ).num_columns
        # Read every name as a string: inferred types would turn "007" into
        # "7", "true" into "True" and an empty name into "None".
        as_text = {f"f{i}": pa.string() for i in range(width)}
        table = pacsv.read_csv(
            io.BytesIO(line),
            read_options=read_options,
            parse_options=self.parse_options,
            convert_options=pacsv.ConvertOptions(column_types=as_text, strings_can_be_null=False),
        )
        return [table.column(i)[0].as_py() for i in range(width)]

    @cached_property
    def _layout(self):
        """Header names, data offset and size of each file, checked for equal headers."""
        layout = []
        first = None
        for path in self.paths:
            names, offset = self._header(path)
            size = self.fs.size(path)
            if names is None:
                logger.debug("skipping %s: it has no header line", path)
                continue
            if first is None:
                first = (path, names)
            elif names != first[1]:
                hint = ""
                if (len(names) == 1) != (len(first[1]) == 1):
                    hint = (
                        " One header reads as a single column, so the files may use different "
                        "delimiters (a .tsv file among .csv files, say): pass files of one kind, "
                        "or the delimiter with delimiter= (--delimiter)."
                    )
                raise ValueError(
                    f"The CSV files {first[0]!r} and {path!r} have different headers "
                    f"({first[1]} vs {names}). Pass files with the same columns in the same "
                    f"order.{hint}"
                )
            layout.append((path, names, offset, size))
        if not layout:
            raise InvalidFileError(f"None of the CSV files has a header line: {self.paths}.")
        return layout

    @cached_property
    def _sample(self):
        """Inferred schema of all columns and bytes per line, from the first file's start."""
        path, names, offset, size = self._layout[0]
        with self.fs.open(path, "rb") as f:
            f.seek(offset)
            data = f.read(SAMPLE_BYTES)
        if len(data) == SAMPLE_BYTES:
            data = data[: data.rfind(b"\n") + 1]
        lines = max(1, data.count(b"\n"))
        if not data.strip():
            schema = pa.schema([(n, pa.float64()) for n in names])
            return schema, 1, 100
        types = {n: t for n, t in self.column_types.items() if n in names}
        try:
            table = _parse(data, names, types, self.parse_options, self.null_values, None)
        except pa.ArrowInvalid as exc:
            raise InvalidFileError(
                f"Cannot parse the first rows of {path!r} as CSV: {exc}. Fix the file, or "
                "pass delimiter=, quote_char=, column_types= or newlines_in_values=True to "
                "match it (--delimiter, --column-types or --newlines-in-values on the command "
                "line)."
            ) from exc
        fields = []
        for field in table.schema:
            if pa.types.is_null(field.type):
                field = field.with_type(pa.float64())
            fields.append(field)
        schema = pa.schema(fields)
        frame_bytes = table.cast(schema).to_pandas().memory_usage(deep=True, index=False).sum()
        return schema, max(1, len(data) // lines), max(1, int(frame_bytes) // table.num_rows or 1)

    @property
    def schema(self) -> pa.Schema:
        schema = self._sample[0]
        if self.columns is None:
            return schema
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            raise InputError(
                f"Columns {missing} not found in {self._layout[0][0]!r}, which has columns "
                f"{schema.names}. Pick columns from that list."
            )
        return pa.schema([schema.field(c) for c in self.columns])

    def all_column_names(self):
        return list(self._sample[0].names)

    def estimated_rows(self):
        line_bytes = self._sample[1]
        return sum((size - offset) // line_bytes for _, _, offset, size in self._layout)

    def row_nbytes(self, columns=None):
        # The sample's pandas size covers all columns; scale it to the chosen ones.
        schema = self._sample[0]
        columns = columns if columns is not None else self.column_names()
        return max(1, self._sample[2] * len(columns) // max(1, len(schema)))

    def blocks(self, block_rows, features=None, keep=None, as_numpy=False):
        features = features if features is not None else self.column_names()
        schema = self._sample[0]
        block_bytes = max(1, block_rows * self._sample[1])
        options = {"features": features, "keep": keep, "as_numpy": as_numpy}
        blocks = []
        for path, _, offset, size in self._layout:
            step = size if self.newlines_in_values else block_bytes
            for start in range(offset, max(size, offset + 1), step):
                stop = min(size, start + step)
                loader = CsvRange(
                    self.fs,
                    path,
                    start,
                    stop,
                    schema,
                    self.parse_options,
                    self.null_values,
                    **options,
                )
                blocks.append(Block(len(blocks), None, None, loader))
        return blocks

    def read(self):
        blocks = self.blocks(block_rows=1 << 62, features=self.column_names())
        tables = [block.data.read_table(self.column_names()) for block in blocks]
        return pa.concat_tables(tables).to_pandas()


def read_csv(
    path,
    columns=None,
    *,
    delimiter=None,
    quote_char='"',
    column_types=None,
    null_values=None,
    newlines_in_values=False,
) -> CsvSource:
    """Open CSV files as a lazy source whose blocks are byte ranges read in the workers.

    Every file must start with the same header line. Column types are
    inferred from the first MiB of the first file and used for every block.

    Parameters
    ----------
    path : str, path-like or list of them
        A file, a glob, a directory (its ``.csv``, ``.tsv`` and ``.txt``
        files) or a list of these; local paths or fsspec URLs.
    columns : list of str, optional
        The columns to read.
    delimiter : str, optional
        The character between fields: a tab when every file name ends in
        ``.tsv``, else a comma.
    quote_char : str, default='"'
        The character that quotes fields holding delimiters.
    column_types : dict of str to pyarrow.DataType, optional
        Types of columns whose type the first rows do not show.
    null_values : list of str, optional
        Strings read as missing values; pyarrow's defaults (``""``,
        ``"NA"``, ``"NaN"``, ``"null"``, ...) when None.
    newlines_in_values : bool, default=False
        Set when quoted values contain newlines; each file is then read as
        one block, because a byte range could start inside a value.

    Returns
    -------
    source : CsvSource

    Examples
    --------
    >>> import tempfile, os
    >>> from postfit import read_csv
    >>> path = os.path.join(tempfile.mkdtemp(), "rows.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write('x,name\\n1.5,"a, b"\\n,c\\n')
    >>> read_csv(path).read()
         x  name
    0  1.5  a, b
    1  NaN     c
    """
    return CsvSource(
        path,
        columns,
        delimiter=delimiter,
        quote_char=quote_char,
        column_types=column_types,
        null_values=null_values,
        newlines_in_values=newlines_in_values,
    )
