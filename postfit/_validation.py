"""Checks that run in the driver before any parallel work starts."""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._blocks import check_not_single_value, column_names, is_arrow_table, is_polars
from .exceptions import ColumnOrderWarning

__all__ = ["check_input_features"]


def _describe_names(names, limit=8):
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (", ..." if len(names) > limit else "")


def _n_columns(X):
    if is_arrow_table(X):
        return X.num_columns
    if isinstance(X, (list, tuple)):
        # A list of rows has the width of its first row; a flat list (of
        # documents, say) has no width to check.
        first = X[0] if len(X) else None
        return len(first) if isinstance(first, (list, tuple, np.ndarray)) else None
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) < 2:
        return None
    return int(shape[1])


def _select_columns(X, names):
    if isinstance(X, pd.DataFrame):
        return X[list(names)]
    if is_arrow_table(X):
        return X.select(list(names))
    if is_polars(X):
        return X.select(list(names))
    return X


def _front_estimator(estimator):
    """Return the estimator that first receives X: a pipeline's first step that is not skipped."""
    for _ in range(10):
        steps = getattr(estimator, "steps", None)
        if not isinstance(steps, list):
            break
        active = [step for _, step in steps if step is not None and step != "passthrough"]
        if not active:
            break
        estimator = active[0]
    return estimator


def _reads_any_columns(estimator) -> bool:
    """Return True when the estimator that first receives X checks none of its columns.

    A ``FunctionTransformer(validate=False)`` records the names and count of
    the columns it was fitted on, but passes X to its function unchecked, so
    X goes to it as it is: no reordering, no width check and no warning.
    """
    from sklearn.preprocessing import FunctionTransformer

    front = _front_estimator(estimator)
    return isinstance(front, FunctionTransformer) and not front.validate


def _only_sklearn(estimator) -> bool:
    """Return True when the estimator and every estimator inside it are scikit-learn's own.

    Only those are known to ignore column names when fitted without them:
    another library's estimator may read ``X["a"]`` from the frame it gets.
    """
    from .wrappers import _from_sklearn, _nested_estimators

    return all(_from_sklearn(part) for part in _nested_estimators(estimator))


def _check_unique_names(names, fix):
    """Raise a ValueError naming the columns that appear more than once in ``names``."""
    counts = collections.Counter(names)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        listed = ", ".join(f"{n!r} {counts[n]} times" for n in repeated[:5])
        raise ValueError(f"X has duplicate column names: {listed}. {fix}")


def _selects_by_name(transformer) -> bool:
    """Return True when a ColumnTransformer names any of its columns by a string.

    Selectors such as ``make_column_selector`` are read as the names they
    picked at fit, which the fitted transformer keeps in ``_columns``.
    """
    specs = getattr(transformer, "_columns", None)
    if specs is None:
        specs = [columns for _, _, columns in transformer.transformers]
    for columns in specs:
        if isinstance(columns, str):
            return True
        if isinstance(columns, slice) and isinstance(columns.start or columns.stop, str):
            return True
        listed = isinstance(columns, (list, tuple, np.ndarray, pd.Index))
        if listed and any(isinstance(column, str) for column in columns):
            return True
    return False


def _columns_used(transformer, fitted_names):
    """Return the fitted columns that a ColumnTransformer reads, the dropped ones left out."""
    # NOTE: ``_transformer_to_input_indices`` is private to scikit-learn
    # (checked with 1.9); without it every fitted column counts as read.
    indices = getattr(transformer, "_transformer_to_input_indices", None)
    named = getattr(transformer, "named_transformers_", None)
    if not isinstance(indices, dict) or named is None:
        return list(fitted_names)
    used = set()
    for name, positions in indices.items():
        if name in named and not (isinstance(named[name], str) and named[name] == "drop"):
            used.update(int(position) for position in positions)
    return [fitted_names[position] for position in sorted(used)]


def _column_transformer_first(estimator):
    """Return the ColumnTransformer that first receives X, picking its columns by name, or None."""
    from sklearn.compose import ColumnTransformer

    front = _front_estimator(estimator)
    return front if isinstance(front, ColumnTransformer) else None


def _check_names(estimator, X, fitted_names, picker=None):
    """Match a frame's columns to the fitted feature names; reorder when only the order differs.

    ``picker`` is the ColumnTransformer that first receives X, if any. It
    picks its columns by name, so it takes frames with other columns as
    well, and without the columns that it drops. Those columns are dropped
    here.
    """
    names = column_names(X)
    owner = type(estimator).__name__
    _check_unique_names(
        names, f"Give each column a unique name, as the frame that {owner} was fitted on had."
    )
    given, fitted = set(names), set(fitted_names)
    needed = _columns_used(picker, fitted_names) if picker is not None else fitted_names
    missing = [n for n in needed if n not in given]
    unexpected = [n for n in names if n not in fitted]
    if picker is not None and not missing:
        present = [n for n in fitted_names if n in given]
        return X if names == present else _select_columns(X, present)
    if missing:
        raise ValueError(
            f"X is missing {len(missing)} column(s) that {owner} was fitted with: "
            f"{_describe_names(missing)}. Pass a frame with the columns used in fit "
            f"({_describe_names(list(fitted_names))})."
        )
    if unexpected:
        raise ValueError(
            f"X has {len(unexpected)} column(s) that {owner} was not fitted with: "
            f"{_describe_names(unexpected)}. Select the columns used in fit before "
            f"predicting, for example X[{list(fitted_names)[:3]!r}] (with all "
            f"{len(fitted_names)} of them)."
        )
    if names != list(fitted_names):
        warnings.warn(
            f"The columns of X are in another order than when {owner} was fitted; "
            "postfit reorders them by name. Pass them in fit order to skip this step.",
            ColumnOrderWarning,
            stacklevel=4,
        )
        return _select_columns(X, fitted_names)
    return X


def _is_other_array_like(X):
    known = (np.ndarray, pd.DataFrame, pd.Series, list, tuple)
    if isinstance(X, known) or sp.issparse(X) or is_arrow_table(X) or is_polars(X):
        return False
    return hasattr(X, "__array__") and not hasattr(X, "shape")


def _plain_array_matches(estimator, X) -> bool:
    """Return True for a NumPy X that needs no further check: the common, hot case."""
    if X.ndim == 1:
        return True
    if X.ndim != 2 or getattr(estimator, "feature_names_in_", None) is not None:
        return False
    expected = getattr(estimator, "n_features_in_", None)
    return expected is None or X.shape[1] == expected


def check_input_features(estimator, X):
    """Check X against the estimator's fitted features, once, before any block runs.

    Returns
    -------
    X : array-like
        X itself, or its columns reordered to the fitted order.
    restore_names : bool
        True when X is positional and the estimator was fitted with feature
        names, or X is a pandas frame with column names and the estimator was
        fitted without: the kernel then gives each block the fit's kind of
        columns, after one warning here, as scikit-learn itself gives one
        warning per call.
    """
    if type(X) is np.ndarray and _plain_array_matches(estimator, X):
        return X, False
    if _is_other_array_like(X):
        # Objects that only implement ``__array__`` are converted as
        # scikit-learn's check_array converts them, so that they can be sliced.
        X = np.asarray(X)
    if isinstance(X, np.ndarray) and X.ndim > 2:
        raise ValueError(
            f"X has {X.ndim} dimensions (shape {X.shape}), but estimators take 2-D input "
            "(rows, features). Reshape it, for example X.reshape(len(X), -1)."
        )
    check_not_single_value(X)
    if _reads_any_columns(estimator):
        return X, False
    fitted_names = getattr(estimator, "feature_names_in_", None)
    names = column_names(X)
    owner = type(estimator).__name__
    if isinstance(X, pd.DataFrame) and not all(isinstance(c, str) for c in X.columns):
        if any(isinstance(c, str) for c in X.columns):
            raise TypeError(
                "X has column names of several types: "
                f"{sorted({type(c).__name__ for c in X.columns})}. scikit-learn uses column "
                "names only when all of them are strings. Convert them, for example with "
                "X.columns = X.columns.astype(str)."
            )
        # As in scikit-learn, a frame without string column names is positional.
        names = None
    by_name = False
    if fitted_names is not None and names is not None:
        picker = _column_transformer_first(estimator)
        X = _check_names(estimator, X, [str(n) for n in fitted_names], picker)
        by_name = picker is not None

    expected = getattr(estimator, "n_features_in_", None)
    width = _n_columns(X)
    if expected is not None and width is not None and width != expected and not by_name:
        detail = ""
        if fitted_names is not None:
            detail = f" (columns {_describe_names(list(fitted_names))})"
        raise ValueError(
            f"X has {width} features, but {owner} is expecting {expected} features as "
            f"input{detail}. Pass the same features used in fit."
        )

    restore_names = False
    if fitted_names is not None and names is None and width is not None:
        picker = _column_transformer_first(estimator)
        if picker is not None and _selects_by_name(picker):
            # scikit-learn's own error, raised here before any block runs.
            raise ValueError(
                "Specifying the columns using strings is only supported for dataframes. "
                f"{type(picker).__name__} picks columns by name, so pass X as a frame with "
                f"the columns it was fitted on: {_describe_names(list(fitted_names))}."
            )
        warnings.warn(
            f"X does not have valid feature names, but {owner} was fitted with feature names",
            UserWarning,
            stacklevel=4,
        )
        restore_names = True
    elif (
        fitted_names is None
        and names is not None
        and isinstance(X, pd.DataFrame)
        and expected is not None
        and _only_sklearn(estimator)
    ):
        # scikit-learn rejects duplicate names too, even though it does not use them.
        _check_unique_names(
            names,
            f"Give each column a unique name, or pass the rows without names, as {owner} "
            "was fitted.",
        )
        warnings.warn(
            f"X has feature names, but {owner} was fitted without feature names",
            UserWarning,
            stacklevel=4,
        )
        restore_names = True
    return X, restore_names
