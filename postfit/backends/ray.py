"""The Ray backend, and the route for ``ray.data.Dataset`` inputs.

postfit never starts Ray: both entry points need a session that the user
opened with ``ray.init()`` (local, or joined to a cluster), and raise when
there is none. Ray itself would start a local instance on the first
``ray.put``, which opens ports the user did not ask for.

The backend pickles the model once per run and puts the bytes in the object
store once. Each task receives a small :class:`RayModelRef`, which the kernel
resolves through its per-process cache (``postfit._kernel.resolve_model``), so
a Ray worker process deserialises the model on its first block only. A plain
``ray.get`` of the estimator in every task would deserialise it for every
block. A NumPy input is put in the object store once, and each task reads its
rows from there without a copy. Other inputs travel as one slice per task.
Loaders of file sources and file sinks are plain picklable objects, so the
worker reads its rows and writes its output itself.

A Ray Dataset input gets a lazy Dataset back: ``map_batches`` with a
function that resolves the same model reference through the same cache. Ray
tasks run it rather than an actor pool, because the pooled worker processes
keep the model and their imports between runs, where each run would start
new actor processes. Ray Data can also fuse the scoring with the tasks that
read the input.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
import ray
import ray.data
import scipy.sparse as sp
import sklearn
from ray.data.dataset import MaterializedDataset
from ray.util.annotations import RayDeprecationWarning

from .._blocks import EmptyOutput, OutputCollector, n_rows
from .._errors import add_note, attach_block
from .._kernel import (
    ModelRef,
    _caller_config,
    call_method,
    check_output_rows,
    content_token,
    limit_threads,
    resolve_model,
)
from .._meta import known_meta, meta_from_attributes
from ..exceptions import BlockError, WorkerCrashedError
from ._base import Backend, InputSlicer, effective_n_workers, submit_until_full

logger = logging.getLogger(__name__)

__all__ = ["ObjectStoreRows", "RayBackend", "RayModelRef", "run_ray_dataset"]

#: A NumPy input is put in the object store whole when it takes at most this
#: share of the store's free memory. A larger one is sent one block per task,
#: so that it does not force the store to spill to disk.
MAX_STORE_SHARE = 0.5

#: A materialized Dataset with fewer blocks than tasks is split into this many
#: blocks per task, because Ray Data scores each block in one task and
#: ``ray.data.from_numpy`` makes one block of the whole array ...
SPLIT_BLOCKS_PER_TASK = 4
#: ... into blocks of at least this many bytes, the size up to which small
#: Dask Array chunks are merged.
SPLIT_MIN_BYTES = 16 * 2**20

#: Ray's own default for tasks: a task whose worker process dies runs again
#: up to this many times.
DEFAULT_MAX_RETRIES = 3

#: Ray errors that mean a worker process, its node or a stored object was
#: lost, rather than that the estimator raised. Ray has already retried the
#: task ``max_retries`` times when one of them reaches the driver.
_LOST_WORKER_ERRORS = tuple(
    getattr(ray.exceptions, name)
    for name in (
        "WorkerCrashedError",
        "NodeDiedError",
        "OutOfMemoryError",
        "ObjectLostError",
        "LocalRayletDiedError",
        "ActorDiedError",
    )
    if hasattr(ray.exceptions, name)
)


def require_ray_session() -> None:
    """Raise RuntimeError unless ``ray.init()`` has run in this process."""
    if not ray.is_initialized():
        raise RuntimeError(
            "backend='ray' and Ray Dataset inputs need a running Ray session, but "
            "ray.init() has not been called in this process. Call ray.init() for a "
            "local Ray, or ray.init(address=...) to join a cluster, before scoring. "
            "postfit does not start Ray itself."
        )


@dataclass(frozen=True)
class RayModelRef(ModelRef):
    """A pickled model in the Ray object store, whose object id is ``path``.

    The kernel's per-process cache keys on ``token``, a hash of the pickled
    bytes, so a worker that already has the same model skips the load.
    """

    handle: Any = field(default=None, repr=False, compare=False)

    def load(self):
        # The bytes come back as a read-only view of shared memory, so only
        # the unpickling itself copies.
        return cloudpickle.loads(ray.get(self.handle))


def put_model(estimator) -> RayModelRef:
    """Put the pickled estimator in the object store once and return a reference to it.

    The object lives as long as a reference to it does: the run's tasks, or
    the plan of a Dataset returned to the user.
    """
    payload = cloudpickle.dumps(estimator, protocol=5)
    token = content_token(payload)
    handle = ray.put(np.frombuffer(payload, dtype=np.uint8))
    del payload
    logger.debug("model put in the Ray object store as %s (token %s)", handle.hex(), token)
    return RayModelRef(path=handle.hex(), token=token, handle=handle)


class ObjectStoreRows:
    """Rows ``start:stop`` of an array stored once in the Ray object store.

    ``ray.get`` maps a stored NumPy array read-only without copying it, so
    loading a block costs only the slice.
    """

    def __init__(self, handle, start, stop):
        self.handle = handle
        self.start = start
        self.stop = stop

    def load(self):
        return ray.get(self.handle)[self.start : self.stop]


class _ObjectStoreSlicer(InputSlicer):
    def __init__(self, handle):
        self.handle = handle

    def __call__(self, start, stop):
        return ObjectStoreRows(self.handle, start, stop)


def _cluster_cpus() -> tuple[int, int]:
    """Return the CPU count of the whole Ray cluster and of its largest node."""
    total = int(ray.cluster_resources().get("CPU", 0))
    largest = max(
        (int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")),
        default=0,
    )
    return total, largest


def cpus_per_worker(n_workers: int) -> int:
    """Return how many CPUs each of ``n_workers`` tasks reserves.

    Workers × CPUs per worker stays within the cluster's CPUs. One worker
    never requests more CPUs than the largest node has, because Ray would
    wait forever for a node that can place it.
    """
    total, largest = _cluster_cpus()
    if total < 1 or largest < 1:
        raise RuntimeError(
            f"The Ray cluster has no CPUs to run tasks on (cluster resources: "
            f"{ray.cluster_resources()}). Start Ray with num_cpus of at least 1."
        )
    return max(1, min(largest, total // max(1, n_workers)))


def _check_backend_options(max_retries=DEFAULT_MAX_RETRIES, **unknown) -> int:
    """Return ``max_retries`` from ``backend_options``, the one option Ray runs accept."""
    if unknown:
        raise TypeError(
            f"Unknown backend_options for the ray backend and Ray Dataset inputs: "
            f"{sorted(unknown)}. They accept max_retries."
        )
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < -1:
        raise ValueError(
            f"max_retries must be an int >= 0, or -1 to retry forever, got {max_retries!r}. "
            "Pass it as backend_options={'max_retries': 3}."
        )
    return max_retries


def _raise_task_error(exc, block_text):
    """Raise the estimator's own exception from a failed task, or a WorkerCrashedError."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause
        if isinstance(cause, Exception) and not isinstance(cause, ray.exceptions.RayError):
            # The remote traceback stays reachable as __cause__.
            raise cause from exc
        raise exc
    if isinstance(exc, _LOST_WORKER_ERRORS):
        raise WorkerCrashedError(
            f"A Ray worker died while scoring {block_text} ({type(exc).__name__}), "
            "after Ray's own retries. Nothing was returned or marked complete. A worker "
            "that dies is often out of memory: lower memory_budget or block_size, or use "
            "fewer workers."
        ) from exc
    raise exc


def _run_task(func, block):
    return func(block)


# Defined once: each new remote function is exported to the cluster again.
_REMOTE_RUN_TASK = ray.remote(_run_task)


class RayBackend(Backend):
    """Score blocks as Ray tasks on the session the user opened with ``ray.init()``.

    Parameters
    ----------
    n_workers : int, default=1
        Tasks that run at once. Each reserves ``cluster CPUs // n_workers``
        CPUs (at least one), which is also its BLAS and OpenMP thread limit.
    max_retries : int, default=3
        How many times Ray reruns a task whose worker process died. Errors
        raised by the estimator are never retried.
    """

    name = "ray"
    in_process = False

    def __init__(self, n_workers=1, **options):
        require_ray_session()
        max_retries = _check_backend_options(**options)
        super().__init__(n_workers)
        self.max_retries = max_retries
        self.cpus_per_task = cpus_per_worker(n_workers)
        self._remote = _REMOTE_RUN_TASK.options(
            num_cpus=self.cpus_per_task, max_retries=max_retries
        )

    def ship_model(self, estimator):
        return contextlib.nullcontext(put_model(estimator))

    @contextlib.contextmanager
    def ship_input(self, X):
        if not _fits_object_store(X):
            yield InputSlicer(X)
            return
        handle = ray.put(X)
        logger.debug("input of %d bytes put in the Ray object store once", X.nbytes)
        yield _ObjectStoreSlicer(handle)

    def inner_threads(self, n_cores):
        return self.cpus_per_task

    def imap_unordered(self, func, blocks, max_in_flight):
        # The function is put once: every task would otherwise carry its own
        # pickled copy, kwargs and sink included.
        func_handle = ray.put(func)
        pending = {}
        blocks = iter(blocks)
        exhausted = False
        try:
            while True:
                if not exhausted:
                    exhausted = not submit_until_full(
                        pending, blocks, max_in_flight, partial(self._remote.remote, func_handle)
                    )
                if not pending:
                    return
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    block = pending.pop(ref)
                    yield block, self._result(ref, block)
        except BaseException as exc:
            # On KeyboardInterrupt the running tasks are killed at once. After
            # an estimator error, ray.cancel raises KeyboardInterrupt inside them.
            force = not isinstance(exc, Exception)
            for ref in pending:
                ray.cancel(ref, force=force)
            raise

    @staticmethod
    def _result(ref, block):
        with attach_block(block):
            try:
                return ray.get(ref)
            except ray.exceptions.RayError as exc:
                _raise_task_error(exc, block.describe())


def _fits_object_store(X) -> bool:
    """Return True for a NumPy array that is cheaper to put once than to send per block."""
    if not isinstance(X, np.ndarray) or X.dtype.hasobject or X.ndim == 0:
        return False
    if isinstance(X, np.memmap):
        # Putting a memory-mapped file would read all of it into memory.
        return False
    free = ray.available_resources().get("object_store_memory", 0)
    return X.nbytes <= MAX_STORE_SHARE * free


# Ray Dataset inputs ----------------------------------------------------------


@dataclass(frozen=True)
class ScorerArgs:
    """Settings of :func:`score_batch` for one run over a Ray Dataset."""

    method: str
    kwargs: dict
    #: Columns to score, by name. None scores every column in order.
    feature_names: list | None
    #: ``n_features_in_`` of the estimator, or None when it has none.
    n_features: int | None
    #: Input columns copied before the output columns.
    keep_columns: list
    #: True returns each batch's output pickled, as one row.
    pickled_output: bool
    inner_threads: int | None
    #: The caller's ``sklearn.get_config()`` when the Dataset was built.
    config: dict | None = None


def score_batch(batch, model_ref, args: ScorerArgs):
    """Score one batch of a Ray Dataset, as the function that ``map_batches`` calls.

    The model is resolved through the kernel's per-process cache, so each
    Ray worker process deserialises it once, and the pooled workers stay warm
    between runs. With ``pickled_output`` the batch becomes one row holding
    its pickled output, which the driver assembles into exactly the type the
    estimator returns (sparse matrices and frames included). Otherwise it
    becomes the columns named by :func:`output_columns`.
    """
    estimator = resolve_model(model_ref)
    rows = _batch_rows(batch, args)
    n = n_rows(rows)
    out = EmptyOutput() if n == 0 else _score_rows(estimator, rows, n, args)
    if args.pickled_output:
        return {"output": np.array([pickle.dumps(out, protocol=5)], dtype=object)}
    if isinstance(out, EmptyOutput):
        meta = meta_from_attributes(estimator, args.method)
        # NOTE: without a meta from fitted attributes (regressors,
        # transformers), an empty batch returns no output columns. Ray Data
        # takes the schema from the batches that have rows, so only an
        # all-empty Dataset ends up without output columns.
        columns = {} if meta is None else output_columns(estimator, args.method, meta)
    else:
        columns = output_columns(estimator, args.method, out)
    return _with_kept_columns(batch, columns, args)


def _batch_rows(batch, args):
    """Return the rows of a batch as the estimator was fitted on them."""
    if args.feature_names is not None:
        return batch[args.feature_names]
    arrays = [values for name, values in batch.items() if name not in args.keep_columns]
    if len(arrays) == 1:
        values = arrays[0]
        if values.ndim == 1 and args.n_features == 1:
            return values.reshape(-1, 1)
        # A tensor column is already 2-D. A 1-D column of an estimator
        # without n_features_in_ (a text pipeline) stays 1-D.
        return values
    return np.column_stack(arrays)


def _score_rows(estimator, rows, n, args):
    try:
        with _caller_config(args.config), limit_threads(args.inner_threads):
            out = call_method(estimator, args.method, rows, args.kwargs)
    except Exception as exc:
        add_note(exc, f"postfit: raised while scoring a batch of {n} rows of a Ray Dataset")
        raise
    check_output_rows(estimator, args.method, out, n, f"a batch of {n} rows of a Ray Dataset")
    return out


def _with_kept_columns(batch, columns, args):
    if not args.keep_columns:
        return columns
    clashes = sorted(set(args.keep_columns) & set(columns))
    if clashes:
        raise ValueError(
            f"keep_columns {clashes} have the names of output columns of {args.method}. "
            "Rename those input columns first."
        )
    kept = {name: np.asarray(batch[name]) for name in args.keep_columns}
    return {**kept, **columns}


def output_columns(estimator, method, out) -> dict:
    """Return a method's output as named columns for a Ray Dataset.

    A 1-D output is one column named after the method. The columns of a 2-D
    output are named after ``classes_`` for probabilities and decision
    functions, after ``get_feature_names_out()`` for ``transform``, and
    ``<method>_<j>`` otherwise. Frames keep their own column names.
    """
    if isinstance(out, pd.DataFrame):
        return {str(name): out[name].to_numpy() for name in out.columns}
    if isinstance(out, pd.Series):
        return {method: out.to_numpy()}
    if sp.issparse(out) or isinstance(out, (list, tuple)):
        kind = "a sparse matrix" if sp.issparse(out) else "several arrays (a list or tuple)"
        raise TypeError(
            f"{type(estimator).__name__}.{method} returns {kind}, which a Ray Dataset "
            "column cannot hold. Pass execute=True to get the output in memory, or make "
            "the estimator return a dense array (for example sparse_output=False)."
        )
    array = np.asarray(out)
    if array.ndim == 1:
        return {method: array}
    if array.ndim != 2:
        raise TypeError(
            f"{type(estimator).__name__}.{method} returned an array of shape {array.shape}, "
            "but a Ray Dataset output needs one or two dimensions. Pass execute=True instead."
        )
    names = _output_names(estimator, method, array.shape[1])
    return {name: array[:, j] for j, name in enumerate(names)}


def _output_names(estimator, method, width):
    names = None
    classes = getattr(estimator, "classes_", None)
    per_class = method in ("predict_proba", "predict_log_proba", "decision_function")
    if per_class and isinstance(classes, np.ndarray) and classes.ndim == 1:
        names = [str(c) for c in classes]
    elif method == "transform" and hasattr(estimator, "get_feature_names_out"):
        try:
            names = [str(c) for c in estimator.get_feature_names_out()]
        except (AttributeError, ValueError, TypeError):
            names = None
    if names is None or len(names) != width or len(set(names)) != width:
        names = [f"{method}_{j}" for j in range(width)]
    return names


def _dataset_feature_columns(estimator, X, keep_columns):
    """Return the columns to score (None: all but the kept ones), checked against the fit."""
    schema = X.schema()
    columns = None if schema is None else [str(c) for c in schema.names]
    if columns is None:
        return _fitted_names(estimator)
    owner = type(estimator).__name__

    missing_kept = [c for c in keep_columns if c not in columns]
    if missing_kept:
        raise ValueError(
            f"keep_columns {missing_kept} not found in the Ray Dataset, which has columns "
            f"{columns[:8]}. Pass names of existing columns."
        )

    fitted = _fitted_names(estimator)
    if fitted is not None:
        missing = [c for c in fitted if c not in columns]
        if missing:
            raise ValueError(
                f"The Ray Dataset is missing {len(missing)} column(s) that {owner} was "
                f"fitted with: {missing[:8]}. Its columns are {columns[:8]}. Select or "
                "rename columns so that the fitted names are present."
            )
        return fitted

    scored = [c for c in columns if c not in keep_columns]
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is not None and len(scored) not in (1, n_features):
        raise ValueError(
            f"The Ray Dataset has {len(scored)} columns to score ({scored[:8]}), but "
            f"{owner} was fitted with {n_features} features and no feature names, so "
            f"every column but keep_columns is scored in order. Select the {n_features} "
            "feature columns first, for example with ds.select_columns([...])."
        )
    return None


def _fitted_names(estimator):
    names = getattr(estimator, "feature_names_in_", None)
    return None if names is None else [str(c) for c in names]


def _ordered_copy(X):
    """Return X with a private DataContext that keeps rows in input order.

    The copy also lets the estimator's own exceptions through.

    Datasets derived from one another share one DataContext object, so
    setting ``preserve_order`` on X's own context would change the user's
    other pipelines too.
    """
    # NOTE: Ray 2.60 documents no way to give a Dataset its own DataContext.
    # Dataset.copy(_deep_copy=True) does it, but it is not documented.
    ordered = ray.data.Dataset.copy(X, _deep_copy=True)
    ordered.context.execution_options.preserve_order = True
    # Without this, Ray Data replaces the estimator's exception with a
    # UserCodeException that does not carry the original type.
    ordered.context.raise_original_map_exception = True
    return ordered


def run_ray_dataset(
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
):
    """Run ``method`` on a ``ray.data.Dataset``: a lazy Dataset out, or the output in memory.

    Parameters
    ----------
    wrapper : ParallelPostFit
        The calling wrapper, for a user meta of the method.
    estimator : fitted estimator
    method : str
        Name of the post-fit method.
    X : ray.data.Dataset
        The rows to score. With fitted feature names, those columns are
        scored and others are ignored. Without them, every column but
        ``keep_columns`` is scored in order, and a single tensor column
        contains one row of features per row.
    options : RunOptions
        A negative ``n_jobs`` such as ``-1`` lets Ray Data scale the tasks
        to the whole cluster, one CPU each. Otherwise ``n_jobs`` caps the
        tasks that run at once, each with an equal share of the cluster's
        CPUs. An integer ``block_size`` sets the rows per batch, and
        ``backend_options={"max_retries": n}`` how many times Ray reruns a
        task whose worker died (3 by default, where Ray Data's own default
        is to retry forever).
    kwargs : dict
        Keyword arguments of the method.
    execute : bool, default=None
        True returns the output in memory, of exactly the type the estimator
        returns; False or None returns a lazy Dataset of output columns.
    output, overwrite, resume : None
        Not supported for Dataset inputs: write the returned Dataset with
        its own writers, such as ``write_parquet``.
    keep_columns : list of str, optional
        Input columns (such as ids) put before the output columns. With
        ``execute=True`` the result is then a pandas DataFrame of them all.

    Returns
    -------
    ray.data.Dataset or in-memory output
        Rows in input order.
    """
    from ..io._source import check_column_list

    if options.backend == "dask":
        raise ValueError(
            "A Ray Dataset input is scored by Ray Data, so backend='dask' does not apply. "
            "Pass a Dask collection to score on Dask, or convert the Dataset first "
            "(ds.to_pandas()) to score it in memory on Dask."
        )
    require_ray_session()
    if output is not None or overwrite or resume:
        raise ValueError(
            f"output={output!r} (with overwrite= and resume=) is not supported for a Ray "
            "Dataset input. Call the method without them and write the returned Dataset, "
            "for example with ds.write_parquet(path)."
        )
    keep = check_column_list(keep_columns, "keep_columns") or []
    max_retries = _check_backend_options(**options.backend_options)
    feature_names = _dataset_feature_columns(estimator, X, keep)
    _check_kept_names(wrapper, estimator, method, keep)
    compute, cpus = _dataset_compute(options.n_jobs)
    n_tasks = compute.size or max(1, _cluster_cpus()[0] // cpus)
    batch_size = options.block_size if isinstance(options.block_size, int) else "auto"
    pickled_output = execute is True and not keep
    several = [name for name in ("return_std", "return_cov") if (kwargs or {}).get(name)]
    if several and not pickled_output:
        # Checked here, as the batches would raise it only when the Dataset runs.
        raise TypeError(
            f"{type(estimator).__name__}.{method} with {several[0]}=True returns a tuple "
            "of arrays, which a Ray Dataset column cannot hold. Pass execute=True, "
            "without keep_columns, to get the tuple in memory."
        )
    scorer_args = ScorerArgs(
        method=method,
        kwargs=kwargs or {},
        feature_names=feature_names,
        n_features=getattr(estimator, "n_features_in_", None),
        keep_columns=keep,
        pickled_output=pickled_output,
        inner_threads=cpus,
        # A lazy Dataset runs later, under the configuration of the call that built it.
        config=sklearn.get_config(),
    )
    with warnings.catch_warnings():
        # NOTE: Ray Data 2.60 retries a map task whose worker died forever by
        # default, so an estimator that crashes its worker on every try would
        # hang the run. Passing max_retries as a Ray remote argument is the
        # only way to bound that, and Ray 2.60 deprecates it without a
        # replacement (removal announced for 2.64).
        warnings.filterwarnings(
            "ignore", message="`ray_remote_args` is deprecated", category=RayDeprecationWarning
        )
        scored = _spread_blocks(_ordered_copy(X), n_tasks).map_batches(
            score_batch,
            fn_kwargs={"model_ref": put_model(estimator), "args": scorer_args},
            batch_format="pandas" if feature_names is not None else "numpy",
            batch_size=batch_size,
            zero_copy_batch=True,
            compute=compute,
            num_cpus=cpus,
            max_retries=max_retries,
        )
    if execute is not True:
        return scored
    if not pickled_output:
        frame = _run_dataset(lambda: _to_frame(scored))
        if frame.shape == (0, 0):
            # A Dataset without rows gives no batches, so no batch named the columns.
            frame = _empty_frame(wrapper, estimator, method, X, keep)
        return frame
    return _collect(scored, known_meta(wrapper._meta_for(method), estimator, method))


def _spread_blocks(X, n_tasks):
    """Return a materialized X set up to keep ``n_tasks`` tasks busy; return others as they are.

    Ray Data runs each block in one task, so a Dataset made by
    ``ray.data.from_numpy`` of one array ran on one CPU. Such a Dataset is
    split into blocks of at least ``SPLIT_MIN_BYTES``, without a shuffle, so
    rows keep their order. Ray Data also reserves part of the CPUs for each
    operator of a plan, so on two CPUs the scoring tasks of a materialized
    Dataset ran one at a time. Its plan has no reading operator to reserve
    CPUs for, and X has a private context (see :func:`_ordered_copy`), so
    the reservation is turned off. Together: a 300-tree forest on 2,000,000
    rows over two CPUs took 29 s instead of 51 s. Lazy Datasets
    (``read_parquet``, for example) are left alone, because counting their
    blocks would run them.
    """
    if not isinstance(X, MaterializedDataset):
        return X
    X.context.op_resource_reservation_enabled = False
    n_blocks = X.num_blocks()
    # Ray returns None from size_bytes() when it does not know the size, so such
    # a Dataset keeps its blocks.
    size = X.size_bytes() or 0
    target = min(SPLIT_BLOCKS_PER_TASK * n_tasks, size // SPLIT_MIN_BYTES)
    if n_blocks >= n_tasks or target <= n_blocks:
        return X
    logger.debug("ray data: %d blocks split into %d for %d tasks", n_blocks, target, n_tasks)
    return X.repartition(target)


def _dataset_compute(n_jobs):
    """Return the Ray Data compute strategy and the CPUs per task for ``n_jobs``.

    A negative ``n_jobs`` lets Ray Data scale the tasks to the whole cluster,
    one CPU each. Otherwise ``n_jobs`` (None: 1, as in scikit-learn) caps the
    tasks that run at once.
    """
    n_workers = effective_n_workers(n_jobs)
    if n_jobs is not None and n_jobs < 0:
        return ray.data.TaskPoolStrategy(), 1
    return ray.data.TaskPoolStrategy(size=n_workers), cpus_per_worker(n_workers)


def _collect(scored, meta):
    """Assemble the pickled batch outputs of ``scored`` in order."""
    collector = OutputCollector(None, None, meta)

    def add_all():
        for position, row in enumerate(scored.iter_rows()):
            collector.add(position, None, None, pickle.loads(row["output"]))

    _run_dataset(add_all)
    return collector.result()


def _known_output_names(wrapper, estimator, method):
    """Return the output column names that are known before any batch runs, or None."""
    meta = known_meta(wrapper._meta_for(method), estimator, method)
    if meta is not None:
        return list(output_columns(estimator, method, meta))
    if method == "transform" and hasattr(estimator, "get_feature_names_out"):
        try:
            return [str(name) for name in estimator.get_feature_names_out()]
        except (AttributeError, ValueError, TypeError, NotImplementedError):
            return None
    return None


def _check_kept_names(wrapper, estimator, method, keep):
    """Raise before the Dataset runs when a kept column has the name of an output column."""
    if not keep or not isinstance(method, str):
        return
    names = _known_output_names(wrapper, estimator, method)
    clashes = sorted(set(keep) & set(names or ()))
    if clashes:
        raise ValueError(
            f"keep_columns {clashes} have the names of output columns of {method}. Rename "
            "those input columns first."
        )


def _empty_frame(wrapper, estimator, method, X, keep):
    """Return the empty frame of a Dataset without rows: ``keep`` columns, then the output's."""
    import pyarrow as pa

    meta = known_meta(wrapper._meta_for(method), estimator, method)
    if meta is None:
        raise BlockError(
            f"Every batch of the Ray Dataset was empty, so the output columns of {method} are "
            f"not known. Pass {method}_meta= to ParallelPostFit (an empty array or frame "
            "shaped like the output)."
        )
    schema = X.schema()
    types = dict(zip(schema.names, schema.types, strict=True))
    fields = [
        pa.field(name, types[name] if isinstance(types[name], pa.DataType) else pa.string())
        for name in keep
    ]
    for name, values in output_columns(estimator, method, meta).items():
        fields.append(pa.field(name, pa.array(values).type))
    # Batches with rows become frames of Arrow-backed columns, and so does this one.
    return pa.schema(fields).empty_table().to_pandas(types_mapper=pd.ArrowDtype)


def _to_frame(scored):
    """Return ``scored`` as one pandas DataFrame with a RangeIndex."""
    parts = list(scored.iter_batches(batch_format="pandas", batch_size=None))
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True)


def _run_dataset(execute):
    """Call ``execute``, raising the estimator's own exception when a batch failed."""
    try:
        return execute()
    except ray.exceptions.RayError as exc:
        _raise_task_error(_user_error(exc), "a batch of a Ray Dataset")


def _user_error(exc):
    """Return the RayTaskError that carries the estimator's exception, when there is one."""
    seen = exc
    visited = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, ray.exceptions.RayTaskError) and not isinstance(
            seen.cause, ray.exceptions.RayError
        ):
            return seen
        seen = seen.__cause__ or getattr(seen, "cause", None)
    return exc
