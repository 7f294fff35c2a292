"""Interrupted runs, resuming, overwriting and the output lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

import postfit
from postfit import ParallelPostFit
from postfit.backends.loky import get_pool
from postfit.exceptions import OutputExistsError
from postfit.io import OutputLockedError

BLOCK_SIZE = 50
N_ROWS = 600
FAIL_ROW = 333


class LoggingClassifier(ClassifierMixin, BaseEstimator):
    """A fitted LogisticRegression that logs each call and fails while a flag file exists.

    Each ``predict_proba`` call appends the first row's ``row`` feature to
    ``log_path``, so a test can tell which blocks were scored. A call whose
    rows include ``FAIL_ROW`` raises while ``flag_path`` exists.
    """

    def __init__(self, inner=None, log_path=None, flag_path=None):
        self.inner = inner
        self.log_path = log_path
        self.flag_path = flag_path

    def fit(self, X, y):
        return self

    def __sklearn_is_fitted__(self):
        return True

    @property
    def classes_(self):
        return self.inner.classes_

    @property
    def feature_names_in_(self):
        return self.inner.feature_names_in_

    def predict_proba(self, X):
        rows = X["row"].to_numpy()
        with open(self.log_path, "a") as f:
            f.write(f"{int(rows[0])}\n")
        if os.path.exists(self.flag_path) and FAIL_ROW in rows:
            raise RuntimeError(f"injected failure on row {FAIL_ROW}")
        return self.inner.predict_proba(X)


def scored_first_rows(log_path):
    if not os.path.exists(log_path):
        return []
    with open(log_path) as f:
        return [int(line) for line in f]


def finished_parts(output):
    with open(os.path.join(output, "_postfit_done.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"row": np.arange(N_ROWS, dtype=float), "x": rng.normal(size=N_ROWS)})
    frame["id"] = np.arange(N_ROWS) + 10_000
    frame.iloc[:300].to_parquet(folder / "a.parquet", row_group_size=100)
    frame.iloc[300:].to_parquet(folder / "b.parquet", row_group_size=100)
    inner = LogisticRegression().fit(frame[["row", "x"]], frame["x"] > 0)
    return frame, str(folder), inner


def make_model(inner, tmp_path):
    return LoggingClassifier(inner, str(tmp_path / "calls.log"), str(tmp_path / "fail.flag"))


# loky runs with Parquet only: the test restarts its worker processes, which
# costs seconds, and the CSV sink differs from Parquet only in the driver.
@pytest.mark.parametrize(
    ("backend", "fmt"),
    [
        ("sequential", "parquet"),
        ("sequential", "csv"),
        ("threading", "parquet"),
        ("threading", "csv"),
        ("loky", "parquet"),
    ],
)
def test_resume_scores_only_unfinished_blocks(backend, fmt, data, tmp_path):
    frame, folder, inner = data
    model = make_model(inner, tmp_path)
    output = str(tmp_path / ("out" if fmt == "parquet" else "out.csv"))
    parts = output if fmt == "parquet" else output + ".postfit-parts"
    clf = ParallelPostFit(model, backend=backend, n_jobs=2, block_size=BLOCK_SIZE)
    source = postfit.read_parquet(folder)

    (tmp_path / "fail.flag").write_text("")
    with pytest.raises(RuntimeError, match="injected failure"):
        clf.predict_proba(source, output=output, keep_columns=["id"])
    if backend == "loky":
        # Blocks already running in worker processes when the error arrived
        # still finish; wait for them so their calls are not counted below.
        get_pool(2).shutdown(wait=True)
    done_before = {receipt["index"] for receipt in finished_parts(parts)}
    assert 0 < len(done_before) < N_ROWS // BLOCK_SIZE
    assert not os.path.exists(os.path.join(parts, "_postfit.lock"))

    os.remove(tmp_path / "fail.flag")
    os.remove(tmp_path / "calls.log")
    with pytest.raises(OutputExistsError, match="resume=True"):
        clf.predict_proba(source, output=output, keep_columns=["id"])
    result = clf.predict_proba(source, output=output, keep_columns=["id"], resume=True)

    first_rows_of_finished = {index * BLOCK_SIZE for index in done_before}
    rescored = scored_first_rows(tmp_path / "calls.log")
    assert not first_rows_of_finished & set(rescored)
    assert len(rescored) == N_ROWS // BLOCK_SIZE - len(done_before)
    assert result.n_resumed == len(done_before)
    assert result.n_rows == N_ROWS

    # pandas 2.3's default CSV parser reads some floats up to 1.1e-16 off (7.6e-13
    # relative near zero). Its pyarrow engine, like pandas 3.1's default, is exact.
    if fmt == "parquet":
        written = pd.read_parquet(output)
    else:
        written = pd.read_csv(output, engine="pyarrow")
    assert_array_equal(written["id"].to_numpy(), frame["id"].to_numpy())
    expected = inner.predict_proba(frame[["row", "x"]])
    assert_allclose(written[["proba_False", "proba_True"]].to_numpy(), expected, rtol=1e-12)


def test_resume_of_complete_parquet_scores_nothing(data, tmp_path):
    _, folder, inner = data
    model = make_model(inner, tmp_path)
    clf = ParallelPostFit(model, backend="sequential", block_size=BLOCK_SIZE)
    source = postfit.read_parquet(folder)
    clf.predict_proba(source, output=tmp_path / "out")
    calls = len(scored_first_rows(tmp_path / "calls.log"))
    result = clf.predict_proba(source, output=tmp_path / "out", resume=True)
    assert len(scored_first_rows(tmp_path / "calls.log")) == calls
    assert result.n_resumed == result.n_blocks
    assert result.n_rows == N_ROWS


def test_resume_with_other_method_rejected(data, tmp_path):
    _, folder, inner = data
    clf = ParallelPostFit(inner, backend="sequential", block_size=BLOCK_SIZE)
    source = postfit.read_parquet(folder, columns=["row", "x"])
    clf.predict(source, output=tmp_path / "out")
    with pytest.raises(ValueError, match="method differs"):
        clf.predict_proba(source, output=tmp_path / "out", resume=True)


def test_resume_starts_fresh_without_output(data, tmp_path):
    frame, folder, inner = data
    clf = ParallelPostFit(inner, backend="sequential", block_size=BLOCK_SIZE)
    source = postfit.read_parquet(folder, columns=["row", "x"])
    result = clf.predict(source, output=tmp_path / "new", resume=True)
    assert result.n_resumed == 0
    written = pd.read_parquet(tmp_path / "new")
    assert_array_equal(written["prediction"], inner.predict(frame[["row", "x"]]))


@pytest.mark.parametrize("fmt", ["parquet", "csv", "npy"])
def test_existing_output_not_overwritten(fmt, data, tmp_path):
    frame, folder, inner = data
    clf = ParallelPostFit(inner, backend="sequential", block_size=BLOCK_SIZE)
    source = postfit.read_parquet(folder, columns=["row", "x"])
    output = tmp_path / f"out.{fmt}"
    clf.predict(source, output=output)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        clf.predict(source, output=output)
    result = clf.predict(source, output=output, overwrite=True)
    assert result.n_rows == N_ROWS
    with pytest.raises(ValueError, match="not both"):
        clf.predict(source, output=output, overwrite=True, resume=True)


def test_foreign_directory_never_deleted(data, tmp_path):
    _, folder, inner = data
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    clf = ParallelPostFit(inner, backend="sequential")
    source = postfit.read_parquet(folder, columns=["row", "x"])
    with pytest.raises(OutputExistsError, match="not written by postfit"):
        clf.predict(source, output=foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_second_run_rejected_by_lock(data, tmp_path):
    _, folder, inner = data
    output = tmp_path / "out"
    output.mkdir()
    holder = {"pid": os.getpid(), "host": os.uname().nodename, "started": "now"}
    (output / "_postfit.lock").write_text(json.dumps(holder))
    clf = ParallelPostFit(inner, backend="sequential")
    source = postfit.read_parquet(folder, columns=["row", "x"])
    with pytest.raises(OutputLockedError, match=f"process {os.getpid()}"):
        clf.predict(source, output=output)
    assert (output / "_postfit.lock").exists()


def test_stale_lock_of_dead_process_taken_over(data, tmp_path):
    _, folder, inner = data
    clf = ParallelPostFit(inner, backend="sequential", block_size=BLOCK_SIZE)
    source = postfit.read_parquet(folder, columns=["row", "x"])
    output = tmp_path / "out"
    clf.predict(source, output=output)
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    holder = {"pid": int(finished.stdout), "host": os.uname().nodename, "started": "then"}
    (output / "_postfit.lock").write_text(json.dumps(holder))
    result = clf.predict(source, output=output, resume=True)
    assert result.n_resumed == result.n_blocks
    assert not (output / "_postfit.lock").exists()
