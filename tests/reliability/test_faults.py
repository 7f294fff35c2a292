"""Faults during a run: killed workers and commands, a full disk, two runs, Ctrl-C.

None of these tests waits for a fixed time. A run is interrupted at a point
it reaches itself: a model kills its own process at a marker row, or waits
for a gate file. Every wait for a process has a deadline that only a hang
would reach.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.linear_model import LogisticRegression

from postfit import ParallelPostFit, read_parquet
from postfit.exceptions import WorkerCrashedError
from postfit.io import OutputLockedError

from . import _estimators
from ._estimators import KILL_ENV, MARKER, KillsItsProcess, Slow, WaitsForFile
from ._waiting import DEADLINE, paused_run, wait_for


def _python_path():
    """Return a PYTHONPATH under which child processes import this package's estimators."""
    depth = len(_estimators.__name__.split("."))
    root = Path(_estimators.__file__).resolve().parents[depth - 1]
    return os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])


def _child_env(**extra):
    env = dict(os.environ, PYTHONPATH=_python_path(), **extra)
    env.pop(KILL_ENV, None)
    env.update(extra)
    return env


def _cli(*args):
    return [sys.executable, "-m", "postfit", *map(str, args)]


def _run_record(folder):
    return json.loads((Path(folder) / "_postfit_run.json").read_text())


def _marked(values, row):
    values = values.copy()
    values[row, 0] = MARKER
    return values


# A worker process killed by SIGKILL -----------------------------------------------------


def test_killed_loky_worker_fails_clearly(tmp_path, iris_frame):
    X, y = iris_frame
    model = KillsItsProcess(LogisticRegression(max_iter=1000), driver_pid=os.getpid())
    model.fit(X.to_numpy(), y)
    wrapper = ParallelPostFit(model, backend="loky", n_jobs=2, block_size=30)
    out = tmp_path / "out"

    with pytest.raises(WorkerCrashedError) as caught:
        wrapper.predict(_marked(X.to_numpy(), 75), output=out)

    # Every block in flight fails with the dead worker, so the one named is
    # block 2, which killed it, or one scored next to it.
    message = str(caught.value)
    assert re.search(r"died while scoring block [0-4] \(rows \d+ to \d+\)", message)
    assert "SIGKILL" in message
    assert "Nothing was returned or marked complete" in message
    assert "complete" not in _run_record(out)
    assert not (out / "_postfit.lock").exists()
    assert not (out / "_postfit_parts" / "part-000002.parquet").exists()
    assert not (out / "part-000002.parquet").exists()

    # The pool recovers: the next run returns the estimator's own predictions.
    assert_array_equal(wrapper.predict(X.to_numpy()), model.model.predict(X.to_numpy()))


# The command killed mid-write, then resumed ------------------------------------------------


def _write_parquet_input(tmp_path, n_rows):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n_rows, 4))
    frame = pd.DataFrame(values, columns=["a", "b", "c", "d"])
    frame.iloc[n_rows // 2, 0] = MARKER
    frame.to_parquet(tmp_path / "in.parquet", row_group_size=500)
    return frame


def test_killed_command_resumes_to_same_output(tmp_path, iris_frame):
    X, y = iris_frame
    frame = _write_parquet_input(tmp_path, 3_000)
    model = KillsItsProcess(LogisticRegression(max_iter=1000), armed_by_env=True)
    model.fit(X.to_numpy(), y)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    args = ["predict", tmp_path / "model.pkl", tmp_path / "in.parquet", "--trust-model"]
    args += ["--backend", "threading", "--workers", "2", "--block-size", "200"]

    killed = subprocess.run(
        _cli(*args, "-o", tmp_path / "out"),
        env=_child_env(**{KILL_ENV: "1"}),
        capture_output=True,
        timeout=DEADLINE,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert "complete" not in _run_record(tmp_path / "out")
    assert (tmp_path / "out" / "_postfit.lock").exists()

    # A part that a writer had not finished when the process died.
    (tmp_path / "out" / ".part-000003.parquet.999.tmp").write_bytes(b"PAR1 half")
    resumed = subprocess.run(
        _cli(*args, "-o", tmp_path / "out", "--resume"),
        env=_child_env(),
        capture_output=True,
        timeout=DEADLINE,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert "kept from the earlier run" in resumed.stdout.decode()
    # The uninterrupted run, in this process: the same blocks, so the same parts.
    whole = ParallelPostFit(model, backend="threading", n_jobs=2, block_size=200)
    whole.predict(read_parquet(tmp_path / "in.parquet"), output=tmp_path / "whole")

    parts = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("_"))
    whole_parts = sorted(p.name for p in (tmp_path / "whole").iterdir() if p.name[0] != "_")
    assert parts == whole_parts
    assert len(parts) == len(set(parts)) == 18
    assert _run_record(tmp_path / "out")["complete"] is True
    assert not (tmp_path / "out" / "_postfit.lock").exists()
    resumed_output = pd.read_parquet(tmp_path / "out")
    whole_output = pd.read_parquet(tmp_path / "whole")
    pd.testing.assert_frame_equal(resumed_output, whole_output)
    assert_array_equal(
        resumed_output["prediction"].to_numpy(), model.model.predict(frame.to_numpy())
    )


# The disk filling up during a write ----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted for the test, or None where mounting is not allowed."""
    folder = tmp_path / "small"
    folder.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        )
    except OSError:
        # No mount command on this machine.
        done = None
    if done is None or done.returncode != 0:
        yield None
        return
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def _simulate_full_disk(monkeypatch):
    """Make every Parquet part write fail as a full disk does (errno ENOSPC)."""
    from postfit.io import _sinks

    def full(self, table, f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_sinks.PartWriter, "_write_table", full)


def test_full_disk_fails_clearly(small_disk, tmp_path, iris_frame, monkeypatch):
    X, y = iris_frame
    model = LogisticRegression(max_iter=1000).fit(X.to_numpy(), y)
    rng = np.random.default_rng(0)
    # 3 float64 probabilities per row: about 3.6 MB of output, more than the 2 MiB disk.
    values = rng.normal(size=(150_000, 4))
    if small_disk is None:
        _simulate_full_disk(monkeypatch)
        out = tmp_path / "out"
    else:
        out = small_disk / "out"
    wrapper = ParallelPostFit(model, backend="threading", n_jobs=2, block_size=10_000)

    with pytest.raises(OSError) as caught:
        wrapper.predict_proba(values, output=out)

    assert caught.value.errno == errno.ENOSPC
    assert any("raised while scoring block" in n for n in caught.value.__notes__)
    assert "complete" not in _run_record(out)
    assert not (out / "_postfit.lock").exists()
    log = out / "_postfit_done.jsonl"
    # The simulated full disk fails every part, so no part may be recorded.
    lines = log.read_text().splitlines() if log.exists() else []
    done = [json.loads(line) for line in lines]
    # An unfinished output keeps its parts out of readers' sight until the run completes.
    waiting = out / "_postfit_parts"
    written = sorted(p.name for p in waiting.glob("part-*.parquet"))
    assert list(out.glob("part-*.parquet")) == []
    assert len(done) < 15
    for receipt in done:
        assert receipt["file"] in written
        part = pd.read_parquet(waiting / receipt["file"])
        start = receipt["index"] * 10_000
        expected = model.predict_proba(values[start : start + 10_000])
        assert_allclose(part.to_numpy(), expected, rtol=1e-12, atol=0)


# Two runs on one output ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "error", "words"),
    [
        ({"resume": True}, OutputLockedError, "Another run is writing"),
        ({"overwrite": True}, OutputLockedError, "Another run is writing"),
        ({}, OutputLockedError, "Another run is writing"),
    ],
    ids=["resume", "overwrite", "no_option"],
)
def test_second_run_on_same_output_rejected(option, error, words, tmp_path, iris_frame):
    X, y = iris_frame
    started, gate = tmp_path / "started", tmp_path / "gate"
    model = WaitsForFile(LogisticRegression(max_iter=1000), str(started), str(gate))
    model.fit(X.to_numpy(), y)
    first = ParallelPostFit(model, backend="threading", n_jobs=2, block_size=50)
    out = tmp_path / "out"

    def run_first():
        return first.predict(X.to_numpy(), output=out)

    with paused_run(run_first, started, gate, "the first run to score a block") as outcome:
        second = ParallelPostFit(model.model, backend="threading", block_size=50)
        with pytest.raises(error, match=words):
            second.predict(X.to_numpy(), output=out, **option)

    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].n_rows == 150
    assert_array_equal(pd.read_parquet(out)["prediction"], model.model.predict(X.to_numpy()))


# Ctrl-C ---------------------------------------------------------------------------------------


def _descendants(process):
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(process):
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_interrupt_stops_workers_without_orphans(tmp_path, iris_frame):
    X, y = iris_frame
    _write_parquet_input(tmp_path, 4_000)
    # 40 blocks of 2 s on 2 workers: about 40 s, unless the interrupt stops it.
    model = Slow(LogisticRegression(max_iter=1000), seconds=2.0).fit(X.to_numpy(), y)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    args = ["predict", tmp_path / "model.pkl", tmp_path / "in.parquet", "--trust-model"]
    args += ["--backend", "loky", "--workers", "2", "--block-size", "100"]
    command = subprocess.Popen(
        _cli(*args, "-o", tmp_path / "out"),
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    parent = psutil.Process(command.pid)
    try:
        wait_for(lambda: len(_descendants(parent)) >= 2, "the loky workers to start")
        wait_for(lambda: (tmp_path / "out" / "_postfit.lock").exists(), "the run to start")
        workers = _descendants(parent)
        interrupted = time.monotonic()
        command.send_signal(signal.SIGINT)
        _, stderr = command.communicate(timeout=DEADLINE)
        stopped_after = time.monotonic() - interrupted
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()

    assert command.returncode == 130, stderr.decode()
    assert "interrupted" in stderr.decode()
    # Finishing the blocks would take at least 40 s (40 blocks of 2 s on 2
    # workers); the bound is loose so that a loaded machine does not fail it.
    assert stopped_after < 30
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert [p for p in alive if _alive(p)] == []
    assert "complete" not in _run_record(tmp_path / "out")
    assert not (tmp_path / "out" / "_postfit.lock").exists()


def _is_loky_worker(process):
    try:
        return "popen_loky" in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


def test_interrupt_while_pool_starts_kills_workers(iris_frame, monkeypatch):
    from joblib.externals.loky import process_executor

    from postfit.backends import loky as loky_backend

    X, y = iris_frame
    model = LogisticRegression(max_iter=1000).fit(X.to_numpy(), y)
    # A fresh pool, so that the next run spawns workers and starts loky's manager thread.
    loky_backend.discard_pool(loky_backend.get_pool(2))
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    spawned = []

    def interrupted_start(thread):
        # Ctrl-C arriving after loky spawned the workers, before their manager
        # runs. A worker forked a moment ago shows its loky command line only
        # once it has run exec, so the check waits for both.
        deadline = time.monotonic() + 10
        while True:
            children = psutil.Process().children(recursive=True)
            new = [p for p in children if p.pid not in before and _is_loky_worker(p)]
            if len(new) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        spawned.extend(new)
        raise KeyboardInterrupt

    monkeypatch.setattr(process_executor._ExecutorManagerThread, "start", interrupted_start)
    wrapper = ParallelPostFit(model, backend="loky", n_jobs=2, block_size=30)
    with pytest.raises(KeyboardInterrupt):
        wrapper.predict(X.to_numpy())
    monkeypatch.undo()

    assert len(spawned) == 2
    gone, alive = psutil.wait_procs(spawned, timeout=10)
    assert [p for p in alive if _alive(p)] == []
    # The next run builds a new pool.
    assert_array_equal(wrapper.predict(X.to_numpy()), model.predict(X.to_numpy()))


def _interrupt_masked_by_cleanup(*args, **kwargs):
    """Raise what loky raised when Ctrl-C landed while it started a worker."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise UnboundLocalError("cannot access local variable 'parent_r'") from None


def test_interrupt_behind_cleanup_error_stays_interrupt(iris_frame, monkeypatch):
    from postfit.backends import loky as loky_backend

    X, y = iris_frame
    model = LogisticRegression(max_iter=1000).fit(X.to_numpy(), y)
    pool = loky_backend.get_pool(2)
    monkeypatch.setattr(pool, "submit", _interrupt_masked_by_cleanup)
    wrapper = ParallelPostFit(model, backend="loky", n_jobs=2, block_size=30)

    with pytest.raises(KeyboardInterrupt):
        wrapper.predict(X.to_numpy())
    monkeypatch.undo()
    # The interrupted pool is dropped, and the next run starts a new one.
    assert loky_backend.get_pool(2) is not pool
    assert_array_equal(wrapper.predict(X.to_numpy()), model.predict(X.to_numpy()))


def test_cli_reports_interrupt_behind_cleanup_error(monkeypatch, capsys):
    from postfit import cli

    parser = cli.build_parser()
    original_parse = parser.parse_args

    def parse_args(argv):
        args = original_parse(argv)
        args.handler = _interrupt_masked_by_cleanup
        return args

    monkeypatch.setattr(parser, "parse_args", parse_args)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)

    assert cli.main(["info", "model.pkl"]) == 130
    assert "postfit info: interrupted" in capsys.readouterr().err
