"""Shared fixtures: seeds, data sets, and the loopback-only guard for clusters."""

from __future__ import annotations

import os
import socket

# hypothesis's pytest plugin imports more of hypothesis in its terminal
# summary. With Python 3.11.7, pytest's rewrite of those modules there raised
# "SystemError: AST constructor recursion depth mismatch" in runs of the
# reliability and cluster tests without the property tests, which failed the
# run. Importing them here, before any test runs, avoids that late import.
import hypothesis.internal.observability  # noqa: F401
import numpy as np
import pytest

from postfit import _timings

#: Set to 1 on a machine where Dask and Ray may use interfaces other than loopback.
ALLOW_NETWORK_ENV = "POSTFIT_ALLOW_NETWORK"
#: A file that receives the id of each test as it starts, for the failure
#: report of scripts/test.sh when the whole process dies inside a test.
CURRENT_TEST_ENV = "POSTFIT_CURRENT_TEST_FILE"


def pytest_runtest_logstart(nodeid, location):
    """Write the id of the test that starts to the file named by ``CURRENT_TEST_ENV``."""
    path = os.environ.get(CURRENT_TEST_ENV)
    if path:
        with open(path, "w") as f:
            f.write(nodeid + "\n")


@pytest.fixture(autouse=True)
def _fresh_timings():
    """Start each test without timings kept by an earlier test's automatic runs."""
    _timings.MEMORY.clear()
    yield
    _timings.MEMORY.clear()


def non_loopback_interfaces() -> list[str]:
    """Return the names of network interfaces that are up and are not loopback."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return []
    return [name for name in names if name != "lo" and _is_up(name)]


def _is_up(name: str) -> bool:
    try:
        with open(f"/sys/class/net/{name}/operstate") as f:
            state = f.read().strip()
    except OSError:
        return True
    return state != "down"


def require_loopback_only():
    """Fail with instructions when a cluster test would run with a real network.

    Ray probes a public address to find its own and listens on every interface,
    so cluster tests run inside a namespace that contains nothing but loopback.
    """
    if os.environ.get(ALLOW_NETWORK_ENV) == "1":
        return
    others = non_loopback_interfaces()
    if others:
        pytest.fail(
            "Cluster tests must run in a network namespace that holds only loopback, "
            f"but these interfaces are up: {', '.join(others)}. Run the suite with "
            "`bash scripts/test.sh`, or by hand with "
            "`unshare -n sh -c 'ip link set lo up; exec .venv/bin/python -m pytest'`, "
            f"or set {ALLOW_NETWORK_ENV}=1 on a machine where that is safe.",
            pytrace=False,
        )


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def listed_cases(mark):
    """Return a ``pytest.mark.parametrize`` mark with its cases in a list.

    ``parametrize_with_checks`` of scikit-learn 1.7 gives its cases as a
    generator, which pytest 9 deprecates with a warning (an error here).
    """
    names, cases = mark.args
    return pytest.mark.parametrize(names, list(cases), **mark.kwargs)
