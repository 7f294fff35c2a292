"""Synthetic data and the models the suites score.

Every table is drawn from one fixed distribution: 20 standard normal
features and a binary target from a fixed linear rule plus noise, so that a
model trained on one sample scores any other sample meaningfully. Rows are
generated in chunks seeded by their position, so a 20-million-row table is
written without holding it in memory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

N_FEATURES = 20
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
TARGET = "target"
#: Rows generated per chunk. Each chunk has its own seed.
CHUNK_ROWS = 250_000
#: Layout of the Parquet datasets: rows per file and per row group.
ROWS_PER_FILE = 2_000_000
ROW_GROUP_ROWS = 250_000
#: Bytes of one row in memory: the float64 features and the int8 target.
ROW_NBYTES = 8 * N_FEATURES + 1
_COEF = np.linspace(-1.0, 1.0, N_FEATURES)


def make_rows(start: int, stop: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return rows ``start:stop`` of the table with ``seed``: X (float64) and y (int8)."""
    parts_x, parts_y = [], []
    first_chunk, last_chunk = start // CHUNK_ROWS, (stop - 1) // CHUNK_ROWS
    for chunk in range(first_chunk, last_chunk + 1):
        rng = np.random.default_rng([seed, chunk])
        X = rng.standard_normal((CHUNK_ROWS, N_FEATURES))
        noise = rng.standard_normal(CHUNK_ROWS)
        lo = max(start - chunk * CHUNK_ROWS, 0)
        hi = min(stop - chunk * CHUNK_ROWS, CHUNK_ROWS)
        parts_x.append(X[lo:hi])
        parts_y.append(((X[lo:hi] @ _COEF + noise[lo:hi]) > 0).astype(np.int8))
    return np.concatenate(parts_x), np.concatenate(parts_y)


def write_parquet_dataset(
    folder: Path,
    n_rows: int,
    rows_per_file: int = ROWS_PER_FILE,
    row_group_rows: int = ROW_GROUP_ROWS,
    seed: int = 1,
) -> Path:
    """Write ``n_rows`` rows as Parquet files of ``rows_per_file`` rows in row groups.

    The folder is reused when a ``_complete.json`` in it records the same
    parameters, so reruns skip the minutes of writing.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    params = {
        "n_rows": n_rows,
        "rows_per_file": rows_per_file,
        "row_group_rows": row_group_rows,
        "seed": seed,
    }
    marker = folder / "_complete.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return folder
    if folder.exists():
        for old in folder.glob("*.parquet"):
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(name, pa.float64()) for name in FEATURES] + [(TARGET, pa.int8())])
    n_files = math.ceil(n_rows / rows_per_file)
    for file_index in range(n_files):
        start = file_index * rows_per_file
        stop = min(n_rows, start + rows_per_file)
        path = folder / f"part-{file_index:04d}.parquet"
        with pq.ParquetWriter(path, schema) as writer:
            for lo in range(start, stop, row_group_rows):
                hi = min(stop, lo + row_group_rows)
                X, y = make_rows(lo, hi, seed)
                columns = [pa.array(X[:, i]) for i in range(N_FEATURES)] + [pa.array(y)]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
    marker.write_text(json.dumps(params))
    return folder


def layout_text() -> str:
    """Describe the Parquet layout for the page: files, row groups and a row group's size."""
    group_mib = ROW_GROUP_ROWS * ROW_NBYTES / 2**20
    return (
        f"files of {ROWS_PER_FILE:,} rows in row groups of {ROW_GROUP_ROWS:,} rows "
        f"({group_mib:.0f} MiB each once decoded)"
    )


def dataset_nbytes(folder: Path) -> int:
    """Return the bytes of the Parquet files in ``folder`` on disk."""
    return sum(path.stat().st_size for path in folder.glob("*.parquet"))


# Models ----------------------------------------------------------------------


def row_summaries(X):
    """Return the sum, max and min of each row, computed one row at a time in Python.

    It stands in for user code that holds the GIL: a FunctionTransformer whose
    work is pure Python. It is defined at module level so that process
    workers can unpickle it.
    """
    rows = np.asarray(X).tolist()
    return np.array([(math.fsum(row), max(row), min(row)) for row in rows])


def make_estimators(n_train: int = 20_000, seed: int = 0) -> dict:
    """Return the fitted classifiers of the in-memory suite, by name."""
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = make_rows(0, n_train, seed)
    estimators = {
        "HistGradientBoosting": HistGradientBoostingClassifier(max_iter=100, random_state=0),
        "GradientBoosting": GradientBoostingClassifier(n_estimators=100, random_state=0),
        "RandomForest": RandomForestClassifier(
            n_estimators=50, max_depth=12, n_jobs=1, random_state=0
        ),
        "LogisticRegression": LogisticRegression(),
        # A small training set keeps brute-force k-NN over millions of rows in minutes.
        "KNeighbors": KNeighborsClassifier(n_neighbors=5),
        "FunctionTransformer pipeline": make_pipeline(
            FunctionTransformer(row_summaries), LogisticRegression()
        ),
    }
    fitted = {}
    for name, estimator in estimators.items():
        n = 2_000 if name == "KNeighbors" else n_train
        fitted[name] = estimator.fit(X[:n], y[:n])
    return fitted


def make_scoring_model(n_train: int = 100_000, seed: int = 0):
    """Return the HistGradientBoostingClassifier that the file suites score with."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = make_rows(0, n_train, seed)
    return HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(X, y)
