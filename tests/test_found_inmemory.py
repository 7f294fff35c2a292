"""Cases found by a review of in-memory scoring on the local backends.

Each test failed before its fix. Under loky: stale or private memmap
contents, a datetime input, two runs at once, and an exception that could
not travel back from a worker. On every backend: a covariance output cut
into blocks, scores of NaN inputs, and frames that scikit-learn accepts.
"""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from postfit import ParallelPostFit
from postfit._kernel import Block, run_block
from postfit.backends import loky as loky_backend
from postfit.exceptions import BlockError


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    return Ridge().fit(X, X @ [1.0, 2.0, 3.0])


# Memmaps under loky --------------------------------------------------------------------


def test_memmap_saved_again_at_same_path(tmp_path, linear):
    path = tmp_path / "rows.npy"
    wrapper = ParallelPostFit(linear, backend="loky", n_jobs=2, block_size=50)
    for day, rows in enumerate([200, 300, 300]):
        values = np.random.default_rng(day).normal(size=(rows, 3))
        np.save(path, values)
        X = np.load(path, mmap_mode="r")

        got = wrapper.predict(X)

        assert_allclose(got, linear.predict(values), rtol=1e-12)


def test_memmap_whose_file_was_replaced(tmp_path, linear):
    path = tmp_path / "rows.npy"
    old = np.random.default_rng(1).normal(size=(200, 3))
    np.save(path, old)
    X = np.load(path, mmap_mode="r")
    # The path now names another file, and X still maps the old one.
    np.save(tmp_path / "new.npy", old + 10.0)
    (tmp_path / "new.npy").replace(path)

    got = ParallelPostFit(linear, backend="loky", n_jobs=2, block_size=50).predict(X)

    assert_allclose(got, linear.predict(old), rtol=1e-12)


def test_copy_on_write_memmap_keeps_changes(tmp_path, linear):
    path = tmp_path / "rows.npy"
    np.save(path, np.random.default_rng(2).normal(size=(200, 3)))
    X = np.load(path, mmap_mode="c")
    X[:100] = 0.0

    got = ParallelPostFit(linear, backend="loky", n_jobs=2, block_size=50).predict(X)

    assert_allclose(got, linear.predict(np.asarray(X)), rtol=1e-12)


def test_datetime_input_under_loky():
    days = np.arange("2024-01-01", "2024-03-01", dtype="datetime64[D]").reshape(-1, 1)
    model = FunctionTransformer(lambda X: (X - np.datetime64("2024-01-01")).astype(float))
    model.fit(days)

    got = ParallelPostFit(model, backend="loky", n_jobs=2, block_size=10).transform(days)

    assert_array_equal(got, model.transform(days))


def test_block_read_short_raises(linear):
    block = Block(3, 100, 150, np.zeros((20, 3)))

    with pytest.raises(BlockError, match=r"block 3 \(rows 100 to 150\) was read with 20 rows"):
        run_block(linear, "predict", block)


# Outputs that are not row-wise -------------------------------------------------------


def test_return_cov_rejected():
    X = np.linspace(0, 1, 40).reshape(-1, 1)
    model = GaussianProcessRegressor(optimizer=None).fit(X, np.sin(X).ravel())
    wrapper = ParallelPostFit(model, backend="threading", block_size=10)

    with pytest.raises(ValueError, match="return_cov=True asks GaussianProcessRegressor.predict"):
        wrapper.predict(X, return_cov=True)
    mean, std = wrapper.predict(X, return_std=True)
    assert_allclose(std, model.predict(X, return_std=True)[1], rtol=1e-12)


class _SquarePart(BaseEstimator):
    """An estimator whose second output part has 3 rows whatever the block's row count."""

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        return np.asarray(X)[:, 0], np.zeros(3)


def test_every_output_part_checked_for_rows():
    X = np.arange(40.0).reshape(20, 2)
    wrapper = ParallelPostFit(_SquarePart().fit(X), backend="sequential", block_size=5)

    with pytest.raises(BlockError, match="in every part of the output"):
        wrapper.predict(X)


# Streamed scores -----------------------------------------------------------------------


def _scores(model, X, y, scoring=None, sample_weight=None):
    wrapper = ParallelPostFit(model, scoring=scoring, backend="threading", block_size=50)
    return wrapper.score(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize("scoring", [None, "explained_variance"])
def test_nan_predictions_rejected_in_r2(scoring):
    X = np.random.default_rng(3).normal(size=(300, 3))
    y = X @ [1.0, 2.0, 3.0]
    # log of negative predictions is NaN.
    model = TransformedTargetRegressor(Ridge(), func=np.exp, inverse_func=np.log).fit(X, y)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match="Input y_pred contains NaN"):
            _scores(model, X, y, scoring)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_target_rejected_in_r2(linear, bad):
    X = np.random.default_rng(4).normal(size=(300, 3))
    y = X @ [1.0, 2.0, 3.0]
    y[10] = bad

    with pytest.raises(ValueError, match="Input y_true contains (NaN|infinity)"):
        _scores(linear, X, y)


def test_zero_weights_rejected_in_r2(linear):
    X = np.random.default_rng(5).normal(size=(300, 3))

    with pytest.raises(ValueError, match="Sample weights must contain at least one non-zero"):
        _scores(linear, X, X @ [1.0, 2.0, 3.0], sample_weight=np.zeros(300))


# Loky runs and errors ------------------------------------------------------------------


def _slow_identity(X):
    time.sleep(0.05)
    return X


def test_two_loky_runs_with_other_worker_counts():
    X = np.arange(400.0).reshape(200, 2)
    model = FunctionTransformer(_slow_identity).fit(X)
    results = {}

    def run(name, n_jobs):
        wrapper = ParallelPostFit(model, backend="loky", n_jobs=n_jobs, block_size=10)
        try:
            results[name] = wrapper.transform(X)
        except Exception as exc:  # noqa: BLE001 - the test reports any failure below
            results[name] = exc

    first = threading.Thread(target=run, args=("first", 2))
    first.start()
    deadline = time.monotonic() + 60
    while loky_backend._POOL_USERS == 0 and first.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    run("second", 3)
    first.join()

    assert_array_equal(results["first"], X)
    assert_array_equal(results["second"], X)


class RangeError(Exception):
    """An exception whose constructor takes two values, so it does not unpickle."""

    def __init__(self, low, high):
        super().__init__(f"value outside [{low}, {high}]")


def _raise_in_block_two(X):
    if 20 <= X[0, 0] < 40:
        raise RangeError(0, 10)
    return X


def test_exception_that_cannot_travel_keeps_message():
    X = np.arange(60.0).reshape(30, 2)
    model = FunctionTransformer(_raise_in_block_two).fit(X)
    wrapper = ParallelPostFit(model, backend="loky", n_jobs=2, block_size=10)

    with pytest.raises(BlockError, match=r"RangeError: value outside \[0, 10\]") as info:
        wrapper.transform(X)
    assert any("block 1 (rows 10 to 20)" in note for note in info.value.__notes__)


# Frames that scikit-learn accepts ------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_frame():
    rng = np.random.default_rng(6)
    return pd.DataFrame(
        {
            "amount": rng.normal(size=120),
            "city": rng.choice(["a", "b", "c"], size=120),
            "unused": rng.normal(size=120),
        }
    )


def test_column_transformer_takes_extra_columns(mixed_frame):
    y = np.random.default_rng(7).integers(0, 2, size=len(mixed_frame))
    pre = ColumnTransformer(
        [("num", StandardScaler(), ["amount"]), ("cat", OneHotEncoder(), ["city"])]
    )
    model = make_pipeline(pre, LogisticRegression()).fit(mixed_frame, y)
    scored = mixed_frame.assign(customer_id=np.arange(120))

    got = ParallelPostFit(model, backend="threading", block_size=25).predict_proba(scored)

    assert_allclose(got, model.predict_proba(scored), rtol=1e-12)


def test_column_transformer_without_dropped_column(mixed_frame):
    y = np.random.default_rng(8).integers(0, 2, size=len(mixed_frame))
    pre = ColumnTransformer(
        [("num", StandardScaler(), ["amount"]), ("cat", OneHotEncoder(), ["city"])],
        remainder="drop",
    )
    model = make_pipeline(pre, LogisticRegression()).fit(mixed_frame, y)
    scored = mixed_frame.drop(columns="unused")

    got = ParallelPostFit(model, backend="sequential", block_size=25).predict(scored)

    assert_array_equal(got, model.predict(scored))


def test_plain_estimator_still_rejects_extra_columns():
    frame = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0) ** 2})
    model = LinearRegression().fit(frame, np.arange(10.0))

    with pytest.raises(ValueError, match="1 column\\(s\\) that LinearRegression was not fitted"):
        ParallelPostFit(model, backend="sequential").predict(frame.assign(c=1.0))


def test_integer_column_names_are_positional():
    frame = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7})
    model = LinearRegression().fit(frame, np.arange(40.0))
    renamed = frame.set_axis([0, 1], axis=1)

    with pytest.warns(UserWarning, match="X does not have valid feature names") as caught:
        got = ParallelPostFit(model, backend="threading", block_size=7).predict(renamed)

    assert len(caught) == 1
    with pytest.warns(UserWarning, match="valid feature names"):
        expected = model.predict(renamed)
    assert_allclose(got, expected, rtol=1e-12)


def test_mixed_column_name_types_rejected():
    frame = pd.DataFrame({"a": np.arange(10.0), 1: np.arange(10.0)})
    model = LinearRegression().fit(frame.to_numpy(), np.arange(10.0))

    with pytest.raises(TypeError, match="column names of several types"):
        ParallelPostFit(model, backend="sequential").predict(frame)


# Backend options ------------------------------------------------------------------------


def test_unknown_backend_options_rejected(linear):
    X = np.zeros((20, 3))
    wrapper = ParallelPostFit(linear, backend="threading", backend_options={"foo": 1})

    with pytest.raises(
        TypeError, match=r"Unknown backend_options \['foo'\] for backend='threading'"
    ):
        wrapper.predict(X)


def test_dask_option_names_its_backend(linear):
    wrapper = ParallelPostFit(linear, backend="loky", backend_options={"client": None})

    with pytest.raises(TypeError, match="They apply to backend='dask'"):
        wrapper.predict(np.zeros((20, 3)))


def test_auto_backend_rejects_dask_option_on_numpy(linear):
    X = np.random.default_rng(9).normal(size=(200_000, 3))
    wrapper = ParallelPostFit(linear, n_jobs=2, backend_options={"client": None})

    with pytest.raises(TypeError, match=r"backend_options \['client'\] apply to the 'dask'"):
        wrapper.predict(X)
    with pytest.raises(TypeError, match=r"backend_options \['client'\] apply to the 'dask'"):
        wrapper.predict(X[:100])


def test_ray_option_rejected_for_dask_input(linear):
    import dask.array as da

    wrapper = ParallelPostFit(linear, backend_options={"max_retries": 2})

    with pytest.raises(TypeError, match=r"\['max_retries'\] do not apply to a Dask input"):
        wrapper.predict(da.from_array(np.zeros((20, 3)), chunks=10))


def test_lazy_frame_gets_collect_hint(linear):
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame({"a": [1.0, 2.0], "b": [0.0, 1.0], "c": [2.0, 3.0]})

    with pytest.raises(TypeError, match=r"Call X\.collect\(\) first"):
        ParallelPostFit(linear).predict(frame.lazy())


def test_duplicate_column_names_rejected():
    frame = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0) ** 2})
    model = LinearRegression().fit(frame, np.arange(10.0))
    doubled = pd.concat([frame, frame[["a"]]], axis=1)

    with pytest.raises(ValueError, match="duplicate column names: 'a' 2 times"):
        ParallelPostFit(model, backend="sequential").predict(doubled)
