"""Backends: registry, worker counts, thread limits, loky model shipping, and the planner."""

from __future__ import annotations

import gc
import os
import pickle
import threading
import time
import types
from collections import Counter

import joblib
import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LinearRegression

from postfit import ParallelPostFit, _plan, _runner
from postfit._blocks import OutputCollector
from postfit.backends import _REGISTRY as REGISTRY
from postfit.backends import (
    Backend,
    available_backends,
    effective_n_workers,
    get_backend,
    register_backend,
)
from postfit.backends.loky import LokyBackend, SharedRows
from postfit.backends.sequential import SequentialBackend
from postfit.backends.threading import ThreadingBackend
from postfit.exceptions import WorkerCrashedError


class LogsUnpickling(RegressorMixin, BaseEstimator):
    """Appends the process id to a file each time an instance is unpickled."""

    def __init__(self, log_path=None):
        self.log_path = log_path

    def fit(self, X, y=None):
        self.n_features_in_ = np.shape(X)[1]
        return self

    def predict(self, X):
        return np.asarray(X)[:, 0] * 2.0

    def __setstate__(self, state):
        self.__dict__.update(state)
        with open(self.log_path, "a") as f:
            f.write(f"{os.getpid()}\n")


class ExitsProcess(RegressorMixin, BaseEstimator):
    def fit(self, X, y=None):
        self.n_features_in_ = np.shape(X)[1]
        return self

    def predict(self, X):
        os._exit(3)


# Registry and workers ---------------------------------------------------------


def test_builtin_backends_registered():
    assert {"sequential", "threading", "loky", "dask", "ray"} <= set(available_backends())
    assert get_backend("threading") is ThreadingBackend


def test_unknown_backend_lists_choices():
    with pytest.raises(ValueError, match="Unknown backend 'gpu'. Choose one of 'auto', "):
        get_backend("gpu")


def test_register_rejects_non_backend():
    with pytest.raises(TypeError, match="subclass of postfit.backends.Backend, got <class 'int'>"):
        register_backend("bad", int)


def test_registered_backend_is_used(monkeypatch):
    calls = []

    class Recording(SequentialBackend):
        name = "recording"

        def imap_unordered(self, func, blocks, max_in_flight):
            for block, out in super().imap_unordered(func, blocks, max_in_flight):
                calls.append(block.index)
                yield block, out

    monkeypatch.setitem(REGISTRY, "recording", Recording)
    X = np.arange(20.0).reshape(10, 2)
    model = LinearRegression().fit(X, X[:, 0])
    got = ParallelPostFit(model, backend="recording", block_size=4).predict(X)
    np.testing.assert_allclose(got, model.predict(X), rtol=1e-12)
    assert sorted(calls) == [0, 1, 2]


@pytest.mark.parametrize(
    ("n_jobs", "expected"), [(1, 1), (2, 2), (-1, joblib.cpu_count()), (None, 1)]
)
def test_effective_n_workers(n_jobs, expected):
    assert effective_n_workers(n_jobs) == expected


def test_negative_n_jobs_counts_from_cores(monkeypatch):
    import postfit.backends._base as base

    monkeypatch.setattr(base, "_cpu_count_cache", (float("-inf"), 1))
    monkeypatch.setattr(base.joblib, "cpu_count", lambda: 6)
    assert effective_n_workers(-1) == 6
    assert effective_n_workers(-2) == 5
    assert effective_n_workers(-9) == 1


class _ClusterJoblibBackend(joblib.parallel.ThreadingBackend):
    """A joblib backend that, like Ray's and Dask's, reads n_jobs=-1 as its cluster's CPUs."""

    def effective_n_jobs(self, n_jobs):
        return 7 if n_jobs == -1 else super().effective_n_jobs(n_jobs)


def test_cluster_joblib_backend_counts_its_cpus():
    joblib.register_parallel_backend("postfit-test-cluster", _ClusterJoblibBackend)

    with joblib.parallel_config(backend="postfit-test-cluster"):
        assert effective_n_workers(-1) == 7
    assert effective_n_workers(-1) == joblib.cpu_count()


def test_cpu_count_cached_briefly(monkeypatch):
    import postfit.backends._base as base

    counts = iter([4, 3])
    calls = []

    def count():
        calls.append(1)
        return next(counts)

    clock = [100.0]
    monkeypatch.setattr(base, "_cpu_count_cache", (float("-inf"), 1))
    monkeypatch.setattr(base.joblib, "cpu_count", count)
    monkeypatch.setattr(base, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    assert base.cpu_cores() == 4
    clock[0] += base.CPU_COUNT_TTL / 2
    assert base.cpu_cores() == 4
    assert len(calls) == 1
    # An affinity or cgroup change shows once the cached count expires.
    clock[0] += base.CPU_COUNT_TTL
    assert base.cpu_cores() == 3
    assert len(calls) == 2


def test_n_jobs_none_follows_parallel_config():
    with joblib.parallel_config(n_jobs=3):
        assert effective_n_workers(None) == 3


@pytest.mark.parametrize("backend_class", [ThreadingBackend, LokyBackend])
@pytest.mark.parametrize("n_workers", [1, 2, 3, 8])
def test_inner_threads_keep_total_within_cores(backend_class, n_workers):
    cores = 4
    inner = backend_class(n_workers).inner_threads(cores)
    if n_workers == 1:
        assert inner is None
    else:
        assert inner >= 1
        assert n_workers * inner <= max(cores, n_workers)


def test_sequential_backend_keeps_estimator_threads():
    assert SequentialBackend(4).inner_threads(8) is None
    assert SequentialBackend(4).n_workers == 1


def test_threading_backend_bounds_blocks_in_flight():
    import threading

    lock = threading.Lock()
    state = {"pending": 0, "max_pending": 0}

    def func(block):
        return block

    def blocks():
        for i in range(30):
            with lock:
                state["pending"] += 1
                state["max_pending"] = max(state["max_pending"], state["pending"])
            yield i

    for _, _ in ThreadingBackend(2).imap_unordered(func, blocks(), max_in_flight=3):
        with lock:
            state["pending"] -= 1
    assert state["max_pending"] <= 3


def test_backend_base_is_abstract():
    with pytest.raises(TypeError):
        Backend(1)


# Loky ---------------------------------------------------------------------------


def test_loky_unpickles_model_once_per_worker(tmp_path):
    log_path = tmp_path / "unpickled.txt"
    X = np.arange(400.0).reshape(200, 2)
    model = LogsUnpickling(str(log_path)).fit(X)
    wrapper = ParallelPostFit(model, backend="loky", n_jobs=2, block_size=5)
    np.testing.assert_array_equal(wrapper.predict(X), X[:, 0] * 2.0)

    pids = Counter(log_path.read_text().split())
    assert 1 <= len(pids) <= 2, pids
    assert set(pids.values()) == {1}, f"unpickled more than once in a worker: {pids}"
    assert str(os.getpid()) not in pids


def test_loky_numpy_blocks_are_not_pickled_arrays():
    X = np.random.default_rng(0).random((20_000, 20))
    backend = LokyBackend(2)
    try:
        with backend.ship_input(X) as slicer:
            block = slicer(0, 10_000)
            assert isinstance(block, SharedRows)
            assert len(pickle.dumps(block)) < 1_000
            np.testing.assert_array_equal(block.load(), X[:10_000])
    finally:
        backend.close()


def test_loky_memmap_input_used_in_place(tmp_path):
    path = tmp_path / "X.dat"
    X = np.memmap(path, dtype=np.float64, mode="w+", shape=(50, 3), order="F")
    X[:] = np.arange(150.0).reshape(50, 3)
    X.flush()
    backend = LokyBackend(2)
    try:
        with backend.ship_input(X) as slicer:
            block = slicer(10, 20)
            assert block.path == os.fspath(path)
            np.testing.assert_array_equal(block.load(), np.asarray(X[10:20]))
    finally:
        backend.close()


def test_loky_removes_temporary_files():
    backend = LokyBackend(2)
    with backend.ship_model(LinearRegression()) as ref:
        assert os.path.exists(ref.path)
        temp_dir = os.path.dirname(ref.path)
    assert not os.path.exists(temp_dir)


def test_loky_worker_crash_names_block_and_pool_recovers():
    X = np.arange(40.0).reshape(20, 2)
    crashing = ParallelPostFit(ExitsProcess().fit(X), backend="loky", n_jobs=2, block_size=5)
    with pytest.raises(WorkerCrashedError, match=r"A worker process died while scoring block \d"):
        crashing.predict(X)

    model = LinearRegression().fit(X, X[:, 1])
    got = ParallelPostFit(model, backend="loky", n_jobs=2, block_size=5).predict(X)
    np.testing.assert_allclose(got, model.predict(X), rtol=1e-12)


# The automatic planner ------------------------------------------------------------


@pytest.fixture
def planner(monkeypatch):
    """Replace the planner's measurements with given values and record its choice.

    Returns a function ``plan(n_rows, seconds_per_row, speedup, **options)``
    that runs ``predict`` and returns the backend names the run used, so that
    the decision is tested without depending on timing.
    """
    chosen = []

    def fake_probe_one_thread(self):
        self.score_here(min(self.n, 128), inner_threads=1)
        return 0.0, self.fake_per_row

    def fake_probe_two_threads(self, overhead, per_row):
        return self.fake_speedup

    original_run_backend = _runner._InMemoryRun.run_backend
    original_score_here = _runner._InMemoryRun.score_here

    def recording_run_backend(self, name, *args, **kwargs):
        chosen.append(name)
        return original_run_backend(self, name, *args, **kwargs)

    def recording_score_here(self, stop, inner_threads=None):
        if inner_threads is None:
            chosen.append("direct")
        return original_score_here(self, stop, inner_threads)

    monkeypatch.setattr(_runner._InMemoryRun, "probe_one_thread", fake_probe_one_thread)
    monkeypatch.setattr(_runner._InMemoryRun, "probe_two_threads", fake_probe_two_threads)
    monkeypatch.setattr(_runner._InMemoryRun, "run_backend", recording_run_backend)
    monkeypatch.setattr(_runner._InMemoryRun, "score_here", recording_score_here)

    original_run_direct = _runner._run_direct

    def recording_run_direct(*args, **kwargs):
        chosen.append("direct")
        return original_run_direct(*args, **kwargs)

    monkeypatch.setattr(_runner, "_run_direct", recording_run_direct)

    def plan(n_rows, seconds_per_row=1e-6, speedup=1.0, **options):
        chosen.clear()
        monkeypatch.setattr(_runner._InMemoryRun, "fake_per_row", seconds_per_row, raising=False)
        monkeypatch.setattr(_runner._InMemoryRun, "fake_speedup", speedup, raising=False)
        X = np.arange(2.0 * n_rows).reshape(n_rows, 2)
        model = LinearRegression().fit(X[:10], X[:10, 0])
        options = {"n_jobs": 2, **options}
        got = ParallelPostFit(model, **options).predict(X)
        np.testing.assert_allclose(got, model.predict(X), rtol=1e-12)
        return list(chosen)

    return plan


def test_planner_small_input_takes_direct_path(planner):
    assert planner(_plan.DIRECT_MAX_ROWS) == ["direct"]


def test_planner_small_input_keeps_user_block_size(planner):
    assert planner(100, block_size=30) == ["sequential"]


def test_planner_one_worker_runs_sequential_blocks(planner):
    assert planner(_plan.DIRECT_MAX_ROWS + 1, n_jobs=1) == ["sequential"]


def test_planner_little_work_finishes_in_one_call(planner):
    assert planner(10_000, seconds_per_row=1e-9) == ["direct"]


def test_planner_cheap_many_rows_one_call(planner):
    # 10 ms of single-thread work: one call with the estimator's own threads,
    # which two threads and their per-call costs do not beat.
    assert planner(100_000, seconds_per_row=1e-7) == ["direct"]


def test_planner_enough_work_threads(planner):
    # 100 ms of work that scales on two threads.
    assert planner(100_000, seconds_per_row=1e-6, speedup=1.8) == ["threading"]


class WarmsUp(RegressorMixin, BaseEstimator):
    """Sleeps 10 µs a row, plus 20 ms on its first call, as a first call's imports would."""

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        self.calls_ = 0
        return self

    def predict(self, X):
        self.calls_ += 1
        time.sleep(len(X) * 1e-5 + (0.02 if self.calls_ == 1 else 0.0))
        return np.zeros(len(X))


def test_probe_skips_slow_first_call():
    X = np.zeros((400_000, 2))
    with _runner.limit_threads(1):
        pass  # postfit's own first-call costs, paid here and not in the probes
    run = _runner._InMemoryRun(
        WarmsUp().fit(X[:5]), "predict", X, _runner.RunOptions(n_jobs=2), {}, False, None
    )
    # Fitted on the first two probes alone, the first call's 20 ms make the
    # cost per row seven times too small.
    overhead, per_row = run.probe_one_thread()
    assert 6e-6 < per_row < 1.5e-5
    assert overhead < 0.02


def test_planner_threads_when_they_scale(planner):
    assert planner(10_000, seconds_per_row=1e-3, speedup=1.9) == ["threading"]


def test_planner_processes_when_threads_do_not_scale(planner):
    assert planner(10_000, seconds_per_row=1e-3, speedup=1.0) == ["loky"]


def test_planner_one_call_when_processes_do_not_pay(planner):
    assert planner(10_000, seconds_per_row=1e-5, speedup=1.0) == ["direct"]


def test_planner_short_work_takes_modest_thread_gain(planner):
    # 0.1 s of work: too little for processes, so a 1.3 speed-up is taken.
    assert planner(10_000, seconds_per_row=1e-5, speedup=1.3) == ["threading"]


def test_planner_long_work_prefers_processes_to_modest_gain(planner):
    # 10 s of work: processes beat threads that gain only 1.3 times.
    assert planner(10_000, seconds_per_row=1e-3, speedup=1.3) == ["loky"]


class HoldsGilWithSlowFirstCall(RegressorMixin, BaseEstimator):
    """Pure-Python work on each row, plus 30 ms on its first call."""

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        self.calls_ = 0
        return self

    def predict(self, X):
        self.calls_ += 1
        if self.calls_ == 1:
            time.sleep(0.03)
        return np.array([sum(row) for row in X.tolist()])


def test_two_thread_probe_measures_rather_than_fits():
    X = np.ones((400_000, 2))
    estimator = HoldsGilWithSlowFirstCall().fit(X[:5])
    run = _runner._InMemoryRun(
        estimator, "predict", X, _runner.RunOptions(n_jobs=2), {}, False, None
    )
    run.score_here(1_000, inner_threads=1)
    # A fitted fixed cost as large as the first call's 30 ms. Predicting a
    # probe block's time from it had doubled the one-thread time.
    speedup = run.probe_two_threads(overhead=0.03, per_row=2e-6)
    # Pure Python holds the GIL: two threads gain nothing.
    assert speedup < _plan.THREADS_SCALE_MIN_SPEEDUP


def test_planner_keeps_memory_budget(planner, monkeypatch):
    monkeypatch.setattr(_plan, "BLOCK_MEMORY_FACTOR", 10**6)
    assert planner(10_000, seconds_per_row=1e-9, memory_budget="1GB") == ["sequential"]


def _thread_pools(estimator, rows):
    from threadpoolctl import threadpool_info

    return sorted({(pool["user_api"], pool["num_threads"]) for pool in threadpool_info()})


@pytest.mark.parametrize("backend_class", [ThreadingBackend, LokyBackend])
def test_workers_times_inner_threads_within_cores(backend_class):
    from postfit._kernel import Block
    from postfit._runner import execute_blocks

    backend = backend_class(2)
    blocks = [Block(i, i, i + 1, np.zeros((1, 1))) for i in range(6)]
    seen = []
    try:
        execute_blocks(
            backend,
            None,
            _thread_pools,
            blocks,
            on_result=lambda block, pools: seen.append(pools),
            max_in_flight=4,
            n_cores=2,
        )
    finally:
        backend.close()
    assert len(seen) == 6
    for pools in seen:
        assert pools, "no BLAS or OpenMP pool found"
        assert {threads for _, threads in pools} == {1}, pools


class WarnsPerCall(RegressorMixin, BaseEstimator):
    def fit(self, X, y=None):
        self.n_features_in_ = np.shape(X)[1]
        return self

    def predict(self, X):
        import warnings

        warnings.warn(f"scored {len(X)} rows", RuntimeWarning, stacklevel=2)
        return np.zeros(len(X))


def test_loky_reraises_worker_warnings_in_caller():
    X = np.zeros((30, 2))
    wrapper = ParallelPostFit(WarnsPerCall().fit(X), backend="loky", n_jobs=2, block_size=10)
    with pytest.warns(RuntimeWarning, match="scored 10 rows") as record:
        wrapper.predict(X)
    assert len(record) == 3


def test_loky_worker_warning_as_error_names_block():
    X = np.zeros((30, 2))
    wrapper = ParallelPostFit(WarnsPerCall().fit(X), backend="loky", n_jobs=2, block_size=10)
    with pytest.raises(RuntimeWarning, match="scored 10 rows") as info:
        wrapper.predict(X)
    assert info.value.__notes__[0].startswith("postfit: raised while scoring block")


@pytest.mark.parametrize(
    "cuts",
    [
        [(0, 10), (10, 500), (500, 1000)],
        # Out of order, overlapping and repeated cuts still read the right rows.
        [(0, 10), (500, 700), (10, 500), (700, 1000), (3, 8), (500, 700)],
        # Rows before the first cut (the planner's probes) are never needed.
        [(300, 600), (600, 1000)],
    ],
)
@pytest.mark.parametrize("shape", [(1000, 3), (1000,), (1000, 2, 3)])
def test_loky_input_written_per_block(cuts, shape):
    rng = np.random.default_rng(0)
    X = rng.normal(size=shape)
    backend = LokyBackend(2)
    try:
        with backend.ship_input(X) as slicer:
            parts = [slicer(lo, hi) for lo, hi in cuts]
            for part, (lo, hi) in zip(parts, cuts, strict=True):
                np.testing.assert_array_equal(part.load(), X[lo:hi])
    finally:
        backend.close()


def test_loky_input_fortran_order():
    X = np.asfortranarray(np.random.default_rng(1).normal(size=(200, 4)))
    backend = LokyBackend(2)
    try:
        with backend.ship_input(X) as slicer:
            np.testing.assert_array_equal(slicer(50, 120).load(), X[50:120])
    finally:
        backend.close()


# The threading backend's pool ------------------------------------------------------


class RecordsThreads(RegressorMixin, BaseEstimator):
    """Records the thread each block runs in."""

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        self.threads_ = set()
        return self

    def predict(self, X):
        self.threads_.add(threading.get_ident())
        return X[:, 0] * 2.0


def test_threading_runs_share_their_threads():
    X = np.arange(2000.0).reshape(1000, 2)
    model = RecordsThreads().fit(X)
    wrapped = ParallelPostFit(model, backend="threading", n_jobs=2, block_size=10)
    for _ in range(3):
        np.testing.assert_array_equal(wrapped.predict(X), X[:, 0] * 2.0)
    assert 1 <= len(model.threads_) <= 2
    assert threading.get_ident() not in model.threads_


class ScoresWithPostfit(RegressorMixin, BaseEstimator):
    """Each block runs a threading run of its own, ``depth`` levels down."""

    def __init__(self, depth=1):
        self.depth = depth

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        if self.depth == 0:
            return X[:, 0] * 2.0
        inner = ScoresWithPostfit(self.depth - 1).fit(X)
        return ParallelPostFit(inner, backend="threading", n_jobs=2, block_size=3).predict(X)


class ScoresOnHelperThread(RegressorMixin, BaseEstimator):
    """Runs an inner threading run on a helper thread and waits, as a timeout wrapper does."""

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        inner = ScoresWithPostfit(depth=0).fit(X)
        result = {}

        def score():
            wrapped = ParallelPostFit(inner, backend="threading", n_jobs=2, block_size=3)
            result["out"] = wrapped.predict(X)

        helper = threading.Thread(target=score)
        helper.start()
        helper.join()
        return result["out"]


@pytest.mark.parametrize(
    "make_outer",
    [lambda: ScoresWithPostfit(depth=2), ScoresOnHelperThread],
    ids=["in_block", "on_helper_thread"],
)
def test_nested_threading_runs_do_not_deadlock(make_outer):
    X = np.arange(120.0).reshape(60, 2)
    outcome = {}

    def run():
        wrapped = ParallelPostFit(make_outer().fit(X), backend="threading", n_jobs=2, block_size=10)
        outcome["got"] = wrapped.predict(X)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "a nested run waited forever on the shared pool"
    np.testing.assert_array_equal(outcome["got"], X[:, 0] * 2.0)


def test_threads_stay_bounded_across_worker_counts():
    X = np.arange(2000.0).reshape(1000, 2)
    model = RecordsThreads().fit(X)
    before = threading.active_count()
    for n_jobs in (2, 3, 4, 6, 8, 2):
        ParallelPostFit(model, backend="threading", n_jobs=n_jobs, block_size=10).predict(X)
    deadline = time.monotonic() + 10
    while threading.active_count() > before + 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Only the last pool's threads stay: earlier pools were shut down.
    assert threading.active_count() <= before + 8


class FailsFirstBlock(RegressorMixin, BaseEstimator):
    """Fails on the block that starts at row 0; the others sleep, then count as finished."""

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        self.started_ = []
        self.finished_ = []
        return self

    def predict(self, X):
        if X[0, 0] == 0:
            raise ValueError("first block fails")
        self.started_.append(X[0, 0])
        time.sleep(0.2)
        self.finished_.append(X[0, 0])
        return X[:, 0]


def test_threading_error_waits_for_running_blocks():
    X = np.arange(200.0).reshape(100, 2)
    model = FailsFirstBlock().fit(X)
    wrapped = ParallelPostFit(model, backend="threading", n_jobs=2, block_size=10)
    with pytest.raises(ValueError, match="first block fails"):
        wrapped.predict(X)
    # A block still running after the run raised could write after its end.
    assert sorted(model.started_) == sorted(model.finished_)
    assert len(model.started_) <= 3


# The caller's scikit-learn configuration -------------------------------------------


@pytest.mark.parametrize("backend", ["sequential", "threading", "loky"])
def test_blocks_follow_caller_sklearn_config(backend):
    import pandas as pd
    from sklearn import config_context
    from sklearn.preprocessing import StandardScaler

    X = pd.DataFrame(np.arange(400.0).reshape(200, 2), columns=["a", "b"])
    scaler = StandardScaler().fit(X)
    wrapper = ParallelPostFit(scaler, backend=backend, n_jobs=2, block_size=50)
    with config_context(transform_output="pandas"):
        expected = scaler.transform(X)
        got = wrapper.transform(X)
    assert isinstance(expected, pd.DataFrame)
    pd.testing.assert_frame_equal(got, expected)
    # Outside the context, the default output comes back.
    assert isinstance(wrapper.transform(X), np.ndarray)


class RecordsCollector(RegressorMixin, BaseEstimator):
    """Records whether the garbage collector was enabled during each call."""

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        self.enabled_ = []
        return self

    def predict(self, X):
        self.enabled_.append(gc.isenabled())
        time.sleep(len(X) * 1e-6)
        return np.asarray(X)[:, 0].copy()


@pytest.mark.parametrize("enabled", [True, False])
def test_probes_pause_and_restore_garbage_collector(enabled):
    X = np.arange(400_000.0).reshape(200_000, 2)
    estimator = RecordsCollector().fit(X[:5])
    run = _runner._InMemoryRun(
        estimator, "predict", X, _runner.RunOptions(n_jobs=2), {}, False, None
    )
    was = gc.isenabled()
    try:
        if not enabled:
            gc.disable()
        overhead, per_row = run.probe_one_thread()
        assert gc.isenabled() is enabled
        run.probe_two_threads(overhead, per_row)
        assert gc.isenabled() is enabled
    finally:
        if was:
            gc.enable()
    assert estimator.enabled_ and not any(estimator.enabled_)


# Block sizes ------------------------------------------------------------------------


@pytest.mark.parametrize("n_rows", [1, 7, 999, 1_000, 1_000_001, 2_000_000, 10**9])
@pytest.mark.parametrize("n_workers", [1, 2, 3, 8])
@pytest.mark.parametrize("seconds_per_row", [None, 1e-7, 3.6e-6])
def test_block_size_gives_equal_blocks_for_every_worker(n_rows, n_workers, seconds_per_row):
    size = _plan.choose_block_size(
        n_rows, 160, n_workers, 2**30, seconds_per_row, seconds_per_call=9e-3
    )
    assert 1 <= size <= max(1, _plan.MAX_BLOCK_BYTES // 160 / 0.99 + 1)
    n_blocks = -(-n_rows // size)
    # With fewer rows than n_blocks * (n_blocks - 1), equal blocks of whole
    # rows can come out fewer than planned (9 rows in 6 blocks are 5 of 2).
    if n_blocks > 1 and n_rows > n_blocks * (n_blocks - 1):
        assert n_blocks % n_workers == 0
        # Every block but the last is full, and the last is not much shorter.
        assert n_rows - (n_blocks - 1) * size > size - n_blocks


def test_block_size_serial_thread_calls():
    # A 50-tree forest: 9 ms a call, 3.6 µs a row, 2,000,000 rows on two workers.
    args = (2_000_000, 160, 2, 2**30, 3.6e-6, 9e-3)
    overlapping = _plan.choose_block_size(*args)
    one_at_a_time = _plan.choose_block_size(*args, calls_overlap=False)
    # sqrt(2 * W * c / 2) = 0.25 s, against sqrt(2 * W * c) = 0.36 s a block.
    assert 60_000 <= overlapping <= 72_000
    assert 95_000 <= one_at_a_time <= 105_000


@pytest.mark.parametrize("n_rows", [1, 2, 99, 100, 101, 150, 199, 4_097, 10**6])
@pytest.mark.parametrize("n_workers", [1, 2, 4])
@pytest.mark.parametrize("row_nbytes", [8, 160, 2**20, 32 * 2**20])
def test_block_size_stays_within_limits(n_rows, n_workers, row_nbytes):
    size = _plan.choose_block_size(n_rows, row_nbytes, n_workers, 2**28)
    limit = max(1, _plan.MAX_BLOCK_BYTES // row_nbytes)
    assert size <= 1.01 * limit
    assert size * -(-n_rows // size) >= n_rows


def test_threads_place_outputs_in_result(monkeypatch):
    X = np.arange(40_000.0).reshape(20_000, 2)
    estimator = RecordsCollector().fit(X[:5])
    placed = []
    original_place = OutputCollector.place

    def counting_place(self, start, stop, out):
        was_placed = original_place(self, start, stop, out)
        placed.append((threading.current_thread().name, was_placed))
        return was_placed

    monkeypatch.setattr(OutputCollector, "place", counting_place)
    got = ParallelPostFit(estimator, backend="threading", n_jobs=2, block_size=1_000).predict(X)

    np.testing.assert_array_equal(got, X[:, 0])
    # Outputs that finish before the calling thread creates the array come
    # back to it, and the later ones are placed by the worker threads.
    assert len(placed) == 20
    assert sum(was_placed for _, was_placed in placed) >= 10
    assert all(name != threading.main_thread().name for name, _ in placed)


def _count_speedup_checks(monkeypatch, seconds_per_row, measured, threaded_pauses=()):
    """Run ``predict`` four times with faked probes, and return the probes and the backends.

    The first runs on threads sleep for ``threaded_pauses`` seconds each
    before scoring, as slow as a process's first threaded run can be.
    """
    measured = iter(measured)
    threaded_pauses = iter(threaded_pauses)
    probes = []
    chosen = []

    def fake_probe_one_thread(self):
        self.score_here(min(self.n, 128), inner_threads=1)
        return 0.0, seconds_per_row

    def fake_probe_two_threads(self, overhead, per_row):
        probes.append(self.n)
        return next(measured)

    original_run_backend = _runner._InMemoryRun.run_backend

    def recording_run_backend(self, name, *args, **kwargs):
        chosen.append(name)
        if name == "threading":
            time.sleep(next(threaded_pauses, 0.0))
        return original_run_backend(self, name, *args, **kwargs)

    monkeypatch.setattr(_runner._InMemoryRun, "probe_one_thread", fake_probe_one_thread)
    monkeypatch.setattr(_runner._InMemoryRun, "probe_two_threads", fake_probe_two_threads)
    monkeypatch.setattr(_runner._InMemoryRun, "run_backend", recording_run_backend)
    X = np.arange(200_000.0).reshape(100_000, 2)
    estimator = RecordsCollector().fit(X[:5])
    wrapper = ParallelPostFit(estimator, n_jobs=2)
    for _ in range(4):
        np.testing.assert_array_equal(wrapper.predict(X), X[:, 0])
    return probes, chosen


def test_low_speedup_checked_on_threaded_run(monkeypatch):
    # 100,000 rows at 1 µs: 0.1 s of work, too little for processes. The
    # first call measured 0.8 and stayed on one thread. The second runs on
    # threads, which beat the predicted 0.1 s, and later calls keep them.
    probes, chosen = _count_speedup_checks(monkeypatch, 1e-6, [0.8])
    assert len(probes) == 1
    assert chosen == ["threading", "threading", "threading"]


def test_low_speedup_second_threaded_check(monkeypatch):
    # 0.3 s of predicted work. The probe read 0.8, and the first threaded
    # run took over 0.5 s (below 0.6), as a process's first one can. The third
    # call checks threads again and beats the predicted time, because the
    # scoring itself takes about 0.05 s. The fourth call keeps threads.
    probes, chosen = _count_speedup_checks(monkeypatch, 3e-6, [0.8], threaded_pauses=[0.5, 0.06])
    assert len(probes) == 1
    assert chosen == ["threading", "threading", "threading"]


def test_low_speedup_kept_after_two_slow_runs(monkeypatch):
    # The probe and both threaded runs read below 1: the fourth call stays on one thread.
    probes, chosen = _count_speedup_checks(monkeypatch, 3e-6, [0.8], threaded_pauses=[0.5, 0.5])
    assert len(probes) == 1
    assert chosen == ["threading", "threading"]


def test_low_speedup_probed_once_more_for_long_work(monkeypatch):
    # 100,000 rows at 50 µs: 5 s of work, where processes are the other
    # choice. The first call measured 1.2 and went to processes. The second
    # measured again and kept 1.6, and later calls measure no more.
    probes, chosen = _count_speedup_checks(monkeypatch, 5e-5, [1.2, 1.6])
    assert len(probes) == 2
    assert chosen == ["loky", "threading", "threading", "threading"]
