"""Helpers shared by the benchmark suites: timing, memory sampling, machine facts, results.

Peak memory is sampled, not read from the kernel's high-water mark, because
the runs of interest span several processes (loky workers, a Dask cluster, a
Ray node). The sampler adds up the resident set size (RSS) of a process and
all its descendants every ``SAMPLE_SECONDS``. A peak shorter than that can be
missed, so the numbers are lower bounds of the true peak.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
#: Generated data sets and models live here, in a folder that git ignores.
DATA_DIR = RESULTS_DIR / "data"
DOCS_DIR = REPO_DIR / "docs"

SAMPLE_SECONDS = 0.05
#: Marker of the line a child process prints its JSON result on.
RESULT_MARKER = "BENCHMARK-RESULT "
MIB = 2**20

#: Distributions whose versions are recorded with every result.
LIBRARIES = (
    "postfit",
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "pyarrow",
    "joblib",
    "threadpoolctl",
    "dask",
    "distributed",
    "dask-ml",
    "ray",
    "polars",
    "matplotlib",
)
#: Environment variables that change how many threads BLAS and OpenMP use, or which kernel.
THREAD_ENV = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


# Machine -------------------------------------------------------------------


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def os_name() -> str:
    """Return the distribution's PRETTY_NAME and the kernel release."""
    pretty = platform.system()
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip().strip('"')
    return f"{pretty}, kernel {platform.release()}"


def library_versions() -> dict[str, str | None]:
    """Return the installed version of each distribution in ``LIBRARIES`` (None when missing).

    Versions come from the installed metadata, so that recording them imports
    nothing into the process being measured.
    """
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """Return the short commit of the repository, with ``+dirty`` when code is modified."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # The saved results and the page are the benchmark's own outputs,
        # committed with it: rewriting them leaves the code as it was.
        outputs = ["benchmarks/results", "docs/benchmarks.md", "docs/benchmarks_*.png"]
        excluded = [f":(exclude,glob){path}" for path in outputs]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine_info() -> dict:
    """Return the facts that a benchmark number depends on: hardware, software, threads."""
    # threadpoolctl only lists the libraries already loaded, so load the ones
    # the suites use (NumPy's OpenBLAS, scikit-learn's OpenMP) first.
    import numpy  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    from threadpoolctl import threadpool_info

    memory = psutil.virtual_memory()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory.total / 2**30, 1),
        "os": os_name(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "git_commit": git_commit(),
        "thread_env": {name: os.environ.get(name) for name in THREAD_ENV},
        "threadpoolctl": [
            {
                key: info.get(key)
                for key in (
                    "user_api",
                    "internal_api",
                    "prefix",
                    "version",
                    "num_threads",
                    "threading_layer",
                    "architecture",
                )
            }
            for info in sorted(
                threadpool_info(), key=lambda info: (info["user_api"], info["filepath"])
            )
        ],
    }


def load_average() -> list[float]:
    """Return the 1, 5 and 15 minute load averages, to show whether other work was running."""
    return [round(value, 2) for value in os.getloadavg()]


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def non_loopback_interfaces() -> list[str]:
    """Return the names of network interfaces that are up and are not loopback."""
    names = [name for _, name in socket.if_nameindex()]
    up = []
    for name in names:
        if name == "lo":
            continue
        try:
            state = Path(f"/sys/class/net/{name}/operstate").read_text().strip()
        except OSError:
            state = "unknown"
        if state != "down":
            up.append(name)
    return up


# Timing --------------------------------------------------------------------


#: The maximum number of runs that ``time_call`` makes to fill ``min_seconds``.
MAX_RUNS = 25


def time_call(func, repeats: int, check=None, min_seconds: float = 0.0) -> dict:
    """Call ``func()`` at least ``repeats`` times and return the best and median seconds.

    The best time is the one used in ratios: on a machine shared with other
    work, the fastest run is the one least disturbed by it. Calls that take
    tens of milliseconds are repeated until ``min_seconds`` have passed (at
    most ``MAX_RUNS`` runs), as ``timeit`` does, because three runs of 40 ms
    left the best of them about 10% above the steady time here. ``check``, when
    given, receives each run's result outside the timed span, and the result
    is dropped before the next run, as a batch job drops each output once it
    has written it.
    """
    seconds = []
    while len(seconds) < repeats or (sum(seconds) < min_seconds and len(seconds) < MAX_RUNS):
        start = time.perf_counter()
        result = func()
        seconds.append(time.perf_counter() - start)
        if check is not None:
            check(result)
        del result
    return {
        "best": min(seconds),
        "median": statistics.median(seconds),
        "runs": seconds,
    }


# Memory --------------------------------------------------------------------


def tree_rss(process: psutil.Process) -> int:
    """Return the RSS in bytes of ``process`` and every descendant still alive."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += member.memory_info().rss
    return total


class PeakRssSampler:
    """Sample the RSS of a process tree in a background thread and keep the peak.

    Use as a context manager; ``peak`` is in bytes.
    """

    def __init__(self, pid: int | None = None, interval: float = SAMPLE_SECONDS):
        self.process = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.process))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.process))


def run_child(target: str, kwargs: dict, timeout: float = 3600) -> dict:
    """Run ``module:function(**kwargs)`` in a fresh Python process and measure it.

    The function returns a JSON-serialisable dict, which comes back with
    ``peak_rss_mib`` (the sampled peak of the child's process tree, cluster
    processes included) and ``wall_seconds`` added. A child that fails
    returns ``{"error": ...}`` with the end of its output, so that one broken
    variant does not stop a suite.
    """
    command = [sys.executable, "-m", "benchmarks._child", target, json.dumps(kwargs)]
    start = time.perf_counter()
    child = subprocess.Popen(
        command,
        cwd=REPO_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with PeakRssSampler(child.pid) as sampler:
        try:
            output, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            output, _ = child.communicate()
            return {"error": f"timed out after {timeout} s", "output_tail": output[-2000:]}
    wall = time.perf_counter() - start
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
            result["peak_rss_mib"] = round(sampler.peak / MIB, 1)
            result["wall_seconds"] = round(wall, 2)
            return result
    return {
        "error": f"child exited with code {child.returncode} and no result",
        "output_tail": output[-2000:],
    }


def model_nbytes(model) -> int:
    """Return the size of ``model`` pickled, in bytes."""
    import pickle

    return len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))


# Results -------------------------------------------------------------------


def result_path(suite: str) -> Path:
    return RESULTS_DIR / f"{suite}.json"


def save_result(suite: str, result: dict) -> Path:
    """Write one suite's result as JSON under ``benchmarks/results/``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = result_path(suite)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return path


def load_result(suite: str) -> dict | None:
    path = result_path(suite)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def feature_available(check) -> str | None:
    """Return None when ``check()`` passes, else the reason it failed, for a 'not run' record."""
    try:
        check()
    except Exception as exc:  # any failure means the feature cannot be benchmarked yet
        return f"{type(exc).__name__}: {exc}"
    return None
