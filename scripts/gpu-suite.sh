#!/usr/bin/env bash
# The GPU test suite: one command on a GPU host (no Go needed there).
#
#   on a dev machine:  make gpu-build            # bin/esm2go and bin/*.test
#   on the GPU host:   scripts/gpu-suite.sh OUTDIR [--shapes all|none|esm2_35M_shape,...] [--bench]
#
# It runs, logging everything under OUTDIR:
#   1. tests/gpu_parity.py: HF transformers fp32 (TF32 off) references and HF's own
#      fp16 error, for the fixture models and random 35M/150M/650M shapes;
#   2. the test binaries: internal/cudadrv, internal/nvml (NVML read through
#      its dlopen shim), esm/cuda (the varlen attention
#      kernels vs attention.Reference, every op and the forward vs the CPU
#      backend) and tests (PyTorch fixture parity on the GPU, and
#      TestGPUParityHF against 1.);
#   3. esm2go embed on the README example with --device cuda (fp32 and fp16) and
#      --device cpu, and compares the outputs (tests/compare_npy.py);
#   4. esm2go score (a mutants table with every strategy, and a scan) with
#      --device cuda (fp32, fp16) against --device cpu, and the time of a
#      1,000-residue scan on the 650M shape when step 1 saved it
#      (tests/score_gpu_check.py).
# --bench also runs esm/cuda's benchmarks (5 iterations each) in step 2.
# Exit status is non-zero if any step fails; OUTDIR/summary.txt lists each step.
set -uo pipefail
usage="usage: scripts/gpu-suite.sh OUTDIR [--shapes all|none|NAME,...] [--bench]"
out=${1:?$usage}
shift
shapes=all
bench=()
while [ $# -gt 0 ]; do
	case $1 in
	--shapes) shapes=${2:?$usage}; shift 2 ;;
	--bench) bench=(-test.bench . -test.benchtime 5x); shift ;;
	*) echo "$usage" >&2; exit 2 ;;
	esac
done
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0
step() { # name, command...
	local name=$1; shift
	local t0=$SECONDS
	"$@" >"$out/$name.log" 2>&1
	local rc=$?
	printf '%-28s rc=%d %4ds\n' "$name" "$rc" $((SECONDS - t0)) | tee -a "$out/summary.txt"
	[ $rc = 0 ] || status=1
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

step gpu_parity_py python3 tests/gpu_parity.py --out /tmp/esm2go-gpuref --shapes "$shapes"
step cudadrv_test bin/cudadrv.test -test.v
step nvml_test bin/nvml.test -test.v -test.run TestDevice0
step esmcuda_test bin/esmcuda.test -test.v "${bench[@]}"
step tests_test bash -c "cd tests && ESM2GO_GPU_PARITY_DIR=/tmp/esm2go-gpuref ESM2GO_GPU_PARITY_REPORT=$out/gpu_parity.md ../bin/tests.test -test.v"

ex=(--model tests/testdata/models/tiny tests/testdata/fairesm_some_proteins.fasta --format npy --include mean,bos,per_tok --repr-layers 0,-1 --overwrite)
step embed_cpu bin/esm2go embed --device cpu "${ex[@]}" --out /tmp/esm2go-emb-cpu
step embed_cuda_fp32 bin/esm2go embed --device cuda --precision fp32 "${ex[@]}" --out /tmp/esm2go-emb-fp32
step embed_cuda_fp16 bin/esm2go embed --device cuda --precision fp16 "${ex[@]}" --out /tmp/esm2go-emb-fp16
step compare_fp32 python3 tests/compare_npy.py /tmp/esm2go-emb-cpu /tmp/esm2go-emb-fp32 1e-4
step compare_fp16 python3 tests/compare_npy.py /tmp/esm2go-emb-cpu /tmp/esm2go-emb-fp16 3e-2
scanmodel=()
[ -d /tmp/esm2go-gpuref/models/esm2_650M_shape ] && scanmodel=(--scan-model /tmp/esm2go-gpuref/models/esm2_650M_shape)
step score_check python3 tests/score_gpu_check.py --bin bin/esm2go --out "$out/score" "${scanmodel[@]}"
cat "$out/summary.txt"
exit $status
