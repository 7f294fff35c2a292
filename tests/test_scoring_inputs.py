"""Scoring options, input kinds, laziness, one read per block, and errors before any block runs."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp
from dask.delayed import Delayed
from sklearn.cluster import KMeans
from sklearn.datasets import load_diabetes, load_iris, load_linnerud
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import (
    check_scoring,
    fbeta_score,
    get_scorer,
    log_loss,
    make_scorer,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

import postfit
from postfit import ParallelPostFit
from postfit.exceptions import MaterializedScoringWarning
from postfit.io import _parquet

RTOL = 1e-12
FIVE_METRICS = ["accuracy", "roc_auc_ovr", "neg_log_loss", "f1_macro", "neg_brier_score"]


class CountingLogisticRegression(LogisticRegression):
    """Logistic regression that counts outside calls of its response methods in ``calls``.

    ``predict`` and ``predict_proba`` call ``decision_function`` themselves;
    only the outermost call is counted.
    """

    calls: dict = {}
    depth = 0

    def _counted(self, name, method, X):
        cls = type(self)
        if cls.depth == 0:
            cls.calls[name] = cls.calls.get(name, 0) + 1
        cls.depth += 1
        try:
            return method(X)
        finally:
            cls.depth -= 1

    def predict(self, X):
        return self._counted("predict", super().predict, X)

    def predict_proba(self, X):
        return self._counted("predict_proba", super().predict_proba, X)

    def decision_function(self, X):
        return self._counted("decision_function", super().decision_function, X)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    return model, X, y


@pytest.fixture
def counting_model(iris):
    _, X, y = iris
    CountingLogisticRegression.calls = {}
    model = CountingLogisticRegression(max_iter=1000).fit(X.to_numpy(), y.to_numpy())
    yield model
    CountingLogisticRegression.calls = {}


def _oracle(model, scoring, X, y, **kwargs):
    return check_scoring(model, scoring=scoring)(model, X, y, **kwargs)


def _assert_scores_equal(got, expected):
    if isinstance(expected, dict):
        assert list(got) == list(expected)
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, err_msg=name)
    else:
        assert isinstance(got, float)
        np.testing.assert_allclose(got, expected, rtol=RTOL)


# One pass ----------------------------------------------------------------------


def test_each_response_called_once_per_block(counting_model, iris):
    _, X, y = iris
    scoring = [*FIVE_METRICS, "roc_auc_ovo", "balanced_accuracy", "top_k_accuracy"]
    wrapper = ParallelPostFit(counting_model, scoring=scoring, block_size=15, backend="sequential")
    got = wrapper.score(X.to_numpy(), y.to_numpy())
    n_blocks = 10
    assert CountingLogisticRegression.calls == {
        "predict": n_blocks,
        "predict_proba": n_blocks,
        "decision_function": n_blocks,
    }
    CountingLogisticRegression.calls = {}
    expected = _oracle(counting_model, scoring, X.to_numpy(), y.to_numpy())
    _assert_scores_equal(got, expected)


def test_parquet_blocks_read_once(iris, tmp_path, monkeypatch):
    model, X, y = iris
    path = tmp_path / "iris.parquet"
    X.assign(target=y).to_parquet(path, row_group_size=25)
    reads = []
    original = _parquet.ParquetPart.read_table

    def counting_read(self, columns):
        reads.append((tuple(self.row_groups), tuple(columns or ())))
        return original(self, columns)

    monkeypatch.setattr(_parquet.ParquetPart, "read_table", counting_read)
    wrapper = ParallelPostFit(model, scoring=FIVE_METRICS, block_size=25, backend="threading")
    got = wrapper.score(postfit.io.read_parquet(path), "target")
    assert len(reads) == 6
    assert len({groups for groups, _ in reads}) == 6
    assert all("target" in columns for _, columns in reads)
    _assert_scores_equal(got, _oracle(model, FIVE_METRICS, X, y))


# Scorer forms ------------------------------------------------------------------


def _custom_gap(y_true, y_score):
    """A metric postfit does not know: the mean top-class probability."""
    return float(np.mean(np.max(y_score, axis=1)))


def test_dict_of_scorer_forms(iris):
    model, X, y = iris
    scoring = {
        "f2": make_scorer(fbeta_score, beta=2, average="macro"),
        "loss": make_scorer(
            log_loss, greater_is_better=False, response_method="predict_proba", labels=[0, 1, 2]
        ),
        "auc": make_scorer(
            roc_auc_score,
            response_method=("predict_proba", "decision_function"),
            multi_class="ovr",
        ),
        "gap": make_scorer(_custom_gap, response_method="predict_proba"),
        "mae": "neg_mean_absolute_error",
    }
    for weights in (None, np.linspace(0.5, 2.0, len(X))):
        kwargs = {} if weights is None else {"sample_weight": weights}
        wrapper = ParallelPostFit(model, scoring=scoring, block_size=11)
        got = wrapper.score(X, y, **kwargs)
        _assert_scores_equal(got, _oracle(model, scoring, X, y, **kwargs))
    assert got["loss"] < 0


def test_make_scorer_loss_sign(iris):
    model, X, y = iris
    scorer = make_scorer(mean_absolute_error, greater_is_better=False)
    got = ParallelPostFit(model, scoring=scorer, block_size=7).score(X, y)
    assert got == pytest.approx(scorer(model, X, y), rel=RTOL)
    assert got < 0


def test_tuple_of_names(iris):
    model, X, y = iris
    scoring = ("accuracy", "neg_log_loss")
    got = ParallelPostFit(model, scoring=scoring, block_size=40).score(X, y)
    _assert_scores_equal(got, _oracle(model, list(scoring), X, y))


def test_plain_callable_warns_and_matches(iris):
    model, X, y = iris

    def width_weighted(estimator, X, y):
        return estimator.score(X, y) * X.shape[1]

    wrapper = ParallelPostFit(model, scoring=width_weighted, block_size=7)
    with warnings.catch_warnings():
        # X is already in memory, so nothing is materialised and nothing warns.
        warnings.simplefilter("error", MaterializedScoringWarning)
        got = wrapper.score(X, y)
    assert got == width_weighted(model, X, y)


def test_plain_callable_on_file_warns(iris, tmp_path):
    model, X, y = iris
    path = tmp_path / "iris.parquet"
    X.assign(target=y).to_parquet(path)

    def width_weighted(estimator, X, y):
        return estimator.score(X, y) * X.shape[1]

    wrapper = ParallelPostFit(model, scoring=width_weighted, block_size=7)
    with pytest.warns(MaterializedScoringWarning, match="width_weighted"):
        got = wrapper.score(postfit.read_parquet(path), "target")
    assert got == width_weighted(model, X, y)


def test_callable_mixed_with_names(iris):
    model, X, y = iris
    scoring = {"acc": "accuracy", "plain": lambda est, X, y: float(len(X))}
    wrapper = ParallelPostFit(model, scoring=scoring, block_size=7)
    got = wrapper.score(X, y)
    assert list(got) == ["acc", "plain"]
    assert got["acc"] == get_scorer("accuracy")(model, X, y)
    assert got["plain"] == 150.0


def test_default_scoring_classifier_and_regressor(iris):
    model, X, y = iris
    assert ParallelPostFit(model, block_size=7).score(X, y) == model.score(X, y)
    Xr, yr = load_diabetes(return_X_y=True)
    regressor = LinearRegression().fit(Xr, yr)
    got = ParallelPostFit(regressor, block_size=50).score(Xr, yr)
    np.testing.assert_allclose(got, regressor.score(Xr, yr), rtol=RTOL)
    weights = np.linspace(1, 2, len(yr))
    got = ParallelPostFit(regressor, block_size=50).score(Xr, yr, sample_weight=weights)
    np.testing.assert_allclose(got, regressor.score(Xr, yr, sample_weight=weights), rtol=RTOL)


def test_default_scoring_pipeline_streams(iris):
    _, X, y = iris
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MaterializedScoringWarning)
        got = ParallelPostFit(pipeline, block_size=7).score(X, y)
    assert got == pipeline.score(X, y)


def test_default_scoring_clusterer(iris, tmp_path):
    _, X, _ = iris
    kmeans = KMeans(n_clusters=3, n_init=1, random_state=0).fit(X)
    assert ParallelPostFit(kmeans, block_size=7).score(X) == kmeans.score(X)

    path = tmp_path / "iris.parquet"
    X.to_parquet(path)
    with pytest.warns(MaterializedScoringWarning, match="own score"):
        got = ParallelPostFit(kmeans, block_size=7).score(postfit.read_parquet(path))
    assert got == kmeans.score(X)


def test_weights_only_to_scorers_that_take_them(iris):
    """Several metrics: max_error gets no weights, as in scikit-learn's multi-metric scorer."""
    Xr, yr = load_diabetes(return_X_y=True)
    regressor = LinearRegression().fit(Xr, yr)
    scoring = ["neg_max_error", "r2", "neg_mean_squared_error"]
    weights = np.linspace(1, 3, len(yr))
    got = ParallelPostFit(regressor, scoring=scoring, block_size=50).score(
        Xr, yr, sample_weight=weights
    )
    _assert_scores_equal(got, _oracle(regressor, scoring, Xr, yr, sample_weight=weights))


# Input kinds -------------------------------------------------------------------


def _y_kinds(X, y):
    frame = X.assign(target=y)
    return {
        "ndarray": (X, y.to_numpy()),
        "series": (X, y),
        "list": (X, y.tolist()),
        "frame_column": (frame, "target"),
        "polars_column": (pl.from_pandas(frame), "target"),
    }


@pytest.mark.parametrize("kind", ["ndarray", "series", "list", "frame_column", "polars_column"])
@pytest.mark.parametrize("backend", ["sequential", "threading", "auto"])
def test_in_memory_y_kinds(iris, kind, backend):
    model, X, y = iris
    X_in, y_in = _y_kinds(X, y)[kind]
    # scikit-learn 1.7.2 cannot read the names of a polars 2.0 frame, so it warns
    # that X has no valid feature names, on each block that postfit passes it.
    # scikit-learn 1.9.1 reads them and does not warn.
    features = pl.from_pandas(X) if kind == "polars_column" else X
    with warnings.catch_warnings(record=True) as plain:
        warnings.simplefilter("always")
        model.predict(features)
    wrapper = ParallelPostFit(model, scoring=FIVE_METRICS, block_size=13, backend=backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = wrapper.score(X_in, y_in, sample_weight=np.linspace(1, 2, len(X)))
    assert {str(w.message) for w in caught} == {str(w.message) for w in plain}
    expected = _oracle(model, FIVE_METRICS, X, y, sample_weight=np.linspace(1, 2, len(X)))
    _assert_scores_equal(got, expected)


def test_loky_with_shared_arrays(iris):
    model, X, y = iris
    numpy_model = LogisticRegression(max_iter=1000).fit(X.to_numpy(), y.to_numpy())
    weights = np.linspace(1, 2, len(X))
    wrapper = ParallelPostFit(numpy_model, scoring=FIVE_METRICS, block_size=20, backend="loky")
    got = wrapper.score(X.to_numpy(), y.to_numpy(), sample_weight=weights)
    expected = _oracle(numpy_model, FIVE_METRICS, X.to_numpy(), y.to_numpy(), sample_weight=weights)
    _assert_scores_equal(got, expected)


def test_parquet_y_array_and_weights(iris, tmp_path):
    model, X, y = iris
    path = tmp_path / "iris.parquet"
    X.to_parquet(path, row_group_size=30)
    weights = np.linspace(1, 2, len(X))
    got = ParallelPostFit(model, scoring=FIVE_METRICS, block_size=30).score(
        postfit.io.read_parquet(path), y.to_numpy(), sample_weight=weights
    )
    _assert_scores_equal(got, _oracle(model, FIVE_METRICS, X, y, sample_weight=weights))


def test_csv_target_column(iris, tmp_path):
    model, X, y = iris
    path = tmp_path / "iris.csv"
    X.assign(target=y).to_csv(path, index=False)
    got = ParallelPostFit(model, scoring=FIVE_METRICS, block_size=40).score(
        postfit.io.read_csv(path), "target"
    )
    _assert_scores_equal(got, _oracle(model, FIVE_METRICS, X, y))


@pytest.fixture
def sync_dask():
    with dask.config.set(scheduler="sync"):
        yield


def test_dask_frame_target_column_is_lazy(iris, sync_dask):
    model, X, y = iris
    frame = dd.from_pandas(X.assign(target=y), npartitions=4)
    lazy = ParallelPostFit(model, scoring=FIVE_METRICS).score(frame, "target", execute=False)
    assert isinstance(lazy, Delayed)
    _assert_scores_equal(lazy.compute(), _oracle(model, FIVE_METRICS, X, y))


def test_dask_score_computes_by_default(iris, sync_dask):
    # dask-ml's and Mars's score return a number for lazy inputs unless compute=False.
    model, X, y = iris
    frame = dd.from_pandas(X.assign(target=y), npartitions=4)
    got = ParallelPostFit(model, scoring=FIVE_METRICS).score(frame, "target")
    assert isinstance(got, dict)
    _assert_scores_equal(got, _oracle(model, FIVE_METRICS, X, y))


def test_dask_frame_and_series(iris, sync_dask):
    model, X, y = iris
    weights = pd.Series(np.linspace(1, 2, len(X)))
    got = ParallelPostFit(model, scoring=FIVE_METRICS).score(
        dd.from_pandas(X, npartitions=3),
        dd.from_pandas(y, npartitions=3),
        sample_weight=dd.from_pandas(weights, npartitions=3),
        execute=True,
    )
    _assert_scores_equal(got, _oracle(model, FIVE_METRICS, X, y, sample_weight=weights))


def test_dask_array_rechunks_y(iris, sync_dask):
    _, X, y = iris
    model = LogisticRegression(max_iter=1000).fit(X.to_numpy(), y.to_numpy())
    X_lazy = da.from_array(X.to_numpy(), chunks=(40, 2))
    for y_in in (da.from_array(y.to_numpy(), chunks=25), y.to_numpy()):
        got = ParallelPostFit(model, scoring="neg_log_loss").score(X_lazy, y_in, execute=True)
        expected = get_scorer("neg_log_loss")(model, X.to_numpy(), y)
        np.testing.assert_allclose(got, expected, rtol=RTOL)


def test_execute_false_in_memory_is_lazy(iris, sync_dask):
    model, X, y = iris
    lazy = ParallelPostFit(model, scoring="accuracy", block_size=7).score(X, y, execute=False)
    assert isinstance(lazy, Delayed)
    assert lazy.compute() == get_scorer("accuracy")(model, X, y)
    lazy = ParallelPostFit(model, scoring="accuracy").score(X, y, compute=False)
    assert isinstance(lazy, Delayed)


# Errors before any block runs ------------------------------------------------


def _assert_not_called(model):
    assert CountingLogisticRegression.calls == {}, "a block ran before the error"


def test_unknown_scorer_lists_close_names(counting_model, iris):
    _, X, y = iris
    wrapper = ParallelPostFit(counting_model, scoring=["accuracy", "roc_auc_ovrr"])
    with pytest.raises(ValueError, match=r"'roc_auc_ovrr'.*Did you mean 'roc_auc_ovr'"):
        wrapper.score(X.to_numpy(), y)
    _assert_not_called(counting_model)


def test_y_wrong_length(counting_model, iris):
    _, X, y = iris
    wrapper = ParallelPostFit(counting_model, scoring=FIVE_METRICS)
    with pytest.raises(ValueError, match="y has 149 rows, but X has 150"):
        wrapper.score(X.to_numpy(), y[:-1])
    with pytest.raises(ValueError, match="sample_weight has 3 rows, but X has 150"):
        wrapper.score(X.to_numpy(), y, sample_weight=[1, 2, 3])
    _assert_not_called(counting_model)


def test_missing_target_column(iris, tmp_path):
    model, X, y = iris
    frame = X.assign(target=y)
    wrapper = ParallelPostFit(model, scoring="accuracy")
    with pytest.raises(ValueError, match=r"'targt' not found.*Did you mean 'target'"):
        wrapper.score(frame, "targt")
    path = tmp_path / "iris.parquet"
    frame.to_parquet(path)
    with pytest.raises(ValueError, match=r"'targt' not found"):
        wrapper.score(postfit.io.read_parquet(path), "targt")
    with pytest.raises(ValueError, match=r"'targt' not found"):
        wrapper.score(dd.from_pandas(frame, npartitions=2), "targt")


def test_proba_metric_without_predict_proba(iris):
    _, X, y = iris
    svc = LinearSVC().fit(X, y)
    with pytest.raises(AttributeError, match="'neg_log_loss' needs predict_proba.*LinearSVC"):
        ParallelPostFit(svc, scoring=["accuracy", "neg_log_loss"]).score(X, y)


def test_y_none_with_supervised_metric(counting_model, iris):
    _, X, _ = iris
    with pytest.raises(ValueError, match="y is None"):
        ParallelPostFit(counting_model, scoring="accuracy").score(X.to_numpy())
    _assert_not_called(counting_model)


@pytest.mark.parametrize(
    ("scoring", "error", "match"),
    [
        ([], ValueError, "empty list"),
        (["accuracy", "accuracy"], ValueError, "more than once"),
        (["accuracy", len], ValueError, "must hold scorer names"),
        ({"a": 3}, ValueError, "maps names to scorer names or callables"),
        ({1: "accuracy"}, ValueError, "keys of a scoring dict must be str"),
        (3.5, TypeError, "Invalid scoring 3.5"),
    ],
)
def test_invalid_scoring_forms(counting_model, iris, scoring, error, match):
    _, X, y = iris
    with pytest.raises(error, match=match):
        ParallelPostFit(counting_model, scoring=scoring).score(X.to_numpy(), y)
    _assert_not_called(counting_model)


def test_invalid_pos_label(counting_model, iris):
    _, X, y = iris
    binary = CountingLogisticRegression().fit(X.to_numpy(), y.to_numpy() == 2)
    CountingLogisticRegression.calls = {}
    scorer = make_scorer(fbeta_score, beta=1, pos_label="yes")
    with pytest.raises(ValueError, match="pos_label='yes'"):
        ParallelPostFit(binary, scoring=scorer).score(X.to_numpy(), y == 2)
    _assert_not_called(binary)


def test_weights_to_metric_without_weights():
    Xr, yr = load_diabetes(return_X_y=True)
    regressor = LinearRegression().fit(Xr, yr)
    weights = np.ones(len(yr))
    with pytest.raises(TypeError):
        get_scorer("neg_max_error")(regressor, Xr, yr, sample_weight=weights)
    with pytest.raises(TypeError, match="max_error, which takes no sample_weight"):
        ParallelPostFit(regressor, scoring="neg_max_error").score(Xr, yr, sample_weight=weights)


def test_log_loss_with_class_missing_from_y(iris):
    model, X, y = iris
    keep = (y != 2).to_numpy()
    with pytest.raises(ValueError):
        get_scorer("neg_log_loss")(model, X[keep], y[keep])
    with pytest.raises(ValueError, match=r"missing from y: \[2\]"):
        ParallelPostFit(model, scoring="neg_log_loss", block_size=20).score(X[keep], y[keep])


def test_empty_input_raises_like_sklearn(iris):
    model, X, y = iris
    with pytest.raises(ValueError):
        get_scorer("accuracy")(model, X[:0], y[:0])
    with pytest.raises(ValueError):
        ParallelPostFit(model, scoring="accuracy").score(X[:0], y[:0])


def test_multioutput_regression_matches_sklearn():
    X, y = load_linnerud(return_X_y=True)
    model = LinearRegression().fit(X, y)
    scoring = {
        "r2": "r2",
        "explained_variance": "explained_variance",
        "rmse": "neg_root_mean_squared_error",
        "median": "neg_median_absolute_error",
        "r2_variance_weighted": make_scorer(r2_score, multioutput="variance_weighted"),
        "weighted_mae": make_scorer(mean_absolute_error, multioutput=[0.2, 0.3, 0.5]),
    }
    raw = {"r2_raw": make_scorer(r2_score, multioutput="raw_values")}
    for weights in (None, np.linspace(1, 2, len(y))):
        kwargs = {} if weights is None else {"sample_weight": weights}
        wrapper = ParallelPostFit(model, scoring={**scoring, **raw}, block_size=3)
        got = wrapper.score(X, y, **kwargs)
        expected = _oracle(model, {**scoring, **raw}, X, y, **kwargs)
        for name in scoring:
            assert isinstance(got[name], float), name
            np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, err_msg=name)
        assert got["r2_raw"].shape == (3,)
        np.testing.assert_allclose(got["r2_raw"], expected["r2_raw"], rtol=RTOL)


def test_sparse_input(iris):
    _, X, y = iris
    X_sparse = sp.csr_matrix(X.to_numpy())
    model = LogisticRegression(max_iter=1000).fit(X_sparse, y)
    got = ParallelPostFit(model, scoring=FIVE_METRICS, block_size=16).score(X_sparse, y)
    _assert_scores_equal(got, _oracle(model, FIVE_METRICS, X_sparse, y))


def test_parquet_feature_count_checked_first(iris, tmp_path):
    _, X, y = iris
    model = CountingLogisticRegression(max_iter=1000).fit(X.to_numpy()[:, :3], y)
    CountingLogisticRegression.calls = {}
    path = tmp_path / "iris.parquet"
    X.assign(target=y).to_parquet(path)
    wrapper = ParallelPostFit(model, scoring="accuracy")
    with pytest.raises(ValueError, match="4 feature columns .* fitted with 3 features"):
        wrapper.score(postfit.io.read_parquet(path), "target")
    _assert_not_called(model)
