#!/usr/bin/env bash
# Run the whole postfit test suite on a fresh machine.
#
# Creates .venv (if missing), installs postfit with its test extra, then runs
# pytest inside a network namespace that holds only loopback, because the
# Dask and Ray cluster tests must not listen on, or probe, any other address.
# Extra arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

.venv/bin/ruff check postfit tests benchmarks
.venv/bin/ruff format --check postfit tests benchmarks

# unshare needs root (or user namespaces); `ip link set lo up` brings up the
# namespace's own loopback, its only interface.
exec unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m pytest "$@"' pytest "$@"
