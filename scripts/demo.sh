#!/usr/bin/env bash
# One command from a fresh checkout to embeddings: installs OpenBLAS when it
# can (optional), builds bin/esm2go and embeds the test proteins with the
# committed tiny model into out/demo.parquet.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null 2>&1 || { echo "demo: Go is required (https://go.dev/dl/)" >&2; exit 1; }
# Without a C compiler Go builds the pure-Go esm2go (CGO_ENABLED=0): CPU only,
# with the slower pure-Go matmul.
command -v "${CC:-gcc}" >/dev/null 2>&1 ||
	echo "demo: no C compiler: building the CPU-only pure-Go esm2go; for CUDA and the fast CPU kernels install one (Debian/Ubuntu: sudo apt install gcc) and rerun" >&2
scripts/install-openblas.sh
mkdir -p bin out
# The same version stamp as the Makefile's (scripts/version.sh).
go build -ldflags="-X 'main.version=$(scripts/version.sh)'" -o bin/esm2go ./cmd/esm2go
bin/esm2go info --model tests/testdata/models/tiny
bin/esm2go embed --overwrite --model tests/testdata/models/tiny \
	tests/testdata/fairesm_some_proteins.fasta --out out/demo.parquet "$@"
echo "demo: wrote out/demo.parquet" >&2
