"""Model files: skops with an explicit list of trusted types, pickles only on trust."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from postfit import ParallelPostFit, load_model, save_model
from postfit._models import describe_model
from postfit.exceptions import UntrustedModelError


class Doubler(TransformerMixin, BaseEstimator):
    """A transformer from outside scikit-learn, so skops does not trust it."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X) * 2


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True, as_frame=True)


@pytest.fixture(scope="module")
def boosting(iris):
    X, y = iris
    model = make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=5))
    return model.fit(X, y)


def test_skops_round_trip(boosting, iris, tmp_path):
    path = tmp_path / "model.skops"
    save_model(boosting, path)
    loaded = load_model(path)
    assert_array_equal(loaded.predict_proba(iris[0]), boosting.predict_proba(iris[0]))


def test_skops_rejects_foreign_types(iris, tmp_path):
    X, y = iris
    path = tmp_path / "model.skops"
    save_model(make_pipeline(Doubler(), StandardScaler()).fit(X, y), path)
    name = f"{Doubler.__module__}.Doubler"
    with pytest.raises(UntrustedModelError, match=name):
        load_model(path)
    assert_array_equal(
        load_model(path, trusted=[name]).transform(X), load_model(path, trusted=True).transform(X)
    )


def test_pickle_rejected_without_trust(boosting, iris, tmp_path):
    for name in ("model.pkl", "model.joblib"):
        path = tmp_path / name
        save_model(boosting, path)
        with pytest.raises(UntrustedModelError, match="runs any code"):
            load_model(path)
        assert_array_equal(
            load_model(path, trusted=True).predict(iris[0]), boosting.predict(iris[0])
        )


def test_pickle_with_other_ending_rejected(boosting, tmp_path):
    path = tmp_path / "model.bin"
    import joblib

    joblib.dump(boosting, path)
    with pytest.raises(UntrustedModelError, match="pickle"):
        load_model(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.skops"):
        load_model(tmp_path / "nope.skops")


def test_unknown_model_ending_rejected(boosting, tmp_path):
    with pytest.raises(ValueError, match=".skops"):
        save_model(boosting, tmp_path / "model.txt")


def test_wrapped_model_round_trip(boosting, iris, tmp_path):
    path = tmp_path / "wrapped.skops"
    save_model(ParallelPostFit(boosting), path)
    loaded = load_model(path)
    assert isinstance(loaded, ParallelPostFit)
    assert_array_equal(loaded.predict(iris[0]), boosting.predict(iris[0]))


def test_describe_model(boosting):
    text = describe_model(boosting)
    assert "estimator: Pipeline" in text
    assert "features (4):" in text
    assert "sepal length (cm)" in text
    assert "classes (3): 0, 1, 2" in text
    assert "predict_proba: proba_0, proba_1, proba_2" in text
