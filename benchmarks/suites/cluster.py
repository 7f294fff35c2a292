"""Clusters: a 300-tree RandomForest on a Dask LocalCluster and a local Ray, against dask-ml.

Every variant runs in its own process, which starts its own cluster on
127.0.0.1 (2 worker processes, one thread each, dashboard off), so that its
peak memory covers the driver and the whole cluster and nothing else. Times
cover the scoring call only, not starting the cluster or making the data:
the Dask arrays and Ray Datasets are built before the clock starts (hashing
the 320 MB input to name the Dask array takes 0.3 to 1.0 s here).
``benchmarks.run`` starts this suite inside a network namespace whose only
interface is loopback.
"""

from __future__ import annotations

import pickle
import time

import numpy as np

from .._common import DATA_DIR, MIB, load_average, run_child
from .._data import make_rows

N_WORKERS = 2
FULL = {"trees": 300, "sizes": [20_000, 2_000_000]}
QUICK = {"trees": 50, "sizes": [20_000, 200_000]}
#: Rows per chunk of the Dask arrays and per batch of Ray Data: four blocks per worker.
BLOCKS_PER_WORKER = 4
#: Inputs of at most this many rows are scored a second time on the same cluster.
SECOND_CALL_MAX_ROWS = 20_000
#: Runs of each variant that a target compares. One run of dask-ml on a fresh
#: cluster took 2.85 s in one suite and 5.21 s in the next, and the plain
#: forest 25.1 and 27.1 s on 2,000,000 rows, so targets read medians.
TARGET_RUNS = 3
TARGET_VARIANTS = (
    "plain forest, n_jobs=-1 threads (one process)",
    "dask-ml ParallelPostFit, Dask array on LocalCluster",
    "postfit, Dask array on LocalCluster",
    "dask-ml, Dask array, workers with the libraries imported",
    "postfit, Dask array, workers with the libraries imported",
)
#: Variants that only small inputs run: they time what comes before the work.
SMALL_INPUT_VARIANTS = (
    "dask-ml, Dask array, workers with the libraries imported",
    "postfit, Dask array, workers with the libraries imported",
)
CHILD = "benchmarks.suites.cluster"


def model_path(trees: int):
    """Fit and pickle the forest once (about 80 MiB pickled at 300 trees) and return its path."""
    from sklearn.ensemble import RandomForestClassifier

    path = DATA_DIR / f"random_forest_{trees}.pkl"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        X, y = make_rows(0, 20_000)
        # min_samples_leaf=3 sizes the 300-tree forest at about 80 MiB pickled.
        model = RandomForestClassifier(
            n_estimators=trees, min_samples_leaf=3, n_jobs=-1, random_state=0
        ).fit(X, y)
        model.set_params(n_jobs=1)
        path.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def _load(model: str, rows: int):
    with open(model, "rb") as f:
        estimator = pickle.load(f)
    X, _ = make_rows(12_000_000, 12_000_000 + rows, seed=6)
    return estimator, X


def _summary(output, seconds) -> dict:
    output = np.asarray(output)
    return {
        "seconds": seconds,
        "rows": int(output.shape[0]),
        "checksum": float(output[:, -1].sum(dtype=np.float64)),
    }


def _chunk_rows(rows: int) -> int:
    return max(1, rows // (BLOCKS_PER_WORKER * N_WORKERS))


def _local_cluster(trim_memory=True):
    import dask
    from distributed import Client, LocalCluster

    if not trim_memory:
        # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which
        # also stops glibc from raising its mmap threshold, so every temporary
        # array of a tree's predict_proba is mapped and faulted in afresh.
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
        environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ})

    cluster = LocalCluster(
        n_workers=N_WORKERS,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        processes=True,
    )
    return cluster, Client(cluster)


def _ray_init():
    import ray

    ray.init(num_cpus=N_WORKERS, include_dashboard=False, log_to_driver=False)
    return ray


# Child entry points --------------------------------------------------------------


def variant_plain_threads(model: str, rows: int) -> dict:
    """Score with the plain forest on scikit-learn's own threads (``n_jobs=-1``), one process."""
    estimator, X = _load(model, rows)
    estimator.set_params(n_jobs=-1)
    start = time.perf_counter()
    output = estimator.predict_proba(X)
    return _summary(output, time.perf_counter() - start)


def variant_postfit_threading(model: str, rows: int) -> dict:
    from postfit import ParallelPostFit

    estimator, X = _load(model, rows)
    start = time.perf_counter()
    output = ParallelPostFit(estimator, backend="threading").predict_proba(X)
    return _summary(output, time.perf_counter() - start)


def _time_twice(compute, rows: int) -> dict:
    """Time ``compute()`` on a fresh cluster, and again on the same cluster for small inputs.

    The second call finds workers that have imported scikit-learn, as a
    long-running cluster's workers would have.
    """
    start = time.perf_counter()
    output = compute()
    summary = _summary(output, time.perf_counter() - start)
    if rows <= SECOND_CALL_MAX_ROWS:
        start = time.perf_counter()
        compute()
        summary["seconds_again"] = time.perf_counter() - start
    return summary


def _import_on_workers(client, modules) -> None:
    """Import ``modules`` on every worker, as a script's top-level imports would be.

    Dask's nanny spawns workers, and a spawned process imports the parent's
    main script, so a script that imports scikit-learn and its wrapper
    library at the top starts workers that have them imported already.
    """
    import importlib

    for name in modules:
        client.run(importlib.import_module, name)


#: Modules that the workers import before the timed call in the "libraries imported" variants.
DASK_ML_IMPORTS = ("sklearn.ensemble", "dask.array", "dask_ml.wrappers")
POSTFIT_IMPORTS = ("sklearn.ensemble", "dask.array", "postfit")


def variant_dask_ml(model: str, rows: int, imported: tuple = ()) -> dict:
    import dask.array as da
    from dask_ml.wrappers import ParallelPostFit as DaskMLParallelPostFit

    estimator, X = _load(model, rows)
    cluster, client = _local_cluster()
    with cluster, client:
        _import_on_workers(client, imported)
        array = da.from_array(X, chunks=(_chunk_rows(rows), X.shape[1]))

        def compute():
            return DaskMLParallelPostFit(estimator).predict_proba(array).compute()

        return _time_twice(compute, rows)


def variant_dask_ml_imported(model: str, rows: int) -> dict:
    return variant_dask_ml(model, rows, imported=DASK_ML_IMPORTS)


def variant_postfit_dask_array(
    model: str, rows: int, trim_memory: bool = True, imported: tuple = ()
) -> dict:
    import dask.array as da

    # dask-ml's wrappers module imports dask.dataframe when the dask-ml variant
    # imports it, before its timed call. postfit imports it in its first
    # call on a Dask collection, so it is imported here to time the same work.
    import dask.dataframe  # noqa: F401

    from postfit import ParallelPostFit

    estimator, X = _load(model, rows)
    cluster, client = _local_cluster(trim_memory)
    with cluster, client:
        _import_on_workers(client, imported)
        array = da.from_array(X, chunks=(_chunk_rows(rows), X.shape[1]))

        def compute():
            return ParallelPostFit(estimator).predict_proba(array).compute()

        return _time_twice(compute, rows)


def variant_postfit_dask_array_untrimmed(model: str, rows: int) -> dict:
    return variant_postfit_dask_array(model, rows, trim_memory=False)


def variant_postfit_dask_array_imported(model: str, rows: int) -> dict:
    return variant_postfit_dask_array(model, rows, imported=POSTFIT_IMPORTS)


def variant_postfit_dask_backend(model: str, rows: int) -> dict:
    from postfit import ParallelPostFit

    estimator, X = _load(model, rows)
    cluster, client = _local_cluster()
    with cluster, client:
        start = time.perf_counter()
        output = ParallelPostFit(estimator, backend="dask").predict_proba(X)
        return _summary(output, time.perf_counter() - start)


class _HandWrittenScorer:
    """A hand-written ``map_batches`` scorer that fetches the model once per actor."""

    def __init__(self, model_refs):
        import ray

        self.model = ray.get(model_refs[0])

    def __call__(self, batch):
        return {"proba": self.model.predict_proba(batch["data"])}


def variant_ray_map_batches(model: str, rows: int) -> dict:
    estimator, X = _load(model, rows)
    ray = _ray_init()
    try:
        import ray.data

        ray.data.DataContext.get_current().execution_options.preserve_order = True
        source = ray.data.from_numpy(X)
        start = time.perf_counter()
        # The reference goes inside a list so that Ray passes it to the actor unresolved.
        model_refs = [ray.put(estimator)]
        dataset = source.map_batches(
            _HandWrittenScorer,
            fn_constructor_args=(model_refs,),
            batch_size=_chunk_rows(rows),
            batch_format="numpy",
            concurrency=N_WORKERS,
        )
        parts = [part["proba"] for part in ray.get(dataset.to_numpy_refs())]
        output = np.concatenate(parts)
        return _summary(output, time.perf_counter() - start)
    finally:
        ray.shutdown()


def variant_postfit_ray_backend(model: str, rows: int) -> dict:
    from postfit import ParallelPostFit

    estimator, X = _load(model, rows)
    ray = _ray_init()
    try:
        start = time.perf_counter()
        output = ParallelPostFit(estimator, backend="ray").predict_proba(X)
        return _summary(output, time.perf_counter() - start)
    finally:
        ray.shutdown()


def variant_postfit_ray_dataset(model: str, rows: int) -> dict:
    from postfit import ParallelPostFit

    estimator, X = _load(model, rows)
    ray = _ray_init()
    try:
        import ray.data

        source = ray.data.from_numpy(X)
        start = time.perf_counter()
        output = ParallelPostFit(estimator).predict_proba(source, execute=True)
        return _summary(output, time.perf_counter() - start)
    finally:
        ray.shutdown()


VARIANTS = {
    "plain forest, n_jobs=-1 threads (one process)": "variant_plain_threads",
    "postfit threading (one process)": "variant_postfit_threading",
    "dask-ml ParallelPostFit, Dask array on LocalCluster": "variant_dask_ml",
    "postfit, Dask array on LocalCluster": "variant_postfit_dask_array",
    "postfit, Dask array on LocalCluster, workers without MALLOC_TRIM_THRESHOLD_": (
        "variant_postfit_dask_array_untrimmed"
    ),
    "dask-ml, Dask array, workers with the libraries imported": "variant_dask_ml_imported",
    "postfit, Dask array, workers with the libraries imported": (
        "variant_postfit_dask_array_imported"
    ),
    "postfit backend='dask', NumPy input": "variant_postfit_dask_backend",
    "hand-written Ray Data map_batches": "variant_ray_map_batches",
    "postfit backend='ray', NumPy input": "variant_postfit_ray_backend",
    "postfit, Ray Dataset input": "variant_postfit_ray_dataset",
}


def run(quick: bool) -> dict:
    params = QUICK if quick else FULL
    load_before = load_average()
    model = model_path(params["trees"])
    model_mib = model.stat().st_size / MIB
    runs = {}
    for rows in params["sizes"]:
        for number in range(TARGET_RUNS):
            # Every variant runs once, then the target variants again, in
            # reversed order every other time, so that a slow minute of the
            # machine does not fall on one variant's runs only.
            names = list(VARIANTS) if number == 0 else list(TARGET_VARIANTS)
            if rows > SECOND_CALL_MAX_ROWS:
                names = [name for name in names if name not in SMALL_INPUT_VARIANTS]
            if number % 2 == 1:
                names.reverse()
            for name in names:
                print(f"[cluster] {rows:,} rows: {name} (run {number + 1})", flush=True)
                result = run_child(
                    f"{CHILD}:{VARIANTS[name]}", {"model": str(model), "rows": rows}, timeout=1800
                )
                runs.setdefault(f"{rows}|{name}", []).append(result)
    results = {key: combine_runs(key_runs) for key, key_runs in runs.items()}
    table, targets = summarize(params, results)
    return {
        "status": "ok",
        "params": {**params, "model_mib": round(model_mib, 1), "workers": N_WORKERS},
        "description": (
            f"`predict_proba` of a {params['trees']}-tree RandomForestClassifier "
            f"({model_mib:.0f} MiB pickled) on 20 float64 features. Dask: LocalCluster of "
            f"{N_WORKERS} worker processes with one thread each on 127.0.0.1; Ray: "
            f"`ray.init(num_cpus={N_WORKERS})`. Arrays are cut in "
            f"{BLOCKS_PER_WORKER * N_WORKERS} chunks or batches. Each run in its own process, "
            f"which starts its own cluster. The variants that targets compare ran {TARGET_RUNS} "
            "times, interleaved: their seconds are medians and their peak RSS the highest. "
            "Other variants ran once. Peak RSS covers the driver and the cluster's processes."
        ),
        "load_before": load_before,
        "load_after": load_average(),
        "table": table,
        "targets": targets,
        "results": results,
    }


def combine_runs(runs: list[dict]) -> dict:
    """Return one result for a variant's runs: median times, the highest peak, every time.

    A failed run makes the whole result an error. The output counts as the
    same only when every run's checksum is the same.
    """
    for result in runs:
        if "error" in result:
            return result
    combined = dict(runs[0])
    combined["seconds"] = float(np.median([result["seconds"] for result in runs]))
    combined["seconds_runs"] = [round(result["seconds"], 2) for result in runs]
    if all("seconds_again" in result for result in runs):
        again = [result["seconds_again"] for result in runs]
        combined["seconds_again"] = float(np.median(again))
        combined["seconds_again_runs"] = [round(value, 2) for value in again]
    combined["peak_rss_mib"] = max(result["peak_rss_mib"] for result in runs)
    checksums = {result["checksum"] for result in runs}
    rows = {result["rows"] for result in runs}
    if len(checksums) > 1 or len(rows) > 1:
        combined["checksum"] = float("nan")
    return combined


def summarize(params, results):
    table, targets = [], []
    for rows in params["sizes"]:
        reference = results[f"{rows}|plain forest, n_jobs=-1 threads (one process)"]
        for name in VARIANTS:
            result = results.get(f"{rows}|{name}")
            if result is None:
                continue
            row = {"rows": rows, "variant": name}
            if "error" in result:
                row["error"] = result["error"] + " " + result.get("output_tail", "")[-300:]
                table.append(row)
                continue
            row["seconds"] = round(result["seconds"], 2)
            if "seconds_again" in result:
                row["seconds, second call"] = round(result["seconds_again"], 2)
            if len(result.get("seconds_runs", [])) > 1:
                row["runs (seconds)"] = ", ".join(map(str, result["seconds_runs"]))
            if len(result.get("seconds_again_runs", [])) > 1:
                row["runs, second call"] = ", ".join(map(str, result["seconds_again_runs"]))
            if reference.get("seconds"):
                row["time vs one-process threads"] = round(
                    result["seconds"] / reference["seconds"], 2
                )
            row["peak RSS (MiB)"] = result["peak_rss_mib"]
            row["same output"] = reference.get("rows") == result["rows"] and abs(
                result["checksum"] - reference.get("checksum", np.nan)
            ) <= 1e-9 * abs(result["checksum"])
            table.append(row)
        targets += _targets(rows, results, params)
    return table, targets


def _ratio_target(name, ours, theirs, limit, *, memory=False, key=None):
    if "error" in ours or "error" in theirs:
        return None
    key = key or ("peak_rss_mib" if memory else "seconds")
    if key not in ours or key not in theirs:
        return None
    ratio = ours[key] / theirs[key]
    return {"name": name, "measured": f"{ratio:.2f}", "met": ratio <= limit}


def _targets(rows, results, params):
    def get(name):
        return results[f"{rows}|{name}"]

    dask_ml = get("dask-ml ParallelPostFit, Dask array on LocalCluster")
    dask_array = get("postfit, Dask array on LocalCluster")
    threads = get("plain forest, n_jobs=-1 threads (one process)")
    map_batches = get("hand-written Ray Data map_batches")
    candidates = [
        _ratio_target(
            f"{rows:,} rows: postfit Dask array time / dask-ml time ≤ 0.33 (3× faster)",
            dask_array,
            dask_ml,
            1 / 3,
        )
        if rows <= 20_000
        else _ratio_target(
            f"{rows:,} rows: postfit Dask array time / one-process threads ≤ 1.10",
            dask_array,
            threads,
            1.10,
        ),
        _ratio_target(
            f"{rows:,} rows, second call on the same cluster: postfit Dask array time / "
            "dask-ml time ≤ 0.33",
            dask_array,
            dask_ml,
            1 / 3,
            key="seconds_again",
        ),
        _ratio_target(
            f"{rows:,} rows: postfit Dask array peak RSS / dask-ml peak RSS < 1",
            dask_array,
            dask_ml,
            0.999,
            memory=True,
        ),
    ]
    if rows <= SECOND_CALL_MAX_ROWS:
        candidates.insert(
            1,
            _ratio_target(
                f"{rows:,} rows, fresh cluster whose workers imported the libraries first (as a "
                "script's top-level imports do): postfit Dask array time / dask-ml time ≤ 0.33",
                get("postfit, Dask array, workers with the libraries imported"),
                get("dask-ml, Dask array, workers with the libraries imported"),
                1 / 3,
            ),
        )
    for name in ("postfit backend='ray', NumPy input", "postfit, Ray Dataset input"):
        candidates.append(
            _ratio_target(
                f"{rows:,} rows: {name} time / hand-written map_batches ≤ 1",
                get(name),
                map_batches,
                1.0,
            )
        )
    return [target for target in candidates if target is not None]
