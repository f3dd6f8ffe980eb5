#!/bin/bash
# On the GPU host: build variants of the wgmma GEMM experiment and run them on the forward's shapes.
# Usage: bash scripts/wgmma/run.sh OUTDIR
set -u
out=${1:-/tmp/wgmma}; mkdir -p "$out"
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
declare -A V=(
  [base]=""
  [regs_w1]="-DREGS=1 -DWAIT1=1"
  [regs_w1_cl2]="-DREGS=1 -DWAIT1=1 -DCLUSTER=2"
  [regs_w1_direct]="-DREGS=1 -DWAIT1=1 -DEPI_DIRECT=1"
  [regs_w1_s4direct]="-DREGS=1 -DWAIT1=1 -DEPI_DIRECT=1 -DSTAGES=4"
  [r96]="-DREGS=1 -DWAIT1=1 -DREG_SMALL=96 -DREG_BIG=200"
  [r96u4]="-DREGS=1 -DWAIT1=1 -DREG_SMALL=96 -DREG_BIG=200 -DEPI_UNROLL=4"
  [r120u4]="-DREGS=1 -DWAIT1=1 -DREG_SMALL=120 -DREG_BIG=184 -DEPI_UNROLL=4"
)
names=${VARIANTS:-regs_w1 r96 r96u4 r120u4}
for v in $names; do
  ( nvcc -O3 -std=c++17 ${V[$v]} -gencode arch=compute_90a,code=sm_90a -Xptxas -v -o gemm_$v gemm.cu -lcuda -lcublasLt \
    > "$out/build_$v.txt" 2>&1 || echo "BUILD FAILED $v" ) &
done
wait
for v in $names; do
  echo "== $v: $(grep -E 'registers|spill' "$out/build_$v.txt" | tr '\n' ' ' | head -c 300)"
  grep -i "error" "$out/build_$v.txt" | head -5
done 2>&1 | tee "$out/builds.txt"
shapes=("650M_fc1 16596 5120 1280" "35M_fc1 16596 1920 480" "3B_fc1 16596 10240 2560")
for shape in "${shapes[@]}"; do
  set -- $shape
  for v in $names; do
    [ -x gemm_$v ] || continue
    timeout 60 ./gemm_$v $2 $3 $4 "$v:$1" 2>&1 | grep -v "^$" | tee -a "$out/results.txt" | grep -E "times|differ" | grep -v " 0.00% differ" | sed 's/ (ms, median of 30)//'
  done
  for g in ${CL2_GRIDS:-}; do
    [ -x gemm_regs_w1_cl2 ] || continue
    GRID=$g timeout 60 ./gemm_regs_w1_cl2 $2 $3 $4 "cl2_grid$g:$1" 2>&1 | tee -a "$out/results.txt" | grep -E "times" | sed 's/ (ms, median of 30)//'
  done
done
rm -f "$out"/build_*.txt
