#!/usr/bin/env bash
# The test suite (README "Tests"; .ci/run runs exactly this): every package's
# tests (no GPU, no network needed), then a short run of every fuzz target
# of a parser that reads user files (FUZZTIME each, default 15s; FUZZTIME=0
# skips fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

go test ./...

fuzztime=${FUZZTIME:-15s}
[ "$fuzztime" = 0 ] && exit 0
# FASTA, safetensors headers, config.json, torch .pt/pickle, esm2go outputs
# (merge and resume read them back), hub replies.
for target in \
	./data:FuzzFASTA \
	./weights:FuzzSafetensors ./weights:FuzzConfig ./weights:FuzzTorch ./weights:FuzzTorchPickle \
	./weights:FuzzCheckContentRange ./weights:FuzzValidRepoPath ./weights:FuzzServerText \
	./output:FuzzOpenParquet ./output:FuzzOpenNPY ./output:FuzzThriftWalk; do
	pkg=${target%%:*} name=${target#*:}
	echo "fuzz $pkg $name ($fuzztime)"
	go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "$pkg"
done
