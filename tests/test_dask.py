"""Dask collections in, lazy Dask collections out, on Dask's local schedulers.

The oracle is the plain estimator's output on the whole computed input. Lazy
results are also checked against their own declared metadata: type, dtype,
width, columns, index, divisions and chunk sizes.
"""

from __future__ import annotations

import importlib
import math
import sys

import cloudpickle
import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from dask_fixtures import scoring_tasks
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.kernel_approximation import RBFSampler
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
from sklearn.metrics import accuracy_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

import postfit._dask
from postfit import ParallelPostFit
from postfit._dask import MERGED_CHUNK_MAX_BYTES, merged_row_chunks
from postfit.backends import _REGISTRY, get_backend
from postfit.exceptions import ColumnOrderWarning

RTOL = 1e-12


# Helpers ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_default_client(monkeypatch):
    """Hide default distributed clients that other test modules left open.

    These tests are about Dask's local schedulers, and the lazy route
    scatters the model to a default client when one exists. distributed
    keeps its default clients in the private ``_global_clients`` dict.
    """
    if "distributed" in sys.modules:
        import distributed.client

        monkeypatch.setattr(distributed.client, "_global_clients", {})


def _compute_chunks(lazy):
    """Return each chunk or partition of a lazy result, computed on its own."""
    parts = lazy.to_delayed()
    if isinstance(lazy, da.Array):
        parts = parts.ravel()
    return list(dask.compute(*parts))


def _assert_values(actual, expected):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    if expected.dtype.kind in "fc":
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0)
    else:
        np.testing.assert_array_equal(actual, expected)


def assert_lazy_eq(lazy, expected, like):
    """Check a lazy result against the plain estimator's output and the lazy input ``like``.

    Checks the collection type, that every chunk computes to the declared
    meta (type, dtype, width, columns), the row chunks or divisions and
    index of the input, and the values.
    """
    if isinstance(like, da.Array):
        assert isinstance(lazy, da.Array)
        assert lazy.ndim == np.ndim(expected)
        assert lazy.dtype == expected.dtype
        assert lazy.shape[1:] == expected.shape[1:]
        assert type(lazy._meta) is type(expected)
        _assert_same_lengths(lazy.chunks[0], like.chunks[0])
    else:
        assert isinstance(lazy, dd.Series if np.ndim(expected) == 1 else dd.DataFrame)
        assert lazy.divisions == like.divisions
        assert lazy.npartitions == like.npartitions

    # Outputs have one chunk per row chunk, whatever the input's column chunks.
    rows_like = like.rechunk({1: -1}) if isinstance(like, da.Array) and like.ndim == 2 else like
    input_chunks = _compute_chunks(rows_like)
    for chunk, input_chunk in zip(_compute_chunks(lazy), input_chunks, strict=True):
        assert type(chunk) is type(lazy._meta)
        assert chunk.shape[0] == input_chunk.shape[0]
        if isinstance(lazy, da.Array):
            assert chunk.dtype == lazy.dtype
            assert chunk.shape[1:] == expected.shape[1:]
        elif isinstance(lazy, dd.Series):
            assert chunk.dtype == lazy.dtype
            assert chunk.name == lazy.name
            assert chunk.index.equals(input_chunk.index)
        else:
            assert list(chunk.columns) == list(lazy.columns)
            assert chunk.dtypes.equals(lazy.dtypes)
            assert chunk.index.equals(input_chunk.index)

    computed = lazy.compute()
    if isinstance(like, (dd.DataFrame, dd.Series)):
        assert computed.index.equals(like.index.compute())
    if sp.issparse(expected):
        assert sp.issparse(computed)
        computed, expected = computed.toarray(), expected.toarray()
    _assert_values(computed, expected)


def _assert_same_lengths(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert (math.isnan(a) and math.isnan(e)) or a == e


def _iris():
    X, y = load_iris(return_X_y=True)
    return X, y


def _frame(X, index=None):
    columns = [f"x{i}" for i in range(X.shape[1])]
    return pd.DataFrame(X, columns=columns, index=index)


# Every method × input kind -------------------------------------------------------

CASES = [
    ("logistic", "predict"),
    ("logistic", "predict_proba"),
    ("logistic", "predict_log_proba"),
    ("logistic", "decision_function"),
    ("ridge", "predict"),
    ("pca", "transform"),
    ("isolation", "score_samples"),
    ("isolation", "decision_function"),
]


def _fitted(name, X, y):
    estimators = {
        "logistic": LogisticRegression(max_iter=1000),
        "ridge": Ridge(),
        "pca": PCA(n_components=3),
        "isolation": IsolationForest(n_estimators=10, random_state=0),
    }
    target = y.astype(float) if name == "ridge" else y
    return estimators[name].fit(X, target)


@pytest.mark.parametrize("fit_on_frame", [False, True], ids=["fit-array", "fit-frame"])
@pytest.mark.parametrize(("name", "method"), CASES)
def test_dask_array_matches_plain(name, method, fit_on_frame):
    X, y = _iris()
    estimator = _fitted(name, _frame(X) if fit_on_frame else X, y)
    dX = da.from_array(X, chunks=(40, 4))
    wrapper = ParallelPostFit(estimator)

    if fit_on_frame:
        with pytest.warns(UserWarning, match="does not have valid feature names"):
            lazy = getattr(wrapper, method)(dX)
        expected = getattr(estimator, method)(_frame(X))
    else:
        lazy = getattr(wrapper, method)(dX)
        expected = getattr(estimator, method)(X)
    assert_lazy_eq(lazy, expected, dX)


@pytest.mark.parametrize(("name", "method"), CASES)
def test_dask_frame_matches_plain(name, method):
    X, y = _iris()
    df = _frame(X, index=pd.Index(np.arange(len(X)) * 3 + 7, name="row"))
    estimator = _fitted(name, df, y)
    ddf = dd.from_pandas(df, npartitions=4)

    lazy = getattr(ParallelPostFit(estimator), method)(ddf)

    expected = getattr(estimator, method)(df)
    assert_lazy_eq(lazy, expected, ddf)
    if expected.ndim == 2:
        assert list(lazy.columns) == _expected_columns(estimator, method, expected.shape[1])


def _expected_columns(estimator, method, width):
    if method in ("predict_proba", "predict_log_proba", "decision_function"):
        return list(estimator.classes_)
    if method == "transform":
        return list(estimator.get_feature_names_out())
    return list(range(width))


@pytest.mark.parametrize("kind", ["numpy", "pandas", "polars", "arrow", "sparse", "list"])
def test_execute_false_in_memory_is_lazy(kind):
    import polars as pl
    import pyarrow as pa

    X, y = _iris()
    frame = _frame(X)
    estimator = LogisticRegression(max_iter=1000).fit(frame, y)
    inputs = {
        "numpy": X,
        "pandas": frame,
        "polars": pl.from_pandas(frame),
        "arrow": pa.Table.from_pandas(frame),
        "sparse": sp.csr_matrix(X),
        "list": X.tolist(),
    }
    wrapper = ParallelPostFit(estimator, block_size=32)
    is_frame = kind in ("pandas", "polars", "arrow")

    if is_frame:
        lazy = wrapper.predict_proba(inputs[kind], execute=False)
    else:
        with pytest.warns(UserWarning, match="does not have valid feature names"):
            lazy = wrapper.predict_proba(inputs[kind], execute=False)

    expected = estimator.predict_proba(frame)
    if is_frame:
        assert isinstance(lazy, dd.DataFrame)
        assert lazy.npartitions == 5
    else:
        assert isinstance(lazy, da.Array)
        assert lazy.chunks[0] == (32, 32, 32, 32, 22)
    _assert_values(lazy.compute(), expected)


def test_execute_true_computes():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    dX = da.from_array(X, chunks=(50, 4))
    ddf = dd.from_pandas(_frame(X), npartitions=3)
    frame_estimator = LogisticRegression(max_iter=1000).fit(_frame(X), y)

    array_out = ParallelPostFit(estimator).predict(dX, execute=True)
    frame_out = ParallelPostFit(frame_estimator).predict_proba(ddf, execute=True)

    assert isinstance(array_out, np.ndarray)
    _assert_values(array_out, estimator.predict(X))
    assert isinstance(frame_out, pd.DataFrame)
    _assert_values(frame_out, frame_estimator.predict_proba(_frame(X)))


# The cases dask-ml users reported ----------------------------------------------


def test_empty_partitions_after_filter():
    X, y = _iris()
    df = _frame(X)
    estimator = LogisticRegression(max_iter=1000).fit(df, y)
    ddf = dd.from_pandas(df, npartitions=5)
    # Petal length > 4.5 holds for none of the first (setosa) rows.
    filtered = ddf[ddf["x2"] > 4.5]
    lengths = [len(p) for p in filtered.partitions]
    assert 0 in lengths
    assert sum(lengths) > 0

    for method in ("predict", "predict_proba"):
        lazy = getattr(ParallelPostFit(estimator), method)(filtered)
        expected = getattr(estimator, method)(df[df["x2"] > 4.5])
        assert_lazy_eq(lazy, expected, filtered)


def test_empty_chunks_of_unknown_size():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    dX = da.from_array(X, chunks=(30, 4))
    filtered = dX[dX[:, 2] > 4.5]
    assert all(math.isnan(c) for c in filtered.chunks[0])

    lazy = ParallelPostFit(estimator).predict_proba(filtered)

    assert all(math.isnan(c) for c in lazy.chunks[0])
    assert_lazy_eq(lazy, estimator.predict_proba(X[X[:, 2] > 4.5]), filtered)


def test_frame_index_kept():
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:100, :5], y[:100]
    df = _frame(X, index=np.arange(0, 1000, 10))
    estimator = LogisticRegression(max_iter=2000).fit(df, y)
    ddf = dd.from_pandas(df, npartitions=4)
    assert ddf.divisions == (0, 250, 500, 750, 990)

    lazy = ParallelPostFit(estimator).predict(ddf)

    assert lazy.divisions == (0, 250, 500, 750, 990)
    assert list(lazy.compute().index) == list(range(0, 1000, 10))
    assert_lazy_eq(lazy, estimator.predict(df), ddf)


def test_array_chunked_along_features():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    estimator = LogisticRegression().fit(X, y)
    dX = da.from_array(X, chunks=(100, 1))

    lazy = ParallelPostFit(estimator).predict_proba(dX)

    assert lazy.chunks == ((100,) * 10, (2,))
    assert_lazy_eq(lazy, estimator.predict_proba(X), dX)


def test_unknown_chunk_sizes_kept():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    ddf = dd.from_pandas(pd.DataFrame(X), npartitions=3)
    dX = ddf.to_dask_array()
    assert all(math.isnan(c) for c in dX.chunks[0])

    lazy = ParallelPostFit(estimator).predict(dX)

    assert len(lazy.chunks[0]) == 3
    assert all(math.isnan(c) for c in lazy.chunks[0])
    assert_lazy_eq(lazy, estimator.predict(X), dX)


def test_sparse_csr_chunks():
    X, y = _iris()
    X_sparse = sp.csr_matrix(np.where(X > 3, X, 0))
    estimator = LogisticRegression(max_iter=1000).fit(X_sparse, y)
    dX = da.from_array(X_sparse, chunks=(40, 4), asarray=False)

    for method in ("predict", "predict_proba"):
        lazy = getattr(ParallelPostFit(estimator), method)(dX)
        assert_lazy_eq(lazy, getattr(estimator, method)(X_sparse), dX)


def test_sparse_output_stays_sparse():
    from sklearn.preprocessing import OneHotEncoder

    X = np.repeat(np.arange(4), 10).reshape(-1, 1) % 3
    encoder = OneHotEncoder().fit(X)
    dX = da.from_array(X, chunks=(15, 1))

    lazy = ParallelPostFit(encoder).transform(dX)

    assert sp.issparse(lazy._meta)
    assert_lazy_eq(lazy, encoder.transform(X), dX)


def test_regressor_declares_float_dtype():
    X, y = load_diabetes(return_X_y=True)
    estimator = Ridge().fit(X, y)
    dX = da.from_array(X, chunks=(100, 10))
    ddf = dd.from_pandas(_frame(X), npartitions=3)
    frame_estimator = Ridge().fit(_frame(X), y)

    lazy_array = ParallelPostFit(estimator).predict(dX)
    lazy_series = ParallelPostFit(frame_estimator).predict(ddf)

    assert lazy_array.dtype == np.float64
    assert lazy_series.dtype == np.float64
    assert_lazy_eq(lazy_array, estimator.predict(X), dX)
    assert_lazy_eq(lazy_series, frame_estimator.predict(_frame(X)), ddf)


def test_string_classes_declare_their_dtype():
    X, y = _iris()
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    estimator = LogisticRegression(max_iter=1000).fit(_frame(X), names)
    ddf = dd.from_pandas(_frame(X), npartitions=3)
    dX = da.from_array(X, chunks=(50, 4))

    lazy_series = ParallelPostFit(estimator).predict(ddf)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        lazy_array = ParallelPostFit(estimator).predict(dX)

    assert lazy_series.dtype == object
    assert lazy_array.dtype == object
    assert lazy_series.compute().dtype == object
    expected = estimator.predict(_frame(X))
    assert_lazy_eq(lazy_series, expected, ddf)
    assert_lazy_eq(lazy_array, expected, dX)


def test_gaussian_mixture_proba_without_classes():
    X, _ = _iris()
    mixture = GaussianMixture(n_components=3, random_state=0).fit(X)
    dX = da.from_array(X, chunks=(40, 4))
    ddf = dd.from_pandas(pd.DataFrame(X), npartitions=4)

    lazy_array = ParallelPostFit(mixture).predict_proba(dX)
    lazy_frame = ParallelPostFit(mixture).predict_proba(ddf)

    expected = mixture.predict_proba(X)
    assert lazy_array.shape[1] == 3
    assert list(lazy_frame.columns) == [0, 1, 2]
    assert_lazy_eq(lazy_array, expected, dX)
    assert_lazy_eq(lazy_frame, expected, ddf)


@pytest.mark.parametrize(
    "estimator",
    [
        KNeighborsRegressor(n_neighbors=3),
        RandomForestClassifier(n_estimators=5, random_state=0),
    ],
    ids=["knn-regressor", "forest-classifier"],
)
def test_multi_output_predict(estimator):
    X, y = _iris()
    Y = np.column_stack([y, (X[:, 0] > 5.8).astype(int)])
    estimator = estimator.fit(X, Y)
    dX = da.from_array(X, chunks=(40, 4))
    ddf = dd.from_pandas(pd.DataFrame(X), npartitions=3)

    lazy_array = ParallelPostFit(estimator).predict(dX)
    lazy_frame = ParallelPostFit(estimator).predict(ddf)

    expected = estimator.predict(X)
    assert lazy_array.shape[1] == 2
    assert_lazy_eq(lazy_array, expected, dX)
    assert_lazy_eq(lazy_frame, expected, ddf)


def test_text_pipeline_on_series_stays_lazy():
    words = ["red", "green", "blue", "cyan", "black"]
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(words, size=4)) for _ in range(300)]
    labels = np.array(["warm" if "red" in d else "cold" for d in docs], dtype=object)
    pipeline = make_pipeline(
        HashingVectorizer(n_features=2**10), SGDClassifier(random_state=0)
    ).fit(docs, labels)
    series = dd.from_pandas(pd.Series(docs), npartitions=4)

    lazy = ParallelPostFit(pipeline).predict(series)

    assert isinstance(lazy, dd.Series)
    assert len(lazy) == len(docs)
    assert_lazy_eq(lazy, pipeline.predict(docs), series)


# Metadata and options --------------------------------------------------------------


def test_user_meta_coerces_output():
    X, y = load_diabetes(return_X_y=True)
    estimator = Ridge().fit(X, y)
    dX = da.from_array(X, chunks=(100, 10))
    wrapper = ParallelPostFit(estimator, predict_meta=np.empty(0, dtype=np.float32))

    lazy = wrapper.predict(dX)

    assert lazy.dtype == np.float32
    computed = lazy.compute()
    assert computed.dtype == np.float32
    np.testing.assert_allclose(computed, estimator.predict(X).astype(np.float32))


def test_all_empty_input_needs_meta():
    X, y = load_diabetes(return_X_y=True)
    estimator = Ridge().fit(X, y)
    dX = da.from_array(X, chunks=(100, 10))
    empty = dX[dX[:, 0] > 100]

    with pytest.raises(ValueError, match="every chunk of the Dask input is empty"):
        ParallelPostFit(estimator).predict(empty)
    lazy = ParallelPostFit(estimator, predict_meta=np.empty(0)).predict(empty)
    computed = lazy.compute()

    assert computed.shape == (0,)
    assert computed.dtype == np.float64


def test_lazy_predict_combines_with_lazy_y():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=200).fit(X[::2], y[::2])
    dX = da.from_array(X, chunks=(40, 4))
    dy = da.from_array(y, chunks=40)
    ddf = dd.from_pandas(_frame(X), npartitions=4)
    frame_estimator = LogisticRegression(max_iter=200).fit(_frame(X)[::2], y[::2])
    dy_series = dd.from_pandas(pd.Series(y), npartitions=4)

    array_accuracy = (ParallelPostFit(estimator).predict(dX) == dy).mean().compute()
    frame_accuracy = (ParallelPostFit(frame_estimator).predict(ddf) == dy_series).mean().compute()

    assert array_accuracy == accuracy_score(y, estimator.predict(X))
    assert frame_accuracy == accuracy_score(y, frame_estimator.predict(_frame(X)))


def test_frame_columns_reordered_by_name():
    X, y = _iris()
    df = _frame(X)
    estimator = LogisticRegression(max_iter=1000).fit(df, y)
    shuffled = dd.from_pandas(df[["x3", "x1", "x0", "x2"]], npartitions=2)

    with pytest.warns(ColumnOrderWarning):
        lazy = ParallelPostFit(estimator).predict(shuffled)

    _assert_values(lazy.compute(), estimator.predict(df))


def test_frame_for_array_fitted_estimator_warns_once():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    ddf = dd.from_pandas(_frame(X), npartitions=3)

    with pytest.warns(UserWarning, match="fitted without feature names") as record:
        lazy = ParallelPostFit(estimator).predict(ddf)
    computed = lazy.compute()

    assert len(record) == 1
    _assert_values(computed, estimator.predict(X))


def test_wrong_width_rejected():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)

    with pytest.raises(ValueError, match="X has 3 features"):
        ParallelPostFit(estimator).predict(da.from_array(X[:, :3], chunks=(50, 3)))


def test_error_names_the_block():
    X, y = _iris()
    estimator = StandardScaler().fit(X)
    X_bad = X.copy()
    X_bad[120, 0] = np.inf
    wrapper = ParallelPostFit(make_pipeline(estimator, LogisticRegression()).fit(X, y))
    dX = da.from_array(X_bad, chunks=(50, 4))

    with pytest.raises(ValueError, match="infinity") as info:
        wrapper.predict(dX).compute(scheduler="sync")

    notes = getattr(info.value, "__notes__", [])
    assert any("block 2 (rows 100 to 150)" in note for note in notes)


def test_unsupported_collection_rejected():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    bag = db.from_sequence(X.tolist(), npartitions=2)

    with pytest.raises(TypeError, match="Dask Arrays, DataFrames and Series"):
        ParallelPostFit(estimator).predict(bag)


def test_output_option_rejected_for_dask_input():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)

    with pytest.raises(ValueError, match="not supported for a Dask input"):
        ParallelPostFit(estimator)._post_fit(
            "predict", da.from_array(X, chunks=50), output="out.parquet"
        )


# Small chunks scored merged ---------------------------------------------------------


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_small_chunks_scored_merged(method):
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    dX = da.from_array(X, chunks=(5, 4))

    with dask.config.set(num_workers=2):
        lazy = getattr(ParallelPostFit(estimator), method)(dX)

    # Two threads keep four chunks at least: 150 rows merge into chunks of
    # at most 37 rows, seven input chunks of 5 each.
    assert merged_row_chunks(dX.chunks[0], 32, 2) == (35, 35, 35, 35, 10)
    assert len(scoring_tasks(lazy, method)) == 5
    assert lazy.chunks[0] == dX.chunks[0]
    assert_lazy_eq(lazy, getattr(estimator, method)(X), dX)


def test_merged_scoring_reads_input_chunks():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    dX = da.from_array(X, chunks=(5, 4))

    with dask.config.set(num_workers=2):
        lazy = ParallelPostFit(estimator).predict_proba(dX)

    # The scoring tasks read the input chunks, with no merging tasks between.
    layers = lazy.__dask_graph__().dependencies
    scoring = [name for name in layers if str(name).startswith("postfit-predict_proba-")]
    scoring = [name for name in scoring if not str(name).startswith("postfit-predict_proba-rows-")]
    assert len(scoring) == 1
    assert dX.name in layers[scoring[0]]
    assert not [name for name in layers if str(name).startswith("rechunk")]


def _first_column(X):
    return np.asarray(X).reshape(-1, 1)


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_one_dimensional_chunks_scored_merged(method):
    X, y = _iris()
    pipeline = make_pipeline(FunctionTransformer(_first_column), LogisticRegression()).fit(
        X[:, 0], y
    )
    dX = da.from_array(X[:, 0], chunks=5)

    with dask.config.set(num_workers=2):
        lazy = getattr(ParallelPostFit(pipeline), method)(dX)

    assert len(scoring_tasks(lazy, method)) == 5
    assert lazy.chunks[0] == dX.chunks[0]
    assert_lazy_eq(lazy, getattr(pipeline, method)(X[:, 0]), dX)


def test_merged_chunks_keep_empty_chunks():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    dX = da.from_array(X, chunks=((0, 10, 0, 10, 10, 0, 20, 100, 0), (4,)))

    with dask.config.set(num_workers=1):
        lazy = ParallelPostFit(estimator).predict_proba(dX)

    assert len(scoring_tasks(lazy, "predict_proba")) < dX.numblocks[0]
    assert lazy.chunks[0] == dX.chunks[0]
    assert_lazy_eq(lazy, estimator.predict_proba(X), dX)


def test_sparse_chunks_not_merged():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    dX = da.from_array(sp.csr_matrix(X), chunks=(5, 4), asarray=False)

    with dask.config.set(num_workers=2):
        lazy = ParallelPostFit(estimator).predict(dX)

    assert len(scoring_tasks(lazy, "predict")) == 30
    assert_lazy_eq(lazy, estimator.predict(X), dX)


@pytest.mark.parametrize(("n_components", "merged"), [(10, True), (1_000, False)])
def test_wide_output_limits_merging(n_components, merged, monkeypatch):
    X, _ = _iris()
    sampler = RBFSampler(n_components=n_components, random_state=0).fit(X)
    dX = da.from_array(X, chunks=(10, 4))
    # 64 KiB hold 8 output rows of 1,000 float64 columns, fewer than one
    # chunk, and 819 rows of 10 columns.
    monkeypatch.setattr(postfit._dask, "MERGED_CHUNK_MAX_BYTES", 64 * 2**10)

    with dask.config.set(num_workers=2):
        lazy = ParallelPostFit(sampler).transform(dX)

    tasks = len(scoring_tasks(lazy, "transform"))
    assert (tasks < dX.numblocks[0]) is merged
    assert lazy.chunks[0] == dX.chunks[0]
    np.testing.assert_allclose(lazy.compute(), sampler.transform(X), rtol=RTOL)


@pytest.mark.parametrize(
    "options", [{"block_size": 10}, {"memory_budget": "512MiB"}], ids=["block_size", "budget"]
)
def test_user_sizes_keep_chunks(options):
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    dX = da.from_array(X, chunks=(5, 4))

    with dask.config.set(num_workers=2):
        lazy = ParallelPostFit(estimator, **options).predict(dX)

    assert len(scoring_tasks(lazy, "predict")) == 30
    assert_lazy_eq(lazy, estimator.predict(X), dX)


def test_lazy_in_memory_keeps_planned_chunks():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)

    with dask.config.set(num_workers=2):
        lazy = ParallelPostFit(estimator, block_size=10).predict_proba(X, execute=False)

    assert lazy.chunks[0] == (10,) * 15
    assert len(scoring_tasks(lazy, "predict_proba")) == 15
    np.testing.assert_allclose(lazy.compute(), estimator.predict_proba(X), rtol=RTOL)


def test_merged_chunk_error_names_input_chunks():
    X, y = _iris()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    X_bad = np.concatenate([X, X, X])[:400].copy()
    X_bad[125, 0] = np.inf
    dX = da.from_array(X_bad, chunks=(10, 4))

    with dask.config.set(num_workers=2):
        lazy = ParallelPostFit(pipeline).predict(dX)
    with pytest.raises(ValueError, match="infinity") as info:
        lazy.compute(scheduler="sync")

    # Two threads keep four chunks: the 10-row chunks merge ten at a time.
    notes = getattr(info.value, "__notes__", [])
    assert any("blocks 10 to 19 (rows 100 to 200)" in note for note in notes), notes


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_all_empty_chunks_kept(method):
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    dX = da.from_array(X[:0], chunks=((0, 0, 0), (4,)))

    with dask.config.set(num_workers=1):
        lazy = getattr(ParallelPostFit(estimator), method)(dX)

    assert lazy.chunks[0] == (0, 0, 0)
    assert lazy.compute().shape[0] == 0


def test_object_chunks_not_merged():
    texts = np.array([f"word{i % 7} other{i % 3}" for i in range(200)], dtype=object)
    labels = np.arange(200) % 2
    pipeline = make_pipeline(HashingVectorizer(n_features=64), SGDClassifier(random_state=0)).fit(
        texts, labels
    )
    dX = da.from_array(texts, chunks=10)

    with dask.config.set(num_workers=2):
        lazy = ParallelPostFit(pipeline).predict(dX)

    assert len(scoring_tasks(lazy, "predict")) == 20
    assert_lazy_eq(lazy, pipeline.predict(texts), dX)


@pytest.mark.parametrize(
    ("row_chunks", "row_nbytes", "n_threads", "expected"),
    [
        # Each thread keeps two chunks: at most 1,000 / 4 rows a chunk.
        ((100,) * 10, 8, 2, (200, 200, 200, 200, 200)),
        # The byte limit: at most 250 rows a chunk.
        ((100,) * 10, MERGED_CHUNK_MAX_BYTES // 250, 1, (200, 200, 200, 200, 200)),
        # Large chunks stay as they are, and small neighbours merge around them.
        ((10, 1000, 10, 10), 8, 1, (10, 1000, 20)),
        # Zero-size chunks join their neighbours.
        ((0, 5, 0, 5), 8, 1, (5, 5)),
        # Nothing to merge.
        ((250_000,) * 8, 160, 2, None),
        ((10,), 8, 1, None),
        # Unknown sizes are kept.
        ((math.nan, math.nan), 8, 1, None),
        # Rows of unknown width.
        ((10, 10), 0, 1, None),
    ],
)
def test_merged_row_chunks(row_chunks, row_nbytes, n_threads, expected):
    assert merged_row_chunks(row_chunks, row_nbytes, n_threads) == expected


# The model in the graph ------------------------------------------------------------


def test_graph_holds_model_once():
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    # Random values do not compress, so the pickled model is about 2 MB.
    estimator.ballast_ = np.random.default_rng(0).random(250_000)
    model_bytes = len(cloudpickle.dumps(estimator))
    dX = da.from_array(X, chunks=(5, 4))
    ddf = dd.from_pandas(pd.DataFrame(X), npartitions=30)

    for lazy in (ParallelPostFit(estimator).predict(dX), ParallelPostFit(estimator).predict(ddf)):
        graph = dict(lazy.__dask_graph__())
        graph_bytes = len(cloudpickle.dumps(graph))
        assert lazy.npartitions == 30
        assert model_bytes < graph_bytes < 1.5 * model_bytes


# Optional engine --------------------------------------------------------------------


def test_missing_dask_names_extra(monkeypatch):
    monkeypatch.setitem(_REGISTRY, "dask", "postfit.backends.dask:DaskBackend")
    monkeypatch.delitem(sys.modules, "postfit.backends.dask", raising=False)
    # A None entry in sys.modules makes `import distributed` raise ImportError.
    monkeypatch.setitem(sys.modules, "distributed", None)

    with pytest.raises(ImportError, match=r"pip install 'postfit\[dask\]'"):
        get_backend("dask")


def test_dask_backend_without_client_explains():
    importlib.import_module("distributed")
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)

    with pytest.raises(RuntimeError, match="no distributed.Client was given or is current"):
        ParallelPostFit(estimator, backend="dask").predict(X)


def test_list_output_rejected_for_array():
    from sklearn.multioutput import MultiOutputClassifier

    X, y = _iris()
    Y = np.column_stack([y, (X[:, 0] > 5.8).astype(int)])
    estimator = MultiOutputClassifier(LogisticRegression(max_iter=1000)).fit(X, Y)

    with pytest.raises(TypeError, match="several arrays"):
        ParallelPostFit(estimator).predict_proba(da.from_array(X, chunks=(50, 4)))


@pytest.mark.parametrize("kind", ["array", "frame", "in-memory"])
def test_tuple_output_rejected_lazily(kind):
    from sklearn.linear_model import BayesianRidge

    X = np.random.default_rng(1).normal(size=(10, 2))
    estimator = BayesianRidge().fit(X, X[:, 0])
    lazy_input = {
        "array": lambda: da.from_array(X, chunks=4),
        "frame": lambda: dd.from_pandas(pd.DataFrame(X), npartitions=2),
        "in-memory": lambda: X,
    }[kind]()
    wrapper = ParallelPostFit(estimator)

    with pytest.raises(TypeError, match=r"several arrays.*return_std=True.*X.compute"):
        if kind == "in-memory":
            wrapper.predict(lazy_input, return_std=True, execute=False)
        else:
            wrapper.predict(lazy_input, return_std=True)
    mean, std = wrapper.predict(X, return_std=True)
    want_mean, want_std = estimator.predict(X, return_std=True)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
    np.testing.assert_allclose(std, want_std, rtol=1e-12)


@pytest.mark.parametrize("lazy", ["dask input", "execute=False"])
def test_lazy_result_rejects_ray_backend(lazy):
    X, y = _iris()
    wrapper = ParallelPostFit(LogisticRegression(max_iter=1000).fit(X, y), backend="ray")
    with pytest.raises(ValueError, match="backend='ray' does not apply"):
        if lazy == "dask input":
            wrapper.predict(da.from_array(X, chunks=(50, 4)))
        else:
            wrapper.predict(X, execute=False)


@pytest.mark.parametrize("backend", ["loky", "threading", "sequential"])
def test_lazy_result_with_local_backend_setting(backend):
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    wrapper = ParallelPostFit(estimator, backend=backend)
    got = wrapper.predict(da.from_array(X, chunks=(50, 4))).compute()
    np.testing.assert_array_equal(got, estimator.predict(X))


def test_sparse_output_rejected_for_frame():
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame({"colour": ["red", "green", "blue"] * 10})
    encoder = OneHotEncoder().fit(frame)

    with pytest.raises(TypeError, match="returns a sparse matrix"):
        ParallelPostFit(encoder).transform(dd.from_pandas(frame, npartitions=3))


# Sending data straight to the workers ---------------------------------------------


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("tcp://127.0.0.1:8786", True),
        ("tcp://127.0.0.2:8786", True),
        ("tls://localhost:8786", True),
        ("tcp://[::1]:8786", True),
        ("inproc://127.0.0.1/1984/4", True),
        ("tcp://10.0.0.5:8786", False),
        ("tcp://scheduler.example:8786", False),
        ("tcp://[2001:db8::1]:8786", False),
        ("not an address", False),
    ],
)
def test_loopback_addresses(address, local):
    from postfit.backends import dask as dask_backend

    assert dask_backend._is_loopback(address) is local


class FakeClient:
    """A stand-in for distributed.Client that records its scatter calls."""

    def __init__(self, scheduler="tcp://127.0.0.1:8786", direct_to_workers=None, fails=False):
        self.scheduler = type("Rpc", (), {"address": scheduler})()
        self.direct_to_workers = direct_to_workers
        self.fails = fails
        self.calls = []

    def scatter(self, data, **options):
        self.calls.append(options)
        if options.get("direct") and self.fails:
            raise OSError("connection refused")
        return [f"future-{len(self.calls)}" for _ in data]


@pytest.mark.parametrize(
    ("client", "addresses", "direct"),
    [
        (FakeClient(), ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"], True),
        (FakeClient(), ["tcp://127.0.0.1:1", "tcp://10.0.0.5:2"], False),
        (FakeClient(scheduler="tcp://10.0.0.1:8786"), ["tcp://127.0.0.1:1"], False),
        (FakeClient(direct_to_workers=False), ["tcp://127.0.0.1:1"], False),
        (FakeClient(direct_to_workers=True), ["tcp://127.0.0.1:1"], False),
        (FakeClient(), [], False),
    ],
)
def test_sends_directly_only_to_local_workers(client, addresses, direct):
    from postfit.backends import dask as dask_backend

    assert dask_backend.sends_directly(client, addresses) is direct


@pytest.mark.parametrize("fails", [False, True])
def test_scatter_falls_back_to_scheduler(fails):
    from postfit.backends import dask as dask_backend

    client = FakeClient(fails=fails)
    futures = dask_backend.scatter(client, ["rows"], True, broadcast=True)
    assert len(futures) == 1
    assert client.calls[0] == {"hash": False, "direct": True, "broadcast": True}
    if fails:
        assert client.calls[1:] == [{"hash": False, "broadcast": True}]
    else:
        assert len(client.calls) == 1
    client = FakeClient()
    dask_backend.scatter(client, ["rows"], False)
    assert client.calls == [{"hash": False}]
