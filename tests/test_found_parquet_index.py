"""Parquet files written by pandas from a frame whose index is not a RangeIndex.

``DataFrame.to_parquet`` stores such an index as a column named
``__index_level_0__``, and ``pandas.read_parquet`` turns it back into the index.
A file source must not treat it as a feature either: the oracle is the plain
estimator on ``pandas.read_parquet`` of the same file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression, SGDRegressor
from sklearn.preprocessing import StandardScaler

import postfit
from postfit import Incremental, ParallelPostFit

BACKENDS = ["sequential", "threading", "loky"]


@pytest.fixture(scope="module")
def filtered_file(tmp_path_factory):
    """Write the diabetes table, filtered so that its index has gaps, to one Parquet file."""
    frame = load_diabetes(as_frame=True).frame
    filtered = frame[frame["sex"] > 0]
    path = tmp_path_factory.mktemp("parquet_index") / "filtered.parquet"
    filtered.to_parquet(path, row_group_size=40)
    return path


def test_source_hides_index_column(filtered_file):
    source = postfit.read_parquet(filtered_file)
    expected = list(pd.read_parquet(filtered_file).columns)

    assert source.schema.names == expected
    assert source.all_column_names() == expected


def test_source_selects_index_by_name(filtered_file):
    source = postfit.read_parquet(filtered_file, columns=["__index_level_0__"])

    assert source.schema.names == ["__index_level_0__"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_array_model_all_columns(filtered_file, backend):
    # Without columns= every data column is a feature, but the index is not one.
    frame = pd.read_parquet(filtered_file)
    model = LinearRegression().fit(frame.to_numpy(), np.arange(len(frame), dtype=float))
    wrapper = ParallelPostFit(model, backend=backend, n_jobs=2, block_size=25)

    got = wrapper.predict(postfit.read_parquet(filtered_file))

    assert_allclose(got, model.predict(frame.to_numpy()), rtol=1e-12)
    assert got.dtype == np.float64


def test_array_model_columns_option(filtered_file):
    frame = pd.read_parquet(filtered_file)
    features = frame.drop(columns="target").to_numpy()
    model = LinearRegression().fit(features, frame["target"].to_numpy())
    source = postfit.read_parquet(filtered_file, columns=list(frame.columns[:-1]))
    wrapper = ParallelPostFit(model, backend="sequential", block_size=25)

    got = wrapper.predict(source)

    assert_allclose(got, model.predict(features), rtol=1e-12)


def test_incremental_fit_ignores_index(filtered_file):
    frame = pd.read_parquet(filtered_file)
    scaler = Incremental(StandardScaler(), block_size=25, shuffle_blocks=False)

    scaler.fit(postfit.read_parquet(filtered_file))
    plain = StandardScaler().fit(frame)

    assert_array_equal(scaler.feature_names_in_, plain.feature_names_in_)
    assert_allclose(scaler.mean_, plain.mean_, rtol=1e-12)


def test_incremental_target_column(filtered_file):
    frame = pd.read_parquet(filtered_file)
    model = Incremental(
        SGDRegressor(random_state=0), block_size=1_000, shuffle_blocks=False, random_state=0
    )

    model.fit(postfit.read_parquet(filtered_file), "target")
    plain = SGDRegressor(random_state=0).partial_fit(frame.drop(columns="target"), frame["target"])

    assert list(model.feature_names_in_) == list(frame.columns[:-1])
    assert_allclose(model.coef_, plain.coef_, rtol=1e-12)


def test_files_with_and_without_index(filtered_file, tmp_path):
    # One file from a filtered frame, one from a fresh frame: same data columns.
    frame = pd.read_parquet(filtered_file)
    frame.to_parquet(tmp_path / "a.parquet")
    frame.reset_index(drop=True).to_parquet(tmp_path / "b.parquet")
    both = pd.concat([frame, frame])
    model = LinearRegression().fit(both.drop(columns="target"), both["target"])
    wrapper = ParallelPostFit(model, backend="sequential", block_size=50)

    got = wrapper.predict(postfit.read_parquet(tmp_path))

    assert_allclose(got, model.predict(both.drop(columns="target")), rtol=1e-12)
