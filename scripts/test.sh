#!/usr/bin/env bash
# Set up (if needed) and run every check: ruff, mypy --strict, the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
VENV="${VENV:-.venv}"
"$VENV/bin/ruff" check edge_runtime tests scripts
"$VENV/bin/mypy"
"$VENV/bin/python" -m pytest "$@"
