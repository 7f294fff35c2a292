"""glibc's allocator thresholds while a block runs on a worker (postfit._malloc)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from postfit import _malloc
from postfit._dask_tasks import score_chunk


class FakeLibc:
    """Records the allocator calls that block_heap makes."""

    def __init__(self):
        self.calls = []

    def mallopt(self, parameter, value):
        self.calls.append(("mallopt", parameter, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(_malloc, "_glibc", lambda: fake)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv(_malloc.OPT_OUT_VARIABLE, raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    return fake


RAISED = [
    ("mallopt", _malloc.M_MMAP_THRESHOLD, _malloc.BLOCK_MMAP_THRESHOLD),
    ("mallopt", _malloc.M_TRIM_THRESHOLD, _malloc.BLOCK_TRIM_THRESHOLD),
]


def restored(trim=65536, mmap=_malloc.DEFAULT_MMAP_THRESHOLD):
    return [
        ("mallopt", _malloc.M_MMAP_THRESHOLD, mmap),
        ("mallopt", _malloc.M_TRIM_THRESHOLD, trim),
        ("malloc_trim", 0),
    ]


def test_raises_then_restores_the_workers_thresholds(libc):
    with _malloc.block_heap():
        assert libc.calls == RAISED
    assert libc.calls == RAISED + restored()


def test_restores_a_mmap_threshold_set_by_the_environment(libc, monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0x20000")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "262144")
    with _malloc.block_heap():
        pass
    assert libc.calls == RAISED + restored(trim=0x20000, mmap=262144)


def test_restores_after_an_error(libc):
    with pytest.raises(ValueError, match="inside"), _malloc.block_heap():
        raise ValueError("inside")
    assert libc.calls == RAISED + restored()


def test_overlapping_blocks_restore_once_at_the_end(libc):
    entered = threading.Barrier(2)
    leave = threading.Event()

    def block():
        with _malloc.block_heap():
            entered.wait()
            leave.wait()

    other = threading.Thread(target=block)
    other.start()
    with _malloc.block_heap():
        entered.wait()
        leave.set()
        other.join()
        # The other block has finished, and this one still runs.
        assert libc.calls == RAISED
    assert libc.calls == RAISED + restored()


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"MALLOC_TRIM_THRESHOLD_": "65536", _malloc.OPT_OUT_VARIABLE: "keep"},
        {"MALLOC_TRIM_THRESHOLD_": "lots"},
        {"MALLOC_TRIM_THRESHOLD_": "-1"},
    ],
    ids=["no-variable", "opted-out", "not-a-number", "negative"],
)
def test_changes_nothing_unless_the_process_fixed_its_thresholds(libc, monkeypatch, environ):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with _malloc.block_heap():
        pass
    assert libc.calls == []


def test_dask_chunks_run_under_the_raised_thresholds(libc):
    X = np.random.default_rng(0).normal(size=(40, 3))
    estimator = LogisticRegression().fit(X, X[:, 0] > 0)
    seen = []

    class Recorder(LogisticRegression):
        def predict(self, X):
            seen.append(list(libc.calls))
            return super().predict(X)

    recorder = Recorder().fit(X, X[:, 0] > 0)
    # The estimator itself rather than pickle_model's bytes: an unpickled
    # copy of this local class would record into a copy of ``seen``.
    out = score_chunk(X, recorder, "predict", {}, None, np.empty(0, dtype=bool))
    np.testing.assert_array_equal(out, estimator.predict(X))
    assert seen == [RAISED]
    assert libc.calls == RAISED + restored()


FAULTS_SCRIPT = textwrap.dedent(
    """
    import resource
    import numpy as np
    from postfit._malloc import block_heap

    def faults(rounds=40):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(rounds):
            a = np.ones(1 << 17)  # 1 MiB, touched, below NumPy's huge-page size
            del a
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    outside = faults()
    with block_heap():
        faults(1)  # the first allocation grows the heap once
        inside = faults()
    after = faults()
    print(outside, inside, after)
    """
)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or _malloc._glibc() is None, reason="needs glibc"
)
def test_block_heap_stops_page_faults():
    environ = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")
    environ.pop(_malloc.OPT_OUT_VARIABLE, None)
    environ.pop("MALLOC_MMAP_THRESHOLD_", None)
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_SCRIPT],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    outside, inside, after = map(int, result.stdout.split())
    # Each mapped 1 MiB array faults in 256 pages: 10,240 over 40 arrays.
    assert outside > 5_000
    assert inside < outside / 10
    # The worker's own settings are back once the block ends.
    assert after > 5_000
