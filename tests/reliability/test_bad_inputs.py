"""Bad inputs, one test case per row: each must raise a clear error before a wrong answer.

Every row is ``(id, call, error class, words)``. ``call(env)`` performs one
call of the public API with one bad input; the test checks the exception
class and that each word appears in its message or its notes (postfit adds
the failing block as a note). Inputs that are odd but valid (reordered
columns, NaN for an estimator that accepts it, empty parts of a file input)
are checked against the plain estimator's own output further down.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import skops.io as sio
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.preprocessing import FunctionTransformer

import postfit
from postfit import Incremental, ParallelPostFit, load_model
from postfit.cli import main
from postfit.exceptions import (
    BlockError,
    ColumnOrderWarning,
    OutputExistsError,
    UntrustedModelError,
)
from postfit.io import InputError, InvalidFileError

from ._estimators import MARKER, DropsOneRow, FailOnMarker


@dataclass
class Env:
    """What a bad-input call needs: a scratch directory, fitted models and data."""

    tmp: Path
    X: pd.DataFrame
    y: np.ndarray
    frame_model: LogisticRegression
    array_model: LogisticRegression

    @property
    def values(self) -> np.ndarray:
        return self.X.to_numpy()

    def on_frame(self, **options) -> ParallelPostFit:
        return ParallelPostFit(self.frame_model, **options)

    def on_array(self, **options) -> ParallelPostFit:
        return ParallelPostFit(self.array_model, **options)

    def parquet(self, frame=None, name="data.parquet", **kwargs) -> Path:
        path = self.tmp / name
        (self.X if frame is None else frame).to_parquet(path, **kwargs)
        return path

    def csv_text(self, text, name="data.csv") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path


@dataclass
class Case:
    id: str
    call: object
    error: type
    words: tuple


def _frame_with(env, column, values):
    frame = env.X.copy()
    frame[column] = values
    return frame


def _with_value(env, row, column, value):
    values = env.values.astype(object) if isinstance(value, str) else env.values.copy()
    values[row, column] = value
    return values


def _ragged_csv(env):
    lines = ["a,b,c,d", *(f"{i},{i},{i},{i}" for i in range(20))]
    lines[12] = "1,2,3,4,5"
    return env.csv_text("\n".join(lines) + "\n")


def _truncated_parquet(env):
    path = env.parquet(name="whole.parquet")
    data = path.read_bytes()
    cut = env.tmp / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _no_data_files(env):
    folder = env.tmp / "folder"
    folder.mkdir()
    (folder / "README.txt").write_text("no tables here")
    (folder / "_SUCCESS").write_text("")
    return folder


def _read_only_dir(env):
    folder = env.tmp / "read-only"
    folder.mkdir()
    if os.geteuid() == 0:
        # root ignores permission bits, so a read-only mount stands in for them.
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                capture_output=True,
                check=False,
            )
        except OSError as exc:
            pytest.skip(f"cannot run mount here: {exc}")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
        env.unmount = folder
    else:
        folder.chmod(0o555)
    return folder


def _output_of_another_tool(env):
    folder = env.tmp / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("written by hand")
    return folder


def _finished_output(env):
    out = env.tmp / "out"
    env.on_array(block_size=50).predict(env.values, output=out)
    return out


def _resume_with_other_model(env):
    out = _finished_output(env)
    other = LogisticRegression(max_iter=1000, C=0.01).fit(env.values, env.y)
    return ParallelPostFit(other, block_size=50).predict(env.values, output=out, resume=True)


def _skops_with_foreign_type(env):
    path = env.tmp / "model.skops"
    model = FunctionTransformer(func=np.log1p).fit(env.values)
    model.my_note = pd.Series([1, 2])
    path.write_bytes(sio.dumps(model))
    return load_model(path)


# skops names a type by its __module__ and __qualname__: "pandas.Series" with
# pandas 3.1, "pandas.core.series.Series" with pandas 2.3.
SERIES_TYPE_NAME = f"{pd.Series.__module__}.{pd.Series.__qualname__}"


def _pickle_file(env):
    path = env.tmp / "model.pkl"
    path.write_bytes(pickle.dumps(env.array_model))
    return path


def _marker_rows(env, row):
    return _with_value(env, row, 0, MARKER)


def _fail_in_block(env, backend):
    model = FailOnMarker(LogisticRegression(max_iter=1000)).fit(env.values, env.y)
    wrapper = ParallelPostFit(model, backend=backend, n_jobs=2, block_size=40)
    return wrapper.predict(_marker_rows(env, 125))


def _drops_row(env, backend):
    model = DropsOneRow(LogisticRegression(max_iter=1000)).fit(env.values, env.y)
    return ParallelPostFit(model, backend=backend, n_jobs=2, block_size=40).predict(env.values)


def _incremental_wrong_y(env):
    model = Incremental(SGDClassifier(random_state=0), block_size=40)
    return model.fit(env.values, env.y[:-3], classes=np.unique(env.y))


CASES = [
    # Shapes and columns of in-memory inputs.
    Case(
        "array_too_few_features",
        lambda env: env.on_array().predict(env.values[:, :3]),
        ValueError,
        ("3 features", "expecting 4"),
    ),
    Case(
        "array_too_many_features",
        lambda env: env.on_array().predict(np.hstack([env.values, env.values[:, :1]])),
        ValueError,
        ("5 features", "expecting 4"),
    ),
    Case(
        "list_of_rows_wrong_width",
        lambda env: env.on_array().predict(env.values[:, :3].tolist()),
        ValueError,
        ("3 features",),
    ),
    Case(
        "sparse_wrong_width",
        lambda env: env.on_array().predict(sp.csr_matrix(env.values[:, :2])),
        ValueError,
        ("2 features",),
    ),
    Case(
        "frame_missing_column",
        lambda env: env.on_frame().predict(env.X.drop(columns="petal_width")),
        ValueError,
        ("missing 1 column", "petal_width"),
    ),
    Case(
        "frame_extra_column",
        lambda env: env.on_frame().predict(_frame_with(env, "row_id", 1.0)),
        ValueError,
        ("row_id", "not fitted with"),
    ),
    Case(
        "frame_renamed_column",
        lambda env: env.on_frame().predict(env.X.rename(columns={"sepal_width": "width"})),
        ValueError,
        ("sepal_width", "missing"),
    ),
    Case(
        "arrow_table_missing_column",
        lambda env: env.on_frame().predict(pa.Table.from_pandas(env.X.iloc[:, 1:])),
        ValueError,
        ("missing", "sepal_length"),
    ),
    Case(
        "polars_extra_column",
        lambda env: env.on_frame().predict(pl.from_pandas(_frame_with(env, "extra", 0.0))),
        ValueError,
        ("extra", "not fitted with"),
    ),
    Case(
        "three_dimensional_array",
        lambda env: env.on_array().predict(env.values.reshape(150, 2, 2)),
        ValueError,
        ("3 dimensions", "reshape"),
    ),
    Case(
        "one_dimensional_array",
        lambda env: env.on_array().predict(env.values[:, 0]),
        ValueError,
        ("Expected 2D array",),
    ),
    Case(
        "scalar_input",
        lambda env: env.on_array().predict(np.float64(1.0)),
        ValueError,
        ("single value", "float64", "(1, -1)"),
    ),
    Case(
        "python_scalar_input",
        lambda env: env.on_array().predict(1.0),
        ValueError,
        ("single value", "float", "(1, -1)"),
    ),
    Case(
        "string_input",
        lambda env: env.on_array().predict("sepal_length"),
        ValueError,
        ("single value", "str"),
    ),
    Case(
        "empty_array",
        lambda env: env.on_array().predict(env.values[:0]),
        ValueError,
        ("0 sample(s)",),
    ),
    Case(
        "empty_frame",
        lambda env: env.on_frame().predict(env.X.iloc[:0]),
        ValueError,
        ("0 sample(s)",),
    ),
    # Values the estimator cannot take.
    Case(
        "strings_in_array",
        lambda env: env.on_array(block_size=40).predict(_with_value(env, 3, 1, "abc")),
        ValueError,
        ("could not convert", "abc"),
    ),
    Case(
        "strings_in_frame_column",
        lambda env: env.on_frame(block_size=40, backend="threading").predict(
            _frame_with(env, "sepal_width", ["wide"] * 150)
        ),
        ValueError,
        ("could not convert", "wide"),
    ),
    Case(
        "nan_rejected_names_block",
        lambda env: env.on_array(backend="sequential", block_size=50).predict(
            _with_value(env, 120, 2, np.nan)
        ),
        ValueError,
        ("NaN", "block 2 (rows 100 to 150)"),
    ),
    Case(
        "infinity_rejected_in_loky_worker",
        lambda env: env.on_array(backend="loky", n_jobs=2, block_size=50).predict(
            _with_value(env, 60, 0, np.inf)
        ),
        ValueError,
        ("infinity", "block 1 (rows 50 to 100)"),
    ),
    Case(
        "nan_rejected_by_threads",
        lambda env: env.on_frame(backend="threading", n_jobs=2, block_size=30).predict_proba(
            pd.DataFrame(_with_value(env, 0, 3, np.nan), columns=env.X.columns)
        ),
        ValueError,
        ("NaN", "block 0 (rows 0 to 30)"),
    ),
    # Run options.
    Case(
        "block_size_zero",
        lambda env: env.on_array(block_size=0).predict(env.values),
        ValueError,
        ("block_size 0",),
    ),
    Case(
        "block_size_negative",
        lambda env: env.on_array(block_size=-5).predict(env.values),
        ValueError,
        ("block_size -5",),
    ),
    Case(
        "block_size_float",
        lambda env: env.on_array(block_size=2.5).predict(env.values),
        ValueError,
        ("block_size 2.5",),
    ),
    Case(
        "n_jobs_zero",
        lambda env: env.on_array(n_jobs=0).predict(env.values),
        ValueError,
        ("n_jobs", "0"),
    ),
    Case(
        "n_jobs_float",
        lambda env: env.on_array(n_jobs=1.5).predict(env.values),
        ValueError,
        ("n_jobs", "1.5"),
    ),
    Case(
        "unknown_backend",
        lambda env: env.on_array(backend="spark").predict(env.values),
        ValueError,
        ("'spark'", "'loky'"),
    ),
    Case(
        "backend_none",
        lambda env: env.on_array(backend=None).predict(env.values),
        ValueError,
        ("backend None",),
    ),
    Case(
        "memory_budget_word",
        lambda env: env.on_array(memory_budget="lots").predict(env.values),
        ValueError,
        ("memory_budget 'lots'",),
    ),
    # Targets.
    Case(
        "y_shorter_than_X",
        lambda env: env.on_array(block_size=40).score(env.values, env.y[:-1]),
        ValueError,
        ("149", "150"),
    ),
    Case(
        "sample_weight_longer_than_X",
        lambda env: env.on_array(block_size=40).score(
            env.values, env.y, sample_weight=np.ones(151)
        ),
        ValueError,
        ("151", "150"),
    ),
    Case(
        "target_column_not_found",
        lambda env: env.on_frame().score(_frame_with(env, "species", env.y), "specie"),
        ValueError,
        ("'specie' not found", "'species'"),
    ),
    Case(
        "target_column_not_in_file",
        lambda env: env.on_frame().score(postfit.read_parquet(env.parquet()), "species"),
        ValueError,
        ("'species' not found",),
    ),
    Case(
        "unknown_scorer",
        lambda env: ParallelPostFit(env.array_model, scoring="acuracy").score(env.values, env.y),
        ValueError,
        ("acuracy",),
    ),
    Case("incremental_y_wrong_length", _incremental_wrong_y, ValueError, ("147", "150")),
    # Files in.
    Case(
        "parquet_of_random_bytes",
        lambda env: env.on_frame().predict(
            postfit.read_parquet(env.csv_text("\x00\x01garbage" * 50, "noise.parquet"))
        ),
        InvalidFileError,
        ("noise.parquet",),
    ),
    Case(
        "parquet_truncated",
        lambda env: env.on_frame().predict(postfit.read_parquet(_truncated_parquet(env))),
        InvalidFileError,
        ("cut.parquet",),
    ),
    Case(
        "csv_named_parquet",
        lambda env: env.on_frame().predict(
            postfit.read_parquet(env.csv_text("a,b\n1,2\n", "table.parquet"))
        ),
        InvalidFileError,
        ("table.parquet", "Parquet"),
    ),
    Case(
        "directory_without_data_files",
        lambda env: postfit.read_parquet(_no_data_files(env)),
        FileNotFoundError,
        ("contains no", "folder"),
    ),
    Case(
        "glob_matching_nothing",
        lambda env: postfit.read_parquet(str(env.tmp / "day=*" / "*.parquet")),
        FileNotFoundError,
        ("matches", "day=*"),
    ),
    Case(
        "missing_input_file",
        lambda env: postfit.read_csv(env.tmp / "absent.csv"),
        FileNotFoundError,
        ("absent.csv", "not found"),
    ),
    Case(
        "csv_ragged_row",
        lambda env: env.on_array(backend="sequential").predict(postfit.read_csv(_ragged_csv(env))),
        InvalidFileError,
        ("data.csv", "Expected 4 columns, got 5"),
    ),
    Case(
        "csv_text_in_numeric_feature",
        lambda env: env.on_frame(backend="sequential").predict(
            postfit.read_csv(_frame_to_csv(env, _frame_with(env, "petal_length", "long")))
        ),
        ValueError,
        ("could not convert", "long"),
    ),
    Case(
        "csv_compressed",
        lambda env: postfit.read_csv(_gzip_csv(env)),
        ValueError,
        ("Compressed", "data.csv.gz"),
    ),
    Case(
        "parquet_missing_feature",
        lambda env: env.on_frame().predict(
            postfit.read_parquet(env.parquet(env.X.drop(columns="sepal_length")))
        ),
        InputError,
        ("missing 1 column", "sepal_length"),
    ),
    Case(
        "npy_wrong_width",
        lambda env: env.on_array().predict(postfit.read_npy(_npy(env, env.values[:, :3]))),
        InputError,
        ("3 features", "fitted with 4"),
    ),
    Case(
        "keep_column_not_in_file",
        lambda env: env.on_frame().predict(
            postfit.read_parquet(env.parquet()), keep_columns=["id"]
        ),
        InputError,
        ("['id'] not found",),
    ),
    # Files out.
    Case(
        "output_in_missing_directory",
        lambda env: env.on_array().predict(env.values, output=env.tmp / "no-such-dir" / "out.csv"),
        FileNotFoundError,
        ("no-such-dir", "does not exist"),
    ),
    Case(
        "output_in_read_only_directory",
        lambda env: env.on_array().predict(env.values, output=_read_only_dir(env) / "out"),
        OSError,
        ("read-only",),
    ),
    Case(
        "output_written_by_another_tool",
        lambda env: env.on_array().predict(env.values, output=_output_of_another_tool(env)),
        OutputExistsError,
        ("not written by postfit",),
    ),
    Case(
        "output_exists_without_resume",
        lambda env: env.on_array().predict(env.values, output=_finished_output(env)),
        OutputExistsError,
        ("resume=True", "overwrite=True"),
    ),
    Case(
        "resume_with_another_model",
        _resume_with_other_model,
        ValueError,
        ("Cannot resume", "model"),
    ),
    Case(
        "resume_and_overwrite",
        lambda env: env.on_array().predict(
            env.values, output=env.tmp / "o", resume=True, overwrite=True
        ),
        ValueError,
        ("not both",),
    ),
    Case(
        "resume_without_output",
        lambda env: env.on_array().predict(postfit.read_parquet(env.parquet()), resume=True),
        ValueError,
        ("output=",),
    ),
    # Model files.
    Case(
        "skops_file_of_text",
        lambda env: load_model(env.csv_text("just some text", "model.skops")),
        InvalidFileError,
        ("model.skops", "skops"),
    ),
    Case(
        "trusted_pickle_of_garbage",
        lambda env: load_model(env.csv_text("garbage bytes", "model.pkl"), trusted=True),
        InvalidFileError,
        ("model.pkl", "pickle"),
    ),
    Case(
        "pickle_without_trust",
        lambda env: load_model(_pickle_file(env)),
        UntrustedModelError,
        ("model.pkl", "trusted=True"),
    ),
    Case(
        "skops_with_untrusted_type",
        _skops_with_foreign_type,
        UntrustedModelError,
        (SERIES_TYPE_NAME, "builtins.range"),
    ),
    # Estimators that break the row-wise contract.
    Case(
        "wrong_row_count_threading",
        lambda env: _drops_row(env, "threading"),
        BlockError,
        ("returned 39 rows", "which has 40 rows"),
    ),
    Case(
        "wrong_row_count_loky",
        lambda env: _drops_row(env, "loky"),
        BlockError,
        ("returned 39 rows",),
    ),
    Case(
        "raises_in_block_3_sequential",
        lambda env: _fail_in_block(env, "sequential"),
        ValueError,
        ("marker row", "block 3 (rows 120 to 150)"),
    ),
    Case(
        "raises_in_block_3_loky",
        lambda env: _fail_in_block(env, "loky"),
        ValueError,
        ("marker row", "block 3 (rows 120 to 150)"),
    ),
]


def _frame_to_csv(env, frame):
    path = env.tmp / "data.csv"
    frame.to_csv(path, index=False)
    return path


def _gzip_csv(env):
    path = env.tmp / "data.csv.gz"
    with gzip.open(path, "wt") as f:
        env.X.to_csv(f, index=False)
    return path


def _npy(env, values):
    path = env.tmp / "data.npy"
    np.save(path, values)
    return path


@pytest.fixture
def env(tmp_path, iris_frame, frame_model, array_model):
    X, y = iris_frame
    environment = Env(tmp_path, X, y, frame_model, array_model)
    environment.unmount = None
    yield environment
    if environment.unmount is not None:
        subprocess.run(["umount", str(environment.unmount)], check=False)


def _message(exc):
    return "\n".join([str(exc), *getattr(exc, "__notes__", [])])


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, env):
    with pytest.raises(case.error) as caught:
        case.call(env)
    message = _message(caught.value)
    for word in case.words:
        assert word in message, f"{word!r} missing from: {message}"


def test_table_has_forty_rows():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


# Odd but valid inputs: the plain estimator's own answer --------------------------

BACKENDS = ["sequential", "threading", "loky"]
FRAME_KINDS = {
    "pandas": lambda frame: frame,
    "polars": pl.from_pandas,
    "arrow": lambda frame: pa.Table.from_pandas(frame, preserve_index=False),
}


def _plain_warnings(model, method, X):
    """Return the (category, message) of each warning that the plain estimator gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(model, method)(X)
    return [(w.category, str(w.message)) for w in caught]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", FRAME_KINDS)
def test_reordered_columns_match_by_name(kind, backend, iris_frame, frame_model):
    X, _ = iris_frame
    shuffled = FRAME_KINDS[kind](X[X.columns[::-1]])
    # scikit-learn 1.7.2 cannot read the names of a polars 2.0 frame, so even in
    # fit order it warns that X has no valid feature names, and does so for each
    # block that postfit passes it. scikit-learn 1.9.1 reads them and does not warn.
    plain = set(_plain_warnings(frame_model, "predict_proba", FRAME_KINDS[kind](X)))
    wrapper = ParallelPostFit(frame_model, backend=backend, n_jobs=2, block_size=40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proba = wrapper.predict_proba(shuffled)
    categories = [w.category for w in caught]
    assert categories.count(ColumnOrderWarning) == 1
    others = {(w.category, str(w.message)) for w in caught if w.category is not ColumnOrderWarning}
    assert others == plain
    expected = frame_model.predict_proba(X)
    assert proba.dtype == expected.dtype
    assert_allclose(proba, expected, rtol=1e-12, atol=0)


def test_reordered_parquet_columns_match_by_name(tmp_path, iris_frame, frame_model):
    X, _ = iris_frame
    X[X.columns[::-1]].to_parquet(tmp_path / "reversed.parquet")
    wrapper = ParallelPostFit(frame_model, backend="threading", n_jobs=2, block_size=40)
    labels = wrapper.predict(postfit.read_parquet(tmp_path / "reversed.parquet"))
    assert_array_equal(labels, frame_model.predict(X))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["frame", "array"])
def test_nan_and_infinity_accepted_by_hist_gradient_boosting(kind, backend, nan_frame, hgb_model):
    X = nan_frame if kind == "frame" else nan_frame.to_numpy()
    assert np.isnan(nan_frame.to_numpy()).any()
    assert np.isinf(nan_frame.to_numpy()).any()
    wrapper = ParallelPostFit(hgb_model, backend=backend, n_jobs=2, block_size=40)
    if kind == "array":
        with pytest.warns(UserWarning, match="feature names"):
            proba = wrapper.predict_proba(X)
    else:
        proba = wrapper.predict_proba(X)
    expected = hgb_model.predict_proba(nan_frame)
    assert proba.shape == expected.shape
    assert_allclose(proba, expected, rtol=1e-12, atol=0)


def _write_with_empty_parts(folder, X):
    """Write X as files with an empty file and an empty row group between real rows."""
    folder.mkdir()
    X.iloc[:50].to_parquet(folder / "part-0.parquet")
    X.iloc[:0].to_parquet(folder / "part-1.parquet")
    table = pa.Table.from_pandas(X.iloc[50:], preserve_index=False)
    with pq.ParquetWriter(folder / "part-2.parquet", table.schema) as writer:
        writer.write_table(table.slice(0, 40))
        writer.write_table(table.slice(0, 0))
        writer.write_table(table.slice(40))
    groups = pq.ParquetFile(folder / "part-2.parquet").metadata
    assert [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == [40, 0, 60]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_blocks_in_the_middle(backend, tmp_path, iris_frame, frame_model):
    X, _ = iris_frame
    _write_with_empty_parts(tmp_path / "in", X)
    wrapper = ParallelPostFit(frame_model, backend=backend, n_jobs=2, block_size=40)
    source = postfit.read_parquet(tmp_path / "in")
    assert source.n_rows == 150

    proba = wrapper.predict_proba(source)
    assert_allclose(proba, frame_model.predict_proba(X), rtol=1e-12, atol=0)

    wrapper.predict(source, output=tmp_path / "labels.csv")
    written = pd.read_csv(tmp_path / "labels.csv")
    assert list(written.columns) == ["prediction"]
    assert_array_equal(written["prediction"].to_numpy(), frame_model.predict(X))


def test_empty_csv_file_in_the_middle(tmp_path, iris_frame, frame_model):
    X, _ = iris_frame
    folder = tmp_path / "in"
    folder.mkdir()
    X.iloc[:70].to_csv(folder / "a.csv", index=False)
    X.iloc[:0].to_csv(folder / "b.csv", index=False)
    X.iloc[70:].to_csv(folder / "c.csv", index=False)
    wrapper = ParallelPostFit(frame_model, backend="threading", n_jobs=2, block_size=30)
    labels = wrapper.predict(postfit.read_csv(folder))
    assert_array_equal(labels, frame_model.predict(X))


# A block that raises: named, and no output is marked complete ----------------------


def _run_record(folder):
    return json.loads((folder / "_postfit_run.json").read_text())


@pytest.mark.parametrize("backend", BACKENDS)
def test_failing_block_leaves_output_unfinished(backend, tmp_path, iris_frame):
    X, y = iris_frame
    values = X.to_numpy().copy()
    values[125, 0] = MARKER
    model = FailOnMarker(LogisticRegression(max_iter=1000)).fit(X.to_numpy(), y)
    wrapper = ParallelPostFit(model, backend=backend, n_jobs=2, block_size=40)
    out = tmp_path / "out"

    with pytest.raises(ValueError, match="marker row") as caught:
        wrapper.predict(values, output=out)

    assert "block 3 (rows 120 to 150)" in _message(caught.value)
    assert "complete" not in _run_record(out)
    assert not (out / "_postfit.lock").exists()
    done = (out / "_postfit_done.jsonl").read_text().splitlines()
    assert 3 not in [json.loads(line)["index"] for line in done]
    assert not (out / "_postfit_parts" / "part-000003.parquet").exists()
    assert not (out / "part-000003.parquet").exists()


def test_failing_block_leaves_no_csv_output(tmp_path, iris_frame):
    X, y = iris_frame
    values = X.to_numpy().copy()
    values[10, 0] = MARKER
    model = FailOnMarker(LogisticRegression(max_iter=1000)).fit(X.to_numpy(), y)
    wrapper = ParallelPostFit(model, backend="threading", n_jobs=2, block_size=40)
    with pytest.raises(ValueError, match="marker row"):
        wrapper.predict(values, output=tmp_path / "labels.csv")
    assert not (tmp_path / "labels.csv").exists()


# The command line ---------------------------------------------------------------------


def _cli_files(env):
    frame = _frame_with(env, "species", env.y)
    env.parquet(frame)
    sio.dump(env.frame_model, env.tmp / "model.skops")
    sio.dump(np.arange(3), env.tmp / "array.skops")
    (env.tmp / "model.pkl").write_bytes(pickle.dumps(env.frame_model))


CLI_CASES = [
    (
        "score_target_not_found",
        ["score", "model.skops", "data.parquet", "--target", "kind"],
        2,
        ("'kind' not found",),
    ),
    (
        "predict_unknown_backend",
        ["predict", "model.skops", "data.parquet", "-o", "out", "--backend", "spark"],
        2,
        ("--backend 'spark'",),
    ),
    (
        "predict_block_size_zero",
        ["predict", "model.skops", "data.parquet", "-o", "out", "--block-size", "0"],
        2,
        ("positive whole number", "'0'"),
    ),
    (
        "predict_workers_zero",
        ["predict", "model.skops", "data.parquet", "-o", "out", "--workers", "0"],
        2,
        ("number of workers", "'0'"),
    ),
    (
        "predict_pickle_without_trust",
        ["predict", "model.pkl", "data.parquet", "-o", "out"],
        2,
        ("--trust-model",),
    ),
    (
        "predict_model_is_an_array",
        ["predict", "array.skops", "data.parquet", "-o", "out"],
        2,
        ("contains an object of type ndarray, which has none of the post-fit",),
    ),
    (
        "predict_missing_input",
        ["predict", "model.skops", "absent.parquet", "-o", "out"],
        2,
        ("absent.parquet", "not found"),
    ),
    (
        "predict_output_in_missing_directory",
        ["predict", "model.skops", "data.parquet", "-o", "gone/out"],
        2,
        ("does not exist",),
    ),
    (
        "info_text_file_as_model",
        ["info", "data.parquet"],
        1,
        ("neither a skops file", "data.parquet"),
    ),
]


@pytest.mark.parametrize(
    ("argv", "status", "words"),
    [case[1:] for case in CLI_CASES],
    ids=[case[0] for case in CLI_CASES],
)
def test_command_line_bad_input(argv, status, words, env, capsys, monkeypatch):
    _cli_files(env)
    monkeypatch.chdir(env.tmp)
    try:
        code = main(argv)
    except SystemExit as exc:
        # argparse rejects option values itself, with exit status 2.
        code = exc.code
    error = capsys.readouterr().err
    assert code == status, error
    for word in words:
        assert word in error, f"{word!r} missing from: {error}"
    assert not (env.tmp / "out").exists()
