"""Scoring routes for Dask collections and postfit file sources.

Both routes cut y and the sample weights at X's own block boundaries (Dask
chunks or partitions, file row groups) so that each block of X is read once
and scored with its targets, inside the worker that reads it.
"""

from __future__ import annotations

import logging

import numpy as np

from . import _plan
from ._blocks import n_rows
from ._kernel import Block
from ._runner import execute_blocks
from ._validation import check_input_features
from .backends import get_backend
from .scoring import (
    CarriedColumn,
    LabelledRows,
    StatsAccumulator,
    choose_backend,
    missing_column_error,
    score_block,
    split_target,
    warn_whole_data,
    whole_data_values,
)

logger = logging.getLogger(__name__)

__all__ = ["score_dask", "score_source"]


# Dask -------------------------------------------------------------------------


def _dask_row_parts(X):
    """Return the delayed row blocks of a Dask array or frame, all columns in each."""
    import dask.array as da

    if isinstance(X, da.Array):
        if X.ndim == 2 and len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        return list(X.to_delayed().ravel())
    if hasattr(X, "npartitions"):
        return list(X.to_delayed())
    raise TypeError(f"Cannot score a Dask {type(X).__name__}; pass a Dask array or DataFrame.")


def _aligned_parts(name, values, X, x_parts):
    """Return one part of ``values`` (y or sample_weight) per row block of X."""
    import dask.array as da

    from ._inputs import is_dask_collection

    if values is None:
        return [None] * len(x_parts)
    if isinstance(values, str):
        return [values] * len(x_parts)
    if is_dask_collection(values):
        if isinstance(values, da.Array) and isinstance(X, da.Array):
            if any(np.isnan(c) for c in X.chunks[0]):
                raise ValueError(
                    f"X has chunks of unknown size, so {name} cannot be cut at its rows. "
                    "Call X.compute_chunk_sizes() first."
                )
            length = values.shape[0]
            if not np.isnan(length) and length != X.shape[0]:
                raise ValueError(
                    f"{name} has {length} rows, but X has {X.shape[0]}. Pass one {name} "
                    "value per row of X."
                )
            values = values.rechunk({0: X.chunks[0], **{i: -1 for i in range(1, values.ndim)}})
            return list(values.to_delayed().ravel())
        parts = _dask_row_parts(values)
        if len(parts) != len(x_parts):
            raise ValueError(
                f"{name} has {len(parts)} partitions but X has {len(x_parts)}; they must "
                f"be aligned partition by partition. Repartition {name} like X, or pass "
                "the name of a column of X as y."
            )
        return parts
    if isinstance(X, da.Array) and not any(np.isnan(c) for c in X.chunks[0]):
        values = np.asarray(values)
        if len(values) != X.shape[0]:
            raise ValueError(
                f"{name} has {len(values)} rows, but X has {X.shape[0]}. Pass one "
                f"{name} value per row of X."
            )
        stops = np.cumsum(X.chunks[0])
        return [values[stop - size : stop] for size, stop in zip(X.chunks[0], stops, strict=True)]
    if isinstance(X, da.Array):
        raise TypeError(
            f"{name} is an in-memory {type(values).__name__}, but X is a Dask Array whose "
            f"chunk sizes are not known, so {name} cannot be cut at its rows. Call "
            "X = X.compute_chunk_sizes() first."
        )
    raise TypeError(
        f"{name} is an in-memory {type(values).__name__}, but X is a Dask DataFrame whose "
        f"partition lengths are not known before it is read. Pass {name} as a Dask "
        "Series partitioned like X, or y as the name of a column of X."
    )


def _dask_meta(X, y):
    """Return an empty in-memory prototype of X's features, for the feature checks."""
    import dask.array as da

    if isinstance(X, da.Array):
        width = X.shape[1] if X.ndim == 2 else 0
        return np.empty((0, width), dtype=X.dtype)
    meta = X._meta
    if isinstance(y, str):
        if y not in meta.columns:
            raise missing_column_error(y, [str(c) for c in meta.columns])
        meta = meta.drop(columns=[y])
    return meta


def score_partition(estimator, X, y, sample_weight, specs, restore_names):
    """Score one Dask block with its targets; return None for a block of zero rows."""
    if isinstance(y, str):
        X, y = split_target(X, y)
    if n_rows(X) == 0:
        return None
    y = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
    if len(y) != n_rows(X):
        raise ValueError(
            f"A block of X has {n_rows(X)} rows but its part of y has {len(y)}. y must be "
            "partitioned like X."
        )
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight)
    return score_block(estimator, LabelledRows(X, y, sample_weight), specs, restore_names)


def combine_partitions(plan, stats, whole):
    """Merge the statistics of every Dask block and return the score(s)."""
    accumulator = StatsAccumulator(plan.specs)
    for index, block_stats in enumerate(stats):
        accumulator.add(index, block_stats)
    if plan.specs and accumulator.n_blocks == 0:
        raise ValueError("X has 0 rows, so there is nothing to score. Pass at least one row.")
    streamed = accumulator.values() if plan.specs else {}
    return plan.combine(streamed, whole)


def score_dask(plan, estimator, X, y, sample_weight):
    """Return a ``dask.delayed`` score of Dask inputs; the model is one graph key."""
    import dask

    from ._inputs import is_dask_collection

    if not is_dask_collection(X):
        raise TypeError(
            f"y or sample_weight is a Dask collection but X is a {type(X).__name__}. "
            "Pass X as a Dask collection partitioned like them, or compute them first."
        )
    _, restore_names = check_input_features(estimator, _dask_meta(X, y))
    x_parts = _dask_row_parts(X)
    y_parts = _aligned_parts("y", y, X, x_parts)
    weight_parts = _aligned_parts("sample_weight", sample_weight, X, x_parts)
    model = dask.delayed(estimator, pure=True)
    stats = []
    if plan.specs:
        # Metrics that need the whole data (the estimator's own score, say)
        # have no statistics per partition, and may take no y.
        stats = [
            dask.delayed(score_partition, pure=True)(model, x, t, w, plan.specs, restore_names)
            for x, t, w in zip(x_parts, y_parts, weight_parts, strict=True)
        ]
    whole = {}
    if plan.whole_data:
        warn_whole_data(plan)
        whole = dask.delayed(whole_data_values, pure=True)(plan, model, X, y, sample_weight)
    return dask.delayed(combine_partitions, pure=True)(plan, stats, whole)


# File sources -----------------------------------------------------------------


def _source_features(source, estimator, target):
    """Return (features, as_numpy): the columns the estimator receives, without the target."""
    names = source.all_column_names()
    if target is not None and (names is None or target not in names):
        raise missing_column_error(target, names)
    if names is None:
        return None, False
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None:
        features = [str(name) for name in fitted]
        missing = [name for name in features if name not in names]
        if missing:
            raise ValueError(
                f"The input is missing {len(missing)} column(s) that "
                f"{type(estimator).__name__} was fitted with: {missing}. The files have "
                f"columns {names}."
            )
        return features, False
    features = [name for name in (source.columns or names) if name != target]
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and len(features) != expected:
        raise ValueError(
            f"The input has {len(features)} feature columns ({features}) besides the "
            f"target, but {type(estimator).__name__} was fitted with {expected} features. "
            "Choose the feature columns with columns=."
        )
    return features, True


def score_source(plan, estimator, source, y, sample_weight, options):
    """Score a postfit file source; each block is read once, inside its worker."""
    from .io._paths import is_in_process_filesystem

    target = y if isinstance(y, str) else None
    features, as_numpy = _source_features(source, estimator, target)
    keep = [target] if target is not None else []
    read = None if features is None else [*features, *keep]
    row_nbytes = source.row_nbytes(read)
    estimated = source.estimated_rows()

    name, n_workers = choose_backend(options, estimated)
    if is_in_process_filesystem(source.fs) and name not in ("sequential", "threading"):
        name = "threading"
    backend = get_backend(name)(n_workers, **options.backend_options)
    budget = _plan.parse_memory_budget(options.memory_budget)
    block_rows = options.block_size
    if block_rows == "auto":
        block_rows = _plan.choose_block_size(
            max(estimated, 1), row_nbytes, backend.n_workers, budget
        )
        unit_rows, n_units = source.read_unit()
        block_rows = _plan.fit_to_unit(
            block_rows, unit_rows, n_units, row_nbytes, backend.n_workers, budget
        )
    blocks = source.blocks(block_rows, features, keep, as_numpy)

    y_values = None if target is not None or y is None else np.asarray(y)
    weights = None if sample_weight is None else np.asarray(sample_weight)
    total = source.n_rows
    for label, values in (("y", y_values), ("sample_weight", weights)):
        if values is None:
            continue
        if any(block.start is None for block in blocks):
            raise ValueError(
                f"{source.format} blocks do not know their row offsets before they are "
                f"read, so an in-memory {label} cannot be cut at them. Pass y as the "
                "name of a column of the files, and no sample_weight."
            )
        if total is not None and len(values) != total:
            raise ValueError(
                f"{label} has {len(values)} rows, but the input has {total}. Pass one "
                f"{label} value per row."
            )

    def labelled(block):
        if target is not None:
            y_part = CarriedColumn(target)
        elif y_values is not None:
            y_part = y_values[block.start : block.stop]
        else:
            y_part = None
        weight_part = None if weights is None else weights[block.start : block.stop]
        rows = LabelledRows(block.data, y_part, weight_part, block.start)
        return Block(block.index, block.start, block.stop, rows)

    accumulator = StatsAccumulator(plan.specs)
    in_flight = _plan.max_in_flight(block_rows, row_nbytes, backend.n_workers, budget)
    logger.debug(
        "score of %r: backend=%s workers=%d blocks=%d in_flight=%d",
        source,
        name,
        backend.n_workers,
        len(blocks),
        in_flight,
    )
    try:
        execute_blocks(
            backend,
            estimator,
            score_block,
            (labelled(block) for block in blocks),
            on_result=lambda block, stats: accumulator.add(block.index, stats),
            max_in_flight=in_flight,
            kwargs={"specs": plan.specs},
        )
    finally:
        backend.close()
    if accumulator.n_blocks == 0:
        raise ValueError(f"{source!r} has 0 rows, so there is nothing to score.")
    return accumulator.values()
