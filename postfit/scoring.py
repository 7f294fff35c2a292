"""Scoring: metrics of a wrapped estimator computed over blocks."""

from __future__ import annotations

from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import check_scoring

from ._inputs import materialize

__all__ = ["score"]


def _default_scoring(estimator):
    """Return the scorer name equal to the estimator's own ``score``, or None."""
    score_method = getattr(type(estimator), "score", None)
    if score_method is ClassifierMixin.score:
        return "accuracy"
    if score_method is RegressorMixin.score:
        return "r2"
    return None


def score(wrapper, X, y=None, sample_weight=None, execute=None):
    """Score ``wrapper``'s fitted estimator on X and y with ``wrapper.scoring``.

    The scorer calls the wrapper's own post-fit methods, so predictions run
    block by block; the metric is computed on the gathered predictions.
    """
    estimator = wrapper._fitted_estimator()
    scoring = wrapper.scoring
    if scoring is None:
        scoring = _default_scoring(estimator)
    y = materialize(y)
    if scoring is None:
        # The estimator's own score (a clusterer's, a pipeline's) needs X whole.
        X = materialize(X)
        if sample_weight is None:
            return estimator.score(X, y)
        return estimator.score(X, y, sample_weight=sample_weight)
    scorer = check_scoring(estimator, scoring=scoring)
    if sample_weight is None:
        return scorer(wrapper, X, y)
    return scorer(wrapper, X, y, sample_weight=sample_weight)
