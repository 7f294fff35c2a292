"""Scoring on a Dask LocalCluster: lazy Dask inputs and the dask backend.

Runs only in a loopback-only network namespace, like every cluster test.
"""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pytest
from dask_fixtures import (
    dask_client,  # noqa: F401 - a fixture
    dask_cluster,  # noqa: F401 - a fixture
)
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import check_scoring, get_scorer_names

import postfit
from postfit import ParallelPostFit

pytestmark = pytest.mark.cluster

# d2_brier_score came with scikit-learn 1.8, so older versions score without it.
SCORING = [
    name
    for name in ["accuracy", "roc_auc_ovr", "neg_log_loss", "f1_macro", "d2_brier_score"]
    if name in get_scorer_names()
]


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True, as_frame=True)
    return LogisticRegression(max_iter=1000).fit(X, y), X, y


def _assert_matches(got, model, X, y, **kwargs):
    expected = check_scoring(model, scoring=SCORING)(model, X, y, **kwargs)
    assert list(got) == SCORING
    for name in SCORING:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, err_msg=name)


def test_lazy_frame_score_on_cluster(iris, dask_client):  # noqa: F811
    model, X, y = iris
    frame = dd.from_pandas(X.assign(target=y), npartitions=5)
    lazy = ParallelPostFit(model, scoring=SCORING).score(frame, "target", execute=False)
    got = dask_client.compute(lazy).result()
    _assert_matches(got, model, X, y)


def test_dask_backend_in_memory(iris, dask_client):  # noqa: F811
    model, X, y = iris
    weights = np.linspace(1, 2, len(X))
    wrapper = ParallelPostFit(
        model,
        scoring=SCORING,
        backend="dask",
        backend_options={"client": dask_client},
        block_size=20,
    )
    _assert_matches(wrapper.score(X, y, sample_weight=weights), model, X, y, sample_weight=weights)


def test_dask_backend_parquet_target(iris, dask_client, tmp_path):  # noqa: F811
    model, X, y = iris
    path = tmp_path / "iris.parquet"
    X.assign(target=y).to_parquet(path, row_group_size=30)
    wrapper = ParallelPostFit(
        model, scoring=SCORING, backend="dask", backend_options={"client": dask_client}
    )
    _assert_matches(wrapper.score(postfit.read_parquet(path), "target"), model, X, y)
