"""The ``postfit fit`` command: the installed console script, and its errors in process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import StandardScaler

from postfit import Incremental, load_model, read_parquet, save_model
from postfit._cli_fit import parse_estimator_spec
from postfit.cli import main

SPEC = "sklearn.linear_model.SGDClassifier:loss=log_loss,alpha=1e-4,random_state=0"


@pytest.fixture
def digits_files(tmp_path):
    """Write the digits as train.parquet (1400 rows, row groups of 200) and test.parquet."""
    X, y = load_digits(return_X_y=True, as_frame=True)
    frame = X.copy()
    frame["digit"] = y
    frame.iloc[:1400].to_parquet(tmp_path / "train.parquet", row_group_size=200)
    frame.iloc[1400:].to_parquet(tmp_path / "test.parquet")
    return tmp_path


def postfit_command():
    """Return the installed ``postfit`` console script beside this interpreter."""
    script = os.path.join(os.path.dirname(sys.executable), "postfit")
    if not os.path.exists(script):
        pytest.skip("the postfit console script is not installed in this environment")
    return script


def test_fit_command_trains_and_saves(digits_files):
    folder = digits_files
    args = [
        postfit_command(),
        "fit",
        SPEC,
        str(folder / "train.parquet"),
        "--target",
        "digit",
        "-o",
        str(folder / "model.skops"),
        "--max-iter",
        "3",
        "--random-state",
        "0",
        "--validation",
        str(folder / "test.parquet"),
        "--scoring",
        "accuracy",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("fit: trained SGDClassifier for 3 epoch(s)")
    assert [line.split()[:2] for line in lines[1:]] == [
        ["epoch", "1"],
        ["epoch", "2"],
        ["epoch", "3"],
    ]

    saved = load_model(folder / "model.skops")
    expected = Incremental(
        SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0), max_iter=3, random_state=0
    ).fit(read_parquet(str(folder / "train.parquet")), "digit")
    np.testing.assert_array_equal(saved.coef_, expected.coef_)
    np.testing.assert_array_equal(saved.classes_, np.arange(10))
    test = pd.read_parquet(folder / "test.parquet")
    accuracy = saved.score(test.drop(columns="digit"), test["digit"])
    assert float(lines[-1].split()[-1]) == pytest.approx(accuracy, abs=1e-6)


def test_fit_command_usage_error_exit_code(digits_files):
    folder = digits_files
    args = [
        postfit_command(),
        "fit",
        "sklearn.svm.SVC",
        str(folder / "train.parquet"),
        "--target",
        "digit",
        "-o",
        str(folder / "model.skops"),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 2
    assert "SVC has no partial_fit method" in done.stderr
    assert not (folder / "model.skops").exists()


def test_fit_from_saved_estimator_file(digits_files, capsys):
    folder = digits_files
    save_model(StandardScaler(), folder / "scaler.skops")
    status = main(
        [
            "fit",
            str(folder / "scaler.skops"),
            str(folder / "train.parquet"),
            "--columns",
            "pixel_0_2,pixel_3_3",
            "-o",
            str(folder / "trained.skops"),
            "--no-progress",
        ]
    )
    assert status == 0, capsys.readouterr().err

    scaler = load_model(folder / "trained.skops")
    train = pd.read_parquet(folder / "train.parquet", columns=["pixel_0_2", "pixel_3_3"])
    np.testing.assert_allclose(scaler.mean_, train.to_numpy().mean(axis=0), rtol=1e-12)
    assert list(scaler.feature_names_in_) == ["pixel_0_2", "pixel_3_3"]


def test_existing_output_kept_without_overwrite(digits_files, capsys):
    folder = digits_files
    output = folder / "model.skops"
    output.write_bytes(b"earlier model")
    base = ["fit", SPEC, str(folder / "train.parquet"), "--target", "digit", "-o", str(output)]

    assert main(base) == 2
    assert "already exists. Pass --overwrite" in capsys.readouterr().err
    assert output.read_bytes() == b"earlier model"

    assert main([*base, "--overwrite"]) == 0
    assert load_model(output).classes_.tolist() == list(range(10))
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("os.system", "outside the packages that postfit imports"),
        ("sklearn.linear_model.SGDClassifier:alpha=__import__('os')", "not a Python literal"),
        ("sklearn.linear_model.SGDClassifier:alpha=", "expected key=value pairs"),
        ("sklearn.linear_model.SGDClassifier:0.1", "every parameter needs a name"),
        ("sklearn.linear_model.SGDClassifier:bogus=1", "unexpected keyword argument 'bogus'"),
        ("sklearn.linear_model.SGDClassifier:alpha=-1", "'alpha' parameter of SGDClassifier"),
        ("sklearn.linear_model.NoSuchModel", "is not a scikit-learn estimator class"),
        ("sklearn.no_such_module.Model", "Cannot import module 'sklearn.no_such_module'"),
        ("SGDClassifier", "Invalid estimator class path 'SGDClassifier'"),
        ("sklearn.svm.SVC", "SVC has no partial_fit method"),
        ("missing/model.skops", "Model file not found"),
    ],
)
def test_bad_estimator_spec_is_usage_error(digits_files, capsys, spec, message):
    folder = digits_files
    output = folder / "model.skops"
    status = main(
        ["fit", spec, str(folder / "train.parquet"), "--target", "digit", "-o", str(output)]
    )
    assert status == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target", "label"], "Target column 'label' not found"),
        (["--target", "digit", "--early-stopping"], "--early-stopping needs --validation"),
        (["--target", "digit", "--scoring", "accuracy"], "pass --validation too"),
        (["--target", "digit", "-o", "model.pkl"], "End the path with .skops"),
    ],
)
def test_bad_options_are_usage_errors(digits_files, capsys, extra, message):
    folder = digits_files
    args = ["fit", SPEC, str(folder / "train.parquet"), "-o", str(folder / "m.skops"), *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_bad_data_is_run_failure(tmp_path, capsys):
    frame = pd.DataFrame({"x": [1.0, np.inf, 3.0, 4.0], "y": [0, 1, 0, 1]})
    frame.to_parquet(tmp_path / "bad.parquet")
    args = ["fit", SPEC, str(tmp_path / "bad.parquet"), "--target", "y"]
    status = main([*args, "-o", str(tmp_path / "m.skops")])
    assert status == 1
    assert "run failed" in capsys.readouterr().err
    assert not (tmp_path / "m.skops").exists()


def test_spec_parameters_read_as_literals():
    estimator = parse_estimator_spec(
        "sklearn.neural_network.MLPClassifier:hidden_layer_sizes=(8, 4),activation=tanh,"
        "early_stopping=False,alpha=1e-3,random_state=None"
    )
    assert estimator.get_params()["hidden_layer_sizes"] == (8, 4)
    assert estimator.activation == "tanh"
    assert estimator.early_stopping is False
    assert estimator.alpha == 1e-3
    assert estimator.random_state is None
