"""Command-line cases that a review by a new user found wrong, each failing before its fix.

Outputs: folders inside their input, a replaced CSV output that outlived a
failed run, unwritable folders found only after the work, and carried
columns named like outputs. Inputs: CSV options that the command line
lacked. Also `score` without a target or with --columns, unfitted and
non-estimator model files, and warnings printed with a source line.
"""

from __future__ import annotations

import os
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import MiniBatchKMeans
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import postfit
from postfit.cli import main

EXIT_USAGE = 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(600, 2)), columns=["x1", "x2"])
    frame["label"] = (frame["x1"] > 0).astype(int)
    path = tmp_path_factory.mktemp("newuser")
    (path / "inputs").mkdir()
    frame.iloc[:300].to_parquet(path / "inputs" / "a.parquet")
    frame.iloc[300:].to_parquet(path / "inputs" / "b.parquet")
    frame.to_parquet(path / "all.parquet")
    features = frame[["x1", "x2"]]
    postfit.save_model(StandardScaler().fit(features), path / "scaler.skops")
    postfit.save_model(LogisticRegression().fit(features, frame["label"]), path / "logistic.skops")
    postfit.save_model(
        MiniBatchKMeans(3, random_state=0, n_init=1).fit(features), path / "kmeans.skops"
    )
    postfit.save_model(LinearRegression().fit(frame[["x1"]], frame["x2"]), path / "linear.skops")
    return path, frame


def _run(*argv):
    return main([str(arg) for arg in argv])


# Outputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "output"),
    [("inputs", "inputs/scaled"), ("inputs/*.parquet", "inputs/x.parquet")],
)
def test_output_read_by_its_input_rejected(folder, capsys, inputs, output):
    path, _ = folder
    status = _run("predict", path / "logistic.skops", path / inputs, "-o", path / output)
    assert status == EXIT_USAGE
    assert "would be read as part of the input" in capsys.readouterr().err
    assert not (path / output).exists()


def test_output_beside_glob_input_accepted(folder, tmp_path):
    path, frame = folder
    output = tmp_path / "scaled"
    status = _run(
        "predict", path / "scaler.skops", path / "inputs" / "*.parquet", "-o", output,
        "--method", "transform",
    )  # fmt: skip
    assert status == 0
    assert len(pd.read_parquet(output)) == len(frame)


def test_output_reached_through_link_rejected(folder, tmp_path, capsys):
    path, frame = folder
    rows = tmp_path / "rows.csv"
    frame.to_csv(rows, index=False)
    (tmp_path / "link.csv").symlink_to(rows)
    status = _run(
        "predict", path / "logistic.skops", tmp_path / "link.csv", "--columns", "x1,x2",
        "-o", rows, "--overwrite",
    )  # fmt: skip
    assert status == EXIT_USAGE
    assert "is also an input" in capsys.readouterr().err
    assert len(pd.read_csv(rows)) == len(frame)


def test_zarr_input_kept_by_overwrite(tmp_path):
    import zarr

    X = np.random.default_rng(1).normal(size=(100, 3))
    store = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=X.shape, chunks=(10, 3))
    store[:] = X
    model = StandardScaler().fit(X)
    wrapper = postfit.ParallelPostFit(model, backend="sequential", block_size=10)
    wrapper.transform(store, output=tmp_path / "x.zarr", overwrite=True)
    written = zarr.open_array(str(tmp_path / "x.zarr"), mode="r")[:]
    np.testing.assert_allclose(written, model.transform(X), rtol=1e-12)


def test_file_as_output_folder_rejected(folder, capsys):
    path, _ = folder
    output = path / "all.parquet" / "out.csv"
    status = _run("predict", path / "logistic.skops", path / "inputs", "-o", output)
    assert status == EXIT_USAGE
    assert "which is a file, not a folder" in capsys.readouterr().err


def test_unwritable_output_folder_rejected_first(folder, tmp_path, monkeypatch, capsys):
    path, _ = folder
    writable = os.access
    # root writes anywhere, so the test makes the folder look read-only to access().
    monkeypatch.setattr(os, "access", lambda p, mode: writable(p, mode) and p != str(tmp_path))
    output = tmp_path / "scores.csv"
    status = _run("predict", path / "logistic.skops", path / "all.parquet", "-o", output)
    assert status == EXIT_USAGE
    assert "is not writable" in capsys.readouterr().err
    status = _run(
        "fit", "sklearn.preprocessing:StandardScaler", path / "all.parquet",
        "--columns", "x1,x2", "-o", tmp_path / "scaler.skops",
    )  # fmt: skip
    assert status == EXIT_USAGE
    assert "is not writable" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("model", "method", "kept_column"),
    [("logistic", "predict", "prediction"), ("scaler", "transform", "x1")],
)
def test_kept_column_clash_rejected_first(folder, tmp_path, capsys, model, method, kept_column):
    path, frame = folder
    source = tmp_path / "with_clash.parquet"
    # The label column takes the name of the classifier's output column.
    frame.rename(columns={"label": "prediction"}).to_parquet(source)
    output = tmp_path / "out"
    status = _run(
        "predict", path / f"{model}.skops", source, "--columns", "x1,x2", "-o", output,
        "--method", method, "--keep-columns", kept_column,
    )  # fmt: skip
    assert status == EXIT_USAGE
    assert f"Carried columns ['{kept_column}']" in capsys.readouterr().err
    assert not output.exists()


def _scaled_rows(path, inputs, output):
    """Scale the Parquet folder ``inputs`` with --input-format parquet; return the rows written."""
    status = _run(
        "predict", path / "scaler.skops", inputs, "--input-format", "parquet", "-o", output,
        "--method", "transform", "--columns", "x1,x2",
    )  # fmt: skip
    assert status == 0
    return len(pd.read_parquet(output))


def test_input_format_reads_files_without_endings(folder, tmp_path):
    path, frame = folder
    hive = tmp_path / "hive"
    hive.mkdir()
    (hive / "000000_0").write_bytes((path / "inputs" / "a.parquet").read_bytes())
    (hive / "000001_0").write_bytes((path / "inputs" / "b.parquet").read_bytes())
    assert _scaled_rows(path, hive, tmp_path / "scaled") == len(frame)


# CSV options --------------------------------------------------------------------


def test_csv_null_values_and_delimiter(tmp_path):
    frame = pd.DataFrame({"country": ["NA", "US", "null", "FR"] * 50, "x": np.arange(200.0)})
    target = frame["country"].isin(["NA", "null"]).astype(int)
    encoder = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["country"]), remainder="passthrough"
    )
    model = make_pipeline(encoder, LogisticRegression(max_iter=1000)).fit(frame, target)
    joblib.dump(model, tmp_path / "model.joblib")
    frame.to_csv(tmp_path / "rows.csv", sep=";", index=False)
    output = tmp_path / "scores.npy"
    status = _run(
        "predict", tmp_path / "model.joblib", tmp_path / "rows.csv", "-o", output,
        "--method", "predict_proba", "--trust-model", "--delimiter", ";", "--null-values", "",
    )  # fmt: skip
    assert status == 0
    np.testing.assert_allclose(np.load(output), model.predict_proba(frame), rtol=1e-12)


def test_csv_options_rejected_for_parquet(folder, tmp_path, capsys):
    path, _ = folder
    status = _run(
        "predict", path / "logistic.skops", path / "all.parquet", "-o", tmp_path / "o.csv",
        "--delimiter", ";",
    )  # fmt: skip
    assert status == EXIT_USAGE
    assert "--delimiter applies to CSV inputs" in capsys.readouterr().err


# score --------------------------------------------------------------------------


def test_score_own_score_without_target(folder, capsys):
    path, frame = folder
    model = postfit.load_model(path / "kmeans.skops")
    with pytest.warns(postfit.exceptions.MaterializedScoringWarning):
        status = _run("score", path / "kmeans.skops", path / "all.parquet", "--columns", "x1,x2")
    assert status == 0
    printed = capsys.readouterr().out.split()
    assert printed[0] == "score"
    assert float(printed[1]) == pytest.approx(model.score(frame[["x1", "x2"]]), rel=1e-12)


def test_score_reads_target_beside_columns(folder, capsys):
    path, frame = folder
    model = postfit.load_model(path / "linear.skops")
    status = _run(
        "score", path / "linear.skops", path / "all.parquet", "--columns", "x1", "--target", "x2"
    )
    assert status == 0
    name, value = capsys.readouterr().out.split()
    assert name == "r2"
    assert float(value) == pytest.approx(model.score(frame[["x1"]], frame["x2"]), abs=1e-14)


def test_score_needs_target_for_metric(folder, capsys):
    path, _ = folder
    status = _run("score", path / "linear.skops", path / "all.parquet", "--columns", "x1")
    assert status == EXIT_USAGE
    assert "Pass --target" in capsys.readouterr().err


# Model files --------------------------------------------------------------------


def test_unfitted_model_rejected_and_described(tmp_path, folder, capsys):
    path, _ = folder
    postfit.save_model(LogisticRegression(), tmp_path / "unfitted.skops")
    status = _run(
        "predict", tmp_path / "unfitted.skops", path / "all.parquet", "-o", tmp_path / "o"
    )
    assert status == EXIT_USAGE
    assert "contains an unfitted LogisticRegression" in capsys.readouterr().err
    assert _run("info", tmp_path / "unfitted.skops") == 0
    described = capsys.readouterr().out
    assert "fitted: no" in described
    assert "output columns" not in described


def test_info_rejects_object_that_is_not_estimator(tmp_path, capsys):
    import skops.io

    skops.io.dump({"a": np.arange(3)}, tmp_path / "dict.skops")
    assert _run("info", tmp_path / "dict.skops") == EXIT_USAGE
    assert "which is not an estimator" in capsys.readouterr().err


def test_missing_module_of_model_named(tmp_path, monkeypatch, capsys):
    module = tmp_path / "made_here.py"
    module.write_text(
        "from sklearn.base import BaseEstimator, TransformerMixin\n\n\n"
        "class Doubler(TransformerMixin, BaseEstimator):\n"
        "    def fit(self, X, y=None):\n"
        "        return self\n\n"
        "    def transform(self, X):\n"
        "        return X * 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import made_here

    joblib.dump(made_here.Doubler().fit(np.ones((2, 2))), tmp_path / "doubler.joblib")
    monkeypatch.delitem(sys.modules, "made_here")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    assert _run("info", tmp_path / "doubler.joblib", "--trust-model") == EXIT_USAGE
    assert "module 'made_here', which is not installed" in capsys.readouterr().err


# Messages -----------------------------------------------------------------------


def test_warning_printed_as_one_line(folder, tmp_path, capsys):
    path, _ = folder
    with pytest.warns(postfit.exceptions.PostfitWarning) as caught:
        status = _run(
            "predict", path / "logistic.skops", path / "all.parquet", "-o", tmp_path / "o.csv",
            "--memory-budget", "512",
        )  # fmt: skip
    assert status == 0
    assert "such as '512MiB'" in str(caught[0].message)
    assert "(csv, " in capsys.readouterr().out


def test_warning_format_has_no_source_line():
    from postfit import cli

    text = cli._format_warning("predict", "budget is small", UserWarning, "file.py", 3)
    assert text == "postfit predict: UserWarning: budget is small\n"


# Second review of the fixes ------------------------------------------------------


def test_input_format_prefers_files_of_the_format(folder, tmp_path):
    path, _ = folder
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.parquet").write_bytes((path / "inputs" / "a.parquet").read_bytes())
    (mixed / "README.md").write_text("notes\n")
    assert _scaled_rows(path, mixed, tmp_path / "scaled") == 300


def test_input_format_folder_keeps_output_check(folder, capsys):
    path, _ = folder
    status = _run(
        "predict", path / "logistic.skops", path / "inputs", "--input-format", "parquet",
        "-o", path / "inputs" / "scores",
    )  # fmt: skip
    assert status == EXIT_USAGE
    assert "would be read as part of the input" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["_scores", ".scores"])
def test_hidden_output_inside_input_accepted(folder, tmp_path, name):
    path, frame = folder
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    frame.iloc[:300].to_parquet(inputs / "a.parquet")
    status = _run("predict", path / "logistic.skops", inputs, "-o", inputs / name)
    assert status == 0
    assert len(pd.read_parquet(inputs / name)) == 300
    assert _run("predict", path / "logistic.skops", inputs, "-o", tmp_path / "again") == 0
    assert len(pd.read_parquet(tmp_path / "again")) == 300


@pytest.mark.parametrize(
    ("text", "ok"), [("\\t", True), (";;", False), ("", False), ("§", False), ('"', False)]
)
def test_delimiter_checked(tmp_path, folder, capsys, text, ok):
    path, frame = folder
    rows = tmp_path / "rows.txt"
    frame[["x1", "x2"]].to_csv(rows, sep="\t", index=False)
    argv = [
        "predict", path / "logistic.skops", rows, "--input-format", "csv", "--delimiter", text,
        "-o", tmp_path / "o.csv",
    ]  # fmt: skip
    if ok:
        assert _run(*argv) == 0
        return
    # argparse rejects the value itself, with its usage-error exit.
    with pytest.raises(SystemExit) as stopped:
        _run(*argv)
    assert stopped.value.code == EXIT_USAGE
    assert "pass one ASCII character" in capsys.readouterr().err


def test_fitted_custom_estimator_not_called_unfitted(tmp_path, folder):
    path, frame = folder
    module = tmp_path / "custom_scale.py"
    module.write_text(
        "from sklearn.base import BaseEstimator, TransformerMixin\n\n\n"
        "class Scale(TransformerMixin, BaseEstimator):\n"
        "    def fit(self, X, y=None):\n"
        "        self.scale = 2.0\n"
        "        return self\n\n"
        "    def transform(self, X):\n"
        "        return X * self.scale\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import custom_scale

        features = frame[["x1", "x2"]].to_numpy()
        joblib.dump(custom_scale.Scale().fit(features), tmp_path / "scale.joblib")
        np.save(tmp_path / "rows.npy", features)
        status = _run(
            "predict", tmp_path / "scale.joblib", tmp_path / "rows.npy", "--trust-model",
            "--method", "transform", "-o", tmp_path / "out.npy",
        )  # fmt: skip
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("custom_scale", None)
    assert status == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), features * 2.0)


def test_score_own_score_reads_fitted_columns_only(folder, tmp_path, capsys):
    path, frame = folder
    table = frame.assign(id=np.arange(len(frame)))
    table.to_parquet(tmp_path / "with_id.parquet")
    model = MiniBatchKMeans(3, random_state=0, n_init=1).fit(frame[["x1", "x2"]])
    postfit.save_model(model, tmp_path / "kmeans.skops")
    with pytest.warns(postfit.exceptions.MaterializedScoringWarning):
        status = _run("score", tmp_path / "kmeans.skops", tmp_path / "with_id.parquet")
    assert status == 0
    value = float(capsys.readouterr().out.split()[1])
    assert value == pytest.approx(model.score(frame[["x1", "x2"]]), rel=1e-12)


def test_output_of_other_format_in_input_folder_accepted(folder, tmp_path):
    path, frame = folder
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    frame.iloc[:300].to_parquet(inputs / "a.parquet")
    assert _run("predict", path / "logistic.skops", inputs, "-o", inputs / "scores.csv") == 0
    # The next read of the folder skips the CSV scores, with a warning.
    with pytest.warns(postfit.exceptions.PostfitWarning, match="skips"):
        status = _run("predict", path / "logistic.skops", inputs, "-o", tmp_path / "again")
    assert status == 0
    assert len(pd.read_parquet(tmp_path / "again")) == 300


def test_linked_input_folder_keeps_output_check(folder, tmp_path, capsys):
    path, frame = folder
    real = tmp_path / "real"
    real.mkdir()
    frame.iloc[:300].to_parquet(real / "a.parquet")
    (tmp_path / "link").symlink_to(real)
    status = _run("predict", path / "logistic.skops", tmp_path / "link", "-o", real / "scores")
    assert status == EXIT_USAGE
    assert "would be read as part of the input" in capsys.readouterr().err


def test_current_folder_read_as_parquet(folder, tmp_path, monkeypatch):
    path, _ = folder
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.parquet").write_bytes((path / "inputs" / "a.parquet").read_bytes())
    monkeypatch.chdir(inputs)
    status = _run("predict", path / "logistic.skops", ".", "-o", tmp_path / "scores")
    assert status == 0
    assert len(pd.read_parquet(tmp_path / "scores")) == 300
