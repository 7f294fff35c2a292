"""File sources and sinks on a Dask cluster: workers read and write their own blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dask_fixtures import dask_client, dask_cluster  # noqa: F401 - pytest fixtures
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.linear_model import LogisticRegression

import postfit
from postfit import ParallelPostFit

pytestmark = pytest.mark.cluster

N_ROWS = 900


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster-io")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=N_ROWS), "y": rng.normal(size=N_ROWS)})
    frame["id"] = np.arange(N_ROWS)
    frame.iloc[:500].to_parquet(folder / "a.parquet", row_group_size=100)
    frame.iloc[500:].to_parquet(folder / "b.parquet", row_group_size=100)
    # Apart from the Parquet files: a folder read as Parquet warns about other data files.
    csv_file = tmp_path_factory.mktemp("cluster-io-csv") / "all.csv"
    frame.to_csv(csv_file, index=False)
    model = LogisticRegression().fit(frame[["x", "y"]], frame["x"] > 0)
    return folder, frame, model, csv_file


@pytest.mark.parametrize("kind", ["parquet", "csv"])
@pytest.mark.parametrize("sink", ["memory", "parquet", "csv"])
def test_dask_reads_writes_files(kind, sink, inputs, dask_client, tmp_path):  # noqa: F811
    folder, frame, model, csv_file = inputs
    if kind == "parquet":
        source = postfit.read_parquet(folder)
    else:
        source = postfit.read_csv(csv_file)
    clf = ParallelPostFit(
        model, backend="dask", backend_options={"client": dask_client}, block_size=70
    )
    expected = model.predict_proba(frame[["x", "y"]])
    if sink == "memory":
        assert_allclose(clf.predict_proba(source), expected, rtol=1e-12)
        return

    result = clf.predict_proba(source, output=tmp_path / f"out.{sink}", keep_columns=["id"])
    # pandas 2.3's default CSV parser reads some floats up to 1.1e-16 off (7.6e-13
    # relative near zero). Its pyarrow engine, like pandas 3.1's default, is exact.
    if sink == "parquet":
        written = pd.read_parquet(result.path)
    else:
        written = pd.read_csv(result.path, engine="pyarrow")
    assert result.n_blocks > 5
    assert_array_equal(written["id"].to_numpy(), frame["id"].to_numpy())
    assert_allclose(written[["proba_False", "proba_True"]].to_numpy(), expected, rtol=1e-12)
