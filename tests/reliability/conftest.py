"""Fitted models and data shared by the reliability tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression


@pytest.fixture(scope="session")
def iris_frame():
    """Iris features as a frame with short column names, and the labels."""
    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return X, y.to_numpy()


@pytest.fixture(scope="session")
def frame_model(iris_frame):
    X, y = iris_frame
    return LogisticRegression(max_iter=1000).fit(X, y)


@pytest.fixture(scope="session")
def array_model(iris_frame):
    X, y = iris_frame
    return LogisticRegression(max_iter=1000).fit(X.to_numpy(), y)


@pytest.fixture(scope="session")
def nan_frame(iris_frame):
    """Iris with about one value in ten missing, in every column."""
    X, _ = iris_frame
    rng = np.random.default_rng(0)
    values = X.to_numpy().copy()
    values[rng.random(values.shape) < 0.1] = np.nan
    values[7, 2] = np.inf
    return pd.DataFrame(values, columns=X.columns)


@pytest.fixture(scope="session")
def hgb_model(nan_frame, iris_frame):
    """A model that accepts NaN, fitted on data with NaN."""
    _, y = iris_frame
    return HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(nan_frame, y)
