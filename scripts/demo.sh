#!/usr/bin/env bash
# One command from a fresh checkout to embeddings: installs OpenBLAS when it
# can (optional), builds bin/esm2go and embeds the test proteins with the
# committed tiny model into out/demo.parquet.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null 2>&1 || { echo "demo: Go is required (https://go.dev/dl/)" >&2; exit 1; }
scripts/install-openblas.sh
mkdir -p bin out
go build -o bin/esm2go ./cmd/esm2go
bin/esm2go info --model tests/testdata/models/tiny
bin/esm2go embed --overwrite --model tests/testdata/models/tiny \
	tests/testdata/fairesm_some_proteins.fasta --out out/demo.parquet "$@"
echo "demo: wrote out/demo.parquet" >&2
