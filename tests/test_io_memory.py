"""Peak memory of a file run stays within the memory budget, measured in a fresh process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

N_COLUMNS = 16
ROWS_PER_GROUP = 100_000
N_GROUPS = 15  # 1.5 million rows of 16 float64: 192 MB once in memory
BUDGET = 32 * 2**20
# Allocator and library caches that grow during the first real run; measured
# at about 10 MiB with pyarrow 26 and pandas 3.1 on Linux.
SLACK = 24 * 2**20

SCRIPT = """
import resource, sys
import numpy as np
from sklearn.linear_model import LinearRegression
import postfit

data, small, output, budget = sys.argv[1:5]
rng = np.random.default_rng(0)
model = LinearRegression().fit(rng.normal(size=(200, 16)), rng.normal(size=200))
wrapper = postfit.ParallelPostFit(model, backend="sequential", memory_budget=int(budget))
# Import and warm every module of the run on a small file before measuring.
wrapper.predict(postfit.read_parquet(small), output=output + "-warm")

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
result = wrapper.predict(postfit.read_parquet(data), output=output)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(result.n_rows, before, after)
"""


@pytest.mark.slow
def test_peak_memory_within_budget(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(N_COLUMNS)]
    schema = pa.schema([(name, pa.float64()) for name in names])
    with pq.ParquetWriter(tmp_path / "data.parquet", schema) as writer:
        for _ in range(N_GROUPS):
            block = rng.normal(size=(ROWS_PER_GROUP, N_COLUMNS))
            writer.write_table(pa.table(dict(zip(names, block.T, strict=True)), schema=schema))
    small = pa.table({name: rng.normal(size=1000) for name in names})
    pq.write_table(small, tmp_path / "small.parquet")

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            tmp_path / "data.parquet",
            tmp_path / "small.parquet",
            tmp_path / "out",
            str(BUDGET),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    rows, before, after = (int(v) for v in done.stdout.split())
    data_bytes = N_GROUPS * ROWS_PER_GROUP * N_COLUMNS * 8
    assert rows == N_GROUPS * ROWS_PER_GROUP
    assert data_bytes > 5 * BUDGET
    assert after - before < BUDGET + SLACK, (
        f"peak RSS grew by {(after - before) / 2**20:.1f} MiB during the run, "
        f"over the {BUDGET / 2**20:.0f} MiB budget plus {SLACK / 2**20:.0f} MiB slack"
    )
