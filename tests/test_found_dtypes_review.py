"""Cases found by a review of unusual in-memory inputs against the plain estimator.

Each test failed before its fix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler, StandardScaler

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


BACKENDS = ["sequential", "threading", "loky"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block_size", [7, 100])
def test_fresh_output_index_kept(backend, block_size):
    # The vectorizer's sparse output has no index, so the SVD's frame has a RangeIndex.
    docs = pd.Series(
        ["apple banana", "cherry date egg", "banana cherry", "egg apple"] * 5,
        index=np.arange(20) * 10 + 1000,
    )
    pipe = make_pipeline(TfidfVectorizer(), TruncatedSVD(2, random_state=0)).fit(docs)
    pipe[-1].set_output(transform="pandas")
    expected = pipe.transform(docs)

    got = ParallelPostFit(pipe, backend=backend, block_size=block_size, n_jobs=2).transform(docs)

    pd.testing.assert_frame_equal(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block_size", [1, 3, 100])
def test_reset_index_output_kept(backend, block_size):
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]}, index=[40, 10, 30, 20])
    transformer = FunctionTransformer(lambda frame: frame.reset_index(drop=True)).fit(X)

    got = ParallelPostFit(transformer, backend=backend, block_size=block_size).transform(X)

    pd.testing.assert_frame_equal(got, transformer.transform(X))


@pytest.mark.parametrize("backend", BACKENDS)
def test_own_output_index_kept(backend):
    X = pd.DataFrame({"key": [7, 3, 9, 1], "a": [1.0, 2.0, 3.0, 4.0]}, index=[40, 10, 30, 20])
    transformer = FunctionTransformer(lambda frame: frame.set_index("key")).fit(X)

    got = ParallelPostFit(transformer, backend=backend, block_size=3).transform(X)

    pd.testing.assert_frame_equal(got, transformer.transform(X))


def test_loky_single_block_output_is_plain_array():
    X = np.random.default_rng(0).normal(size=(30, 2)) > 0
    transformer = FunctionTransformer().fit(X)

    got = ParallelPostFit(transformer, backend="loky", block_size=1000, n_jobs=2).transform(X)

    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, transformer.transform(X))
