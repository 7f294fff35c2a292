"""Cases found by a review of file inputs, resuming and killed runs.

Each test failed before its fix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import psutil
import pytest
from numpy.testing import assert_allclose
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

import postfit
from postfit import ParallelPostFit
from postfit.exceptions import OutputExistsError

N_ROWS = 400
BLOCK_SIZE = 50
FAIL_ROW = 333


class FailingClassifier(ClassifierMixin, BaseEstimator):
    """A fitted LogisticRegression that raises on the block of ``FAIL_ROW`` while a flag exists."""

    def __init__(self, inner=None, flag_path=None):
        self.inner = inner
        self.flag_path = flag_path

    def fit(self, X, y):
        return self

    def __sklearn_is_fitted__(self):
        return True

    @property
    def classes_(self):
        return self.inner.classes_

    def predict(self, X):
        # The first column holds the row numbers.
        if os.path.exists(self.flag_path) and FAIL_ROW in np.asarray(X)[:, 0]:
            raise RuntimeError(f"injected failure on row {FAIL_ROW}")
        return self.inner.predict(X)


@pytest.fixture
def csv_input(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"row": np.arange(N_ROWS, dtype=float), "x": rng.normal(size=N_ROWS)})
    frame["code"] = np.where(np.arange(N_ROWS) % 3 == 0, "NA", "ok")
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    inner = LogisticRegression().fit(frame[["row", "x"]].to_numpy(), frame["x"] > 0)
    model = FailingClassifier(inner, str(tmp_path / "fail.flag"))
    return frame, path, model


def test_resume_with_other_csv_options_rejected(csv_input, tmp_path):
    frame, path, model = csv_input
    wrapper = ParallelPostFit(model, backend="sequential", block_size=BLOCK_SIZE)
    output = tmp_path / "out"
    (tmp_path / "fail.flag").write_text("")
    with pytest.raises(RuntimeError, match="injected failure"):
        wrapper.predict(
            postfit.read_csv(path, columns=["row", "x"]), output=output, keep_columns=["code"]
        )

    other = postfit.read_csv(path, columns=["row", "x"], null_values=[""])
    with pytest.raises(ValueError, match="read with other options"):
        wrapper.predict(other, output=output, keep_columns=["code"], resume=True)


@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_interrupted_overwrite_resumes(csv_input, tmp_path, fmt):
    frame, path, model = csv_input
    wrapper = ParallelPostFit(model, backend="sequential", block_size=BLOCK_SIZE)
    source = postfit.read_csv(path, columns=["row", "x"])
    output = tmp_path / f"out.{fmt}"
    wrapper.predict(source.read().iloc[:10].to_numpy(), output=output)
    old = output.read_bytes()

    (tmp_path / "fail.flag").write_text("")
    with pytest.raises(RuntimeError, match="injected failure"):
        wrapper.predict(source, output=output, overwrite=True)
    assert output.read_bytes() == old
    with pytest.raises(OutputExistsError, match=r"An interrupted run .* resume=True"):
        wrapper.predict(source, output=output)

    os.remove(tmp_path / "fail.flag")
    result = wrapper.predict(source, output=output, resume=True)

    assert result.n_resumed > 0
    if fmt == "csv":
        written = pd.read_csv(output)["prediction"].to_numpy()
    else:
        written = np.load(output)
    assert_allclose(written, model.inner.predict(frame[["row", "x"]].to_numpy()))


LONG_LOKY_RUN = textwrap.dedent(
    """
    import time

    import numpy as np
    from sklearn.preprocessing import FunctionTransformer

    from postfit import ParallelPostFit


    def slow(X):
        time.sleep(0.2)
        return X


    estimator = FunctionTransformer(slow).fit(np.zeros((2, 2)))
    print("started", flush=True)
    ParallelPostFit(estimator, backend="loky", n_jobs=2, block_size=10).transform(
        np.zeros((10_000, 2))
    )
    """
)


def test_loky_workers_end_with_killed_parent():
    run = subprocess.Popen([sys.executable, "-c", LONG_LOKY_RUN], stdout=subprocess.PIPE)
    try:
        assert run.stdout.readline() == b"started\n"
        workers = []
        deadline = psutil.time.monotonic() + 60
        while len(workers) < 2 and psutil.time.monotonic() < deadline:
            psutil.time.sleep(0.2)
            workers = [
                child
                for child in psutil.Process(run.pid).children(recursive=True)
                if "resource_tracker" not in " ".join(child.cmdline())
            ]
        assert len(workers) >= 2, "the loky workers did not start"
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
        run.stdout.close()

    deadline = psutil.time.monotonic() + 15
    while psutil.time.monotonic() < deadline and any(_running(w) for w in workers):
        psutil.time.sleep(0.2)
    running = [worker.pid for worker in workers if _running(worker)]
    for worker in workers:
        if _running(worker):
            worker.kill()
    assert running == []


def _running(process) -> bool:
    """Return True while ``process`` runs: an exited process not yet reaped counts as ended."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_mixed_delimiters_named(tmp_path):
    (tmp_path / "a.csv").write_text("a,b\n1,2\n")
    (tmp_path / "b.csv").write_text("a\tb\n1\t2\n")

    with pytest.raises(ValueError, match="may use different delimiters"):
        _ = postfit.read_csv(tmp_path).schema


def test_resume_with_same_type_by_other_name(csv_input, tmp_path):
    import pyarrow as pa

    frame, path, model = csv_input
    wrapper = ParallelPostFit(model, backend="sequential", block_size=BLOCK_SIZE)
    output = tmp_path / "out"
    (tmp_path / "fail.flag").write_text("")
    with pytest.raises(RuntimeError, match="injected failure"):
        wrapper.predict(
            postfit.read_csv(path, columns=["row", "x"], column_types={"x": "float64"}),
            output=output,
        )
    os.remove(tmp_path / "fail.flag")

    source = postfit.read_csv(path, columns=["row", "x"], column_types={"x": pa.float64()})
    result = wrapper.predict(source, output=output, resume=True)

    assert result.n_resumed > 0
    written = pd.read_parquet(output)["prediction"].to_numpy()
    assert_allclose(written, model.inner.predict(frame[["row", "x"]].to_numpy()))
