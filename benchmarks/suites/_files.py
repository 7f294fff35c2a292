"""Shared pieces of the suites that read a Parquet dataset: data, model, variants.

Variants run in child processes (see ``benchmarks._common.run_child``) so
that each one's peak memory is its own. The functions named ``variant_*`` are
the children's entry points and take only JSON-serialisable arguments.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np

from .._common import DATA_DIR, MIB, model_nbytes
from .._data import FEATURES, TARGET, make_scoring_model, write_parquet_dataset

#: Rows of the shared Parquet dataset: full size, and for ``--quick``.
FULL_ROWS = 20_000_000
QUICK_ROWS = 2_000_000


def dataset(quick: bool) -> Path:
    """Write the shared Parquet dataset if it is not there yet and return its folder."""
    rows = QUICK_ROWS if quick else FULL_ROWS
    return write_parquet_dataset(DATA_DIR / f"table-{rows}", rows)


def model_path() -> Path:
    """Fit and pickle the scoring model once and return the pickle's path."""
    path = DATA_DIR / "hist_gradient_boosting.pkl"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        model = make_scoring_model()
        path.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def load_model(path: str):
    with open(path, "rb") as f:
        return pickle.load(f)


def model_mib(path: Path) -> float:
    return round(model_nbytes(load_model(str(path))) / MIB, 1)


def summarize(output) -> dict:
    """Return a few numbers that identify an output, to compare variants without storing it."""
    output = np.asarray(output)
    column = output[:, -1] if output.ndim == 2 else output
    return {"rows": int(output.shape[0]), "checksum": float(np.sum(column, dtype=np.float64))}


def read_features(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the whole dataset into memory: X as a C-ordered float64 array, and y.

    Files are read one at a time into preallocated arrays, so the peak is the
    arrays plus one file rather than two copies of the whole table.
    """
    import pyarrow.parquet as pq

    files = sorted(Path(folder).glob("*.parquet"))
    n_rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    X = np.empty((n_rows, len(FEATURES)))
    y = np.empty(n_rows, dtype=np.int8)
    start = 0
    for path in files:
        table = pq.read_table(path, columns=[*FEATURES, TARGET])
        stop = start + table.num_rows
        for i, name in enumerate(FEATURES):
            X[start:stop, i] = table.column(name).to_numpy()
        y[start:stop] = table.column(TARGET).to_numpy()
        start = stop
    return X, y


# Child entry points --------------------------------------------------------------


def variant_baseline(model: str) -> dict:
    """Import the libraries and load the model, and nothing else: the floor of every variant."""
    import postfit  # noqa: F401

    load_model(model)
    return {"seconds": 0.0}


def variant_postfit_in_memory(folder: str, model: str) -> dict:
    """Read the dataset into memory first, then time postfit on the array."""
    from postfit import ParallelPostFit

    estimator = load_model(model)
    start = time.perf_counter()
    X, _ = read_features(folder)
    read_seconds = time.perf_counter() - start
    start = time.perf_counter()
    output = ParallelPostFit(estimator).predict_proba(X)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "read_seconds": read_seconds, **summarize(output)}


def variant_postfit_source(folder: str, model: str, budget: str, output: str | None) -> dict:
    """Score the Parquet files through ``postfit.read_parquet`` under a memory budget."""
    import postfit
    from postfit import ParallelPostFit

    estimator = load_model(model)
    source = postfit.read_parquet(folder, columns=FEATURES)
    wrapper = ParallelPostFit(estimator, memory_budget=budget)
    start = time.perf_counter()
    if output is None:
        result = wrapper.predict_proba(source)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, **summarize(result)}
    wrapper.predict_proba(source, output=output)
    seconds = time.perf_counter() - start
    import pyarrow.parquet as pq

    written = pq.read_table(output)
    last = written.column(written.num_columns - 1).to_numpy()
    return {
        "seconds": seconds,
        "rows": int(written.num_rows),
        "checksum": float(np.sum(last, dtype=np.float64)),
    }


def variant_dask_ml(folder: str, model: str) -> dict:
    """Score with dask-ml's ParallelPostFit over ``dask.dataframe.read_parquet``."""
    import dask.dataframe as dd
    from dask_ml.wrappers import ParallelPostFit as DaskMLParallelPostFit

    estimator = load_model(model)
    start = time.perf_counter()
    frame = dd.read_parquet(folder, columns=FEATURES)
    result = DaskMLParallelPostFit(estimator).predict_proba(frame).compute()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, **summarize(result)}
