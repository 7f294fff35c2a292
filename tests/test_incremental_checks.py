"""scikit-learn's estimator checks on Incremental around several inner estimators."""

from __future__ import annotations

import pytest
from conftest import listed_cases
from sklearn.cluster import MiniBatchKMeans
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.naive_bayes import MultinomialNB
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from postfit import Incremental

ESTIMATORS = [
    Incremental(SGDClassifier(random_state=0), random_state=0, block_size=20),
    Incremental(SGDRegressor(random_state=0), random_state=0, max_iter=2),
    Incremental(MultinomialNB(), random_state=0, max_iter=2),
    Incremental(StandardScaler(), random_state=0, block_size=7),
    Incremental(MiniBatchKMeans(n_clusters=3, n_init=1, random_state=0), random_state=0),
]


# MiniBatchKMeans is scored with its own score, which needs X whole; postfit
# warns about that, and these checks call score on purpose.
@pytest.mark.filterwarnings("ignore::postfit.exceptions.MaterializedScoringWarning")
@listed_cases(parametrize_with_checks(ESTIMATORS))
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
