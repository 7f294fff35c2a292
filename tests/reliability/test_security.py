"""Untrusted model files, network listeners and temporary files."""

from __future__ import annotations

import os
import pickle
import stat

import psutil
import pytest
import skops.io as sio
from numpy.testing import assert_array_equal
from sklearn.linear_model import LogisticRegression

from postfit import ParallelPostFit, load_model
from postfit.backends import loky
from postfit.cli import main
from postfit.exceptions import UntrustedModelError

from ._estimators import MARKER, CreatesFileWhenUnpickled, FailOnMarker, Slow, WaitsForFile
from ._waiting import paused_run

# Code in model files ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.pkl", "model.pickle", "model.joblib", "model.bin"])
def test_pickle_code_does_not_run_without_trust(name, tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(CreatesFileWhenUnpickled(str(marker))))

    with pytest.raises(UntrustedModelError, match="trusted=True"):
        load_model(path)
    with pytest.raises(UntrustedModelError):
        load_model(path, trusted=["builtins.open"])
    assert main(["info", str(path)]) == 2

    assert not marker.exists()


def test_trusted_pickle_does_run_its_code(tmp_path):
    # The payload of the test above is live: trusting the file runs it.
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(CreatesFileWhenUnpickled(str(marker))))
    load_model(path, trusted=True).close()
    assert marker.exists()


def test_skops_lists_untrusted_types(tmp_path, iris_frame, capsys):
    X, y = iris_frame
    model = Slow(LogisticRegression(max_iter=1000), seconds=0.0).fit(X.to_numpy(), y)
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    name = f"{Slow.__module__}.{Slow.__qualname__}"

    with pytest.raises(UntrustedModelError) as caught:
        load_model(path)
    assert name in str(caught.value)
    assert "sklearn" not in str(caught.value).split("postfit does not trust:")[1]

    assert main(["info", str(path)]) == 2
    assert name in capsys.readouterr().err

    loaded = load_model(path, trusted=[name])
    assert_array_equal(loaded.predict(X.to_numpy()), model.predict(X.to_numpy()))


# Network listeners ----------------------------------------------------------------------


def _listening(process):
    try:
        return [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_default_backends_open_no_listener(backend, tmp_path, iris_frame):
    X, y = iris_frame
    started, gate = tmp_path / "started", tmp_path / "gate"
    model = WaitsForFile(LogisticRegression(max_iter=1000), str(started), str(gate))
    model.fit(X.to_numpy(), y)
    wrapper = ParallelPostFit(model, backend=backend, n_jobs=2, block_size=50)
    me = psutil.Process()
    # Listeners opened by other tests, in this process or in a cluster's
    # worker processes that they started, are not this run's.
    before = {(c.laddr, c.type) for c in _listening(me)}
    children_before = {
        (p.pid, c.laddr, c.type) for p in me.children(recursive=True) for c in _listening(p)
    }

    with paused_run(lambda: wrapper.predict(X.to_numpy()), started, gate) as outcome:
        new = [c for c in _listening(me) if (c.laddr, c.type) not in before]
        in_workers = [
            c
            for p in me.children(recursive=True)
            for c in _listening(p)
            if (p.pid, c.laddr, c.type) not in children_before
        ]

    assert new == []
    assert in_workers == []
    assert "error" not in outcome, outcome.get("error")
    assert_array_equal(outcome["result"], model.model.predict(X.to_numpy()))


# Temporary files ------------------------------------------------------------------------


@pytest.fixture
def temp_dirs(monkeypatch):
    """Record the private directories the loky backend creates."""
    created = []
    original = loky.private_temp_dir

    def recording():
        path = original()
        created.append(path)
        return path

    monkeypatch.setattr(loky, "private_temp_dir", recording)
    return created


def _modes(folder):
    return {entry.name: stat.S_IMODE(entry.stat().st_mode) for entry in os.scandir(folder)}


def test_temporary_files_private_and_removed(temp_dirs, tmp_path, iris_frame):
    X, y = iris_frame
    started, gate = tmp_path / "started", tmp_path / "gate"
    model = WaitsForFile(LogisticRegression(max_iter=1000), str(started), str(gate))
    model.fit(X.to_numpy(), y)
    wrapper = ParallelPostFit(model, backend="loky", n_jobs=2, block_size=50)

    with paused_run(lambda: wrapper.predict(X.to_numpy()), started, gate) as outcome:
        assert len(temp_dirs) == 1
        folder = temp_dirs[0]
        folder_mode = stat.S_IMODE(os.stat(folder).st_mode)
        files = _modes(folder)

    assert folder_mode == 0o700
    # The pickled model and the memory-mapped input.
    assert any(name.startswith("model-") for name in files)
    assert any(name.startswith("input-") for name in files)
    assert {name: mode for name, mode in files.items() if mode != 0o600} == {}
    assert not os.path.exists(folder)
    assert "error" not in outcome, outcome.get("error")
    assert_array_equal(outcome["result"], model.model.predict(X.to_numpy()))


def test_temporary_files_removed_after_failure(temp_dirs, iris_frame):
    X, y = iris_frame
    values = X.to_numpy().copy()
    values[100, 0] = MARKER
    model = FailOnMarker(LogisticRegression(max_iter=1000)).fit(X.to_numpy(), y)
    wrapper = ParallelPostFit(model, backend="loky", n_jobs=2, block_size=50)

    with pytest.raises(ValueError, match="marker row"):
        wrapper.predict(values)

    assert len(temp_dirs) == 1
    assert not os.path.exists(temp_dirs[0])
