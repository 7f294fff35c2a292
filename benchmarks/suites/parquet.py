"""Out of core: score a Parquet dataset under a memory budget, against in-memory and dask-ml.

Each variant runs in its own process; its peak memory is sampled over the
process tree. The baseline variant only imports the libraries and loads the
model, so ``peak - baseline`` is what the run itself used.
"""

from __future__ import annotations

import shutil

from .._common import DATA_DIR, MIB, feature_available, load_average, run_child
from .._data import FEATURES, dataset_nbytes, layout_text
from ._files import dataset, model_mib, model_path

FULL = {"budget": "1GiB", "budget_mib": 1024}
QUICK = {"budget": "128MiB", "budget_mib": 128}
#: Minimum throughput from files, as a share of the in-memory run's throughput.
MIN_SHARE_OF_IN_MEMORY = 0.8
CHILD = "benchmarks.suites._files"


def _check_io():
    import postfit

    postfit.read_parquet  # noqa: B018 - raises AttributeError until postfit.io exists


def run(quick: bool) -> dict:
    missing = feature_available(_check_io)
    if missing:
        reason = f"postfit.read_parquet is not available ({missing})."
        return {"status": "not_run", "reason": reason}
    params = QUICK if quick else FULL
    load_before = load_average()
    folder = dataset(quick)
    model = model_path()
    output_dir = DATA_DIR / "parquet-suite-output"
    shutil.rmtree(output_dir, ignore_errors=True)
    common = {"folder": str(folder), "model": str(model)}

    print("[parquet] running the variants", flush=True)
    results = {
        "baseline (imports and model only)": run_child(
            f"{CHILD}:variant_baseline", {"model": str(model)}
        ),
        "postfit, in memory (after reading it all)": run_child(
            f"{CHILD}:variant_postfit_in_memory", common
        ),
        "postfit read_parquet, result in memory": run_child(
            f"{CHILD}:variant_postfit_source",
            {**common, "budget": params["budget"], "output": None},
        ),
        "postfit read_parquet, output= Parquet": run_child(
            f"{CHILD}:variant_postfit_source",
            {**common, "budget": params["budget"], "output": str(output_dir)},
        ),
        "dask-ml over dask.dataframe.read_parquet": run_child(f"{CHILD}:variant_dask_ml", common),
    }
    shutil.rmtree(output_dir, ignore_errors=True)
    return summarize(quick, params, folder, model, results, load_before)


def summarize(quick, params, folder, model, results, load_before) -> dict:
    baseline = results["baseline (imports and model only)"].get("peak_rss_mib")
    in_memory = results["postfit, in memory (after reading it all)"]
    rows = in_memory.get("rows")
    table = []
    for name, result in results.items():
        if "error" in result:
            table.append({"variant": name, "error": result["error"]})
            continue
        seconds = result.get("seconds")
        row = {"variant": name}
        if result.get("rows"):
            row["seconds"] = round(seconds, 2)
            row["rows/s"] = round(result["rows"] / seconds)
            if in_memory.get("seconds"):
                row["rows/s vs in memory"] = round(in_memory["seconds"] / seconds, 2)
            row["same output"] = _same(result, in_memory)
        row["peak RSS (MiB)"] = result.get("peak_rss_mib")
        if baseline is not None and result.get("peak_rss_mib") is not None:
            row["peak - baseline (MiB)"] = round(result["peak_rss_mib"] - baseline, 1)
        table.append(row)

    output_mib = rows * 2 * 8 / MIB if rows else None
    targets = _targets(results, params, baseline, output_mib)
    model_size = model_mib(model)
    return {
        "status": "ok",
        "params": {**params, "rows": rows, "features": len(FEATURES)},
        "description": (
            f"A Parquet dataset of {rows:,} rows × {len(FEATURES)} float64 features "
            f"({dataset_nbytes(folder) / MIB:,.0f} MiB on disk, {layout_text()}), scored "
            "with `predict_proba` of a "
            f"HistGradientBoostingClassifier ({model_size} MiB pickled) under a memory "
            f"budget of {params['budget']}. One run of each variant, each in its own process."
            if rows
            else "The in-memory reference run failed, so no throughput could be compared."
        ),
        "load_before": load_before,
        "load_after": load_average(),
        "table": table,
        "targets": targets,
        "notes": [
            "The baseline process imports the libraries and loads the model, nothing more; "
            "it is the floor the budget is counted from.",
            f"A result returned in memory adds the output itself ({output_mib or 0:,.0f} MiB), "
            "which the memory budget does not cover.",
        ],
        "results": results,
    }


def _same(result, reference) -> bool | None:
    if not reference.get("rows") or not result.get("rows"):
        return None
    if result["rows"] != reference["rows"]:
        return False
    return abs(result["checksum"] - reference["checksum"]) <= 1e-9 * abs(reference["checksum"])


def _targets(results, params, baseline, output_mib) -> list[dict]:
    targets = []
    in_memory = results["postfit, in memory (after reading it all)"]
    to_file = results["postfit read_parquet, output= Parquet"]
    to_memory = results["postfit read_parquet, result in memory"]
    if baseline is not None and "peak_rss_mib" in to_file and "error" not in to_file:
        limit = baseline + params["budget_mib"]
        targets.append(
            {
                "name": "peak RSS writing Parquet ≤ baseline (interpreter and model) + budget",
                "measured": f"{to_file['peak_rss_mib']:,.0f} MiB against {limit:,.0f} MiB",
                "met": to_file["peak_rss_mib"] <= limit,
            }
        )
    if baseline is not None and "peak_rss_mib" in to_memory and "error" not in to_memory:
        limit = baseline + params["budget_mib"] + (output_mib or 0)
        targets.append(
            {
                "name": "peak RSS returning the result ≤ baseline + budget + output",
                "measured": f"{to_memory['peak_rss_mib']:,.0f} MiB against {limit:,.0f} MiB",
                "met": to_memory["peak_rss_mib"] <= limit,
            }
        )
    for name, result in (("writing Parquet", to_file), ("returning the result", to_memory)):
        if in_memory.get("seconds") and result.get("seconds") and "error" not in result:
            share = in_memory["seconds"] / result["seconds"]
            targets.append(
                {
                    "name": f"throughput {name} ≥ {MIN_SHARE_OF_IN_MEMORY:.0%} of in memory",
                    "measured": f"{share:.0%}",
                    "met": share >= MIN_SHARE_OF_IN_MEMORY,
                }
            )
    return targets
