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
from sklearn.linear_model import LogisticRegression
from test_io_resume import LoggingClassifier

import postfit
from postfit import ParallelPostFit
from postfit.exceptions import OutputExistsError

# LoggingClassifier fails on the block of row 333 while its flag file exists.
N_ROWS = 400
BLOCK_SIZE = 50
PROBA_COLUMNS = ["proba_False", "proba_True"]


@pytest.fixture
def csv_input(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"row": np.arange(N_ROWS, dtype=float), "x": rng.normal(size=N_ROWS)})
    frame["code"] = np.where(np.arange(N_ROWS) % 3 == 0, "NA", "ok")
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    inner = LogisticRegression().fit(frame[["row", "x"]], frame["x"] > 0)
    model = LoggingClassifier(inner, str(tmp_path / "calls.log"), str(tmp_path / "fail.flag"))
    return frame, path, model


def _interrupt(wrapper, source, output, flag_path, **options):
    """Run ``predict_proba`` into ``output`` until a block fails, as a crash would stop it."""
    with open(flag_path, "w"):
        pass
    with pytest.raises(RuntimeError, match="injected failure"):
        wrapper.predict_proba(source, output=output, **options)
    os.remove(flag_path)


def test_resume_with_other_csv_options_rejected(csv_input, tmp_path):
    _, path, model = csv_input
    wrapper = ParallelPostFit(model, backend="sequential", block_size=BLOCK_SIZE)
    output = tmp_path / "out"
    source = postfit.read_csv(path, columns=["row", "x"])
    _interrupt(wrapper, source, output, model.flag_path, keep_columns=["code"])

    other = postfit.read_csv(path, columns=["row", "x"], null_values=[""])
    with pytest.raises(ValueError, match="read with other options"):
        wrapper.predict_proba(other, output=output, keep_columns=["code"], resume=True)


@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_interrupted_overwrite_resumes(csv_input, tmp_path, fmt):
    frame, path, model = csv_input
    wrapper = ParallelPostFit(model, backend="sequential", block_size=BLOCK_SIZE)
    source = postfit.read_csv(path, columns=["row", "x"])
    output = tmp_path / f"out.{fmt}"
    wrapper.predict_proba(source.read().iloc[:10], output=output)
    old = output.read_bytes()

    _interrupt(wrapper, source, output, model.flag_path, overwrite=True)
    assert output.read_bytes() == old
    with pytest.raises(OutputExistsError, match=r"An interrupted run .* resume=True"):
        wrapper.predict_proba(source, output=output)

    result = wrapper.predict_proba(source, output=output, resume=True)

    assert result.n_resumed > 0
    if fmt == "csv":
        written = pd.read_csv(output, engine="pyarrow")[PROBA_COLUMNS].to_numpy()
    else:
        written = np.load(output)
    assert_allclose(written, model.inner.predict_proba(frame[["row", "x"]]), rtol=1e-12)


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
    first = postfit.read_csv(path, columns=["row", "x"], column_types={"x": "float64"})
    _interrupt(wrapper, first, output, model.flag_path)

    source = postfit.read_csv(path, columns=["row", "x"], column_types={"x": pa.float64()})
    result = wrapper.predict_proba(source, output=output, resume=True)

    assert result.n_resumed > 0
    written = pd.read_parquet(output)[PROBA_COLUMNS].to_numpy()
    assert_allclose(written, model.inner.predict_proba(frame[["row", "x"]]), rtol=1e-12)
