"""Peak memory of a five-metric score over a Parquet dataset ten times the memory budget.

postfit scores the files under the budget in one pass. For reference, the
same metrics are computed by scikit-learn's multi-metric scorer on the whole
dataset read into memory, which also checks postfit's values.

The five metrics reduce each block to a few numbers. A rank metric such as
ROC AUC keeps one score and one label per row instead, whose memory grows
with the rows and is outside the budget; a second postfit variant adds it to
show that cost.
"""

from __future__ import annotations

import time

from .._common import MIB, feature_available, load_average, run_child
from .._data import FEATURES, TARGET, dataset_nbytes, layout_text
from ._files import dataset, load_model, model_mib, model_path, read_features

METRICS = ["accuracy", "balanced_accuracy", "f1", "neg_log_loss", "neg_brier_score"]
#: The metric of the informational variant, which gathers per-row outputs.
GATHERED = "roc_auc"
FULL = {"budget": "256MiB", "budget_mib": 256}
QUICK = {"budget": "32MiB", "budget_mib": 32}
CHILD = "benchmarks.suites.scoring"


def variant_postfit(folder: str, model: str, budget: str, metrics: list | None = None) -> dict:
    import postfit
    from postfit import ParallelPostFit

    estimator = load_model(model)
    source = postfit.read_parquet(folder, columns=[*FEATURES, TARGET])
    wrapper = ParallelPostFit(estimator, scoring=metrics or METRICS, memory_budget=budget)
    start = time.perf_counter()
    scores = wrapper.score(source, TARGET)
    return {"seconds": time.perf_counter() - start, "scores": scores}


def variant_sklearn_in_memory(folder: str, model: str) -> dict:
    from sklearn.metrics import check_scoring

    estimator = load_model(model)
    start = time.perf_counter()
    X, y = read_features(folder)
    scores = check_scoring(estimator, scoring=METRICS)(estimator, X, y)
    return {"seconds": time.perf_counter() - start, "scores": scores}


def variant_baseline(model: str) -> dict:
    import postfit  # noqa: F401

    load_model(model)
    return {"seconds": 0.0}


def _check_scoring_from_source():
    import postfit

    postfit.read_parquet  # noqa: B018 - raises AttributeError until postfit.io exists


def run(quick: bool) -> dict:
    missing = feature_available(_check_scoring_from_source)
    if missing:
        reason = f"postfit.read_parquet is not available ({missing})."
        return {"status": "not_run", "reason": reason}
    params = QUICK if quick else FULL
    load_before = load_average()
    folder, model = dataset(quick), model_path()
    print("[scoring] running the variants", flush=True)
    baseline = run_child(f"{CHILD}:variant_baseline", {"model": str(model)})
    ours = run_child(
        f"{CHILD}:variant_postfit",
        {"folder": str(folder), "model": str(model), "budget": params["budget"]},
    )
    gathered = run_child(
        f"{CHILD}:variant_postfit",
        {
            "folder": str(folder),
            "model": str(model),
            "budget": params["budget"],
            "metrics": [*METRICS, GATHERED],
        },
    )
    reference = run_child(
        f"{CHILD}:variant_sklearn_in_memory", {"folder": str(folder), "model": str(model)}
    )

    table = []
    for name, result in (
        ("baseline (imports and model only)", baseline),
        (f"postfit score from Parquet, budget {params['budget']}", ours),
        (f"the same with {GATHERED} as well (not counted in the target)", gathered),
        ("scikit-learn multi-metric scorer, data in memory", reference),
    ):
        row = {"variant": name, "seconds": round(result.get("seconds", 0.0), 2)}
        row["peak RSS (MiB)"] = result.get("peak_rss_mib")
        if result.get("error"):
            row["error"] = result["error"]
        table.append(row)

    targets, notes = [], []
    if "error" not in ours and "error" not in baseline:
        limit = baseline["peak_rss_mib"] + params["budget_mib"]
        targets.append(
            {
                "name": "peak RSS ≤ baseline (interpreter and model) + budget",
                "measured": f"{ours['peak_rss_mib']:,.0f} MiB against {limit:,.0f} MiB",
                "met": ours["peak_rss_mib"] <= limit,
            }
        )
    if "error" not in ours and "error" not in reference:
        for metric in METRICS:
            mine, theirs = ours["scores"].get(metric), reference["scores"].get(metric)
            notes.append(f"{metric}: postfit {mine!r}, scikit-learn {theirs!r}")
    if "error" not in gathered:
        notes.append(
            f"{GATHERED} keeps one score and one label per row until the end, so its memory "
            "grows with the rows; it is not part of the five-metric target."
        )
    size = dataset_nbytes(folder)
    return {
        "status": "ok",
        "params": {**params, "metrics": METRICS},
        "description": (
            f"`score` with {', '.join(METRICS)} at once over {size / MIB:,.0f} MiB of Parquet, "
            f"{size / (params['budget_mib'] * MIB):.1f} times the budget of "
            f"{params['budget']}. Layout: {layout_text()}. Target column `{TARGET}`, scored "
            f"by a HistGradientBoostingClassifier ({model_mib(model)} MiB pickled)."
        ),
        "load_before": load_before,
        "load_after": load_average(),
        "table": table,
        "targets": targets,
        "notes": notes,
    }
