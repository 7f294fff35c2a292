"""Property-based tests: any shape, dtype, block size and backend gives the plain output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _oracle import assert_same_output
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from postfit import ParallelPostFit

DTYPES = [np.float64, np.float32, np.int64, np.int32]
# Values kept in a range where a scaler's arithmetic does not overflow float32.
ELEMENTS = st.integers(-1000, 1000)


@st.composite
def inputs(draw):
    n_features = draw(st.integers(1, 5))
    n_rows = draw(st.integers(0, 60))
    dtype = draw(st.sampled_from(DTYPES))
    X = draw(arrays(dtype, (n_rows, n_features), elements=ELEMENTS))
    if draw(st.booleans()):
        X = np.asfortranarray(X)
    as_frame = draw(st.booleans())
    return X, as_frame


def _training_data(n_features):
    rng = np.random.default_rng(0)
    X = rng.integers(-1000, 1000, size=(50, n_features)).astype(np.float64)
    return X, (X[:, 0] > 0).astype(int)


ESTIMATORS = {
    "scaler": (StandardScaler, "transform", False),
    "min_max": (MinMaxScaler, "transform", False),
    "linear": (LinearRegression, "predict", False),
    "tree": (lambda: DecisionTreeClassifier(max_depth=3, random_state=0), "predict_proba", True),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=inputs(),
    name=st.sampled_from(list(ESTIMATORS)),
    block_size=st.one_of(st.integers(1, 70), st.just("auto")),
    backend=st.sampled_from(["sequential", "threading", "auto"]),
    n_jobs=st.sampled_from([1, 2, 3, -1]),
)
def test_same_output_as_plain_estimator(data, name, block_size, backend, n_jobs):
    X, as_frame = data
    make, method, exact = ESTIMATORS[name]
    X_train, y_train = _training_data(X.shape[1])
    if as_frame:
        columns = [f"c{i}" for i in range(X.shape[1])]
        X_train = pd.DataFrame(X_train, columns=columns)
        X = pd.DataFrame(X, columns=columns, index=np.arange(len(X))[::-1] * 2)
    estimator = make().fit(X_train, y_train)
    wrapper = ParallelPostFit(estimator, backend=backend, n_jobs=n_jobs, block_size=block_size)

    try:
        expected = getattr(estimator, method)(X)
    except ValueError as exc:
        with pytest.raises(type(exc)):
            getattr(wrapper, method)(X)
        return
    got = getattr(wrapper, method)(X)
    assert_same_output(got, expected, exact=exact)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=12),
    order_seed=st.integers(0, 2**16),
)
def test_collector_any_finish_order(sizes, order_seed):
    from postfit._blocks import OutputCollector

    bounds = np.cumsum([0, *sizes])
    n = int(bounds[-1])
    full = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    collector = OutputCollector(n)
    order = np.random.default_rng(order_seed).permutation(len(sizes))
    for i in order:
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        collector.add(int(i), lo, hi, full[lo:hi])
    np.testing.assert_array_equal(collector.result(), full)
