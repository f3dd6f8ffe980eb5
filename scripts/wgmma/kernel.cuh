// An experiment, not part of the build: Linear layers on Hopper (sm_90a) with
// wgmma and TMA, y = x·wᵀ + b, or gelu(x·wᵀ + b) with the exact-erf GELU of
// esm/cuda/kernels.cu (gelu_f) applied to the fp16-rounded x·wᵀ + b, as
// Linear then GELU (gelu_lut) compute it. Harness: gemm.cu beside this;
// run.sh builds the variants below and times them against cuBLASLt on the
// GPU host. What it measured: esm/cuda/NOTES.md ("A GEMM of our own").
// Commit 32f9211 had it in the backend (NVRTC, a TensorMap binding in
// internal/cudadrv, LinearGELU for FC1); it was slower there and was taken out.
//
// x: M×K fp16 row-major (a batch's activations), w: N×K fp16 row-major
// (a Linear's weight), b: N fp16, y: M×N fp16; both operands reach shared
// memory by TMA (tensor maps built by the host, 128-byte swizzle,
// zero-filled past M, N and K). Persistent: each CTA walks 128×256 output
// tiles, BK = 64, through a STAGES-deep ring of mbarriers:
//   warp 0           TMA producer (one thread)
//   warps 1..3 (and warpgroup 3 with EPIWG)
//                    epilogue: a finished tile (fp16, bias added) from the
//                    staging buffer, GELU, 16-byte coalesced stores
//   warpgroups 1, 2  consumers: 64×256 each with wgmma m64n256k16, then
//                    acc + bias rounded to fp16 into the staging buffer
// so that a tile's GELU and stores run while the next tile's products do.
// Variants (macros): REGS (setmaxnreg: registers to the consumers), WAIT1
// (one wgmma group kept in flight), CLUSTER = 2 (the two CTAs of a cluster
// take consecutive m-tiles of one n-tile and each loads half of B,
// multicast to both), EPIWG (seven epilogue warps; does not compile: see the
// notes), EPI_DIRECT (the consumers apply bias and GELU and store from their
// accumulators), STAGES, REG_SMALL / REG_BIG (setmaxnreg's counts), EPI_UNROLL.
#ifdef __CUDACC_RTC__
// Under NVRTC (no cuda.h): the tensor map's layout (128 opaque bytes, 64-byte aligned).
struct alignas(64) CUtensorMap {
  unsigned long long opaque[16];
};
#endif
#include <cuda_fp16.h>
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

#ifndef STAGES
#define STAGES 3
#endif
#define BM 128
#define BN 256
#define BK 64
#define SROW (BN + 8) // staging row, halves (padded: 528 bytes, no bank conflicts)

// wgmma m64n256k16: d (64×256 fp32, 128 per thread) += A (64×16) · B (256×16)ᵀ,
// fp16 A and B from shared memory by descriptor (both K-major).
#define D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
__device__ __forceinline__ void wgmma_256(float* d, u64 da, u64 db) {
  asm volatile(
    "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {"
    "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
    "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
    "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
    "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"
    "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"
    "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,"
    "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"
    "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"
    "}, %128, %129, 1, 1, 1, 0, 0;\n"
    : D8(0), D8(8), D8(16), D8(24), D8(32), D8(40), D8(48), D8(56),
      D8(64), D8(72), D8(80), D8(88), D8(96), D8(104), D8(112), D8(120)
    : "l"(da), "l"(db));
}
#undef D8

__device__ __forceinline__ u32 su32(const void* p) { return (u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(u64* b, unsigned n) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(su32(b)), "r"(n));
}
__device__ __forceinline__ void mbar_expect_tx(u64* b, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(su32(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u64* b) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(su32(b)) : "memory");
}
__device__ __forceinline__ void mbar_wait(u64* b, unsigned parity) {
  asm volatile(
      "{\n.reg .pred p;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT;\n}\n" ::"r"(su32(b)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* map, u64* bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];" ::"r"(su32(dst)),
      "l"((u64)map), "r"(su32(bar)), "r"(c0), "r"(c1)
      : "memory");
}
#ifndef CLUSTER
#define CLUSTER 1
#endif
#ifndef REGS
#define REGS 0
#endif
#ifndef WAIT1
#define WAIT1 0
#endif
// EPIWG: a fourth warpgroup of epilogue warps (7 in all instead of 3).
#ifndef EPIWG
#define EPIWG 0
#endif
// EPI_DIRECT: the consumers apply bias and GELU and store from their
// accumulators (no staging buffer, no epilogue warps).
#ifndef EPI_DIRECT
#define EPI_DIRECT 0
#endif
#define NTHREADS (EPIWG ? 512 : 384)
#define STAGING_BYTES (EPI_DIRECT ? 0 : BM * SROW * 2)
#define NEPI (EPIWG ? 224 : 96)
// Registers per thread after setmaxnreg: REG_SMALL for the producer and
// epilogue warpgroup(s), REG_BIG for the consumers (multiples of 8; at most
// 64K per SM in all).
#ifndef REG_SMALL
#if EPIWG
#define REG_SMALL 48
#define REG_BIG 208
#else
#define REG_SMALL 56
#define REG_BIG 224
#endif
#endif
#ifndef EPI_UNROLL
#define EPI_UNROLL 2
#endif
constexpr int epi_unroll = EPI_UNROLL; // (#pragma unroll does not expand macros)
#define STR_(x) #x
#define STR(x) STR_(x)
__device__ __forceinline__ void tma_load_mc(void* dst, const CUtensorMap* map, u64* bar, int c0, int c1, u16 mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%3, %4}], [%2], %5;" ::"r"(su32(dst)),
      "l"((u64)map), "r"(su32(bar)), "r"(c0), "r"(c1), "h"(mask)
      : "memory");
}
// Arrive on the barrier at the same offset in CTA rank of the cluster.
__device__ __forceinline__ void mbar_arrive_cta(u64* b, unsigned rank) {
  asm volatile(
      "{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\n"
      "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [ra];\n}\n" ::"r"(su32(b)),
      "r"(rank)
      : "memory");
}
__device__ __forceinline__ unsigned cta_rank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
// A consumer warpgroup is done reading a stage: arrive on its empty barrier
// in every CTA of the cluster (each CTA's producer multicasts into all).
__device__ __forceinline__ void release_stage(u64* empty) {
#if CLUSTER > 1
  for (int r = 0; r < CLUSTER; r++) mbar_arrive_cta(empty, r);
#else
  mbar_arrive(empty);
#endif
}
// Tile i of this CTA: with clusters, the CTAs of a cluster take consecutive
// m-tiles of one n-tile (they share B's tiles); a CTA whose m-tile lies past
// M still loads and multicasts its half of B and stores nothing.
struct Tiles {
  int MT, NT, n;  // n: tiles (or cluster tiles) in all
  __device__ bool get(int i, int& m0, int& n0) const {
    int t = (int)(blockIdx.x / CLUSTER) + i * (int)(gridDim.x / CLUSTER);
    if (t >= n) return false;
    int mt = (t / NT) * CLUSTER + (CLUSTER > 1 ? (int)cta_rank() : 0);
    m0 = mt * BM;
    n0 = (t % NT) * BN;
    return true;
  }
};

// K-major operand in 128-byte-swizzled rows of 64 halves: 8-row groups 1,024 bytes apart.
__device__ __forceinline__ u64 desc128(const void* p) {
  u64 a = su32(p);
  return ((a & 0x3FFFF) >> 4) | (1ull << 16) | ((u64)(1024 >> 4) << 32) | (1ull << 62);
}
__device__ __forceinline__ float gelu_f(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }

// The kernels' body. mx and mw point at the kernels' __grid_constant__
// parameters (the copy engine reads a tensor map from parameter, constant
// or global memory, never from a local copy).
template <bool GELU>
__device__ __forceinline__ void gemm_body(const CUtensorMap* mx, const CUtensorMap* mw, const half* __restrict__ bias,
                                          half* __restrict__ y, int M, int N, int K) {
  extern __shared__ unsigned char raw[];
  unsigned char* base = (unsigned char*)(((u64)raw + 1023) & ~(u64)1023);
  half* sa = (half*)base;                                  // STAGES × BM×BK
  half* sb = (half*)(base + STAGES * BM * BK * 2);         // STAGES × BN×BK
  half* st = (half*)(base + STAGES * (BM + BN) * BK * 2);  // BM × SROW
  u64* full = (u64*)(base + STAGES * (BM + BN) * BK * 2 + STAGING_BYTES);
  u64* empty = full + STAGES;
  u64* sfull = empty + STAGES;
  u64* sempty = sfull + 1;

  const int tid = threadIdx.x, wg = tid / 128, warp = tid / 32, lane = tid % 32;
  const int KT = (K + BK - 1) / BK;
  Tiles T;
  T.MT = (M + BM - 1) / BM;
  T.NT = (N + BN - 1) / BN;
  T.n = (T.MT + CLUSTER - 1) / CLUSTER * T.NT;
  if (tid == 0) {
    for (int s = 0; s < STAGES; s++) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], 2 * CLUSTER);
    }
    mbar_init(sfull, 256);
    mbar_init(sempty, NEPI);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
#if CLUSTER > 1
  cluster_sync();
#else
  __syncthreads();
#endif

  if (wg == 0 || wg == 3) {
#if REGS
    asm volatile("setmaxnreg.dec.sync.aligned.u32 " STR(REG_SMALL) ";");
#endif
    if (warp == 0) {
      if (lane == 0) {
        int it = 0, m0, n0;
#if CLUSTER > 1
        const unsigned rank = cta_rank();
#endif
        for (int i = 0; T.get(i, m0, n0); i++) {
          for (int kt = 0; kt < KT; kt++, it++) {
            int s = it % STAGES;
            if (it >= STAGES) mbar_wait(&empty[s], ((it / STAGES) + 1) & 1);
            mbar_expect_tx(&full[s], (BM + BN) * BK * 2);
            tma_load(sa + s * BM * BK, mx, &full[s], kt * BK, m0);
#if CLUSTER > 1
            tma_load_mc(sb + s * BN * BK + rank * (BN / CLUSTER) * BK, mw, &full[s], kt * BK, n0 + rank * (BN / CLUSTER),
                        (u16)((1 << CLUSTER) - 1));
#else
            tma_load(sb + s * BN * BK, mw, &full[s], kt * BK, n0);
#endif
          }
        }
      }
    } else {
      // Epilogue warps 1..3 (and 12..15).
      const int e = wg == 0 ? tid - 32 : tid - 384 + 96;
      int m0, n0;
      for (int i = 0; !EPI_DIRECT && T.get(i, m0, n0); i++) {
        mbar_wait(sfull, i & 1);
#pragma unroll epi_unroll
        for (int c = e; c < BM * (BN / 8); c += NEPI) {
          int r = c / (BN / 8), ch = c % (BN / 8);
          uint4 v = *(const uint4*)(st + r * SROW + ch * 8);
          if (GELU) {
            half2* h = (half2*)&v;
#pragma unroll
            for (int q = 0; q < 4; q++) {
              float2 f = __half22float2(h[q]);
              h[q] = __floats2half2_rn(gelu_f(f.x), gelu_f(f.y));
            }
          }
          int row = m0 + r, col = n0 + ch * 8;
          if (row < M && col < N) *(uint4*)(y + (size_t)row * N + col) = v;
        }
        mbar_arrive(sempty);
      }
    }
  } else {
#if REGS
    asm volatile("setmaxnreg.inc.sync.aligned.u32 " STR(REG_BIG) ";");
#endif
    // Consumers.
    const int c = wg - 1, w4 = warp % 4;
    float d[128];
    int it = 0, m0, n0;
    for (int i = 0; T.get(i, m0, n0); i++) {
#pragma unroll
      for (int j = 0; j < 128; j++) d[j] = 0.f;
      for (int kt = 0; kt < KT; kt++, it++) {
        int s = it % STAGES;
        mbar_wait(&full[s], (it / STAGES) & 1);
        asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
        const half* a = sa + s * BM * BK + c * 64 * BK;
        const half* b = sb + s * BN * BK;
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) wgmma_256(d, desc128(a + kk * 16), desc128(b + kk * 16));
        asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#if WAIT1
        asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory");
        int ps = (it + STAGES - 1) % STAGES;
        if (kt > 0 && tid % 128 == 0) {
#else
        asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
        int ps = s;
        if (tid % 128 == 0) {
#endif
          release_stage(&empty[ps]);
        }
      }
#if WAIT1
      asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
      if (tid % 128 == 0) {
        release_stage(&empty[(it + STAGES - 1) % STAGES]);
      }
#endif
#if EPI_DIRECT
      // Bias, GELU and stores from the accumulators (no staging, epilogue warps idle).
      {
        int r0 = m0 + c * 64 + w4 * 16 + lane / 4;
#pragma unroll
        for (int j = 0; j < 32; j++) {
          int col = n0 + j * 8 + 2 * (lane % 4);
          if (col < N) {
            float b0 = __half2float(bias[col]), b1 = __half2float(bias[col + 1]);
            half2 h0 = __floats2half2_rn(d[4 * j] + b0, d[4 * j + 1] + b1);
            half2 h1 = __floats2half2_rn(d[4 * j + 2] + b0, d[4 * j + 3] + b1);
            if (GELU) {
              float2 f0 = __half22float2(h0), f1 = __half22float2(h1);
              h0 = __floats2half2_rn(gelu_f(f0.x), gelu_f(f0.y));
              h1 = __floats2half2_rn(gelu_f(f1.x), gelu_f(f1.y));
            }
            if (r0 < M) *(half2*)(y + (size_t)r0 * N + col) = h0;
            if (r0 + 8 < M) *(half2*)(y + (size_t)(r0 + 8) * N + col) = h1;
          }
        }
      }
      continue;
#endif
      // Staging: wait until the epilogue warps have read the previous tile.
      if (i > 0) mbar_wait(sempty, (i - 1) & 1);
      int r0 = c * 64 + w4 * 16 + lane / 4;
#pragma unroll
      for (int j = 0; j < 32; j++) {
        int col = j * 8 + 2 * (lane % 4);
        float b0 = 0.f, b1 = 0.f;
        if (n0 + col < N) {
          b0 = __half2float(bias[n0 + col]);
          b1 = __half2float(bias[n0 + col + 1]);
        }
        *(half2*)(st + r0 * SROW + col) = __floats2half2_rn(d[4 * j] + b0, d[4 * j + 1] + b1);
        *(half2*)(st + (r0 + 8) * SROW + col) = __floats2half2_rn(d[4 * j + 2] + b0, d[4 * j + 3] + b1);
      }
      mbar_arrive(sfull);
    }
  }
#if CLUSTER > 1
  // No CTA leaves while its peer may still multicast into it or arrive on its barriers.
  cluster_sync();
#endif
}


#if CLUSTER > 1
#define GEMM_CLUSTER __cluster_dims__(CLUSTER, 1, 1)
#else
#define GEMM_CLUSTER
#endif
extern "C" __global__ void __launch_bounds__(NTHREADS, 1) GEMM_CLUSTER
    gemm_bias_f16(const __grid_constant__ CUtensorMap mx, const __grid_constant__ CUtensorMap mw, const half* __restrict__ bias,
                  half* __restrict__ y, int M, int N, int K) {
  gemm_body<false>(&mx, &mw, bias, y, M, N, K);
}
extern "C" __global__ void __launch_bounds__(NTHREADS, 1) GEMM_CLUSTER
    gemm_bias_gelu_f16(const __grid_constant__ CUtensorMap mx, const __grid_constant__ CUtensorMap mw, const half* __restrict__ bias,
                       half* __restrict__ y, int M, int N, int K) {
  gemm_body<true>(&mx, &mw, bias, y, M, N, K);
}
