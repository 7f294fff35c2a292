"""ParallelPostFit errors and warnings: raised once, before any block runs, with a fix."""

from __future__ import annotations

import re
import warnings

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from postfit import ParallelPostFit, wrappers
from postfit.exceptions import BlockError, ColumnOrderWarning


@pytest.fixture(scope="module")
def frame():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X.iloc[:120, :5], y.iloc[:120]


@pytest.fixture(scope="module")
def fitted_on_frame(frame):
    X, y = frame
    return LogisticRegression(max_iter=2000).fit(X, y)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the wrapper starts scoring blocks."""

    def fail(*args, **kwargs):
        raise AssertionError("blocks were scored before the error was raised")

    monkeypatch.setattr(wrappers, "run_in_memory", fail)


# Input checks -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["numpy", "list", "csr"])
def test_wrong_feature_count(fitted_on_frame, frame, kind, no_work):
    X = frame[0].to_numpy()[:, :4]
    X = {"numpy": X, "list": X.tolist(), "csr": sp.csr_matrix(X)}[kind]
    wrapper = ParallelPostFit(fitted_on_frame, backend="threading")
    with pytest.raises(
        ValueError,
        match="X has 4 features, but LogisticRegression is expecting 5 features as input",
    ):
        wrapper.predict(X)


@pytest.mark.parametrize("to_kind", [lambda X: X, pl.from_pandas], ids=["pandas", "polars"])
def test_missing_column(fitted_on_frame, frame, to_kind, no_work):
    X = to_kind(frame[0].drop(columns=["mean area"]))
    with pytest.raises(ValueError, match=r"X is missing 1 column\(s\).*mean area"):
        ParallelPostFit(fitted_on_frame).predict(X)


@pytest.mark.parametrize("to_kind", [lambda X: X, pl.from_pandas], ids=["pandas", "polars"])
def test_extra_column(fitted_on_frame, frame, to_kind, no_work):
    X = frame[0].assign(extra=1.0)
    with pytest.raises(ValueError, match=r"X has 1 column\(s\) that .* not fitted with: extra"):
        ParallelPostFit(fitted_on_frame).predict(to_kind(X))


@pytest.mark.parametrize("backend", ["sequential", "threading", "loky"])
def test_reordered_columns_matched_by_name(fitted_on_frame, frame, backend):
    X = frame[0]
    reordered = X[list(reversed(X.columns))]
    wrapper = ParallelPostFit(fitted_on_frame, backend=backend, n_jobs=2, block_size=11)
    with pytest.warns(ColumnOrderWarning) as record:
        got = wrapper.predict_proba(reordered)
    assert len(record) == 1
    np.testing.assert_allclose(got, fitted_on_frame.predict_proba(X), rtol=1e-12)


@pytest.mark.parametrize("backend", ["sequential", "threading"])
@pytest.mark.parametrize("kind", ["numpy", "list", "csr", "csc", "coo"])
def test_positional_input_warns_once(fitted_on_frame, frame, kind, backend):
    X = frame[0].to_numpy()
    X_kind = {
        "numpy": X,
        "list": X.tolist(),
        "csr": sp.csr_matrix(X),
        "csc": sp.csc_matrix(X),
        "coo": sp.coo_matrix(X),
    }[kind]
    wrapper = ParallelPostFit(fitted_on_frame, backend=backend, n_jobs=2, block_size=10)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = wrapper.predict_proba(X_kind)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1, messages
    assert "does not have valid feature names" in messages[0]
    assert record[0].category is UserWarning
    assert record[0].filename == __file__
    np.testing.assert_allclose(got, fitted_on_frame.predict_proba(frame[0]), rtol=1e-12)


def test_three_dimensional_input(no_work):
    X = np.zeros((4, 2, 3))
    estimator = LogisticRegression().fit(np.eye(6)[:4], [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"X has 3 dimensions \(shape \(4, 2, 3\)\)"):
        ParallelPostFit(estimator).predict(X)


@pytest.mark.parametrize("backend", ["auto", "sequential", "threading", "loky"])
def test_matrix_input_as_the_estimator_takes_it(backend):
    from sklearn.preprocessing import FunctionTransformer

    estimator = LogisticRegression().fit(np.eye(6)[:4], [0, 1, 0, 1])
    with warnings.catch_warnings():
        # NumPy warns that np.matrix is not recommended.
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        X = np.asmatrix(np.eye(6))
        with pytest.raises(TypeError, match="np.matrix"):
            estimator.predict(X)
        with pytest.raises(TypeError, match="np.matrix"):
            ParallelPostFit(estimator, backend=backend, block_size=2).predict(X)
        doubler = FunctionTransformer(lambda rows: rows * 2).fit(X)
        got = ParallelPostFit(doubler, backend=backend, block_size=2).transform(X)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(X) * 2)


@pytest.mark.parametrize("value", [np.array(5.0), np.float64(5.0)])
@pytest.mark.parametrize("fitted_by", ["wrapper", "user"])
def test_single_value_input(no_work, value, fitted_by):
    X, y = np.eye(6)[:4], [0, 1, 0, 1]
    if fitted_by == "wrapper":
        wrapper = ParallelPostFit(LogisticRegression()).fit(X, y)
    else:
        wrapper = ParallelPostFit(LogisticRegression().fit(X, y))
    wrapper.predict(X)
    with pytest.raises(ValueError, match=r"got a single value .*reshape\(X, \(1, -1\)\)"):
        wrapper.predict(value)


def test_unfitted_use(no_work):
    wrapper = ParallelPostFit(LogisticRegression())
    with pytest.raises(NotFittedError, match="Call fit"):
        wrapper.predict(np.zeros((3, 2)))


class _ScaleWithoutUnderscore(BaseEstimator):
    """A fitted estimator whose learned attribute has no trailing underscore."""

    def fit(self, X, y=None):
        self.scale = 2.0
        return self

    def transform(self, X):
        return np.asarray(X) * self.scale


@pytest.mark.parametrize("backend", ["sequential", "threading"])
def test_fitted_estimator_of_other_library_used(backend):
    X = np.arange(12.0).reshape(6, 2)
    estimator = _ScaleWithoutUnderscore().fit(X)
    got = ParallelPostFit(estimator, backend=backend, block_size=2).transform(X)
    np.testing.assert_array_equal(got, estimator.transform(X))


def test_no_estimator():
    with pytest.raises(ValueError, match="got estimator=None"):
        ParallelPostFit().fit(np.zeros((3, 2)), [0, 1, 0])


# Options ----------------------------------------------------------------------


INVALID_OPTIONS = [
    ("backend", "nope", "Invalid backend 'nope'"),
    ("backend", 3, "Invalid backend 3"),
    ("backend", None, "Invalid backend None"),
    ("block_size", 0, "Invalid block_size 0"),
    ("block_size", -5, "Invalid block_size -5"),
    ("block_size", 2.5, "Invalid block_size 2.5"),
    ("block_size", True, "Invalid block_size True"),
    ("block_size", "big", "Invalid block_size 'big'"),
    ("n_jobs", 0, "n_jobs == 0"),
    ("n_jobs", 1.5, "n_jobs must be an int or None, got 1.5"),
    ("n_jobs", True, "n_jobs must be an int or None, got True"),
    ("memory_budget", 0, "memory_budget must be positive, got 0"),
    ("memory_budget", -1, "memory_budget must be positive, got -1"),
    ("memory_budget", "lots", "Invalid memory_budget 'lots'"),
    ("memory_budget", "-2GB", "Invalid memory_budget '-2GB'"),
    ("memory_budget", True, "Invalid memory_budget True"),
    ("progress", "yes", "progress must be True or False, got 'yes'"),
]


@pytest.mark.parametrize(("name", "value", "message"), INVALID_OPTIONS)
def test_invalid_option_on_predict(fitted_on_frame, frame, name, value, message, no_work):
    wrapper = ParallelPostFit(fitted_on_frame, **{name: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        wrapper.predict(frame[0])


@pytest.mark.parametrize(("name", "value", "message"), INVALID_OPTIONS)
def test_invalid_option_after_call(fitted_on_frame, frame, name, value, message):
    # Valid options are remembered between calls; a changed one is checked again.
    wrapper = ParallelPostFit(fitted_on_frame, n_jobs=1)
    wrapper.predict(frame[0])
    wrapper.set_params(**{name: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        wrapper.predict(frame[0])


def test_unfitted_estimator_after_call(fitted_on_frame, frame):
    wrapper = ParallelPostFit(fitted_on_frame)
    wrapper.predict(frame[0])
    wrapper.set_params(estimator=LogisticRegression())
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        wrapper.predict(frame[0])


@pytest.mark.parametrize(("name", "value", "message"), INVALID_OPTIONS[:3])
def test_invalid_option_on_fit(frame, name, value, message):
    wrapper = ParallelPostFit(LogisticRegression(), **{name: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        wrapper.fit(*frame)


@pytest.mark.parametrize("budget", ["512MiB", "2GB", 10**9, "auto", None])
def test_valid_memory_budget(fitted_on_frame, frame, budget):
    got = ParallelPostFit(fitted_on_frame, memory_budget=budget).predict(frame[0])
    np.testing.assert_array_equal(got, fitted_on_frame.predict(frame[0]))


# Errors inside blocks ---------------------------------------------------------


class _FitsClasses(ClassifierMixin, BaseEstimator):
    """A classifier whose fit keeps only the classes and the feature count."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.shape(X)[1]
        return self


class DropsARow(_FitsClasses):
    """Returns one row fewer than it was given, which breaks the row-wise contract."""

    def predict(self, X):
        return np.zeros(len(X) - 1, dtype=int)


class RaisesOnRow(_FitsClasses):
    """Raises KeyError for inputs containing the value -1, to locate failing blocks."""

    def predict(self, X):
        X = np.asarray(X)
        if (X == -1).any():
            raise KeyError("found -1")
        return np.zeros(len(X), dtype=int)


@pytest.mark.parametrize("backend", ["sequential", "threading", "loky"])
def test_block_with_wrong_row_count(backend):
    X = np.zeros((50, 2))
    wrapper = ParallelPostFit(DropsARow().fit(X, [0, 1] * 25), backend=backend, block_size=20)
    with pytest.raises(
        BlockError, match=r"returned 19 rows for block \d+ \(rows \d+ to \d+\), which has 20 rows"
    ):
        wrapper.predict(X)


class ReturnsNoRows(_FitsClasses):
    """Returns a scalar from predict and None from predict_proba."""

    def predict(self, X):
        return np.float64(0.5)

    def predict_proba(self, X):
        return None


@pytest.mark.parametrize("backend", ["auto", "sequential", "threading", "loky"])
@pytest.mark.parametrize(
    ("method", "kind"), [("predict", "float64"), ("predict_proba", "NoneType")]
)
def test_output_without_rows(backend, method, kind):
    X = np.zeros((50, 2))
    wrapper = ParallelPostFit(ReturnsNoRows().fit(X, [0, 1] * 25), backend=backend)
    expected = rf"returned a {kind} without rows for block \d+ \(rows \d+ to \d+\), which has"
    with pytest.raises(BlockError, match=expected):
        getattr(wrapper, method)(X)


@pytest.mark.parametrize("backend", ["sequential", "threading", "loky", "auto"])
def test_estimator_error_keeps_type_and_names_block(backend):
    X = np.zeros((100, 2))
    X[63, 1] = -1
    wrapper = ParallelPostFit(
        RaisesOnRow().fit(X, [0, 1] * 50), backend=backend, n_jobs=2, block_size=10
    )
    with pytest.raises(KeyError, match="found -1") as info:
        wrapper.predict(X)
    notes = getattr(info.value, "__notes__", [])
    assert notes == ["postfit: raised while scoring block 6 (rows 60 to 70)"]


@pytest.mark.parametrize("kind", ["pandas", "numpy", "coo", "csr", "list", "polars"])
def test_empty_input_gives_estimator_own_answer(fitted_on_frame, frame, kind):
    X = frame[0].iloc[:0]
    X = {
        "pandas": X,
        "numpy": X.to_numpy(),
        "coo": sp.coo_matrix(X.to_numpy()),
        "csr": sp.csr_matrix(X.to_numpy()),
        "list": [],
        "polars": pl.from_pandas(X),
    }[kind]
    wrapper = ParallelPostFit(fitted_on_frame, backend="threading")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ValueError) as expected:
            fitted_on_frame.predict(X)
        with pytest.raises(type(expected.value), match=re.escape(str(expected.value)[:40])):
            wrapper.predict(X)


def test_numpy_integer_n_jobs_accepted():
    # Parameter grids built with np.arange hold NumPy integers.
    X = np.arange(40.0).reshape(20, 2)
    y = (X[:, 0] > 20).astype(int)
    model = LogisticRegression().fit(X, y)
    wrapper = ParallelPostFit(model, n_jobs=np.int64(2), backend="threading", block_size=5)
    np.testing.assert_array_equal(wrapper.predict(X), model.predict(X))
    with pytest.raises(ValueError, match="n_jobs"):
        ParallelPostFit(model, n_jobs=np.bool_(True)).predict(X)


def test_fitted_union_of_other_library_used():
    from sklearn.pipeline import FeatureUnion

    X = np.arange(12.0).reshape(6, 2)
    union = FeatureUnion([("scale", _ScaleWithoutUnderscore())]).fit(X)
    got = ParallelPostFit(union, backend="sequential", block_size=2).transform(X)
    np.testing.assert_array_equal(got, union.transform(X))


class _AnswersFitted(_ScaleWithoutUnderscore):
    """An estimator of another library with its own ``__sklearn_is_fitted__``."""

    def __sklearn_is_fitted__(self):
        return hasattr(self, "scale")


class _SubclassKeepingFit(LogisticRegression):
    """A user's subclass of a scikit-learn estimator that keeps its fit and post-fit methods."""

    def describe(self):
        return f"logistic regression with C={self.C}"


class _RuleBasedSubclass(LogisticRegression):
    """A subclass whose own ``predict`` needs no fit."""

    def predict(self, X):
        return (np.asarray(X)[:, 0] > 0).astype(int)


def test_unfitted_subclass_of_sklearn_estimator(no_work):
    with pytest.raises(NotFittedError, match="Call fit"):
        ParallelPostFit(_SubclassKeepingFit()).predict(np.zeros((3, 2)))


def test_unfitted_subclass_with_own_predict_used():
    X = np.array([[1.0, 0.0], [-1.0, 2.0], [3.0, 1.0]])
    got = ParallelPostFit(_RuleBasedSubclass(), backend="sequential", block_size=2).predict(X)
    np.testing.assert_array_equal(got, _RuleBasedSubclass().predict(X))


class _SubclassWithOwnFit(_ScaleWithoutUnderscore, StandardScaler):
    """A subclass of a scikit-learn estimator whose own ``fit`` sets no ``_`` attribute."""


def test_subclass_with_own_fit_used():
    X = np.arange(12.0).reshape(6, 2)
    estimator = _SubclassWithOwnFit().fit(X)
    got = ParallelPostFit(estimator, backend="sequential", block_size=2).transform(X)
    np.testing.assert_array_equal(got, estimator.transform(X))


def test_own_fitted_answer_believed(no_work):
    with pytest.raises(NotFittedError, match="Call fit"):
        ParallelPostFit(_AnswersFitted()).transform(np.zeros((3, 2)))
