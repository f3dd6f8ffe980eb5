// Varlen (unpadded) multi-head attention, FlashAttention-style: one block per
// (query tile, sequence, head), K/V streamed through shared memory in tiles,
// online softmax with fp32 statistics and fp32 accumulation. No T×T buffer:
// memory is linear in tokens. Its plain Go twin is attention.Reference.
//
// Legend: T = total tokens, H = heads, HD = head dim, D = H*HD, nseq =
// sequences. q, k, v are column blocks of the packed qkv (T, 3*D) with row
// stride ld = 3*D; out is (T, ldo) with heads merged in the same order.
// cu_seqlens is (nseq+1) int32.
//
// Compiled by NVRTC with -DELEM=<__half|__nv_bfloat16|float> and
// -DELEM_NAME=<f16|bf16|f32>; kernels are extern "C" varlen_fwd_<name>_hd<HD>.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

#define VARLEN_BQ 64 // queries per block
#define VARLEN_BK 32 // keys per shared-memory tile

// varlen_fwd: blockIdx = (query tile, sequence, head). G = threads per query
// row (HD/32 for HD >= 64, else 1); thread g of a query holds the head dims
// d*G+g (interleaved, so the G threads hit different shared-memory banks) of
// q and of the output accumulator, and the q·k partial sums are reduced over
// the G neighbouring lanes with shuffles. Blocks whose tile starts past the
// sequence's end return at once (the grid is sized by the longest sequence).
template <typename T, int HD>
__device__ __forceinline__ void varlen_fwd(T* __restrict__ out, int ldo,
                                           const T* __restrict__ q, const T* __restrict__ k,
                                           const T* __restrict__ v, int ld,
                                           const int* __restrict__ cu_seqlens, float scale) {
  constexpr int G = HD >= 64 ? HD / 32 : 1;
  constexpr int DP = HD / G;  // head dims per thread
  constexpr int BQ = VARLEN_BQ, BK = VARLEN_BK, NT = BQ * G;
  __shared__ float Ks[BK][HD];
  __shared__ float Vs[BK][HD];

  const int seq = blockIdx.y, h = blockIdx.z;
  const int start = cu_seqlens[seq];
  const int n = cu_seqlens[seq + 1] - start;
  const int q0 = blockIdx.x * BQ;
  if (q0 >= n) return;
  const int tid = threadIdx.x, qi = tid / G, g = tid % G;
  const int row = q0 + qi;
  const bool valid = row < n;

  float qr[DP], acc[DP];
#pragma unroll
  for (int d = 0; d < DP; d++) {
    qr[d] = valid ? to_f(q[(long)(start + row) * ld + h * HD + d * G + g]) * scale : 0.f;
    acc[d] = 0.f;
  }
  float m = __int_as_float(0xff800000), l = 0.f;  // -inf (no math.h under NVRTC)

  for (int kt = 0; kt < n; kt += BK) {
    const int kn = min(BK, n - kt);
    __syncthreads();
    for (int i = tid; i < kn * HD; i += NT) {
      const int r = i / HD, c = i % HD;
      const long off = (long)(start + kt + r) * ld + h * HD + c;
      Ks[r][c] = to_f(k[off]);
      Vs[r][c] = to_f(v[off]);
    }
    __syncthreads();
    float s[BK];
    float mt = m;
#pragma unroll
    for (int j = 0; j < BK; j++) {
      if (j < kn) {  // block-uniform: every lane takes part in the shuffles
        float dot = 0.f;
#pragma unroll
        for (int d = 0; d < DP; d++) dot += qr[d] * Ks[j][d * G + g];
#pragma unroll
        for (int o = G / 2; o > 0; o /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        s[j] = dot;
        mt = fmaxf(mt, dot);
      }
    }
    const float corr = expf(m - mt);  // m = -inf on the first tile: 0
    l *= corr;
#pragma unroll
    for (int d = 0; d < DP; d++) acc[d] *= corr;
#pragma unroll
    for (int j = 0; j < BK; j++) {
      if (j < kn) {
        const float p = expf(s[j] - mt);
        l += p;
#pragma unroll
        for (int d = 0; d < DP; d++) acc[d] += p * Vs[j][d * G + g];
      }
    }
    m = mt;
  }
  if (valid) {
    const float inv = 1.f / l;
#pragma unroll
    for (int d = 0; d < DP; d++)
      out[(long)(start + row) * ldo + h * HD + d * G + g] = from_f<T>(acc[d] * inv);
  }
}

#define CAT3(a, b, c) a##b##c
#define XCAT3(a, b, c) CAT3(a, b, c)
#define VARLEN_INST(HD)                                                                          \
  extern "C" __global__ void __launch_bounds__(VARLEN_BQ*(HD >= 64 ? HD / 32 : 1))              \
      XCAT3(varlen_fwd_, ELEM_NAME, _hd##HD)(ELEM * out, int ldo, const ELEM* q, const ELEM* k,  \
                                              const ELEM* v, int ld, const int* cu_seqlens,      \
                                              float scale) {                                     \
    varlen_fwd<ELEM, HD>(out, ldo, q, k, v, ld, cu_seqlens, scale);                              \
  }

VARLEN_INST(16)
VARLEN_INST(24)
VARLEN_INST(32)
VARLEN_INST(64)
VARLEN_INST(128)
