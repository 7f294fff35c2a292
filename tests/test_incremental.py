"""Incremental against a hand-written loop of ``partial_fit`` over the same blocks.

With block shuffling off, ``Incremental.fit`` must leave exactly the fitted
state that calling the estimator's own ``partial_fit`` on the same blocks, in
the same order, leaves. That is the oracle for every input kind here.
"""

from __future__ import annotations

import functools
import threading

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.cluster import Birch, MiniBatchKMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import IncrementalPCA
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.naive_bayes import MultinomialNB
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from postfit import Incremental

#: Rows per block in these tests: uneven against the data, so the last block is short.
BLOCK = 100


@functools.cache
def digits(n_rows=730):
    """Return (X, y) of the first ``n_rows`` digits: 64 pixel columns, labels 0 to 9."""
    X, y = load_digits(return_X_y=True)
    return np.ascontiguousarray(X[:n_rows]), y[:n_rows]


def feature_names(n):
    return [f"px{i}" for i in range(n)]


def digits_frame(with_target=True):
    X, y = digits()
    df = pd.DataFrame(X, columns=feature_names(X.shape[1]))
    if with_target:
        df["digit"] = y
    return df


ESTIMATORS = {
    "sgd-classifier": SGDClassifier(random_state=0),
    "sgd-regressor": SGDRegressor(random_state=0),
    "multinomial-nb": MultinomialNB(),
    "mini-batch-kmeans": MiniBatchKMeans(n_clusters=4, random_state=0, n_init=1),
    "incremental-pca": IncrementalPCA(n_components=5),
    "birch": Birch(n_clusters=3, threshold=8.0),
    "mlp": MLPClassifier(hidden_layer_sizes=(8,), random_state=0),
    "standard-scaler": StandardScaler(),
    "min-max-scaler": MinMaxScaler(),
}

SUPERVISED = {"sgd-classifier", "sgd-regressor", "multinomial-nb", "mlp"}
CLASSIFIERS = {"sgd-classifier", "multinomial-nb", "mlp"}


# ---------------------------------------------------------------------------
# Input kinds: what Incremental receives, and the blocks the hand loop uses


def _row_slices(bounds):
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _even_bounds(n, size):
    return list(range(0, n, size)) + [n]


def make_input(kind, tmp_path):
    """Return (X, y, hand_blocks): the input of ``fit`` and the same blocks for a hand loop.

    ``y`` is the target as this kind passes it: an array, a Dask collection
    chunked unlike X, or a column name. ``hand_blocks`` is a list of
    ``(X_rows, y_rows)`` in the type the estimator receives from Incremental.
    Dask and Parquet blocks are taken from the partitions and row groups, as
    a loop of the user's own would take them, because their memory order
    changes the last bits of sums: StandardScaler.var_ of the same rows in C
    and in Fortran order differs by 1.4e-14 (scikit-learn 1.7.2 and 1.9.1).
    """
    X, y = digits()
    n = len(X)
    df = digits_frame(with_target=False)
    even = _row_slices(_even_bounds(n, BLOCK))

    if kind == "numpy":
        return X, y, [(X[lo:hi], y[lo:hi]) for lo, hi in even]
    if kind == "numpy-fortran":
        Xf = np.asfortranarray(X)
        return Xf, list(y), [(Xf[lo:hi], list(y[lo:hi])) for lo, hi in even]
    if kind == "sparse-csr":
        Xs = sp.csr_matrix(X)
        return Xs, y, [(Xs[lo:hi], y[lo:hi]) for lo, hi in even]
    if kind == "pandas":
        ys = pd.Series(y, name="digit")
        return df, ys, [(df.iloc[lo:hi], ys.iloc[lo:hi]) for lo, hi in even]
    if kind == "pandas-target-column":
        full = digits_frame()
        return full, "digit", [(df.iloc[lo:hi], full["digit"].iloc[lo:hi]) for lo, hi in even]
    if kind == "polars-target-column":
        full = pl.from_pandas(digits_frame())
        blocks = [(pl.from_pandas(df.iloc[lo:hi]), y[lo:hi]) for lo, hi in even]
        return full, "digit", blocks
    if kind == "arrow-target-column":
        full = pa.Table.from_pandas(digits_frame(), preserve_index=False)
        blocks = [
            (pa.Table.from_pandas(df.iloc[lo:hi], preserve_index=False), y[lo:hi])
            for lo, hi in even
        ]
        return full, "digit", blocks
    if kind == "dask-array":
        # y is chunked unlike X, so it has to be realigned to X's chunks.
        Xd = da.from_array(X, chunks=(BLOCK, 16))
        yd = da.from_array(y, chunks=37)
        return Xd, yd, [(X[lo:hi], y[lo:hi]) for lo, hi in even]
    if kind == "dask-array-numpy-y":
        Xd = da.from_array(X, chunks=(BLOCK, -1))
        return Xd, y, [(X[lo:hi], y[lo:hi]) for lo, hi in even]
    if kind == "dask-frame-target-column":
        ddf = dd.from_pandas(digits_frame(), chunksize=BLOCK)
        parts = dask.compute(*ddf.to_delayed())
        blocks = [(part.drop(columns="digit"), part["digit"]) for part in parts]
        return ddf, "digit", blocks
    if kind == "dask-frame-series-y":
        full = dd.from_pandas(digits_frame(), npartitions=5)
        X_parts = dask.compute(*full.drop(columns="digit").to_delayed())
        y_parts = dask.compute(*full["digit"].to_delayed())
        blocks = list(zip(X_parts, y_parts, strict=True))
        return full.drop(columns="digit"), full["digit"], blocks
    if kind == "parquet":
        read_parquet = getattr(pytest.importorskip("postfit.io"), "read_parquet", None)
        if read_parquet is None:
            pytest.skip("postfit.io.read_parquet is not available")
        folder = tmp_path / "digits"
        folder.mkdir()
        full = digits_frame()
        full.iloc[:400].to_parquet(folder / "part-0.parquet", row_group_size=BLOCK)
        full.iloc[400:].to_parquet(folder / "part-1.parquet", row_group_size=BLOCK)
        blocks = []
        for name in ("part-0.parquet", "part-1.parquet"):
            parquet = pq.ParquetFile(folder / name)
            for group in range(parquet.num_row_groups):
                rows = parquet.read_row_group(group).to_pandas()
                blocks.append((rows.drop(columns="digit"), rows["digit"]))
        return read_parquet(str(folder)), "digit", blocks
    raise AssertionError(f"unknown input kind {kind!r}")


INPUT_KINDS = [
    "numpy",
    "numpy-fortran",
    "sparse-csr",
    "pandas",
    "pandas-target-column",
    "polars-target-column",
    "arrow-target-column",
    "dask-array",
    "dask-array-numpy-y",
    "dask-frame-target-column",
    "dask-frame-series-y",
    "parquet",
]

#: Estimators that take sparse input through partial_fit.
SPARSE_OK = {"sgd-classifier", "sgd-regressor", "multinomial-nb", "mini-batch-kmeans", "birch"}
SPARSE_OK |= {"mlp"}


def hand_loop(estimator, blocks, supervised, classes=None):
    """Train a clone of ``estimator`` with its own partial_fit on ``blocks``, in order."""
    trained = clone(estimator)
    params = {} if classes is None else {"classes": classes}
    for X_rows, y_rows in blocks:
        if supervised:
            trained.partial_fit(X_rows, y_rows, **params)
        else:
            trained.partial_fit(X_rows, **params)
    return trained


def fitted_state(estimator):
    """Return the public fitted attributes (names ending in ``_``) of an estimator."""
    return {k: v for k, v in vars(estimator).items() if k.endswith("_") and not k.startswith("_")}


def assert_same_value(actual, expected, name):
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), name
        assert actual.dtype == expected.dtype, name
        np.testing.assert_array_equal(actual, expected, err_msg=name)
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), name
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_value(a, e, f"{name}[{i}]")
    elif isinstance(expected, (int, float, np.number, str, bool, type(None))):
        both_nan = isinstance(expected, float) and np.isnan(expected) and np.isnan(actual)
        assert both_nan or actual == expected, name
    else:
        # Tree nodes and other objects: compared through the arrays derived from them.
        assert type(actual) is type(expected), name


def assert_same_fit(actual, expected):
    state, oracle = fitted_state(actual), fitted_state(expected)
    assert sorted(state) == sorted(oracle)
    for name, value in oracle.items():
        assert_same_value(state[name], value, name)


# ---------------------------------------------------------------------------
# The oracle: fitted state equals the hand-written loop


#: Slower estimators run on one input kind of each family; the rest on every kind.
SLOW_ESTIMATORS = {"incremental-pca", "birch", "mini-batch-kmeans", "mlp"}
SLOW_KINDS = ["numpy", "sparse-csr", "pandas-target-column", "dask-array", "parquet"]
HAND_LOOP_CASES = [
    (name, kind)
    for name in ESTIMATORS
    for kind in (SLOW_KINDS if name in SLOW_ESTIMATORS else INPUT_KINDS)
]


@pytest.mark.parametrize(("name", "kind"), HAND_LOOP_CASES)
def test_fit_equals_hand_loop(name, kind, tmp_path):
    if kind == "sparse-csr" and name not in SPARSE_OK:
        pytest.skip(f"{name} does not take sparse input")
    estimator = ESTIMATORS[name]
    supervised = name in SUPERVISED
    X, y, blocks = make_input(kind, tmp_path)
    if not supervised and isinstance(y, str):
        # The target column is still split off X, and the estimator ignores y.
        pass
    elif not supervised:
        y = None

    model = Incremental(estimator, shuffle_blocks=False, block_size=BLOCK).fit(X, y)

    classes = np.arange(10) if name in CLASSIFIERS else None
    expected = hand_loop(estimator, blocks, supervised, classes)
    assert model.n_iter_ == 1
    assert_same_fit(model.estimator_, expected)


@pytest.mark.parametrize("kind", ["numpy", "pandas-target-column", "dask-array", "parquet"])
def test_several_epochs_equal_hand_loop(kind, tmp_path):
    X, y, blocks = make_input(kind, tmp_path)
    estimator = SGDClassifier(random_state=0)

    model = Incremental(estimator, shuffle_blocks=False, block_size=BLOCK, max_iter=3).fit(X, y)

    expected = hand_loop(estimator, blocks * 3, True, np.arange(10))
    assert model.n_iter_ == 3
    assert_same_fit(model.estimator_, expected)


def test_unsupervised_target_column_left_out():
    # A transformer trained from a frame with the target column must not see that column.
    model = Incremental(StandardScaler(), shuffle_blocks=False, block_size=BLOCK)
    model.fit(digits_frame(), "digit")
    assert list(model.feature_names_in_) == feature_names(64)


def test_partial_fit_continues_fitted_estimator():
    X, y = digits()
    estimator = SGDClassifier(random_state=0)
    model = Incremental(estimator, shuffle_blocks=False, block_size=BLOCK)

    model.partial_fit(X[:300], y[:300])
    first = model.estimator_
    model.partial_fit(X[300:], y[300:])

    halves = [(X[lo:hi], y[lo:hi]) for lo, hi in _row_slices([0, 100, 200, 300])]
    halves += [(X[lo:hi], y[lo:hi]) for lo, hi in _row_slices([300, 400, 500, 600, 700, 730])]
    expected = hand_loop(estimator, halves, True, np.arange(10))
    assert model.estimator_ is first
    assert_same_fit(model.estimator_, expected)


def test_partial_fit_after_fit_continues():
    X, y = digits()
    model = Incremental(SGDClassifier(random_state=0), shuffle_blocks=False, block_size=BLOCK)
    model.fit(X, y)
    seen = model.estimator_.t_
    model.partial_fit(X, y)
    assert model.estimator_.t_ == 2 * seen - 1


def test_partial_fit_of_fitted_estimator_leaves_it_unchanged():
    X, y = digits()
    given = SGDClassifier(random_state=0).fit(X, y)
    coef = given.coef_.copy()

    model = Incremental(given, shuffle_blocks=False, block_size=BLOCK).partial_fit(X, y)

    np.testing.assert_array_equal(given.coef_, coef)
    assert model.estimator_ is not given
    assert not np.array_equal(model.estimator_.coef_, coef)


def test_fit_does_not_change_user_estimator():
    X, y = digits()
    given = SGDClassifier(random_state=0)
    Incremental(given, block_size=BLOCK).fit(X, y)
    assert not hasattr(given, "coef_")


def test_grid_search_over_inner_and_wrapper_parameters():
    from sklearn.model_selection import GridSearchCV

    X, y = digits()
    model = Incremental(SGDClassifier(random_state=0), block_size=BLOCK, random_state=0)
    grid = {"estimator__alpha": [1e-4, 1e-1], "max_iter": [1, 2]}
    search = GridSearchCV(model, grid, cv=2).fit(X, y)

    assert set(search.best_params_) == {"estimator__alpha", "max_iter"}
    assert search.best_estimator_.n_iter_ == search.best_params_["max_iter"]
    assert model.get_params()["estimator__alpha"] == 1e-4
    assert not hasattr(model, "estimator_")


# ---------------------------------------------------------------------------
# Block order: seeds, epochs and row shuffling


class BlockRecorder(BaseEstimator):
    """Record the rows, y and fit parameters of every partial_fit call."""

    def __init__(self, wait_for=None):
        self.wait_for = wait_for

    def partial_fit(self, X, y=None, sample_weight=None, **params):
        if self.wait_for is not None:
            self.wait_for(self)
        calls = self.__dict__.setdefault("calls_", [])
        calls.append(
            {
                "X": np.asarray(X).copy(),
                "y": None if y is None else np.asarray(y).copy(),
                "sample_weight": None if sample_weight is None else np.asarray(sample_weight),
                "params": params,
                "thread": threading.get_ident(),
            }
        )
        return self


def first_columns(model):
    """Return, per partial_fit call, the first column of the rows it received."""
    return [call["X"][:, 0] for call in model.estimator_.calls_]


def indexed_rows(n=230):
    """Return X whose first column is the row number, and y equal to it too."""
    X = np.column_stack([np.arange(n, dtype=float), np.ones(n)])
    return X, np.arange(n)


def test_same_seed_gives_same_model():
    X, y = digits()
    options = dict(block_size=50, max_iter=3, shuffle_rows=True)
    first = Incremental(SGDClassifier(random_state=0), random_state=7, **options).fit(X, y)
    second = Incremental(SGDClassifier(random_state=0), random_state=7, **options).fit(X, y)
    other = Incremental(SGDClassifier(random_state=0), random_state=8, **options).fit(X, y)

    assert_same_fit(second.estimator_, first.estimator_)
    assert not np.array_equal(other.estimator_.coef_, first.estimator_.coef_)


def test_shuffled_epochs_visit_every_block_once():
    X, y = indexed_rows()
    model = Incremental(BlockRecorder(), block_size=25, max_iter=4, random_state=0).fit(X, y)

    starts = [int(rows[0]) for rows in first_columns(model)]
    n_blocks = 10
    epochs = [starts[i : i + n_blocks] for i in range(0, len(starts), n_blocks)]
    assert len(epochs) == 4
    for order in epochs:
        assert sorted(order) == list(range(0, 230, 25))
    assert len({tuple(order) for order in epochs}) > 1
    assert epochs[0] != sorted(epochs[0])


def test_shuffled_rows_stay_aligned_with_y_and_weights():
    X, y = indexed_rows()
    weights = np.arange(len(y)) * 0.5
    model = Incremental(BlockRecorder(), block_size=40, shuffle_rows=True, random_state=3)
    model.fit(X, y, sample_weight=weights)

    calls = model.estimator_.calls_
    seen = np.concatenate([call["X"][:, 0] for call in calls])
    for call in calls:
        np.testing.assert_array_equal(call["y"], call["X"][:, 0])
        np.testing.assert_array_equal(call["sample_weight"], call["X"][:, 0] * 0.5)
    assert sorted(seen) == list(range(len(y)))
    assert any(not np.all(np.diff(call["X"][:, 0]) > 0) for call in calls)


def test_unshuffled_blocks_come_in_input_order():
    X, y = indexed_rows()
    model = Incremental(BlockRecorder(), shuffle_blocks=False, block_size=25, max_iter=2)
    model.fit(X, y)
    rows = np.concatenate(first_columns(model))
    np.testing.assert_array_equal(rows, np.tile(np.arange(230), 2))


def test_partial_fit_calls_draw_new_orders():
    X, y = indexed_rows()
    model = Incremental(BlockRecorder(), block_size=23, random_state=0)
    model.partial_fit(X, y)
    model.partial_fit(X, y)
    starts = [int(rows[0]) for rows in first_columns(model)]
    assert starts[:10] != starts[10:]
    assert sorted(starts[:10]) == sorted(starts[10:])


# ---------------------------------------------------------------------------
# Fit parameters: per-sample ones are cut, others passed whole


@pytest.mark.parametrize("weights_kind", ["numpy", "list", "pandas", "dask-other-chunks"])
@pytest.mark.parametrize("x_kind", ["numpy", "dask-array", "dask-frame"])
def test_sample_weight_reaches_each_block_as_its_slice(x_kind, weights_kind):
    X, y = indexed_rows()
    weights = np.arange(len(y)) * 2.0 + 1.0
    if x_kind == "dask-array":
        X_input = da.from_array(X, chunks=(60, 2))
    elif x_kind == "dask-frame":
        X_input = dd.from_pandas(pd.DataFrame(X, columns=["row", "one"]), npartitions=3)
    else:
        X_input = X
    weights_input = {
        "numpy": weights,
        "list": list(weights),
        "pandas": pd.Series(weights),
        "dask-other-chunks": da.from_array(weights, chunks=17),
    }[weights_kind]

    model = Incremental(BlockRecorder(), block_size=30, random_state=0)
    model.fit(X_input, y, sample_weight=weights_input)

    calls = model.estimator_.calls_
    for call in calls:
        rows = call["X"][:, 0].astype(int)
        np.testing.assert_array_equal(call["sample_weight"], weights[rows])
    assert sum(len(call["X"]) for call in calls) == len(y)


def test_sample_weight_follows_csv_blocks(tmp_path):
    # CSV blocks are byte ranges whose rows are only known once read.
    from postfit import read_csv

    X, y = indexed_rows(n=500)
    pd.DataFrame(X, columns=["row", "one"]).to_csv(tmp_path / "rows.csv", index=False)
    weights = np.arange(len(y)) * 2.0 + 1.0

    model = Incremental(BlockRecorder(), block_size=64, random_state=0)
    model.fit(read_csv(tmp_path / "rows.csv"), y, sample_weight=weights)

    calls = model.estimator_.calls_
    assert len(calls) > 1
    for call in calls:
        rows = call["X"][:, 0].astype(int)
        np.testing.assert_array_equal(call["y"], rows)
        np.testing.assert_array_equal(call["sample_weight"], weights[rows])
    assert sum(len(call["X"]) for call in calls) == len(y)


def test_validation_sample_weight_used():
    X, y = digits()
    weights = np.where(y[600:] == 3, 5.0, 1.0)
    model = Incremental(SGDClassifier(random_state=0), scoring="accuracy", max_iter=2)
    model.fit(X[:600], y[:600], X_val=X[600:], y_val=y[600:], sample_weight_val=weights)

    weighted = model.score(X[600:], y[600:], sample_weight=weights)
    assert model.epoch_scores_[-1] == weighted
    assert weighted != model.score(X[600:], y[600:])


def test_fit_params_cut_or_passed_whole():
    X, y = indexed_rows(n=10)
    per_row = np.arange(10) + 100
    classes = np.arange(10)
    model = Incremental(BlockRecorder(), shuffle_blocks=False, block_size=4)
    model.fit(X, y, offsets=per_row, classes=classes, note="kept")

    calls = model.estimator_.calls_
    assert len(calls) == 3
    for call in calls:
        rows = call["X"][:, 0].astype(int)
        np.testing.assert_array_equal(call["params"]["offsets"], per_row[rows])
        np.testing.assert_array_equal(call["params"]["classes"], classes)
        assert call["params"]["note"] == "kept"


def test_sample_weight_with_wrong_length_rejected():
    X, y = digits()
    model = Incremental(SGDClassifier(), block_size=BLOCK)
    with pytest.raises(ValueError, match=r"sample_weight has 729 rows, but X has 730"):
        model.fit(X, y, sample_weight=np.ones(len(y) - 1))


# ---------------------------------------------------------------------------
# X and y given separately, chunked differently


@pytest.mark.parametrize(
    "make_y",
    [
        pytest.param(lambda y: da.from_array(y, chunks=37), id="dask-array-other-chunks"),
        pytest.param(
            lambda y: da.from_array(y, chunks=37)[da.from_array(y, chunks=37) >= 0],
            id="dask-array-unknown-chunks",
        ),
        pytest.param(
            lambda y: dd.from_pandas(pd.Series(y), npartitions=7), id="dask-series-other-parts"
        ),
        pytest.param(lambda y: pd.Series(y), id="pandas"),
    ],
)
@pytest.mark.parametrize(
    "make_x",
    [
        pytest.param(lambda X: da.from_array(X, chunks=(BLOCK, -1)), id="dask-array"),
        pytest.param(
            lambda X: da.from_array(X, chunks=(BLOCK, -1))[
                da.from_array(X[:, 0], chunks=BLOCK) >= 0
            ],
            id="dask-array-unknown-chunks",
        ),
        pytest.param(lambda X: dd.from_pandas(pd.DataFrame(X), chunksize=BLOCK), id="dask-frame"),
    ],
)
def test_differently_chunked_y_is_realigned(make_x, make_y):
    X, y = digits()
    model = Incremental(SGDClassifier(random_state=0), shuffle_blocks=False)
    model.fit(make_x(X), make_y(y))

    blocks = [(X[lo:hi], y[lo:hi]) for lo, hi in _row_slices(_even_bounds(len(X), BLOCK))]
    expected = hand_loop(SGDClassifier(random_state=0), blocks, True, np.arange(10))
    np.testing.assert_array_equal(model.estimator_.coef_, expected.coef_)
    np.testing.assert_array_equal(model.estimator_.intercept_, expected.intercept_)


def test_filtered_frames_with_same_partitions_rejected():
    frame = dd.from_pandas(digits_frame(), npartitions=4)
    X = frame[frame["px10"] > 2].drop(columns="digit")
    y = frame["digit"]
    model = Incremental(SGDClassifier(), shuffle_blocks=False)
    with pytest.raises(ValueError, match=r"Block 0 of X has \d+ rows, but the same block of y"):
        model.fit(X, y)


def test_y_with_wrong_length_rejected():
    X, y = digits()
    with pytest.raises(ValueError, match=r"y has 700 rows, but X has 730"):
        Incremental(SGDClassifier(), block_size=BLOCK).fit(X, y[:700])
    with pytest.raises(ValueError, match=r"y has 700 rows, but X has 730"):
        Incremental(SGDClassifier()).fit(da.from_array(X, chunks=BLOCK), da.from_array(y[:700]))


# ---------------------------------------------------------------------------
# classes found from y


@pytest.mark.parametrize(
    "kind",
    ["numpy", "pandas-target-column", "dask-array", "dask-frame-target-column", "parquet"],
)
def test_classes_found_from_y(kind, tmp_path):
    X, y, _ = make_input(kind, tmp_path)
    model = Incremental(MultinomialNB(), shuffle_blocks=False, block_size=BLOCK).fit(X, y)
    np.testing.assert_array_equal(model.classes_, np.arange(10))


def test_classes_include_labels_missing_from_first_block():
    X, y = digits()
    order = np.argsort(y, kind="stable")
    model = Incremental(SGDClassifier(random_state=0), shuffle_blocks=False, block_size=BLOCK)
    model.fit(X[order], y[order])
    np.testing.assert_array_equal(model.classes_, np.arange(10))


def test_string_labels_found():
    X, y = digits()
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    model = Incremental(MultinomialNB(), block_size=BLOCK, random_state=0).fit(X, names[y])
    np.testing.assert_array_equal(model.classes_, np.sort(names))


def test_given_classes_used_as_they_are():
    X, y = digits()
    model = Incremental(SGDClassifier(random_state=0), block_size=BLOCK, random_state=0)
    model.fit(X, y, classes=np.arange(12))
    np.testing.assert_array_equal(model.classes_, np.arange(12))


def test_multilabel_classes_found():
    X, y = digits()
    Y = np.column_stack([y % 2, y > 4, y == 0]).astype(int)
    model = Incremental(MLPClassifier(hidden_layer_sizes=(4,), random_state=0), block_size=BLOCK)
    model.fit(X, Y)
    np.testing.assert_array_equal(model.classes_, np.arange(3))
    assert model.predict(X[:5]).shape == (5, 3)


def test_classes_of_two_dimensional_y_must_be_given():
    X, y = digits()
    Y = np.column_stack([y, y])
    with pytest.raises(ValueError, match=r"classes cannot be found from a y of shape \(730, 2\)"):
        Incremental(SGDClassifier(), block_size=BLOCK).fit(X, Y)


def test_classifier_without_y_rejected():
    X, _ = digits()
    with pytest.raises(ValueError, match="SGDClassifier requires y to be passed"):
        Incremental(SGDClassifier(), block_size=BLOCK).fit(X)


# ---------------------------------------------------------------------------
# Scalers and other estimators without score


@pytest.mark.parametrize("kind", ["numpy", "pandas", "dask-array", "parquet"])
def test_scalers_give_global_statistics(kind, tmp_path):
    X_input, _, _ = make_input(kind, tmp_path)
    y = "digit" if kind == "parquet" else None
    X, _ = digits()

    standard = Incremental(StandardScaler(), block_size=25, random_state=0).fit(X_input, y)
    min_max = Incremental(MinMaxScaler(), block_size=25, random_state=0).fit(X_input, y)

    oracle = StandardScaler().fit(X)
    np.testing.assert_allclose(standard.mean_, oracle.mean_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(standard.var_, oracle.var_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(standard.scale_, oracle.scale_, rtol=1e-12)
    assert standard.n_samples_seen_ == len(X)
    np.testing.assert_array_equal(min_max.data_min_, X.min(axis=0))
    np.testing.assert_array_equal(min_max.data_max_, X.max(axis=0))


def test_scaler_transform_and_no_score():
    X, _ = digits()
    model = Incremental(StandardScaler(), block_size=25, random_state=0).fit(X)
    oracle = StandardScaler().fit(X)
    np.testing.assert_allclose(model.transform(X), oracle.transform(X), rtol=1e-12, atol=1e-12)
    assert not hasattr(model, "score")
    with pytest.raises(AttributeError) as info:
        model.score(X)
    assert "StandardScaler" in str(info.value.__cause__)


def test_fit_transform_trains_incrementally():
    X, _ = digits()
    model = Incremental(StandardScaler(), shuffle_blocks=False, block_size=25)
    X_new = model.fit_transform(X)
    np.testing.assert_allclose(X_new, StandardScaler().fit_transform(X), rtol=1e-12, atol=1e-12)
    assert model.n_iter_ == 1


def test_birch_trains_and_predicts_without_scorer():
    X, _ = digits()
    model = Incremental(Birch(n_clusters=3, threshold=8.0), shuffle_blocks=False, block_size=50)
    model.fit(X)
    np.testing.assert_array_equal(model.predict(X), model.estimator_.predict(X))


# ---------------------------------------------------------------------------
# Errors before any block is read


class NoPartialFit(BaseEstimator, ClassifierMixin):
    """A classifier without partial_fit, like SVC."""

    def fit(self, X, y):
        return self


@pytest.mark.parametrize(
    "kind", ["numpy", "pandas-target-column", "sparse-csr", "dask-array", "parquet"]
)
def test_estimator_without_partial_fit_rejected(kind, tmp_path):
    X, y, _ = make_input(kind, tmp_path)
    model = Incremental(NoPartialFit())
    with pytest.raises(AttributeError, match="NoPartialFit has no partial_fit method"):
        model.fit(X, y)
    with pytest.raises(AttributeError, match="NoPartialFit has no partial_fit method"):
        model.partial_fit(X, y)
    assert not hasattr(model, "partial_fit")


def test_estimator_none_rejected():
    X, y = digits()
    with pytest.raises(ValueError, match="needs an estimator to wrap; got estimator=None"):
        Incremental().fit(X, y)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_iter", 0, "max_iter must be a positive whole number, got 0"),
        ("max_iter", 2.5, "max_iter must be a positive whole number, got 2.5"),
        ("max_iter", True, "max_iter must be a positive whole number, got True"),
        ("n_iter_no_change", -1, "n_iter_no_change must be a positive whole number, got -1"),
        ("tol", -0.1, "tol must be a number of at least 0, got -0.1"),
        ("tol", "small", "tol must be a number of at least 0, got 'small'"),
        ("shuffle_blocks", "yes", "shuffle_blocks must be True or False, got 'yes'"),
        ("shuffle_rows", 1, "shuffle_rows must be True or False, got 1"),
        ("early_stopping", None, "early_stopping must be True or False, got None"),
        ("block_size", 0, "Invalid block_size 0"),
        ("memory_budget", "lots", "Invalid memory_budget 'lots'"),
        ("random_state", "seed", "cannot be used to seed"),
    ],
)
def test_invalid_option_rejected(option, value, message):
    X, y = digits()
    model = Incremental(SGDClassifier(), **{option: value})
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)


def test_target_column_errors():
    X, y = digits()
    with pytest.raises(ValueError, match=r"y='digit' names a column, but X \(ndarray\) has no"):
        Incremental(SGDClassifier()).fit(X, "digit")
    with pytest.raises(ValueError, match=r"y='label' is not a column of X. The columns of X"):
        Incremental(SGDClassifier()).fit(digits_frame(), "label")


def test_empty_input_rejected():
    X, y = digits()
    with pytest.raises(ValueError, match="X has no rows to train on"):
        Incremental(SGDClassifier(), block_size=10).fit(X[:0], y[:0], classes=np.arange(10))


def test_error_in_block_names_block():
    X, y = digits()
    X = X.copy()
    X[250, 3] = np.nan
    model = Incremental(SGDClassifier(), shuffle_blocks=False, block_size=BLOCK)
    with pytest.raises(ValueError, match="NaN") as info:
        model.fit(X, y)
    assert "postfit: raised while training on block 2 (rows 200 to 300)" in info.value.__notes__


def test_failed_fit_keeps_previous_model():
    X, y = digits()
    model = Incremental(SGDClassifier(random_state=0), block_size=BLOCK, random_state=0)
    model.fit(X, y)
    coef = model.coef_.copy()
    bad = X.copy()
    bad[-1, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        model.fit(bad, y)
    np.testing.assert_array_equal(model.coef_, coef)


def test_error_in_read_names_block():
    X, y = digits()

    def fail_on_third(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise OSError("disk read failed")
        return block

    lazy = da.from_array(X, chunks=(BLOCK, -1)).map_blocks(fail_on_third, dtype=X.dtype)
    model = Incremental(SGDClassifier(), shuffle_blocks=False)
    synchronous = dask.config.set(scheduler="synchronous")
    with pytest.raises(OSError, match="disk read failed") as info, synchronous:
        model.fit(lazy, y)
    assert "postfit: raised while reading block 2 of X" in info.value.__notes__


def test_oversized_lazy_block_warns():
    from postfit.exceptions import PostfitWarning

    X, y = digits()
    model = Incremental(SGDClassifier(), memory_budget=10_000)
    with (
        pytest.warns(PostfitWarning, match="is 10000 bytes"),
        pytest.warns(PostfitWarning, match="exceed memory_budget"),
    ):
        model.fit(da.from_array(X, chunks=(BLOCK, -1)), y)


# ---------------------------------------------------------------------------
# Reading ahead: the next block is read while the current one trains


def test_next_block_read_while_current_trains():
    X, y = indexed_rows(n=100)
    loaded = {i: threading.Event() for i in range(5)}
    early_reads = []
    model = None

    def load(block, block_info=None):
        index = block_info[0]["chunk-location"][0]
        # Only two blocks may be held: block i is read after block i - 2 trained.
        trained = len(model.estimator_.__dict__.get("calls_", []))
        if trained < index - 1:
            early_reads.append(index)
        loaded[index].set()
        return block

    def wait_for_next(recorder):
        current = len(recorder.__dict__.get("calls_", []))
        if current + 1 < 5:
            assert loaded[current + 1].wait(timeout=30), "the next block was not read ahead"

    lazy = da.from_array(X, chunks=(20, -1)).map_blocks(load, dtype=X.dtype)
    model = Incremental(BlockRecorder(wait_for=wait_for_next), shuffle_blocks=False)
    with dask.config.set(scheduler="synchronous"):
        model.fit(lazy, y)

    calls = model.estimator_.calls_
    assert len(calls) == 5
    assert early_reads == []
    assert {call["thread"] for call in calls} == {threading.get_ident()}


# ---------------------------------------------------------------------------
# Accuracy, early stopping and progress


def test_parquet_training_reaches_in_memory_accuracy(tmp_path):
    pytest.importorskip("postfit.io")
    from postfit import read_parquet

    X, y = load_digits(return_X_y=True, as_frame=True)
    frame = X.copy()
    frame["digit"] = y
    frame.iloc[:1400].to_parquet(tmp_path / "train.parquet", row_group_size=100)
    X_train, y_train, X_test, y_test = X.iloc[:1400], y.iloc[:1400], X.iloc[1400:], y.iloc[1400:]
    estimator = SGDClassifier(random_state=0)
    options = dict(max_iter=10, block_size=100, random_state=0, shuffle_rows=True)

    from_files = Incremental(estimator, **options).fit(read_parquet(tmp_path), "digit")
    in_memory = Incremental(estimator, **options).fit(X_train, y_train)
    plain = clone(estimator).set_params(max_iter=10, tol=None).fit(X_train, y_train)

    accuracy = from_files.score(X_test, y_test)
    assert accuracy == in_memory.score(X_test, y_test)
    np.testing.assert_array_equal(from_files.coef_, in_memory.coef_)
    # SGD on unscaled pixels moves by a few points with the row order: seeds 0
    # to 2 gave 0.86 to 0.89 streamed, against 0.89 to 0.90 for plain fit.
    assert accuracy >= plain.score(X_test, y_test) - 0.05


class ScriptedScore(BaseEstimator):
    """An estimator whose score after each epoch comes from a fixed list."""

    def __init__(self, scores=(), n_blocks=1):
        self.scores = scores
        self.n_blocks = n_blocks

    def partial_fit(self, X, y=None):
        self.calls_ = getattr(self, "calls_", 0) + 1
        return self

    def score(self, X, y=None):
        return self.scores[self.calls_ // self.n_blocks - 1]


@pytest.mark.filterwarnings("ignore::postfit.exceptions.MaterializedScoringWarning")
def test_early_stopping_after_patience():
    X, y = indexed_rows(n=40)
    scores = [0.5, 0.6, 0.605, 0.6, 0.9, 0.95]
    model = Incremental(
        ScriptedScore(scores, n_blocks=4),
        block_size=10,
        max_iter=6,
        early_stopping=True,
        tol=0.01,
        n_iter_no_change=2,
        random_state=0,
    )
    model.fit(X, y, X_val=X, y_val=y)
    assert model.n_iter_ == 4
    assert model.epoch_scores_ == [0.5, 0.6, 0.605, 0.6]
    assert model.estimator_.calls_ == 16


@pytest.mark.filterwarnings("ignore::postfit.exceptions.MaterializedScoringWarning")
def test_validation_scores_recorded_without_stopping():
    X, y = indexed_rows(n=40)
    scores = [0.5, 0.4, 0.3, 0.2]
    model = Incremental(ScriptedScore(scores, n_blocks=4), block_size=10, max_iter=4)
    model.fit(X, y, X_val=X, y_val=y)
    assert model.n_iter_ == 4
    assert model.epoch_scores_ == scores


def test_early_stopping_with_scorer_on_digits():
    X, y = load_digits(return_X_y=True)
    model = Incremental(
        SGDClassifier(random_state=0),
        scoring="accuracy",
        max_iter=30,
        early_stopping=True,
        n_iter_no_change=2,
        tol=0.0,
        block_size=100,
        random_state=0,
    )
    model.fit(X[:1200], y[:1200], X_val=X[1200:], y_val=y[1200:])
    assert 3 <= model.n_iter_ < 30
    assert len(model.epoch_scores_) == model.n_iter_
    assert model.epoch_scores_[-1] == model.score(X[1200:], y[1200:])


def test_validation_errors():
    X, y = digits()
    with pytest.raises(ValueError, match="early_stopping=True needs validation data"):
        Incremental(SGDClassifier(), early_stopping=True).fit(X, y)
    with pytest.raises(ValueError, match="Validation scores need a single metric"):
        Incremental(SGDClassifier(), scoring=["accuracy", "f1_macro"]).fit(X, y, X_val=X, y_val=y)
    with pytest.raises(ValueError, match="StandardScaler has no score method"):
        Incremental(StandardScaler()).fit(X, X_val=X)
    with pytest.raises(ValueError, match="y_val was given without X_val"):
        Incremental(SGDClassifier()).fit(X, y, y_val=y)


def test_progress_bar_shows_epochs(capsys):
    X, y = digits()
    Incremental(SGDClassifier(), block_size=BLOCK, max_iter=2, progress=True).fit(X, y)
    err = capsys.readouterr().err
    assert "16/16" in err
    assert "epoch 2/2" in err


def test_no_output_without_progress(capsys):
    X, y = digits()
    Incremental(SGDClassifier(), block_size=BLOCK, max_iter=2).fit(X, y)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


# ---------------------------------------------------------------------------
# The docs page


def test_docs_page_examples_run():
    import doctest
    import pathlib

    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "incremental.md"
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testfile(str(page), module_relative=False, optionflags=flags)
    assert result.attempted > 0
    assert result.failed == 0
