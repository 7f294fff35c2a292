"""CSV sources read header names as text, as pandas and pyarrow read them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from sklearn.linear_model import LinearRegression

import postfit
from postfit import ParallelPostFit

# Each name is one that type inference would turn into another value.
NAMES = ["id", "007", "true", "2020-01-01", "1.50", "NaN"]


@pytest.fixture(scope="module")
def named_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, len(NAMES))).round(4), columns=NAMES)
    path = tmp_path_factory.mktemp("csv_names") / "named.csv"
    frame.to_csv(path, index=False)
    return path


def test_header_names_kept(named_file):
    source = postfit.read_csv(named_file)

    assert source.schema.names == NAMES
    assert source.schema.names == list(pd.read_csv(named_file, keep_default_na=False).columns)


@pytest.mark.parametrize("backend", ["sequential", "loky"])
def test_named_columns_predict(named_file, backend):
    frame = pd.read_csv(named_file, keep_default_na=False)
    features = frame.drop(columns="id")
    model = LinearRegression().fit(features, frame["id"])
    wrapper = ParallelPostFit(model, backend=backend, n_jobs=2, block_size=40)

    got = wrapper.predict(postfit.read_csv(named_file))

    assert_allclose(got, model.predict(features), rtol=1e-12)


def test_empty_header_name(tmp_path):
    # pandas' to_csv writes an unnamed index as a column with an empty name.
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]}, index=[5, 6, 7])
    frame.to_csv(tmp_path / "indexed.csv")

    source = postfit.read_csv(tmp_path / "indexed.csv")

    assert source.schema.names == ["", "x"]


@pytest.mark.parametrize("backend", ["sequential", "threading"])
def test_tsv_read_with_tabs(tmp_path, backend):
    frame = pd.DataFrame({"a": np.arange(100.0), "b": np.arange(100.0) % 7})
    frame.to_csv(tmp_path / "rows.tsv", sep="\t", index=False)
    model = LinearRegression().fit(frame, np.arange(100.0) % 5)
    wrapper = ParallelPostFit(model, backend=backend, n_jobs=2, block_size=30)

    got = wrapper.predict(postfit.read_csv(tmp_path / "rows.tsv"))

    assert_allclose(got, model.predict(frame), rtol=1e-12)


def test_tsv_delimiter_given(tmp_path):
    (tmp_path / "rows.tsv").write_text("a;b\n1;2\n")

    source = postfit.read_csv(tmp_path / "rows.tsv", delimiter=";")

    assert source.schema.names == ["a", "b"]
