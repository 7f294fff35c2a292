"""scikit-learn's estimator checks on ParallelPostFit around several inner estimators."""

from __future__ import annotations

from conftest import listed_cases
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from postfit import ParallelPostFit

WRAPPED = [
    ParallelPostFit(LogisticRegression(), backend="threading", n_jobs=2, block_size=7),
    ParallelPostFit(Ridge(), backend="sequential", block_size=5),
    ParallelPostFit(StandardScaler(), backend="threading", n_jobs=2, block_size=3),
    ParallelPostFit(KMeans(n_clusters=2, n_init=1, random_state=0), block_size=11),
]


def expected_failed_checks(estimator):
    """Return the checks each wrapped estimator is known to fail, with the reason.

    None are known: every check passes around these four estimators.
    """
    return {}


@listed_cases(parametrize_with_checks(WRAPPED, expected_failed_checks=expected_failed_checks))
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
