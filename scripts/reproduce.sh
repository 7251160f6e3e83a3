#!/usr/bin/env bash
# Set up (if needed) and run the numbered notebooks headless; default profile: toy.
#   bash scripts/reproduce.sh [toy|smoke|smoke-sd|sd-colab|sd-paper] [--only NOTEBOOK ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
profile=${1:-toy}
shift || true
exec "${A2M_VENV:-.venv}/bin/python" -m a2m_utils.study.runner --profile "$profile" "$@"
