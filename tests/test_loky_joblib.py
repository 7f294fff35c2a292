"""postfit's loky pool must not disturb joblib's shared executor."""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed
from numpy.testing import assert_array_equal
from sklearn.ensemble import RandomForestClassifier

from postfit import ParallelPostFit


def test_joblib_parallel_works_after_loky_run():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)

    squares = Parallel(n_jobs=2)(delayed(pow)(i, 2) for i in range(4))
    got = ParallelPostFit(model, backend="loky", n_jobs=2, block_size=50).predict(X)
    assert_array_equal(got, model.predict(X))

    assert Parallel(n_jobs=2)(delayed(pow)(i, 2) for i in range(4)) == squares
    # An estimator's own process-based n_jobs uses joblib's executor too.
    forest = RandomForestClassifier(n_estimators=4, n_jobs=2, random_state=0)
    with_processes = Parallel(n_jobs=2, prefer="processes")(
        delayed(forest.fit)(X, y) for _ in range(2)
    )
    assert len(with_processes) == 2
