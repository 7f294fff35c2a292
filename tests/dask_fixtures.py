"""Dask test helpers: the LocalCluster fixtures and estimators that report from workers.

The estimators here are importable by the cluster's worker processes, which
start with the test process's ``sys.path``, so they are pickled by reference.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require_loopback_only
from sklearn.linear_model import LogisticRegression

#: Worker processes of the test cluster, each with one thread.
N_WORKERS = 2


@pytest.fixture(scope="session")
def dask_cluster():
    """Start a two-process LocalCluster on 127.0.0.1, without a dashboard, for the session."""
    require_loopback_only()
    from distributed import LocalCluster

    # Without a dashboard the scheduler still serves its HTTP routes (health,
    # metrics). A fixed port (8787 by default) can be taken by another cluster,
    # and distributed then leaks the socket of its failed attempt, so the
    # routes get a free port on loopback instead.
    cluster = LocalCluster(
        n_workers=N_WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def dask_client(dask_cluster):
    """Return a client of the session's cluster that is not the default client.

    Tests that need a default client enter ``client.as_current()`` themselves,
    so that tests without a cluster never find one by accident.
    """
    from distributed import Client

    client = Client(dask_cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()


class CountingLogisticRegression(LogisticRegression):
    """A LogisticRegression that appends its process id to a file each time it is unpickled."""

    log_path: str | None = None

    def __setstate__(self, state):
        super().__setstate__(state)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(f"{os.getpid()}\n")


def load_counts(log_path) -> dict[int, int]:
    """Return how many times each process unpickled a :class:`CountingLogisticRegression`."""
    counts: dict[int, int] = {}
    path = Path(log_path)
    if not path.exists():
        return counts
    for line in path.read_text().split():
        counts[int(line)] = counts.get(int(line), 0) + 1
    return counts


class GatedLogisticRegression(LogisticRegression):
    """A LogisticRegression whose ``predict`` waits until a release file exists.

    Each call first writes a file named after its process id into
    ``gate_dir``, so a test can see which worker process is scoring and
    kill it while the call waits. The wait ends after ``max_wait`` seconds
    even without the release file, so a broken test cannot hang.
    """

    gate_dir: str | None = None
    max_wait: float = 60.0

    def predict(self, X):
        if self.gate_dir is not None:
            gate = Path(self.gate_dir)
            (gate / f"started-{os.getpid()}").touch()
            deadline = time.monotonic() + self.max_wait
            while not (gate / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return super().predict(X)


class CrashingLogisticRegression(LogisticRegression):
    """A LogisticRegression whose first ``crashes`` predict calls, in any process, exit it.

    Each call claims one of the flag files ``crash-0``, ``crash-1``, ... in
    ``flag_dir`` and exits its process at once when it got one, as a worker
    killed by the system would, so that both workers of the cluster die with
    every copy of the model they held.
    """

    flag_dir: str | None = None
    crashes: int = 2

    def predict(self, X):
        if self.flag_dir is not None:
            for number in range(self.crashes):
                try:
                    os.close(
                        os.open(Path(self.flag_dir) / f"crash-{number}", os.O_CREAT | os.O_EXCL)
                    )
                except FileExistsError:
                    continue
                os._exit(3)
        return super().predict(X)


def started_pids(gate_dir) -> list[int]:
    """Return the process ids that entered :meth:`GatedLogisticRegression.predict`."""
    return [int(p.name.split("-")[1]) for p in Path(gate_dir).glob("started-*")]


def big_model(X, y, nbytes):
    """Return a fitted LogisticRegression that pickles to more than ``nbytes`` bytes."""
    model = LogisticRegression(max_iter=500).fit(X, y)
    # Random values do not compress, so the pickled size is the array's size.
    model.ballast_ = np.random.default_rng(0).random(nbytes // 8 + 1)
    return model


def scoring_tasks(lazy, method):
    """Return the keys of the graph's scoring tasks, not those that cut merged outputs."""
    return [
        key
        for key in dict(lazy.__dask_graph__())
        if isinstance(key, tuple)
        and str(key[0]).startswith(f"postfit-{method}-")
        and not str(key[0]).startswith(f"postfit-{method}-rows-")
    ]
