"""Leak check: many back-to-back runs in one process must not grow RSS, descriptors or threads.

After each run the suite collects garbage and records the process's RSS,
open file descriptors and threads, and the RSS of its child processes (loky
workers, which are kept between runs on purpose). After the warm-up runs,
which load libraries and start worker pools, RSS growth is the rise of the
least-squares line through the measured runs, from the first to the last:
a leak grows with the runs, while allocator pools swing RSS up and down by
tens of MiB from one run to the next. Descriptor and thread growth is the
median of the last ``WINDOW`` runs minus the median of the first ``WINDOW``.
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time

import psutil

from .._common import MIB, feature_available, load_average
from .._data import FEATURES, make_rows

FULL = {"runs": 50, "warmup": 5, "rows": 200_000}
QUICK = {"runs": 10, "warmup": 3, "rows": 20_000}
BACKENDS = ("sequential", "threading", "loky", "auto")
#: RSS growth below this is taken as allocator noise rather than a leak.
RSS_TOLERANCE_MIB = 10.0
#: Runs per median at each end of the series (fewer when the series is short).
WINDOW = 10
PLOT_NAME = "benchmarks_leak.png"


def snapshot() -> dict:
    """Return this process's RSS (MiB), descriptors and threads, and its children's RSS."""
    process = psutil.Process()
    children = process.children(recursive=True)
    children_rss = 0
    for child in children:
        try:
            children_rss += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return {
        "rss_mib": process.memory_info().rss / MIB,
        "fds": process.num_fds(),
        "threads": process.num_threads(),
        "children": len(children),
        "children_rss_mib": children_rss / MIB,
    }


def _fitted_model():
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_rows(0, 20_000)
    return RandomForestClassifier(n_estimators=20, max_depth=10, random_state=0).fit(X, y)


def _runners(model, X, folder):
    """Return the run kinds to repeat, by name: each scores X once."""
    from postfit import ParallelPostFit

    runners = {
        f"predict_proba, backend={backend!r}": (
            lambda backend=backend: ParallelPostFit(model, backend=backend).predict_proba(X)
        )
        for backend in BACKENDS
    }
    if feature_available(_check_io) is None:
        import pandas as pd

        import postfit

        path = os.path.join(folder, "input.parquet")
        pd.DataFrame(X, columns=FEATURES).to_parquet(path, row_group_size=max(1, len(X) // 8))
        counter = iter(range(10**6))

        def parquet_to_parquet():
            output = os.path.join(folder, f"out-{next(counter)}")
            ParallelPostFit(model).predict_proba(postfit.read_parquet(path), output=output)

        runners["read_parquet to output= Parquet, backend='auto'"] = parquet_to_parquet
    return runners


def _check_io():
    import postfit

    postfit.read_parquet  # noqa: B018 - raises AttributeError until postfit.io exists


def _trend_rise(values: list[float]) -> float:
    """Return how much the least-squares line through ``values`` rises from first to last."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    covariance = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    variance = sum((i - mean_x) ** 2 for i in range(n))
    return covariance / variance * (n - 1)


def _growth(points: list[dict], warmup: int) -> dict:
    """Return the growth of each measure over the runs after warm-up (see the module doc)."""
    measured = points[warmup:]
    window = max(1, min(WINDOW, len(measured) // 2))
    first, last = measured[:window], measured[-window:]
    growth = {}
    for key in measured[0]:
        if key.endswith("_mib"):
            growth[key] = _trend_rise([p[key] for p in measured])
        else:
            growth[key] = statistics.median(p[key] for p in last) - statistics.median(
                p[key] for p in first
            )
    return growth


def summarize(params: dict, series: dict, seconds: dict) -> tuple[list, list]:
    """Return the page's table and targets from the per-run snapshots of each run kind."""
    table, targets = [], []
    for name, points in series.items():
        growth = _growth(points, params["warmup"])
        end = points[-1]
        table.append(
            {
                "runs of": name,
                "seconds (all runs)": seconds.get(name),
                "RSS at end (MiB)": round(end["rss_mib"], 1),
                "RSS growth (MiB)": round(growth["rss_mib"], 1),
                "children RSS growth (MiB)": round(growth["children_rss_mib"], 1),
                "descriptors at end": end["fds"],
                "descriptor growth": growth["fds"],
                "threads at end": end["threads"],
                "thread growth": growth["threads"],
                "child processes at end": end["children"],
            }
        )
        ok = growth["rss_mib"] <= RSS_TOLERANCE_MIB and growth["fds"] <= 0
        ok = ok and growth["threads"] <= 0 and growth["children_rss_mib"] <= RSS_TOLERANCE_MIB
        targets.append(
            {
                "name": f"no growth over {params['runs']} runs of {name}",
                "measured": (
                    f"RSS {growth['rss_mib']:+.1f} MiB, children "
                    f"{growth['children_rss_mib']:+.1f} MiB, descriptors "
                    f"{growth['fds']:+g}, threads {growth['threads']:+g}"
                ),
                "met": ok,
            }
        )
    return table, targets


def plot_series(series: dict, path) -> None:
    """Draw the RSS after each run, one line per run kind, so a step and a trend look different."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, points in series.items():
        ax.plot(range(1, len(points) + 1), [p["rss_mib"] for p in points], label=name)
    ax.set_xlabel("run")
    ax.set_ylabel("RSS after the run (MiB)")
    ax.set_title("Back-to-back runs in one process")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def description(params: dict) -> str:
    return (
        f"{params['runs']} back-to-back runs of each kind in one process, scoring "
        f"{params['rows']:,} rows × {len(FEATURES)} features with a 20-tree "
        f"RandomForestClassifier. After {params['warmup']} warm-up runs, RSS growth is the "
        "rise of the least-squares line through the RSS after each run, from the first run "
        "to the last, so that a steady rise counts and an allocator's swings between runs "
        f"do not. Descriptor and thread growth is the median of the last {WINDOW} runs minus "
        f"the median of the first {WINDOW}. RSS growth up to {RSS_TOLERANCE_MIB:g} MiB "
        "counts as allocator noise. "
        f"![RSS after each run]({PLOT_NAME})"
    )


def run(quick: bool) -> dict:
    params = QUICK if quick else FULL
    load_before = load_average()
    model = _fitted_model()
    X, _ = make_rows(1_000_000, 1_000_000 + params["rows"], seed=5)
    series, seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="postfit-leak-") as folder:
        for name, runner in _runners(model, X, folder).items():
            print(f"[leak] {params['runs']} runs of {name}", flush=True)
            points = []
            start = time.perf_counter()
            for _ in range(params["runs"]):
                runner()
                gc.collect()
                points.append(snapshot())
            seconds[name] = round(time.perf_counter() - start, 1)
            series[name] = points
    table, targets = summarize(params, series, seconds)
    return {
        "status": "ok",
        "params": params,
        "description": description(params),
        "load_before": load_before,
        "load_after": load_average(),
        "table": table,
        "targets": targets,
        "series": series,
        "seconds": seconds,
    }
