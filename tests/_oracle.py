"""Comparison of a wrapper's output with the plain estimator's, and the estimators to test.

The plain estimator's own output on the whole input is the oracle: the
wrapper must return the same type, dtype, shape, index, columns and values,
exactly for labels and tree models, within ``rtol=1e-12`` otherwise.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
)
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.mixture import GaussianMixture
from sklearn.naive_bayes import GaussianNB, MultinomialNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    PowerTransformer,
    StandardScaler,
)
from sklearn.svm import SVC, SVR, LinearSVC
from sklearn.tree import DecisionTreeClassifier

POST_FIT_METHODS = (
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "score_samples",
    "transform",
)

#: Rows of every test data set: enough for uneven blocks, small enough to stay fast.
N_ROWS = 200

# ---------------------------------------------------------------------------
# Data sets (scikit-learn's bundled data, cut to N_ROWS rows)


@functools.cache
def numeric_data():
    """Return (X, y_class, y_reg): 200 rows of breast cancer features, 8 columns."""
    X, y = load_breast_cancer(return_X_y=True)
    _, y_reg = load_diabetes(return_X_y=True)
    rows = np.random.default_rng(0).permutation(len(X))[:N_ROWS]
    return np.ascontiguousarray(X[rows, :8]), y[rows], y_reg[:N_ROWS]


@functools.cache
def multiclass_data():
    """Return (X, y) of iris, shuffled: 150 rows, 3 classes with string labels."""
    X, y = load_iris(return_X_y=True)
    rows = np.random.default_rng(1).permutation(len(X))
    names = np.array(["setosa", "versicolor", "virginica"])
    return X[rows], names[y[rows]]


@functools.cache
def category_data():
    """Return an int array of 200 rows × 2 columns whose values are 1, 2 or 3."""
    return np.random.default_rng(2).integers(1, 4, size=(N_ROWS, 2))


@functools.cache
def mixed_frame():
    """Return (frame, y): numbers with NaN and strings with missing values."""
    rng = np.random.default_rng(3)
    X, y, _ = numeric_data()
    frame = pd.DataFrame(
        {
            "radius": X[:, 0],
            "texture": X[:, 1],
            "city": rng.choice(["Oslo", "Lima", "Pune", "Kobe"], size=N_ROWS).astype(object),
            "grade": rng.choice(["low", "high"], size=N_ROWS).astype(object),
        },
        index=pd.Index(np.arange(N_ROWS) * 10 + 5, name="id"),
    )
    frame.loc[frame.index[::7], "texture"] = np.nan
    frame.loc[frame.index[::11], "city"] = np.nan
    return frame, y


@functools.cache
def text_data():
    """Return (Series of short documents, labels) built from word lists."""
    rng = np.random.default_rng(4)
    words = np.array(["block", "row", "model", "fit", "tree", "cloud", "file", "core", "rain"])
    docs = [" ".join(rng.choice(words, size=rng.integers(1, 8))) for _ in range(N_ROWS)]
    labels = np.array([int("tree" in d) for d in docs])
    index = pd.RangeIndex(100, 100 + N_ROWS)
    return pd.Series(docs, index=index, name="text"), labels


# ---------------------------------------------------------------------------
# Estimators


@dataclass(frozen=True)
class Case:
    """An estimator to test: how to build and fit it, and on which data."""

    name: str
    make: object
    data: str = "numeric"
    target: str = "class"
    #: True when every output is exactly reproducible whatever the block size.
    exact: bool = False


def _columns_pipeline():
    numbers = make_pipeline(SimpleImputer(), StandardScaler())
    strings = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
    )
    columns = ColumnTransformer(
        [("numbers", numbers, ["radius", "texture"]), ("strings", strings, ["city", "grade"])]
    )
    return make_pipeline(columns, LogisticRegression(max_iter=1000))


CASES = [
    Case("logistic", lambda: make_pipeline(StandardScaler(), LogisticRegression())),
    Case("ridge", lambda: Ridge(alpha=0.5), target="reg"),
    Case("linear_multioutput", LinearRegression, target="reg2"),
    Case("tree", lambda: DecisionTreeClassifier(random_state=0), exact=True),
    Case(
        "forest",
        lambda: RandomForestClassifier(n_estimators=8, random_state=0),
        exact=True,
    ),
    Case(
        "forest_multioutput",
        lambda: RandomForestClassifier(n_estimators=5, random_state=0),
        target="class2",
        exact=True,
    ),
    Case(
        "extra_trees",
        lambda: ExtraTreesRegressor(n_estimators=5, random_state=0),
        target="reg",
        exact=True,
    ),
    Case(
        "gradient_boosting",
        lambda: GradientBoostingClassifier(n_estimators=10, random_state=0),
        exact=True,
    ),
    Case(
        "hist_gradient_boosting",
        lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0),
        exact=True,
    ),
    Case(
        "hist_gradient_boosting_reg",
        lambda: HistGradientBoostingRegressor(max_iter=10, random_state=0),
        target="reg",
        exact=True,
    ),
    Case("knn", lambda: KNeighborsClassifier(n_neighbors=5)),
    Case("knn_reg", lambda: KNeighborsRegressor(n_neighbors=4), target="reg"),
    Case("gaussian_nb", GaussianNB, data="multiclass"),
    Case("svc", lambda: make_pipeline(StandardScaler(), SVC()), data="multiclass"),
    Case("linear_svc", lambda: make_pipeline(StandardScaler(), LinearSVC())),
    Case("svr", SVR, target="reg"),
    Case("kmeans", lambda: KMeans(n_clusters=3, n_init=1, random_state=0), target="none"),
    Case(
        "gaussian_mixture",
        lambda: GaussianMixture(n_components=2, random_state=0),
        target="none",
    ),
    Case("standard_scaler", StandardScaler, target="none"),
    Case("pca", lambda: PCA(n_components=3, random_state=0), target="none"),
    Case(
        "one_hot",
        lambda: OneHotEncoder(categories=[[1, 2, 3], [1, 2, 3]]),
        data="category",
        target="none",
        exact=True,
    ),
    Case(
        "one_hot_dense",
        lambda: OneHotEncoder(sparse_output=False),
        data="category",
        target="none",
        exact=True,
    ),
    Case("box_cox", lambda: PowerTransformer(method="box-cox"), data="positive", target="none"),
    Case(
        "function_transformer",
        lambda: FunctionTransformer(np.log1p, feature_names_out="one-to-one"),
        data="positive",
        target="none",
    ),
    Case("columns_pipeline", _columns_pipeline, data="mixed"),
    Case("text_pipeline", lambda: make_pipeline(TfidfVectorizer(), MultinomialNB()), data="text"),
    Case(
        "isolation_forest",
        lambda: IsolationForest(n_estimators=10, random_state=0),
        target="none",
        exact=True,
    ),
    Case("local_outlier_factor", lambda: LocalOutlierFactor(novelty=True), target="none"),
]

CASES_BY_NAME = {case.name: case for case in CASES}


def training_data(case, frame=False):
    """Return (X, y) for fitting ``case``; a frame with column names when ``frame``."""
    X, y_class, y_reg = numeric_data()
    if case.data == "multiclass":
        X, y_class = multiclass_data()
    elif case.data == "positive":
        X = X - X.min(axis=0) + 1.0
    elif case.data == "category":
        X = category_data()
    elif case.data == "mixed":
        return mixed_frame()
    elif case.data == "text":
        return text_data()
    targets = {
        "class": y_class,
        "reg": y_reg,
        "reg2": np.column_stack([y_reg, y_reg[::-1] * 0.5]),
        "class2": np.column_stack([y_class, (X[:, 0] > np.median(X[:, 0])).astype(int)]),
        "none": None,
    }
    if frame:
        X = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    return X, targets[case.target]


@functools.cache
def fitted(name, frame=False, output=None):
    """Return the fitted estimator of case ``name``; each combination is fitted once."""
    case = CASES_BY_NAME[name]
    estimator = case.make()
    if output is not None:
        estimator.set_output(transform=output)
    X, y = training_data(case, frame)
    return estimator.fit(X, y)


def methods_of(estimator):
    return [m for m in POST_FIT_METHODS if hasattr(estimator, m)]


# ---------------------------------------------------------------------------
# Input kinds

ARRAY_KINDS = ["c_order", "f_order", "read_only", "memmap", "list", "csr", "csc", "coo"]
FRAME_KINDS = ["pandas", "polars", "pyarrow"]


def make_input(kind, X, tmp_path=None):
    """Return X (a NumPy array or a pandas frame) as input kind ``kind``."""
    if kind == "c_order":
        return np.ascontiguousarray(X)
    if kind == "f_order":
        return np.asfortranarray(X)
    if kind == "read_only":
        X = np.array(X)
        X.setflags(write=False)
        return X
    if kind == "memmap":
        mapped = np.memmap(tmp_path / "X.dat", dtype=X.dtype, mode="w+", shape=X.shape)
        mapped[:] = X
        mapped.flush()
        return np.memmap(tmp_path / "X.dat", dtype=X.dtype, mode="r", shape=X.shape)
    if kind == "list":
        return X.tolist() if isinstance(X, np.ndarray) else list(X)
    if kind in ("csr", "csc", "coo"):
        return getattr(sp, f"{kind}_matrix")(X)
    if kind == "pandas":
        # A shuffled, non-default index: outputs must carry it, in row order.
        index = np.random.default_rng(5).permutation(len(X)) * 3 + 1000
        return X.set_axis(index, axis=0)
    if kind == "polars":
        return pl.from_pandas(X)
    if kind == "pyarrow":
        return pa.Table.from_pandas(X, preserve_index=False)
    if kind == "series":
        return X
    if kind == "object_array":
        return np.asarray(X, dtype=object)
    raise ValueError(f"unknown input kind {kind!r}")


# ---------------------------------------------------------------------------
# Comparison


def assert_same_output(got, expected, exact=False):
    """Assert that ``got`` equals the oracle ``expected`` in type, shape, labels and values."""
    assert type(got) is type(expected), f"type {type(got)} != {type(expected)}"
    if isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for got_item, expected_item in zip(got, expected, strict=True):
            assert_same_output(got_item, expected_item, exact)
        return
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected, check_exact=exact, rtol=1e-12, atol=0)
        return
    if isinstance(expected, pd.Series):
        pd.testing.assert_series_equal(got, expected, check_exact=exact, rtol=1e-12, atol=0)
        return
    if isinstance(expected, pl.DataFrame):
        assert got.schema == expected.schema
        _assert_values(got.to_numpy(), expected.to_numpy(), exact)
        return
    if sp.issparse(expected):
        assert got.format == expected.format
        assert got.dtype == expected.dtype
        assert got.shape == expected.shape
        _assert_values(got.toarray(), expected.toarray(), exact)
        return
    assert isinstance(expected, np.ndarray), f"unexpected output type {type(expected)}"
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    _assert_values(got, expected, exact)


def _assert_values(got, expected, exact):
    if exact or not np.issubdtype(expected.dtype, np.floating):
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def call_oracle(estimator, method, X, **kwargs):
    """Return ("ok", output) or ("error", exception type) of the plain estimator."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", category=UserWarning)
            warnings.filterwarnings("error", category=FutureWarning)
            return "ok", getattr(estimator, method)(X, **kwargs)
    except Exception as exc:
        return "error", type(exc)
