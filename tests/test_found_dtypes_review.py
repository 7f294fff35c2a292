"""Cases found by a review of unusual in-memory inputs against the plain estimator.

Each test failed before its fix, some of them on a first fix that a second
review checked.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import BernoulliRBM
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    OneHotEncoder,
    StandardScaler,
)

import postfit
from postfit import ParallelPostFit
from postfit.exceptions import RandomPerCallWarning

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
    # The plain call may change its input in place: X must end up as that copy does.
    changed = X.copy()
    expected = estimator.transform(changed)

    got = ParallelPostFit(estimator, n_jobs=2).transform(X)

    assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6)
    assert_allclose(np.asarray(X), np.asarray(changed), rtol=1e-6)


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


def _frame_of_two():
    return pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]})


@pytest.mark.parametrize("backend", BACKENDS)
def test_unvalidated_function_gets_columns_as_given(backend):
    transformer = FunctionTransformer(lambda frame: frame * 1.0).fit(_frame_of_two())
    X = _frame_of_two()[["b", "a"]].assign(c=[7.0, 8.0, 9.0])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ParallelPostFit(transformer, backend=backend, block_size=2).transform(X)

    pd.testing.assert_frame_equal(got, transformer.transform(X))


@pytest.mark.parametrize("backend", BACKENDS)
def test_unvalidated_function_any_width(backend):
    transformer = FunctionTransformer(np.log1p).fit(np.ones((4, 2)))
    X = np.arange(30.0).reshape(10, 3)

    got = ParallelPostFit(transformer, backend=backend, block_size=4).transform(X)

    np.testing.assert_array_equal(got, transformer.transform(X))


def _pipeline_picking_by_name():
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"num": rng.normal(size=30), "cat": rng.choice(["a", "b"], 30)})
    y = rng.integers(0, 2, 30)
    picker = ColumnTransformer([("n", StandardScaler(), ["num"]), ("c", OneHotEncoder(), ["cat"])])
    return make_pipeline(picker, LogisticRegression()).fit(X, y), X


@pytest.mark.parametrize("kind", ["list", "object_array", "int_columns"])
def test_positional_input_to_named_columns_raises(kind):
    pipe, X = _pipeline_picking_by_name()
    if kind == "list":
        positional = X.to_numpy().tolist()
    elif kind == "object_array":
        positional = X.to_numpy()
    else:
        positional = X.set_axis([0, 1], axis=1)

    with pytest.raises(ValueError, match="columns using strings is only supported for dataframes"):
        ParallelPostFit(pipe, backend="sequential", block_size=7).predict(positional)


def test_string_rows_rejected_as_plain():
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [2.0, 0.0, 1.0]})
    model = LinearRegression().fit(X, [1.0, 2.0, 3.0])
    rows = [["1.5", "2.0"], ["0.5", "1.0"]]

    # Both calls warn that the rows lack the fitted feature names.
    expected_warning = pytest.warns(UserWarning, match="valid feature names")
    with expected_warning, pytest.raises(ValueError, match="arrays of bytes/strings"):
        model.predict(rows)
    expected_warning = pytest.warns(UserWarning, match="valid feature names")
    with expected_warning, pytest.raises(ValueError, match="arrays of bytes/strings"):
        ParallelPostFit(model, backend="sequential").predict(rows)


def test_masked_array_on_loky():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(21, 3))
    X = np.ma.masked_array(data, mask=data > 1.5)
    model = LogisticRegression().fit(data, data[:, 0] > 0)

    got = ParallelPostFit(model, backend="loky", block_size=7, n_jobs=2).predict_proba(X)

    np.testing.assert_allclose(got, model.predict_proba(X), rtol=1e-12)


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
@pytest.mark.parametrize("strategy", ["stratified", "uniform"])
@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_random_dummy_scored_in_one_call(backend, strategy, method):
    X = np.zeros((5_000, 2))
    y = np.arange(5_000) % 4
    model = DummyClassifier(strategy=strategy, random_state=0).fit(X, y)

    got = getattr(ParallelPostFit(model, backend=backend, block_size=5), method)(X)

    np.testing.assert_array_equal(got, getattr(model, method)(X))


def test_rbm_score_samples_in_one_call():
    X = np.random.default_rng(0).random((50, 6))
    model = BernoulliRBM(n_components=2, random_state=0).fit(X)
    expected = copy.deepcopy(model).score_samples(X)

    got = ParallelPostFit(copy.deepcopy(model), backend="threading", block_size=5)
    got = got.score_samples(X)

    np.testing.assert_array_equal(got, expected)


def test_random_dummy_on_file_warns(tmp_path):
    X = pd.DataFrame({"a": np.zeros(20), "b": np.ones(20)})
    model = DummyClassifier(strategy="uniform", random_state=0).fit(X, np.arange(20) % 2)
    X.to_parquet(tmp_path / "rows.parquet")

    with pytest.warns(
        RandomPerCallWarning,
        match="DummyClassifier draws new random numbers in each call of predict",
    ):
        got = ParallelPostFit(model, block_size=5).predict(
            postfit.read_parquet(tmp_path / "rows.parquet")
        )

    assert got.shape == (20,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_named_frame_on_unnamed_fit_warns_once(backend):
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(30, 2)), columns=["a", "b"])
    scaler = StandardScaler().fit(X.to_numpy())
    with pytest.warns(UserWarning, match="fitted without feature names"):
        expected = scaler.transform(X)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ParallelPostFit(scaler, backend=backend, block_size=7, n_jobs=2).transform(X)

    assert [str(w.message) for w in caught] == [
        "X has feature names, but StandardScaler was fitted without feature names"
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_duplicate_names_on_unnamed_fit_raise():
    X = pd.DataFrame(np.ones((4, 2)), columns=["a", "a"])
    scaler = StandardScaler().fit(X.to_numpy())

    with pytest.raises(ValueError, match="duplicate column names: 'a' 2 times"):
        ParallelPostFit(scaler, backend="sequential", block_size=2).transform(X)


@pytest.mark.parametrize("wrap", ["search", "one_vs_rest", "voting"])
def test_random_dummy_in_meta_estimator_in_one_call(wrap):
    from sklearn.ensemble import VotingClassifier
    from sklearn.model_selection import GridSearchCV
    from sklearn.multiclass import OneVsRestClassifier

    X = np.zeros((600, 2))
    y = np.arange(600) % 3
    dummy = DummyClassifier(strategy="stratified", random_state=0)
    if wrap == "search":
        model = GridSearchCV(dummy, {"strategy": ["stratified"]}, cv=2)
    elif wrap == "one_vs_rest":
        model = OneVsRestClassifier(dummy)
    else:
        model = VotingClassifier([("a", dummy)])
    model.fit(X, y)

    got = ParallelPostFit(model, backend="threading", block_size=50).predict(X)

    np.testing.assert_array_equal(got, model.predict(X))


class _ReadsColumnByName(BaseEstimator):
    """Another library's regressor, fitted without feature names, that reads column "a"."""

    def fit(self, X, y):
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        return np.asarray(X["a"], dtype=float)


@pytest.mark.parametrize("backend", BACKENDS)
def test_other_library_reading_names_gets_frame(backend):
    X = pd.DataFrame(np.random.default_rng(0).random((30, 3)), columns=list("abc"))
    model = _ReadsColumnByName().fit(X, np.zeros(30))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ParallelPostFit(model, backend=backend, block_size=7, n_jobs=2).predict(X)

    np.testing.assert_array_equal(got, model.predict(X))


# NumPy warns that np.matrix is not recommended each time one is made.
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["masked", "matrix", "record"])
def test_output_subclass_kept(backend, kind):
    data = np.arange(40.0).reshape(20, 2)
    if kind == "masked":
        X = np.ma.masked_array(data, mask=data % 7 == 0)
    elif kind == "matrix":
        X = np.asmatrix(data)
    else:
        X = np.rec.fromarrays([data[:, 0], data[:, 1]], names="a,b")
    transformer = FunctionTransformer(lambda rows: rows).fit(X)
    expected = transformer.transform(X)

    got = ParallelPostFit(transformer, backend=backend, block_size=6, n_jobs=2).transform(X)

    assert type(got) is type(expected)
    np.testing.assert_array_equal(got, expected)
    if kind == "masked":
        np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(expected))
