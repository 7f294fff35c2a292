"""Scoring and Incremental cases that a review found wrong, each checked against scikit-learn."""

from __future__ import annotations

import warnings

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs, make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.metrics import (
    explained_variance_score,
    get_scorer,
    get_scorer_names,
    make_scorer,
    mean_squared_error,
    r2_score,
)

from postfit import Incremental, ParallelPostFit
from postfit.exceptions import MaterializedScoringWarning


@pytest.fixture(scope="module")
def classified():
    X, y = make_classification(200, n_features=4, random_state=0)
    return LogisticRegression().fit(X, y), X, y


@pytest.fixture(scope="module")
def regressed():
    X, y = make_regression(200, n_features=4, random_state=0)
    y = np.abs(y) + 1.0
    return LinearRegression().fit(X, y), X, y


def _unknown_chunks(X):
    """Return X as a Dask Array whose row chunks have unknown sizes."""
    lazy = da.from_array(X, chunks=(50,) + X.shape[1:])
    return lazy[da.from_array(np.ones(len(X), bool), chunks=50)]


# Dask inputs ------------------------------------------------------------------


@pytest.mark.parametrize("form", ["default", "callable"])
def test_dask_score_without_y(form):
    X, _ = make_blobs(300, centers=3, random_state=0)
    model = KMeans(3, n_init=2, random_state=0).fit(X)
    scoring = None if form == "default" else (lambda estimator, X, y: estimator.score(X))
    wrapper = ParallelPostFit(model, scoring=scoring)
    with warnings.catch_warnings():
        # The estimator's own score needs X whole, which postfit warns about.
        warnings.simplefilter("ignore", MaterializedScoringWarning)
        got = wrapper.score(da.from_array(X, chunks=50), execute=True)
    assert got == pytest.approx(model.score(X), rel=1e-12)


def test_unknown_chunks_with_memory_y_message(classified):
    model, X, y = classified
    wrapper = ParallelPostFit(model, scoring="accuracy")
    with pytest.raises(TypeError, match=r"Dask Array whose chunk sizes.*compute_chunk_sizes"):
        wrapper.score(_unknown_chunks(X), y)


def test_dask_y_of_other_length(classified):
    model, X, y = classified
    wrapper = ParallelPostFit(model, scoring="accuracy")
    short = da.from_array(y[:150], chunks=50)
    with pytest.raises(ValueError, match="y has 150 rows, but X has 200"):
        wrapper.score(da.from_array(X, chunks=50), short)


# Weights and metric arguments ---------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in [
            "accuracy",
            "neg_log_loss",
            "neg_brier_score",
            "d2_log_loss_score",
            "d2_brier_score",
            "neg_mean_squared_error",
            "r2",
        ]
        if n in get_scorer_names()
    ],
)
def test_zero_weights_raise_as_sklearn(classified, name):
    model, X, y = classified
    weights = np.zeros(len(X))
    with pytest.raises(Exception) as expected:  # noqa: PT011 - the type is scikit-learn's
        get_scorer(name)(model, X, y, sample_weight=weights)
    wrapper = ParallelPostFit(model, scoring=name, block_size=9, backend="sequential")
    # scikit-learn 1.9 raises a ValueError, and older versions a ZeroDivisionError.
    with pytest.raises(type(expected.value), match="at least one non-zero"):
        wrapper.score(X, y, sample_weight=weights)


def test_keywords_metric_takes_weights(classified):
    model, X, y = classified

    def weighted_accuracy(y_true, y_pred, **kwargs):
        return float(np.average(y_true == y_pred, weights=kwargs.get("sample_weight")))

    scorer = make_scorer(weighted_accuracy)
    weights = np.random.default_rng(0).random(len(X))
    expected = scorer(model, X, y, sample_weight=weights)
    got = ParallelPostFit(model, scoring=scorer, block_size=9).score(X, y, sample_weight=weights)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("metric", [r2_score, mean_squared_error, explained_variance_score])
@pytest.mark.parametrize("weights", [[1.0], [0.2, 0.3, 0.5]])
def test_custom_output_weights_checked(regressed, metric, weights):
    model, X, y = regressed
    scorer = make_scorer(metric, multioutput=weights)
    with pytest.raises(ValueError) as expected:  # noqa: PT011 - the message is compared
        scorer(model, X, y)
    wrapper = ParallelPostFit(model, scoring=scorer, block_size=9, backend="sequential")
    with pytest.raises(ValueError) as got:  # noqa: PT011 - the message is compared
        wrapper.score(X, y)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("name", ["r2", "explained_variance"])
@pytest.mark.parametrize("block_size", [1, 3, 7])
def test_moments_of_far_targets(name, block_size):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = 1e9 + 100 * rng.normal(size=120)
    model = LinearRegression().fit(X, y + rng.normal(size=120))
    weights = rng.random(120)
    expected = get_scorer(name)(model, X, y, sample_weight=weights)
    wrapper = ParallelPostFit(model, scoring=name, block_size=block_size, backend="sequential")
    got = wrapper.score(X, y, sample_weight=weights)
    assert got == pytest.approx(expected, rel=0, abs=1e-14)


@pytest.mark.parametrize(
    "name", [n for n in ["neg_log_loss", "d2_log_loss_score"] if n in get_scorer_names()]
)
def test_nan_labels_message(classified, name):
    model, X, y = classified
    labels = y.astype(float)
    labels[3] = np.nan
    with warnings.catch_warnings(), pytest.raises(ValueError, match="Input y contains NaN"):
        # scikit-learn casts the NaN to an integer on the way, with a RuntimeWarning.
        warnings.simplefilter("ignore", RuntimeWarning)
        get_scorer(name)(model, X, labels)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        ParallelPostFit(model, scoring=name, block_size=9).score(X, labels)


def test_single_value_y_message(classified):
    model, X, _ = classified
    with pytest.raises(ValueError, match=r"y is a single value \(4\).*name \(a string\)"):
        ParallelPostFit(model).score(X, 4)


# Incremental --------------------------------------------------------------------


def _loop(X, y, block_size, **fit_params):
    """Train SGDClassifier with partial_fit over consecutive blocks, by hand."""
    model = SGDClassifier(random_state=0)
    for start in range(0, len(X), block_size):
        rows = slice(start, start + block_size)
        model.partial_fit(X[rows], y[rows], classes=np.unique(y), **fit_params)
    return model


@pytest.fixture(scope="module")
def training():
    return make_classification(1000, n_features=4, random_state=0)


def test_block_size_rechunks_unknown_chunks(training):
    X, y = training
    wrapper = Incremental(SGDClassifier(random_state=0), shuffle_blocks=False, block_size=200)
    wrapper.fit(_unknown_chunks(X), y)
    np.testing.assert_array_equal(wrapper.estimator_.coef_, _loop(X, y, 200).coef_)


def test_scalar_sample_weight_goes_whole(training):
    X, y = training
    wrapper = Incremental(SGDClassifier(random_state=0), shuffle_blocks=False, block_size=100)
    wrapper.fit(X, y, sample_weight=2.0)
    expected = _loop(X, y, 100, sample_weight=2.0)
    np.testing.assert_array_equal(wrapper.estimator_.coef_, expected.coef_)


@pytest.mark.parametrize(
    ("validation", "message"),
    [
        ({}, "y_val is None"),
        ({"y_val": np.zeros(10)}, "y_val has 10 rows, but X_val has 200"),
        ({"y_val": np.zeros(200), "sample_weight_val": np.ones(3)}, "sample_weight_val has 3"),
        ({"y_val": "label"}, "y_val='label' names a column, but X_val has no column names"),
        ({"y_val": np.zeros(200), "sample_weight_val": 2.0}, "sample_weight_val is a single"),
    ],
)
def test_validation_checked_before_training(training, monkeypatch, validation, message):
    X, y = training
    calls = []
    monkeypatch.setattr(SGDClassifier, "partial_fit", lambda self, *a, **k: calls.append(1))
    wrapper = Incremental(SGDClassifier(), block_size=100)
    with pytest.raises(ValueError, match=message):
        wrapper.fit(X[:800], y[:800], X_val=X[800:], **validation)
    assert calls == []


@pytest.mark.parametrize("kind", ["array", "frame"])
def test_classes_from_one_column_dask_y(training, kind):
    X, y = training
    if kind == "array":
        lazy_X = da.from_array(X, chunks=100)
        lazy_y = da.from_array(y.reshape(-1, 1), chunks=100)
    else:
        lazy_X = dd.from_pandas(pd.DataFrame(X, columns=list("abcd")), npartitions=10)
        lazy_y = dd.from_pandas(pd.DataFrame({"target": y}), npartitions=10)
    wrapper = Incremental(SGDClassifier(random_state=0), shuffle_blocks=False)
    with warnings.catch_warnings():
        # scikit-learn warns that a one-column y is raveled.
        warnings.simplefilter("ignore")
        wrapper.fit(lazy_X, lazy_y)
    np.testing.assert_array_equal(wrapper.classes_, [0, 1])


@pytest.mark.parametrize("weighted", [False, True])
def test_explained_variance_of_one_row(regressed, weighted):
    model, X, y = regressed
    kwargs = {"sample_weight": np.array([2.0])} if weighted else {}
    expected = get_scorer("explained_variance")(model, X[:1], y[:1], **kwargs)
    wrapper = ParallelPostFit(model, scoring="explained_variance")
    assert wrapper.score(X[:1], y[:1], **kwargs) == expected
