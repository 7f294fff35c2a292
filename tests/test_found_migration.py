"""Cases found by porting dask-ml and Mars code to postfit.

Each test failed before its fix: a meta that silently changed values, a
float32 model declared float64, a multilabel ``predict`` declared 1-D, and
dask-ml's positional arguments and error message.
"""

from __future__ import annotations

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification, make_multilabel_classification
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, RidgeClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from postfit import Incremental, ParallelPostFit
from postfit.exceptions import BlockError


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(0)
    return rng.normal(size=(400, 4))


# A user's meta -------------------------------------------------------------------


def test_meta_too_narrow_for_labels_raises(rows):
    labels = np.where(rows[:, 0] > 0, 200, 1000)
    model = LogisticRegression().fit(rows, labels)
    lazy = ParallelPostFit(model, predict_meta=np.array([1], dtype=np.int8)).predict(
        da.from_array(rows, chunks=100)
    )

    with pytest.raises(BlockError, match=r"int8 cannot hold \(for example (200|1000)\)") as info:
        lazy.compute()
    assert "predict_meta=" in str(info.value)
    assert any("block" in note for note in info.value.__notes__)


def test_integer_meta_for_float_output_raises(rows):
    model = Ridge().fit(rows, rows[:, 0] * 3.3)
    lazy = ParallelPostFit(model, predict_meta=np.array([], dtype=int)).predict(
        da.from_array(rows, chunks=100)
    )

    with pytest.raises(BlockError, match="float64 values that the declared output dtype int64"):
        lazy.compute()


def test_meta_that_holds_the_labels_is_honoured(rows):
    labels = np.where(rows[:, 0] > 0, 2, 7)
    model = LogisticRegression().fit(rows, labels)
    lazy = ParallelPostFit(model, predict_meta=np.array([], dtype=np.int8)).predict(
        da.from_array(rows, chunks=100)
    )

    got = lazy.compute()
    assert lazy.dtype == got.dtype == np.int8
    assert_array_equal(got, model.predict(rows))


def test_float32_meta_rounds_float64_output(rows):
    model = Ridge().fit(rows, rows[:, 0])
    meta = np.array([], dtype=np.float32)
    got = ParallelPostFit(model, predict_meta=meta).predict(da.from_array(rows, chunks=100))

    assert got.compute().dtype == np.float32
    assert_allclose(got.compute(), model.predict(rows).astype(np.float32), rtol=0)


def test_category_meta_without_the_label_raises(rows):
    labels = np.where(rows[:, 0] > 0, "yes", "no")
    model = LogisticRegression().fit(rows, labels)
    frame = dd.from_pandas(pd.DataFrame(rows, columns=list("abcd")), npartitions=4)
    meta = pd.Series([], dtype=pd.CategoricalDtype(["yes"]))
    model_on_frame = LogisticRegression().fit(frame.compute(), labels)

    lazy = ParallelPostFit(model_on_frame, predict_meta=meta).predict(frame)

    with pytest.raises(BlockError, match="cannot hold \\(for example 'no'\\)"):
        lazy.compute()
    assert model.classes_.tolist() == ["no", "yes"]


# float32 models --------------------------------------------------------------------


def _float32_dask_input(kind):
    X, y = make_classification(n_samples=400, n_features=6, random_state=0)
    X = X.astype(np.float32)
    if kind == "array":
        return X, y, da.from_array(X, chunks=100)
    return X, y, dd.from_pandas(pd.DataFrame(X), npartitions=4)


@pytest.mark.parametrize("kind", ["array", "frame"])
def test_float32_probabilities_keep_float32(kind):
    X, y, data = _float32_dask_input(kind)
    # MLPClassifier returns float32 probabilities for float32 input in
    # scikit-learn 1.7.2 and 1.9.1 alike.
    model = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2000, random_state=0).fit(X, y)
    expected = model.predict_proba(X)
    assert expected.dtype == np.float32

    lazy = ParallelPostFit(model).predict_proba(data)
    got = lazy.compute()

    declared = lazy.dtype if kind == "array" else set(lazy.dtypes)
    assert declared == (np.float32 if kind == "array" else {np.dtype(np.float32)})
    assert_array_equal(np.asarray(got), expected)
    assert np.asarray(got).dtype == np.float32


@pytest.mark.parametrize("kind", ["array", "frame"])
def test_float32_input_meta_matches_partitions(kind):
    """The declared dtype is what the installed scikit-learn computes, whichever it is.

    GaussianNB returns float64 probabilities for float32 input in scikit-learn
    1.7.2 and float32 in 1.9.1, so no dtype follows from the fitted attributes.
    """
    X, y, data = _float32_dask_input(kind)
    model = GaussianNB().fit(X, y)
    expected = model.predict_proba(X)

    lazy = ParallelPostFit(model).predict_proba(data)
    got = np.asarray(lazy.compute())

    declared = lazy.dtype if kind == "array" else set(lazy.dtypes)
    assert declared == (expected.dtype if kind == "array" else {expected.dtype})
    assert got.dtype == expected.dtype
    assert_array_equal(got, expected)


def test_float64_input_keeps_meta_from_classes(rows):
    """Probabilities of a float64 input still need no rows: nothing is computed to build them."""
    model = LogisticRegression().fit(rows, rows[:, 0] > 0)
    computed = []

    def counted(block):
        computed.append(len(block))
        return block

    data = da.from_array(rows, chunks=100).map_blocks(counted, meta=rows[:0])
    lazy = ParallelPostFit(model).predict_proba(data)

    assert computed == []
    assert lazy.dtype == np.float64


# Several labels per row ------------------------------------------------------------


@pytest.fixture(scope="module")
def multilabel():
    X, Y = make_multilabel_classification(n_samples=300, n_features=5, n_classes=3, random_state=0)
    return X, Y


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: OneVsRestClassifier(LogisticRegression()),
        lambda: RidgeClassifier(),
        lambda: make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression())),
    ],
    ids=["one-vs-rest", "ridge", "pipeline"],
)
@pytest.mark.parametrize("kind", ["array", "frame", "numpy-lazy"])
def test_multilabel_predict_is_two_dimensional(multilabel, make_model, kind):
    X, Y = multilabel
    model = make_model().fit(X, Y)
    expected = model.predict(X)
    assert expected.shape == (300, 3)
    wrapper = ParallelPostFit(model)

    if kind == "array":
        got = wrapper.predict(da.from_array(X, chunks=100)).compute()
    elif kind == "frame":
        got = wrapper.predict(dd.from_pandas(pd.DataFrame(X), npartitions=3)).compute()
    else:
        got = wrapper.predict(X, execute=False).compute()

    assert_array_equal(np.asarray(got), expected)


def test_output_wider_than_the_meta_names_the_fix(multilabel):
    X, Y = multilabel
    model = OneVsRestClassifier(LogisticRegression()).fit(X, Y)
    lazy = ParallelPostFit(model, predict_meta=np.array([], dtype=int)).predict(
        da.from_array(X, chunks=100)
    )

    with pytest.raises(BlockError, match=r"shape \(100, 3\).*declared 1-D") as info:
        lazy.compute()
    assert "predict_meta=np.empty((0, 3))" in str(info.value)


# dask-ml's signatures and messages -------------------------------------------------


def test_missing_method_message_names_the_estimator():
    wrapper = ParallelPostFit(LinearRegression()).fit(np.eye(3), [1.0, 2.0, 3.0])

    # The pattern of dask-ml's own test of this error.
    with pytest.raises(
        AttributeError, match=r"The wrapped estimator (.|\n)* 'predict_proba' method"
    ):
        wrapper.predict_proba(np.eye(3))
    with pytest.raises(AttributeError, match="its post-fit methods: predict"):
        getattr(wrapper, "predict_proba")  # noqa: B009
    assert not hasattr(wrapper, "predict_proba")


def test_parallel_post_fit_takes_metas_by_position():
    meta = np.array([], dtype=int)
    wrapper = ParallelPostFit(LogisticRegression(), "accuracy", meta, None, None)

    assert wrapper.scoring == "accuracy"
    assert wrapper.predict_meta is meta
    with pytest.raises(TypeError):
        ParallelPostFit(LogisticRegression(), None, None, None, None, "threading")


def test_incremental_takes_dask_ml_positions(rows):
    wrapper = Incremental(LogisticRegression(), "accuracy", False, 0, True, None)

    assert (wrapper.shuffle_blocks, wrapper.random_state, wrapper.assume_equal_chunks) == (
        False,
        0,
        True,
    )
    assert "assume_equal_chunks" in wrapper.get_params()


@pytest.mark.parametrize("assume", [True, False])
def test_assume_equal_chunks_accepted_either_way(rows, assume):
    from sklearn.linear_model import SGDClassifier

    y = (rows[:, 0] > 0).astype(int)
    X = da.from_array(rows, chunks=100)
    # y chunked unlike X: postfit pairs the rows itself.
    y_lazy = da.from_array(y, chunks=150)
    model = SGDClassifier(random_state=0)
    wrapper = Incremental(model, assume_equal_chunks=assume, shuffle_blocks=False)

    wrapper.fit(X, y_lazy, classes=[0, 1])

    by_hand = SGDClassifier(random_state=0)
    for start in range(0, 400, 100):
        by_hand.partial_fit(rows[start : start + 100], y[start : start + 100], classes=[0, 1])
    assert_array_equal(wrapper.coef_, by_hand.coef_)


def test_assume_equal_chunks_must_be_boolean(rows):
    from sklearn.linear_model import SGDClassifier

    wrapper = Incremental(SGDClassifier(), assume_equal_chunks="yes")

    with pytest.raises(ValueError, match="assume_equal_chunks must be True or False, got 'yes'"):
        wrapper.fit(rows, rows[:, 0] > 0, classes=[False, True])
