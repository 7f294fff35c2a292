"""Timings the automatic backend keeps between calls: reuse, expiry and correction."""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LinearRegression

from postfit import ParallelPostFit, _plan, _runner, _timings


def _data(n_rows=200_000):
    X = np.arange(2.0 * n_rows).reshape(n_rows, 2)
    return X, LinearRegression().fit(X[:10], X[:10, 0] * 3.0 + 1.0)


@pytest.fixture
def probes(monkeypatch):
    """Count the one-thread and two-thread probes of automatic runs."""
    counts = {"one": 0, "two": 0}
    probe_one = _runner._InMemoryRun.probe_one_thread
    probe_two = _runner._InMemoryRun.probe_two_threads

    def counting_one(self):
        counts["one"] += 1
        return probe_one(self)

    def counting_two(self, overhead, per_row):
        counts["two"] += 1
        return probe_two(self, overhead, per_row)

    monkeypatch.setattr(_runner._InMemoryRun, "probe_one_thread", counting_one)
    monkeypatch.setattr(_runner._InMemoryRun, "probe_two_threads", counting_two)
    return counts


def test_second_call_plans_from_kept_timings(probes):
    X, model = _data()
    wrapped = ParallelPostFit(model, n_jobs=2)
    first = wrapped.predict(X)
    assert probes["one"] == 1
    kept_timing = _timings.MEMORY.get(model, _timings.input_layout(X, "predict", {}))
    assert kept_timing is not None
    assert kept_timing.seconds_per_row > 0

    second = wrapped.predict(X)
    assert probes["one"] == 1
    np.testing.assert_allclose(first, model.predict(X), rtol=1e-12)
    np.testing.assert_allclose(second, model.predict(X), rtol=1e-12)


def test_timings_are_kept_per_method_and_layout(probes):
    X, model = _data()
    wrapped = ParallelPostFit(model, n_jobs=2)
    wrapped.predict(X)
    wrapped.predict(X.astype(np.float32))
    wrapped.predict(np.asfortranarray(X))
    assert probes["one"] == 3
    wrapped.predict(X.astype(np.float32))
    assert probes["one"] == 3


def test_refit_wrapper_measures_again(probes):
    X, model = _data()
    wrapped = ParallelPostFit(LinearRegression(), n_jobs=2).fit(X[:100], X[:100, 0])
    wrapped.predict(X)
    wrapped.fit(X[:100], X[:100, 1])
    wrapped.predict(X)
    assert probes["one"] == 2


def test_kept_timing_far_above_run_is_lowered(probes):
    X, model = _data(20_000)
    layout = _timings.input_layout(X, "predict", {})
    # One millisecond a row predicts 20 s on one thread: the run takes
    # milliseconds, so the kept costs come down to what it allows.
    wrong = _timings.Timing(0.0, 1e-3, 2.0, time.monotonic())
    _timings.MEMORY.put(model, layout, wrong)
    wrapped = ParallelPostFit(model, n_jobs=2)
    got = wrapped.predict(X)
    np.testing.assert_allclose(got, model.predict(X), rtol=1e-12)
    lowered = _timings.MEMORY.get(model, layout)
    assert lowered is not None
    assert lowered.seconds_per_row < 1e-4
    assert lowered.two_thread_speedup == 2.0

    wrapped.predict(X)
    assert probes["one"] == 0


def test_kept_timing_far_below_run_is_dropped():
    X, model = _data()
    layout = _timings.input_layout(X, "predict", {})
    # A femtosecond a row predicts well under a microsecond for the run:
    # any real run takes longer (a model fitted again in place, a busy machine).
    wrong = _timings.Timing(0.0, 1e-15, 2.0, time.monotonic())
    _timings.MEMORY.put(model, layout, wrong)
    got = ParallelPostFit(model, n_jobs=2).predict(X)
    np.testing.assert_allclose(got, model.predict(X), rtol=1e-12)
    assert _timings.MEMORY.get(model, layout) is None


def test_low_speedup_rechecked_on_threaded_run(probes, monkeypatch):
    X, model = _data()
    layout = _timings.input_layout(X, "predict", {})
    # 0.2 s of predicted work, too little for processes, and a low speed-up
    # measured once: the next run goes to threads and measures it there.
    low = _timings.Timing(0.0, 1e-6, 0.9, time.monotonic(), speedup_probes=1)
    _timings.MEMORY.put(model, layout, low)
    chosen = []
    run_backend = _runner._InMemoryRun.run_backend

    def recording(self, name, *args, **kwargs):
        chosen.append(name)
        return run_backend(self, name, *args, **kwargs)

    monkeypatch.setattr(_runner._InMemoryRun, "run_backend", recording)
    got = ParallelPostFit(model, n_jobs=2).predict(X)
    np.testing.assert_allclose(got, model.predict(X), rtol=1e-12)
    assert chosen == ["threading"]
    assert probes["two"] == 0
    kept_timing = _timings.MEMORY.get(model, layout)
    assert kept_timing is not None
    assert kept_timing.speedup_probes == 2
    assert 0.9 <= kept_timing.two_thread_speedup <= 2.0


def test_lowered_timing_fits_within_run():
    timing = _timings.Timing(0.5, 1e-3, None, time.monotonic())
    lowered = timing.lowered_to(rows=1_000, elapsed=0.1, n_workers=2)
    assert lowered.seconds_per_call == pytest.approx(0.2)
    assert lowered.seconds_per_row == pytest.approx(0.2 / 1_000)

    cheap_call = _timings.Timing(0.01, 1e-3, None, time.monotonic())
    lowered = cheap_call.lowered_to(rows=1_000, elapsed=0.1, n_workers=2)
    assert lowered.seconds_per_call == pytest.approx(0.01)
    assert lowered.seconds_per_row == pytest.approx(0.2 / 1_000)


def test_lowered_timing_keeps_threaded_work():
    # 2,000,000 rows in 40 ms on two threads: 80 ms of single-thread work at
    # most, above the work below which the planner makes one call.
    timing = _timings.Timing(0.03, 1e-6, 1.5, time.monotonic())
    lowered = timing.lowered_to(rows=2_000_000, elapsed=0.04, n_workers=2)
    assert lowered.seconds_per_row * 2_000_000 == pytest.approx(0.08)
    assert lowered.seconds_per_row * 2_000_000 >= _plan.DIRECT_MAX_SECONDS


def test_old_timing_expires():
    X, model = _data(20_000)
    layout = _timings.input_layout(X, "predict", {})
    old = _timings.Timing(0.0, 1e-7, None, time.monotonic() - _timings.REUSE_SECONDS - 1)
    _timings.MEMORY.put(model, layout, old)
    assert _timings.MEMORY.get(model, layout) is None


def test_timings_go_with_their_estimator():
    X, model = _data(20_000)
    ParallelPostFit(model, n_jobs=2).predict(X)
    assert len(_timings.MEMORY) == 1
    del model
    gc.collect()
    assert len(_timings.MEMORY) == 0


def test_layout_separates_what_changes_the_cost():
    X = np.zeros((10, 3))
    layout = _timings.input_layout
    assert layout(X, "predict", {}) != layout(X, "predict_proba", {})
    assert layout(X, "predict", {}) != layout(X.astype(np.float32), "predict", {})
    assert layout(X, "predict", {}) != layout(np.zeros((10, 4)), "predict", {})
    assert layout(X, "predict", {}) == layout(np.ones((99, 3)), "predict", {})
    # Keyword arguments and sparse density change the cost: nothing is kept.
    assert layout(X, "predict", {"return_std": True}) is None
    assert layout(sp.csr_matrix(X), "predict", {}) is None


class ComparesByValue(RegressorMixin, BaseEstimator):
    """Unhashable, with an ``__eq__`` that returns an array, as NumPy-like objects do."""

    __hash__ = None

    def __eq__(self, other):
        return np.array([True, False])

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        return X[:, 0] * 2.0


class HashRaises(ComparesByValue):
    def __hash__(self):
        raise NotImplementedError("no hash")


@pytest.mark.parametrize("kind", [ComparesByValue, HashRaises])
def test_odd_hash_and_eq_keep_timings(probes, kind):
    X, _ = _data()
    models = [kind().fit(X[:5]) for _ in range(2)]
    for model in models:
        wrapped = ParallelPostFit(model, n_jobs=2)
        for _ in range(2):
            np.testing.assert_array_equal(wrapped.predict(X), X[:, 0] * 2.0)
    # Identity, not hash or equality, separates the estimators.
    assert probes["one"] == 2
