"""Block size, worker count and memory budget for a run.

The constants below tune performance. They are starting values set by hand
for a 2-core machine, not the result of a sweep: ``benchmarks/run.py`` plots
throughput against block size (``docs/benchmarks.md``), but the thresholds
of the automatic backend have not been tuned by a benchmark.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._blocks import SparseRows, is_arrow_table, is_polars

logger = logging.getLogger(__name__)

__all__ = [
    "Plan",
    "choose_block_size",
    "fit_to_unit",
    "estimate_row_nbytes",
    "parse_memory_budget",
    "validate_block_size",
]

#: Minimum work per block, which amortises scheduling (an estimated 50 µs a
#: block for threads) while leaving several blocks per worker for balance.
TARGET_BLOCK_SECONDS = 0.1
#: Largest input block in bytes, which bounds the temporaries of one block.
MAX_BLOCK_BYTES = 32 * 2**20
#: Blocks per worker at least, so that a slow block does not leave a core idle.
MIN_BLOCKS_PER_WORKER = 4
#: Memory a block needs, as a multiple of its input size: the input slice,
#: the output and the estimator's temporaries.
BLOCK_MEMORY_FACTOR = 4
#: The automatic backend calls the estimator once, without measuring, on
#: inputs of at most this many rows, where most estimators take milliseconds.
#: NOTE: a slow estimator (milliseconds a row) gets no parallelism here.
DIRECT_MAX_ROWS = 4096
#: ... and finishes in the calling thread, with the estimator's own threads,
#: when the measured single-thread work left is below this many seconds. Split
#: over two threads, a linear model's predict_proba ran 1.6 to 8 times slower
#: than one call on 10,000 to 300,000 rows (3.5 to 12 ms of work), and as fast
#: on 1,000,000 rows.
DIRECT_MAX_SECONDS = 0.05
#: Estimated single-thread work below which processes do not pay for their
#: start-up and for sending the model.
PROCESS_MIN_SECONDS = 2.0
#: The first probe of the automatic backend takes this share (1/N) of the
#: rows, at least 128, so that cheap models are timed on enough rows.
PROBE_FIRST_SHARE = 512
#: Speed-up of two threads over one above which threads count as scaling,
#: and are chosen over processes.
THREADS_SCALE_MIN_SPEEDUP = 1.4
#: Speed-up of two threads over one above which threads are chosen over one
#: thread, when the work is too short for processes. A linear model measured
#: 1.42 to 1.48 on short probe blocks and ran 1.6 to 1.9 times faster on two
#: threads, so a threshold of 1.4 had let noise decide.
THREADS_GAIN_MIN_SPEEDUP = 1.15
#: How many times a speed-up below THREADS_SCALE_MIN_SPEEDUP is measured
#: before it is kept: by probes, or by whole threaded runs when the work is too
#: short for processes. A process's first threaded run pays its threads' first
#: page faults: a linear model's took 69 to 85 ms on 2,000,000 rows, its third
#: 40 to 45 ms.
SPEEDUP_PROBE_CHECKS = 2
SPEEDUP_THREADED_CHECKS = 3
#: A probe block is timed until it takes at least this long.
PROBE_MIN_SECONDS = 0.01
#: Memory budget when none is given: this share of available memory ...
AUTO_BUDGET_SHARE = 0.25
#: ... within these bounds.
AUTO_BUDGET_MIN = 256 * 2**20
AUTO_BUDGET_MAX = 4 * 2**30

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


@dataclass
class Plan:
    """The result of planning: backend, workers and block sizes of a run, logged at DEBUG."""

    backend: str
    n_workers: int
    block_size: int
    max_in_flight: int
    inner_threads: int | None
    reason: str = ""


def is_auto_budget(value) -> bool:
    """Return whether ``value`` requests the automatic memory budget."""
    if value is None or value == "auto":
        return True
    return isinstance(value, str) and value.strip().lower() == "auto"


#: Budgets below this many bytes are most likely a missing unit ("512" for
#: "512MiB"): they cut blocks of a few rows, and a file output writes one
#: part per block.
SMALL_BUDGET = 2**20


def check_memory_budget(value) -> None:
    """Raise ValueError for an invalid memory budget, without measuring memory for "auto".

    A budget below ``SMALL_BUDGET`` gives a :class:`~postfit.exceptions.PostfitWarning`.
    """
    if is_auto_budget(value):
        return
    budget = parse_memory_budget(value)
    if budget < SMALL_BUDGET:
        from .exceptions import PostfitWarning

        number = str(value).strip()
        example = f"'{number}MiB'" if number.isdigit() else "'512MiB'"
        warnings.warn(
            f"memory_budget={value!r} is {budget} bytes, which cuts blocks of a few rows "
            "(and a file output writes a part per block). Pass a larger size with a unit, "
            f"such as {example}, if that is what was meant.",
            PostfitWarning,
            stacklevel=4,
        )


def parse_memory_budget(value) -> int:
    """Return the memory budget in bytes.

    Parameters
    ----------
    value : int, str or None
        Bytes as an int, a string with a unit such as ``"512MiB"`` or
        ``"2GB"``, or ``None`` / ``"auto"`` for a quarter of the available
        memory, between 256 MiB and 4 GiB.

    Examples
    --------
    >>> parse_memory_budget("1GiB")
    1073741824
    >>> parse_memory_budget(2_000_000)
    2000000
    """
    if is_auto_budget(value):
        import psutil

        available = psutil.virtual_memory().available
        return int(min(max(available * AUTO_BUDGET_SHARE, AUTO_BUDGET_MIN), AUTO_BUDGET_MAX))
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"memory_budget must be positive, got {value}.")
        return int(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        unit = match.group(2).lower() if match else None
        if match and unit in _UNITS and int(float(match.group(1)) * _UNITS[unit]) > 0:
            return int(float(match.group(1)) * _UNITS[unit])
    raise ValueError(
        f"Invalid memory_budget {value!r}. Pass a positive whole number of bytes, a size "
        "with a unit such as '512MiB' or '2GB', or 'auto'."
    )


def validate_block_size(value):
    """Return ``value`` when it is ``"auto"``, None or a positive int, else raise."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return "auto"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0:
        return int(value)
    raise ValueError(
        f"Invalid block_size {value!r}. Pass a positive whole number of rows or 'auto'."
    )


def estimate_row_nbytes(X) -> int:
    """Estimate the bytes one row of X takes in memory (at least 1)."""
    if isinstance(X, SparseRows):
        X = X.csr
    rows = _rows(X)
    if isinstance(X, np.ndarray):
        width = math.prod(X.shape[1:])
        itemsize = 64 if X.dtype.hasobject else X.dtype.itemsize
        return max(1, width * itemsize)
    if rows == 0:
        return 1
    if sp.issparse(X):
        nbytes = X.data.nbytes + getattr(X, "indices", np.empty(0)).nbytes
        return max(1, nbytes // rows)
    if isinstance(X, (pd.DataFrame, pd.Series)):
        sample = X.iloc[: min(rows, 100)]
        # Series.memory_usage returns an int and DataFrame.memory_usage a Series.
        nbytes = int(np.sum(sample.memory_usage(deep=True, index=False)))
        return max(1, nbytes // len(sample))
    if is_arrow_table(X):
        return max(1, X.nbytes // rows)
    if is_polars(X):
        return max(1, int(X.estimated_size()) // rows)
    return 100


def _rows(X):
    if is_arrow_table(X):
        return X.num_rows
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape else len(X)


def choose_block_size(
    n_rows: int,
    row_nbytes: int,
    n_workers: int,
    memory_budget: int,
    seconds_per_row: float | None = None,
    seconds_per_call: float = 0.0,
    calls_overlap: bool = True,
) -> int:
    """Return the rows per block that keeps work, memory and balance in range.

    The smallest of: the work per block that balances the fixed cost of
    calls against the wait for the last block (when measured; see below),
    ``MAX_BLOCK_BYTES`` of input, the memory budget shared by the blocks in
    flight, and ``MIN_BLOCKS_PER_WORKER`` blocks per worker. The rows are
    then cut into equal blocks, a multiple of ``n_workers`` of them where
    the rows allow (9 rows in 6 blocks are 5 blocks of 2), so that the
    workers finish together.

    With ``W`` seconds of work, a fixed cost ``c`` per call and ``w``
    workers, blocks of ``b`` seconds cost ``W * c / (b * w)`` in calls and
    up to about ``b / 2`` waiting for the last one; ``b = sqrt(2 * W * c / w)``
    minimises the sum. Threads pay much of a call's fixed cost one at a
    time, holding the GIL (``calls_overlap=False``): the calls then cost
    ``W * c / b`` and ``b = sqrt(2 * W * c)``. A 50-tree forest spent 9 ms
    a call that way, and ran 7% slower on the blocks of the first formula. Blocks
    take at least ``TARGET_BLOCK_SECONDS``.

    Examples
    --------
    >>> choose_block_size(1_000_000, 160, n_workers=2, memory_budget=2**30)
    125000
    """
    limits = [
        MAX_BLOCK_BYTES // row_nbytes,
        memory_budget // (2 * n_workers * BLOCK_MEMORY_FACTOR * row_nbytes),
        math.ceil(n_rows / (MIN_BLOCKS_PER_WORKER * n_workers)),
    ]
    if seconds_per_row:
        work = n_rows * seconds_per_row
        sharing = n_workers if calls_overlap else 1
        balanced = math.sqrt(2 * work * max(seconds_per_call, 0.0) / sharing)
        target = max(TARGET_BLOCK_SECONDS, balanced)
        limits.append(int(target / seconds_per_row))
    size = max(1, min(limits))
    n_blocks = -(-n_rows // size)
    # Blocks may come out up to 1% larger than the limits, so that a limit
    # just below n_rows / k makes k blocks rather than k + 1.
    fewer = max(1, math.ceil(0.99 * n_rows / size))
    if -(-n_rows // fewer) <= 1.01 * size:
        n_blocks = fewer
    if n_blocks > 1:
        n_blocks = -(-n_blocks // n_workers) * n_workers
        size = max(1, -(-n_rows // n_blocks))
    return size


#: A unit (row group) becomes one block only when it is at most this many
#: times the planned block. An estimator's temporaries can cost more than
#: decoding again: a one-hot pipeline took 4.4 s on 131,072 rows at once and
#: 2.3 s in two halves, when its 126 MB one-hot output came from fresh pages.
UNIT_MAX_GROWTH = 1.5


def fit_to_unit(
    block_rows: int,
    unit_rows: int | None,
    n_units: int,
    row_nbytes: int,
    n_workers: int,
    memory_budget: int,
) -> int:
    """Return ``block_rows`` fitted to the rows a source reads at once, such as a row group.

    A source that decodes a whole unit to read any of its rows reads a unit
    cut into ``m`` blocks ``m`` times. So a unit larger than ``block_rows``
    becomes one block when it is at most ``UNIT_MAX_GROWTH`` times
    ``block_rows``, one block per worker fits the memory budget, and there
    are at least two units per worker. Otherwise it is cut into equal
    blocks, the fewest that keep each within ``block_rows``.

    Examples
    --------
    >>> fit_to_unit(100_000, 131_072, 80, 400, n_workers=2, memory_budget=2**30)
    131072
    >>> fit_to_unit(84_000, 250_000, 80, 400, n_workers=2, memory_budget=2**30)
    83334
    """
    if not unit_rows or unit_rows <= block_rows:
        return block_rows
    per_worker = unit_rows * row_nbytes * BLOCK_MEMORY_FACTOR
    fits = per_worker * n_workers <= memory_budget and n_units >= 2 * n_workers
    if fits and unit_rows <= UNIT_MAX_GROWTH * block_rows:
        return unit_rows
    parts = math.ceil(unit_rows / block_rows)
    return math.ceil(unit_rows / parts)


def max_in_flight(block_size: int, row_nbytes: int, n_workers: int, memory_budget: int) -> int:
    """Return how many blocks may be submitted and not yet collected at once."""
    per_block = max(1, block_size * row_nbytes * BLOCK_MEMORY_FACTOR)
    return max(1, min(2 * n_workers, memory_budget // per_block))
