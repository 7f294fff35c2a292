"""Incremental: train an estimator with ``partial_fit`` over data larger than memory.

``Incremental.fit`` reads its input one block at a time (see
:mod:`postfit._stream` for how X, y and per-sample parameters are cut) and
passes each block to the estimator's own ``partial_fit``, for several epochs.
A background thread reads the next block while the current one trains, so at
most two blocks are in memory at once and reading overlaps with training.
Training itself is sequential: ``partial_fit`` updates one model in order.
"""

from __future__ import annotations

import copy
import inspect
import logging
import numbers
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import update_wrapper
from types import MethodType

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.utils import check_random_state, get_tags
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import assert_all_finite

from . import _plan
from ._blocks import column_names, n_rows, normalize_input
from ._errors import add_note
from ._inputs import is_dask_collection, is_source
from ._stream import BlockStream, take_positions
from .exceptions import PostfitWarning
from .scoring import own_score_needs_y
from .wrappers import ParallelPostFit, _if_estimator_has, _is_fitted

logger = logging.getLogger(__name__)

__all__ = ["Incremental"]


def _no_partial_fit_message(estimator) -> str:
    name = type(estimator).__name__
    return (
        f"{name} has no partial_fit method, so Incremental cannot train it block by block. "
        f"Use an estimator that has one (SGDClassifier, SGDRegressor, MultinomialNB, "
        f"MiniBatchKMeans, IncrementalPCA, StandardScaler, ...), or fit {name} in memory "
        "and wrap it in ParallelPostFit for prediction."
    )


def _check_has_partial_fit(estimator):
    if not hasattr(estimator, "partial_fit"):
        raise AttributeError(_no_partial_fit_message(estimator))


class _if_inner_partial_fit:
    """Expose a method only when the wrapped estimator has ``partial_fit``.

    As with scikit-learn's ``available_if``, ``hasattr`` is False for an
    estimator without ``partial_fit``. The AttributeError here also names the
    estimator and the alternatives.
    """

    def __init__(self, function):
        self.function = function
        update_wrapper(self, function)

    def __get__(self, obj, owner=None):
        if obj is None:
            return self.function
        inner = obj._inner_estimator()
        if inner is not None and not hasattr(inner, "partial_fit"):
            raise AttributeError(_no_partial_fit_message(inner))
        return MethodType(self.function, obj)


def _needs_classes(estimator) -> bool:
    """Return True for a classifier whose first ``partial_fit`` call needs ``classes``."""
    if not is_classifier(estimator) or hasattr(estimator, "classes_"):
        return False
    try:
        parameters = inspect.signature(estimator.partial_fit).parameters
    except (TypeError, ValueError):
        return False
    return "classes" in parameters


class Incremental(ParallelPostFit):
    """Train an estimator with ``partial_fit`` on data larger than memory.

    ``fit`` streams blocks of rows through ``partial_fit`` of a clone of the
    estimator, for ``max_iter`` epochs, reading the next block while the
    current one trains. The input can be a NumPy array, a pandas or polars
    frame, a pyarrow Table, a scipy.sparse matrix, a Dask Array or DataFrame
    (computed one chunk or partition at a time) or a postfit file source. The
    post-fit methods and ``score`` then run block by block as in
    :class:`ParallelPostFit`.

    Parameters
    ----------
    estimator : estimator object, default=None
        The scikit-learn estimator to train. It needs a ``partial_fit``
        method; it is never modified by the wrapper.
    scoring : str, callable, list, tuple, dict or None, default=None
        Metric(s) used by :meth:`score`, as in :class:`ParallelPostFit`.
        Early stopping uses it too and then needs a single metric; None uses
        the estimator's own ``score``.
    shuffle_blocks : bool, default=True
        Visit the blocks in a new random order in each epoch. When False,
        every epoch visits them in input order.
    random_state : int, RandomState instance or None, default=None
        Seeds the block order and the row order within blocks. The same int
        gives the same orders, so the same model for an estimator that is
        itself deterministic.
    assume_equal_chunks : bool, default=True
        Accepted for code written for dask-ml's ``Incremental``, which ignores
        it as well. postfit pairs each block of X with the same rows of y,
        whatever the chunks of y.
    predict_meta, predict_proba_meta, transform_meta : array-like, default=None
        See :class:`ParallelPostFit`.
    shuffle_rows : bool, default=False
        Also shuffle the rows within each block before ``partial_fit``.
    max_iter : int, default=1
        Number of epochs (passes over the whole input). With early stopping,
        the maximum number of epochs.
    early_stopping : bool, default=False
        Stop when the score on the validation data (``X_val`` and ``y_val``
        passed to :meth:`fit`) has not improved by at least ``tol`` for
        ``n_iter_no_change`` epochs in a row. The model of the last epoch run
        is kept.
    tol : float, default=1e-4
        Smallest score improvement that counts, for early stopping.
    n_iter_no_change : int, default=5
        Epochs without improvement before early stopping.
    backend : str, default="auto"
        What runs the post-fit methods, as in :class:`ParallelPostFit`.
        Training does not use it: ``partial_fit`` runs in the calling thread.
    n_jobs : int or None, default=-1
        Workers of the post-fit methods, as in :class:`ParallelPostFit`.
    block_size : int or "auto", default="auto"
        Rows per training block of an in-memory input, and of a Dask Array
        (which is rechunked to it). ``"auto"`` sizes blocks of in-memory
        inputs to the memory budget, with at least four blocks, and keeps the
        chunks of Dask inputs and the blocks of file sources as they are.
    memory_budget : int, str or "auto", default="auto"
        Memory that the two blocks held at once (the one training and the
        one read ahead) may use, in bytes or as a string such as ``"2GiB"``.
        A :class:`~postfit.exceptions.PostfitWarning` is emitted when a block
        of a Dask or file input is larger than that allows.
    progress : bool, default=False
        Show a tqdm progress bar of blocks and epochs.

    Attributes
    ----------
    estimator_ : estimator object
        The trained clone of ``estimator``.
    n_iter_ : int
        Epochs run by the last :meth:`fit`, as for scikit-learn estimators
        with ``max_iter``. The inner estimator's own count, where it keeps
        one, is ``estimator_.n_iter_``.
    epoch_scores_ : list of float
        Score on the validation data after each epoch of the last
        :meth:`fit`, empty when no validation data was given.

    See Also
    --------
    ParallelPostFit : Parallel post-fit methods for an estimator trained in memory.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import SGDClassifier
    >>> from postfit import Incremental
    >>> X, y = make_classification(n_samples=2_000, random_state=0)
    >>> clf = Incremental(SGDClassifier(random_state=0), max_iter=5, block_size=500,
    ...                   random_state=0)
    >>> clf.fit(X, y)
    Incremental(block_size=500, estimator=SGDClassifier(random_state=0), max_iter=5,
                random_state=0)
    >>> clf.classes_
    array([0, 1])
    >>> clf.n_iter_
    5
    >>> clf.predict(X[:5]).shape
    (5,)

    Estimators without ``score``, such as scalers, need no scorer:

    >>> from sklearn.preprocessing import StandardScaler
    >>> scaler = Incremental(StandardScaler(), block_size=25).fit(X)
    >>> bool(np.allclose(scaler.mean_, X.mean(axis=0)))
    True
    """

    def __init__(
        self,
        estimator=None,
        scoring=None,
        shuffle_blocks=True,
        random_state=None,
        assume_equal_chunks=True,
        predict_meta=None,
        predict_proba_meta=None,
        transform_meta=None,
        *,
        shuffle_rows=False,
        max_iter=1,
        early_stopping=False,
        tol=1e-4,
        n_iter_no_change=5,
        backend="auto",
        n_jobs=-1,
        block_size="auto",
        memory_budget="auto",
        progress=False,
    ):
        super().__init__(
            estimator,
            scoring,
            predict_meta=predict_meta,
            predict_proba_meta=predict_proba_meta,
            transform_meta=transform_meta,
            backend=backend,
            n_jobs=n_jobs,
            block_size=block_size,
            memory_budget=memory_budget,
            progress=progress,
        )
        self.shuffle_blocks = shuffle_blocks
        self.random_state = random_state
        self.assume_equal_chunks = assume_equal_chunks
        self.shuffle_rows = shuffle_rows
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change

    # Checks -------------------------------------------------------------------

    def _check_training_options(self):
        """Validate the training knobs before any block is read."""
        for name in ("shuffle_blocks", "assume_equal_chunks", "shuffle_rows", "early_stopping"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {value!r}.")
        for name in ("max_iter", "n_iter_no_change"):
            value = getattr(self, name)
            if not _is_positive_int(value):
                raise ValueError(f"{name} must be a positive whole number, got {value!r}.")
        tol = self.tol
        if not isinstance(tol, numbers.Real) or isinstance(tol, bool) or not tol >= 0:
            raise ValueError(f"tol must be a number of at least 0, got {tol!r}.")
        check_random_state(self.random_state)
        return self._check_options()

    def _check_validation(self, estimator, X_val, y_val, sample_weight_val):
        """Raise before training when early stopping or validation scores cannot work."""
        if self.early_stopping and X_val is None:
            raise ValueError(
                "early_stopping=True needs validation data to score after each epoch. "
                "Pass it to fit, for example fit(X, y, X_val=X_val, y_val=y_val)."
            )
        if X_val is None:
            if y_val is not None:
                raise ValueError("y_val was given without X_val. Pass X_val too, or neither.")
            return
        if isinstance(self.scoring, (list, tuple, set, dict)):
            raise ValueError(
                f"Validation scores need a single metric, but scoring is {self.scoring!r}. "
                "Pass one scorer name or callable, such as scoring='accuracy'."
            )
        if self.scoring is None and not hasattr(estimator, "score"):
            raise ValueError(
                f"{type(estimator).__name__} has no score method, so it cannot be scored "
                "on X_val. Pass scoring=, a scorer name or callable, to Incremental."
            )
        if y_val is None and _scoring_needs_y(self.scoring, estimator):
            raise ValueError(
                "Scoring the validation data needs its targets, but y_val is None. Pass "
                "y_val, or the name of the column of X_val that contains them."
            )
        _check_validation_rows(X_val, y_val, sample_weight_val)

    # Training -----------------------------------------------------------------

    def fit(self, X, y=None, *, X_val=None, y_val=None, sample_weight_val=None, **fit_params):
        """Train a clone of the estimator with ``partial_fit``, block by block, for each epoch.

        Parameters
        ----------
        X : array-like, frame, sparse matrix, Dask collection or file source
            Training rows. Only two blocks are in memory at a time.
        y : array-like, Dask collection, str or None, default=None
            Targets, with one entry per row of X and any chunking, or the name
            of a column of X (a frame, Dask DataFrame or file source) that
            contains them and is then left out of X.
        X_val, y_val : array-like, frame, Dask collection or file source, default=None
            Validation data scored with ``scoring`` after each epoch, and
            used by early stopping. ``y_val`` may name a column of ``X_val``.
        sample_weight_val : array-like of shape (n_val_samples,), default=None
            Sample weights of the validation data.
        **fit_params : dict
            Passed to ``estimator.partial_fit``. ``sample_weight`` and any
            other array with one entry per row of X is cut into blocks with
            X. Other values, such as ``classes``, are passed whole to every
            call. ``classes`` is found from y when the estimator needs it and
            it is not given.

        Returns
        -------
        self : object
        """
        self._check_estimator_given()
        estimator = clone(self.estimator)
        _check_has_partial_fit(estimator)
        options = self._check_training_options()
        self._check_validation(estimator, X_val, y_val, sample_weight_val)
        rng = check_random_state(self.random_state)

        stream = self._make_stream(X, y, fit_params, options)
        self._add_classes(estimator, stream, X, y)
        validation = None if X_val is None else (X_val, y_val, sample_weight_val)

        previous = {k: self.__dict__[k] for k in _FIT_STATE if k in self.__dict__}
        self.estimator_ = estimator
        self.epoch_scores_ = []
        self.n_iter_ = 0
        try:
            self._train(stream, rng, options, self.max_iter, validation)
        except BaseException:
            # A failed fit leaves the wrapper as it was, not half trained.
            for key in _FIT_STATE:
                self.__dict__.pop(key, None)
            self.__dict__.update(previous)
            raise
        self._block_rng = rng
        self._allow_direct(estimator, self._check_options())
        return self

    @_if_inner_partial_fit
    def partial_fit(self, X, y=None, **fit_params):
        """Continue training ``estimator_`` with one pass over the blocks of X.

        The first call starts a clone of the estimator, or a copy of it when
        it was given already fitted. The user's estimator is never modified.
        When ``shuffle_blocks`` is True, the block order is drawn from the
        same random sequence as the epochs of :meth:`fit`.

        Parameters
        ----------
        X : array-like, frame, sparse matrix, Dask collection or file source
        y : array-like, Dask collection, str or None, default=None
            Targets, or the name of a column of X, as in :meth:`fit`.
        **fit_params : dict
            Passed to ``estimator.partial_fit``, cut into blocks as in :meth:`fit`.

        Returns
        -------
        self : object
        """
        self._check_estimator_given()
        _check_has_partial_fit(self.estimator)
        options = self._check_training_options()
        if "_block_rng" not in self.__dict__:
            self._block_rng = check_random_state(self.random_state)

        if "estimator_" in self.__dict__:
            estimator = self.__dict__["estimator_"]
        elif _is_fitted(self.estimator):
            estimator = copy.deepcopy(self.estimator)
        else:
            estimator = clone(self.estimator)
        stream = self._make_stream(X, y, fit_params, options)
        self._add_classes(estimator, stream, X, y)

        created = "estimator_" not in self.__dict__
        self.estimator_ = estimator
        try:
            self._train(stream, self._block_rng, options, 1, validation=None)
        except BaseException:
            if created:
                # An estimator that failed its first block is not fitted.
                del self.estimator_
            raise
        self._allow_direct(estimator, self._check_options())
        return self

    @_if_estimator_has("transform")
    def fit_transform(self, X, y=None, **fit_params):
        """Train as :meth:`fit` does, then transform X block by block.

        Parameters
        ----------
        X : array-like, frame, sparse matrix, Dask collection or file source
        y : array-like, Dask collection, str or None, default=None
        **fit_params : dict
            Passed to :meth:`fit`.

        Returns
        -------
        X_new : ndarray, sparse matrix, frame, or lazy collection
        """
        return self.fit(X, y, **fit_params).transform(X)

    def _make_stream(self, X, y, fit_params, options):
        if not (is_dask_collection(X) or is_source(X)):
            X = normalize_input(_as_array_like(X))
        block_size = options.block_size
        if block_size == "auto" and not is_dask_collection(X):
            block_size = _auto_block_size(X, options.memory_budget)
        stream = BlockStream(X, y, fit_params, block_size)
        logger.debug("training input: %d blocks (block_size=%s)", stream.n_blocks, block_size)
        return stream

    def _add_classes(self, estimator, stream, X, y):
        """Find ``classes`` from y when the estimator needs it on its first call."""
        if y is None and get_tags(estimator).target_tags.required:
            raise ValueError(
                f"{type(estimator).__name__} requires y to be passed, but the target y is "
                "None. Pass y, or the name of the column of X that contains it."
            )
        if "classes" in stream.whole_params or not _needs_classes(estimator):
            return
        stream.whole_params["classes"] = _find_classes(X, y, stream)
        logger.debug("classes found from y: %s", stream.whole_params["classes"])

    def _train(self, stream, rng, options, n_epochs, validation):
        """Run the epochs, scoring and stopping early when validation data is given."""
        if stream.n_blocks == 0:
            raise ValueError("X has no rows to train on (0 blocks). Pass a non-empty input to fit.")
        budget = _plan.parse_memory_budget(options.memory_budget)
        monitor = _EarlyStopping(self.tol, self.n_iter_no_change, self.early_stopping)
        logger.info(
            "training %s on %d blocks for up to %d epoch(s)",
            type(self.estimator_).__name__,
            stream.n_blocks,
            n_epochs,
        )
        started = time.perf_counter()
        rows = 0
        epochs_run = 0

        from tqdm.auto import tqdm

        with tqdm(
            total=n_epochs * stream.n_blocks,
            unit="block",
            desc="fit",
            disable=not options.progress,
        ) as bar:
            for epoch in range(n_epochs):
                bar.set_postfix_str(f"epoch {epoch + 1}/{n_epochs}")
                order = self._block_order(stream.n_blocks, rng)
                rows = self._run_epoch(stream, order, rng, budget, bar)
                self.n_iter_ = self.__dict__.get("n_iter_", 0) + 1
                epochs_run += 1
                if validation is None:
                    continue
                X_val, y_val, weights_val = validation
                score = float(self.score(X_val, y_val, sample_weight=weights_val))
                self.epoch_scores_.append(score)
                logger.debug("epoch %d: validation score %.6g", epoch + 1, score)
                if monitor.should_stop(score):
                    logger.info("early stopping after epoch %d", epoch + 1)
                    break

        elapsed = time.perf_counter() - started
        logger.info(
            "trained %s on %d rows in %d blocks for %d epoch(s) in %.3f s (%.0f rows/s)",
            type(self.estimator_).__name__,
            rows,
            stream.n_blocks,
            epochs_run,
            elapsed,
            rows * epochs_run / max(elapsed, 1e-9),
        )

    def _block_order(self, n_blocks, rng):
        if self.shuffle_blocks:
            return [int(i) for i in rng.permutation(n_blocks)]
        return list(range(n_blocks))

    def _run_epoch(self, stream, order, rng, budget, bar):
        """Train on every block once in ``order``; return the rows trained on."""
        estimator = self.estimator_
        rows = 0
        checked_size = False
        for block in _read_ahead(stream, order):
            if block.n_rows == 0:
                bar.update(1)
                continue
            if not checked_size:
                _warn_if_over_budget(block, budget)
                checked_size = True
            if self.shuffle_rows:
                block = _shuffle_block_rows(block, rng)
            try:
                if block.y is None:
                    estimator.partial_fit(block.X, **block.params)
                else:
                    estimator.partial_fit(block.X, block.y, **block.params)
            except Exception as exc:
                add_note(exc, f"postfit: raised while training on {block.describe()}")
                raise
            rows += block.n_rows
            bar.update(1)
        if rows == 0:
            raise ValueError(
                f"Every one of the {len(order)} blocks of X is empty, so there is nothing "
                "to train on. Pass an input with rows."
            )
        return rows


#: Fitted attributes that :meth:`Incremental.fit` sets, restored when it fails.
_FIT_STATE = ("estimator_", "epoch_scores_", "n_iter_", "_block_rng")


class _EarlyStopping:
    """Count epochs whose score does not beat the best one by ``tol``."""

    def __init__(self, tol, patience, enabled):
        self.tol = tol
        self.patience = patience
        self.enabled = enabled
        self.best = -np.inf
        self.epochs_without_improvement = 0

    def should_stop(self, score) -> bool:
        if score < self.best + self.tol:
            self.epochs_without_improvement += 1
        else:
            self.epochs_without_improvement = 0
        self.best = max(self.best, score)
        return self.enabled and self.epochs_without_improvement >= self.patience


def _as_array_like(X):
    """Return X, or ``np.asarray(X)`` for objects that only offer ``__array__``."""
    if hasattr(X, "__array__") and not hasattr(X, "shape") and not isinstance(X, (list, tuple)):
        return np.asarray(X)
    return X


def _is_positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _scoring_needs_y(scoring, estimator) -> bool:
    """Return whether ``scoring`` surely needs targets: a scorer name, or a ``score(X, y)``."""
    if isinstance(scoring, str):
        return True
    if scoring is not None:
        return False
    return own_score_needs_y(estimator)


def _check_validation_rows(X_val, y_val, sample_weight_val):
    """Raise before training when y_val or sample_weight_val do not fit the rows of X_val.

    Dask collections and file sources are checked when they are scored, as
    their rows are not counted before.
    """
    if is_dask_collection(X_val) or is_source(X_val):
        return
    if isinstance(y_val, str):
        names = column_names(X_val)
        if names is None or y_val not in names:
            found = "no column names" if names is None else f"the columns {list(names)[:10]}"
            raise ValueError(
                f"y_val={y_val!r} names a column, but X_val has {found}. Pass y_val as an "
                "array, or X_val as a frame that contains the column."
            )
    n = n_rows(X_val)
    for name, values in (("y_val", y_val), ("sample_weight_val", sample_weight_val)):
        if values is None or isinstance(values, str) or is_dask_collection(values):
            continue
        if np.ndim(values) == 0:
            raise ValueError(
                f"{name} is a single value ({values!r}), but it must have one value per row "
                "of X_val. Pass an array."
            )
        length = n_rows(values)
        if length != n:
            raise ValueError(
                f"{name} has {length} rows, but X_val has {n}. Pass one {name} value per "
                "row of X_val."
            )


def _auto_block_size(X, memory_budget) -> int:
    """Return rows per block of an in-memory X or a file source.

    Two blocks (the one training and the one read ahead) fit the memory
    budget, and no block is larger than ``_plan.MAX_BLOCK_BYTES``. Unlike
    scoring, training gains nothing from more blocks than that. When the rows
    are known, the blocks are made nearly equal in size, because a short
    block can be too small for the estimator (MiniBatchKMeans needs at least
    ``n_clusters`` rows in its first call).
    """
    budget = _plan.parse_memory_budget(memory_budget)
    if is_source(X):
        rows = X.estimated_rows()
        row_nbytes = X.row_nbytes()
    else:
        rows = n_rows(X)
        row_nbytes = _plan.estimate_row_nbytes(X)
    # A huge row count turns off choose_block_size's minimum number of blocks.
    size = _plan.choose_block_size(2**62, row_nbytes, n_workers=1, memory_budget=budget)
    if is_source(X):
        unit_rows, n_units = X.read_unit()
        # Two blocks are held at once, as two workers' would be: the one
        # training and the one read ahead.
        fitted = _plan.fit_to_unit(size, unit_rows, n_units, row_nbytes, 2, budget)
        if fitted != size:
            # Blocks follow the row groups, which are already cut evenly.
            return fitted
    if rows > 0:
        n_blocks = -(-rows // size)
        size = -(-rows // n_blocks)
    return max(1, size)


def _read_ahead(stream, order):
    """Yield the blocks of ``order``, reading each next one in a thread while the caller trains.

    At most two blocks are held: the one yielded and the one being read.
    """
    if not order:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="postfit-read-ahead") as pool:
        pending = pool.submit(stream.load, order[0])
        try:
            for position, index in enumerate(order):
                try:
                    block = pending.result()
                except Exception as exc:
                    add_note(exc, f"postfit: raised while reading block {index} of X")
                    raise
                pending = None
                if position + 1 < len(order):
                    pending = pool.submit(stream.load, order[position + 1])
                yield block
                del block
        finally:
            if pending is not None:
                pending.cancel()


def _block_nbytes(block) -> int:
    return _plan.estimate_row_nbytes(block.X) * block.n_rows


def _warn_if_over_budget(block, budget):
    nbytes = _block_nbytes(block)
    if 2 * nbytes > budget:
        warnings.warn(
            f"{block.describe()} of X takes about {nbytes / 2**20:.1f} MiB, so the two "
            f"blocks held at once exceed memory_budget ({budget / 2**20:.1f} MiB). "
            "Use smaller Dask chunks or file blocks, or a smaller block_size.",
            PostfitWarning,
            stacklevel=5,
        )


def _shuffle_block_rows(block, rng):
    positions = rng.permutation(block.n_rows)
    block.X = take_positions(block.X, positions)
    block.y = take_positions(block.y, positions)
    for name in block.per_sample:
        block.params[name] = take_positions(block.params[name], positions)
    return block


def _find_classes(X, y, stream):
    """Return the sorted labels of y in one pass over y alone, or raise asking for them."""
    if isinstance(y, str):
        values = _column_values(X, y, stream.block_size)
    elif is_dask_collection(y):
        values = _dask_unique(y)
    else:
        values = np.asarray(y)
    if np.ndim(values) == 2 and np.shape(values)[1] == 1:
        # scikit-learn classifiers ravel a one-column y, with a DataConversionWarning.
        values = np.ravel(values)
    if np.ndim(values) == 2 and type_of_target(values) == "multilabel-indicator":
        # The classes of a label indicator matrix are its column numbers, which is
        # what MLPClassifier.partial_fit checks them against.
        return unique_labels(values)
    if np.ndim(values) != 1:
        raise ValueError(
            f"classes cannot be found from a y of shape {np.shape(values)}. "
            "Pass classes= to fit, with the labels of each output."
        )
    values = np.asarray(values)
    if values.dtype.kind in "fc":
        # The estimator's own check of y comes later, in partial_fit: a y with NaN or
        # infinity gets the same error here, before unique_labels casts it.
        assert_all_finite(values, input_name="y")
    return unique_labels(values)


def _dask_unique(collection):
    import dask.array as da

    if isinstance(collection, da.Array):
        if collection.ndim == 2 and collection.shape[1] == 1:
            # One output, raveled as for an in-memory y.
            collection = collection[:, 0]
        if collection.ndim != 1:
            raise ValueError(
                f"classes cannot be found from a y of shape {collection.shape}. "
                "Pass classes= to fit, with the labels of each output."
            )
        return da.unique(collection).compute()
    if collection.ndim == 2 and len(collection.columns) == 1:
        collection = collection[collection.columns[0]]
    if collection.ndim != 1:
        raise ValueError(
            f"classes cannot be found from a y with columns {list(collection.columns)}. "
            "Pass classes= to fit, with the labels of each output."
        )
    return np.asarray(collection.unique().compute())


def _column_values(X, name, block_size):
    """Return the distinct values of column ``name`` of X, reading only that column."""
    if is_dask_collection(X):
        return np.asarray(X[name].unique().compute())
    if is_source(X):
        return _source_column_unique(X, name, block_size)
    from ._stream import split_column

    _, column = split_column(X, name)
    return np.asarray(column)


def _source_column_unique(source, name, block_size):
    """Return the distinct values of one column of a file source, reading only that column."""
    from ._stream import _load_source_block

    uniques = []
    for block in source.blocks(block_size, features=[name]):
        column = np.asarray(_load_source_block(block)[name])
        uniques.append(unique_labels(column))
    return np.concatenate(uniques) if uniques else np.empty(0)
