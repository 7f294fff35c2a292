"""The ray backend and Ray Dataset inputs, on a local two-CPU Ray started once per module.

Ray runs only in a network namespace that contains nothing but loopback (see
``conftest.py``), because outside one it probes a public address to find its
own and listens on every interface. The estimators defined here reach the Ray
workers by reference, because the fixture adds this directory to the
workers' import path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import ray
import ray.data
from _oracle import CASES_BY_NAME as CASES
from _oracle import assert_same_output, call_oracle, fitted, make_input, training_data
from conftest import require_loopback_only
from sklearn.linear_model import LogisticRegression

import postfit
import postfit.backends.ray
from postfit import ParallelPostFit
from postfit.backends import _REGISTRY, get_backend
from postfit.exceptions import BlockError, WorkerCrashedError

# Ray 2.60's own DataContext() assigns its deprecated fields (such as
# use_push_based_shuffle) while initialising, which warns for every new or
# copied context.
# Ray 2.60 also calls DataFrame.reset_index(inplace=True) on pandas blocks,
# which pandas 3.1 deprecates.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
    pytest.mark.filterwarnings(
        "ignore:The inplace keyword in DataFrame.reset_index:DeprecationWarning"
    ),
]

TESTS_DIR = Path(__file__).resolve().parent
N_CPUS = 2
BLOCK_SIZE = 32

# (case, methods) scored through the backend. The cases cover a classifier
# with numeric and one with string classes, a regressor, a density model
# without classes_, and a transformer.
BACKEND_CASES = {
    "logistic": ["predict", "predict_proba", "predict_log_proba", "decision_function"],
    "gaussian_nb": ["predict", "predict_proba"],
    "ridge": ["predict"],
    "gaussian_mixture": ["predict_proba", "score_samples"],
    "pca": ["transform"],
}
BACKEND_KINDS = ["c_order", "memmap", "pandas", "csr"]


@pytest.fixture(scope="module")
def ray_session():
    """Start a local Ray bound to 127.0.0.1 for this module, and shut it down after."""
    require_loopback_only()
    ray.init(
        num_cpus=N_CPUS,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=256 * 2**20,
        log_to_driver=False,
        logging_level=logging.ERROR,
        # Workers import the estimators of this directory by reference.
        job_config=ray.job_config.JobConfig(code_search_path=[str(TESTS_DIR)]),
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.cluster
def test_ray_listens_on_loopback_only(ray_session):
    processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
    addresses = set()
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    addresses.add(conn.laddr.ip)

    assert addresses, "found no listening Ray process"
    assert addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses


# Estimators that report from the worker ---------------------------------


class CountingLogisticRegression(LogisticRegression):
    """A LogisticRegression that appends its process id to a file each time it is unpickled."""

    log_path: str | None = None

    def __setstate__(self, state):
        super().__setstate__(state)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(f"{os.getpid()}\n")


def load_counts(log_path) -> dict[int, int]:
    counts: dict[int, int] = {}
    path = Path(log_path)
    if path.exists():
        for line in path.read_text().split():
            counts[int(line)] = counts.get(int(line), 0) + 1
    return counts


class KillingLogisticRegression(LogisticRegression):
    """A LogisticRegression whose ``predict`` kills its own worker process.

    Outside ``driver_pid`` it kills the process on the first call only when
    ``once`` is set (it leaves ``marker`` behind), and on every call otherwise.
    """

    driver_pid: int = -1
    marker: str = ""
    once: bool = True

    def predict(self, X):
        if os.getpid() != self.driver_pid:
            marker = Path(self.marker)
            if not (self.once and marker.exists()):
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return super().predict(X)


class SlowFirstRowLogisticRegression(LogisticRegression):
    """A LogisticRegression that takes ``delay`` seconds for rows that include ``first_row``."""

    first_row: np.ndarray | None = None
    delay: float = 0.0

    def predict(self, X):
        if self.first_row is not None and (np.asarray(X) == self.first_row).all(axis=1).any():
            time.sleep(self.delay)
        return super().predict(X)


def _iris_model(cls, **attributes):
    X, y = training_data(CASES["gaussian_nb"])
    model = cls(max_iter=1000).fit(X, y)
    for name, value in attributes.items():
        setattr(model, name, value)
    return model, X


# The backend ---------------------------------------------------------------


def _backend_params():
    for name, methods in BACKEND_CASES.items():
        for method in methods:
            for kind in BACKEND_KINDS:
                yield pytest.param(name, method, kind, id=f"{name}-{method}-{kind}")


@pytest.mark.cluster
@pytest.mark.parametrize(("name", "method", "kind"), list(_backend_params()))
def test_backend_matches_estimator(ray_session, tmp_path, name, method, kind):
    frame = kind == "pandas"
    estimator = fitted(name, frame=frame)
    X, _ = training_data(CASES[name], frame=frame)
    X = make_input(kind, X, tmp_path)
    status, expected = call_oracle(estimator, method, X)
    wrapper = ParallelPostFit(estimator, backend="ray", n_jobs=N_CPUS, block_size=BLOCK_SIZE)

    if status == "error":
        with pytest.raises(expected):
            getattr(wrapper, method)(X)
        return
    got = getattr(wrapper, method)(X)
    assert_same_output(got, expected, CASES[name].exact)


@pytest.mark.cluster
@pytest.mark.parametrize("kind", ["c_order", "memmap"])
def test_backend_keeps_sparse_output(ray_session, tmp_path, kind):
    estimator = fitted("one_hot")
    X = make_input(kind, training_data(CASES["one_hot"])[0], tmp_path)
    wrapper = ParallelPostFit(estimator, backend="ray", block_size=BLOCK_SIZE)

    assert_same_output(wrapper.transform(X), estimator.transform(X), exact=True)


@pytest.mark.cluster
def test_backend_scores_parquet_source(ray_session, tmp_path):
    estimator = fitted("logistic", frame=True)
    X, _ = training_data(CASES["logistic"], frame=True)
    X.to_parquet(tmp_path / "in.parquet", row_group_size=BLOCK_SIZE)
    source = postfit.read_parquet(tmp_path / "in.parquet")
    wrapper = ParallelPostFit(estimator, backend="ray", n_jobs=N_CPUS, block_size=BLOCK_SIZE)

    proba = wrapper.predict_proba(source)
    result = wrapper.predict(source, output=tmp_path / "labels")
    written = pd.read_parquet(result.path)

    assert_same_output(proba, estimator.predict_proba(source.read()))
    assert list(written.columns) == ["prediction"]
    np.testing.assert_array_equal(written["prediction"].to_numpy(), estimator.predict(X))


@pytest.mark.cluster
def test_backend_unpickles_model_once_per_worker(ray_session, tmp_path):
    log = tmp_path / "loads.txt"
    model, X = _iris_model(CountingLogisticRegression, log_path=str(log))
    wrapper = ParallelPostFit(model, backend="ray", n_jobs=N_CPUS, block_size=10)

    # Two runs of 15 blocks each: the second finds the model already loaded.
    for _ in range(2):
        np.testing.assert_array_equal(wrapper.predict(X), model.predict(X))
    counts = load_counts(log)

    assert counts, "no worker unpickled the model"
    assert os.getpid() not in counts
    assert max(counts.values()) == 1, counts


@pytest.mark.cluster
def test_backend_error_keeps_type_and_names_block(ray_session):
    estimator = fitted("logistic")
    X, _ = training_data(CASES["logistic"])
    X = X.copy()
    X[70, 2] = np.nan
    wrapper = ParallelPostFit(estimator, backend="ray", block_size=BLOCK_SIZE)

    with pytest.raises(ValueError, match="NaN") as info:
        wrapper.predict(X)
    assert "postfit: raised while scoring block 2 (rows 64 to 96)" in info.value.__notes__


@pytest.mark.cluster
def test_backend_killed_worker_is_retried(ray_session, tmp_path):
    marker = tmp_path / "killed"
    model, X = _iris_model(
        KillingLogisticRegression, driver_pid=os.getpid(), marker=str(marker), once=True
    )
    wrapper = ParallelPostFit(model, backend="ray", block_size=50)

    got = wrapper.predict(X)

    assert marker.exists(), "no worker was killed"
    np.testing.assert_array_equal(got, model.predict(X))


@pytest.mark.cluster
def test_backend_killed_worker_raises_after_retries(ray_session, tmp_path):
    model, X = _iris_model(
        KillingLogisticRegression, driver_pid=os.getpid(), marker=str(tmp_path / "k"), once=False
    )
    # One block and one retry: Ray starts two worker processes, both killed.
    wrapper = ParallelPostFit(
        model, backend="ray", block_size=len(X), backend_options={"max_retries": 1}
    )

    with pytest.raises(WorkerCrashedError, match=r"block 0 \(rows 0 to 150\)"):
        wrapper.predict(X)


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_retries": "x"}, ValueError, "max_retries must be an int >= 0.*got 'x'"),
        ({"max_retries": -2}, ValueError, "max_retries must be an int >= 0.*got -2"),
        ({"client": None}, TypeError, r"Unknown backend_options.*\['client'\]"),
    ],
)
def test_backend_rejects_invalid_options(ray_session, options, error, message):
    X, _ = training_data(CASES["logistic"])
    wrapper = ParallelPostFit(fitted("logistic"), backend="ray", backend_options=options)

    with pytest.raises(error, match=message):
        wrapper.predict(X)
    with pytest.raises(error, match=message):
        wrapper.predict(_dataset(X))


def test_backend_without_session_says_call_init(monkeypatch):
    backend_class = get_backend("ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    X, _ = training_data(CASES["logistic"])
    wrapper = ParallelPostFit(fitted("logistic"), backend="ray")

    with pytest.raises(RuntimeError, match=r"ray\.init\(\) has not been called"):
        wrapper.predict(X)
    with pytest.raises(RuntimeError, match=r"Call ray\.init\(\)"):
        backend_class(1)


def test_backend_without_ray_names_extra(monkeypatch):
    monkeypatch.setitem(_REGISTRY, "ray", "postfit.backends.ray:RayBackend")
    # A None entry makes `import ray` raise ImportError, as when Ray is missing.
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "ray.data")
    monkeypatch.delitem(sys.modules, "postfit.backends.ray", raising=False)
    X, _ = training_data(CASES["logistic"])
    wrapper = ParallelPostFit(fitted("logistic"), backend="ray")

    with pytest.raises(ImportError, match=r"pip install 'postfit\[ray\]'"):
        wrapper.predict(X)


# Ray Dataset inputs --------------------------------------------------------


def _dataset(X, n_blocks=4):
    """Return X as a Ray Dataset of ``n_blocks`` blocks: a frame, or one tensor column."""
    bounds = np.linspace(0, len(X), n_blocks + 1).astype(int)
    parts = [
        X[lo:hi] if isinstance(X, np.ndarray) else X.iloc[lo:hi] for lo, hi in pairwise(bounds)
    ]
    if isinstance(X, np.ndarray):
        return ray.data.from_numpy(parts)
    return ray.data.from_pandas(parts)


# (case, method, expected output columns) for lazy Dataset outputs.
DATASET_CASES = [
    ("gaussian_nb", "predict", ["predict"]),
    ("gaussian_nb", "predict_proba", ["setosa", "versicolor", "virginica"]),
    ("logistic", "decision_function", ["decision_function"]),
    ("ridge", "predict", ["predict"]),
    ("gaussian_mixture", "score_samples", ["score_samples"]),
    ("pca", "transform", ["pca0", "pca1", "pca2"]),
]


@pytest.mark.cluster
@pytest.mark.parametrize("frame", [False, True], ids=["tensor", "pandas"])
@pytest.mark.parametrize(("name", "method", "columns"), DATASET_CASES)
def test_dataset_lazy_output_matches_estimator(ray_session, name, method, columns, frame):
    estimator = fitted(name, frame=frame)
    X, _ = training_data(CASES[name], frame=frame)
    expected = getattr(estimator, method)(X)
    wrapper = ParallelPostFit(estimator, n_jobs=N_CPUS, block_size=BLOCK_SIZE)

    result = getattr(wrapper, method)(_dataset(X))
    assert isinstance(result, ray.data.Dataset)
    table = result.to_pandas()

    assert list(table.columns) == columns
    values = table.to_numpy().astype(np.asarray(expected).dtype)
    assert_same_output(values.reshape(np.shape(expected)), np.asarray(expected), CASES[name].exact)


@pytest.mark.cluster
@pytest.mark.parametrize("frame", [False, True], ids=["tensor", "pandas"])
@pytest.mark.parametrize("name", ["gaussian_nb", "pca", "one_hot"])
def test_dataset_execute_matches_estimator(ray_session, name, frame):
    estimator = fitted(name, frame=frame)
    X, _ = training_data(CASES[name], frame=frame)
    method = "predict_proba" if name == "gaussian_nb" else "transform"
    wrapper = ParallelPostFit(estimator, n_jobs=N_CPUS, block_size=BLOCK_SIZE)

    got = getattr(wrapper, method)(_dataset(X), execute=True)

    expected = getattr(estimator, method)(X)
    if isinstance(expected, pd.DataFrame):
        expected = expected.reset_index(drop=True)
    assert_same_output(got, expected, CASES[name].exact)


@pytest.mark.cluster
def test_dataset_batches_follow_caller_sklearn_config(ray_session):
    from sklearn import config_context
    from sklearn.preprocessing import StandardScaler

    X = pd.DataFrame(np.arange(400.0).reshape(200, 2), columns=["a", "b"])
    scaler = StandardScaler().fit(X)
    wrapper = ParallelPostFit(scaler, n_jobs=N_CPUS, block_size=BLOCK_SIZE)
    with config_context(transform_output="pandas"):
        expected = scaler.transform(X)
        got = wrapper.transform(_dataset(X), execute=True)

    assert isinstance(expected, pd.DataFrame)
    pd.testing.assert_frame_equal(got, expected)
    # Outside the context, the default output comes back.
    assert isinstance(wrapper.transform(_dataset(X), execute=True), np.ndarray)


def _doubled_when_assume_finite(X):
    from sklearn import get_config

    return X * 2 if get_config()["assume_finite"] else X


@pytest.mark.cluster
def test_lazy_dataset_keeps_config_it_was_built_with(ray_session):
    from sklearn import config_context
    from sklearn.preprocessing import FunctionTransformer

    X = np.arange(400.0).reshape(200, 2)
    doubler = FunctionTransformer(_doubled_when_assume_finite).fit(X)
    wrapper = ParallelPostFit(doubler, n_jobs=N_CPUS, block_size=BLOCK_SIZE)
    with config_context(assume_finite=True):
        lazy = wrapper.transform(_dataset(X))

    # The Dataset runs here, outside the context.
    table = lazy.to_pandas()
    np.testing.assert_array_equal(table.to_numpy(dtype=np.float64), X * 2)
    np.testing.assert_array_equal(wrapper.transform(_dataset(X), execute=True), X)


@pytest.mark.cluster
def test_dataset_text_pipeline_scores_one_column(ray_session):
    estimator = fitted("text_pipeline")
    docs, _ = training_data(CASES["text_pipeline"])
    dataset = _dataset(docs.to_frame().reset_index(drop=True))

    got = ParallelPostFit(estimator).predict(dataset, execute=True)

    assert_same_output(got, estimator.predict(docs.to_numpy()), exact=True)


@pytest.mark.cluster
def test_dataset_sparse_output_needs_execute(ray_session):
    estimator = fitted("one_hot")
    X, _ = training_data(CASES["one_hot"])
    lazy = ParallelPostFit(estimator).transform(_dataset(X))

    with pytest.raises(TypeError, match="sparse matrix.*execute=True"):
        lazy.materialize()


@pytest.mark.cluster
def test_dataset_tuple_output_needs_execute(ray_session):
    from sklearn.linear_model import BayesianRidge

    X = np.random.default_rng(1).normal(size=(10, 2))
    estimator = BayesianRidge().fit(X, X[:, 0])
    wrapper = ParallelPostFit(estimator, block_size=4)

    with pytest.raises(TypeError, match="return_std=True returns a tuple.*execute=True"):
        wrapper.predict(_dataset(X), return_std=True)
    mean, std = wrapper.predict(_dataset(X), return_std=True, execute=True)
    want_mean, want_std = estimator.predict(X, return_std=True)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
    np.testing.assert_allclose(std, want_std, rtol=1e-12)


@pytest.mark.cluster
def test_dataset_rejects_dask_backend(ray_session):
    X, _ = training_data(CASES["logistic"])
    wrapper = ParallelPostFit(fitted("logistic"), backend="dask")
    with pytest.raises(ValueError, match="backend='dask' does not apply"):
        wrapper.predict(_dataset(X))


@pytest.mark.cluster
def test_dataset_filtered_to_empty_blocks(ray_session):
    from ray.data.expressions import col

    estimator = fitted("logistic", frame=True)
    X, _ = training_data(CASES["logistic"], frame=True)
    # Only rows of the first of four blocks pass the filter.
    dataset = _dataset(X.assign(position=np.arange(len(X)))).filter(expr=col("position") < 30)
    kept = X.iloc[:30]
    wrapper = ParallelPostFit(estimator, block_size=BLOCK_SIZE)

    lazy = wrapper.predict_proba(dataset).to_pandas()
    got = wrapper.predict_proba(dataset, execute=True)

    expected = estimator.predict_proba(kept)
    np.testing.assert_allclose(lazy.to_numpy(dtype=np.float64), expected, rtol=1e-12, atol=0)
    assert_same_output(got, expected)


@pytest.mark.cluster
def test_dataset_all_empty_uses_meta(ray_session):
    from ray.data.expressions import col

    estimator = fitted("ridge")
    X, _ = training_data(CASES["ridge"])
    dataset = _dataset(X).filter(expr=col("data").is_null())

    got = ParallelPostFit(estimator, predict_meta=np.float64).predict(dataset, execute=True)

    assert_same_output(got, np.empty(0, dtype=np.float64))
    with pytest.raises(BlockError, match="Pass a meta"):
        ParallelPostFit(estimator).predict(dataset, execute=True)


@pytest.mark.cluster
def test_dataset_all_empty_keeps_columns(ray_session):
    from ray.data.expressions import col

    estimator = fitted("logistic", frame=True)
    X, _ = training_data(CASES["logistic"], frame=True)
    dataset = _dataset(X.assign(position=np.arange(len(X)))).filter(expr=col("position") < 0)
    full = _dataset(X.assign(position=np.arange(len(X))))
    wrapper = ParallelPostFit(estimator, block_size=BLOCK_SIZE)

    got = wrapper.predict_proba(dataset, keep_columns=["position"], execute=True)
    some = wrapper.predict_proba(full, keep_columns=["position"], execute=True)

    assert got.shape == (0, 1 + len(estimator.classes_))
    assert list(got.columns) == list(some.columns)
    assert list(got.dtypes) == list(some.dtypes)


@pytest.mark.cluster
def test_dataset_kept_name_clash_raises_early(ray_session):
    from sklearn.preprocessing import StandardScaler

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 1.0], "c": [2.0, 2.0, 0.0]})
    wrapper = ParallelPostFit(StandardScaler().fit(frame))
    with pytest.raises(ValueError, match=r"keep_columns \['c'\] have the names of output"):
        wrapper.transform(ray.data.from_pandas(frame), keep_columns=["c"])


@pytest.mark.cluster
def test_dataset_keeps_order_when_first_batch_is_slow(ray_session):
    model, X = _iris_model(SlowFirstRowLogisticRegression)
    model.first_row, model.delay = X[0], 1.0

    # The first of six blocks finishes last, but its rows must still come first.
    lazy = ParallelPostFit(model, n_jobs=N_CPUS).predict(_dataset(X, 6))
    got = lazy.to_pandas()["predict"].to_numpy(dtype=object)

    np.testing.assert_array_equal(got, model.predict(X))


@pytest.mark.cluster
def test_dataset_of_one_block_split_for_tasks(ray_session, monkeypatch, caplog):
    model, X = _iris_model(SlowFirstRowLogisticRegression)
    model.first_row, model.delay = X[0], 1.0
    monkeypatch.setattr(postfit.backends.ray, "SPLIT_MIN_BYTES", 100)
    dataset = ray.data.from_numpy(X)

    # 150 rows of 32 bytes in one block: four blocks for each of the two tasks, and the
    # first block finishes last, but its rows must still come first.
    with caplog.at_level(logging.DEBUG, logger="postfit"):
        got = ParallelPostFit(model).predict(dataset, execute=True)

    np.testing.assert_array_equal(got, model.predict(X))
    assert f"1 blocks split into 8 for {N_CPUS} tasks" in caplog.text
    assert dataset.num_blocks() == 1
    # The reservation is turned off on a private context, not the caller's.
    assert ray.data.DataContext.get_current().op_resource_reservation_enabled


@pytest.mark.cluster
def test_dataset_of_few_rows_not_split(ray_session, caplog):
    model, X = _iris_model(LogisticRegression)

    with caplog.at_level(logging.DEBUG, logger="postfit"):
        got = ParallelPostFit(model).predict_proba(ray.data.from_numpy(X), execute=True)

    np.testing.assert_allclose(got, model.predict_proba(X), rtol=1e-12)
    assert "split into" not in caplog.text


@pytest.mark.cluster
def test_dataset_of_unknown_size_not_split(ray_session, monkeypatch, caplog):
    from ray.data.dataset import MaterializedDataset

    model, X = _iris_model(LogisticRegression)
    monkeypatch.setattr(postfit.backends.ray, "SPLIT_MIN_BYTES", 100)
    # Ray returns None when it does not know a Dataset's size.
    monkeypatch.setattr(MaterializedDataset, "size_bytes", lambda self: None)

    with caplog.at_level(logging.DEBUG, logger="postfit"):
        got = ParallelPostFit(model).predict(ray.data.from_numpy(X), execute=True)

    np.testing.assert_array_equal(got, model.predict(X))
    assert "split into" not in caplog.text


@pytest.mark.cluster
def test_dataset_unpickles_model_once_per_worker(ray_session, tmp_path):
    log = tmp_path / "loads.txt"
    model, X = _iris_model(CountingLogisticRegression, log_path=str(log))

    got = ParallelPostFit(model, block_size=10).predict(_dataset(X, 8), execute=True)
    counts = load_counts(log)

    np.testing.assert_array_equal(got, model.predict(X))
    assert counts, "no worker unpickled the model"
    assert os.getpid() not in counts
    assert max(counts.values()) == 1, counts


@pytest.mark.cluster
def test_dataset_error_keeps_type(ray_session):
    estimator = fitted("logistic")
    X, _ = training_data(CASES["logistic"])
    X = X.copy()
    X[70, 2] = np.nan
    wrapper = ParallelPostFit(estimator, block_size=BLOCK_SIZE)

    with pytest.raises(ValueError, match="NaN") as info:
        wrapper.predict(_dataset(X), execute=True)
    assert any("batch of" in note for note in info.value.__notes__)
    with pytest.raises(ValueError, match="NaN"):
        wrapper.predict(_dataset(X)).materialize()


@pytest.mark.cluster
def test_dataset_killed_worker_gives_full_output_or_error(ray_session, tmp_path):
    marker = tmp_path / "killed"
    model, X = _iris_model(
        KillingLogisticRegression, driver_pid=os.getpid(), marker=str(marker), once=True
    )

    try:
        got = ParallelPostFit(model, block_size=50).predict(_dataset(X), execute=True)
    except WorkerCrashedError as exc:
        assert "Ray Dataset" in str(exc)
    else:
        np.testing.assert_array_equal(got, model.predict(X))
    assert marker.exists(), "no worker was killed"


@pytest.mark.cluster
def test_dataset_killed_worker_raises_after_retries(ray_session, tmp_path):
    model, X = _iris_model(
        KillingLogisticRegression, driver_pid=os.getpid(), marker=str(tmp_path / "k"), once=False
    )
    # One batch and one retry: Ray starts two worker processes, both killed.
    wrapper = ParallelPostFit(model, block_size=len(X), backend_options={"max_retries": 1})

    with pytest.raises(WorkerCrashedError, match="a batch of a Ray Dataset"):
        wrapper.predict(_dataset(X, 1), execute=True)


@pytest.mark.cluster
def test_dataset_missing_fitted_column(ray_session):
    estimator = fitted("logistic", frame=True)
    X, _ = training_data(CASES["logistic"], frame=True)

    with pytest.raises(ValueError, match=r"missing 1 column\(s\).*\['f3'\]"):
        ParallelPostFit(estimator).predict(_dataset(X.drop(columns="f3")))


@pytest.mark.cluster
def test_dataset_wrong_column_count(ray_session):
    estimator = fitted("logistic")
    X, _ = training_data(CASES["logistic"], frame=True)

    with pytest.raises(ValueError, match="has 3 columns to score.*fitted with 8 features"):
        ParallelPostFit(estimator).predict(_dataset(X.iloc[:, :3]))
    with pytest.raises(ValueError, match=r"keep_columns \['id'\] not found"):
        ParallelPostFit(estimator).predict(_dataset(X), keep_columns=["id"])


@pytest.mark.cluster
def test_dataset_rejects_output_path(ray_session, tmp_path):
    estimator = fitted("logistic", frame=True)
    X, _ = training_data(CASES["logistic"], frame=True)

    with pytest.raises(ValueError, match="write_parquet"):
        ParallelPostFit(estimator).predict(_dataset(X), output=str(tmp_path / "out"))


@pytest.mark.cluster
@pytest.mark.parametrize("execute", [None, True])
def test_dataset_keep_columns_come_first(ray_session, execute):
    estimator = fitted("gaussian_nb", frame=True)
    X, _ = training_data(CASES["gaussian_nb"], frame=True)
    ids = np.arange(len(X)) * 7
    wrapper = ParallelPostFit(estimator, block_size=BLOCK_SIZE)

    result = wrapper.predict(_dataset(X.assign(id=ids)), execute=execute, keep_columns=["id"])
    table = result if execute else result.to_pandas()

    assert list(table.columns) == ["id", "predict"]
    np.testing.assert_array_equal(table["id"], ids)
    np.testing.assert_array_equal(table["predict"], estimator.predict(X))
