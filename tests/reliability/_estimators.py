"""Estimators that break the post-fit contract on purpose, importable by worker processes."""

from __future__ import annotations

import os
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


class KillsItsWorker(_Wrapped):
    """SIGKILL the worker process that scores a block holding the marker row.

    Outside a worker (in the process that created it) it predicts normally, so
    a run that falls back to the driver cannot kill the test process.
    """

    def __init__(self, model=None, driver_pid=None):
        super().__init__(model)
        self.driver_pid = driver_pid

    def predict(self, X):
        values = np.asarray(X, dtype=float)
        if (values[:, 0] == MARKER).any() and os.getpid() != self.driver_pid:
            os.kill(os.getpid(), 9)
        return self.model.predict(values)


class Slow(_Wrapped):
    """Sleep ``seconds`` per block before predicting, so that a run can be interrupted."""

    def __init__(self, model=None, seconds=0.2):
        super().__init__(model)
        self.seconds = seconds

    def predict(self, X):
        time.sleep(self.seconds)
        return self.model.predict(X)
