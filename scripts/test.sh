#!/usr/bin/env bash
# Set up (if needed) and run the test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${A2M_VENV:-.venv}/bin/python" -m pytest -q "$@"
