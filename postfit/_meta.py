"""Output metadata: an empty prototype of what a method returns.

A meta is found, in this order, from what the user gave, from fitted
attributes when they fix the output completely, and otherwise from running
the method on real rows of the input. postfit never feeds a model invented
values: a OneHotEncoder fitted on categories {1, 2, 3} would reject zeros, and
a Box-Cox PowerTransformer rejects non-positive numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._blocks import empty_like, n_rows, take_rows
from .exceptions import BlockError

__all__ = ["coerce_to_meta", "infer_meta", "meta_from_attributes"]


def _final_estimator(estimator):
    """Return the estimator that computes ``estimator``'s output, such as a pipeline's last step."""
    for _ in range(10):
        steps = getattr(estimator, "steps", None)
        if isinstance(steps, list) and steps and isinstance(steps[-1], tuple):
            estimator = steps[-1][1]
            continue
        best = estimator.__dict__.get("best_estimator_") if hasattr(estimator, "__dict__") else None
        if best is not None:
            estimator = best
            continue
        break
    return estimator


def _label_type(estimator):
    """Return the ``type_of_target`` name that a classifier recorded at fit, or None."""
    for name in ("label_binarizer_", "_label_binarizer"):
        binarizer = getattr(estimator, name, None)
        y_type = getattr(binarizer, "y_type_", None)
        if isinstance(y_type, str):
            return y_type
    return None


def _single_output(estimator) -> bool:
    """Return False when the fitted estimator predicts several labels per row."""
    final = _final_estimator(estimator)
    if getattr(final, "multilabel_", False) is True or getattr(final, "outputs_2d_", False):
        return False
    n_outputs = getattr(final, "n_outputs_", 1)
    if isinstance(n_outputs, (int, np.integer)) and n_outputs > 1:
        return False
    label_type = _label_type(final)
    return label_type is None or not label_type.startswith(("multilabel", "multiclass-multi"))


def _classes(estimator):
    classes = getattr(estimator, "classes_", None)
    if isinstance(classes, np.ndarray) and classes.ndim == 1 and _single_output(estimator):
        return classes
    return None


def _has_narrow_floats(input_dtypes) -> bool:
    """Return True when any input dtype is a float of fewer than 64 bits, such as float32."""
    for dtype in input_dtypes:
        numpy_dtype = getattr(dtype, "numpy_dtype", dtype)
        try:
            numpy_dtype = np.dtype(numpy_dtype)
        except TypeError:
            continue
        if numpy_dtype.kind == "f" and numpy_dtype.itemsize < 8:
            return True
    return False


def meta_from_attributes(estimator, method, input_dtypes=()):
    """Return the meta that fitted attributes fix, or None when they do not.

    Only single-output classifiers qualify: ``predict`` returns labels of the
    dtype of ``classes_``, and ``predict_proba`` / ``predict_log_proba``
    return one float64 column per class. A classifier fitted on several
    labels per row (a multilabel ``OneVsRestClassifier``, for example) does not
    qualify, nor do probabilities when ``input_dtypes`` contains a float32
    column: some models (naive Bayes, neural networks) then return float32.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> clf = LogisticRegression().fit([[0.0], [1.0], [2.0]], ["a", "b", "b"])
    >>> meta_from_attributes(clf, "predict_proba").shape
    (0, 2)
    >>> meta_from_attributes(clf, "predict_proba", [np.dtype("float32")]) is None
    True
    """
    classes = _classes(estimator)
    if classes is None:
        return None
    if method == "predict":
        return np.empty(0, dtype=classes.dtype)
    if method in ("predict_proba", "predict_log_proba"):
        if _has_narrow_floats(input_dtypes):
            return None
        return np.empty((0, len(classes)), dtype=np.float64)
    return None


def infer_meta(estimator, method, sample=None, user_meta=None, kwargs=None):
    """Return an empty prototype of ``getattr(estimator, method)``'s output.

    Parameters
    ----------
    estimator : fitted estimator
    method : str
    sample : array-like, optional
        Real input rows. The method runs on the first row when neither the
        user nor the fitted attributes settle the meta.
    user_meta : object, optional
        A meta given by the user; it wins over everything else.
    kwargs : dict, optional
        Keyword arguments of the method.
    """
    if user_meta is not None:
        return normalize_user_meta(user_meta)
    meta = meta_from_attributes(estimator, method)
    if meta is not None:
        return meta
    if sample is None or n_rows(sample) == 0:
        raise ValueError(
            f"Cannot infer the output of {type(estimator).__name__}.{method} without "
            f"input rows. Pass {method}_meta= (an empty array or frame shaped like the output)."
        )
    out = getattr(estimator, method)(take_rows(sample, 0, 1), **(kwargs or {}))
    return empty_like(out)


def known_meta(user_meta, estimator, method):
    """Return the meta known before any rows are scored: the user's, else the fitted one.

    Returns None when neither the user nor the fitted attributes give it.
    """
    if user_meta is not None:
        return normalize_user_meta(user_meta)
    return meta_from_attributes(estimator, method)


def normalize_user_meta(meta):
    """Return a zero-row version of a user meta (a dtype becomes an empty 1-D array)."""
    if isinstance(meta, (np.dtype, type, str)):
        return np.empty(0, dtype=np.dtype(meta))
    if isinstance(meta, (np.ndarray, pd.DataFrame, pd.Series)):
        return empty_like(meta)
    return meta


def coerce_to_meta(out, meta, method=None):
    """Return ``out`` converted to the type and dtype of ``meta`` where they differ.

    A conversion that would change values raises a
    :class:`~postfit.exceptions.BlockError` instead: labels 200 and 1000 do
    not fit a meta of dtype int8, nor a float regression output one of
    dtype int64. A float output may be rounded to a narrower float dtype
    that the meta declares. An output of another shape than the meta's
    (a multilabel ``predict`` of width 3 for a 1-D meta) raises too.
    ``method`` names the method in those messages.
    """
    if meta is None:
        return out
    if isinstance(meta, np.ndarray):
        array = np.asarray(out)
        _check_shape(array, meta.shape[1:], method)
        if array.ndim == 2 and meta.ndim == 1:
            array = array.reshape(len(array))
        return _checked_astype(array, meta.dtype, method)
    if isinstance(meta, pd.Series):
        values = out.to_numpy() if isinstance(out, (pd.Series, pd.DataFrame)) else np.asarray(out)
        _check_shape(values, (), method)
        values = values.reshape(len(values))
        index = getattr(out, "index", None)
        series = pd.Series(values, index=index, name=meta.name, dtype=values.dtype)
        return _checked_series(series, meta.dtype, method)
    if isinstance(meta, pd.DataFrame):
        index = getattr(out, "index", None)
        if isinstance(out, pd.DataFrame):
            frame = out
            _check_shape(frame, (meta.shape[1],), method)
        else:
            values = np.asarray(out)
            _check_shape(values, (meta.shape[1],), method)
            frame = pd.DataFrame(values, index=index, dtype=values.dtype)
        frame.columns = meta.columns
        if list(frame.dtypes) == list(meta.dtypes):
            return frame
        return pd.DataFrame(
            {
                position: _checked_series(frame.iloc[:, position], dtype, method)
                for position, dtype in enumerate(meta.dtypes)
            },
            index=frame.index,
        ).set_axis(meta.columns, axis=1)
    return out


def _describe_shape(trailing) -> str:
    return "1-D" if not trailing else f"2-D with {trailing[0]} columns"


def _check_shape(out, trailing, method):
    """Raise a BlockError when ``out`` does not have the trailing shape ``trailing``."""
    shape = tuple(out.shape)
    if shape[1:] == tuple(trailing):
        return
    if not trailing and len(shape) == 2 and shape[1] == 1:
        # A single column fills a 1-D meta, as it does in scikit-learn's column_or_1d.
        return
    name = method if isinstance(method, str) else "the method"
    width = "" if len(shape) == 1 else f"np.empty((0, {shape[1]}))"
    fix = (
        f"Pass {name}_meta={width or 'np.empty(0)'} (with the output's dtype) to ParallelPostFit"
        if isinstance(method, str)
        else "Give a meta of that shape"
    )
    raise BlockError(
        f"{name} returned output of shape {shape}, but the output was declared "
        f"{_describe_shape(tuple(trailing))}. {fix}, so that the declared output "
        "matches what the estimator returns."
    )


def _lossless(values, converted) -> bool:
    """Return True when ``converted`` contains the same values as ``values``."""
    if values.dtype.kind in "fc" and converted.dtype.kind in "fc":
        # Rounding to a narrower float is allowed, but overflowing to infinity is not.
        return bool(np.array_equal(np.isfinite(values), np.isfinite(converted)))
    try:
        back = converted.astype(values.dtype)
    except (TypeError, ValueError, OverflowError):
        return False
    if values.dtype.kind in "fc":
        return bool(np.array_equal(back, values, equal_nan=True))
    try:
        return bool(np.array_equal(back, values))
    except (TypeError, ValueError):
        return False


def _checked_astype(values, dtype, method):
    """Return ``values`` as ``dtype``, or raise a BlockError when that changes any value."""
    dtype = np.dtype(dtype)
    if values.dtype == dtype:
        return values
    if dtype.kind == "O" or np.can_cast(values.dtype, dtype, casting="safe"):
        return values.astype(dtype)
    try:
        with np.errstate(all="ignore"):
            converted = values.astype(dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        _raise_lossy(values, dtype, method, exc)
    if not _lossless(values, converted):
        _raise_lossy(values, dtype, method)
    return converted


def _checked_series(series, dtype, method):
    """Return ``series`` as ``dtype``, or raise a BlockError when that changes any value."""
    if series.dtype == dtype:
        return series
    if isinstance(dtype, np.dtype):
        values = _checked_astype(series.to_numpy(), dtype, method)
        return pd.Series(values, index=series.index, name=series.name, dtype=values.dtype)
    if isinstance(dtype, pd.CategoricalDtype) and dtype.categories is not None:
        outside = series.notna() & ~series.isin(dtype.categories)
        if outside.any():
            _raise_lossy(series[outside].to_numpy(), dtype, method)
    try:
        converted = series.astype(dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        _raise_lossy(series.to_numpy(), dtype, method, exc)
    if int(converted.isna().sum()) > int(series.isna().sum()):
        # A category or other extension dtype that lacks some values turns them into NA.
        lost = series[converted.isna() & series.notna()]
        _raise_lossy(lost.to_numpy(), dtype, method)
    return converted


def _raise_lossy(values, dtype, method, cause=None):
    name = method if isinstance(method, str) else "the method"
    example = ""
    flat = np.asarray(values).ravel()
    if flat.size:
        try:
            with np.errstate(all="ignore"):
                changed = flat[flat.astype(dtype) != flat] if isinstance(dtype, np.dtype) else flat
        except (TypeError, ValueError, OverflowError):
            changed = flat
        sample = changed[0] if changed.size else flat[0]
        sample = sample.item() if isinstance(sample, np.generic) else sample
        example = f" (for example {sample!r})"
    fix = f"{name}_meta=" if isinstance(method, str) else "a meta"
    raise BlockError(
        f"{name} returned {np.asarray(values).dtype} values that the declared output dtype "
        f"{dtype} cannot hold{example}. Pass {fix} with a dtype wide enough for them, such "
        f"as {np.asarray(values).dtype}, or leave it out so that postfit finds the dtype."
    ) from cause
