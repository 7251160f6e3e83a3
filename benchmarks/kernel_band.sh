#!/usr/bin/env bash
# The toy study's reproduction band across CPU float-kernel paths: the study again on another path, in a
# clone of this commit with its own data/ and results/, sharing this checkout's .venv; its metrics.json files
# go to results/bands/PATH/, which REPORT.md's band section compares with results/.
#   no-amx      oneDNN without AMX (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16), as on an AVX-512-BF16 CPU without it;
#               on an AMX machine about 14x slower (notebook 02: 324 s against 23 s)
#   onednn-off  torch's own kernels (kernel_band/sitecustomize.py); about 20x slower
#   bash benchmarks/kernel_band.sh no-amx|onednn-off CLONE_DIR [--only NOTEBOOK ...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
path=${1:?usage: kernel_band.sh no-amx|onednn-off CLONE_DIR [--only NOTEBOOK ...]}
clone=${2:?usage: kernel_band.sh no-amx|onednn-off CLONE_DIR [--only NOTEBOOK ...]}
shift 2
case $path in
    no-amx) export ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 site= ;;
    onednn-off) site="$here/benchmarks/kernel_band:" ;;
    *) echo "unknown kernel path $path: no-amx or onednn-off" >&2; exit 2 ;;
esac
[ -d "$clone" ] || git clone -q "$here" "$clone"
git -C "$clone" fetch -q "$here"
git -C "$clone" checkout -q "$(git -C "$here" rev-parse HEAD)"
(cd "$clone" && PYTHONPATH="$site$clone" A2M_VENV="$here/.venv" \
    "$here/.venv/bin/python" -m a2m_utils.study.runner --profile toy "$@")
for m in "$clone"/results/*/metrics.json "$clone"/results/run_toy.json; do
    name=$(basename "$(dirname "$m")")
    [ "$name" = results ] && name=.
    mkdir -p "$here/results/bands/$path/$name"
    cp "$m" "$here/results/bands/$path/$name/"
done
