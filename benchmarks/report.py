"""Render ``docs/benchmarks.md`` from the saved results in ``benchmarks/results/``.

The page is rebuilt whole from the JSON files, so a suite rerun alone
replaces only its own section.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._common import DOCS_DIR, load_result
from .suites import SUITES

PAGE = DOCS_DIR / "benchmarks.md"

TITLES = {
    "in_memory": "In-memory scoring: backends, threads, joblib and dask-ml",
    "parquet": "Out of core: a Parquet dataset under a memory budget",
    "cluster": "Clusters: a large RandomForest on Dask and Ray",
    "scoring": "Scoring several metrics over a dataset larger than the budget",
    "incremental": "Incremental training from a dataset larger than the budget",
    "leak": "Leak check: back-to-back runs in one process",
}

#: Targets of the in-memory suite for postfit's automatic backend: its speed-up over the
#: plain estimator on one thread, and its time over the plain estimator's on 1,000 rows.
AUTO_MIN_SPEEDUP = 1.8
SMALL_MAX_RATIO = 1.05

INTRO = """\
# Benchmarks

Every number on this page was produced by `benchmarks/run.py` (run from the
repository root with `python -m benchmarks.run`. The option `--quick` runs every
suite on small data, `--only NAME` runs one suite, and `--render` rewrites this
page from the saved results in `benchmarks/results/` without running anything.) Each section
names the command, the date and the machine behind its numbers. Tools are
compared within the same run, on the same data, and results are given as ratios
because absolute times depend on the machine.

Times are the best of the stated number of runs. Peak memory is the resident
set size (RSS) of the benchmark's process tree (driver, worker processes and
cluster processes), sampled every 50 ms, so a shorter peak can be missed.
Runs marked *quick* used small data and are smoke tests, not measurements.
"""


def fmt_seconds(value) -> str:
    return "-" if value is None else f"{value:.3g} s"


def fmt_ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}×"


def fmt_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt_cell(cell) for cell in row) + " |" for row in rows]
    return lines


# Machines ---------------------------------------------------------------------


def machine_key(machine: dict) -> str:
    """Return what identifies a machine: everything recorded but the postfit commit."""
    return json.dumps({k: v for k, v in machine.items() if k != "git_commit"}, sort_keys=True)


def machine_section(machines: dict[str, str], results: dict) -> list[str]:
    """Describe each distinct machine the saved results ran on."""
    lines = ["## Machines", ""]
    seen = {}
    for result in results.values():
        key = machine_key(result["machine"])
        if key in seen:
            continue
        seen[key] = result["machine"]
    for key, machine in seen.items():
        label = machines[key]
        libraries = ", ".join(
            f"{name} {version}" for name, version in machine["libraries"].items() if version
        )
        missing = [name for name, version in machine["libraries"].items() if not version]
        thread_env = ", ".join(
            f"{name}={value if value is not None else 'unset'}"
            for name, value in machine["thread_env"].items()
        )
        lines += [
            f"### Machine {label}",
            "",
            f"- CPU: {machine['cpu_model']}, {machine['logical_cores']} logical cores "
            f"({machine['physical_cores']} physical, {machine['usable_cores']} usable)",
            f"- Memory: {machine['memory_gib']} GiB",
            f"- OS: {machine['os']}",
            f"- Python {machine['python']}; {libraries}",
            f"- Not installed: {', '.join(missing) or 'none'}",
            f"- Thread settings: {thread_env}",
            "- threadpoolctl: "
            + "; ".join(
                f"{info['internal_api']} {info['version'] or ''} ({info['prefix']}, "
                f"{info['num_threads']} threads"
                + (f", {info['architecture']} kernel" if info.get("architecture") else "")
                + ")"
                for info in machine["threadpoolctl"]
            ),
            "",
        ]
    return lines


def run_line(result: dict, machines: dict[str, str]) -> str:
    label = machines[machine_key(result["machine"])]
    quick = " (*quick*: small data, a smoke test)" if result.get("quick") else ""
    load = ""
    if result.get("load_before") and result.get("load_after"):
        load = (
            f" Load average (1, 5, 15 min) {result['load_before']} before and "
            f"{result['load_after']} after."
        )
        cores = result["machine"]["usable_cores"]
        # The load after a run counts the run's own threads (workers, and
        # pyarrow's decoding threads), so only the load before it shows
        # whether other processes were running.
        if result["load_before"][0] > cores:
            load += (
                f" The load exceeded the {cores} cores, so other processes shared the "
                "machine and took CPU time from the variants unevenly: these numbers show "
                "that each variant works, not whether a target is met."
            )
    return (
        f"Ran {result['date']} on machine {label}, postfit commit "
        f"{result['machine']['git_commit']}, with `{result['command']}`{quick}, "
        f"in {result.get('suite_seconds', '?')} s.{load}"
    )


# The in-memory suite -------------------------------------------------------------


def in_memory_section(result: dict) -> list[str]:
    params = result["params"]
    times = result["times"]
    variants = list(dict.fromkeys(v for per in times.values() for v in per))
    lines = [
        f"Data: {params['rows']:,} rows × {params['features']} float64 features, "
        f"`{params['method']}`, best of {params['repeats']} run(s)"
        + (
            f", or of as many runs as fill {params['min_seconds']} s (at most "
            f"{params['max_runs']}) for faster variants; each run's output is dropped before "
            "the next. "
            if "min_seconds" in params
            else ". "
        )
        + "Speed-up is the plain estimator's time with its default threads divided by the "
        "variant's time (above 1 is faster). A variant whose output differed from the "
        "plain estimator's is marked *differs*. Variants ran one column at a time, left to "
        "right, so a machine load that changed during the run favours the columns that ran "
        "while it was lower.",
        "",
    ]
    header = ["estimator", *variants]
    seconds_rows, ratio_rows = [], []
    for name, per in times.items():
        base = per.get("plain, default threads", {}).get("best")
        seconds_row, ratio_row = [name], [name]
        for variant in variants:
            entry = per.get(variant, {})
            if "error" in entry:
                seconds_row.append("failed")
                ratio_row.append("failed")
                continue
            mark = "" if entry.get("same_output", True) else " *differs*"
            seconds_row.append(fmt_seconds(entry.get("best")) + mark)
            ratio = base / entry["best"] if base and entry.get("best") else None
            ratio_row.append(fmt_ratio(ratio) + mark)
        seconds_rows.append(seconds_row)
        ratio_rows.append(ratio_row)
    lines += ["Speed-up over the plain estimator (default threads):", ""]
    lines += markdown_table(header, ratio_rows) + [""]
    lines += ["Seconds:", ""]
    lines += markdown_table(header, seconds_rows) + [""]

    errors = [
        f"- {name}, {variant}: `{entry['error']}`"
        for name, per in times.items()
        for variant, entry in per.items()
        if "error" in entry
    ]
    if errors:
        lines += ["Failed variants, with the error they raised:", "", *errors, ""]

    lines += in_memory_targets(result) + [""]
    lines += [f"- {note}" for note in result.get("notes") or []]
    if result.get("notes"):
        lines.append("")
    lines += [
        f"![Rows per second against block size]({result['plot']})",
        "",
        f"The plot: `predict_proba` rows per second on {params['sweep_rows']:,} rows against "
        "the block size, with one and two workers; the dashed line is the plain estimator "
        "with its default threads.",
        "",
    ]
    return lines


def _verdict(ratio, met: bool) -> str:
    return f"{fmt_ratio(ratio)} ({'met' if met else 'missed'})"


def in_memory_targets(result: dict) -> list[str]:
    """Check postfit's automatic backend against the three targets, one row per estimator."""
    rows = []
    paired = result.get("targets") or {}
    for name, per in result["times"].items():
        small = result["small_input"].get(name, {})
        if name in paired:
            over_one = paired[name]["over_one_thread"]
            over_default = paired[name]["over_default"]
        else:
            auto = per.get("postfit auto", {}).get("best")
            one_thread = per.get("plain, one thread", {}).get("best")
            default = per.get("plain, default threads", {}).get("best")
            over_one = one_thread / auto if auto and one_thread else None
            over_default = default / auto if auto and default else None
        small_ratio = (
            small["postfit_median"] / small["plain_median"] if small.get("plain_median") else None
        )
        row = [
            name,
            _verdict(over_one, over_one is not None and over_one >= AUTO_MIN_SPEEDUP),
            _verdict(over_default, over_default is not None and over_default >= 1.0),
            _verdict(small_ratio, small_ratio is not None and small_ratio <= SMALL_MAX_RATIO),
        ]
        medium = (result.get("medium_input") or {}).get(name)
        if medium is not None:
            row.append(fmt_ratio(medium["postfit_median"] / medium["plain_median"]))
        rows.append(row)
    small_repeats = next(iter(result["small_input"].values()), {}).get("repeats", "?")
    header = [
        "estimator",
        f"auto over one thread (target ≥ {AUTO_MIN_SPEEDUP}×)",
        "auto over default threads (target ≥ 1×)",
        f"auto time / plain time on 1,000 rows (target ≤ {SMALL_MAX_RATIO}×)",
    ]
    medium = result.get("medium_input") or {}
    medium_note = ""
    if medium:
        first = next(iter(medium.values()))
        header.append(f"auto time / plain time on {first['rows']:,} rows (no target)")
        medium_note = f" The last column is the median of {first['repeats']} alternating calls."
    if paired:
        rounds = min(entry["rounds"] for entry in paired.values())
        method = (
            "The first two columns are medians of the ratios within rounds. Each round times "
            "the plain estimator with its default threads, on one thread, and postfit's "
            f"automatic backend back to back, in reversed order every other round ({rounds} "
            "rounds or more per estimator). The machine's speed drifts between the columns "
            "of the table above, which are minutes apart. "
        )
    else:
        method = "The first two columns divide the best times of the table above. "
    return [
        "Targets for postfit's automatic backend. "
        + method
        + f"The 1,000-row column is the median of {small_repeats} alternating calls of each."
        + medium_note,
        "",
        *markdown_table(header, rows),
    ]


# The other suites --------------------------------------------------------------


def generic_section(result: dict) -> list[str]:
    """Render a suite that reports a table of variants, targets and notes."""
    lines = []
    if result.get("description"):
        lines += [result["description"], ""]
    table = result.get("table") or []
    if table:
        header = list(dict.fromkeys(key for row in table for key in row))
        lines += markdown_table(header, [[row.get(key) for key in header] for row in table])
        lines.append("")
    targets = result.get("targets") or []
    if targets:
        lines += ["Targets:", ""]
        lines += [
            f"- {t['name']}: {t['measured']} ({'met' if t['met'] else '**missed**'})"
            for t in targets
        ]
        lines.append("")
    for note in result.get("notes") or []:
        lines += [f"- {note}"]
    if result.get("notes"):
        lines.append("")
    return lines


def refresh_leak(result: dict) -> None:
    """Recompute the leak table and targets from the saved per-run series, and draw them."""
    from .suites import leak

    seconds = result.get("seconds") or {
        row["runs of"]: row.get("seconds (all runs)") for row in result["table"]
    }
    result["table"], result["targets"] = leak.summarize(result["params"], result["series"], seconds)
    result["description"] = leak.description(result["params"])
    leak.plot_series(result["series"], DOCS_DIR / leak.PLOT_NAME)


def suite_section(suite: str, result: dict | None, machines: dict[str, str]) -> list[str]:
    lines = [f"## {TITLES[suite]}", "", f"Suite `{suite}`.", ""]
    if result is None:
        return lines + [f"Not run yet: `python -m benchmarks.run --only {suite}`.", ""]
    lines += [run_line(result, machines), ""]
    status = result.get("status")
    if status == "not_run":
        return lines + [f"Not run: {result['reason']}", ""]
    if status == "failed":
        return lines + ["The suite failed:", "", "```", result["reason"].rstrip(), "```", ""]
    if suite == "leak":
        refresh_leak(result)
    if suite == "in_memory":
        from .suites.in_memory import plot_sweep

        plot_sweep(result["sweep"], DOCS_DIR / result["plot"])
        return lines + in_memory_section(result)
    return lines + generic_section(result)


def render(path: Path = PAGE) -> Path:
    """Write the page from every saved result and return its path."""
    results = {suite: load_result(suite) for suite in SUITES}
    present = {suite: r for suite, r in results.items() if r is not None}
    machines = {}
    for result in present.values():
        key = machine_key(result["machine"])
        machines.setdefault(key, chr(ord("A") + len(machines)))
    lines = [INTRO]
    if present:
        lines += machine_section(machines, present)
    for suite in SUITES:
        lines += suite_section(suite, results[suite], machines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
