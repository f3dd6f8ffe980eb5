#!/usr/bin/env bash
# esm2go GPU benchmark, side by side with PyTorch packed varlen and HF padded batches.
#   bash bench/run.sh --out "$OUT/bench" [--models 35M,150M,650M] [--n 20000] [--budget-s 20] [--dry-run]
# Needs bin/esm2go (go build -o bin/esm2go ./cmd/esm2go) unless --dry-run; on the GPU host
# python3 with torch, transformers, safetensors, numpy. See docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CUDA_DEVICE_ORDER=PCI_BUS_ID   # CUDA ordinal 0 == nvidia-smi index 0 (BENCH_GPU)
export PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false

dry=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry=1; done
if [ "$dry" = 0 ]; then
  if [ ! -x bin/esm2go ]; then
    echo "bin/esm2go missing: build it on a Go machine with 'go build -o bin/esm2go ./cmd/esm2go' and carry bin/" >&2
    exit 2
  fi
  python3 -c 'import torch, transformers, safetensors, numpy' || { echo "python3 needs torch, transformers, safetensors, numpy" >&2; exit 2; }
  command -v nvidia-smi >/dev/null || echo "warning: nvidia-smi not found: no GPU busy % or memory" >&2
fi
exec python3 bench/bench.py "$@"
