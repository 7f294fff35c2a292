"""The installed ``postfit`` command, run in a subprocess: output, messages and exit status."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from postfit import save_model

COMMAND = os.path.join(os.path.dirname(sys.executable), "postfit")


def postfit_command(*args, cwd):
    return subprocess.run(
        [COMMAND, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "x": rng.normal(size=n),
            "color": rng.choice(["red", "blue"], n),
        }
    )
    frame["late"] = (frame["x"] + rng.normal(size=n) > 0).astype(int)
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["color"]), ("passthrough", ["x"])),
        LogisticRegression(),
    ).fit(frame[["x", "color"]], frame["late"])
    save_model(model, folder / "model.skops")
    save_model(model, folder / "model.pkl")
    frame.to_parquet(folder / "flights.parquet", row_group_size=64)
    frame.to_csv(folder / "flights.csv", index=False)
    (folder / "broken.parquet").write_bytes(b"not parquet at all")
    return folder, frame, model


def test_installed_command_exists():
    assert os.access(COMMAND, os.X_OK)


def test_info(workspace):
    folder, _, _ = workspace
    done = postfit_command("info", "model.skops", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "features (2):" in done.stdout
    assert "color: categorical" in done.stdout
    assert "classes (2): 0, 1" in done.stdout
    assert "predict_proba: proba_0, proba_1" in done.stdout


def test_predict_writes_parquet_then_refuses_rerun(workspace):
    folder, frame, model = workspace
    args = ["predict", "model.skops", "flights.parquet", "-o", "scores", "--keep-columns", "id"]
    done = postfit_command(*args, "--method", "predict_proba", "--block-size", "50", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "scored 400 rows" in done.stdout
    written = pd.read_parquet(folder / "scores")
    assert_array_equal(written["id"], frame["id"])
    expected = model.predict_proba(frame[["x", "color"]])
    assert_allclose(written[["proba_0", "proba_1"]].to_numpy(), expected, rtol=1e-12)

    again = postfit_command(*args, "--method", "predict_proba", cwd=folder)
    assert again.returncode == 2
    assert "--resume" in again.stderr
    assert "--overwrite" in again.stderr

    resumed = postfit_command(*args, "--method", "predict_proba", "--resume", cwd=folder)
    assert resumed.returncode == 0, resumed.stderr
    assert "scored 0 rows" in resumed.stdout
    assert "13 parts, 13 kept from the earlier run" in resumed.stdout


def test_predict_csv_to_csv_with_processes(workspace):
    folder, frame, model = workspace
    done = postfit_command(
        "predict",
        "model.skops",
        "flights.csv",
        "-o",
        "labels.csv",
        "--backend",
        "loky",
        "--workers",
        "2",
        "--block-size",
        "100",
        "-v",
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    assert "rows/s" in done.stderr
    written = pd.read_csv(folder / "labels.csv")
    assert list(written.columns) == ["prediction"]
    assert_array_equal(written["prediction"], model.predict(frame[["x", "color"]]))


def test_score_prints_one_line_per_metric(workspace):
    folder, frame, model = workspace
    done = postfit_command(
        "score",
        "model.skops",
        "flights.parquet",
        "--target",
        "late",
        "--scoring",
        "accuracy,roc_auc",
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split() for line in done.stdout.splitlines())
    assert set(lines) == {"accuracy", "roc_auc"}
    X, y = frame[["x", "color"]], frame["late"]
    assert float(lines["accuracy"]) == pytest.approx(accuracy_score(y, model.predict(X)), rel=1e-5)
    expected_auc = roc_auc_score(y, model.predict_proba(X)[:, 1])
    assert float(lines["roc_auc"]) == pytest.approx(expected_auc, rel=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "model.skops", "nope.parquet", "-o", "o1"], "not found: 'nope.parquet'"),
        (["predict", "nope.skops", "flights.parquet", "-o", "o2"], "Model file not found"),
        (["predict", "model.skops", "flights.csv", "-o", "o3.csv", "--columns", "x,zz"], "zz"),
        (["predict", "model.skops", "flights.parquet", "-o", "o3", "--columns", "zz"], "'zz'"),
        (["predict", "model.skops", "flights.parquet", "-o", "o4", "--method", "fit"], "fit"),
        (
            ["predict", "model.skops", "flights.parquet", "-o", "o5", "--method", "transform"],
            "has no method 'transform'",
        ),
        (["predict", "model.pkl", "flights.parquet", "-o", "o6"], "--trust-model"),
        (
            ["predict", "model.skops", "flights.parquet", "-o", "o7", "--memory-budget", "lots"],
            "memory_budget",
        ),
        (
            ["predict", "model.skops", "flights.parquet", "-o", "o8", "--backend", "spark"],
            "Invalid --backend 'spark'",
        ),
        (["score", "model.skops", "flights.parquet", "--target", "delay"], "'delay' not found"),
        (["predict"], "the following arguments are required"),
    ],
)
def test_usage_errors_exit_2(workspace, args, message):
    folder, _, _ = workspace
    done = postfit_command(*args, cwd=folder)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_trusted_pickle_loads(workspace):
    folder, _, _ = workspace
    done = postfit_command(
        "predict", "model.pkl", "flights.parquet", "-o", "trusted", "--trust-model", cwd=folder
    )
    assert done.returncode == 0, done.stderr


def test_run_failure_exits_1(workspace):
    folder, _, _ = workspace
    done = postfit_command("predict", "model.skops", "broken.parquet", "-o", "o9", cwd=folder)
    assert done.returncode == 1
    assert "run failed" in done.stderr
    assert "broken.parquet" in done.stderr
    assert "Traceback" not in done.stderr


def test_python_m_postfit(workspace):
    folder, _, _ = workspace
    done = subprocess.run(
        [sys.executable, "-m", "postfit", "--version"], capture_output=True, text=True, cwd=folder
    )
    assert done.returncode == 0
    assert done.stdout.startswith("postfit ")
