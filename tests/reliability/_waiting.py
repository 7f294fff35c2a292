"""Deadlines for the reliability tests, and a run held in the middle of a block."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

#: Seconds after which a run or process that should have finished counts as hung.
DEADLINE = 60


def wait_for(condition, description):
    """Poll ``condition()`` until it is true; fail the test after ``DEADLINE`` seconds."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {DEADLINE} s waiting for {description}")
        time.sleep(0.01)


@contextlib.contextmanager
def paused_run(call, started, gate, description="the run to score a block"):
    """Run ``call()`` in a thread and yield while its estimator waits at ``gate``.

    The estimator is a ``WaitsForFile`` that writes ``started`` and then waits
    for the file ``gate``. The yielded dict gets ``"result"`` or ``"error"``
    once the block ends: on leaving, the gate opens and the thread is joined.
    """
    outcome = {}

    def run():
        try:
            outcome["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(started.exists, description)
        yield outcome
    finally:
        gate.touch()
        thread.join(DEADLINE)
