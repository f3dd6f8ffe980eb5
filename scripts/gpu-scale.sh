#!/usr/bin/env bash
# Multi-device and resume checks on a GPU host (no Go needed there):
#
#   scripts/gpu-scale.sh OUTDIR [MODEL_SHAPE] [N]      # e.g. 35M 20000
#
#   1. a random model of MODEL_SHAPE (bench/make_models.py) and N synthetic
#      sequences (bench/common.py);
#   2. esm2go embed --device cuda:0, then the same input with every device
#      list given in DEVICES (default "cuda:0,0"; "cuda:0,1 cuda:all" on a
#      two-GPU host): own time and rows compared (tests/compare_npy.py);
#   3. resume under SIGKILL with the CUDA backend: kill at KILLS random
#      moments (default 4), rerun until it completes, compare with step 2's
#      one-device output within the fp16 bound;
#   4. --shard 0/2 and 1/2 as two processes, esm2go merge, compare.
# Exit status is non-zero if a step fails; OUTDIR/summary.txt lists each.
set -uo pipefail
out=${1:?usage: scripts/gpu-scale.sh OUTDIR [MODEL_SHAPE] [N]}
shape=${2:-35M}
n=${3:-20000}
devices=${DEVICES:-cuda:0,0}
kills=${KILLS:-4}
cd "$(dirname "$0")/.."
mkdir -p "$out"
work=/tmp/esm2go-scale
mkdir -p "$work"
export PYTHONUNBUFFERED=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
status=0
step() { # name, command...
	local name=$1; shift
	local t0=$SECONDS
	"$@" >"$out/$name.log" 2>&1
	local rc=$?
	printf '%-28s rc=%d %4ds\n' "$name" "$rc" $((SECONDS - t0)) | tee -a "$out/summary.txt"
	[ $rc = 0 ] || status=1
	return $rc
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
step make_model python3 bench/make_models.py --out "$work/models" --models "$shape"
model=$(find "$work/models" -maxdepth 3 -type d -name "esm2_${shape}_shape" | head -1)
fasta=$work/synthetic_n$n.fasta
step make_input python3 -c "import sys; sys.path.insert(0, 'bench'); import common as C; C.write_fasta('$fasta', C.synthetic_records($n))"
emb() { # out, extra args...
	local o=$1; shift
	rm -rf "$o" "$o.parts"
	bin/esm2go embed --model "$model" --format npy --include mean --metrics-every 50 --out "$o" "$@" "$fasta"
}
step one_device emb "$work/one" --device cuda:0
for d in $devices; do
	tag=${d//[:,]/_}
	step "devices_$tag" emb "$work/$tag" --device "$d"
	step "compare_$tag" python3 tests/compare_npy.py "$work/one" "$work/$tag" 3e-2
done
grep -h '"msg":"done"\|msg=done' "$out"/one_device.log "$out"/devices_*.log >"$out/throughput.txt" 2>/dev/null

# Resume under SIGKILL: kill at random moments within one run's duration.
t1=$(python3 -c "import re,sys; s=open('$out/one_device.log').read(); m=re.search(r'msg=done .* time=([0-9.]+)s', s); print(m.group(1) if m else 5)")
rm -rf "$work/killed" "$work/killed.parts"
resume() {
	local i rc
	for i in $(seq 1 "$kills"); do
		bin/esm2go embed --model "$model" --format npy --include mean --device cuda:0 -q --commit-rows 2000 --out "$work/killed" "$fasta" &
		local pid=$!
		sleep "$(python3 -c "import random; print(round(random.uniform(0.8, 0.8 + float('$t1')), 2))")"
		kill -9 $pid 2>/dev/null; wait $pid; rc=$?
		echo "attempt $i: rc=$rc; parts: $(python3 -c "import json; m=json.load(open('$work/killed.parts/manifest.json')); print(len(m['chunks']), 'chunks, next', m['chunks'][-1]['next'] if m['chunks'] else 0)" 2>/dev/null)"
	done
	bin/esm2go embed --model "$model" --format npy --include mean --device cuda:0 --commit-rows 2000 --out "$work/killed" "$fasta"
}
step resume_sigkill resume
step compare_resume python3 tests/compare_npy.py "$work/one" "$work/killed" 3e-2

# Shards as two processes (one per GPU where there are two), then merge.
shards() {
	rm -rf "$work"/shard-* "$work/merged"
	local ngpu; ngpu=$(nvidia-smi -L | wc -l)
	for i in 0 1; do
		CUDA_VISIBLE_DEVICES=$((i % ngpu)) bin/esm2go embed --model "$model" --format npy --include mean --device cuda:0 -q \
			--shard "$i/2" --out "$work/shard-$i" "$fasta" &
	done
	wait -n && wait -n
	bin/esm2go merge "$work/merged" "$work"/shard-0 "$work"/shard-1
}
if bin/esm2go embed --help 2>&1 | grep -q -- --shard; then step shards_merge shards; step compare_shards python3 tests/compare_npy.py "$work/one" "$work/merged" 3e-2; fi
cat "$out/summary.txt"
exit $status
