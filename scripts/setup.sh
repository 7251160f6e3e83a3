#!/usr/bin/env bash
# Create or reuse .venv and install the kit with everything it needs (idempotent).
# torch and torchvision go first, as a pinned pair: on this project's CPU machines pip
# takes them from local wheels, and with them segmentation-models-pytorch/timm import.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${A2M_VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.a2m-installed"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    "$VENV/bin/python" -m pip install -q numpy cython
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    echo "$want" > "$stamp"
fi
