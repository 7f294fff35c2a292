"""Run the postfit benchmarks and write ``docs/benchmarks.md``.

Usage, from the repository root::

    python -m benchmarks.run             # every suite, full size (tens of minutes)
    python -m benchmarks.run --quick     # every suite on small data (a smoke run)
    python -m benchmarks.run --only in_memory --only leak
    python -m benchmarks.run --render    # rewrite the page from saved results only

Each suite's result is saved as ``benchmarks/results/NAME.json`` and the page
is rendered from every saved result, so suites can be rerun one at a time.
The results are committed with the page, so that a fresh checkout can rerun
one suite without losing the others. The data and models the suites make
go to ``benchmarks/results/data/``, which git ignores. Suites that start a
Dask or Ray cluster are rerun in a child process inside a network namespace
that holds only loopback (``unshare -n``), because Ray otherwise probes a
public address to find its own and listens on every interface.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

if not __package__:
    # Run as ``python benchmarks/run.py``: make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    REPO_DIR,
    load_average,
    machine_info,
    non_loopback_interfaces,
    now_utc,
    save_result,
)
from benchmarks.report import render  # noqa: E402
from benchmarks.suites import CLUSTER_SUITES, SUITES  # noqa: E402

#: Set to 1 where clusters may use interfaces other than loopback (the tests honour it too).
ALLOW_NETWORK_ENV = "POSTFIT_ALLOW_NETWORK"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Run the postfit benchmarks and write docs/benchmarks.md.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run on small data with few repetitions: a smoke test, not a measurement",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SUITES),
        metavar="NAME",
        help=f"run only this suite; repeat for several (choices: {', '.join(SUITES)})",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="run nothing; rewrite docs/benchmarks.md from the saved results",
    )
    parser.add_argument(
        "--no-render",
        action="store_true",
        help="save the results but do not rewrite docs/benchmarks.md",
    )
    return parser.parse_args(argv)


def needs_namespace(suite: str) -> bool:
    """Return True when ``suite`` starts a cluster and this process can reach a real network."""
    if suite not in CLUSTER_SUITES or os.environ.get(ALLOW_NETWORK_ENV) == "1":
        return False
    return bool(non_loopback_interfaces())


def run_in_namespace(suite: str, quick: bool) -> int:
    """Rerun this command for ``suite`` alone in a loopback-only network namespace."""
    command = [sys.executable, "-m", "benchmarks.run", "--only", suite, "--no-render"]
    if quick:
        command.append("--quick")
    shell = 'ip link set lo up && exec "$@"'
    print(f"[{suite}] running in a loopback-only network namespace", flush=True)
    try:
        return subprocess.run(
            ["unshare", "-n", "sh", "-c", shell, "sh", *command], cwd=REPO_DIR
        ).returncode
    except FileNotFoundError:
        print(f"[{suite}] failed: the unshare command is not installed", flush=True)
        return 1


def run_suite(suite: str, quick: bool, command: str) -> bool:
    """Run one suite in this process, save its result, and return True unless it failed."""
    print(f"[{suite}] started at {now_utc()}", flush=True)
    start = time.perf_counter()
    module = importlib.import_module(SUITES[suite])
    header = {
        "suite": suite,
        "date": now_utc(),
        "quick": quick,
        "command": command,
        "machine": machine_info(),
    }
    try:
        body = module.run(quick)
    except Exception:  # saved as a failed result so the page shows the traceback
        body = {"status": "failed", "reason": traceback.format_exc(limit=8)}
        print(body["reason"], file=sys.stderr, flush=True)
    body.setdefault("load_after", load_average())
    body["suite_seconds"] = round(time.perf_counter() - start, 1)
    path = save_result(suite, {**header, **body})
    print(f"[{suite}] {body['status']} in {body['suite_seconds']} s, saved {path}", flush=True)
    return body["status"] != "failed"


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "benchmarks.run", *(argv or sys.argv[1:])])
    ok = True
    if not args.render:
        for suite in args.only or list(SUITES):
            if needs_namespace(suite):
                ok = run_in_namespace(suite, args.quick) == 0 and ok
            else:
                ok = run_suite(suite, args.quick, command) and ok
    if not args.no_render:
        page = render()
        print(f"wrote {page}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
