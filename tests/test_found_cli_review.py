"""Cases found by a review of the command line and file outputs.

Each test failed before its fix. Resuming: a resume rejected for tree
models, and a progress bar that stopped short. Outputs: an unfinished
Parquet output that read as complete, a user's file deleted by
--overwrite, an output that replaced its input, and empty inputs. Runs:
SIGTERM that left loky workers running, budgets without a unit, files of
another format skipped without a word, dask and ray backends that the
command could not use, and messages that named no fix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from dask_fixtures import dask_cluster  # noqa: F401 - a fixture
from numpy.testing import assert_allclose
from sklearn.base import BaseEstimator
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

import postfit
from postfit._kernel import stable_model_token
from postfit.cli import main
from postfit.exceptions import PostfitWarning


def _postfit(*argv, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "postfit", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(4000, 4)), columns=list("abcd"))
    target = (frame["a"] + rng.normal(size=4000) > 0).astype(int)
    folder = tmp_path_factory.mktemp("review")
    frame.to_parquet(folder / "in.parquet")
    models = {
        "tree": DecisionTreeClassifier(max_depth=5, random_state=0),
        "forest": RandomForestClassifier(n_estimators=5, random_state=0),
        "boosting": GradientBoostingClassifier(n_estimators=5, random_state=0),
    }
    for name, model in models.items():
        postfit.save_model(model.fit(frame, target), folder / f"{name}.skops")
    return folder, frame


# Resuming --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tree", "forest", "boosting"])
def test_model_token_same_in_two_processes(workspace, name):
    folder, _ = workspace
    code = (
        "import postfit; from postfit._kernel import stable_model_token; "
        f"print(stable_model_token(postfit.load_model({str(folder / (name + '.skops'))!r})))"
    )
    tokens = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        for _ in range(2)
    }

    assert len(tokens) == 1
    assert tokens.pop().strip() == stable_model_token(postfit.load_model(folder / f"{name}.skops"))


def test_forest_run_resumes_in_new_process(workspace):
    folder, frame = workspace
    output = folder / "forest_out"
    argv = ["predict", folder / "forest.skops", folder / "in.parquet", "-o", output]
    argv += ["--block-size", "500", "--no-progress"]

    first = _postfit(*argv)
    again = _postfit(*argv, "--resume")

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert "8 kept from the earlier run" in again.stdout


def test_changed_input_named_on_resume(workspace, tmp_path):
    folder, frame = workspace
    source = tmp_path / "in.parquet"
    frame.to_parquet(source)
    output = tmp_path / "out"
    argv = ["predict", str(folder / "tree.skops"), str(source), "-o", str(output)]
    argv += ["--block-size", "500", "--no-progress", "--backend", "sequential"]
    assert main(argv) == 0
    time.sleep(0.01)
    frame.iloc[:100].to_parquet(source)

    status = main([*argv, "--resume"])

    assert status == 2


def test_changed_input_message_names_the_file(workspace, tmp_path):
    folder, frame = workspace
    source = tmp_path / "in.parquet"
    frame.to_parquet(source)
    model = postfit.load_model(folder / "tree.skops")
    wrapper = postfit.ParallelPostFit(model, backend="sequential", block_size=500)
    wrapper.predict(postfit.read_parquet(source), output=tmp_path / "out")
    frame.iloc[:100].to_parquet(source)

    with pytest.raises(ValueError, match=r"the input changed: .*in\.parquet has another size"):
        wrapper.predict(postfit.read_parquet(source), output=tmp_path / "out", resume=True)


# Outputs ------------------------------------------------------------------------


class _FailAt(BaseEstimator):
    """A fitted model's ``predict`` that raises on call ``fail_at`` (counting from 1)."""

    def __init__(self, model=None, fail_at=0):
        self.model = model
        self.fail_at = fail_at

    def fit(self, X, y=None):
        return self

    def __sklearn_is_fitted__(self):
        return True

    @property
    def feature_names_in_(self):
        return self.model.feature_names_in_

    @property
    def n_features_in_(self):
        return self.model.n_features_in_

    def predict(self, X):
        self.calls_ = getattr(self, "calls_", 0) + 1
        if self.calls_ == self.fail_at:
            raise RuntimeError("injected failure")
        return self.model.predict(X)


def test_unfinished_parquet_output_reads_empty(workspace, tmp_path):
    folder, frame = workspace
    model = _FailAt(postfit.load_model(folder / "tree.skops"), fail_at=4)
    wrapper = postfit.ParallelPostFit(model, backend="sequential", block_size=500)
    source = postfit.read_parquet(folder / "in.parquet")

    with pytest.raises(RuntimeError, match="injected failure"):
        wrapper.predict(source, output=str(tmp_path / "out"))

    assert not any(name.endswith(".parquet") for name in os.listdir(tmp_path / "out"))
    assert len(pd.read_parquet(tmp_path / "out")) == 0
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_finished_parquet_output_marked(workspace, tmp_path):
    folder, frame = workspace
    model = postfit.load_model(folder / "tree.skops")
    wrapper = postfit.ParallelPostFit(model, backend="sequential", block_size=500)

    wrapper.predict(postfit.read_parquet(folder / "in.parquet"), output=tmp_path / "out")

    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert not (tmp_path / "out" / "_postfit_parts").exists()
    written = pd.read_parquet(tmp_path / "out")
    assert_allclose(written["prediction"], model.predict(frame))


def test_overwrite_keeps_file_not_written_by_postfit(workspace, tmp_path, capsys):
    folder, _ = workspace
    notes = tmp_path / "notes"
    notes.write_text("my notes")
    argv = ["predict", str(folder / "tree.skops"), str(folder / "in.parquet")]

    status = main([*argv, "-o", str(notes), "--overwrite", "--no-progress"])

    assert status == 2
    assert notes.read_text() == "my notes"
    assert "was not written by postfit" in capsys.readouterr().err


def test_output_that_is_an_input_rejected(workspace, tmp_path, capsys):
    folder, frame = workspace
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    argv = ["predict", str(folder / "tree.skops"), str(source), "-o", str(source)]

    status = main([*argv, "--overwrite", "--no-progress"])

    assert status == 2
    assert "is also an input" in capsys.readouterr().err
    assert_allclose(pd.read_csv(source).to_numpy(), frame.to_numpy(), rtol=1e-12)


def test_sigterm_stops_loky_workers(workspace, tmp_path):
    psutil = pytest.importorskip("psutil")
    folder, frame = workspace
    big = tmp_path / "big.parquet"
    pd.concat([frame] * 50, ignore_index=True).to_parquet(big)
    argv = [sys.executable, "-m", "postfit", "predict", folder / "forest.skops", big]
    argv += ["-o", tmp_path / "out", "--backend", "loky", "--workers", "2"]
    argv += ["--block-size", "2000", "--no-progress"]
    process = subprocess.Popen(list(map(str, argv)), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    workers = []
    while time.monotonic() < deadline and not workers:
        children = psutil.Process(process.pid).children(recursive=True)
        workers = [child for child in children if "loky" in " ".join(child.cmdline())]
        time.sleep(0.05)

    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)

    assert process.returncode == 128 + signal.SIGTERM
    assert "terminated" in err
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert alive == []
    assert not (tmp_path / "out" / "_postfit.lock").exists()


# Options and inputs ----------------------------------------------------------------


def test_budget_without_unit_warns(workspace):
    folder, frame = workspace
    model = postfit.load_model(folder / "tree.skops")

    with pytest.warns(PostfitWarning, match="is 512 bytes.*'512MiB'"):
        postfit.ParallelPostFit(model, memory_budget=512).predict(frame)


def test_budget_rounding_to_zero_rejected(workspace):
    folder, frame = workspace
    model = postfit.load_model(folder / "tree.skops")

    with pytest.raises(ValueError, match="Invalid memory_budget '0.5'"):
        postfit.ParallelPostFit(model, memory_budget="0.5").predict(frame)


def test_resumed_progress_bar_counts_kept_rows(workspace, tmp_path, capsys):
    folder, frame = workspace
    model = _FailAt(postfit.load_model(folder / "tree.skops"), fail_at=5)
    wrapper = postfit.ParallelPostFit(model, backend="sequential", block_size=500)
    source = postfit.read_parquet(folder / "in.parquet")
    with pytest.raises(RuntimeError):
        wrapper.predict(source, output=str(tmp_path / "out"))
    # The model as it was when the run started: four blocks are left, so it does not fail.
    del model.calls_
    wrapper.set_params(progress=True)
    capsys.readouterr()

    wrapper.predict(source, output=str(tmp_path / "out"), resume=True)

    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "100%" in last
    assert "4.00k/4.00k" in last


def test_other_format_in_directory_warns(workspace, tmp_path):
    folder, frame = workspace
    (tmp_path / "data").mkdir()
    frame.iloc[:2000].to_parquet(tmp_path / "data" / "a.parquet")
    frame.iloc[2000:].to_csv(tmp_path / "data" / "b.csv", index=False)

    with pytest.warns(PostfitWarning, match=r"1 other file \(b\.csv\).*postfit\.read_csv"):
        source = postfit.read_parquet(tmp_path / "data")

    assert source.n_rows == 2000


def test_directory_of_other_format_names_reader(tmp_path, workspace):
    _, frame = workspace
    (tmp_path / "data").mkdir()
    frame.to_csv(tmp_path / "data" / "b.csv", index=False)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FileNotFoundError, match="--input-format csv"):
            postfit.read_parquet(tmp_path / "data")


def test_run_record_version(workspace, tmp_path):
    folder, _ = workspace
    model = postfit.load_model(folder / "tree.skops")
    wrapper = postfit.ParallelPostFit(model, backend="sequential")

    wrapper.predict(postfit.read_parquet(folder / "in.parquet"), output=tmp_path / "out")

    record = json.loads((tmp_path / "out" / "_postfit_run.json").read_text())
    assert record["version"] == 2
    assert record["model"] == stable_model_token(model)


# Backends on the command line ----------------------------------------------------------


@pytest.mark.cluster
def test_dask_backend_with_scheduler(workspace, tmp_path, dask_cluster):  # noqa: F811
    folder, frame = workspace
    argv = ["predict", str(folder / "forest.skops"), str(folder / "in.parquet")]
    argv += ["-o", str(tmp_path / "out"), "--method", "predict_proba", "--no-progress"]

    status = main([*argv, "--backend", "dask", "--scheduler", dask_cluster.scheduler_address])

    assert status == 0
    model = postfit.load_model(folder / "forest.skops")
    written = pd.read_parquet(tmp_path / "out").to_numpy()
    assert_allclose(written, model.predict_proba(frame), rtol=1e-12)


def test_dask_backend_without_scheduler_is_usage_error(workspace, tmp_path, capsys, monkeypatch):
    import dask

    folder, _ = workspace
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    argv = ["predict", str(folder / "tree.skops"), str(folder / "in.parquet")]

    with dask.config.set({"scheduler-address": None}):
        status = main([*argv, "-o", str(tmp_path / "out"), "--backend", "dask"])

    assert status == 2
    assert "--scheduler tcp://HOST:8786" in capsys.readouterr().err


def test_ray_backend_is_usage_error(workspace, tmp_path, capsys):
    folder, _ = workspace
    argv = ["predict", str(folder / "tree.skops"), str(folder / "in.parquet")]

    status = main([*argv, "-o", str(tmp_path / "out"), "--backend", "ray"])

    assert status == 2
    assert "after your own ray.init()" in capsys.readouterr().err


def test_score_without_score_method_asks_for_scoring(workspace, tmp_path, capsys):
    from sklearn.ensemble import IsolationForest

    folder, frame = workspace
    postfit.save_model(
        IsolationForest(n_estimators=5, random_state=0).fit(frame), tmp_path / "m.skops"
    )
    frame.assign(target=1).to_parquet(tmp_path / "in.parquet")

    status = main(
        ["score", str(tmp_path / "m.skops"), str(tmp_path / "in.parquet"), "--target", "target"]
    )

    assert status == 2
    assert "Pass --scoring" in capsys.readouterr().err


# Inputs without rows -----------------------------------------------------------------


@pytest.fixture
def empty_input(workspace, tmp_path):
    folder, frame = workspace
    frame.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    return folder, postfit.read_parquet(tmp_path / "empty.parquet")


def test_empty_input_parquet_keeps_columns(empty_input, tmp_path):
    folder, source = empty_input
    model = postfit.load_model(folder / "tree.skops")
    wrapper = postfit.ParallelPostFit(model, backend="sequential")

    wrapper.predict_proba(source, output=tmp_path / "out")

    written = pd.read_parquet(tmp_path / "out")
    assert list(written.columns) == ["proba_0", "proba_1"]
    assert len(written) == 0


def test_empty_input_npy_loads(empty_input, tmp_path):
    folder, source = empty_input
    model = postfit.load_model(folder / "tree.skops")

    postfit.ParallelPostFit(model, backend="sequential").predict(source, output=tmp_path / "o.npy")

    assert np.load(tmp_path / "o.npy").shape == (0,)


def test_empty_input_csv_names_transform_columns(empty_input, tmp_path):
    from sklearn.preprocessing import StandardScaler

    folder, source = empty_input
    frame = pd.read_parquet(folder / "in.parquet")
    scaler = StandardScaler().fit(frame)

    postfit.ParallelPostFit(scaler, backend="sequential").transform(
        source, output=tmp_path / "o.csv"
    )

    assert (tmp_path / "o.csv").read_text().strip() == "a,b,c,d"


# Model tokens of models with code ------------------------------------------------------

_SCRIPT_MODEL = """
import sys
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from postfit._kernel import stable_model_token

class Double(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return 2 * X

X = np.arange(40.0).reshape(20, 2)
y = np.arange(20) % 2
model = make_pipeline(Double(), FunctionTransformer(lambda z: z + 1), LogisticRegression())
model.fit(X, y)
model.me = model
print(stable_model_token(model))
"""


def test_token_of_script_classes_and_lambdas_stable(tmp_path):
    script = tmp_path / "model.py"
    script.write_text(_SCRIPT_MODEL)

    runs = [
        subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        for _ in range(2)
    ]

    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout


def test_older_run_record_not_resumed(workspace, tmp_path):
    folder, _ = workspace
    model = postfit.load_model(folder / "tree.skops")
    wrapper = postfit.ParallelPostFit(model, backend="sequential", block_size=500)
    source = postfit.read_parquet(folder / "in.parquet")
    wrapper.predict(source, output=tmp_path / "out")
    record_path = tmp_path / "out" / "_postfit_run.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "version": 1, "complete": False}))

    with pytest.raises(ValueError, match="another version of postfit wrote it.*overwrite=True"):
        wrapper.predict(source, output=tmp_path / "out", resume=True)


def test_malformed_scheduler_is_usage_error(workspace, tmp_path, capsys):
    folder, _ = workspace
    argv = ["predict", str(folder / "tree.skops"), str(folder / "in.parquet")]
    argv += ["-o", str(tmp_path / "out"), "--backend", "dask", "--scheduler", "not-an-address"]

    status = main(argv)

    assert status == 2
    assert "Cannot connect to the Dask scheduler at 'not-an-address'" in capsys.readouterr().err


# Messages of the command ---------------------------------------------------------------


def test_model_file_without_estimator_named(workspace, tmp_path, capsys):
    import skops.io

    folder, _ = workspace
    skops.io.dump({"a": 1}, tmp_path / "d.skops")

    status = main(["predict", str(tmp_path / "d.skops"), str(folder / "in.parquet"), "-o", "x"])

    assert status == 2
    assert "contains an object of type dict, which has none" in capsys.readouterr().err


def test_empty_output_path_rejected(workspace, capsys):
    folder, _ = workspace

    status = main(["predict", str(folder / "tree.skops"), str(folder / "in.parquet"), "-o", ""])

    assert status == 2
    assert "The output path is empty" in capsys.readouterr().err


def test_repeated_keep_column_rejected(workspace, tmp_path, capsys):
    folder, _ = workspace
    argv = ["predict", str(folder / "tree.skops"), str(folder / "in.parquet")]

    with pytest.raises(SystemExit) as stop:
        main([*argv, "-o", str(tmp_path / "out"), "--keep-columns", "a,a"])

    assert stop.value.code == 2
    assert "column 'a' is listed more than once" in capsys.readouterr().err


def test_unwritable_output_is_usage_error(workspace, tmp_path, capsys):
    folder, _ = workspace
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    # root may write to a read-only folder, but not create files in sysfs.
    output = locked / "out" if not os.access(locked, os.W_OK) else "/sys/postfit-out"
    if output == "/sys/postfit-out" and not os.path.isdir("/sys"):
        pytest.skip("no folder that this user cannot write to")
    argv = ["predict", str(folder / "tree.skops"), str(folder / "in.parquet")]

    status = main([*argv, "-o", str(output), "--no-progress"])

    assert status == 2
    assert "Check the permissions of that path" in capsys.readouterr().err


def test_fit_takes_verbose(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["fit", "-v", "--help"])

    assert stop.value.code == 0
    assert "--verbose" in capsys.readouterr().out


def test_columns_subset_of_named_model_rejected(workspace, tmp_path, capsys):
    folder, _ = workspace
    argv = ["predict", str(folder / "tree.skops"), str(folder / "in.parquet")]

    status = main([*argv, "-o", str(tmp_path / "out"), "--columns", "a,b", "--no-progress"])

    assert status == 2
    assert "columns= leaves out ['c', 'd']" in capsys.readouterr().err


def test_csv_reader_on_binary_file_names_it(tmp_path):
    np.save(tmp_path / "rows.npy", np.random.default_rng(0).normal(size=(50, 4)))

    with pytest.raises(ValueError, match=r"Cannot read the first line of .*rows\.npy"):
        postfit.read_csv(tmp_path / "rows.npy").all_column_names()
