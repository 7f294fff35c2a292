"""Run a post-fit method over a file source, or write any input's output to files.

The driver only plans: it reads file footers and headers, cuts the input into
blocks whose loaders read rows inside the workers, and records finished
parts. Block size and the number of blocks in flight come from the memory
budget, never from timings, so a resumed run cuts its input exactly as the
interrupted one did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings

import joblib
import numpy as np
import pyarrow as pa

from .. import _plan
from .._blocks import EmptyOutput, OutputCollector, n_rows, normalize_input, output_rows
from .._kernel import stable_model_token
from .._meta import known_meta
from .._runner import _progress_bar, execute_blocks
from .._validation import check_input_features
from ..backends import effective_n_workers, get_backend
from ._paths import could_be_read_as_input, is_in_process_filesystem, is_local
from ._sinks import ARRAY_FORMATS, OutputStore, WriteResult, output_names, output_table
from ._source import InputError, Source, check_column_list

logger = logging.getLogger(__name__)

__all__ = ["run_source"]


# Inputs -----------------------------------------------------------------------


def _check_keep(keep, available, owner):
    missing = [c for c in keep if c not in available]
    if missing:
        raise InputError(
            f"keep_columns {missing} not found in {owner}, which has columns "
            f"{list(available)}. Pick carried columns from that list."
        )


def _source_features(source, estimator, keep):
    """Return (features, as_numpy) for a source: the columns the estimator receives."""
    names = source.all_column_names()
    expected = getattr(estimator, "n_features_in_", None)
    owner = type(estimator).__name__
    if names is None:
        if keep:
            raise InputError(
                f"keep_columns needs a table with named columns; {source.format} inputs are "
                "arrays. Read a Parquet or CSV input to carry columns."
            )
        shape = source.schema.shape
        width = int(shape[1]) if len(shape) > 1 else None
        if expected is not None and width is not None and width != expected:
            raise InputError(
                f"The {source.format} input has {width} features per row, but {owner} was "
                f"fitted with {expected}. Pass arrays with the features used in fit."
            )
        return None, False
    _check_keep(keep, names, repr(source))
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None:
        fitted = [str(n) for n in fitted]
        missing = [n for n in fitted if n not in names]
        if missing:
            raise InputError(
                f"The input is missing {len(missing)} column(s) that {owner} was fitted with: "
                f"{missing}. The files have columns {names}."
            )
        extra = [c for c in (source.columns or []) if c not in fitted]
        if extra:
            raise InputError(
                f"columns= lists {extra}, which {owner} was not fitted with. It was fitted "
                f"with {fitted}; carry other columns with keep_columns=."
            )
        left_out = [n for n in fitted if source.columns and n not in source.columns]
        if left_out:
            raise InputError(
                f"columns= leaves out {left_out}, which {owner} was fitted with and needs. "
                "It reads its columns by name, so leave columns= (--columns) out, or list "
                f"all of {fitted}."
            )
        return fitted, False
    features = source.columns or names
    if expected is not None and len(features) != expected:
        raise InputError(
            f"The input has {len(features)} columns ({features}), but {owner} was fitted "
            f"with {expected} features. Choose the feature columns with columns=."
        )
    return features, True


def _known_output_columns(wrapper, estimator, method):
    """Return the column names of the written output when known before scoring, or None."""
    if not isinstance(method, str):
        return None
    names = output_names(estimator, method)
    if method == "transform":
        return names.names(len(names.labels)) if names.labels else None
    meta = known_meta(_user_meta(wrapper, method), estimator, method)
    if not isinstance(meta, np.ndarray) or meta.ndim not in (1, 2):
        return None
    return names.names(None if meta.ndim == 1 else meta.shape[1])


def _check_kept_names(wrapper, estimator, method, keep) -> None:
    """Raise before scoring when a carried column has the name of an output column."""
    if not keep:
        return
    clash = sorted(set(keep) & set(_known_output_columns(wrapper, estimator, method) or ()))
    if clash:
        raise InputError(
            f"Carried columns {clash} have the same names as output columns of {method}. "
            "Rename those input columns, or carry other columns."
        )


def _resolve_pattern(pattern) -> str:
    """Return a local path or glob with its folders' links resolved, as the output's are."""
    cut = min((pattern.index(c) for c in ("*", "?", "[") if c in pattern), default=None)
    if cut is None:
        return os.path.realpath(pattern)
    folder = pattern[:cut].rsplit("/", 1)[0]
    return os.path.realpath(folder or "/") + pattern[len(folder) :]


def _check_output_not_input(store, source) -> None:
    """Raise an InputError when the output would replace or sit inside one of the inputs."""
    if getattr(source, "fs", None) is not store.fs and type(source.fs) is not type(store.fs):
        return
    output = store.path.rstrip("/")
    local = is_local(store.fs)
    if local:
        # A link to the output is the output too.
        output = os.path.realpath(output)
    for path in source.paths:
        path = os.path.realpath(path) if local else path.rstrip("/")
        if path == output or path.startswith(output + "/") or output.startswith(path + "/"):
            raise InputError(
                f"The output {store.url!r} is also an input ({path}), so writing it would "
                "replace the rows being scored. Choose another output path."
            )
    for pattern in getattr(source, "inputs", ()):
        if local:
            pattern = _resolve_pattern(pattern)
        suffixes = getattr(source, "suffixes", ())
        if could_be_read_as_input(store.fs, pattern, output, suffixes, folder=not store.staged):
            raise InputError(
                f"The output {store.url!r} would be read as part of the input {pattern!r} "
                "by a later run on that input, which would then score the scores. Choose an "
                "output path outside it."
            )


class _SourceInput:
    """A file source, cut into blocks whose loaders read rows in the workers."""

    def __init__(self, source: Source, estimator, keep):
        self.source = source
        self.features, self.as_numpy = _source_features(source, estimator, keep)
        self.keep = keep
        self.n_rows = source.n_rows
        self.estimated_rows = source.estimated_rows()
        read = self.features if self.features is not None else None
        if read is not None:
            read = list(dict.fromkeys([*read, *keep]))
        self.row_nbytes = source.row_nbytes(read)
        self.restore_names = False
        fitted = getattr(estimator, "feature_names_in_", None)
        if self.features is None and fitted is not None:
            # As for an in-memory array: one warning, as scikit-learn gives one
            # per call, then the kernel restores the names on each block.
            warnings.warn(
                f"X does not have valid feature names, but {type(estimator).__name__} was "
                "fitted with feature names",
                UserWarning,
                stacklevel=6,
            )
            self.restore_names = True
        self.in_process_only = is_in_process_filesystem(source.fs)

    def fingerprint(self):
        return self.source.fingerprint()

    @contextlib.contextmanager
    def blocks(self, backend, block_rows):
        yield self.source.blocks(block_rows, self.features, self.keep, self.as_numpy)


class FrameRows:
    """Rows of an in-memory frame, split into features and carried columns in the worker."""

    def __init__(self, rows, features, keep):
        self.rows = rows
        self.features = features
        self.keep = keep
        self.carried = None

    def load(self):
        rows = self.rows.load() if hasattr(self.rows, "load") else self.rows
        self.carried = pa.Table.from_pandas(rows[self.keep], preserve_index=False)
        return rows[self.features]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["carried"] = None
        return state


class _MemoryInput:
    """An in-memory input whose output is written to files."""

    in_process_only = False

    def __init__(self, X, estimator, keep):
        import pandas as pd

        X = normalize_input(X)
        self.keep = keep
        self.features = None
        if keep:
            if not isinstance(X, pd.DataFrame):
                raise InputError(
                    f"keep_columns needs a pandas DataFrame input, got {type(X).__name__}."
                )
            _check_keep(keep, [str(c) for c in X.columns], "the input frame")
            names = getattr(estimator, "feature_names_in_", None)
            fitted = set() if names is None else {str(n) for n in names}
            self.features = [c for c in X.columns if c not in keep or c in fitted]
            _, self.restore_names = check_input_features(estimator, X[self.features])
        else:
            X, self.restore_names = check_input_features(estimator, X)
        self.X = X
        self.n_rows = n_rows(X)
        self.estimated_rows = self.n_rows
        self.row_nbytes = _plan.estimate_row_nbytes(X)

    def fingerprint(self):
        return {"format": "in-memory", "hash": joblib.hash(self.X)}

    @contextlib.contextmanager
    def blocks(self, backend, block_rows):
        with backend.ship_input(self.X) as slicer:
            blocks = []
            for index, lo in enumerate(range(0, self.n_rows, block_rows)):
                hi = min(self.n_rows, lo + block_rows)
                rows = slicer(lo, hi)
                if self.keep:
                    rows = FrameRows(rows, self.features, self.keep)
                blocks.append(_block(index, lo, hi, rows))
            yield blocks


def _block(index, start, stop, data):
    from .._kernel import Block

    return Block(index, start, stop, data)


# In-memory results --------------------------------------------------------------


class TableSink:
    """Turn each block's output into an Arrow table with the carried columns, in the worker."""

    def __init__(self, names):
        self.names = names

    def write(self, block, out):
        if isinstance(out, EmptyOutput):
            return None
        return output_table(out, self.names, getattr(block.data, "carried", None))


class _MemoryResult:
    """Gather block results in input order: the method output, or a frame with carried columns."""

    def __init__(self, wrapper, estimator, method, total_rows, keep):
        self.method = method
        self.keep = keep
        self.tables = {}
        self.values = {}
        meta = known_meta(_user_meta(wrapper, method), estimator, method)
        self.collector = OutputCollector(total_rows, None, meta)

    def add(self, block, result):
        if callable(self.method):
            self.values[block.index] = result
            return 0
        if self.keep:
            if result is not None:
                self.tables[block.index] = result
            return 0 if result is None else result.num_rows
        self.collector.add(block.index, block.start, block.stop, result)
        return 0 if isinstance(result, EmptyOutput) else output_rows(result)

    def result(self):
        if callable(self.method):
            return [self.values[i] for i in sorted(self.values)]
        if self.keep:
            if not self.tables:
                raise InputError("Every block of the input was empty; there is nothing to return.")
            ordered = [self.tables[i] for i in sorted(self.tables)]
            return pa.concat_tables(ordered).to_pandas()
        return self.collector.result()


def _user_meta(wrapper, method):
    """Return the meta that the user gave for ``method``, as given, or None."""
    meta_for = getattr(wrapper, "_meta_for", None)
    if meta_for is None or callable(method):
        return None
    return meta_for(method)


# The run ------------------------------------------------------------------------


def _choose_backend(options, n_workers, in_process_only):
    name = options.backend
    if name == "auto":
        # Parquet and CSV decoding and most estimators' predict release the
        # GIL; "loky" is the choice for estimators that hold it.
        name = "sequential" if n_workers == 1 else "threading"
        logger.debug("file source: backend=%s for %d workers", name, n_workers)
    backend = get_backend(name)(n_workers, **options.backend_options)
    if in_process_only and not backend.in_process:
        raise InputError(
            f"memory:// paths exist only inside this process, so the {name!r} backend's "
            "workers cannot read or write them. Use backend='sequential' or 'threading'."
        )
    return backend


def _method_name(method):
    return method if isinstance(method, str) else getattr(method, "__qualname__", repr(method))


def _run_record(method, kwargs, estimator, data, store, block_rows):
    return {
        # Version 2 identifies the model by a token that ignores padding bytes.
        "version": 2,
        "method": _method_name(method),
        "kwargs": repr(sorted((kwargs or {}).items())),
        "model": stable_model_token(estimator),
        "input": data.fingerprint(),
        "features": data.features,
        "keep": data.keep,
        "format": store.format,
        "block_rows": block_rows,
    }


def run_source(
    wrapper,
    estimator,
    method,
    X,
    options,
    kwargs,
    *,
    execute=None,
    output=None,
    overwrite=False,
    resume=False,
    keep_columns=None,
    output_format=None,
):
    """Run ``method`` over a file source, or over any input whose output goes to files.

    Parameters
    ----------
    wrapper : ParallelPostFit
        The wrapper whose method was called (for its metas).
    estimator : fitted estimator
    method : str or callable
        A post-fit method name, or a function ``method(estimator, rows,
        **kwargs)``, whose per-block results are returned as a list in block
        order.
    X : Source or in-memory input
    options : postfit._runner.RunOptions
    kwargs : dict
        Extra keyword arguments of the method.
    execute : None or True
        File inputs always run now; False (a lazy result) is rejected.
    output : str or path-like, optional
        Where to write the output: a Parquet dataset directory (the default
        for a path without a known ending), or a ``.csv``, ``.npy`` or
        ``.zarr`` path. Without it the output is returned in memory.
    overwrite : bool, default=False
        Replace an existing output that postfit wrote.
    resume : bool, default=False
        Continue an unfinished run on ``output``, scoring only the blocks it
        did not finish.
    keep_columns : list of str, optional
        Input columns written next to the output, such as row ids.
    output_format : {"parquet", "csv", "npy", "zarr"}, optional
        The output format when the path's ending does not tell it.

    Returns
    -------
    result : object or WriteResult
        The method's output in memory (a frame with the carried columns
        first when ``keep_columns`` is set), or a :class:`WriteResult` that
        describes the written output.
    """
    if execute is False:
        raise InputError(
            "execute=False asks for a lazy result, which postfit gives for Dask inputs. "
            "File inputs run when the method is called; drop execute=False."
        )
    keep = check_column_list(keep_columns, "keep_columns") or []
    if output is None and (overwrite or resume):
        raise InputError("overwrite= and resume= apply to an output; pass output= as well.")
    if isinstance(X, Source):
        data = _SourceInput(X, estimator, keep)
    else:
        data = _MemoryInput(X, estimator, keep)

    store = None
    if output is not None:
        store = OutputStore(output, output_format)
        if keep and store.format in ARRAY_FORMATS:
            raise InputError(
                f"A {store.format} output stores one array and cannot hold carried columns "
                f"{keep}. Write to Parquet or CSV, or drop keep_columns."
            )
        if is_in_process_filesystem(store.fs):
            data.in_process_only = True
        if isinstance(X, Source):
            _check_output_not_input(store, X)
        _check_kept_names(wrapper, estimator, method, keep)

    backend = _choose_backend(options, effective_n_workers(options.n_jobs), data.in_process_only)
    try:
        return _execute(
            wrapper,
            estimator,
            method,
            data,
            options,
            kwargs,
            backend,
            store,
            resume,
            overwrite,
            keep,
        )
    finally:
        backend.close()


#: How much more memory a block read from a file takes than the planner's
#: allowance for an in-memory block: the file's pages, the Arrow table, the
#: pandas frame and the estimator's input array exist at once, and the
#: allocators keep freed memory for the next block. With this factor, peak
#: RSS grew by 20 to 30 MiB under a 32 MiB budget in tests/test_io_memory.py
#: (pyarrow 26, pandas 3.1, Linux); without it, by 50 MiB.
FILE_READ_OVERHEAD = 2.5


def _plan_blocks(options, data, n_workers):
    budget = _plan.parse_memory_budget(options.memory_budget)
    row_nbytes = data.row_nbytes
    if isinstance(data, _SourceInput):
        row_nbytes = int(row_nbytes * FILE_READ_OVERHEAD)
    block_rows = options.block_size
    if block_rows == "auto":
        block_rows = _plan.choose_block_size(
            max(1, data.estimated_rows), row_nbytes, n_workers, budget
        )
        if isinstance(data, _SourceInput):
            unit_rows, n_units = data.source.read_unit()
            block_rows = _plan.fit_to_unit(
                block_rows, unit_rows, n_units, row_nbytes, n_workers, budget
            )
    in_flight = _plan.max_in_flight(block_rows, row_nbytes, n_workers, budget)
    return block_rows, in_flight


def _execute(
    wrapper, estimator, method, data, options, kwargs, backend, store, resume, overwrite, keep
):
    block_rows, in_flight = _plan_blocks(options, data, backend.n_workers)
    names = output_names(estimator, method)
    finished = {}
    if store is not None:
        record = _run_record(method, kwargs, estimator, data, store, block_rows)
        record, finished = store.open(record, overwrite=overwrite, resume=resume)
        block_rows = record["block_rows"]
    try:
        started = time.perf_counter()
        with data.blocks(backend, block_rows) as blocks:
            todo = [block for block in blocks if block.index not in finished]
            logger.debug(
                "%s over %d blocks of up to %d rows (%d already finished), %d in flight, "
                "backend=%s",
                _method_name(method),
                len(blocks),
                block_rows,
                len(finished),
                in_flight,
                backend.name,
            )
            if store is not None:
                sink = store.writer(names)
                gather = None
            else:
                gather = _MemoryResult(wrapper, estimator, method, data.n_rows, keep)
                sink = TableSink(names) if keep and not callable(method) else None
            rows = _score(
                backend,
                estimator,
                method,
                todo,
                data,
                options,
                kwargs,
                sink,
                in_flight,
                store,
                gather,
                finished,
            )
        seconds = time.perf_counter() - started
        logger.info(
            "%s: %d rows in %.3f s (%.0f rows/s)",
            _method_name(method),
            rows,
            seconds,
            rows / max(seconds, 1e-9),
        )
        if store is None:
            return gather.result()
        meta = known_meta(_user_meta(wrapper, method), estimator, method)
        store.finish(finished, names, meta)
        total = sum(receipt["rows"] for receipt in finished.values())
        return WriteResult(
            path=store.url,
            format=store.format,
            n_rows=total,
            n_scored=rows,
            n_blocks=len(blocks),
            n_resumed=len(blocks) - len(todo),
            seconds=seconds,
        )
    finally:
        if store is not None:
            store.release()


def _score(
    backend,
    estimator,
    method,
    blocks,
    data,
    options,
    kwargs,
    sink,
    in_flight,
    store,
    gather,
    finished,
):
    """Score ``blocks``, record each finished part, and return the number of rows scored."""
    total = data.n_rows if data.n_rows is not None else None
    scored = 0
    # A resumed run starts its bar at the rows that the interrupted run scored.
    resumed = sum(receipt["rows"] for receipt in finished.values())
    bar = _progress_bar(total, options.progress, _method_name(method), initial=resumed)

    def on_result(block, result):
        nonlocal scored
        if store is not None:
            store.record_done(result)
            finished[block.index] = result
            rows = result["rows"]
        else:
            rows = gather.add(block, result)
        scored += rows
        bar.update(rows)

    try:
        execute_blocks(
            backend,
            estimator,
            method,
            blocks,
            on_result=on_result,
            max_in_flight=in_flight,
            kwargs=kwargs,
            restore_names=data.restore_names,
            sink=sink,
        )
    finally:
        bar.close()
    return scored
