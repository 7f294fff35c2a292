"""File sources and sinks against the plain estimator on the same whole data.

Every source (Parquet, CSV, .npy, Zarr) is run with every sink (in memory,
Parquet, CSV, .npy, Zarr) on every local backend, with blocks small enough
that each run has many of them, and the output must equal the estimator's own
output on the whole input: same values, same row order, carried ids aligned.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import postfit
from postfit import ParallelPostFit
from postfit.io import WriteResult

BACKENDS = ["sequential", "threading", "loky"]
N_ROWS = 700
BLOCK_SIZE = 64
CITIES = ["a, b", 'say "hi"', "c"]


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "id": np.arange(1000, 1000 + N_ROWS),
            "x1": rng.normal(size=N_ROWS),
            "x2": rng.normal(size=N_ROWS),
            "city": rng.choice(CITIES, N_ROWS),
        }
    )
    table.loc[rng.choice(N_ROWS, 60, replace=False), "x2"] = np.nan
    return table


@pytest.fixture(scope="module")
def pipeline(frame):
    rng = np.random.default_rng(1)
    y = (frame["x1"] + rng.normal(size=len(frame)) > 0).astype(int)
    model = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["city"]),
            (SimpleImputer(), ["x1", "x2"]),
        ),
        LogisticRegression(),
    )
    return model.fit(frame[["x1", "x2", "city"]], y)


@pytest.fixture(scope="module")
def array_model():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 4))
    return LogisticRegression().fit(X, X[:, 0] > 0)


@pytest.fixture(scope="module")
def table_inputs(frame, tmp_path_factory):
    """Write the frame as Parquet (three files, an empty one, a zero-row row group) and CSV."""
    folder = tmp_path_factory.mktemp("inputs")
    parquet = folder / "parquet"
    parquet.mkdir()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table.slice(0, 250).to_pandas().to_parquet(parquet / "a.parquet", row_group_size=97)
    table.slice(0, 0).to_pandas().to_parquet(parquet / "b.parquet")
    with pq.ParquetWriter(parquet / "c.parquet", table.schema) as writer:
        writer.write_table(table.slice(250, 300), row_group_size=40)
        writer.write_table(table.slice(0, 0))
        writer.write_table(table.slice(550, 150), row_group_size=150)
    (parquet / "_SUCCESS").write_text("")

    csv = folder / "csv"
    csv.mkdir()
    frame.iloc[:333].to_csv(csv / "a.csv", index=False)
    frame.iloc[333:].to_csv(csv / "b.csv", index=False)
    return {"parquet": str(parquet), "csv": str(csv / "*.csv")}


@pytest.fixture(scope="module")
def array_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("arrays")
    X = np.random.default_rng(3).normal(size=(N_ROWS, 4))
    np.save(folder / "a.npy", X[:300])
    np.save(folder / "b.npy", X[300:])
    # Zarr 2 (checked on 2.18) has no zarr.create_array, and zarr.open_array
    # with mode="w" creates the array on Zarr 2 and Zarr 3 alike.
    store = zarr.open_array(
        str(folder / "X.zarr"), mode="w", shape=X.shape, chunks=(50, 4), dtype="f8"
    )
    store[:] = X
    return X, {"npy": str(folder / "*.npy"), "zarr": str(folder / "X.zarr")}


def open_source(kind, path):
    readers = {
        "parquet": postfit.read_parquet,
        "csv": postfit.read_csv,
        "npy": postfit.read_npy,
        "zarr": postfit.read_zarr,
    }
    return readers[kind](path)


def read_output(result, fmt):
    if fmt == "parquet":
        return pd.read_parquet(result.path)
    if fmt == "csv":
        # pandas 2.3's default CSV parser reads some floats up to 1.1e-16 off (7.6e-13
        # relative near zero). Its pyarrow engine, like pandas 3.1's default, is exact.
        return pd.read_csv(result.path, engine="pyarrow")
    if fmt == "npy":
        return np.load(result.path)
    return zarr.open_array(result.path, mode="r")[:]


# Sources --------------------------------------------------------------------------


def test_parquet_source_metadata(table_inputs, frame):
    source = postfit.read_parquet(table_inputs["parquet"])
    assert source.n_rows == N_ROWS
    assert source.schema.names == ["id", "x1", "x2", "city"]
    assert len(source.paths) == 3


def test_parquet_read_equals_pandas(table_inputs, frame):
    pd.testing.assert_frame_equal(postfit.read_parquet(table_inputs["parquet"]).read(), frame)


def test_csv_read_equals_pandas(table_inputs):
    source = postfit.read_csv(table_inputs["csv"])
    expected = pd.concat([pd.read_csv(p) for p in sorted(source.paths)], ignore_index=True)
    pd.testing.assert_frame_equal(source.read(), expected)


def test_csv_quoting_and_missing_values(table_inputs, frame):
    got = postfit.read_csv(table_inputs["csv"]).read()
    assert set(got["city"]) == set(CITIES)
    assert got["x2"].isna().sum() == frame["x2"].isna().sum()


def test_source_column_selection(table_inputs):
    source = postfit.read_parquet(table_inputs["parquet"], columns=["x1", "id"])
    assert source.schema.names == ["x1", "id"]
    assert list(source.read().columns) == ["x1", "id"]


@pytest.mark.parametrize("kind", ["parquet", "csv"])
@pytest.mark.parametrize("sink", ["memory", "parquet", "csv"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_table_source_to_sink(kind, sink, backend, table_inputs, pipeline, tmp_path):
    source = open_source(kind, table_inputs[kind])
    whole = source.read()
    expected = pipeline.predict_proba(whole[["x1", "x2", "city"]])
    clf = ParallelPostFit(pipeline, backend=backend, n_jobs=2, block_size=BLOCK_SIZE)

    if sink == "memory":
        got = clf.predict_proba(source)
        assert isinstance(got, np.ndarray)
        assert got.dtype == expected.dtype
        assert got.shape == expected.shape
        assert_allclose(got, expected, rtol=1e-12)
        return

    result = clf.predict_proba(source, output=tmp_path / f"out.{sink}", keep_columns=["id"])
    assert isinstance(result, WriteResult)
    assert result.n_rows == len(whole)
    assert result.n_blocks > 5
    written = read_output(result, sink)
    assert list(written.columns) == ["id", "proba_0", "proba_1"]
    assert_array_equal(written["id"].to_numpy(), whole["id"].to_numpy())
    assert_allclose(written[["proba_0", "proba_1"]].to_numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_to_parquet_identical(backend, table_inputs, pipeline, tmp_path):
    source = postfit.read_parquet(table_inputs["parquet"])
    expected = pipeline.predict(source.read())
    clf = ParallelPostFit(pipeline, backend=backend, n_jobs=2, block_size=BLOCK_SIZE)
    result = clf.predict(source, output=tmp_path / "labels")
    written = pd.read_parquet(result.path)
    assert list(written.columns) == ["prediction"]
    assert written["prediction"].dtype == expected.dtype
    assert_array_equal(written["prediction"].to_numpy(), expected)


@pytest.mark.parametrize("kind", ["npy", "zarr"])
@pytest.mark.parametrize("sink", ["memory", "npy", "zarr", "parquet"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_array_source_to_sink(kind, sink, backend, array_inputs, array_model, tmp_path):
    X, paths = array_inputs
    source = open_source(kind, paths[kind])
    assert source.n_rows == N_ROWS
    expected = array_model.decision_function(X)
    clf = ParallelPostFit(array_model, backend=backend, n_jobs=2, block_size=BLOCK_SIZE)

    if sink == "memory":
        got = clf.decision_function(source)
    else:
        result = clf.decision_function(source, output=tmp_path / f"out.{sink}")
        got = read_output(result, sink)
        if sink == "parquet":
            assert list(got.columns) == ["decision"]
            got = got["decision"].to_numpy()
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("backend", ["sequential", "threading"])
def test_memory_url_source_and_sink(backend, frame, pipeline):
    fs = __import__("fsspec").filesystem("memory")
    with fs.open(f"/postfit-test-{backend}/in.parquet", "wb") as f:
        frame.to_parquet(f, row_group_size=100)
    source = postfit.read_parquet(f"memory://postfit-test-{backend}/in.parquet")
    clf = ParallelPostFit(pipeline, backend=backend, n_jobs=2, block_size=BLOCK_SIZE)
    output = f"memory://postfit-test-{backend}/out.csv"
    clf.predict(source, output=output, keep_columns=["id"])
    with fs.open(f"/postfit-test-{backend}/out.csv", "rb") as f:
        written = pd.read_csv(f)
    assert_array_equal(written["id"].to_numpy(), frame["id"].to_numpy())
    assert_array_equal(written["prediction"].to_numpy(), pipeline.predict(frame))
    fs.rm(f"/postfit-test-{backend}", recursive=True)


def test_memory_url_rejected_with_processes(frame, pipeline):
    fs = __import__("fsspec").filesystem("memory")
    with fs.open("/postfit-test-loky/in.parquet", "wb") as f:
        frame.to_parquet(f)
    source = postfit.read_parquet("memory://postfit-test-loky/in.parquet")
    clf = ParallelPostFit(pipeline, backend="loky", n_jobs=2)
    with pytest.raises(postfit.io.InputError, match="memory://"):
        clf.predict(source)
    fs.rm("/postfit-test-loky", recursive=True)


def test_keep_columns_in_memory_frame(table_inputs, pipeline):
    source = postfit.read_parquet(table_inputs["parquet"])
    whole = source.read()
    clf = ParallelPostFit(pipeline, backend="threading", n_jobs=2, block_size=BLOCK_SIZE)
    got = clf.predict(source, keep_columns=["id", "city"])
    assert list(got.columns) == ["id", "city", "prediction"]
    assert_array_equal(got["id"].to_numpy(), whole["id"].to_numpy())
    assert_array_equal(got["prediction"].to_numpy(), pipeline.predict(whole))


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_memory_frame_to_parquet(backend, frame, pipeline, tmp_path):
    clf = ParallelPostFit(pipeline, backend=backend, n_jobs=2, block_size=BLOCK_SIZE)
    clf.predict_proba(frame, output=tmp_path / "out", keep_columns=["id"])
    written = pd.read_parquet(tmp_path / "out")
    assert_array_equal(written["id"].to_numpy(), frame["id"].to_numpy())
    expected = pipeline.predict_proba(frame[["x1", "x2", "city"]])
    assert_allclose(written[["proba_0", "proba_1"]].to_numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_memory_array_to_npy(backend, array_model, tmp_path):
    X = np.random.default_rng(4).normal(size=(500, 4))
    clf = ParallelPostFit(array_model, backend=backend, n_jobs=2, block_size=BLOCK_SIZE)
    clf.predict(X, output=tmp_path / "labels.npy")
    assert_array_equal(np.load(tmp_path / "labels.npy"), array_model.predict(X))


@pytest.mark.parametrize("sink", ["npy", "zarr"])
def test_string_labels_to_array_file(sink, tmp_path):
    X = np.random.default_rng(5).normal(size=(300, 3))
    names = np.array(["setosa", "versicolor", "virginica"])
    model = LogisticRegression().fit(X, names[np.arange(300) % 3])
    clf = ParallelPostFit(model, backend="sequential", block_size=BLOCK_SIZE)

    result = clf.predict(X, output=tmp_path / f"labels.{sink}")

    got = read_output(result, sink)
    assert got.shape == (300,)
    # Zarr 3.1 reads the labels back as NumPy's variable-width StringDType (kind
    # "T"), which NumPy 2.4 cannot cast to a fixed-width str, and Zarr 2.18 as "<U10".
    assert got.dtype.kind in ("U", "T")
    assert got.tolist() == model.predict(X).tolist()


# Bad input ------------------------------------------------------------------------


def test_corrupted_parquet_names_file(tmp_path, frame, pipeline):
    frame.to_parquet(tmp_path / "good.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not a parquet file")
    source = postfit.read_parquet(tmp_path)
    with pytest.raises(postfit.io.InvalidFileError, match="broken.parquet"):
        ParallelPostFit(pipeline).predict(source)


def test_differing_schemas_name_both_files(tmp_path, frame, pipeline):
    frame.to_parquet(tmp_path / "a.parquet")
    changed = frame.assign(x1=frame["x1"].astype(str))
    changed.to_parquet(tmp_path / "b.parquet")
    with pytest.raises(ValueError, match=r"a\.parquet.*b\.parquet.*x1: double vs (large_)?string"):
        ParallelPostFit(pipeline).predict(postfit.read_parquet(tmp_path))


def test_string_and_large_string_files_mix(tmp_path, frame, pipeline):
    table = pa.Table.from_pandas(frame, preserve_index=False)
    large = table.cast(table.schema.set(3, pa.field("city", pa.large_string())))
    pq.write_table(
        table.cast(table.schema.set(3, pa.field("city", pa.string()))), tmp_path / "a.parquet"
    )
    pq.write_table(large, tmp_path / "b.parquet")
    source = postfit.read_parquet(tmp_path)
    got = ParallelPostFit(pipeline, block_size=BLOCK_SIZE).predict(source)
    assert_array_equal(got, pipeline.predict(pd.concat([frame, frame], ignore_index=True)))


def _with_null_city(table, rows):
    """Return the first ``rows`` rows of ``table`` with ``city`` as an Arrow null column."""
    part = table.slice(0, rows)
    index = part.schema.get_field_index("city")
    return part.set_column(index, pa.field("city", pa.null()), pa.nulls(rows))


def _cities(column):
    # pandas 3 reads a missing string as NaN, pandas 2 as None.
    return [None if pd.isna(city) else city for city in column]


@pytest.mark.parametrize("null_file", ["a.parquet", "b.parquet"])
def test_null_typed_column_takes_other_type(null_file, tmp_path, frame, pipeline):
    table = pa.Table.from_pandas(frame, preserve_index=False)
    strings = table.cast(table.schema.set(3, pa.field("city", pa.string())))
    nulls = _with_null_city(strings, 30)
    string_file = "b.parquet" if null_file == "a.parquet" else "a.parquet"
    pq.write_table(nulls, tmp_path / null_file)
    pq.write_table(strings, tmp_path / string_file)
    null_frame = frame.head(30).assign(city=None)
    parts = [null_frame, frame] if null_file == "a.parquet" else [frame, null_frame]
    whole = pd.concat(parts, ignore_index=True)

    source = postfit.read_parquet(tmp_path)
    assert source.schema.field("city").type == pa.string()
    assert _cities(source.read()["city"]) == _cities(whole["city"])
    got = ParallelPostFit(pipeline, block_size=BLOCK_SIZE).predict(source, keep_columns=["city"])
    assert _cities(got["city"]) == _cities(whole["city"])
    assert_array_equal(got["prediction"].to_numpy(), pipeline.predict(whole))


def test_null_typed_column_then_conflict_rejected(tmp_path, frame):
    table = pa.Table.from_pandas(frame, preserve_index=False)
    strings = table.cast(table.schema.set(3, pa.field("city", pa.string())))
    pq.write_table(_with_null_city(strings, 30), tmp_path / "a.parquet")
    pq.write_table(strings, tmp_path / "b.parquet")
    numbers = strings.set_column(3, "city", pa.array(np.zeros(len(strings))))
    pq.write_table(numbers, tmp_path / "c.parquet")
    with pytest.raises(ValueError, match=r"b\.parquet.*c\.parquet.*city: string vs double"):
        postfit.read_parquet(tmp_path).schema  # noqa: B018 - reading the schema runs the check


def test_differing_csv_headers_rejected(tmp_path, frame):
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame[["x1", "id"]].to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ValueError, match="different headers"):
        postfit.read_csv(tmp_path).schema  # noqa: B018 - reading the schema runs the check


def test_missing_path_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        postfit.read_parquet(tmp_path / "nope.parquet")
    with pytest.raises(FileNotFoundError, match="matches"):
        postfit.read_parquet(str(tmp_path / "*.parquet"))


def test_missing_feature_column_rejected(tmp_path, frame, pipeline):
    frame.drop(columns="x2").to_parquet(tmp_path / "a.parquet")
    with pytest.raises(postfit.io.InputError, match=r"missing 1 column.*x2"):
        ParallelPostFit(pipeline).predict(postfit.read_parquet(tmp_path))


def test_missing_keep_column_rejected(table_inputs, pipeline):
    source = postfit.read_parquet(table_inputs["parquet"])
    with pytest.raises(postfit.io.InputError, match="row_id"):
        ParallelPostFit(pipeline).predict(source, keep_columns=["row_id"])


def test_keep_columns_rejected_for_array_output(table_inputs, pipeline, tmp_path):
    source = postfit.read_parquet(table_inputs["parquet"])
    with pytest.raises(postfit.io.InputError, match="cannot hold carried columns"):
        ParallelPostFit(pipeline).predict(source, output=tmp_path / "p.npy", keep_columns=["id"])


def test_lazy_result_rejected_for_files(table_inputs, pipeline):
    source = postfit.read_parquet(table_inputs["parquet"])
    with pytest.raises(ValueError, match="execute=False"):
        ParallelPostFit(pipeline).predict(source, execute=False)


def test_csv_newlines_in_values(tmp_path):
    rows = "".join(f'{i},"line one\nline two {i}"\n' for i in range(200))
    path = tmp_path / "multi.csv"
    path.write_text("x,text\n" + rows)
    model = LogisticRegression().fit(np.arange(10.0).reshape(-1, 1), np.arange(10) % 2)
    clf = ParallelPostFit(model, block_size=16, backend="sequential")

    with pytest.raises(postfit.io.InvalidFileError, match="newlines_in_values=True"):
        clf.predict(postfit.read_csv(path, columns=["x"]))

    source = postfit.read_csv(path, columns=["x"], newlines_in_values=True)
    expected = model.predict(pd.read_csv(path)[["x"]].to_numpy())
    assert_array_equal(clf.predict(source), expected)


def test_empty_parquet_file_only(tmp_path, frame, pipeline):
    frame.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    source = postfit.read_parquet(tmp_path)
    assert source.n_rows == 0
    got = ParallelPostFit(pipeline).predict(source)
    assert got.shape == (0,)
    assert got.dtype == pipeline.classes_.dtype
    assert os.path.exists(tmp_path / "empty.parquet")


# Row groups and the automatic block size ---------------------------------------

GROUP_ROWS = 5_000
N_GROUPS = 8


@pytest.fixture(scope="module")
def grouped_parquet(tmp_path_factory):
    """Eight row groups of 5,000 rows × 20 float64 columns and a binary target."""
    rng = np.random.default_rng(3)
    names = [f"f{i}" for i in range(20)]
    X = rng.normal(size=(GROUP_ROWS * N_GROUPS, 20))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    path = tmp_path_factory.mktemp("grouped") / "data.parquet"
    table = pa.table({**dict(zip(names, X.T, strict=True)), "target": y})
    pq.write_table(table, path, row_group_size=GROUP_ROWS)
    return path, names, X, y


@pytest.mark.parametrize(
    ("budget", "n_blocks"),
    [
        # The budget alone allows 4,369 rows a block, and a row group per
        # worker fits: the run reads whole row groups.
        (32 * 2**20, N_GROUPS),
        # The budget alone allows 1,365 rows: each row group is cut into four
        # equal blocks, not three of 1,365 rows and one of 905.
        (10 * 2**20, 4 * N_GROUPS),
    ],
)
def test_blocks_follow_row_groups(grouped_parquet, budget, n_blocks, tmp_path):
    from sklearn.tree import DecisionTreeClassifier

    path, names, X, y = grouped_parquet
    model = DecisionTreeClassifier(max_depth=6, random_state=0).fit(X, y)
    clf = ParallelPostFit(model, backend="threading", n_jobs=2, memory_budget=budget)
    result = clf.predict_proba(postfit.read_parquet(path, columns=names), output=tmp_path / "o")
    assert result.n_blocks == n_blocks
    written = pd.read_parquet(result.path)
    assert_array_equal(written.to_numpy(), model.predict_proba(X))


def test_score_fit_blocks_follow_row_groups(grouped_parquet, monkeypatch):
    from postfit.io import _parquet

    path, names, X, y = grouped_parquet
    model = LogisticRegression().fit(X, y)
    source = postfit.read_parquet(path, columns=[*names, "target"])
    seen = []
    original = _parquet.ParquetPart.read_table

    def counting(self, columns):
        seen.append((tuple(self.row_groups), self.batch))
        return original(self, columns)

    monkeypatch.setattr(_parquet.ParquetPart, "read_table", counting)
    # The budget alone allows 3,395 rows a block, for scoring and for training.
    clf = ParallelPostFit(model, backend="threading", n_jobs=2, memory_budget=10 * 2**20)
    assert clf.score(source, "target") == model.score(X, y)
    assert sorted(seen) == [((g,), None) for g in range(N_GROUPS)]

    seen.clear()
    from sklearn.linear_model import SGDClassifier

    inc = postfit.Incremental(SGDClassifier(random_state=0), shuffle_blocks=False, max_iter=1)
    inc.set_params(memory_budget=5 * 2**20)
    inc.fit(source, "target", classes=[0, 1])
    # Training holds two blocks, so each row group is cut in two equal halves.
    assert seen == [((g,), (GROUP_ROWS // 2, k)) for g in range(N_GROUPS) for k in range(2)]


@pytest.mark.parametrize("sink", ["memory", "npy"])
def test_user_meta_with_file_source(sink, tmp_path):
    rng = np.random.default_rng(6)
    frame = pd.DataFrame({"x": rng.normal(size=200), "y": rng.normal(size=200)})
    frame.to_parquet(tmp_path / "rows.parquet")
    model = LinearRegression().fit(frame[["x"]], frame["y"])
    clf = ParallelPostFit(model, predict_meta=np.float64, block_size=BLOCK_SIZE)
    source = postfit.read_parquet(tmp_path / "rows.parquet", columns=["x"])

    if sink == "memory":
        got = clf.predict(source)
    else:
        got = np.load(clf.predict(source, output=tmp_path / "out.npy").path)

    assert_allclose(got, model.predict(frame[["x"]]), rtol=1e-12)
