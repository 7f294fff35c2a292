"""Scoring over blocks: every scikit-learn scorer, several at once, in one pass.

Each block is predicted once for all metrics: ``predict``,
``predict_proba`` and ``decision_function`` are called only when a metric
needs them. The worker then reduces the block to per-metric statistics
(see ``postfit._metrics``). For metrics that decompose, the driver keeps
confusion counts and sums. For the others (ROC AUC, medians, ...) it keeps
the targets and the one output that the metric reads, never X.

A plain callable ``scorer(estimator, X, y)`` can read anything from X, so
it is called once on the materialised data, with a
:class:`~postfit.exceptions.MaterializedScoringWarning` when X was not
already in memory (a file source or a Dask collection). So is the
estimator's own ``score`` when it is not a classifier's accuracy or a
regressor's R².
"""

from __future__ import annotations

import copy
import difflib
import inspect
import logging
import numbers
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import get_scorer, get_scorer_names
from sklearn.metrics._scorer import _Scorer

from . import _plan
from ._blocks import EmptyOutput, column_names, n_rows, sliceable_rows
from ._inputs import is_dask_collection, is_ray_dataset, is_source, materialize
from ._kernel import Block, restore_feature_names
from ._metrics import MetricSpec, build_spec, finalize_stats, merge_stats
from ._runner import _progress_bar, execute_blocks
from ._validation import check_input_features
from .backends import effective_n_workers, get_backend
from .exceptions import MaterializedScoringWarning

logger = logging.getLogger(__name__)

__all__ = ["LabelledRows", "StatsAccumulator", "build_plan", "resolve_scoring", "score"]

#: Key of the single metric, as scikit-learn's ``cross_validate`` names it.
SINGLE_METRIC_NAME = "score"


# Which metrics ----------------------------------------------------------------


def _default_scoring(estimator):
    """Return the scorer name equal to the estimator's own ``score``, or None.

    A pipeline scores with its last step's ``score`` on the pipeline's
    predictions, so its last step decides.
    """
    from sklearn.pipeline import Pipeline

    if type(estimator) is Pipeline:
        estimator = estimator.steps[-1][1]
    score_method = getattr(type(estimator), "score", None)
    if score_method is ClassifierMixin.score:
        return "accuracy"
    if score_method is RegressorMixin.score:
        return "r2"
    return None


def get_named_scorer(name):
    """Return scikit-learn's scorer called ``name``; an unknown name lists the close ones."""
    names = get_scorer_names()
    if name in names:
        return get_scorer(name)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"Unknown scorer name {name!r}.{hint} sklearn.metrics.get_scorer_names() lists "
        "every valid name; pass a scorer object from sklearn.metrics.make_scorer for "
        "other metrics."
    )


def resolve_scoring(estimator, scoring):
    """Return ``(scorers, multimetric)``: a dict of name → scorer and whether it came as several.

    A value of the dict is a scikit-learn scorer, a plain callable, or None
    for the estimator's own ``score`` method.
    """
    if scoring is None:
        name = _default_scoring(estimator)
        return {SINGLE_METRIC_NAME: get_scorer(name) if name else None}, False
    if isinstance(scoring, str):
        return {SINGLE_METRIC_NAME: get_named_scorer(scoring)}, False
    if callable(scoring):
        return {SINGLE_METRIC_NAME: scoring}, False
    if isinstance(scoring, (list, tuple, set)):
        return _resolve_names(list(scoring)), True
    if isinstance(scoring, dict):
        return _resolve_dict(scoring), True
    raise TypeError(
        f"Invalid scoring {scoring!r} of type {type(scoring).__name__}. Pass None, a "
        "scorer name, a callable scorer(estimator, X, y), a list or tuple of names, "
        "or a dict of name to scorer."
    )


def _resolve_names(names):
    if not names:
        raise ValueError("scoring is an empty list. Pass at least one scorer name.")
    if not all(isinstance(name, str) for name in names):
        others = [name for name in names if not isinstance(name, str)]
        raise ValueError(
            f"A list or tuple of scoring must hold scorer names (str), got {others!r}. "
            "Use a dict of name to scorer for scorer objects and callables."
        )
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"scoring lists these scorer names more than once: {repeated}.")
    return {name: get_named_scorer(name) for name in names}


def _resolve_dict(scoring):
    if not scoring:
        raise ValueError("scoring is an empty dict. Pass at least one name: scorer pair.")
    scorers = {}
    for key, value in scoring.items():
        if not isinstance(key, str):
            raise ValueError(f"The keys of a scoring dict must be str, got {key!r}.")
        if isinstance(value, str):
            scorers[key] = get_named_scorer(value)
        elif callable(value):
            scorers[key] = value
        else:
            raise ValueError(
                f"Invalid scoring[{key!r}]: {value!r}. A scoring dict maps names to scorer "
                "names or callables scorer(estimator, X, y)."
            )
    return scorers


# The inputs -------------------------------------------------------------------


@dataclass
class LabelledRows:
    """Rows of X with their targets and sample weights, cut at the same rows.

    Before ``load``, each part may be a loader with a ``load()`` method
    (shared memory, a file part), and ``y`` may be the name of a column of X
    that is split off once X is loaded. ``shape`` is X's row count, so that
    the kernel skips blocks of zero rows.
    """

    X: Any
    y: Any
    sample_weight: Any = None
    start: int | None = None

    @property
    def shape(self):
        return (n_rows(self.X),)

    def load(self):
        loader = self.X
        X = _load_part(loader)
        y = self.y
        if isinstance(y, CarriedColumn):
            y = loader.carried.column(y.name).to_numpy()
        elif isinstance(y, str):
            X, y = split_target(X, y)
        else:
            y = _load_part(y)
        return LabelledRows(X, y, _load_part(self.sample_weight), self.start)


@dataclass(frozen=True)
class CarriedColumn:
    """A target column that a file loader reads with the features and carries beside them."""

    name: str


def _load_part(part):
    return part.load() if hasattr(part, "load") else part


def split_target(X, target):
    """Return ``(features, target values)`` for the column ``target`` of a frame or table."""
    names = column_names(X)
    if names is None or target not in names:
        raise missing_column_error(target, names)
    if hasattr(X, "drop_columns"):  # pyarrow.Table
        return X.drop_columns([target]), X.column(target).to_numpy()
    if hasattr(X, "to_pandas") and not hasattr(X, "iloc"):  # polars
        return X.drop(target), X.get_column(target).to_numpy()
    return X.drop(columns=[target]), X[target].to_numpy()


def missing_column_error(target, names):
    if names is None:
        return ValueError(
            f"y={target!r} names a column, but X has no column names. Pass y as an "
            "array, or X as a frame or table source that has the column."
        )
    close = difflib.get_close_matches(target, names, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return ValueError(f"Target column {target!r} not found in X (columns: {listed}).{hint}")


def _check_length(name, values, n):
    if values is None or n is None:
        return
    length = n_rows(values)
    if length != n:
        raise ValueError(
            f"{name} has {length} rows, but X has {n}. Pass one {name} value per row of X."
        )


def _target_ndim(y, X):
    if isinstance(y, str):
        return 1
    return int(np.ndim(y)) if not hasattr(y, "ndim") else int(y.ndim)


# The per-block function run by the workers ------------------------------------


def score_block(estimator, rows, specs, restore_names=False):
    """Reduce one block to the statistics of every metric in ``specs``.

    Each response method (``predict``, ``predict_proba``, ...) is called at
    most once for the block, whatever the number of metrics that use it.

    Returns
    -------
    stats : dict
        Metric name → the metric's statistics for these rows.
    """
    X = rows.X
    if restore_names:
        X = restore_feature_names(estimator, X, rows.start)
    responses = {}
    stats = {}
    for spec in specs:
        if spec.response not in responses:
            responses[spec.response] = getattr(estimator, spec.response)(X)
        y_pred = spec.response_values(responses[spec.response])
        stats[spec.name] = spec.block_stats(rows.y, y_pred, rows.sample_weight)
    return stats


class StatsAccumulator:
    """Merge block statistics as blocks finish; gathered outputs are kept in block order."""

    def __init__(self, specs):
        self.specs = specs
        self.merged = {spec.name: None for spec in specs}
        self.gathered = {spec.name: {} for spec in specs if spec.kind == "gather"}
        self.n_blocks = 0

    def add(self, block_index, stats):
        if stats is None or isinstance(stats, EmptyOutput):
            return
        self.n_blocks += 1
        for spec in self.specs:
            if spec.kind == "gather":
                self.gathered[spec.name][block_index] = stats[spec.name]
            else:
                self.merged[spec.name] = merge_stats(spec, self.merged[spec.name], stats[spec.name])

    def values(self):
        """Return metric name → value; needs at least one non-empty block."""
        values = {}
        for spec in self.specs:
            stats = self.merged[spec.name]
            if spec.kind == "gather":
                parts = self.gathered[spec.name]
                stats = [part for index in sorted(parts) for part in parts[index]]
            values[spec.name] = _as_result(finalize_stats(spec, stats))
        return values


def _as_result(value):
    """Return a Python float for a scalar score, as scikit-learn's scorers give."""
    array = np.asarray(value)
    if array.ndim == 0 and np.issubdtype(array.dtype, np.number):
        return float(array)
    return value


# The plan ---------------------------------------------------------------------


@dataclass
class ScoringPlan:
    """The streamed metrics and the ones that need the materialised data."""

    specs: list[MetricSpec]
    whole_data: dict
    multimetric: bool
    names: list[str]

    def combine(self, streamed, whole):
        """Return one float, or a dict in the order the metrics were given."""
        values = {**streamed, **whole}
        if not self.multimetric:
            return values[SINGLE_METRIC_NAME]
        return {name: values[name] for name in self.names}


def build_plan(estimator, scoring, y_ndim, weighted):
    """Check every metric against the estimator before any block runs."""
    scorers, multimetric = resolve_scoring(estimator, scoring)
    specs, whole_data = [], {}
    for name, scorer in scorers.items():
        if isinstance(scorer, _Scorer):
            # With several metrics, only the scorers that take sample_weight get
            # it, as in scikit-learn's multi-metric scorer. A single metric
            # always gets it, so a metric without weights raises.
            use_weight = weighted and (not multimetric or scorer._accept_sample_weight())
            specs.append(build_spec(name, scorer, estimator, y_ndim, use_weight))
        else:
            whole_data[name] = scorer
    return ScoringPlan(specs, whole_data, multimetric, list(scorers))


def _describe_whole_data(plan):
    return ", ".join(
        "the estimator's own score" if scorer is None else getattr(scorer, "__name__", repr(scorer))
        for scorer in plan.whole_data.values()
    )


def warn_whole_data(plan, stacklevel=4):
    """Warn that the plain callables (or the estimator's own score) need all of X."""
    warnings.warn(
        f"Scoring with {_describe_whole_data(plan)} needs all of X at once, so X is read "
        "into memory before it is called. Use scorer names or "
        "sklearn.metrics.make_scorer objects to score block by block in bounded memory.",
        MaterializedScoringWarning,
        stacklevel=stacklevel,
    )


def whole_data_values(plan, estimator, X, y, sample_weight):
    """Call the plain callables (or the estimator's own score) on the materialised data."""
    fitted = getattr(estimator, "feature_names_in_", None)
    if is_source(X) and X.tabular and X.columns is None and fitted is not None:
        # A table source is read with the fitted columns (and the target) only, as
        # the blocks of a streamed run are.
        X = copy.copy(X)
        X.columns = [str(name) for name in fitted] + ([y] if isinstance(y, str) else [])
    X, y, sample_weight = materialize(X), materialize(y), materialize(sample_weight)
    if isinstance(y, str):
        X, y = split_target(X, y)
    values = {}
    for name, scorer in plan.whole_data.items():
        kwargs = {}
        if sample_weight is not None:
            kwargs["sample_weight"] = sample_weight
        if scorer is None:
            values[name] = estimator.score(X, y, **kwargs)
        elif sample_weight is not None and not _callable_accepts_weight(scorer):
            if not plan.multimetric:
                raise TypeError(
                    f"The scorer {_describe_whole_data(plan)} takes no sample_weight, but "
                    "sample_weight was given. Add a sample_weight parameter or score "
                    "without weights."
                )
            values[name] = scorer(estimator, X, y)
        else:
            values[name] = scorer(estimator, X, y, **kwargs)
    return values


def _callable_accepts_weight(scorer):
    import inspect

    try:
        parameters = inspect.signature(scorer).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "sample_weight" or p.kind is p.VAR_KEYWORD for p in parameters)


# Running ----------------------------------------------------------------------


def score(wrapper, X, y=None, sample_weight=None, execute=None):
    """Score ``wrapper``'s fitted estimator on X and y with ``wrapper.scoring``, block by block.

    Parameters
    ----------
    wrapper : ParallelPostFit
        A fitted wrapper; its ``scoring``, backend and block options apply.
    X : array-like, frame, sparse matrix, Dask collection or file source
        The rows to score.
    y : array-like, Series, Dask collection or str, default=None
        Targets, or the name of a column of X (a frame, a Dask frame or a
        file source) that contains them and is then not a feature.
    sample_weight : array-like of shape (n_samples,) or Dask collection, default=None
    execute : bool, default=None
        False returns a lazy ``dask.delayed`` value (Dask must be
        installed); None computes now for in-memory inputs and file sources
        and stays lazy for Dask collections; True always computes.

    Returns
    -------
    score : float, dict of float, or dask.delayed.Delayed
        One float for one metric, a dict of name to float for a list or a
        dict of metrics, with scikit-learn's signs (``neg_*`` metrics are
        negated losses).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from postfit import ParallelPostFit
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = ParallelPostFit(LogisticRegression(max_iter=1000), block_size=40).fit(X, y)
    >>> round(clf.score(X, y), 4)
    0.9733
    >>> clf.set_params(scoring=["accuracy", "neg_log_loss"])
    ParallelPostFit(...)
    >>> {name: round(value, 4) for name, value in clf.score(X, y).items()}
    {'accuracy': 0.9733, 'neg_log_loss': -0.1195}
    """
    estimator = wrapper._fitted_estimator()
    options = wrapper._check_options()
    if is_ray_dataset(X):
        # NOTE: Ray Datasets are read whole; their blocks have no row ranges
        # that y could be cut at.
        X = materialize(X)
    _check_not_scalar("y", y)
    _check_not_scalar("sample_weight", sample_weight)
    weighted = sample_weight is not None
    plan = build_plan(estimator, wrapper.scoring, _target_ndim(y, X), weighted)
    if plan.specs and y is None:
        raise ValueError(
            f"Scoring with {', '.join(repr(s.name) for s in plan.specs)} needs the true "
            "targets, but y is None. Pass y, or the name of the column of X that holds it."
        )

    lazy_input = any(is_dask_collection(v) for v in (X, y, sample_weight))
    if lazy_input:
        from ._scoring_routes import score_dask

        result = score_dask(plan, estimator, X, y, sample_weight)
        return result.compute() if execute else result
    if execute is False:
        import dask

        return dask.delayed(_score_now, pure=False)(plan, estimator, X, y, sample_weight, options)
    return _score_now(plan, estimator, X, y, sample_weight, options)


def own_score_needs_y(estimator, unknown=False) -> bool:
    """Return True when ``estimator.score`` takes y without a default.

    ``unknown`` is returned when the signature cannot be read.
    """
    try:
        parameter = inspect.signature(estimator.score).parameters.get("y")
    except (AttributeError, TypeError, ValueError):
        return unknown
    return parameter is not None and parameter.default is inspect.Parameter.empty


def _check_not_scalar(name, values):
    """Raise a ValueError for a single value given where one value per row is expected."""
    if isinstance(values, numbers.Number) or (isinstance(values, np.ndarray) and values.ndim == 0):
        column = " or the name (a string) of a column of X" if name == "y" else ""
        raise ValueError(
            f"{name} is a single value ({values!r}), but it must have one value per row "
            f"of X. Pass an array{column}."
        )


def _score_now(plan, estimator, X, y, sample_weight, options):
    if is_source(X):
        from ._scoring_routes import score_source

        streamed = score_source(plan, estimator, X, y, sample_weight, options)
    else:
        streamed = _score_in_memory(plan, estimator, X, y, sample_weight, options)
    whole = {}
    if plan.whole_data:
        if is_source(X):
            # An in-memory X is already whole, so only a file source is read
            # into memory here and deserves the warning.
            warn_whole_data(plan, stacklevel=5)
        whole = whole_data_values(plan, estimator, X, y, sample_weight)
    return plan.combine(streamed, whole)


def _score_in_memory(plan, estimator, X, y, sample_weight, options):
    if not plan.specs:
        return {}
    if isinstance(y, str):
        X, y = split_target(X, y)
    n = n_rows(X)
    y = _as_target_array(y)
    _check_length("y", y, n)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight)
        _check_length("sample_weight", sample_weight, n)
    X, restore_names = check_input_features(estimator, X)
    if n == 0:
        return _score_empty(plan, estimator, X, y, sample_weight)

    started = time.perf_counter()
    accumulator = StatsAccumulator(plan.specs)
    _run_blocks(
        plan, estimator, sliceable_rows(X), y, sample_weight, options, restore_names, accumulator
    )
    values = accumulator.values()
    elapsed = time.perf_counter() - started
    logger.info(
        "score (%s): %d rows in %.3f s (%.0f rows/s)",
        ", ".join(spec.name for spec in plan.specs),
        n,
        elapsed,
        n / max(elapsed, 1e-9),
    )
    return values


def _as_target_array(y):
    if hasattr(y, "to_numpy"):
        return y.to_numpy()
    return np.asarray(y)


def _score_empty(plan, estimator, X, y, sample_weight):
    """Return what scikit-learn's own scorers give (usually an error) for zero rows."""
    values = {}
    for spec in plan.specs:
        scorer = get_scorer(spec.name) if spec.name in get_scorer_names() else None
        if scorer is None:
            raise ValueError(f"Cannot score {spec.name!r} on X with 0 rows.")
        kwargs = {"sample_weight": sample_weight} if spec.use_weight else {}
        values[spec.name] = scorer(estimator, X, y, **kwargs)
    return values


def choose_backend(options, n):
    """Return (backend name, workers) without timing the estimator.

    NOTE: unlike predict, scoring does not time its first blocks. "auto"
    takes threads above the direct-path size, which suits estimators that
    release the GIL but gives no speed-up for those that hold it.
    """
    n_workers = effective_n_workers(options.n_jobs)
    if options.backend != "auto":
        return options.backend, n_workers
    if n_workers == 1 or n <= _plan.DIRECT_MAX_ROWS:
        return "sequential", 1
    return "threading", n_workers


def _run_blocks(plan, estimator, X, y, sample_weight, options, restore_names, accumulator):
    n = n_rows(X)
    name, n_workers = choose_backend(options, n)
    backend = get_backend(name)(n_workers, **options.backend_options)
    row_nbytes = _plan.estimate_row_nbytes(X)
    budget = _plan.parse_memory_budget(options.memory_budget)
    block_size = options.block_size
    if block_size == "auto":
        if name == "sequential" and n <= _plan.DIRECT_MAX_ROWS:
            block_size = n
        else:
            block_size = _plan.choose_block_size(n, row_nbytes, backend.n_workers, budget)
    in_flight = _plan.max_in_flight(block_size, row_nbytes, backend.n_workers, budget)
    logger.debug(
        "score on %d rows: backend=%s workers=%d block_size=%d in_flight=%d",
        n,
        name,
        backend.n_workers,
        block_size,
        in_flight,
    )
    bar = _progress_bar(n, options.progress, "score")

    def on_result(block, stats):
        accumulator.add(block.index, stats)
        bar.update(block.stop - block.start)

    try:
        with (
            backend.ship_input(X) as x_rows,
            backend.ship_input(y) as y_rows,
            backend.ship_input(sample_weight) as weight_rows,
        ):
            if sample_weight is None:
                weight_rows = None
            blocks = _labelled_blocks(x_rows, y_rows, weight_rows, n, block_size)
            execute_blocks(
                backend,
                estimator,
                score_block,
                blocks,
                on_result=on_result,
                max_in_flight=in_flight,
                kwargs={"specs": plan.specs, "restore_names": restore_names},
            )
    finally:
        bar.close()
        backend.close()


def _labelled_blocks(x_rows, y_rows, weight_rows, n, block_size):
    """Yield blocks of X, y and sample weights (unless ``weight_rows`` is None), cut alike."""
    for index, start in enumerate(range(0, n, block_size)):
        stop = min(n, start + block_size)
        weights = None if weight_rows is None else weight_rows(start, stop)
        rows = LabelledRows(x_rows(start, stop), y_rows(start, stop), weights, start)
        yield Block(index, start, stop, rows)
