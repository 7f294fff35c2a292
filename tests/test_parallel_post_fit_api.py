"""ParallelPostFit as a scikit-learn estimator: params, cloning, tags, fitted state."""

from __future__ import annotations

import copy
import pickle
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, RegressorMixin, clone, is_classifier, is_regressor
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from postfit import ParallelPostFit


@pytest.fixture(scope="module")
def classification():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X[:300, :6]), y[:300]


@pytest.fixture(scope="module")
def regression():
    X, y = load_diabetes(return_X_y=True)
    return X[:300], y[:300]


def test_init_only_stores_arguments():
    estimator = LogisticRegression()
    wrapper = ParallelPostFit(estimator, "accuracy", backend="threading", n_jobs=2, block_size=5)
    assert wrapper.estimator is estimator
    assert wrapper.scoring == "accuracy"
    assert wrapper.block_size == 5
    assert "estimator_" not in vars(wrapper)


def test_get_params_includes_estimator_keys():
    params = ParallelPostFit(LogisticRegression(C=3.0)).get_params()
    assert params["estimator__C"] == 3.0
    assert params["backend"] == "auto"


def test_set_params_with_estimator_keys():
    wrapper = ParallelPostFit(LogisticRegression())
    wrapper.set_params(estimator__C=0.5, block_size=10)
    assert wrapper.estimator.C == 0.5
    assert wrapper.block_size == 10


def test_clone_is_unfitted_copy(classification):
    X, y = classification
    wrapper = ParallelPostFit(LogisticRegression(C=2.0), block_size=7).fit(X, y)
    cloned = clone(wrapper)
    assert cloned.estimator is not wrapper.estimator
    assert cloned.get_params()["estimator__C"] == 2.0
    assert cloned.block_size == 7
    with pytest.raises(NotFittedError):
        check_is_fitted(cloned)


def test_grid_search_over_estimator_params(classification):
    X, y = classification
    search = GridSearchCV(
        ParallelPostFit(LogisticRegression(), backend="threading", block_size=40),
        {"estimator__C": [0.01, 1.0]},
        cv=3,
    )
    search.fit(X, y)
    plain = GridSearchCV(LogisticRegression(), {"C": [0.01, 1.0]}, cv=3).fit(X, y)
    assert search.best_params_ == {"estimator__C": plain.best_params_["C"]}
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"], rtol=1e-12
    )


def test_cross_val_score_matches_plain(regression):
    X, y = regression
    wrapped = cross_val_score(ParallelPostFit(LinearRegression(), block_size=33), X, y, cv=3)
    plain = cross_val_score(LinearRegression(), X, y, cv=3)
    np.testing.assert_allclose(wrapped, plain, rtol=1e-12)


def test_in_pipeline(classification):
    X, y = classification
    pipeline = make_pipeline(
        ParallelPostFit(StandardScaler(), backend="threading", block_size=50),
        ParallelPostFit(LogisticRegression(), backend="threading", block_size=50),
    ).fit(X, y)
    plain = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    np.testing.assert_allclose(pipeline.predict_proba(X), plain.predict_proba(X), rtol=1e-12)
    np.testing.assert_array_equal(pipeline.predict(X), plain.predict(X))


def test_tags_delegate_to_estimator():
    assert is_classifier(ParallelPostFit(LogisticRegression()))
    assert not is_regressor(ParallelPostFit(LogisticRegression()))
    assert is_regressor(ParallelPostFit(LinearRegression()))
    assert not is_classifier(ParallelPostFit(KMeans()))


def test_check_is_fitted(classification):
    X, y = classification
    wrapper = ParallelPostFit(LogisticRegression())
    with pytest.raises(NotFittedError):
        check_is_fitted(wrapper)
    wrapper.fit(X, y)
    check_is_fitted(wrapper)


def test_fit_leaves_user_estimator_unfitted(classification):
    X, y = classification
    estimator = LogisticRegression()
    before = pickle.dumps(estimator)
    ParallelPostFit(estimator).fit(X, y)
    assert pickle.dumps(estimator) == before
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)


def test_partial_fit_leaves_user_estimator_unchanged(classification):
    X, y = classification
    estimator = SGDClassifier(random_state=0)
    wrapper = ParallelPostFit(estimator)
    wrapper.partial_fit(X[:100], y[:100], classes=[0, 1])
    wrapper.partial_fit(X[100:], y[100:])
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)
    plain = SGDClassifier(random_state=0)
    plain.partial_fit(X[:100], y[:100], classes=[0, 1])
    plain.partial_fit(X[100:], y[100:])
    np.testing.assert_allclose(wrapper.coef_, plain.coef_, rtol=1e-12)


def test_partial_fit_copies_an_already_fitted_estimator(classification):
    X, y = classification
    estimator = SGDClassifier(random_state=0).fit(X, y)
    coef = estimator.coef_.copy()
    wrapper = ParallelPostFit(estimator)
    wrapper.partial_fit(X, y)
    np.testing.assert_array_equal(estimator.coef_, coef)
    assert wrapper.estimator_ is not estimator
    assert not np.array_equal(wrapper.coef_, coef)


def test_wraps_fitted_estimator_without_fit(classification):
    X, y = classification
    estimator = LogisticRegression().fit(X, y)
    wrapper = ParallelPostFit(estimator, backend="threading", block_size=17)
    check_is_fitted(wrapper)
    assert wrapper.estimator_ is estimator
    np.testing.assert_array_equal(wrapper.classes_, estimator.classes_)
    np.testing.assert_allclose(wrapper.predict_proba(X), estimator.predict_proba(X), rtol=1e-12)


def test_learned_attributes_readable(classification):
    X, y = classification
    wrapper = ParallelPostFit(LogisticRegression()).fit(X, y)
    np.testing.assert_array_equal(wrapper.classes_, [0, 1])
    assert wrapper.n_features_in_ == X.shape[1]
    assert wrapper.coef_ is wrapper.estimator_.coef_


def test_learned_attributes_vanish_on_refit():
    import pandas as pd

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:200, :4]
    y = y.iloc[:200]
    wrapper = ParallelPostFit(LogisticRegression(max_iter=500)).fit(X, y)
    assert list(wrapper.feature_names_in_) == list(X.columns)
    wrapper.fit(X.to_numpy(), y.to_numpy())
    assert not hasattr(wrapper, "feature_names_in_")
    assert isinstance(X, pd.DataFrame)


def test_missing_learned_attribute_names_both_classes(classification):
    X, y = classification
    wrapper = ParallelPostFit(LogisticRegression()).fit(X, y)
    with pytest.raises(AttributeError, match="LogisticRegression has none either"):
        wrapper.feature_importances_  # noqa: B018 - the access is the test


def test_unfitted_learned_attribute_is_attribute_error():
    assert not hasattr(ParallelPostFit(LogisticRegression()), "classes_")


@pytest.mark.parametrize(
    ("estimator", "present", "absent"),
    [
        (
            LogisticRegression(),
            ["predict", "predict_proba", "predict_log_proba", "decision_function"],
            ["transform", "score_samples"],
        ),
        (StandardScaler(), ["transform"], ["predict", "predict_proba", "decision_function"]),
        (KMeans(), ["predict", "transform"], ["predict_proba", "score_samples"]),
        (LinearRegression(), ["predict"], ["predict_proba", "transform", "partial_fit"]),
    ],
)
def test_methods_exist_exactly_when_inner_has_them(estimator, present, absent):
    wrapper = ParallelPostFit(estimator)
    for method in present:
        assert hasattr(wrapper, method), method
    for method in absent:
        assert not hasattr(wrapper, method), method


def test_missing_method_error_keeps_inner_cause():
    wrapper = ParallelPostFit(LinearRegression())
    with pytest.raises(AttributeError) as info:
        wrapper.predict_proba  # noqa: B018 - the attribute access is the test
    assert isinstance(info.value.__cause__, AttributeError)
    assert "predict_proba" in str(info.value.__cause__)


def test_unbound_method_checks_inner_estimator(classification):
    X, y = classification
    fitted = ParallelPostFit(LinearRegression()).fit(X, y)
    np.testing.assert_array_equal(ParallelPostFit.predict(fitted, X), fitted.predict(X))
    with pytest.raises(AttributeError, match="predict_proba"):
        ParallelPostFit.predict_proba(fitted, X)
    assert ParallelPostFit.predict.__doc__ == fitted.predict.__doc__


def test_methods_follow_a_pipeline_final_step(classification):
    X, y = classification
    wrapper = ParallelPostFit(make_pipeline(StandardScaler(), LinearRegression()))
    assert hasattr(wrapper, "predict")
    assert not hasattr(wrapper, "predict_proba")


def test_score_uses_estimator_default(classification):
    X, y = classification
    estimator = LogisticRegression().fit(X, y)
    wrapper = ParallelPostFit(estimator, backend="threading", block_size=30)
    assert wrapper.score(X, y) == pytest.approx(estimator.score(X, y), rel=1e-12)


def test_pickle_round_trip(classification):
    X, y = classification
    wrapper = ParallelPostFit(LogisticRegression(), block_size=20).fit(X, y)
    restored = pickle.loads(pickle.dumps(wrapper))
    np.testing.assert_array_equal(restored.predict(X), wrapper.predict(X))
    assert copy.deepcopy(wrapper).block_size == 20


def test_score_exists_only_with_a_metric():
    assert not hasattr(ParallelPostFit(StandardScaler()), "score")
    assert hasattr(ParallelPostFit(StandardScaler(), scoring="r2"), "score")
    assert hasattr(ParallelPostFit(LogisticRegression()), "score")


def test_fit_transform_matches_estimator(classification):
    X, _ = classification
    wrapper = ParallelPostFit(StandardScaler(), block_size=9)
    np.testing.assert_allclose(
        wrapper.fit_transform(X), StandardScaler().fit_transform(X), rtol=1e-12
    )
    check_is_fitted(wrapper)
    assert not hasattr(ParallelPostFit(LogisticRegression()), "fit_transform")


def test_array_like_input_converted(classification):
    X, y = classification

    class ArrayLike:
        def __init__(self, values):
            self.values = values

        def __array__(self, dtype=None, copy=None):
            return self.values

    estimator = LogisticRegression().fit(X, y)
    wrapper = ParallelPostFit(estimator, backend="threading", block_size=25)
    np.testing.assert_array_equal(wrapper.predict(ArrayLike(X)), estimator.predict(X))


def test_progress_bar_counts_rows(classification, capsys):
    X, y = classification
    estimator = LogisticRegression().fit(X, y)
    wrapper = ParallelPostFit(estimator, backend="threading", block_size=50, progress=True)
    np.testing.assert_array_equal(wrapper.predict(X), estimator.predict(X))
    err = capsys.readouterr().err
    assert "300/300" in err
    assert "rows" in err


def test_no_output_without_progress(classification, capsys):
    X, y = classification
    estimator = LogisticRegression().fit(X, y)
    ParallelPostFit(estimator, backend="threading", block_size=50).predict(X)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_plan_and_run_logged(classification, caplog):
    X, y = classification
    estimator = LogisticRegression().fit(X, y)
    wrapper = ParallelPostFit(estimator, backend="threading", n_jobs=2, block_size=50)
    with caplog.at_level("DEBUG", logger="postfit"):
        wrapper.predict(X)
    messages = [record.getMessage() for record in caplog.records]
    assert any("backend=threading workers=2 block_size=50" in m for m in messages), messages
    assert any(m.startswith("predict: 300 rows in") for m in messages), messages


# The direct path of small inputs ---------------------------------------------------


class RecordsCalls(RegressorMixin, BaseEstimator):
    """Predicts the first column and records the rows of each call."""

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        self.calls_ = []
        return self

    def predict(self, X):
        self.calls_.append(len(X))
        return np.asarray(X)[:, 0].copy()


def test_changed_knobs_end_the_direct_path():
    X = np.arange(20.0).reshape(10, 2)
    wrapper = ParallelPostFit(RecordsCalls(), n_jobs=1).fit(X)
    calls = wrapper.estimator_.calls_
    wrapper.predict(X)
    assert calls == [10]

    wrapper.set_params(block_size=3)
    np.testing.assert_array_equal(wrapper.predict(X), X[:, 0])
    assert calls[1:] == [3, 3, 3, 1]

    wrapper.block_size = 4
    wrapper.predict(X)
    assert calls[5:] == [4, 4, 2]

    wrapper.block_size = "auto"
    wrapper.predict(X)
    wrapper.predict(X)
    assert calls[8:] == [10, 10]


def test_refit_ends_the_direct_path():
    X = np.arange(20.0).reshape(10, 2)
    wrapper = ParallelPostFit(RecordsCalls()).fit(X)
    first = wrapper.estimator_
    wrapper.predict(X)
    X3 = np.arange(30.0).reshape(10, 3)
    wrapper.fit(X3)
    assert wrapper.estimator_ is not first
    np.testing.assert_array_equal(wrapper.predict(X3), X3[:, 0])
    assert first.calls_ == [10]
    assert wrapper.estimator_.calls_ == [10]
    with pytest.raises(ValueError, match="X has 2 features, but .* is expecting 3"):
        wrapper.predict(X)


def test_deleted_estimator_ends_the_direct_path(classification):
    X, y = classification
    wrapper = ParallelPostFit(LogisticRegression()).fit(X, y)
    wrapper.predict(X[:5])
    del wrapper.estimator_
    with pytest.raises(NotFittedError):
        wrapper.predict(X[:5])


def test_estimator_refitted_in_place_is_checked_again(regression):
    X, y = regression
    model = LinearRegression().fit(X[:, :3], y)
    wrapper = ParallelPostFit(model)
    np.testing.assert_allclose(wrapper.predict(X[:20, :3]), model.predict(X[:20, :3]), rtol=1e-12)

    model.fit(X[:, :5], y)
    with pytest.raises(ValueError, match="X has 3 features, but .* is expecting 5"):
        wrapper.predict(X[:20, :3])
    np.testing.assert_allclose(wrapper.predict(X[:20, :5]), model.predict(X[:20, :5]), rtol=1e-12)

    # Fitted again in place on a frame: positional rows now get one warning,
    # as the plain estimator gives, and the same values.
    frame = pd.DataFrame(X[:, :5], columns=[f"f{i}" for i in range(5)])
    model.fit(frame, y)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = wrapper.predict(X[:20, :5])
    messages = [str(w.message) for w in record]
    assert len(messages) == 1, messages
    assert "does not have valid feature names" in messages[0]
    np.testing.assert_allclose(got, model.predict(frame[:20]), rtol=1e-12)


def test_unpickled_wrapper_scores_with_its_own_estimator(classification):
    X, y = classification
    wrapper = ParallelPostFit(LogisticRegression()).fit(X, y)
    wrapper.predict_proba(X[:5])
    restored = pickle.loads(pickle.dumps(wrapper))
    restored.estimator_.coef_[:] = 0.0
    restored.estimator_.intercept_[:] = 0.0
    np.testing.assert_allclose(restored.predict_proba(X[:5]), 0.5, rtol=1e-12)
    np.testing.assert_allclose(
        wrapper.predict_proba(X[:5]), wrapper.estimator_.predict_proba(X[:5]), rtol=1e-12
    )
    assert wrapper.estimator_.coef_.any()


class PausesInCheck(RegressorMixin, BaseEstimator):
    """Predicts its label; reading n_features_in_ can pause until another thread acts."""

    def __init__(self, label=0):
        self.label = label

    def fit(self, X, y=None):
        self.width_ = X.shape[1]
        self.checking = threading.Event()
        self.resume = threading.Event()
        self.pause = False
        return self

    @property
    def n_features_in_(self):
        if self.pause:
            self.pause = False
            self.checking.set()
            self.resume.wait(10)
        return self.width_

    def predict(self, X):
        return np.full(len(X), float(self.label))


@pytest.mark.parametrize("change", ["refit", "new estimator"])
def test_change_during_first_call_is_not_undone(change):
    X = np.zeros((10, 3))
    old = PausesInCheck(label=0).fit(X)
    wrapper = ParallelPostFit(old)
    old.pause = True
    first = threading.Thread(target=wrapper.predict, args=(X,))
    first.start()
    assert old.checking.wait(10)
    # The first call has read the estimator and is checking X against it.
    if change == "refit":
        wrapper.set_params(estimator=PausesInCheck(label=1)).fit(X)
    else:
        wrapper.estimator = PausesInCheck(label=1).fit(X)
    old.resume.set()
    first.join(10)
    assert not first.is_alive()
    np.testing.assert_array_equal(wrapper.predict(X[:3]), [1.0, 1.0, 1.0])
    assert wrapper.__dict__.get("_direct") in (None, wrapper._inner_estimator())
