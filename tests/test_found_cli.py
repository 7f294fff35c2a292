"""The postfit command as a new user runs it, against what the library itself writes."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression

import postfit
from postfit._models import describe_model


@pytest.mark.parametrize("loader", [load_breast_cancer, load_iris], ids=["binary", "multiclass"])
def test_info_decision_columns_match(loader, tmp_path):
    X, y = loader(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=5_000).fit(X, y)
    X.to_parquet(tmp_path / "input.parquet")
    wrapper = postfit.ParallelPostFit(model, backend="sequential", block_size=100)

    wrapper.decision_function(
        postfit.read_parquet(tmp_path / "input.parquet"), output=str(tmp_path / "out")
    )
    written = list(pd.read_parquet(tmp_path / "out").columns)
    listed = describe_model(model).split("decision_function: ")[1].splitlines()[0]

    assert listed.split(", ") == written
