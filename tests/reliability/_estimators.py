"""Estimators that break the post-fit contract on purpose, importable by worker processes."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

#: Value of the first feature that makes :class:`FailOnMarker` raise.
MARKER = -12345.0


class _Wrapped(ClassifierMixin, BaseEstimator):
    """A fitted classifier around ``model`` whose predict misbehaves."""

    def __init__(self, model=None):
        self.model = model

    def fit(self, X, y):
        self.model.fit(X, y)
        self.classes_ = self.model.classes_
        self.n_features_in_ = self.model.n_features_in_
        return self

    def predict_proba(self, X):
        return self.model.predict_proba(X)


class FailOnMarker(_Wrapped):
    """Raise ValueError for a block holding a row whose first feature is ``MARKER``."""

    def predict(self, X):
        values = np.asarray(X, dtype=float)
        if (values[:, 0] == MARKER).any():
            raise ValueError("found the marker row")
        return self.model.predict(values)


class DropsOneRow(_Wrapped):
    """Return one prediction fewer than the rows it is given."""

    def predict(self, X):
        return self.model.predict(X)[:-1]


#: Environment variable that arms :class:`KillsItsProcess` in a child process.
KILL_ENV = "POSTFIT_TEST_KILL_AT_MARKER"


class KillsItsProcess(_Wrapped):
    """SIGKILL the process that scores a block holding the marker row.

    It kills only a process other than ``driver_pid``, and only while the
    environment variable ``KILL_ENV`` is set to 1 when ``armed_by_env`` is
    true, so that the test process itself is never killed and a rerun with
    the same model can finish.
    """

    def __init__(self, model=None, driver_pid=None, armed_by_env=False):
        super().__init__(model)
        self.driver_pid = driver_pid
        self.armed_by_env = armed_by_env

    def predict(self, X):
        values = np.asarray(X, dtype=float)
        armed = os.environ.get(KILL_ENV) == "1" if self.armed_by_env else True
        if armed and (values[:, 0] == MARKER).any() and os.getpid() != self.driver_pid:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.model.predict(values)


class WaitsForFile(_Wrapped):
    """Write ``started`` on the first block, then wait until the file ``gate`` exists.

    Both are paths, so the gate works across worker processes; a test opens it
    once it has checked what it needs while the run is in progress. The wait
    ends after ``timeout`` seconds so that a broken test cannot hang.
    """

    def __init__(self, model=None, started=None, gate=None, timeout=60.0):
        super().__init__(model)
        self.started = started
        self.gate = gate
        self.timeout = timeout

    def predict(self, X):
        with open(self.started, "a") as f:
            f.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.model.predict(X)


class CreatesFileWhenUnpickled:
    """An object whose pickle creates the file ``path`` when it is loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class Slow(_Wrapped):
    """Sleep ``seconds`` per block before predicting, so that a run can be interrupted."""

    def __init__(self, model=None, seconds=0.2):
        super().__init__(model)
        self.seconds = seconds

    def predict(self, X):
        time.sleep(self.seconds)
        return self.model.predict(X)
