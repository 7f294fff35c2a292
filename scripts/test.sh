#!/usr/bin/env bash
# Run the whole postfit test suite on a fresh machine.
#
# Creates .venv (if missing), installs postfit with its test extra, then runs
# pytest inside a network namespace that holds only loopback, because the
# Dask and Ray cluster tests must not listen on, or probe, any other address.
# Extra arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# PYTHON picks the interpreter and VENV the environment's folder, for example
# PYTHON=python3.10 VENV=.venv310 to test on the oldest supported Python.
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[test]'

"$VENV/bin/ruff" check postfit tests benchmarks
"$VENV/bin/ruff" format --check postfit tests benchmarks

# unshare needs root (or user namespaces); `ip link set lo up` brings up the
# namespace's own loopback, its only interface.
export VENV
# The tests write the id of each test as it starts to this file, which the
# failure report prints: a process that dies inside a test prints nothing more.
POSTFIT_CURRENT_TEST_FILE="$(mktemp)"
export POSTFIT_CURRENT_TEST_FILE
status=0
started="$(date +%s)"
unshare -n sh -c 'ip link set lo up && exec "$VENV/bin/python" -m pytest "$@"' pytest "$@" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
    bash scripts/failure_report.sh "$status" "$started" "$POSTFIT_CURRENT_TEST_FILE" >&2 || true
fi
rm -f "$POSTFIT_CURRENT_TEST_FILE"
exit "$status"
