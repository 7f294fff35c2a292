"""Dask collections in, lazy Dask collections out.

A Dask Array gives a Dask Array with the input's row chunks. A Dask DataFrame
or Series gives a Dask Series (one output column) or DataFrame (several) with
the input's index and divisions. Each chunk or partition is scored by
``postfit._kernel.run_block``, so the results equal those of the in-memory
path.

The model enters the graph once. Under a ``distributed`` client it is
scattered to every worker and the graph contains its future. Otherwise it is
one graph key that every task depends on. The declared meta comes from the
user's meta, else from fitted attributes, else from running the method on the
first rows of the first non-empty chunk; every output is converted to it, so
the declared meta equals what the chunks compute to.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import sys
import uuid

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import scipy.sparse as sp
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from . import _plan
from ._blocks import empty_like, is_arrow_table, is_polars, n_rows, take_rows
from ._dask_tasks import rows_of, score_chunk, score_chunks, score_partition
from ._kernel import call_method, restore_feature_names
from ._meta import meta_from_attributes, normalize_user_meta
from ._validation import check_input_features
from .backends import effective_n_workers

logger = logging.getLogger(__name__)

__all__ = ["run_dask", "run_lazy_in_memory", "to_dask"]

#: Rows that meta inference runs the method on, from the first non-empty chunk.
META_SAMPLE_ROWS = 1
#: Merged Dask Array chunks hold at most this many bytes of input or output rows ...
MERGED_CHUNK_MAX_BYTES = 16 * 2**20
#: ... while each of the scheduler's threads keeps at least this many chunks.
MERGED_MIN_CHUNKS_PER_THREAD = 2


def _reject_route_options(route_options):
    if route_options:
        names = ", ".join(sorted(route_options))
        raise TypeError(
            f"Unexpected option(s) for a Dask input: {names}. Dask inputs take only execute=."
        )


def run_dask(
    wrapper,
    estimator,
    method,
    X,
    options,
    kwargs,
    *,
    execute=None,
    output=None,
    merge_chunks=True,
    **route_options,
):
    """Run ``method`` on a Dask collection and return the lazy result, or compute it.

    Parameters
    ----------
    wrapper : ParallelPostFit
        The wrapper, read for the user's meta of ``method``.
    estimator : fitted estimator
    method : str
        Name of the post-fit method.
    X : dask.array.Array, dask.dataframe.DataFrame or dask.dataframe.Series
    options : RunOptions
        The wrapper's run options. Dask's scheduler runs the chunks, and small
        chunks are merged only while ``block_size`` and ``memory_budget`` are
        automatic.
    kwargs : dict
        Keyword arguments of the method.
    execute : bool, optional
        True computes the result; False or None keeps it lazy.
    output : None
        File outputs are written with the lazy result's own writers
        (``to_parquet``, ``to_zarr``), so this must be None.
    merge_chunks : bool
        False keeps the chunks as they are, for inputs that postfit cut itself.

    Returns
    -------
    result : dask.array.Array, dask.dataframe.Series or DataFrame, or computed result

    Examples
    --------
    Users reach this route through a wrapper's method:

    >>> import dask.array as da
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from postfit import ParallelPostFit
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = ParallelPostFit(LogisticRegression(max_iter=1000)).fit(X, y)
    >>> proba = clf.predict_proba(da.from_array(X, chunks=(50, 4)))
    >>> proba.chunks
    ((50, 50, 50), (3,))
    >>> proba.compute().shape
    (150, 3)
    """
    _reject_route_options(route_options)
    if options.backend == "ray":
        # Local backends are the wrapper's setting for in-memory inputs, so a wrapper set
        # up once scores Dask inputs too, but asking for Ray on Dask is a mistake.
        raise ValueError(
            "A Dask input, or execute=False, is scored by Dask's scheduler, so "
            "backend='ray' does not apply. Pass a ray.data.Dataset to score on Ray, or "
            "compute the input first (X.compute()) to score it in memory on Ray."
        )
    unknown = sorted(set(options.backend_options) - {"client"})
    if unknown:
        raise TypeError(
            f"backend_options {unknown} do not apply to a Dask input, whose chunks run on "
            "Dask's own scheduler when the result is computed. Remove them."
        )
    if output is not None:
        raise ValueError(
            f"output={output!r} is not supported for a Dask input. Keep the result lazy and "
            "write it with its own writer, for example "
            'clf.predict(ddf).to_frame(name="prediction").to_parquet(path), '
            "clf.predict_proba(ddf).rename(columns=str).to_parquet(path) (Parquet takes only "
            "string column names) or clf.predict(darr).to_zarr(path)."
        )
    user_meta = wrapper._meta_for(method) if isinstance(method, str) else None
    # A block size or memory budget that the user set bounds each call, so
    # the user's chunks are then scored as they are.
    merge_chunks = (
        merge_chunks
        and options.block_size == "auto"
        and _plan.is_auto_budget(options.memory_budget)
    )
    client = options.backend_options.get("client")
    if client is None:
        return _map_and_compute(estimator, method, X, kwargs, user_meta, merge_chunks, execute)
    from .backends.dask import current_client

    # The given client scatters the model and computes the result, even
    # when another client is the default one.
    with current_client(client).as_current():
        return _map_and_compute(estimator, method, X, kwargs, user_meta, merge_chunks, execute)


def _map_and_compute(estimator, method, X, kwargs, user_meta, merge_chunks, execute):
    result = map_collection(estimator, method, X, kwargs or {}, user_meta, merge_chunks)
    if execute:
        return result.compute()
    return result


def run_lazy_in_memory(wrapper, estimator, method, X, options, kwargs, **route_options):
    """Run ``method`` lazily on an in-memory input: return a Dask collection of the output.

    X becomes a Dask collection cut in blocks of the size the planner picks
    (see :func:`to_dask`), then is mapped as any Dask input.
    """
    _reject_route_options(route_options)
    lazy_input = to_dask(X, options)
    # The planner cut these chunks within the memory budget already.
    return run_dask(
        wrapper, estimator, method, lazy_input, options, kwargs, execute=False, merge_chunks=False
    )


def to_dask(X, options):
    """Return an in-memory input as a Dask collection of row blocks.

    NumPy arrays, scipy.sparse matrices and lists become Dask Arrays. pandas
    frames and Series become Dask DataFrames and Series, with divisions known
    when the index is sorted. polars frames and pyarrow Tables become Dask
    DataFrames through pandas.
    """
    if is_polars(X) or is_arrow_table(X):
        X = X.to_pandas()
    if isinstance(X, (list, tuple)):
        X = np.asarray(X)
    if sp.issparse(X):
        X = X.tocsr()

    block_size = _block_size(X, options)
    if isinstance(X, (pd.DataFrame, pd.Series)):
        n_partitions = max(1, -(-len(X) // block_size))
        # from_pandas with sort=True would sort the rows by index, so only a
        # sorted index can give known divisions without reordering rows.
        return dd.from_pandas(X, npartitions=n_partitions, sort=X.index.is_monotonic_increasing)
    if isinstance(X, np.ndarray) or sp.issparse(X):
        if X.ndim not in (1, 2):
            raise ValueError(
                f"X has {X.ndim} dimensions (shape {X.shape}), but estimators take 1-D or "
                "2-D input. Reshape it, for example X.reshape(len(X), -1)."
            )
        chunks = (block_size,) if X.ndim == 1 else (block_size, X.shape[1])
        meta = X[:0] if sp.issparse(X) else None
        return da.from_array(X, chunks=chunks, asarray=not sp.issparse(X), meta=meta)
    raise TypeError(
        f"execute=False cannot make a Dask collection of a {type(X).__name__}. Pass a NumPy "
        "array, a scipy.sparse matrix, a list, a pandas, polars or pyarrow table, or a Dask "
        "collection."
    )


def _block_size(X, options):
    if options.block_size != "auto":
        return int(options.block_size)
    return _plan.choose_block_size(
        max(1, n_rows(X)),
        _plan.estimate_row_nbytes(X),
        effective_n_workers(options.n_jobs),
        _plan.parse_memory_budget(options.memory_budget),
    )


# Building the graph -----------------------------------------------------------


def map_collection(estimator, method, X, kwargs, user_meta=None, merge_chunks=False):
    """Return the lazy output of ``method`` on the Dask collection X.

    With ``merge_chunks``, small chunks of a Dask Array are scored merged
    (see :func:`merged_row_chunks`).
    """
    if isinstance(X, da.Array):
        return _map_array(estimator, method, X, kwargs, user_meta, merge_chunks)
    if isinstance(X, (dd.DataFrame, dd.Series)):
        return _map_frame(estimator, method, X, kwargs, user_meta)
    raise TypeError(
        f"postfit takes Dask Arrays, DataFrames and Series, got a {type(X).__name__}. "
        "Convert it first, for example with dask.array.from_delayed or bag.to_dataframe()."
    )


def model_node(estimator, collection_module):
    """Return the model as one node of a graph: a scattered future, or a Delayed.

    Under a ``distributed`` client the model is scattered to every worker now,
    and the returned future keeps it there for as long as a graph refers to
    it. A graph that embedded the model would be sent with each compute.
    Each worker also imports ``collection_module`` (``"dask.array"`` or
    ``"dask.dataframe"``) ahead of the first chunk, which needs it: on a
    fresh worker, that import delayed the first chunk by 0.26 s.
    """
    client = _current_client()
    if client is not None and _cluster_threads(client):
        from .backends.dask import scatter_model

        return scatter_model(client, estimator, extra_modules=[collection_module])
    if client is not None:
        # An adaptive cluster may have no workers until the graph is computed,
        # and nothing can be scattered to none, so the graph carries the model.
        logger.debug("dask: the cluster has no workers yet, so the graph contains the model")
    name = f"postfit-model-{uuid.uuid4().hex}"
    return dask.delayed(estimator, name=name, traverse=False)


def _cluster_threads(client) -> int:
    """Return the number of worker threads of ``client``'s cluster, 0 when it cannot tell."""
    try:
        return sum(client.nthreads().values())
    except OSError as exc:
        # distributed's CommClosedError is an OSError.
        logger.debug("dask: counting the cluster's threads failed: %r", exc)
        return 0


def _current_client():
    # Importing distributed is slow, and no client can exist unless it was
    # imported already.
    if "distributed" not in sys.modules:
        return None
    from .backends.dask import current_client

    return current_client(required=False)


def _map_array(estimator, method, X, kwargs, user_meta, merge_chunks):
    if X.ndim not in (1, 2):
        raise ValueError(
            f"X has {X.ndim} dimensions (shape {X.shape}), but estimators take 1-D or 2-D "
            "input. Reshape it, for example X.reshape((X.shape[0], -1))."
        )
    if X.ndim == 2 and X.numblocks[1] > 1:
        # Every block must hold whole rows, with all features.
        X = X.rechunk({1: -1})
    restore_names = _check_array_features(estimator, X)

    base = _find_meta(estimator, method, X, kwargs, user_meta, restore_names)
    meta = _array_meta(base)
    if meta.ndim not in (1, 2):
        raise ValueError(
            f"{type(estimator).__name__}.{method} returns {meta.ndim}-D output, but a Dask "
            "Array result holds 1-D or 2-D output. Call it on an in-memory input instead."
        )

    input_chunks = X.chunks[0]
    # An object array's itemsize is that of a pointer, so its chunks' size in
    # memory (text documents, say) is unknown and they are not merged.
    mergeable = (
        merge_chunks
        and isinstance(X._meta, np.ndarray)
        and X.dtype != object
        and isinstance(meta, np.ndarray)
        and meta.dtype != object
    )
    n_threads = _scheduler_threads() if mergeable else None
    if n_threads is not None:
        row_nbytes = max(_row_nbytes(X), _row_nbytes(meta))
        plan = _merge_plan(input_chunks, row_nbytes, n_threads)
        if plan is not None:
            return _score_merged(X, estimator, method, kwargs, restore_names, meta, plan[1])
    chunks = (input_chunks,) if meta.ndim == 1 else (input_chunks, (meta.shape[1],))
    axes = {}
    if X.ndim == 2 and meta.ndim == 1:
        axes["drop_axis"] = 1
    elif X.ndim == 1 and meta.ndim == 2:
        axes["new_axis"] = 1
    return da.map_blocks(
        score_chunk,
        X,
        model_node(estimator, "dask.array"),
        method,
        kwargs,
        restore_names,
        meta,
        chunks=chunks,
        meta=meta,
        dtype=meta.dtype,
        name=f"postfit-{_method_name(method)}-{uuid.uuid4().hex[:12]}",
        **axes,
    )


def _score_merged(X, estimator, method, kwargs, restore_names, meta, firsts):
    """Return the lazy output of ``method`` with runs of X's chunks scored as one block each.

    ``firsts`` comes from :func:`_merge_plan`: run ``k`` covers input chunks
    ``firsts[k]`` to ``firsts[k + 1] - 1``. One task scores each run, reading
    the input chunks themselves, and one task per input chunk takes its rows
    of that output, so the result has the input's chunks. A rechunk would
    add a merging task per run, which can wait behind a long scoring task on
    its worker while the other worker idles. A 300-tree forest's first call
    on 20,000 rows over two workers took 1.07 s that way and 0.93 s this way.
    """
    token = uuid.uuid4().hex[:12]
    scoring_name = f"postfit-{_method_name(method)}-{token}"
    name = f"postfit-{_method_name(method)}-rows-{token}"
    model = model_node(estimator, "dask.array")
    # A Delayed model is a key of the graph, and a scattered one a future.
    model_ref = model.key if isinstance(model, Delayed) else model
    input_keys = X.__dask_keys__()
    if X.ndim == 2:
        input_keys = [row[0] for row in input_keys]
    offsets = [0]
    for size in X.chunks[0]:
        offsets.append(offsets[-1] + int(size))

    scoring, rows = {}, {}
    for run, (first, end) in enumerate(itertools.pairwise(firsts)):
        # Constant arguments go in the partial, where the scheduler does not
        # look for keys to replace.
        score = functools.partial(
            score_chunks,
            method=method,
            kwargs=kwargs,
            restore_names=restore_names,
            meta=meta,
            location=(first, end - 1, offsets[first], offsets[end]),
        )
        scoring[(scoring_name, run)] = (score, list(input_keys[first:end]), model_ref)
        for chunk in range(first, end):
            key = (name, chunk) if meta.ndim == 1 else (name, chunk, 0)
            start, stop = offsets[chunk] - offsets[first], offsets[chunk + 1] - offsets[first]
            rows[key] = (rows_of, (scoring_name, run), start, stop)

    dependencies = [X, model] if isinstance(model, Delayed) else [X]
    graph = HighLevelGraph.from_collections(scoring_name, scoring, dependencies=dependencies)
    graph = HighLevelGraph(
        {**graph.layers, name: MaterializedLayer(rows)},
        {**graph.dependencies, name: {scoring_name}},
    )
    chunks = (X.chunks[0],) if meta.ndim == 1 else (X.chunks[0], (meta.shape[1],))
    return da.Array(graph, name, chunks, meta=meta)


def merged_row_chunks(row_chunks, row_nbytes, n_threads):
    """Return row chunks with runs of small neighbours merged, or None to keep them.

    Each call of a model has a fixed cost, and each Dask task adds its own:
    a 300-tree forest took 105 ms on 2,500 rows and 165 ms on 5,000.
    Neighbours merge while the merged chunk contains at most
    ``MERGED_CHUNK_MAX_BYTES`` of rows of ``row_nbytes`` (the larger of an
    input and an output row), and every thread of the scheduler keeps
    ``MERGED_MIN_CHUNKS_PER_THREAD`` chunks. Unknown chunk sizes and inputs
    without rows are kept.

    Examples
    --------
    >>> merged_row_chunks((2500,) * 8, row_nbytes=160, n_threads=2)
    (5000, 5000, 5000, 5000)
    >>> merged_row_chunks((250_000,) * 8, row_nbytes=160, n_threads=2) is None
    True
    """
    plan = _merge_plan(row_chunks, row_nbytes, n_threads)
    return None if plan is None else plan[0]


def _merge_plan(row_chunks, row_nbytes, n_threads):
    """Return the merged chunk sizes and the first input chunk of each, or None.

    The second tuple ends with the input's chunk count, so merged chunk
    ``k`` contains input chunks ``firsts[k]`` to ``firsts[k + 1] - 1``.
    """
    if any(np.isnan(size) for size in row_chunks) or row_nbytes <= 0:
        return None
    total = sum(row_chunks)
    if total == 0:
        # Dask cannot cut an empty 1-D array back into several chunks.
        return None
    min_chunks = MERGED_MIN_CHUNKS_PER_THREAD * max(n_threads, 1)
    limit = min(MERGED_CHUNK_MAX_BYTES // row_nbytes, total // min_chunks)
    sizes, firsts = [], []
    for index, size in enumerate(row_chunks):
        if sizes and sizes[-1] + size <= limit:
            sizes[-1] += size
        else:
            sizes.append(size)
            firsts.append(index)
    if len(sizes) == len(row_chunks):
        return None
    return tuple(sizes), (*firsts, len(row_chunks))


def _row_nbytes(array):
    """Return the bytes of one row of a Dask Array or a NumPy meta, or 0 when unknown."""
    width = 1 if array.ndim == 1 else array.shape[1]
    if np.isnan(width):
        return 0
    return int(width) * array.dtype.itemsize


def _scheduler_threads():
    """Return the number of threads that will likely run the graph's tasks, or None.

    None means a ``distributed`` cluster without workers for now (adaptive,
    or still starting), whose size is unknown until the graph runs.
    """
    client = _current_client()
    if client is not None:
        return _cluster_threads(client) or None
    return dask.config.get("num_workers", None) or os.cpu_count() or 1


def _map_frame(estimator, method, X, kwargs, user_meta):
    X, to_numpy = _check_frame_features(estimator, X)
    base = _find_meta(estimator, method, X, kwargs, user_meta, False, to_numpy)
    if isinstance(base, (list, tuple)):
        _array_meta(base)
    if sp.issparse(base):
        raise TypeError(
            f"{type(estimator).__name__}.{method} returns a sparse matrix, which a Dask "
            "DataFrame cannot hold. Convert the input with X.to_dask_array(lengths=True) for "
            "a Dask Array result, or configure the estimator to return a dense array."
        )
    meta = _frame_meta(estimator, method, base, X._meta.index)
    return X.map_partitions(
        score_partition,
        model_node(estimator, "dask.dataframe"),
        method,
        kwargs,
        to_numpy,
        meta,
        meta=meta,
        token=f"postfit-{_method_name(method)}",
    )


def _method_name(method):
    return method if isinstance(method, str) else getattr(method, "__name__", "method")


# Input checks -----------------------------------------------------------------


def _check_array_features(estimator, X):
    """Check a Dask Array's width against the fitted one and return whether to restore names."""
    if X.ndim != 2 or np.isnan(X.shape[1]):
        return False
    width = int(X.shape[1])
    if sp.issparse(X._meta):
        probe = sp.csr_matrix((0, width), dtype=X.dtype)
    else:
        probe = np.empty((0, width), dtype=X.dtype)
    _, restore_names = check_input_features(estimator, probe)
    return restore_names


def _check_frame_features(estimator, X):
    """Check a Dask DataFrame's columns against the fitted ones.

    Returns the frame, with its columns reordered when only their order
    differs from fit, and whether partitions are passed as NumPy arrays,
    which is the case when the estimator was fitted without feature names.
    """
    if isinstance(X, dd.Series):
        return X, False
    checked, renamed = check_input_features(estimator, X._meta)
    if list(checked.columns) != list(X._meta.columns):
        X = X[list(checked.columns)]
    if renamed and getattr(estimator, "feature_names_in_", None) is None:
        # Fitted without names and given string column names: the check above
        # warned once, as scikit-learn warns once per call, and partitions go
        # as arrays.
        return X, True
    return X, False


# Metadata ---------------------------------------------------------------------


def _find_meta(estimator, method, X, kwargs, user_meta, restore_names, to_numpy=False):
    """Return an empty prototype of the output: user meta, fitted attributes, or real rows."""
    if user_meta is not None:
        return normalize_user_meta(user_meta)
    if isinstance(method, str) and not kwargs:
        # Keyword arguments such as return_std=True change the output, which the
        # fitted attributes do not tell.
        if isinstance(X, dd.DataFrame):
            input_dtypes = list(X._meta.dtypes)
        else:
            input_dtypes = [X.dtype] if isinstance(X, da.Array) else [X._meta.dtype]
        meta = meta_from_attributes(estimator, method, input_dtypes)
        if meta is not None:
            return meta

    sample = first_rows(X, META_SAMPLE_ROWS)
    if sample is None:
        raise ValueError(
            f"Cannot infer the output of {type(estimator).__name__}.{_method_name(method)}: "
            f"every chunk of the Dask input is empty. Pass {_method_name(method)}_meta= to "
            "ParallelPostFit (an empty array or frame shaped like the output)."
        )
    if to_numpy:
        sample = sample.to_numpy()
    if restore_names:
        sample = restore_feature_names(estimator, sample, 0)
    out = call_method(estimator, method, sample, kwargs)
    return empty_like(out)


def first_rows(X, n):
    """Return the first ``n`` rows of the first non-empty chunk of X, or None.

    Chunks are computed a few at a time, more each round, so that an input
    whose first chunks are empty (after a filter, say) is not computed whole
    when a later chunk has rows.
    """
    n_chunks = X.numblocks[0] if isinstance(X, da.Array) else X.npartitions
    start, batch = 0, 1
    while start < n_chunks:
        stop = min(n_chunks, start + batch)
        heads = [_chunk_head(X, i, n) for i in range(start, stop)]
        for head in dask.compute(*heads):
            if n_rows(head) > 0:
                return head
        start, batch = stop, batch * 4
    return None


def _chunk_head(X, i, n):
    if isinstance(X, da.Array):
        return dask.delayed(take_rows)(X.blocks[i], 0, n)
    return X.partitions[i].map_partitions(take_rows, 0, n, meta=X._meta)


def _array_meta(base):
    """Return the meta of a Dask Array output: an empty NumPy array or sparse matrix."""
    if sp.issparse(base):
        return base
    if isinstance(base, (list, tuple)):
        raise TypeError(
            "The method returns several arrays (a list with one per output, or a tuple such "
            "as the mean and standard deviation of return_std=True), which a Dask collection "
            "cannot hold. Compute the input first (X.compute()) and call the method on the "
            "in-memory rows, or call it on each output's estimator."
        )
    array = np.asarray(base)
    return array.reshape((0,) + array.shape[1:])


def _frame_meta(estimator, method, base, index):
    """Return the meta of a Dask DataFrame output: an empty Series or DataFrame."""
    index = index[:0]
    if isinstance(base, pd.DataFrame):
        return base.iloc[:0].set_axis(index, axis=0)
    if isinstance(base, pd.Series):
        return pd.Series(base.to_numpy()[:0], index=index, name=base.name, dtype=base.dtype)
    array = np.asarray(base)
    if array.ndim == 1:
        return pd.Series(np.empty(0, dtype=array.dtype), index=index)
    if array.ndim != 2:
        raise ValueError(
            f"{type(estimator).__name__}.{_method_name(method)} returns {array.ndim}-D "
            "output, which a Dask DataFrame cannot hold. Pass a Dask Array instead."
        )
    columns = output_columns(estimator, method, array.shape[1])
    return pd.DataFrame(
        np.empty((0, array.shape[1]), dtype=array.dtype), index=index, columns=columns
    )


def output_columns(estimator, method, width):
    """Return column names for a 2-D output of ``width`` columns.

    Class labels for probabilities and multi-class decision functions, the
    output feature names for ``transform``, and 0 to ``width - 1`` otherwise.
    """
    classes = getattr(estimator, "classes_", None)
    per_class = ("predict_proba", "predict_log_proba", "decision_function")
    has_classes = isinstance(classes, np.ndarray) and classes.ndim == 1
    if method in per_class and has_classes and len(classes) == width:
        return pd.Index(classes)
    if method == "transform" and hasattr(estimator, "get_feature_names_out"):
        try:
            names = estimator.get_feature_names_out()
        except (AttributeError, ValueError, TypeError):
            # Some transformers define the method but cannot name their
            # output for this fit, so the columns are numbered instead.
            names = None
        if names is not None and len(names) == width:
            return pd.Index(names)
    return pd.RangeIndex(width)
