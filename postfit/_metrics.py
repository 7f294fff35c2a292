"""Per-block statistics of scikit-learn metrics, merged into the whole-data value.

Inside the worker, each scorer reduces a block to the statistics of its
``MetricSpec.kind``:

- ``"confusion"``: the weighted count of every (true label, predicted
  label) pair. This serves every label metric that is a function of the
  weighted confusion matrix: accuracy, balanced accuracy, precision, recall,
  F-beta, Jaccard, Matthews, Cohen's kappa and the likelihood ratios. The
  metric's own scikit-learn function is called once on one row per pair,
  with the pair's count as its sample weight. This gives the same value as
  the call on the whole data, including label sets, averaging and warnings.
- ``"mean"``: the metric's own value on the block times the block's weight,
  for metrics that are a weighted mean of a per-sample loss (errors,
  deviances, log loss, Brier score, top-k accuracy).
- ``"max"``: the block's ``max_error``.
- ``"moments"``: weighted means and sums of squared deviations, merged
  with Chan's parallel update, for R² and explained variance.
- ``"d2"``: the summed log loss or Brier score of the block and the weight
  of each class, for the D² log loss and D² Brier scores, whose baseline
  (the class frequencies of y) follows from the class weights.
- ``"gather"``: the targets, weights and the one output that the metric
  reads (labels, a score column, or one column per class), never X. This
  serves metrics that need all rows at once: ROC AUC, average precision,
  medians, the D² absolute error, clustering indices and custom scorers.

The scorers' private attributes (``_score_func``, ``_kwargs``, ``_sign``,
``_response_method``) and ``sklearn.utils._response`` are read because
scikit-learn 1.9 has no public way to get a scorer's metric and response
separately. ``tests/test_scoring.py`` checks every scorer against the
installed scikit-learn.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn import metrics
from sklearn.metrics import _scorer
from sklearn.utils import check_array
from sklearn.utils._response import _process_decision_function, _process_predict_proba
from sklearn.utils.validation import assert_all_finite

__all__ = ["MetricSpec", "build_spec", "merge_stats", "finalize_stats"]

# Metrics of labels whose value depends only on the weighted confusion
# matrix: duplicated (true, predicted) pairs can be merged into one pair
# whose sample weight is their summed weight.
_CONFUSION_FUNCTIONS = {
    metrics.accuracy_score,
    metrics.balanced_accuracy_score,
    metrics.precision_score,
    metrics.recall_score,
    metrics.f1_score,
    metrics.fbeta_score,
    metrics.jaccard_score,
    metrics.matthews_corrcoef,
    metrics.cohen_kappa_score,
    metrics.hamming_loss,
    metrics.zero_one_loss,
}

# The likelihood-ratio scorers wrap ``class_likelihood_ratios`` without a
# ``sample_weight`` parameter. The merged pairs need one, so the wrapped
# function is called and the ratio at this position taken.
_LIKELIHOOD_RATIO_POSITION = {
    _scorer.positive_likelihood_ratio: 0,
    _scorer.negative_likelihood_ratio: 1,
}

# Weighted means of a per-sample loss, and the function whose per-output
# mean they take (a root metric is the square root of that mean).
_MEAN_FUNCTIONS = {
    metrics.mean_squared_error: (metrics.mean_squared_error, False),
    metrics.root_mean_squared_error: (metrics.mean_squared_error, True),
    metrics.mean_squared_log_error: (metrics.mean_squared_log_error, False),
    metrics.root_mean_squared_log_error: (metrics.mean_squared_log_error, True),
    metrics.mean_absolute_error: (metrics.mean_absolute_error, False),
    metrics.mean_absolute_percentage_error: (metrics.mean_absolute_percentage_error, False),
    metrics.mean_pinball_loss: (metrics.mean_pinball_loss, False),
    metrics.mean_poisson_deviance: (metrics.mean_poisson_deviance, False),
    metrics.mean_gamma_deviance: (metrics.mean_gamma_deviance, False),
    metrics.mean_tweedie_deviance: (metrics.mean_tweedie_deviance, False),
    metrics.log_loss: (metrics.log_loss, False),
    metrics.brier_score_loss: (metrics.brier_score_loss, False),
    metrics.top_k_accuracy_score: (metrics.top_k_accuracy_score, False),
}

# Mean metrics over class scores: a block may lack some classes, so each
# block is scored against the estimator's classes and the whole data's
# labels are checked at the end.
_LABELLED_MEAN_FUNCTIONS = {
    metrics.log_loss,
    metrics.brier_score_loss,
    metrics.top_k_accuracy_score,
}

_MOMENT_FUNCTIONS = {metrics.r2_score, metrics.explained_variance_score}

# d2_brier_score came with scikit-learn 1.8.
_D2_FUNCTIONS = {
    getattr(metrics, name)
    for name in ("d2_log_loss_score", "d2_brier_score")
    if hasattr(metrics, name)
}


#: scikit-learn's message for sample weights that are all zero.
ZERO_WEIGHTS_MESSAGE = "Sample weights must contain at least one non-zero number."


class ZeroWeightsError(ValueError, ZeroDivisionError):
    """Sample weights that are all zero, which leave a weighted metric undefined.

    scikit-learn 1.9 raises a ValueError here, and older versions the
    ZeroDivisionError of ``np.average``, so this error is both.
    """


def accepts(function, parameter) -> bool:
    """Return True when ``function`` has a parameter named ``parameter``."""
    try:
        return parameter in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def accepts_keywords(function) -> bool:
    """Return True when ``function`` takes any keyword argument (``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


@dataclass
class MetricSpec:
    """The recipe that computes one scorer from blocks.

    It is built in the driver before any block runs and pickled to the workers.
    """

    name: str
    kind: str
    score_func: Any
    kwargs: dict
    sign: float
    response: str
    target_type: str | None = None
    classes: Any = None
    pos_label: Any = None
    use_weight: bool = False
    root: bool = False
    mean_func: Any = None
    block_kwargs: dict = field(default_factory=dict)

    def response_values(self, raw):
        """Turn the raw output of ``response`` into what the scorer passes to its metric.

        This is what ``sklearn.utils._response._get_response_values`` does:
        for a binary classifier, keep the column of ``pos_label`` of
        ``predict_proba``, or flip the sign of ``decision_function`` when
        ``pos_label`` is the first class.
        """
        if self.target_type is None:
            return raw
        if self.response in ("predict_proba", "predict_log_proba"):
            return _process_predict_proba(
                y_pred=raw,
                target_type=self.target_type,
                classes=self.classes,
                pos_label=self.pos_label,
            )
        if self.response == "decision_function":
            return _process_decision_function(
                y_pred=raw,
                target_type=self.target_type,
                classes=self.classes,
                pos_label=self.pos_label,
            )
        return raw

    def block_stats(self, y_true, y_pred, sample_weight):
        """Reduce one block to this metric's statistics."""
        weight = sample_weight if self.use_weight else None
        if self.kind == "confusion":
            return _confusion_stats(y_true, y_pred, weight)
        if self.kind == "mean":
            return _mean_stats(self, y_true, y_pred, weight)
        if self.kind == "max":
            return float(self.score_func(y_true, y_pred, **self.kwargs))
        if self.kind == "moments":
            return _moment_stats(y_true, y_pred, weight)
        if self.kind == "d2":
            return _d2_stats(self, y_true, y_pred, weight)
        return [(np.asarray(y_true), np.asarray(y_pred), weight)]


def build_spec(name, scorer, estimator, y_ndim, use_weight):
    """Return the :class:`MetricSpec` of a scikit-learn ``_Scorer`` for this estimator.

    Raises before any block runs when the estimator lacks the scorer's
    response method, when a binary ``pos_label`` is not a class, or when the
    metric takes no ``sample_weight`` but weights were given to it.
    """
    from sklearn.base import is_classifier, is_regressor
    from sklearn.utils.multiclass import type_of_target

    response = _resolve_response(name, scorer, estimator)
    score_func = scorer._score_func
    kwargs = dict(scorer._kwargs)
    # A scikit-learn scorer passes sample_weight to any metric that takes **kwargs.
    takes_weight = accepts(score_func, "sample_weight") or accepts_keywords(score_func)
    if use_weight and not takes_weight:
        raise TypeError(
            f"Scorer {name!r} computes {score_func.__name__}, which takes no sample_weight, "
            "but sample_weight was given. Score without sample_weight, or choose a "
            "metric that accepts weights."
        )
    spec = MetricSpec(
        name=name,
        kind="gather",
        score_func=score_func,
        kwargs=kwargs,
        sign=scorer._sign,
        response=response,
        use_weight=use_weight,
    )
    if is_classifier(estimator) and not is_regressor(estimator):
        # classes_ is a list of arrays for multilabel and multi-output
        # classifiers; it is passed on as scikit-learn reads it.
        spec.classes = estimator.classes_
        spec.target_type = type_of_target(spec.classes)
        spec.pos_label = scorer._get_pos_label()
        if spec.target_type == "binary":
            if spec.pos_label is not None and spec.pos_label not in list(spec.classes):
                raise ValueError(
                    f"Scorer {name!r} has pos_label={spec.pos_label!r}, which is not one "
                    f"of the estimator's classes {list(spec.classes)}. Pass one of them "
                    "to make_scorer(..., pos_label=...)."
                )
            if spec.pos_label is None:
                spec.pos_label = spec.classes[-1]
    _choose_kind(spec, y_ndim)
    return spec


def _resolve_response(name, scorer, estimator):
    methods = scorer._response_method
    candidates = (methods,) if isinstance(methods, str) else tuple(methods)
    for method in candidates:
        if hasattr(estimator, method):
            return method
    raise AttributeError(
        f"Scorer {name!r} needs {' or '.join(candidates)}, but "
        f"{type(estimator).__name__} has none of them. Choose a metric that uses "
        f"the estimator's predict, or an estimator with {candidates[0]}."
    )


def _choose_kind(spec, y_ndim):
    func = spec.score_func
    labels_given = "labels" in spec.kwargs
    if func in _CONFUSION_FUNCTIONS or func in _LIKELIHOOD_RATIO_POSITION:
        # Multilabel and multi-output targets have no pair counts; they are gathered.
        if y_ndim == 1 and spec.response == "predict":
            spec.kind = "confusion"
        return
    if func is metrics.max_error:
        spec.kind = "max"
        return
    if func in _MOMENT_FUNCTIONS:
        spec.kind = "moments"
        return
    if func in _D2_FUNCTIONS:
        if y_ndim == 1 and not labels_given and isinstance(spec.classes, np.ndarray):
            spec.kind = "d2"
        return
    if func in _MEAN_FUNCTIONS:
        spec.mean_func, spec.root = _MEAN_FUNCTIONS[func]
        if func in _LABELLED_MEAN_FUNCTIONS and not labels_given:
            if spec.classes is None or y_ndim != 1:
                return
            spec.block_kwargs["labels"] = spec.classes
        if accepts(spec.mean_func, "multioutput"):
            spec.block_kwargs["multioutput"] = "raw_values"
        spec.kind = "mean"


# Per-block statistics ---------------------------------------------------------


def _confusion_stats(y_true, y_pred, sample_weight):
    """Return {(true label, predicted label): summed weight} for one block.

    Pairs of zero weight are kept, because a label that occurs only with
    zero weight still belongs to the label set of the whole data.
    """
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y has {y_true.shape[0]} rows but the predictions have {y_pred.shape[0]}. "
            "Pass one target per row of X."
        )
    true_labels, true_codes = np.unique(y_true, return_inverse=True)
    pred_labels, pred_codes = np.unique(y_pred, return_inverse=True)
    codes = true_codes.ravel() * len(pred_labels) + pred_codes.ravel()
    size = len(true_labels) * len(pred_labels)
    present = np.bincount(codes, minlength=size) > 0
    if sample_weight is None:
        weights = np.bincount(codes, minlength=size)
    else:
        weights = np.bincount(codes, weights=np.asarray(sample_weight, float), minlength=size)
    counts = {}
    for code in np.flatnonzero(present):
        key = (true_labels[code // len(pred_labels)], pred_labels[code % len(pred_labels)])
        counts[key] = weights[code]
    return counts


def _mean_stats(spec, y_true, y_pred, sample_weight):
    """Return (total weight, metric × total weight, labels of y) for one block."""
    labels = np.unique(np.asarray(y_true)) if "labels" in spec.block_kwargs else None
    if sample_weight is None:
        total = float(len(y_true))
    else:
        total = float(np.sum(sample_weight))
    if total == 0:
        # A block whose weights are all zero adds nothing to a weighted mean.
        return (0.0, 0.0, labels)
    kwargs = {**spec.kwargs, **spec.block_kwargs}
    if sample_weight is not None:
        kwargs["sample_weight"] = sample_weight
    if spec.mean_func is metrics.log_loss:
        _check_finite_labels(y_true)
    value = spec.mean_func(y_true, y_pred, **kwargs)
    if spec.kwargs.get("normalize", True) is False:
        # normalize=False returns a sum, which adds up as it is.
        return (total, np.asarray(value, dtype=float), labels)
    return (total, np.asarray(value, dtype=float) * total, labels)


def _check_finite_labels(y_true):
    """Raise scikit-learn's error for NaN or infinite labels.

    log_loss checks y itself, but the labels that postfit passes to it would
    report NaN as a label missing from them.
    """
    y_true = np.asarray(y_true)
    if y_true.dtype.kind in "fc":
        assert_all_finite(y_true, input_name="y")


def _d2_stats(spec, y_true, y_proba, sample_weight):
    """Return (rows, summed loss, weight per class, labels of y) for one block.

    The loss is summed with the scaling that does not halve the Brier
    score; D² is a ratio, so the scaling cancels.
    """
    y_true = np.asarray(y_true)
    weight = np.ones(len(y_true)) if sample_weight is None else np.asarray(sample_weight, float)
    class_weights = np.array([weight[y_true == label].sum() for label in spec.classes])
    labels = np.unique(y_true)
    total = float(weight.sum())
    if total == 0:
        return (len(y_true), 0.0, class_weights, labels)
    kwargs = {"sample_weight": sample_weight, "labels": spec.classes}
    if spec.score_func is metrics.d2_log_loss_score:
        _check_finite_labels(y_true)
        loss = metrics.log_loss(y_true, y_proba, normalize=False, **kwargs)
    else:
        pos_label = spec.kwargs.get("pos_label")
        mean = metrics.brier_score_loss(
            y_true, y_proba, pos_label=pos_label, scale_by_half=False, **kwargs
        )
        loss = mean * total
    return (len(y_true), loss, class_weights, labels)


def _as_columns(values):
    values = np.asarray(values, dtype=float)
    return values.reshape(len(values), -1)


def _moment_stats(y_true, y_pred, sample_weight):
    """Return the weighted moments of y and of the residual for one block.

    The tuple contains the row count, the weight sum and, per output, the mean
    and the sum of squared deviations of y, the residual sum of squares, and
    the mean and the sum of squared deviations of the residual. The mean of y
    is kept as two rows, a value of y (the shift) and the mean's distance from
    it, so that targets far from zero (around 1e9, say) keep the digits of
    their spread when blocks are merged.
    """
    # scikit-learn's regression metrics reject NaN and infinity in either input.
    y_true = _as_columns(check_array(y_true, ensure_2d=False, dtype=None, input_name="y_true"))
    y_pred = _as_columns(check_array(y_pred, ensure_2d=False, dtype=None, input_name="y_pred"))
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y has shape {y_true.shape} but the predictions have shape {y_pred.shape}; "
            "they must have the same number of outputs."
        )
    n = len(y_true)
    weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    total = float(weight.sum())
    residual = y_true - y_pred
    column_weight = weight[:, None]
    ss_res = np.sum(column_weight * residual**2, axis=0)
    if total == 0:
        zeros = np.zeros(y_true.shape[1])
        return (n, 0.0, np.zeros((2, y_true.shape[1])), zeros, ss_res, zeros, zeros)
    shift = y_true[0]
    centred = y_true - shift
    offset = np.sum(column_weight * centred, axis=0) / total
    mean_y = np.stack([shift, offset])
    m2_y = np.sum(column_weight * (centred - offset) ** 2, axis=0)
    mean_r = np.sum(column_weight * residual, axis=0) / total
    m2_r = np.sum(column_weight * (residual - mean_r) ** 2, axis=0)
    return (n, total, mean_y, m2_y, ss_res, mean_r, m2_r)


# Merging ----------------------------------------------------------------------


def _merge_moments(a, b):
    """Merge two moment tuples with Chan et al.'s pairwise update of mean and M2."""
    n_a, w_a, mean_y_a, m2_y_a, ss_a, mean_r_a, m2_r_a = a
    n_b, w_b, mean_y_b, m2_y_b, ss_b, mean_r_b, m2_r_b = b
    total = w_a + w_b
    if w_a == 0 or w_b == 0:
        keep = a if w_b == 0 else b
        return (n_a + n_b, total, keep[2], keep[3] + 0.0, ss_a + ss_b, keep[5], keep[6])
    # Each mean is a shift plus an offset, and the shifts are values of y of
    # nearly equal size, so their difference is exact or nearly so.
    delta_y = (mean_y_b[0] - mean_y_a[0]) + (mean_y_b[1] - mean_y_a[1])
    delta_r = mean_r_b - mean_r_a
    mean_y = np.stack([mean_y_a[0], mean_y_a[1] + delta_y * (w_b / total)])
    mean_r = mean_r_a + delta_r * (w_b / total)
    m2_y = m2_y_a + m2_y_b + delta_y**2 * (w_a * w_b / total)
    m2_r = m2_r_a + m2_r_b + delta_r**2 * (w_a * w_b / total)
    return (n_a + n_b, total, mean_y, m2_y, ss_a + ss_b, mean_r, m2_r)


def merge_stats(spec, a, b):
    """Merge the statistics of two disjoint sets of blocks (``a`` may be None)."""
    if a is None:
        return b
    if spec.kind == "confusion":
        merged = dict(a)
        for key, weight in b.items():
            merged[key] = merged.get(key, 0) + weight
        return merged
    if spec.kind == "mean":
        labels = None
        if a[2] is not None:
            labels = np.union1d(a[2], b[2])
        return (a[0] + b[0], a[1] + b[1], labels)
    if spec.kind == "max":
        return max(a, b)
    if spec.kind == "moments":
        return _merge_moments(a, b)
    if spec.kind == "d2":
        return (a[0] + b[0], a[1] + b[1], a[2] + b[2], np.union1d(a[3], b[3]))
    return a + b


# Final values -----------------------------------------------------------------


def finalize_stats(spec, stats):
    """Return the scorer's value (sign included) from the merged statistics."""
    if spec.kind == "confusion":
        value = _finalize_confusion(spec, stats)
    elif spec.kind == "mean":
        value = _finalize_mean(spec, stats)
    elif spec.kind == "max":
        value = stats
    elif spec.kind == "moments":
        value = _finalize_moments(spec, stats)
    elif spec.kind == "d2":
        value = _finalize_d2(spec, stats)
    else:
        value = _finalize_gathered(spec, stats)
    return spec.sign * value


def _finalize_confusion(spec, counts):
    keys = list(counts)
    y_true = np.array([key[0] for key in keys])
    y_pred = np.array([key[1] for key in keys])
    weights = np.array([counts[key] for key in keys])
    position = _LIKELIHOOD_RATIO_POSITION.get(spec.score_func)
    try:
        if position is not None:
            ratios = metrics.class_likelihood_ratios(
                y_true, y_pred, sample_weight=weights, replace_undefined_by=1.0, **spec.kwargs
            )
            return ratios[position]
        return spec.score_func(y_true, y_pred, sample_weight=weights, **spec.kwargs)
    except ZeroDivisionError as exc:
        # With all-zero weights, accuracy_score of scikit-learn 1.7.2 lets
        # np.average raise "Weights sum to zero", where 1.9.1 raises a ValueError.
        if weights.sum() != 0:
            raise
        raise ZeroWeightsError(ZERO_WEIGHTS_MESSAGE) from exc


def _finalize_mean(spec, stats):
    total, weighted_sum, labels = stats
    if labels is not None:
        _check_labels_cover_classes(spec, labels)
    if spec.kwargs.get("normalize", True) is False:
        return float(weighted_sum)
    if total == 0:
        raise ZeroWeightsError(ZERO_WEIGHTS_MESSAGE)
    per_output = weighted_sum / total
    if spec.root:
        per_output = np.sqrt(per_output)
    return _average_outputs(per_output, spec.kwargs.get("multioutput", "uniform_average"))


def _check_labels_cover_classes(spec, labels):
    """Raise as scikit-learn does when y lacks some of the classes of the scores.

    Each block was scored against all of the estimator's classes. The call on
    the whole data takes its labels from y instead, and raises when they are
    fewer than the score columns.
    """
    if len(labels) == len(spec.classes) and len(labels) > 1:
        return
    classes = np.asarray(spec.classes).tolist()
    missing = [c for c in classes if c not in set(labels.tolist())]
    raise ValueError(
        f"Scorer {spec.name!r}: y contains the labels {labels.tolist()}, but the "
        f"estimator scores the classes {classes} (missing from y: {missing}). "
        f"{spec.score_func.__name__} needs every class in y_true; pass the classes "
        f"explicitly with make_scorer({spec.score_func.__name__}, labels=...)."
    )


def _check_custom_weights(multioutput, per_output):
    """Raise as scikit-learn does for output weights that do not fit the outputs."""
    if isinstance(multioutput, str):
        return
    if np.size(per_output) == 1:
        raise ValueError("Custom weights are useful only in multi-output cases.")
    if len(multioutput) != np.size(per_output):
        raise ValueError(
            f"There must be equally many custom weights ({len(multioutput)}) as outputs "
            f"({np.size(per_output)})."
        )


def _average_outputs(per_output, multioutput):
    per_output = np.asarray(per_output, dtype=float)
    _check_custom_weights(multioutput, per_output)
    if per_output.ndim == 0:
        return float(per_output)
    if isinstance(multioutput, str) and multioutput == "raw_values":
        return per_output
    if isinstance(multioutput, str):
        return float(np.average(per_output))
    return float(np.average(per_output, weights=multioutput))


def _finalize_moments(spec, stats):
    """Assemble R² or explained variance as scikit-learn does, force_finite included."""
    n, total, _, m2_y, ss_res, _, m2_r = stats
    if n > 0 and total == 0:
        raise ZeroWeightsError(ZERO_WEIGHTS_MESSAGE)
    if n < 2 and spec.score_func is metrics.r2_score:
        # Only R² is undefined on one row; explained variance gives 1.0 there.
        import warnings

        from sklearn.exceptions import UndefinedMetricWarning

        warnings.warn(
            "R^2 score is not well-defined with less than two samples.",
            UndefinedMetricWarning,
            stacklevel=4,
        )
        return float("nan")
    numerator = ss_res if spec.score_func is metrics.r2_score else m2_r
    denominator = m2_y
    force_finite = spec.kwargs.get("force_finite", True)
    multioutput = spec.kwargs.get("multioutput", "uniform_average")
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = 1 - numerator / denominator
    if force_finite:
        defined = denominator != 0
        scores = np.where(defined, scores, np.where(numerator != 0, 0.0, 1.0))
    _check_custom_weights(multioutput, scores)
    if isinstance(multioutput, str) and multioutput == "raw_values":
        return scores
    weights = None
    if isinstance(multioutput, str) and multioutput == "variance_weighted":
        # All-constant outputs give zero weights; scikit-learn then averages uniformly.
        weights = denominator if np.any(denominator != 0) else None
    elif not isinstance(multioutput, str):
        weights = multioutput
    return float(np.average(scores, weights=weights))


def _finalize_d2(spec, stats):
    """Return 1 - loss / loss of the class frequencies, as scikit-learn computes D²."""
    n, loss, class_weights, labels = stats
    if n < 2:
        import warnings

        from sklearn.exceptions import UndefinedMetricWarning

        warnings.warn(
            "D^2 score is not well-defined with less than two samples.",
            UndefinedMetricWarning,
            stacklevel=4,
        )
        return float("nan")
    _check_labels_cover_classes(spec, labels)
    total = class_weights.sum()
    if total == 0:
        raise ZeroWeightsError(ZERO_WEIGHTS_MESSAGE)
    frequencies = class_weights / total
    if spec.score_func is metrics.d2_log_loss_score:
        # log_loss clips probabilities to [eps, 1 - eps] before the logarithm.
        eps = np.finfo(np.float64).eps
        clipped = np.clip(frequencies, eps, 1 - eps)
        baseline = -np.sum(class_weights * np.log(clipped))
    else:
        baseline = np.sum(
            class_weights * (1 - frequencies) ** 2 + (total - class_weights) * frequencies**2
        )
    return float(1 - loss / baseline)


def _finalize_gathered(spec, parts):
    y_true = _concatenate([part[0] for part in parts])
    y_pred = _concatenate([part[1] for part in parts])
    kwargs = dict(spec.kwargs)
    if spec.use_weight:
        kwargs["sample_weight"] = _concatenate([part[2] for part in parts])
    return spec.score_func(y_true, y_pred, **kwargs)


def _concatenate(arrays):
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
