"""In-memory scoring: postfit's backends against the plain estimator, joblib and dask-ml.

Each estimator's ``predict_proba`` runs on the same rows through every
variant below. Times are the best of ``repeats`` runs, or of as many runs as
fill ``MIN_SECONDS`` for fast variants. Each run's output is checked against
the plain estimator's and dropped before the next run.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from .._common import MAX_RUNS, load_average, time_call
from .._data import N_FEATURES, make_estimators, make_rows

PLOT_NAME = "benchmarks_block_size.png"
POSTFIT_BACKENDS = ("auto", "threading", "loky", "sequential")
#: Block sizes (rows) and worker counts of the throughput plot.
SWEEP_BLOCK_SIZES = (2_000, 10_000, 50_000, 200_000)
SWEEP_WORKERS = (1, 2)
#: The estimators of the plot, each with the postfit backend that suits it.
SWEEP_ESTIMATORS = {
    "HistGradientBoosting": "threading",
    "RandomForest": "threading",
    "FunctionTransformer pipeline": "loky",
}

#: Variants faster than this run again until they have run this long (``time_call``).
MIN_SECONDS = 1.0
#: Rounds of the targets' variants last at least this long in all (``time_targets``).
TARGET_MIN_SECONDS = 3.0
FULL = {
    "rows": 2_000_000,
    "repeats": 3,
    "target_rounds": 3,
    "small_repeats": 1000,
    "medium_rows": 100_000,
    "medium_repeats": 20,
    "sweep_rows": 400_000,
}
QUICK = {
    "rows": 100_000,
    "repeats": 1,
    "target_rounds": 1,
    "small_repeats": 20,
    "medium_rows": 20_000,
    "medium_repeats": 3,
    "sweep_rows": 50_000,
}


def _chunks(n_rows, n_chunks):
    bounds = np.linspace(0, n_rows, n_chunks + 1).astype(int)
    return [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]


def variants(estimator, X):
    """Return the ways of computing ``estimator.predict_proba(X)``, by name."""
    import joblib

    from postfit import ParallelPostFit

    n_cores = joblib.cpu_count()

    def plain_one_thread():
        with threadpool_limits(1):
            return estimator.predict_proba(X)

    def joblib_loop():
        # What a user writes by hand: joblib's default (process) backend over
        # four chunks per core, then one concatenation.
        parts = joblib.Parallel(n_jobs=-1)(
            joblib.delayed(estimator.predict_proba)(X[rows])
            for rows in _chunks(len(X), 4 * n_cores)
        )
        return np.concatenate(parts)

    def dask_ml():
        import dask.array as da
        from dask_ml.wrappers import ParallelPostFit as DaskMLParallelPostFit

        chunk_rows = max(1, len(X) // (4 * n_cores))
        lazy = DaskMLParallelPostFit(estimator).predict_proba(
            da.from_array(X, chunks=(chunk_rows, X.shape[1]))
        )
        return lazy.compute()

    result = {
        "plain, default threads": lambda: estimator.predict_proba(X),
        "plain, one thread": plain_one_thread,
        "joblib chunk loop": joblib_loop,
        "dask-ml ParallelPostFit": dask_ml,
    }
    for backend in POSTFIT_BACKENDS:
        wrapper = ParallelPostFit(estimator, backend=backend)
        result[f"postfit {backend}"] = lambda wrapper=wrapper: wrapper.predict_proba(X)
    return result


def _same_output(output, want) -> bool:
    """Return whether ``output`` has the shape of ``want`` and its values to ``rtol=1e-12``."""
    return output.shape == want.shape and np.allclose(output, want, rtol=1e-12)


def time_variants(estimators, X, repeats):
    """Time every variant of every estimator and check its output against the plain one.

    Variants run one at a time across all estimators, in the order of
    ``variants``, so that the tools compared run before postfit's own
    backends and cannot be disturbed by what those leave in the process.
    """
    expected = {name: est.predict_proba(X) for name, est in estimators.items()}
    funcs = {name: variants(est, X) for name, est in estimators.items()}
    times = {name: {} for name in estimators}
    for variant in next(iter(funcs.values())):
        for name in estimators:
            func = funcs[name][variant]
            matches = []

            def check(output, want=expected[name], matches=matches):
                matches.append(_same_output(output, want))

            try:
                # dask-ml's run left OpenBLAS at one thread in this process
                # (dask-ml 2025.1.0), which slowed every variant after it.
                # The context puts the thread settings back after each variant.
                with threadpool_limits(limits=None):
                    timing = time_call(func, repeats, check, min_seconds=MIN_SECONDS)
            except Exception as exc:  # recorded on the page instead of stopping the suite
                times[name][variant] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                print(f"  {name:30s} {variant:26s} failed: {exc}", flush=True)
                continue
            same = all(matches)
            timing["same_output"] = bool(same)
            times[name][variant] = timing
            print(f"  {name:30s} {variant:26s} {timing['best']:8.3f} s  same={same}", flush=True)
    return times


#: The variants that the targets compare, timed in alternating rounds by
#: ``time_targets``. OpenBLAS threads spin for a while after a call: two
#: threads ran a linear model 1.0 to 1.1 times as fast as one within 0.05 s
#: of a multi-threaded BLAS call, and about 2 times as fast after 0.2 s. In
#: this order, forward or reversed, only the one-thread call follows the
#: multi-threaded one. A pause would not do: after 0.3 s asleep, one call
#: in twelve took twice as long (142 against 72 ms).
TARGET_VARIANTS = ("plain, default threads", "plain, one thread", "postfit auto")


def time_targets(estimators, X, rounds, min_seconds):
    """Time the variants of the targets in alternating rounds and return per-round ratios.

    ``time_variants`` times one variant across all estimators before the
    next, so two columns can be minutes apart. This machine's speed drifted
    by 10% within minutes: LogisticRegression's one-thread time read 67 ms
    in one run of the suite and 72 to 84 ms in a loop started minutes
    later. Here each round times the three variants of one
    estimator back to back, in reversed order every other round, and the
    ratio of two variants is the median of their ratios within rounds.
    Rounds repeat until ``rounds`` have run and ``min_seconds`` have passed
    (at most ``MAX_RUNS``). Outputs are checked as in ``time_variants``.
    """
    result = {}
    for name, estimator in estimators.items():
        funcs = {
            key: func for key, func in variants(estimator, X).items() if key in TARGET_VARIANTS
        }
        seconds = {key: [] for key in TARGET_VARIANTS}
        first_outputs = {}
        spent = 0.0
        count = 0
        while count < rounds or (spent < min_seconds and count < MAX_RUNS):
            order = TARGET_VARIANTS if count % 2 == 0 else TARGET_VARIANTS[::-1]
            for key in order:
                with threadpool_limits(limits=None):
                    start = time.perf_counter()
                    output = funcs[key]()
                    elapsed = time.perf_counter() - start
                seconds[key].append(elapsed)
                spent += elapsed
                if count == 0:
                    first_outputs[key] = output
                del output
            count += 1
        want = first_outputs.pop("plain, default threads")
        same = all(_same_output(output, want) for output in first_outputs.values())
        del first_outputs, want
        auto = seconds["postfit auto"]
        result[name] = {
            "rounds": count,
            "seconds": seconds,
            "same_output": bool(same),
            "over_one_thread": statistics.median(
                one / mine for one, mine in zip(seconds["plain, one thread"], auto, strict=True)
            ),
            "over_default": statistics.median(
                plain / mine
                for plain, mine in zip(seconds["plain, default threads"], auto, strict=True)
            ),
        }
        print(
            f"  {name:30s} {count} rounds: auto over one thread "
            f"{result[name]['over_one_thread']:.2f}, over default threads "
            f"{result[name]['over_default']:.2f}",
            flush=True,
        )
    return result


def check_joblib_after_postfit() -> str | None:
    """Return the error of a small ``joblib.Parallel`` call made after postfit's runs, if any.

    A user's own joblib code (or scikit-learn's ``n_jobs``) must keep working
    in a process where postfit ran.
    """
    import joblib

    try:
        joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(4))
    except Exception as exc:  # reported on the page
        return f"{type(exc).__name__}: {exc}"
    return None


def time_small_input(estimators, repeats, n_rows=1_000):
    """Return the median time of plain and postfit ``predict_proba`` on a small input.

    Calls alternate between the two so that drifts in machine load hit both.
    """
    from postfit import ParallelPostFit

    X, _ = make_rows(5_000_000, 5_000_000 + n_rows, seed=3)
    result = {}
    for name, estimator in estimators.items():
        wrapper = ParallelPostFit(estimator)
        plain, wrapped = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            estimator.predict_proba(X)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            wrapper.predict_proba(X)
            wrapped.append(time.perf_counter() - start)
        result[name] = {
            "rows": n_rows,
            "repeats": repeats,
            "plain_median": statistics.median(plain),
            "postfit_median": statistics.median(wrapped),
        }
    return result


def sweep_block_sizes(estimators, n_rows):
    """Return rows/s of postfit over block sizes and worker counts, with the plain rate."""
    from postfit import ParallelPostFit

    X, _ = make_rows(8_000_000, 8_000_000 + n_rows, seed=4)
    points = []
    for name, backend in SWEEP_ESTIMATORS.items():
        estimator = estimators[name]
        plain = time_call(lambda est=estimator: est.predict_proba(X), 1)["best"]
        for n_jobs in SWEEP_WORKERS:
            for block_size in [size for size in SWEEP_BLOCK_SIZES if size < n_rows]:
                wrapper = ParallelPostFit(
                    estimator, backend=backend, n_jobs=n_jobs, block_size=block_size
                )
                seconds = time_call(lambda w=wrapper: w.predict_proba(X), 1)["best"]
                points.append(
                    {
                        "estimator": name,
                        "backend": backend,
                        "n_jobs": n_jobs,
                        "block_size": block_size,
                        "rows_per_second": n_rows / seconds,
                        "plain_rows_per_second": n_rows / plain,
                    }
                )
    return points


def plot_sweep(points, path):
    """Draw rows/s against block size, one panel per estimator, one line per worker count.

    ``benchmarks.report`` calls this when it renders the page, from the saved points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(point["estimator"] for point in points))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        mine = [p for p in points if p["estimator"] == name]
        for n_jobs in sorted({p["n_jobs"] for p in mine}):
            line = [p for p in mine if p["n_jobs"] == n_jobs]
            ax.plot(
                [p["block_size"] for p in line],
                [p["rows_per_second"] for p in line],
                marker="o",
                label=f"postfit {line[0]['backend']}, n_jobs={n_jobs}",
            )
        ax.axhline(
            mine[0]["plain_rows_per_second"],
            color="grey",
            linestyle="--",
            label="plain, default threads",
        )
        ax.set_xscale("log")
        ax.set_xlabel("block size (rows)")
        ax.set_ylabel("rows per second")
        ax.set_title(f"{name} predict_proba")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(quick: bool) -> dict:
    params = QUICK if quick else FULL
    load_before = load_average()
    print("fitting the estimators", flush=True)
    estimators = make_estimators(n_train=5_000 if quick else 20_000)
    X, _ = make_rows(10_000_000, 10_000_000 + params["rows"], seed=2)

    print(f"timing predict_proba on {params['rows']:,} rows", flush=True)
    times = time_variants(estimators, X, params["repeats"])
    print("timing the targets' variants in alternating rounds", flush=True)
    targets = time_targets(estimators, X, params["target_rounds"], TARGET_MIN_SECONDS)
    del X

    print("timing small inputs", flush=True)
    small = time_small_input(estimators, params["small_repeats"])
    # Between the direct path and the rows where threads pay, where the
    # planner's probes and per-call costs weigh most.
    medium = time_small_input(estimators, params["medium_repeats"], params["medium_rows"])

    print("sweeping block sizes", flush=True)
    points = sweep_block_sizes(estimators, params["sweep_rows"])

    notes = []
    joblib_error = check_joblib_after_postfit()
    if joblib_error:
        notes.append(
            "After postfit's runs, a plain `joblib.Parallel(n_jobs=2)` call in the same "
            f"process failed with `{joblib_error}`; the joblib chunk loop was timed before "
            "any postfit run for that reason."
        )

    return {
        "status": "ok",
        "params": {
            **params,
            "features": N_FEATURES,
            "method": "predict_proba",
            "min_seconds": MIN_SECONDS,
            "max_runs": MAX_RUNS,
        },
        "load_before": load_before,
        "load_after": load_average(),
        "times": times,
        "targets": targets,
        "small_input": small,
        "medium_input": medium,
        "sweep": points,
        "plot": PLOT_NAME,
        "notes": notes,
    }
