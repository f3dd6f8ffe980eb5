#!/usr/bin/env bash
# The test suite (README "Tests"; .ci/run runs exactly this): every package's
# tests (no GPU, no network needed), the same (-short) in a pure-Go build
# (CGO_ENABLED=0, what a machine without a C compiler builds), then a short
# run of every fuzz target of a parser that reads user files (FUZZTIME each,
# default 15s; FUZZTIME=0 skips fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

go test ./...
CGO_ENABLED=0 go test -short ./...

fuzztime=${FUZZTIME:-15s}
[ "$fuzztime" = 0 ] && exit 0
# FASTA, safetensors headers, config.json, torch .pt/pickle, esm2go outputs
# (merge and resume read them back), hub replies, variant tables and mutants.
for target in \
	./data:FuzzFASTA \
	./weights:FuzzSafetensors ./weights:FuzzConfig ./weights:FuzzTorch ./weights:FuzzTorchPickle \
	./weights:FuzzCheckContentRange ./weights:FuzzValidRepoPath ./weights:FuzzServerText \
	./output:FuzzOpenParquet ./output:FuzzOpenNPY ./output:FuzzThriftWalk \
	./score:FuzzParseMutant ./score:FuzzReadTable; do
	pkg=${target%%:*} name=${target#*:}
	echo "fuzz $pkg $name ($fuzztime)"
	go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "$pkg"
done
