"""Directory inputs skip files that other tools keep in hidden folders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from sklearn.linear_model import LinearRegression

import postfit
from postfit import ParallelPostFit


@pytest.mark.parametrize("folder", ["_temporary/0", ".ipynb_checkpoints", "day=1/_staging"])
def test_hidden_folder_skipped(tmp_path, folder):
    frame = pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) % 3})
    (tmp_path / "day=1").mkdir()
    frame.to_parquet(tmp_path / "day=1" / "part-0.parquet")
    # A copy of the same rows where Spark or an editor would leave it.
    (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    frame.to_parquet(tmp_path / folder / "part-0.parquet")
    model = LinearRegression().fit(frame, np.arange(50.0))
    source = postfit.read_parquet(tmp_path)

    got = ParallelPostFit(model, backend="sequential").predict(source)

    assert source.n_rows == len(frame)
    assert_allclose(got, model.predict(frame), rtol=1e-12)


def test_hidden_folder_named_directly(tmp_path):
    # A folder the user names is read, even when its name starts with "_".
    frame = pd.DataFrame({"a": np.arange(5.0)})
    (tmp_path / "_inputs").mkdir()
    frame.to_parquet(tmp_path / "_inputs" / "rows.parquet")

    source = postfit.read_parquet(tmp_path / "_inputs")

    assert source.n_rows == 5
