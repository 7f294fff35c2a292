"""The postfit command as a new user runs it, against what the library itself writes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import postfit
from postfit._models import describe_model
from postfit.cli import main


@pytest.mark.parametrize("loader", [load_breast_cancer, load_iris], ids=["binary", "multiclass"])
def test_info_decision_columns_match(loader, tmp_path):
    X, y = loader(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    X.to_parquet(tmp_path / "input.parquet")
    wrapper = postfit.ParallelPostFit(model, backend="sequential", block_size=100)

    wrapper.decision_function(
        postfit.read_parquet(tmp_path / "input.parquet"), output=str(tmp_path / "out")
    )
    written = list(pd.read_parquet(tmp_path / "out").columns)
    listed = describe_model(model).split("decision_function: ")[1].splitlines()[0]

    assert listed.split(", ") == written


@pytest.fixture(scope="module")
def code_workspace(tmp_path_factory):
    """Write a model fitted on a string column of codes, and a CSV whose codes look numeric.

    The first MiB of the CSV contains digit codes only, so type inference reads the
    column as integers, and letter codes follow further down.
    """
    rng = np.random.default_rng(0)
    n_rows = 150_000
    codes = rng.choice(["01", "02", "10"], n_rows).astype(object)
    codes[-50:] = "A7"
    frame = pd.DataFrame({"code": codes, "x": rng.normal(size=n_rows).round(3)})
    target = (frame["code"] == "10") ^ (frame["x"] > 1)
    model = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["code"]), remainder="passthrough"
        ),
        LogisticRegression(),
    ).fit(frame, target)
    folder = tmp_path_factory.mktemp("codes")
    postfit.save_model(model, folder / "model.skops")
    frame.to_csv(folder / "codes.csv", index=False)
    return folder, frame, model


def test_column_types_reads_codes(code_workspace):
    folder, frame, model = code_workspace
    argv = ["predict", str(folder / "model.skops"), str(folder / "codes.csv")]
    argv += ["-o", str(folder / "scores"), "--method", "predict_proba"]
    argv += ["--column-types", "code=string", "--block-size", "20000", "--backend", "sequential"]

    status = main(argv)

    assert status == 0
    written = pd.read_parquet(folder / "scores").to_numpy()
    assert_allclose(written, model.predict_proba(frame), rtol=1e-12)


def test_csv_type_error_names_option(code_workspace, capsys):
    # A model that reads the codes as numbers scores the first blocks, then
    # reaches a letter code that cannot be parsed as the inferred integer type.
    folder, frame, _ = code_workspace
    numeric = frame.iloc[:1_000].astype({"code": "int64"})
    model = LinearRegression().fit(numeric, numeric["x"])
    postfit.save_model(model, folder / "numeric.skops")
    argv = ["predict", str(folder / "numeric.skops"), str(folder / "codes.csv")]
    argv += ["-o", str(folder / "untyped"), "--block-size", "20000", "--backend", "sequential"]

    status = main(argv)

    assert status == 1
    assert "--column-types" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "words"),
    [("code=strng", "invalid type 'strng'"), ("code", "NAME=TYPE"), ("=string", "NAME=TYPE")],
)
def test_column_types_invalid(code_workspace, capsys, value, words):
    folder, _, _ = code_workspace
    argv = ["predict", str(folder / "model.skops"), str(folder / "codes.csv")]
    argv += ["-o", str(folder / "never"), "--column-types", value]

    with pytest.raises(SystemExit) as raised:
        main(argv)

    assert raised.value.code == 2
    assert words in capsys.readouterr().err
    assert not (folder / "never").exists()


def test_column_types_rejects_parquet(tmp_path, capsys):
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    frame.to_parquet(tmp_path / "input.parquet")
    postfit.save_model(LinearRegression().fit(frame, [0.0, 1.0]), tmp_path / "model.skops")
    argv = ["predict", str(tmp_path / "model.skops"), str(tmp_path / "input.parquet")]
    argv += ["-o", str(tmp_path / "out"), "--column-types", "x=float64"]

    status = main(argv)

    assert status == 2
    assert "applies to CSV inputs" in capsys.readouterr().err


def test_info_closed_stdout_quiet(tmp_path):
    # As in `postfit info model.skops | head -1`, where head exits before the
    # command writes: the write fails with EPIPE.
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    postfit.save_model(model, tmp_path / "model.skops")
    read_end, write_end = os.pipe()
    os.close(read_end)
    command = [sys.executable, "-m", "postfit", "info", str(tmp_path / "model.skops")]

    done = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)

    assert done.returncode == 1
    assert done.stderr == ""
