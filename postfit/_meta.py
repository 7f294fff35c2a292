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

__all__ = ["coerce_to_meta", "infer_meta", "meta_from_attributes"]


def _classes(estimator):
    classes = getattr(estimator, "classes_", None)
    if isinstance(classes, np.ndarray) and classes.ndim == 1:
        return classes
    return None


def meta_from_attributes(estimator, method):
    """Return the meta that fitted attributes fix, or None when they do not.

    Only single-output classifiers qualify: ``predict`` returns labels of the
    dtype of ``classes_``, and ``predict_proba`` / ``predict_log_proba``
    return one float64 column per class.
    """
    classes = _classes(estimator)
    if classes is None:
        return None
    if method == "predict":
        return np.empty(0, dtype=classes.dtype)
    if method in ("predict_proba", "predict_log_proba"):
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


def normalize_user_meta(meta):
    """Return a zero-row version of a user meta (a dtype becomes an empty 1-D array)."""
    if isinstance(meta, (np.dtype, type, str)):
        return np.empty(0, dtype=np.dtype(meta))
    if isinstance(meta, (np.ndarray, pd.DataFrame, pd.Series)):
        return empty_like(meta)
    return meta


def coerce_to_meta(out, meta):
    """Return ``out`` converted to the type and dtype of ``meta`` where they differ."""
    if meta is None:
        return out
    if isinstance(meta, np.ndarray):
        array = np.asarray(out)
        return array if array.dtype == meta.dtype else array.astype(meta.dtype)
    if isinstance(meta, pd.Series):
        index = getattr(out, "index", None)
        series = pd.Series(np.asarray(out).ravel(), index=index, name=meta.name)
        return series.astype(meta.dtype)
    if isinstance(meta, pd.DataFrame):
        index = getattr(out, "index", None)
        frame = out if isinstance(out, pd.DataFrame) else pd.DataFrame(np.asarray(out), index=index)
        if frame.shape[1] == meta.shape[1]:
            frame.columns = meta.columns
        return frame.astype(meta.dtypes.to_dict())
    return out
