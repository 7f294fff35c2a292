"""File outputs: one part per block, written atomically, with a record of finished parts.

Each worker writes the part of the block it scored to a temporary name and
renames it, so a part file either is complete or does not exist. The driver
appends one line per finished part to ``_postfit_done.jsonl``, next to a
``_postfit_run.json`` that identifies the run (input files, method, model,
block size). A rerun with ``resume=True`` checks that record and scores only
the blocks not listed. ``_postfit.lock`` contains the process id of the running
job, so a second run on the same output is rejected.

Parquet outputs are a directory of parts (a Parquet dataset that pandas,
pyarrow, Dask and Spark read as one table). Until every block is done, the
parts wait in ``OUTPUT/_postfit_parts/``, which those readers skip as they
skip every name that starts with an underscore, so an unfinished output
reads as an empty table. Then the parts move into place one rename each,
and an empty ``_SUCCESS`` file, as Spark and Hadoop jobs write, marks the
output finished: a run killed during the renames leaves part of the rows
readable, and no ``_SUCCESS``. CSV, ``.npy`` and Zarr outputs are one file
or store: their parts are staged in ``OUTPUT.postfit-parts/`` and joined in
block order once every block is done, then renamed into place.

NOTE: when a run fails, blocks already running in loky worker processes
still finish and may rename their part files after the run has returned. A
resumed run rewrites those parts with the same content, but nothing waits
for them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import socket
import time
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa

from .._blocks import EmptyOutput
from ..exceptions import OutputExistsError
from ._paths import check_output_folder, is_local, to_url
from ._source import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "OutputLockedError",
    "OutputNames",
    "OutputStore",
    "PartWriter",
    "WriteResult",
    "output_names",
]

RUN_RECORD = "_postfit_run.json"
DONE_LOG = "_postfit_done.jsonl"
LOCK_FILE = "_postfit.lock"
STAGING_SUFFIX = ".postfit-parts"
#: The folder inside a Parquet output that contains its parts until the run is complete.
PARQUET_STAGING = "_postfit_parts"
#: The empty file that marks a finished Parquet output.
SUCCESS_MARKER = "_SUCCESS"
FORMATS = {"parquet": ".parquet", "csv": ".csv", "npy": ".npy", "zarr": ".zarr"}
# Formats stored as plain arrays, which cannot hold carried columns.
ARRAY_FORMATS = ("npy", "zarr")

_PREFIXES = {
    "predict": "prediction",
    "predict_proba": "proba",
    "predict_log_proba": "log_proba",
    "decision_function": "decision",
    "score_samples": "score",
}


class OutputLockedError(RuntimeError):
    """Another run holds the lock on this output."""


@dataclass(frozen=True)
class WriteResult:
    """Summary of a run that wrote its output to files."""

    #: Path or URL of the output.
    path: str
    #: Its format: ``"parquet"``, ``"csv"``, ``"npy"`` or ``"zarr"``.
    format: str
    #: Rows in the output, resumed parts included.
    n_rows: int
    #: Rows scored by this run; fewer than ``n_rows`` when it resumed.
    n_scored: int
    #: Blocks (part files) of the whole run.
    n_blocks: int
    #: Blocks finished by an earlier run and not scored again.
    n_resumed: int
    #: Seconds this run spent scoring.
    seconds: float

    @property
    def rows_per_second(self) -> float:
        """Rows scored by this run per second."""
        return self.n_scored / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class OutputNames:
    """Naming of output columns: ``prefix`` alone for one column, else one per label."""

    prefix: str
    labels: tuple | None = None

    def names(self, width: int | None) -> list[str]:
        """Return the column names of an output with ``width`` columns (None: 1-D)."""
        if width is None:
            return [self.prefix]
        if self.labels is not None and len(self.labels) == width:
            if not self.prefix:
                return [str(label) for label in self.labels]
            return [f"{self.prefix}_{label}" for label in self.labels]
        prefix = self.prefix or "x"
        return [f"{prefix}_{i}" for i in range(width)]


def output_names(estimator, method) -> OutputNames:
    """Return the column naming for ``method``'s output: classes or feature names as labels."""
    if method == "transform":
        try:
            labels = tuple(str(n) for n in estimator.get_feature_names_out())
        except (AttributeError, ValueError, TypeError):
            labels = None
        return OutputNames("", labels)
    prefix = _PREFIXES.get(method, str(getattr(method, "__name__", method)))
    classes = getattr(estimator, "classes_", None)
    per_class = method in ("predict_proba", "predict_log_proba", "decision_function")
    if per_class and isinstance(classes, np.ndarray) and classes.ndim == 1:
        return OutputNames(prefix, tuple(str(c) for c in classes))
    return OutputNames(prefix)


def output_table(out, names: OutputNames, carried=None) -> pa.Table:
    """Return one block's output as an Arrow table, after the carried input columns."""
    if isinstance(out, pd.DataFrame):
        table = pa.Table.from_pandas(out, preserve_index=False)
        table = table.rename_columns([str(c) for c in table.column_names])
    elif isinstance(out, pd.Series):
        table = pa.table({names.names(None)[0]: pa.array(out.to_numpy())})
    elif isinstance(out, np.ndarray) and out.ndim in (1, 2):
        if out.ndim == 1:
            table = pa.table({names.names(None)[0]: pa.array(out)})
        else:
            columns = names.names(out.shape[1])
            table = pa.table({name: pa.array(out[:, i]) for i, name in enumerate(columns)})
    else:
        raise TypeError(
            f"Cannot write a method output of type {type(out).__name__} to a table file; "
            "postfit writes 1-D and 2-D NumPy arrays and pandas outputs. Call the method "
            "without output= to get it in memory."
        )
    if carried is None or carried.num_columns == 0:
        return table
    clash = sorted(set(carried.column_names) & set(table.column_names))
    if clash:
        raise ValueError(
            f"Carried columns {clash} have the same names as output columns. Rename "
            "those input columns, or carry other columns."
        )
    for name in table.column_names:
        carried = carried.append_column(name, table.column(name))
    return carried


def storable_array(out) -> np.ndarray:
    """Return ``out`` as an array that ``.npy`` and Zarr store without pickling."""
    array = out.to_numpy() if isinstance(out, (pd.DataFrame, pd.Series)) else out
    if not isinstance(array, np.ndarray):
        raise TypeError(
            f"Cannot write a method output of type {type(out).__name__} to an array file. "
            "Write it to Parquet or CSV instead."
        )
    if array.dtype.hasobject:
        if not all(isinstance(v, str) for v in array.ravel()):
            raise TypeError(
                "The output contains Python objects, which .npy and Zarr files cannot store "
                "without pickling. Write it to Parquet or CSV instead."
            )
        array = array.astype(str)
    return array


class PartWriter:
    """Write the output of one block as a part file, inside the worker that scored it."""

    def __init__(self, fs, directory, fmt, names: OutputNames):
        self.fs = fs
        self.directory = directory
        self.format = fmt
        self.names = names

    def part_name(self, index) -> str:
        extension = ".npy" if self.format in ARRAY_FORMATS else FORMATS[self.format]
        return f"part-{index:06d}{extension}"

    def write(self, block, out):
        if isinstance(out, EmptyOutput):
            return {"index": block.index, "rows": 0, "file": None, "columns": None}
        carried = getattr(block.data, "carried", None)
        name = self.part_name(block.index)
        final = f"{self.directory}/{name}"
        temporary = f"{self.directory}/.{name}.{os.getpid()}.tmp"
        if self.format in ARRAY_FORMATS:
            array = storable_array(out)
            rows, columns = len(array), None
            with self.fs.open(temporary, "wb") as f:
                np.save(f, array, allow_pickle=False)
        else:
            table = output_table(out, self.names, carried)
            rows, columns = table.num_rows, table.column_names
            with self.fs.open(temporary, "wb") as f:
                self._write_table(table, f)
        self.fs.mv(temporary, final)
        return {"index": block.index, "rows": rows, "file": name, "columns": columns}

    def _write_table(self, table, f):
        if self.format == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, f)
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, f, write_options=pacsv.WriteOptions(include_header=False))


def infer_format(path: str, fmt=None) -> str:
    """Return the output format from ``fmt`` or the path's ending (Parquet for any other)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"Invalid output format {fmt!r}. Choose one of {', '.join(FORMATS)}.")
        return fmt
    lower = path.rstrip("/").lower()
    for name, extension in FORMATS.items():
        if lower.endswith(extension):
            return name
    # Any other path names a directory of Parquet parts, as Spark and Dask write them.
    return "parquet"


class OutputStore:
    """The driver's side of a file output: checks, lock, run record, finished parts, joining."""

    def __init__(self, output, fmt=None):
        self.url = os.fspath(output)
        self.fs, self.path = fsspec.core.url_to_fs(self.url)
        self.path = self.path.rstrip("/")
        self.format = infer_format(self.path, fmt)
        self.staged = self.format != "parquet"
        self.parts_dir = self.path + STAGING_SUFFIX if self.staged else self.path
        self.locked = False

    def _file(self, name):
        return f"{self.parts_dir}/{name}"

    # Opening ----------------------------------------------------------------

    def open(self, record: dict, overwrite: bool, resume: bool):
        """Check the output, take the lock and return ``(record, finished receipts)``.

        The returned record is the stored one when resuming, so the run cuts
        its blocks as the interrupted one did.
        """
        if overwrite and resume:
            raise ValueError("Pass overwrite=True or resume=True, not both.")
        self._check_parent()
        previous = self._check_existing(overwrite, resume)
        self.fs.makedirs(self.parts_dir, exist_ok=True)
        self._acquire_lock()
        try:
            if previous is not None:
                self._check_same_run(previous, record)
                self._remove_partial_parts()
                return previous, self._finished()
            self._write_json(RUN_RECORD, record)
            # NOTE: an old CSV, .npy or Zarr output is replaced only when the run finishes,
            # because the input may still read it (a Zarr array opened from it, or a link to
            # it). A run that fails leaves it beside the unfinished run's parts folder.
            return record, {}
        except BaseException:
            self.release()
            raise

    def _check_parent(self):
        """Reject a local output whose folder is missing (often a mistyped path) or read-only."""
        if not is_local(self.fs):
            # Object stores have no directories to check.
            return
        check_output_folder(self.path, self.url)

    def _check_existing(self, overwrite, resume):
        """Return the stored run record when resuming, after clearing what overwrite replaces."""
        fs = self.fs
        interrupted = resume and fs.isdir(self.parts_dir) and fs.exists(self._file(RUN_RECORD))
        if self.staged and fs.exists(self.path) and not overwrite and not interrupted:
            complete = resume and not fs.exists(self.parts_dir)
            done = " It is complete, so there is nothing to resume." if complete else ""
            if not resume and fs.exists(self._file(RUN_RECORD)):
                done = (
                    f" An interrupted run that replaces it left its parts in {self.parts_dir!r}:"
                    " pass resume=True (--resume) to finish that run."
                )
            raise OutputExistsError(
                f"The output {self.url!r} already exists.{done} Pass overwrite=True "
                "(--overwrite) to replace it, or choose another output path."
            )
        if self.staged and fs.exists(self.path) and interrupted:
            # An interrupted overwrite: the old file stays until the resumed run finishes.
            logger.info("resuming into %s, which is replaced when the run finishes", self.url)
        if not fs.exists(self.parts_dir):
            return None
        if fs.isdir(self.parts_dir):
            # A run in progress is reported as such, whatever else is there.
            self._check_lock_free()
        ours = fs.exists(self._file(RUN_RECORD))
        if not fs.isdir(self.parts_dir) or not ours:
            if fs.isdir(self.parts_dir) and not fs.ls(self.parts_dir):
                return None
            raise OutputExistsError(
                f"The output {self.url!r} already exists and was not written by postfit, "
                "so postfit will not delete it. Remove it yourself or choose another path."
            )
        if resume:
            return self._read_json(RUN_RECORD)
        if overwrite:
            self._check_lock_free()
            fs.rm(self.parts_dir, recursive=True)
            return None
        hint = "continue it" if self.staged else "continue it if it is unfinished"
        raise OutputExistsError(
            f"The output {self.url!r} already contains a postfit run. Pass resume=True "
            f"(--resume) to {hint}, or overwrite=True (--overwrite) to start over."
        )

    def _check_same_run(self, previous, record):
        if previous.get("version") != record["version"]:
            raise ResumeMismatchError(
                f"Cannot resume the run in {self.url!r}: another version of postfit wrote it "
                f"(run record version {previous.get('version')!r}, and this version writes "
                f"{record['version']!r}), and its parts or model hash are kept differently. "
                "Pass overwrite=True (--overwrite) to score the input again."
            )
        for key, value in record.items():
            if key == "block_rows":
                continue
            if previous.get(key) != value:
                entry = RECORD_NAMES.get(key, key)
                raise ResumeMismatchError(
                    f"Cannot resume the run in {self.url!r}: {entry} "
                    f"{_describe_change(key, previous.get(key), value)}. Pass the same "
                    "input, model and options as the interrupted run, or overwrite=True "
                    "(--overwrite) to start over."
                )

    def _remove_partial_parts(self):
        """Delete part files that a killed run left half-written under their temporary names."""
        # This run holds the lock, so no live writer owns these files.
        for folder in (self.parts_dir, self._writing_dir()):
            for path in self.fs.glob(f"{folder}/.part-*.tmp"):
                logger.info("removing %s, left half-written by an interrupted run", path)
                self.fs.rm(path)

    def _writing_dir(self) -> str:
        """Return the folder that workers write parts to."""
        return self.parts_dir if self.staged else f"{self.parts_dir}/{PARQUET_STAGING}"

    def _part_exists(self, name) -> bool:
        """Return whether a finished part exists, still waiting or already in place."""
        return self.fs.exists(f"{self._writing_dir()}/{name}") or self.fs.exists(self._file(name))

    def _finished(self) -> dict:
        """Return the receipts of finished parts whose files exist, by block index."""
        finished = {}
        path = self._file(DONE_LOG)
        if not self.fs.exists(path):
            return finished
        text = self.fs.cat_file(path).decode()
        for line in text.splitlines():
            try:
                receipt = json.loads(line)
            except json.JSONDecodeError:
                # A run killed while appending leaves a partial last line.
                continue
            if receipt["file"] is None or self._part_exists(receipt["file"]):
                finished[receipt["index"]] = receipt
        return finished

    # Lock -------------------------------------------------------------------

    def _lock_holder(self):
        try:
            return json.loads(self.fs.cat_file(self._file(LOCK_FILE)))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}

    def _is_stale(self, holder) -> bool:
        if not holder or holder.get("host") != socket.gethostname():
            return False
        import psutil

        return not psutil.pid_exists(holder.get("pid", -1))

    def _check_lock_free(self):
        holder = self._lock_holder()
        if holder is None or self._is_stale(holder):
            return
        raise OutputLockedError(
            f"Another run is writing {self.url!r} (process {holder.get('pid')} on "
            f"{holder.get('host')!r}, started {holder.get('started')}). Wait for it to finish. "
            f"If no run is active, delete {self._file(LOCK_FILE)!r}."
        )

    def _acquire_lock(self):
        holder = self._lock_holder()
        if holder is not None:
            self._check_lock_free()
            logger.warning(
                "removing the stale lock of %s, left by process %s on %s (started %s), which "
                "no longer runs",
                self.url,
                holder.get("pid"),
                holder.get("host"),
                holder.get("started"),
            )
            self.fs.rm(self._file(LOCK_FILE))
        content = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "started": time.ctime()}
        ).encode()
        path = self._file(LOCK_FILE)
        if is_local(self.fs):
            # O_EXCL makes taking the lock atomic on a local disk.
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_lock_free()
                raise
            with os.fdopen(fd, "wb") as f:
                f.write(content)
        else:
            # NOTE: other filesystems have no atomic create here, so two runs
            # started at the same moment could both take the lock.
            self.fs.pipe_file(path, content)
        self.locked = True

    def release(self):
        """Remove the lock, if this run holds it."""
        if self.locked:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self._file(LOCK_FILE))
            self.locked = False

    # Records ----------------------------------------------------------------

    def _write_json(self, name, value):
        temporary = self._file(f".{name}.tmp")
        self.fs.pipe_file(temporary, json.dumps(value, indent=1, default=str).encode())
        self.fs.mv(temporary, self._file(name))

    def _read_json(self, name):
        return json.loads(self.fs.cat_file(self._file(name)))

    def record_done(self, receipt):
        """Append a finished part to the record, so that a resumed run skips it."""
        line = (json.dumps(receipt) + "\n").encode()
        with self.fs.open(self._file(DONE_LOG), "ab") as f:
            f.write(line)

    def writer(self, names: OutputNames) -> PartWriter:
        directory = self._writing_dir()
        self.fs.makedirs(directory, exist_ok=True)
        return PartWriter(self.fs, directory, self.format, names)

    # Finishing --------------------------------------------------------------

    def finish(self, receipts: dict, names: OutputNames, meta=None):
        """Mark the run complete; staged formats are joined into the final file first."""
        ordered = [receipts[i] for i in sorted(receipts) if receipts[i]["file"] is not None]
        if not self.staged:
            if not ordered and meta is not None:
                # Every block was empty: one part of zero rows keeps the columns and types.
                import pyarrow.parquet as pq

                with self.fs.open(self._file("part-000000.parquet"), "wb") as f:
                    pq.write_table(output_table(meta, names), f)
            waiting = self._writing_dir()
            for receipt in ordered:
                source = f"{waiting}/{receipt['file']}"
                if self.fs.exists(source):
                    self.fs.mv(source, self._file(receipt["file"]))
            if self.fs.exists(waiting):
                self.fs.rm(waiting, recursive=True)
            record = self._read_json(RUN_RECORD)
            record["complete"] = True
            self._write_json(RUN_RECORD, record)
            # The marker that Spark and Hadoop jobs write in a finished output.
            self.fs.pipe_file(self._file(SUCCESS_MARKER), b"")
            return
        temporary = f"{self.path}.postfit-tmp"
        if self.fs.exists(temporary):
            self.fs.rm(temporary, recursive=True)
        if self.format == "csv":
            self._join_csv(ordered, temporary, names, meta)
        else:
            self._join_arrays(ordered, temporary, meta)
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)
        self.fs.mv(temporary, self.path, recursive=self.format == "zarr")
        self.release()
        self.fs.rm(self.parts_dir, recursive=True)

    def _join_csv(self, ordered, temporary, names, meta):
        if ordered:
            columns = ordered[0]["columns"]
        elif meta is not None and getattr(meta, "ndim", 1) == 2:
            columns = names.names(meta.shape[1])
        elif meta is None and names.labels is not None:
            # A transformer's output feature names give the columns without any row.
            columns = names.names(len(names.labels))
        else:
            columns = names.names(None)
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(columns)
        with self.fs.open(temporary, "wb") as out:
            out.write(header.getvalue().encode())
            for receipt in ordered:
                with self.fs.open(self._file(receipt["file"]), "rb") as part:
                    while chunk := part.read(1 << 22):
                        out.write(chunk)

    def _part_headers(self, ordered):
        headers = []
        for receipt in ordered:
            with self.fs.open(self._file(receipt["file"]), "rb") as f:
                version = np.lib.format.read_magic(f)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                headers.append(read(f))
        return headers

    def _join_arrays(self, ordered, temporary, meta):
        headers = self._part_headers(ordered)
        if headers:
            dtype = np.result_type(*[dtype for _, _, dtype in headers])
            trailing = headers[0][0][1:]
        elif isinstance(meta, np.ndarray):
            # Labels held as Python strings are stored as fixed-width strings, as parts are.
            dtype = np.dtype(str) if meta.dtype.hasobject else meta.dtype
            trailing = meta.shape[1:]
        else:
            raise InputError(
                "Every block of the input was empty, so the type of the output is not "
                "known. Pass the method's meta (for example predict_meta=) from Python, or "
                "write the output to Parquet or CSV."
            )
        total = sum(shape[0] for shape, _, _ in headers)
        shape = (total, *trailing)
        if self.format == "npy":
            with self.fs.open(temporary, "wb") as out:
                descr = {
                    "descr": np.lib.format.dtype_to_descr(dtype),
                    "fortran_order": False,
                    "shape": shape,
                }
                np.lib.format.write_array_header_2_0(out, descr)
                for receipt in ordered:
                    out.write(np.ascontiguousarray(self._load_part(receipt), dtype=dtype).data)
            return
        chunk_rows = max([shape[0] for shape, _, _ in headers] + [1])
        array = _create_zarr_array(
            to_url(self.fs, temporary), shape=shape, chunks=(chunk_rows, *trailing), dtype=dtype
        )
        start = 0
        for receipt in ordered:
            part = self._load_part(receipt)
            array[start : start + len(part)] = part
            start += len(part)

    def _load_part(self, receipt):
        with self.fs.open(self._file(receipt["file"]), "rb") as f:
            return np.load(f, allow_pickle=False)


def _create_zarr_array(url, shape, chunks, dtype):
    """Create an empty Zarr array at ``url``, with strings stored in a specified data type.

    Zarr 3 warns that fixed-width NumPy strings (``<U10``) have no Zarr V3
    specification, so string labels are stored as variable-length UTF-8
    strings, which have one and read back as strings. Zarr 2 stores
    fixed-width strings as they are.
    """
    import zarr

    if not hasattr(zarr, "create_array"):
        return zarr.open_array(url, mode="w", shape=shape, chunks=chunks, dtype=dtype)
    if dtype.kind == "U" and hasattr(zarr, "dtype"):
        dtype = zarr.dtype.VariableLengthUTF8()
    return zarr.create_array(url, shape=shape, chunks=chunks, dtype=dtype)


#: Descriptions of a run record's entries, in the words of the Python API and the command line.
RECORD_NAMES = {
    "version": "the run record's version",
    "method": "the method",
    "kwargs": "the method's keyword arguments",
    "model": "the model",
    "input": "the input",
    "features": "the feature columns",
    "keep": "keep_columns (--keep-columns)",
    "format": "the output format",
}


class ResumeMismatchError(InputError):
    """A resumed run differs from the interrupted run in its input, model or options."""


def _describe_change(key, stored, now) -> str:
    """Return how a run record's entry changed, naming the first input file that differs."""
    if key == "model":
        return "differs from the interrupted run's (another model, or the same one fitted again)"
    if key == "input" and isinstance(stored, dict) and isinstance(now, dict):
        if "read_options" not in stored and "read_options" in now:
            return (
                "was recorded by an earlier postfit that did not keep the CSV reading options, "
                "so a resume cannot check them"
            )
        if stored.get("read_options") != now.get("read_options"):
            return (
                "was read with other options: stored "
                f"{_short(stored.get('read_options'))}, now {_short(now.get('read_options'))}"
            )
        stored_files = stored.get("files") or []
        now_files = now.get("files") or []
        for old, new in zip(stored_files, now_files, strict=False):
            if old != new:
                path = new.get("path", "?")
                return f"changed: {path} has another size or change time than in that run"
        if len(stored_files) != len(now_files):
            return (
                f"changed: it has {len(now_files)} files, and the interrupted run had "
                f"{len(stored_files)}"
            )
    shown_stored, shown_now = _short(stored), _short(now)
    return f"differs from the interrupted run's (stored {shown_stored}, now {shown_now})"


def _short(value, limit=120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
