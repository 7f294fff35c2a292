"""Peak memory of a 10-epoch SGDClassifier trained from Parquet ten times the memory budget."""

from __future__ import annotations

import time

from .._common import MIB, feature_available, load_average, run_child
from .._data import FEATURES, TARGET, dataset_nbytes, layout_text, make_rows

EPOCHS = 10
FULL = {"budget": "256MiB", "budget_mib": 256}
QUICK = {"budget": "32MiB", "budget_mib": 32}
HOLDOUT_ROWS = 200_000
CHILD = "benchmarks.suites.incremental"


def variant_incremental(folder: str, budget: str) -> dict:
    from sklearn.linear_model import SGDClassifier

    import postfit

    source = postfit.read_parquet(folder, columns=[*FEATURES, TARGET])
    # Incremental's max_iter is its number of epochs (passes over the whole input).
    wrapper = postfit.Incremental(
        SGDClassifier(random_state=0), random_state=0, max_iter=EPOCHS, memory_budget=budget
    )
    start = time.perf_counter()
    wrapper.fit(source, TARGET, classes=[0, 1])
    seconds = time.perf_counter() - start
    X_test, y_test = make_rows(0, HOLDOUT_ROWS, seed=9)
    accuracy = float((wrapper.estimator_.predict(X_test) == y_test).mean())
    return {"seconds": seconds, "holdout_accuracy": accuracy}


def variant_baseline() -> dict:
    import sklearn.linear_model  # noqa: F401

    import postfit  # noqa: F401

    return {"seconds": 0.0}


def _check_incremental():
    import postfit

    postfit.read_parquet  # noqa: B018 - raises AttributeError until postfit.io exists
    postfit.Incremental  # noqa: B018 - raises AttributeError until Incremental exists


def run(quick: bool) -> dict:
    missing = feature_available(_check_incremental)
    if missing:
        return {
            "status": "not_run",
            "reason": f"postfit.Incremental or postfit.read_parquet is not available ({missing}).",
        }
    from ._files import dataset

    params = QUICK if quick else FULL
    load_before = load_average()
    folder = dataset(quick)
    print("[incremental] running the variants", flush=True)
    baseline = run_child(f"{CHILD}:variant_baseline", {})
    ours = run_child(
        f"{CHILD}:variant_incremental", {"folder": str(folder), "budget": params["budget"]}
    )
    table = [
        {"variant": "baseline (imports only)", "peak RSS (MiB)": baseline.get("peak_rss_mib")},
        {
            "variant": f"postfit Incremental, {EPOCHS} epochs, budget {params['budget']}",
            "seconds": round(ours.get("seconds", 0.0), 1),
            "peak RSS (MiB)": ours.get("peak_rss_mib"),
            "held-out accuracy": ours.get("holdout_accuracy"),
        },
    ]
    if "error" in ours:
        table[-1]["error"] = ours["error"] + " " + ours.get("output_tail", "")[-300:]
    targets = []
    if "error" not in ours and "error" not in baseline:
        limit = baseline["peak_rss_mib"] + params["budget_mib"]
        targets.append(
            {
                "name": "peak RSS ≤ baseline (interpreter) + budget",
                "measured": f"{ours['peak_rss_mib']:,.0f} MiB against {limit:,.0f} MiB",
                "met": ours["peak_rss_mib"] <= limit,
            }
        )
    size = dataset_nbytes(folder)
    return {
        "status": "ok",
        "params": {**params, "epochs": EPOCHS},
        "description": (
            f"`postfit.Incremental(SGDClassifier())` trained for {EPOCHS} epochs from "
            f"{size / MIB:,.0f} MiB of Parquet ({size / (params['budget_mib'] * MIB):.1f} times "
            f"the budget of {params['budget']}; {layout_text()}); accuracy on "
            f"{HOLDOUT_ROWS:,} held-out rows of the same distribution."
        ),
        "load_before": load_before,
        "load_after": load_average(),
        "table": table,
        "targets": targets,
    }
