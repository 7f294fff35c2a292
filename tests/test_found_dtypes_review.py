"""Cases found by a review of unusual in-memory inputs against the plain estimator.

Each test failed before its fix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from sklearn.preprocessing import MaxAbsScaler, StandardScaler

from postfit import ParallelPostFit

# More rows than the automatic backend's direct path takes, so that it probes first.
PROBED_ROWS = 20_000


def _rows(kind):
    X = np.random.default_rng(0).normal(loc=5.0, scale=3.0, size=(PROBED_ROWS, 4))
    if kind == "fortran":
        return np.asfortranarray(X)
    if kind == "float32":
        return X.astype(np.float32)
    if kind == "pandas":
        return pd.DataFrame(X, columns=list("abcd"))
    return X


@pytest.mark.parametrize("estimator", [StandardScaler(copy=False), MaxAbsScaler(copy=False)])
@pytest.mark.parametrize("kind", ["c_order", "fortran", "float32", "pandas"])
def test_auto_in_place_transform_once(estimator, kind):
    X = _rows(kind)
    estimator.fit(X.copy())
    expected = estimator.transform(X.copy())

    got = ParallelPostFit(estimator, n_jobs=2).transform(X)

    assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6)
