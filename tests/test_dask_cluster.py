"""The dask backend and lazy Dask results on a two-process LocalCluster on 127.0.0.1.

Every test here starts from the session's cluster, which runs only in a
network namespace that contains nothing but loopback (see ``conftest.py``).
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
import warnings

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import require_loopback_only
from dask_fixtures import (
    N_WORKERS,
    CountingLogisticRegression,
    CrashingLogisticRegression,
    GatedLogisticRegression,
    big_model,
    dask_client,  # noqa: F401 - a fixture
    dask_cluster,  # noqa: F401 - a fixture
    load_counts,
    scoring_tasks,
    started_pids,
)
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from postfit import ParallelPostFit
from postfit.backends import dask as dask_backend
from postfit.exceptions import WorkerCrashedError

pytestmark = pytest.mark.cluster

RTOL = 1e-12


def _iris():
    return load_iris(return_X_y=True)


def _inputs(X):
    return {
        "numpy": X,
        "pandas": pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]),
        "sparse": sp.csr_matrix(X),
    }


def _worker_pids(client):
    return set(client.run(os.getpid).values())


@pytest.mark.parametrize("kind", ["numpy", "pandas", "sparse"])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function"])
def test_dask_backend_matches_plain(dask_client, kind, method):  # noqa: F811
    X, y = _iris()
    data = _inputs(X)[kind]
    estimator = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(data, y)
    wrapper = ParallelPostFit(
        estimator, backend="dask", backend_options={"client": dask_client}, block_size=40
    )

    out = getattr(wrapper, method)(data)

    expected = getattr(estimator, method)(data)
    assert type(out) is type(expected)
    assert out.dtype == expected.dtype
    np.testing.assert_allclose(out, expected, rtol=RTOL)


def test_dask_backend_uses_current_client(dask_client):  # noqa: F811
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)

    with dask_client.as_current():
        out = ParallelPostFit(estimator, backend="dask", block_size=30).predict(X)

    np.testing.assert_array_equal(out, estimator.predict(X))


def test_dask_backend_unpickles_model_once_per_worker(dask_client, tmp_path):  # noqa: F811
    X, y = _iris()
    estimator = CountingLogisticRegression(max_iter=1000).fit(X, y)
    estimator.log_path = str(tmp_path / "unpickled.txt")
    wrapper = ParallelPostFit(
        estimator, backend="dask", backend_options={"client": dask_client}, block_size=10
    )

    out = wrapper.predict_proba(X)

    np.testing.assert_allclose(out, estimator.predict_proba(X), rtol=RTOL)
    worker_pids = _worker_pids(dask_client)
    counts = {pid: n for pid, n in load_counts(estimator.log_path).items() if pid in worker_pids}
    assert sorted(counts) == sorted(worker_pids), counts
    assert set(counts.values()) == {1}, counts


def test_lazy_result_unpickles_model_once_per_worker(dask_client, tmp_path):  # noqa: F811
    X, y = _iris()
    estimator = CountingLogisticRegression(max_iter=1000).fit(X, y)
    estimator.log_path = str(tmp_path / "unpickled.txt")
    dX = da.from_array(X, chunks=(10, 4))

    with dask_client.as_current():
        lazy = ParallelPostFit(estimator).predict(dX)
        out = lazy.compute()

    np.testing.assert_array_equal(out, estimator.predict(X))
    worker_pids = _worker_pids(dask_client)
    counts = {pid: n for pid, n in load_counts(estimator.log_path).items() if pid in worker_pids}
    assert counts
    assert set(counts.values()) == {1}, counts


def test_small_chunks_merged_for_cluster_threads(dask_client):  # noqa: F811
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    dX = da.from_array(X, chunks=(5, 4))

    # The cluster's threads size the merged chunks, not the local scheduler's
    # num_workers, which would keep 16 chunks of at most 9 rows.
    with dask_client.as_current(), dask.config.set(num_workers=8):
        lazy = ParallelPostFit(estimator).predict_proba(dX)
        out = lazy.compute()

    scoring_keys = scoring_tasks(lazy, "predict_proba")
    assert sum(dask_client.nthreads().values()) == N_WORKERS
    assert len(scoring_keys) == 5
    assert lazy.chunks[0] == dX.chunks[0]
    np.testing.assert_allclose(out, estimator.predict_proba(X), rtol=RTOL)


def test_lazy_result_on_cluster_without_workers():
    # An adaptive cluster may have no workers until the graph is computed:
    # the model then travels in the graph, and the chunks stay unmerged.
    from distributed import Client, LocalCluster

    require_loopback_only()
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    dX = da.from_array(X, chunks=(10, 4))
    with (
        LocalCluster(
            n_workers=0,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
        client.as_current(),
    ):
        lazy = ParallelPostFit(estimator).predict_proba(dX)
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        out = lazy.compute()

    scoring_keys = scoring_tasks(lazy, "predict_proba")
    assert len(scoring_keys) == dX.numblocks[0]
    np.testing.assert_allclose(out, estimator.predict_proba(X), rtol=RTOL)


def test_worker_imports_leave_no_tasks(dask_client):  # noqa: F811
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    with dask_client.as_current():
        ParallelPostFit(estimator).predict(da.from_array(X, chunks=(50, 4))).compute()

    def import_tasks(dask_scheduler):
        marks = ("postfit-import", "postfit-load")
        return [str(key) for key in dask_scheduler.tasks if str(key).startswith(marks)]

    deadline = time.monotonic() + 30
    while dask_client.run_on_scheduler(import_tasks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dask_client.run_on_scheduler(import_tasks) == []


@pytest.mark.parametrize(("kind", "module"), [("array", "dask.array"), ("frame", "dask.dataframe")])
def test_workers_import_collection_module(dask_client, monkeypatch, kind, module):  # noqa: F811
    X, y = _iris()
    # A model no earlier test scattered, so that this call sends it.
    estimator = LogisticRegression(C=0.37 if kind == "array" else 0.41, max_iter=1000).fit(X, y)
    imported = []
    original = dask_backend._warm_up

    def recording_warm_up(client, address, key, func, argument):
        if func is importlib.import_module:
            imported.append((address, argument))
        return original(client, address, key, func, argument)

    monkeypatch.setattr(dask_backend, "_warm_up", recording_warm_up)
    if kind == "array":
        lazy_input = da.from_array(X, chunks=(50, 4))
    else:
        lazy_input = dd.from_pandas(pd.DataFrame(X), npartitions=3)
    with dask_client.as_current():
        out = ParallelPostFit(estimator).predict(lazy_input).compute()

    np.testing.assert_array_equal(np.asarray(out), estimator.predict(X))
    workers = set(dask_client.nthreads())
    assert {address for address, name in imported if name == module} == workers
    assert {address for address, name in imported if name == "postfit._dask_tasks"} == workers


@pytest.mark.parametrize("kind", ["array", "frame"])
def test_big_model_sends_no_large_graph(dask_client, kind):  # noqa: F811
    X, y = _iris()
    threshold = dask.utils.parse_bytes(
        dask.config.get("distributed.admin.large-graph-warning-threshold")
    )
    estimator = big_model(X, y, nbytes=int(1.5 * threshold))
    if kind == "array":
        lazy_input = da.from_array(X[:100], chunks=(1, 4))
    else:
        lazy_input = dd.from_pandas(pd.DataFrame(X[:100]), npartitions=100)

    with dask_client.as_current(), warnings.catch_warnings():
        warnings.filterwarnings("error", message="Sending large graph")
        lazy = ParallelPostFit(estimator).predict(lazy_input)
        out = lazy.compute()

    assert lazy.npartitions == 100
    np.testing.assert_array_equal(np.asarray(out), estimator.predict(X[:100]))


def test_lazy_frame_on_cluster_keeps_index(dask_client):  # noqa: F811
    X, y = _iris()
    df = pd.DataFrame(X, columns=list("abcd"), index=np.arange(0, 1500, 10))
    estimator = LogisticRegression(max_iter=1000).fit(df, y)
    ddf = dd.from_pandas(df, npartitions=4)

    with dask_client.as_current():
        lazy = ParallelPostFit(estimator).predict_proba(ddf)
        out = lazy.compute()

    assert lazy.divisions == ddf.divisions
    assert out.index.equals(df.index)
    assert list(out.columns) == [0, 1, 2]
    np.testing.assert_allclose(out.to_numpy(), estimator.predict_proba(df), rtol=RTOL)


def _predict_while(wrapper, X, gate_dir, action):
    """Run ``wrapper.predict(X)`` in a thread, call ``action`` once a block waits, and return.

    The estimator must be a GatedLogisticRegression on ``gate_dir``. ``action``
    receives the process ids whose block started. The returned dict contains
    ``"output"`` or ``"error"``.
    """
    outcome = {}

    def run():
        try:
            outcome["output"] = wrapper.predict(X)
        except Exception as exc:  # the caller checks the outcome
            outcome["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 60
    while not started_pids(gate_dir) and time.monotonic() < deadline:
        time.sleep(0.02)
    action(started_pids(gate_dir))
    (gate_dir / "release").touch()
    runner.join(timeout=120)
    assert not runner.is_alive()
    return outcome


def test_killed_worker_never_gives_partial_output(dask_client, tmp_path):  # noqa: F811
    X, y = _iris()
    estimator = GatedLogisticRegression(max_iter=1000).fit(X, y)
    estimator.gate_dir = str(tmp_path)
    wrapper = ParallelPostFit(
        estimator, backend="dask", backend_options={"client": dask_client}, block_size=15
    )

    def kill_first(pids):
        assert pids, "no block started within 60 s"
        os.kill(pids[0], signal.SIGKILL)

    outcome = _predict_while(wrapper, X, tmp_path, kill_first)

    if "error" in outcome:
        error = outcome["error"]
        assert isinstance(error, WorkerCrashedError)
        assert "block" in str(error)
    else:
        np.testing.assert_array_equal(outcome["output"], estimator.predict(X))
    dask_client.wait_for_workers(N_WORKERS, timeout=60)


def test_model_lost_with_every_worker_is_sent_again(dask_client, tmp_path):  # noqa: F811
    X, y = _iris()
    estimator = CrashingLogisticRegression(max_iter=1000).fit(X, y)
    estimator.flag_dir = str(tmp_path)
    wrapper = ParallelPostFit(
        estimator, backend="dask", backend_options={"client": dask_client}, block_size=15
    )
    try:
        got = wrapper.predict(X)
    finally:
        dask_client.wait_for_workers(N_WORKERS, timeout=60)
    # Both workers died in their first block, with every copy of the model.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crash-0", "crash-1"]
    np.testing.assert_array_equal(got, LogisticRegression(max_iter=1000).fit(X, y).predict(X))


def test_client_closed_during_run(dask_cluster, tmp_path):  # noqa: F811
    from distributed import Client

    X, y = _iris()
    estimator = GatedLogisticRegression(max_iter=1000).fit(X, y)
    estimator.gate_dir = str(tmp_path)
    client = Client(dask_cluster, set_as_default=False)
    wrapper = ParallelPostFit(
        estimator, backend="dask", backend_options={"client": client}, block_size=15
    )
    outcome = _predict_while(wrapper, X, tmp_path, lambda pids: client.close())

    assert "output" not in outcome
    assert isinstance(outcome["error"], RuntimeError)
    assert "was closed while postfit was running" in str(outcome["error"])


def test_file_source_read_and_written_by_workers(dask_client, tmp_path, monkeypatch):  # noqa: F811
    from postfit.backends.dask import DaskBackend
    from postfit.io import read_parquet

    X, y = _iris()
    df = pd.DataFrame(X, columns=list("abcd"))
    estimator = LogisticRegression(max_iter=1000).fit(df, y)
    df.iloc[:80].to_parquet(tmp_path / "part-0.parquet")
    df.iloc[80:].to_parquet(tmp_path / "part-1.parquet")

    def no_rows_from_driver(self, block):
        raise AssertionError(f"the driver sent the rows of {block.describe()}")

    # Blocks of a file source carry a loader, so the driver never sends rows.
    monkeypatch.setattr(DaskBackend, "_scatter_rows", no_rows_from_driver)
    wrapper = ParallelPostFit(
        estimator, backend="dask", backend_options={"client": dask_client}, block_size=30
    )
    source = read_parquet(str(tmp_path / "part-*.parquet"))

    in_memory = wrapper.predict_proba(source)
    wrapper.predict_proba(source, output=str(tmp_path / "out"))
    written = read_parquet(str(tmp_path / "out")).read()

    expected = estimator.predict_proba(df)
    np.testing.assert_allclose(np.asarray(in_memory), expected, rtol=RTOL)
    np.testing.assert_allclose(written.to_numpy(), expected, rtol=RTOL)


# The scattered model kept between calls ------------------------------------------


def _scheduler_keys(client, key):
    return client.run_on_scheduler(lambda dask_scheduler: key in dask_scheduler.tasks)


def test_same_model_is_not_sent_again(dask_client, monkeypatch):  # noqa: F811
    from postfit.backends import dask as dask_backend

    # An earlier test may have left the same model (the same bytes) kept.
    dask_backend._forget_scattered(dask_client.id)
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    wrapper = ParallelPostFit(estimator, block_size=50)
    scatters = []
    scatter = dask_client.scatter

    def counting_scatter(data, *args, **kwargs):
        scatters.append(data)
        return scatter(data, *args, **kwargs)

    monkeypatch.setattr(dask_client, "scatter", counting_scatter)
    with dask_client.as_current():
        first = wrapper.predict(da.from_array(X, chunks=(50, 4))).compute()
        second = wrapper.predict_proba(da.from_array(X, chunks=(50, 4))).compute()

    np.testing.assert_array_equal(first, estimator.predict(X))
    np.testing.assert_allclose(second, estimator.predict_proba(X), rtol=RTOL)
    assert len(scatters) == 1


def test_refitted_model_is_sent_again(dask_client):  # noqa: F811
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    wrapper = ParallelPostFit(estimator, backend="dask", block_size=50)
    with dask_client.as_current():
        before = wrapper.predict(X)
        # The same object, refitted in place on other labels.
        estimator.fit(X, (y == 2).astype(int))
        after = wrapper.predict(X)

    np.testing.assert_array_equal(before, LogisticRegression(max_iter=1000).fit(X, y).predict(X))
    np.testing.assert_array_equal(after, estimator.predict(X))
    assert set(np.unique(after)) <= {0, 1}


def test_model_missing_on_a_worker_is_sent_again(dask_client, monkeypatch):  # noqa: F811
    from postfit.backends import dask as dask_backend

    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    wrapper = ParallelPostFit(estimator, backend="dask", block_size=50)
    with dask_client.as_current():
        wrapper.predict(X)
        kept_key = dask_backend._SCATTERED[dask_client.id].future.key
        # As if no worker held a copy any more.
        monkeypatch.setattr(dask_client, "who_has", lambda futures: {kept_key: []})
        out = wrapper.predict(X)

    np.testing.assert_array_equal(out, estimator.predict(X))
    assert dask_backend._SCATTERED[dask_client.id].future.key != kept_key


def test_kept_model_is_released_after_its_time(dask_client, monkeypatch):  # noqa: F811
    from postfit.backends import dask as dask_backend

    monkeypatch.setattr(dask_backend, "KEEP_SCATTERED_SECONDS", 0.2)
    kept_keys = []
    keep_scattered = dask_backend._keep_scattered

    def recording_keep(client, token, future):
        kept_keys.append(future.key)
        return keep_scattered(client, token, future)

    # The key is recorded as it is kept, because on a loaded machine the 0.2 s can
    # run out before the call returns.
    monkeypatch.setattr(dask_backend, "_keep_scattered", recording_keep)
    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    with dask_client.as_current():
        ParallelPostFit(estimator, backend="dask", block_size=50).predict(X)
    assert len(kept_keys) == 1
    key = kept_keys[0]

    deadline = time.monotonic() + 30
    while _scheduler_keys(dask_client, key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _scheduler_keys(dask_client, key)
    assert dask_client.id not in dask_backend._SCATTERED


def test_kept_model_expiring_during_a_call(dask_client, monkeypatch):  # noqa: F811
    from postfit.backends import dask as dask_backend

    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    wrapper = ParallelPostFit(estimator, backend="dask", block_size=50)
    who_has = dask_client.who_has

    def who_has_while_expiring(futures):
        # As if the five minutes ran out between the lookup and this check.
        dask_backend._forget_scattered(dask_client.id)
        time.sleep(0.2)
        return who_has(futures)

    with dask_client.as_current():
        wrapper.predict(X)
        monkeypatch.setattr(dask_client, "who_has", who_has_while_expiring)
        out = wrapper.predict(X)
        lazy = ParallelPostFit(estimator).predict(da.from_array(X, chunks=(50, 4))).compute()

    np.testing.assert_array_equal(out, estimator.predict(X))
    np.testing.assert_array_equal(lazy, estimator.predict(X))


def test_closed_client_drops_its_kept_model(dask_cluster, dask_client):  # noqa: F811
    from distributed import Client

    from postfit.backends import dask as dask_backend

    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    other = Client(dask_cluster, set_as_default=False)
    with other.as_current():
        ParallelPostFit(estimator, backend="dask", block_size=50).predict(X)
    timer = dask_backend._SCATTERED[other.id].timer
    other.close()

    with dask_client.as_current():
        ParallelPostFit(estimator, backend="dask", block_size=50).predict(X)

    assert other.id not in dask_backend._SCATTERED
    timer.join(timeout=5)
    assert not timer.is_alive()


def test_closed_client_is_a_clear_error(dask_cluster):  # noqa: F811
    from distributed import Client

    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    closed = Client(dask_cluster, set_as_default=False)
    closed.close()
    wrapper = ParallelPostFit(estimator, backend="dask", backend_options={"client": closed})

    with pytest.raises(RuntimeError, match="is closed.*Create a new"):
        wrapper.predict(X)
    with closed.as_current(), pytest.raises(RuntimeError, match="is closed"):
        ParallelPostFit(estimator).predict(da.from_array(X, chunks=(50, 4)))


def test_local_cluster_gets_data_directly(dask_client):  # noqa: F811
    assert dask_backend.sends_directly(dask_client, list(dask_client.nthreads()))
    X, y = _iris()
    estimator = LogisticRegression(C=0.53, max_iter=1000).fit(X, y)
    wrapper = ParallelPostFit(
        estimator, backend="dask", backend_options={"client": dask_client}, block_size=40
    )
    np.testing.assert_array_equal(wrapper.predict(X), estimator.predict(X))
    with dask_client.as_current():
        lazy = ParallelPostFit(estimator).predict_proba(da.from_array(X, chunks=(25, 4)))
        np.testing.assert_allclose(lazy.compute(), estimator.predict_proba(X), rtol=RTOL)


def _block_pids(X):
    return np.full((len(X), 1), os.getpid())


@pytest.mark.parametrize("kind", ["array", "frame"])
def test_given_client_runs_dask_input(dask_client, kind):  # noqa: F811
    from sklearn.preprocessing import FunctionTransformer

    X = np.zeros((400, 2))
    lazy_input = da.from_array(X, chunks=(100, 2))
    if kind == "frame":
        X = pd.DataFrame(X, columns=["a", "b"])
        lazy_input = dd.from_pandas(X, npartitions=4)
    estimator = FunctionTransformer(_block_pids).fit(X)
    wrapper = ParallelPostFit(estimator, backend_options={"client": dask_client})

    computed = np.asarray(wrapper.transform(lazy_input, execute=True))
    lazy = wrapper.transform(lazy_input)
    from_lazy = np.asarray(dask_client.compute(lazy).result())

    workers = _worker_pids(dask_client)
    assert computed.shape == (400, 1)
    assert set(computed.ravel()) <= workers
    assert set(from_lazy.ravel()) <= workers


def test_given_closed_client_rejects_dask_input(dask_cluster):  # noqa: F811
    from distributed import Client

    X, y = _iris()
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    closed = Client(dask_cluster, set_as_default=False)
    closed.close()
    wrapper = ParallelPostFit(estimator, backend_options={"client": closed})

    with pytest.raises(RuntimeError, match="is closed"):
        wrapper.predict(da.from_array(X, chunks=(50, 4)), execute=True)
