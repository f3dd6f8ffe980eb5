#!/usr/bin/env bash
# Per-kernel GPU time of one forward pass, measured with Nsight Compute (ncu).
#
#   on a dev machine:  make gpu-build
#   on the GPU host:   scripts/profile.sh OUTDIR [SIZES]     # SIZES: comma list, default 35M,650M
#
# For each size it runs BenchmarkForwardCUDA (esm/cuda; 16.6k tokens in 46
# sequences of 30..1022, fp16 unless $PROFILE_PRECISION) once under ncu,
# timing every kernel (gpu__time_duration, no clock locking, no cache flush:
# as in a normal run, kernels serialized), and writes OUTDIR/ncu-SIZE.csv and
# OUTDIR/profile-SIZE.txt: the last forward's kernels grouped by name, with
# their share of the forward's summed kernel time (scripts/ncu_summary.py).
# With $PROFILE_KERNEL (a regex, e.g. varlen_fa2) it also writes
# OUTDIR/detail-SIZE.txt: ncu's detailed section set (throughput, occupancy,
# warp stall reasons) for the last launch of that kernel in one forward.
set -euo pipefail
out=${1:?usage: scripts/profile.sh OUTDIR [SIZES]}
sizes=${2:-35M,650M}
cd "$(dirname "$0")/.."
mkdir -p "$out"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
for size in ${sizes//,/ }; do
	bench=(${ESMCUDA_TEST:-bin/esmcuda.test} -test.run '^$' -test.bench ForwardCUDA -test.benchtime 1x
		-bench-sizes "$size" -bench-precision "${PROFILE_PRECISION:-fp16}")
	"$ncu" --clock-control none --cache-control none \
		--metrics gpu__time_duration.sum --export "$out/ncu-$size" --force-overwrite \
		"${bench[@]}" >"$out/ncu-$size.log" 2>&1
	"$ncu" --import "$out/ncu-$size.ncu-rep" --csv --page raw >"$out/ncu-$size.csv"
	rm -f "$out/ncu-$size.ncu-rep"
	python3 scripts/ncu_summary.py "$out/ncu-$size.csv" | tee "$out/profile-$size.txt"
	if [ -n "${PROFILE_KERNEL:-}" ]; then
		# The benchmark runs two forwards (warm-up, timed); skip the first's launches.
		n=$(grep -c "\"$PROFILE_KERNEL" "$out/ncu-$size.csv" || true)
		"$ncu" --clock-control none --set detailed --section WarpStateStats \
			--section SourceCounters -k "regex:$PROFILE_KERNEL" --launch-skip $((n - 1)) --launch-count 1 \
			"${bench[@]}" >"$out/detail-$size.txt" 2>&1
	fi
done
