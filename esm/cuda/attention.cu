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
// Two NVRTC modules come from this file (launcher: attention.go):
//   - without defines, the fp32 kernels varlen_fwd_f32_hd<HD> (HD 16, 24,
//     32, 64, 128): scalar fp32 arithmetic, the parity path of fp32 mode;
//   - with -DVARLEN_FA2=1 -DELEM=<__half|__nv_bfloat16> -DELEM_NAME=<f16|bf16>,
//     the tensor-core kernels of fp16/bf16 mode: varlen_fa2_<name>_hd<HD> for
//     HD 16, 32, 64, 128 and varlen_fa2m2_<name>_hd24 (two row tiles per warp,
//     the faster one at HD 24; esm/cuda/NOTES.md).
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#if !VARLEN_FA2
#define VARLEN_BQ 64 // queries per block
#define VARLEN_BK 32 // keys per shared-memory tile

// varlen_fwd: blockIdx = (query tile, sequence, head). G = threads per query
// row (HD/32 for HD >= 64, else 1); thread g of a query holds the head dims
// d*G+g (interleaved, so the G threads hit different shared-memory banks) of
// q and of the output accumulator, and the q·k partial sums are reduced over
// the G neighbouring lanes with shuffles. Blocks whose tile starts past the
// sequence's end return at once (the grid is sized by the longest sequence).
template <int HD>
__device__ __forceinline__ void varlen_fwd(float* __restrict__ out, int ldo,
                                           const float* __restrict__ q, const float* __restrict__ k,
                                           const float* __restrict__ v, int ld,
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
    qr[d] = valid ? q[(long)(start + row) * ld + h * HD + d * G + g] * scale : 0.f;
    acc[d] = 0.f;
  }
  float m = __int_as_float(0xff800000), l = 0.f;  // -inf (no math.h under NVRTC)
  // bad stays 0 while every score is finite and turns NaN for a NaN or
  // +-Inf score (x*0 is NaN for those), so it is added to l at the end: a
  // -Inf score would otherwise get weight 0 and hide a non-finite input.
  float bad = 0.f;

  for (int kt = 0; kt < n; kt += BK) {
    const int kn = min(BK, n - kt);
    __syncthreads();
    for (int i = tid; i < kn * HD; i += NT) {
      const int r = i / HD, c = i % HD;
      const long off = (long)(start + kt + r) * ld + h * HD + c;
      Ks[r][c] = k[off];
      Vs[r][c] = v[off];
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
        bad = fmaf(dot, 0.f, bad);
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
    const float inv = 1.f / (l + bad);
#pragma unroll
    for (int d = 0; d < DP; d++)
      out[(long)(start + row) * ldo + h * HD + d * G + g] = acc[d] * inv;
  }
}

#define VARLEN_INST(HD)                                                                         \
  extern "C" __global__ void __launch_bounds__(VARLEN_BQ*(HD >= 64 ? HD / 32 : 1))             \
      varlen_fwd_f32_hd##HD(float* out, int ldo, const float* q, const float* k, const float* v, \
                            int ld, const int* cu_seqlens, float scale) {                       \
    varlen_fwd<HD>(out, ldo, q, k, v, ld, cu_seqlens, scale);                                   \
  }

VARLEN_INST(16)
VARLEN_INST(24)
VARLEN_INST(32)
VARLEN_INST(64)
VARLEN_INST(128)
#else  // VARLEN_FA2
// ---------------------------------------------------------------------------
// varlen_fa2 (fp16/bf16; compiled as its own module with -DVARLEN_FA2=1):
// FlashAttention-2 on mma.sync.m16n8k16 with ldmatrix and cp.async.
// Block = 4 warps = 64 query rows; each warp owns 16 rows end to end. K/V
// tiles of 64 keys are double-buffered in shared memory (cp.async, zero-fill
// past the sequence's end), so tile t+1 loads while tile t computes. Per tile a warp computes
// S = Q·Kᵀ (16 x 64, fp32, Q fragments kept in registers), scales it by
// scale·log2(e), masks keys past the end, updates the running max with two
// quad shuffles, takes P = 2^(S - m) (ex2.approx) and rescales O, all on the
// accumulator fragments; the S accumulator of key blocks 2c, 2c+1 packed to
// the element type is exactly the A fragment of P·V for key chunk c, so P
// never touches shared memory. V's B fragments come from ldmatrix.trans.
// The row sums come out of P·V itself, from a column of ones beside V.
//
// m16n8k16 fragments (g = lane/4, t = lane%4): A regs a0..a3 = (row g,
// cols 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..); B regs b0, b1 =
// (k 2t..2t+1, col g), (k 2t+8.., col g); C c0..c3 = (g, 2t), (g, 2t+1),
// (g+8, 2t), (g+8, 2t+1); m16n8k8 (the last 8 dims of Q·Kᵀ at HD 24) takes
// a0, a1 and b0 of the same layout. Shared row stride HP+8 elements (HP = HD
// rounded up to 16) keeps the 8 rows of each ldmatrix on distinct 16-byte
// bank groups and leaves columns HD..HD+7 free for the ones.
#define FA2_BQ 64
#define FA2_BK 64

__device__ __forceinline__ unsigned fa2_smem(const void* p) {
  unsigned r;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
  return r;
}
__device__ __forceinline__ void fa2_cp16(unsigned dst, const void* src, bool full) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(full ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void fa2_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void fa2_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fa2_ldsm4(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void fa2_ldsm2(unsigned addr, unsigned& r0, unsigned& r1) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(addr) : "memory");
}
__device__ __forceinline__ void fa2_ldsm2t(unsigned addr, unsigned& r0, unsigned& r1) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void fa2_ldsm4t(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ float fa2_exp2(float x) {  // 2^x; 2^-inf = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <typename T> struct Fa2Op;
template <> struct Fa2Op<__half> {
  static __device__ __forceinline__ void mma(float* d, const unsigned* a, unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ void mma8(float* d, unsigned a0, unsigned a1, unsigned b0) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(b0));
  }
  static __device__ __forceinline__ unsigned fma0(unsigned x, unsigned acc) {  // x·0 + acc, two lanes
    unsigned r;
    asm("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(x), "r"(0u), "r"(acc));
    return r;
  }
  static __device__ __forceinline__ unsigned pack(float x, float y) {  // x in the low half
    __half2 h = __floats2half2_rn(x, y);
    return *reinterpret_cast<unsigned*>(&h);
  }
};
template <> struct Fa2Op<__nv_bfloat16> {
  static __device__ __forceinline__ void mma(float* d, const unsigned* a, unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ void mma8(float* d, unsigned a0, unsigned a1, unsigned b0) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(b0));
  }
  static __device__ __forceinline__ unsigned fma0(unsigned x, unsigned acc) {
    unsigned r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(x), "r"(0u), "r"(acc));
    return r;
  }
  static __device__ __forceinline__ unsigned pack(float x, float y) {
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<unsigned*>(&h);
  }
};

// fa2_stride is the shared row stride (elements) of a tile at head dim HD:
// HD rounded up to 16, plus 8 (columns HD..HD+7 are free for V's ones).
__host__ __device__ constexpr int fa2_stride(int HD) { return (HD + 15) / 16 * 16 + 8; }

// fa2_chunks calls f(r, c) for every (row r, 16-byte chunk c) of a ROWS×HD
// tile that thread tid owns (128 threads). The trip count is a compile-time
// constant, so a thread's pairs depend on tid alone and their arithmetic is
// hoisted out of the key loop. fa2_load and fa2_check share this mapping:
// each thread checks exactly the chunks it copied.
template <int HD, int ROWS, typename F>
__device__ __forceinline__ void fa2_chunks(int tid, F&& f) {
  constexpr int H8 = HD / 8, N = ROWS * H8;
#pragma unroll
  for (int it = 0; it < (N + 127) / 128; it++) {
    const int i = tid + it * 128;
    if (N % 128 == 0 || i < N) f(i / H8, i % H8);
  }
}

// fa2_load copies rows [0, rows) of one head of src (ROWS rows of HD
// elements, starting at element base) into a shared tile at byte address
// dst; rows past rows are zero-filled. Columns HD and up are never written
// (V tiles keep their column of ones there).
template <typename T, int HD, int ROWS>
__device__ __forceinline__ void fa2_load(unsigned dst, const T* __restrict__ src, long base, int ld, int rows,
                                         int tid) {
  constexpr int S = fa2_stride(HD);
  fa2_chunks<HD, ROWS>(tid, [&](int r, int c) {
    const bool ok = r < rows;
    const T* g = src + base + (ok ? (long)r * ld + 8 * c : 0);
    fa2_cp16(dst + (r * S + 8 * c) * 2, g, ok);
  });
}

// fa2_fold16 folds the 16 bytes at shared address a (8 elements) into acc:
// acc = fma(x, 0, acc) per element pair, so acc stays ±0 while every element
// is finite and turns NaN at an Inf or a NaN.
template <typename T>
__device__ __forceinline__ void fa2_fold16(unsigned& acc, unsigned a) {
  unsigned w0, w1, w2, w3;
  asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(w0), "=r"(w1), "=r"(w2), "=r"(w3) : "r"(a));
  acc = Fa2Op<T>::fma0(w0, acc);
  acc = Fa2Op<T>::fma0(w1, acc);
  acc = Fa2Op<T>::fma0(w2, acc);
  acc = Fa2Op<T>::fma0(w3, acc);
}

// fa2_check folds this thread's chunks of a K tile into acc (fa2_fold16).
// Zero-filled rows past the sequence's end are finite.
template <typename T, int HD, int ROWS>
__device__ __forceinline__ void fa2_check(unsigned& acc, unsigned src, int tid) {
  constexpr int S = fa2_stride(HD);
  fa2_chunks<HD, ROWS>(tid, [&](int r, int c) { fa2_fold16<T>(acc, src + (r * S + 8 * c) * 2); });
}

// varlen_fa2 with MT m16 row tiles per warp: the block holds BQ = 64·MT
// queries, warp w owns rows mt·64 + 16w .. +15 for mt < MT. With MT = 2
// every K and V fragment read from shared memory feeds two MMAs and every
// K/V tile loaded from L2 serves 128 queries instead of 64 (half the L2 and
// shared-memory traffic per query), at the price of twice the accumulator
// registers. A block whose second row tile lies past the sequence's end
// skips that tile's MMAs. BK keys per shared tile.
//
// Head dims: HD is a multiple of 8. Q·Kᵀ runs HD/16 k16 chunks and, when
// HD % 16 == 8, one m16n8k8 on the last 8 dims, so nothing is multiplied by
// padding. P·V runs HD/8 + 1 blocks of 8 output columns: the last one reads
// V's columns HD..HD+7, which hold 1 (written once; fa2_load never touches
// them), so its accumulator is each row's sum of P as P·V used it (P in the
// element type, summed by the tensor cores in fp32), rescaled with O: no
// per-score additions and no quad reduction for the softmax denominator.
//
// Non-finite inputs: an Inf or NaN in q or v reaches the output through the
// arithmetic (a NaN score, an Inf max giving Inf - Inf, 0·Inf in P·V). An Inf
// in k against queries whose matching element has the opposite sign gives a
// -Inf score, which the softmax weighs 0; so every K tile is checked as it
// arrives (fa2_check) and, if any element of any key of the sequence was not
// finite, every output of the block is NaN (__syncthreads_or at the end).
template <typename T, int HD, int MT, int BK>
__device__ __forceinline__ void varlen_fa2(T* __restrict__ out, int ldo, const T* __restrict__ q,
                                           const T* __restrict__ k, const T* __restrict__ v, int ld,
                                           const int* __restrict__ cu_seqlens, float scale) {
  constexpr int HP = (HD + 15) / 16 * 16;
  constexpr int BQ = FA2_BQ * MT;
  constexpr int S = fa2_stride(HD);  // shared row stride (elements); columns HD..HD+7 are free
  constexpr int NK = BK / 8;  // key blocks of 8: S accumulators
  constexpr int KC = HD / 16;  // whole k16 chunks of Q·Kᵀ; HD % 16 == 8 adds one k8 chunk
  constexpr int ND = HD / 8 + 1;  // O accumulators: HD/8 blocks of head dims, then the row sums
  constexpr unsigned TILE = BK * S * 2;  // bytes of one K or V tile
  extern __shared__ __align__(128) unsigned char smem[];
  const unsigned qs = fa2_smem(smem);
  const unsigned ks = qs + BQ * S * 2;  // K tiles 0, 1
  const unsigned vs = ks + 2 * TILE;    // V tiles 0, 1

  const int seq = blockIdx.y, h = blockIdx.z;
  const int start = cu_seqlens[seq];
  const int n = cu_seqlens[seq + 1] - start;
  const int q0 = blockIdx.x * BQ;
  if (q0 >= n) return;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const long hoff = (long)h * HD;
  const long seq0 = (long)start * ld + hoff;  // element offset of the head's first row
  const int mtn = (MT == 1 || q0 + FA2_BQ < n) ? MT : 1;  // row tiles holding queries (block-uniform)

  // Ones in columns HD..HD+7 of both V tiles: 2·BK rows of 16 bytes.
#pragma unroll
  for (int it = 0; it < (2 * BK + 127) / 128; it++) {
    const int r = tid + it * 128;
    const unsigned one2 = Fa2Op<T>::pack(1.f, 1.f);
    if (2 * BK % 128 == 0 || r < 2 * BK)
      asm volatile("st.shared.v4.u32 [%0], {%1,%1,%1,%1};\n" ::"r"(vs + (r * S + HD) * 2), "r"(one2) : "memory");
  }
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
    fa2_load<T, HD, FA2_BQ>(qs + mt * FA2_BQ * S * 2, q, seq0 + (long)(q0 + mt * FA2_BQ) * ld, ld,
                            n - q0 - mt * FA2_BQ, tid);
  fa2_load<T, HD, BK>(ks, k, seq0, ld, n, tid);
  fa2_load<T, HD, BK>(vs, v, seq0, ld, n, tid);
  fa2_commit();

  unsigned qf[MT][HP / 16][4];
  float o[MT][ND][4];
  float m[MT][2];  // rows g and g+8 of each row tile
  unsigned kbad = 0;  // fa2_check's accumulator: ±0, or NaN after a non-finite k
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int d = 0; d < ND; d++) o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0.f;
    m[mt][0] = m[mt][1] = __int_as_float(0xff800000);
  }
  const float sl2 = scale * 1.4426950408889634f;
  const int ntiles = (n + BK - 1) / BK;
  const int tq = lane & 3;

  for (int t = 0; t < ntiles; t++) {
    const int kt = t * BK;
    if (t + 1 < ntiles) {
      const unsigned nb = ((t + 1) & 1) * TILE;
      fa2_load<T, HD, BK>(ks + nb, k, seq0 + (long)(kt + BK) * ld, ld, n - kt - BK, tid);
      fa2_load<T, HD, BK>(vs + nb, v, seq0 + (long)(kt + BK) * ld, ld, n - kt - BK, tid);
      fa2_commit();
      fa2_wait<1>();
    } else {
      fa2_wait<0>();
    }
    __syncthreads();
    if (t == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int c = 0; c < HP / 16; c++)
          fa2_ldsm4(qs + ((mt * FA2_BQ + warp * 16 + (lane & 15)) * S + c * 16 + (lane >> 4) * 8) * 2,
                    qf[mt][c][0], qf[mt][c][1], qf[mt][c][2], qf[mt][c][3]);
    }
    const unsigned kb = ks + (t & 1) * TILE, vb = vs + (t & 1) * TILE;
    fa2_check<T, HD, BK>(kbad, kb, tid);

    float s[MT][NK][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int j = 0; j < NK; j++) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
    for (int c = 0; c < KC; c++) {
#pragma unroll
      for (int jp = 0; jp < BK / 16; jp++) {
        unsigned b0, b1, b2, b3;  // keys jp*16 + 0..7 (b0 b1) and + 8..15 (b2 b3)
        fa2_ldsm4(kb + ((jp * 16 + (lane >> 4) * 8 + (lane & 7)) * S + c * 16 + ((lane >> 3) & 1) * 8) * 2, b0, b1,
                  b2, b3);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          if (mt < mtn) {
            Fa2Op<T>::mma(s[mt][2 * jp], qf[mt][c], b0, b1);
            Fa2Op<T>::mma(s[mt][2 * jp + 1], qf[mt][c], b2, b3);
          }
        }
      }
    }
    if constexpr (HD % 16 == 8) {
      // The last 8 head dims: m16n8k8 on the first half of the Q fragment
      // (a0, a1 = rows g, g+8 of dims KC·16 + 2t..2t+1).
#pragma unroll
      for (int jp = 0; jp < BK / 16; jp++) {
        unsigned b0, b2;  // keys jp*16 + 0..7 and + 8..15, dims KC·16 .. +7
        fa2_ldsm2(kb + ((jp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + KC * 16) * 2, b0, b2);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          if (mt < mtn) {
            Fa2Op<T>::mma8(s[mt][2 * jp], qf[mt][KC][0], qf[mt][KC][1], b0);
            Fa2Op<T>::mma8(s[mt][2 * jp + 1], qf[mt][KC][0], qf[mt][KC][1], b2);
          }
        }
      }
    }
    // Keys past the end: only the last tile has any, so the mask is a
    // branch of its own and full tiles pay nothing per score.
    if (kt + BK > n) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int j = 0; j < NK; j++)
#pragma unroll
          for (int i = 0; i < 4; i++)
            if (kt + j * 8 + 2 * tq + (i & 1) >= n) s[mt][j][i] = __int_as_float(0xff800000);
    }
    unsigned a[MT][BK / 16][4];  // P in the element type: A fragments of P·V
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      // Running max of the raw scores (scale > 0 commutes with max); the
      // scale goes into one FFMA per score below: 2^(s*sl2 - m*sl2).
      float mt0 = m[mt][0], mt1 = m[mt][1];
#pragma unroll
      for (int j = 0; j < NK; j++) {
        mt0 = fmaxf(mt0, fmaxf(s[mt][j][0], s[mt][j][1]));
        mt1 = fmaxf(mt1, fmaxf(s[mt][j][2], s[mt][j][3]));
      }
      mt0 = fmaxf(mt0, __shfl_xor_sync(0xffffffffu, mt0, 1));
      mt1 = fmaxf(mt1, __shfl_xor_sync(0xffffffffu, mt1, 1));
      mt0 = fmaxf(mt0, __shfl_xor_sync(0xffffffffu, mt0, 2));
      mt1 = fmaxf(mt1, __shfl_xor_sync(0xffffffffu, mt1, 2));
      // First tile: m = -inf, so (m - mt)*sl2 = -inf and 2^-inf = 0. Every
      // tile holds a key below n, so mt is finite from the first tile on
      // when the scores are.
      const float c0 = fa2_exp2((m[mt][0] - mt0) * sl2), c1 = fa2_exp2((m[mt][1] - mt1) * sl2);
      m[mt][0] = mt0;
      m[mt][1] = mt1;
      const float ms0 = mt0 * sl2, ms1 = mt1 * sl2;
#pragma unroll
      for (int j = 0; j < NK; j++) {
        s[mt][j][0] = fa2_exp2(fmaf(s[mt][j][0], sl2, -ms0));
        s[mt][j][1] = fa2_exp2(fmaf(s[mt][j][1], sl2, -ms0));
        s[mt][j][2] = fa2_exp2(fmaf(s[mt][j][2], sl2, -ms1));
        s[mt][j][3] = fa2_exp2(fmaf(s[mt][j][3], sl2, -ms1));
      }
#pragma unroll
      for (int d = 0; d < ND; d++) {
        o[mt][d][0] *= c0;
        o[mt][d][1] *= c0;
        o[mt][d][2] *= c1;
        o[mt][d][3] *= c1;
      }
#pragma unroll
      for (int c = 0; c < BK / 16; c++) {
        a[mt][c][0] = Fa2Op<T>::pack(s[mt][2 * c][0], s[mt][2 * c][1]);
        a[mt][c][1] = Fa2Op<T>::pack(s[mt][2 * c][2], s[mt][2 * c][3]);
        a[mt][c][2] = Fa2Op<T>::pack(s[mt][2 * c + 1][0], s[mt][2 * c + 1][1]);
        a[mt][c][3] = Fa2Op<T>::pack(s[mt][2 * c + 1][2], s[mt][2 * c + 1][3]);
      }
    }
#pragma unroll
    for (int c = 0; c < BK / 16; c++) {
#pragma unroll
      for (int dp = 0; dp < ND / 2; dp++) {
        unsigned b0, b1, b2, b3;  // columns dp*16 + 0..7 (b0 b1) and + 8..15 (b2 b3)
        fa2_ldsm4t(vb + ((c * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + dp * 16 + (lane >> 4) * 8) * 2, b0,
                   b1, b2, b3);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          if (mt < mtn) {
            Fa2Op<T>::mma(o[mt][2 * dp], a[mt][c], b0, b1);
            Fa2Op<T>::mma(o[mt][2 * dp + 1], a[mt][c], b2, b3);
          }
        }
      }
      if constexpr (ND % 2 == 1) {  // the last block of 8 columns alone
        unsigned b0, b1;
        fa2_ldsm2t(vb + ((c * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + (ND - 1) * 8) * 2, b0, b1);
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
          if (mt < mtn) Fa2Op<T>::mma(o[mt][ND - 1], a[mt][c], b0, b1);
      }
    }
    __syncthreads();  // this K/V buffer is refilled by the next iteration's load
  }

  // One barrier for the whole block: any non-finite k makes every row NaN.
  const bool kfinite = !__syncthreads_or((kbad & 0x7fff7fffu) != 0);
  const float nan = __int_as_float(0x7fc00000);
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    // o[mt][ND-1] holds the row sums (every column alike): c0 row g, c2 row g+8.
    const float i0 = kfinite ? 1.f / o[mt][ND - 1][0] : nan, i1 = kfinite ? 1.f / o[mt][ND - 1][2] : nan;
    const int ra = q0 + mt * FA2_BQ + warp * 16 + lane / 4, rb = ra + 8;
    T* oa = out + (long)(start + ra) * ldo + hoff + 2 * tq;
    T* ob = out + (long)(start + rb) * ldo + hoff + 2 * tq;
#pragma unroll
    for (int d = 0; d < ND - 1; d++) {
      if (ra < n) *reinterpret_cast<unsigned*>(oa + d * 8) = Fa2Op<T>::pack(o[mt][d][0] * i0, o[mt][d][1] * i0);
      if (rb < n) *reinterpret_cast<unsigned*>(ob + d * 8) = Fa2Op<T>::pack(o[mt][d][2] * i1, o[mt][d][3] * i1);
    }
  }
}

#define FA2_CAT3(a, b, c) a##b##c
#define FA2_XCAT3(a, b, c) FA2_CAT3(a, b, c)
// FA2_BOUNDS_<HD> is the fa2 kernel's __launch_bounds__ at that head dim. HD
// 128 also states a minimum of one block per SM, with which ptxas builds a
// faster kernel: 0.227 -> 0.197 ms in BenchmarkVarlen on an H200. The same
// minimum made HD 16 slower (0.112 -> 0.118 ms), and minimums of 6 (HD 32),
// 5 (HD 64) and 4 (fa2m2, HD 24) blocks were 5-10% slower (esm/cuda/NOTES.md).
#define FA2_BOUNDS_16 __launch_bounds__(128)
#define FA2_BOUNDS_32 __launch_bounds__(128)
#define FA2_BOUNDS_64 __launch_bounds__(128)
#define FA2_BOUNDS_128 __launch_bounds__(128, 1)
#define VARLEN_FA2_INST(HD)                                                                         \
  extern "C" __global__ void FA2_BOUNDS_##HD                                                        \
      FA2_XCAT3(varlen_fa2_, ELEM_NAME, _hd##HD)(ELEM * out, int ldo, const ELEM* q, const ELEM* k, \
                                                 const ELEM* v, int ld, const int* cu_seqlens,      \
                                                 float scale) {                                     \
    varlen_fa2<ELEM, HD, 1, FA2_BK>(out, ldo, q, k, v, ld, cu_seqlens, scale);                      \
  }
// Two row tiles per warp (128 queries per block).
#define VARLEN_FA2M2_INST(HD)                                                                        \
  extern "C" __global__ void __launch_bounds__(128)                                                 \
      FA2_XCAT3(varlen_fa2m2_, ELEM_NAME, _hd##HD)(ELEM * out, int ldo, const ELEM* q, const ELEM* k, \
                                                   const ELEM* v, int ld, const int* cu_seqlens,      \
                                                   float scale) {                                     \
    varlen_fa2<ELEM, HD, 2, FA2_BK>(out, ldo, q, k, v, ld, cu_seqlens, scale);                        \
  }

#if !VARLEN_WG
VARLEN_FA2_INST(16)
VARLEN_FA2_INST(32)
VARLEN_FA2_INST(64)
VARLEN_FA2_INST(128)
VARLEN_FA2M2_INST(24)
#else  // VARLEN_WG
// ---------------------------------------------------------------------------
// varlen_wg (fp16/bf16 on sm_90, every head dim; compiled as a module of
// its own with -DVARLEN_FA2=1 -DVARLEN_WG=1 for sm_90a): the same algorithm
// as varlen_fa2 on Hopper's warpgroup MMA. A block is NWG warpgroups of 128
// threads, each owning 64 query rows (warp w of a warpgroup rows
// 16w..16w+15, as in varlen_fa2); the warpgroups share the K/V tiles. Per
// tile of 64 keys a warpgroup computes S = Q·Kᵀ with wgmma.m64n64k16 reading
// Q and K straight from shared memory (no ldmatrix, no fragments held in
// registers), the online softmax on the accumulators exactly as varlen_fa2
// does, and O += P·V with P from registers (the accumulator packed to the
// element type is wgmma's A fragment, laid out as mma.m16n8k16's) and V from
// shared memory, transposed by the instruction (m64nPWk16).
//
// Shared tiles (WgGeo): head dims padded to HP (16, 32, 64 or 128; HD 24 to
// 32, the padding zero, so it adds nothing to Q·Kᵀ and P·V's extra columns
// are dropped), stored in panels of PW = min(HP, 64) head dims, rows of RB =
// 2·PW bytes swizzled as wgmma's descriptors read them (RB-byte swizzle:
// 16-byte chunk c of row r sits at r·RB + ((c ^ f(r))·16), f(r) = r mod 8,
// (r/2) mod 4 or (r/4) mod 2 for 128, 64, 32-byte rows), panels 1,024-byte
// aligned. cp.async fills them (zero past the sequence's end). Row sums are
// accumulated in fp32 beside the exponentials (wgmma's N of 64 leaves no
// room for varlen_fa2's column of ones).
//
// wgmma's accumulator, per warp and n8 block j: d[4j..4j+3] = (row g, col
// 8j+2t), (g, 8j+2t+1), (g+8, 8j+2t), (g+8, 8j+2t+1), g = lane/4, t = lane%4:
// the mma.sync C layout varlen_fa2's softmax already works on.
#define WG_BK 64

__device__ __forceinline__ void wg_fence_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// wg_keep and wg_keep_a tie registers that an in-flight wgmma writes (its
// accumulator) or reads (its A fragments) to the point after the wait: to
// the compiler the asm that queued the wgmma produced or consumed them, so
// without this it could read an accumulator before the wait, or give a
// fragment's registers to other values while the tensor cores still read
// them.
template <int N>
__device__ __forceinline__ void wg_keep(float* r) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}
__device__ __forceinline__ void wg_keep_a(unsigned (&a)[4][4]) {
#pragma unroll
  for (int c = 0; c < 4; c++)
#pragma unroll
    for (int i = 0; i < 4; i++) asm volatile("" : "+r"(a[c][i])::"memory");
}

// WgGeo is the shared-memory geometry of head dim HD (see above).
template <int HD>
struct WgGeo {
  static constexpr int HP = HD <= 16 ? 16 : HD <= 32 ? 32 : HD <= 64 ? 64 : 128;
  static constexpr int PW = HP < 64 ? HP : 64;  // head dims per panel
  static constexpr int RB = PW * 2;             // bytes per panel row: the swizzle's width
  static constexpr int NP = HP / PW;            // panels
  static constexpr int CH = PW / 8;             // 16-byte chunks per panel row
  // Byte offset of chunk c (of HP/8) of row r in a ROWS-row tile.
  static __device__ __forceinline__ int off(int rows, int r, int c) {
    const int f = RB == 128 ? (r & 7) : RB == 64 ? ((r >> 1) & 3) : ((r >> 2) & 1);
    return (c / CH) * rows * RB + r * RB + (((c % CH) ^ f) << 4);
  }
  // wgmma's descriptor of an operand at shared byte address a: swizzle
  // mode RB bytes, 8-row groups 8·RB bytes apart. Both byte offsets are 8·RB:
  // for the K-major Q and K the leading one is unused; for the MN-major V
  // (PW head dims, one swizzle atom wide) the stride between atoms is.
  static __device__ __forceinline__ unsigned long long desc(unsigned a) {
    constexpr unsigned long long mode = RB == 128 ? 1 : RB == 64 ? 2 : 3;
    return (unsigned long long)((a & 0x3FFFF) >> 4) | ((unsigned long long)(8 * RB >> 4) << 16) |
           ((unsigned long long)(8 * RB >> 4) << 32) | (mode << 62);
  }
};

#define WG_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                 "+f"(d[i + 6]), "+f"(d[i + 7])
#define WG_R8 "%0,%1,%2,%3,%4,%5,%6,%7"
#define WG_R16 WG_R8 ",%8,%9,%10,%11,%12,%13,%14,%15"
#define WG_R32 WG_R16 ",%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
// WgOp<T>: ss: d (64×64 fp32) = (acc ? d : 0) + A·B, A and B K-major in
// shared memory; rs<N>: d (64×N) += A·B, A from registers, B MN-major in
// shared memory (N = 16, 32 or 64).
#define WG_OPS(TY, E)                                                                                               \
  template <>                                                                                                       \
  struct WgOp<TY> {                                                                                                 \
    static __device__ __forceinline__ void ss(float* d, unsigned long long da, unsigned long long db, int acc) {    \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                                     \
                   "wgmma.mma_async.sync.aligned.m64n64k16.f32." E "." E " {" WG_R32 "}, %32, %33, p, 1, 1, 0, 0;\n}\n" \
                   : WG_D8(0), WG_D8(8), WG_D8(16), WG_D8(24)                                                        \
                   : "l"(da), "l"(db), "r"(acc));                                                                   \
    }                                                                                                               \
    template <int N>                                                                                                \
    static __device__ __forceinline__ void rs(float* d, const unsigned* a, unsigned long long db) {                 \
      if constexpr (N == 64)                                                                                        \
        asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." E "." E " {" WG_R32                             \
                     "}, {%32,%33,%34,%35}, %36, 1, 1, 1, 1;\n"                                                     \
                     : WG_D8(0), WG_D8(8), WG_D8(16), WG_D8(24)                                                      \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));                                        \
      else if constexpr (N == 32)                                                                                   \
        asm volatile("wgmma.mma_async.sync.aligned.m64n32k16.f32." E "." E " {" WG_R16                             \
                     "}, {%16,%17,%18,%19}, %20, 1, 1, 1, 1;\n"                                                     \
                     : WG_D8(0), WG_D8(8)                                                                           \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));                                        \
      else                                                                                                          \
        asm volatile("wgmma.mma_async.sync.aligned.m64n16k16.f32." E "." E " {" WG_R8                              \
                     "}, {%8,%9,%10,%11}, %12, 1, 1, 1, 1;\n"                                                       \
                     : WG_D8(0)                                                                                     \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));                                        \
    }                                                                                                               \
  };
template <typename T> struct WgOp;
WG_OPS(__half, "f16")
WG_OPS(__nv_bfloat16, "bf16")
#undef WG_OPS
#undef WG_D8
#undef WG_R8
#undef WG_R16
#undef WG_R32

// wg_chunks calls f(r, c, off) for every (row r, 16-byte chunk c < HD/8)
// of a ROWS×HD tile that thread tid of NT owns, off being the chunk's byte
// offset in the swizzled, paneled tile (WgGeo). Compile-time trip count, as
// fa2_chunks. Padding chunks (HD/8 .. HP/8) are not visited.
template <int HD, int ROWS, int NT, typename F>
__device__ __forceinline__ void wg_chunks(int tid, F&& f) {
  constexpr int H8 = HD / 8, N = ROWS * H8;
#pragma unroll
  for (int it = 0; it < (N + NT - 1) / NT; it++) {
    const int i = tid + it * NT;
    if (N % NT == 0 || i < N) {
      const int r = i / H8, c = i % H8;
      f(r, c, WgGeo<HD>::off(ROWS, r, c));
    }
  }
}

// wg_zero_pad zeroes the padding chunks (HD/8 .. HP/8) of a ROWS-row tile.
template <int HD, int ROWS, int NT>
__device__ __forceinline__ void wg_zero_pad(unsigned dst, int tid) {
  constexpr int HP = WgGeo<HD>::HP, PC = (HP - HD) / 8, N = ROWS * PC;
  if constexpr (PC > 0) {
#pragma unroll
    for (int it = 0; it < (N + NT - 1) / NT; it++) {
      const int i = tid + it * NT;
      if (N % NT == 0 || i < N)
        asm volatile("st.shared.v4.u32 [%0], {%1,%1,%1,%1};\n" ::"r"(dst + WgGeo<HD>::off(ROWS, i / PC, HD / 8 + i % PC)),
                     "r"(0u)
                     : "memory");
    }
  }
}

template <typename T, int HD, int ROWS, int NT>
__device__ __forceinline__ void wg_load(unsigned dst, const T* __restrict__ src, long base, int ld, int rows, int tid) {
  wg_chunks<HD, ROWS, NT>(tid, [&](int r, int c, int off) {
    const bool ok = r < rows;
    fa2_cp16(dst + off, src + base + (ok ? (long)r * ld + 8 * c : 0), ok);
  });
}

// wg_check folds this thread's chunks of a K tile into acc (fa2_fold16).
template <typename T, int HD, int ROWS, int NT>
__device__ __forceinline__ void wg_check(unsigned& acc, unsigned src, int tid) {
  wg_chunks<HD, ROWS, NT>(tid, [&](int, int, int off) { fa2_fold16<T>(acc, src + off); });
}

// wg_softmax is the online softmax of one tile of scores s (the wgmma
// accumulator of 64 keys from key kt) for this thread's rows g and g+8, as
// varlen_fa2 computes it: keys past n masked, the running maxima m0, m1 and
// sums l0, l1 (this thread's columns; reduced over the quad at the end)
// updated, O's rescale factors returned in c0, c1, and P packed to the
// element type in a, wgmma's A fragments for P·V's four k16 steps.
template <typename T>
__device__ __forceinline__ void wg_softmax(float* s, unsigned (&a)[4][4], int kt, int n, int tq, float sl2, float& m0,
                                           float& m1, float& l0, float& l1, float& c0, float& c1) {
  if (kt + WG_BK > n) {
#pragma unroll
    for (int j = 0; j < WG_BK / 8; j++)
#pragma unroll
      for (int i = 0; i < 4; i++)
        if (kt + j * 8 + 2 * tq + (i & 1) >= n) s[4 * j + i] = __int_as_float(0xff800000);
  }
  float mt0 = m0, mt1 = m1;
#pragma unroll
  for (int j = 0; j < WG_BK / 8; j++) {
    mt0 = fmaxf(mt0, fmaxf(s[4 * j], s[4 * j + 1]));
    mt1 = fmaxf(mt1, fmaxf(s[4 * j + 2], s[4 * j + 3]));
  }
  mt0 = fmaxf(mt0, __shfl_xor_sync(0xffffffffu, mt0, 1));
  mt1 = fmaxf(mt1, __shfl_xor_sync(0xffffffffu, mt1, 1));
  mt0 = fmaxf(mt0, __shfl_xor_sync(0xffffffffu, mt0, 2));
  mt1 = fmaxf(mt1, __shfl_xor_sync(0xffffffffu, mt1, 2));
  // First tile: m = -inf, so the factors are 2^-inf = 0 (O and l are 0).
  c0 = fa2_exp2((m0 - mt0) * sl2);
  c1 = fa2_exp2((m1 - mt1) * sl2);
  m0 = mt0;
  m1 = mt1;
  const float ms0 = mt0 * sl2, ms1 = mt1 * sl2;
  float r0 = 0.f, r1 = 0.f;
#pragma unroll
  for (int j = 0; j < WG_BK / 8; j++) {
    s[4 * j] = fa2_exp2(fmaf(s[4 * j], sl2, -ms0));
    s[4 * j + 1] = fa2_exp2(fmaf(s[4 * j + 1], sl2, -ms0));
    s[4 * j + 2] = fa2_exp2(fmaf(s[4 * j + 2], sl2, -ms1));
    s[4 * j + 3] = fa2_exp2(fmaf(s[4 * j + 3], sl2, -ms1));
    r0 += s[4 * j] + s[4 * j + 1];
    r1 += s[4 * j + 2] + s[4 * j + 3];
  }
  l0 = fmaf(l0, c0, r0);
  l1 = fmaf(l1, c1, r1);
#pragma unroll
  for (int c = 0; c < WG_BK / 16; c++) {
    a[c][0] = Fa2Op<T>::pack(s[8 * c], s[8 * c + 1]);
    a[c][1] = Fa2Op<T>::pack(s[8 * c + 2], s[8 * c + 3]);
    a[c][2] = Fa2Op<T>::pack(s[8 * c + 4], s[8 * c + 5]);
    a[c][3] = Fa2Op<T>::pack(s[8 * c + 6], s[8 * c + 7]);
  }
}

template <int NP, int NO>
__device__ __forceinline__ void wg_rescale(float (&o)[NP][NO], float c0, float c1) {
#pragma unroll
  for (int p = 0; p < NP; p++)
#pragma unroll
    for (int j = 0; j < NO / 4; j++) {
      o[p][4 * j] *= c0;
      o[p][4 * j + 1] *= c0;
      o[p][4 * j + 2] *= c1;
      o[p][4 * j + 3] *= c1;
    }
}

// varlen_wg: NWG warpgroups, 64·NWG queries per block; HD 16, 24, 32, 64
// or 128. Per tile: S = Q·Kᵀ, its softmax, then O += P·V, each product
// waited for at once; two K/V stages, so tile t+1 loads while t computes.
// Non-finite inputs as varlen_fa2: every K tile is checked as it arrives
// and a non-finite k anywhere in the sequence makes every output of the
// block NaN. (FlashAttention-3's overlap of the softmax with the next
// tile's products was measured slower here: esm/cuda/NOTES.md.)
template <typename T, int HD, int NWG>
__device__ __forceinline__ void varlen_wg(T* __restrict__ out, int ldo, const T* __restrict__ q,
                                          const T* __restrict__ k, const T* __restrict__ v, int ld,
                                          const int* __restrict__ cu_seqlens, float scale) {
  using G = WgGeo<HD>;
  constexpr int NT = 128 * NWG, BQ = 64 * NWG, BK = WG_BK;
  constexpr int NP = G::NP, PW = G::PW, RB = G::RB;
  constexpr int NO = PW / 2;                 // accumulators per panel
  constexpr int ST = 2;                      // K/V stages
  constexpr unsigned QT = 64 * G::HP * 2;    // bytes of one warpgroup's Q tile
  constexpr unsigned TILE = BK * G::HP * 2;  // bytes of one K or V tile
  extern __shared__ __align__(1024) unsigned char smem[];
  const unsigned base = (fa2_smem(smem) + 1023) & ~1023u;
  const unsigned qs = base;                // NWG Q tiles
  const unsigned ks = qs + NWG * QT;       // ST K tiles
  const unsigned vs = ks + ST * TILE;      // ST V tiles

  const int seq = blockIdx.y, h = blockIdx.z;
  const int start = cu_seqlens[seq];
  const int n = cu_seqlens[seq + 1] - start;
  const int q0 = blockIdx.x * BQ;
  if (q0 >= n) return;
  const int tid = threadIdx.x, wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  const long hoff = (long)h * HD;
  const long seq0 = (long)start * ld + hoff;
  const bool active = q0 + wg * 64 < n;  // warpgroup-uniform: this warpgroup has queries
  const int ntiles = (n + BK - 1) / BK;
  auto load_kv = [&](int t) {
    const unsigned b = (t % ST) * TILE;
    wg_load<T, HD, BK, NT>(ks + b, k, seq0 + (long)t * BK * ld, ld, n - t * BK, tid);
    wg_load<T, HD, BK, NT>(vs + b, v, seq0 + (long)t * BK * ld, ld, n - t * BK, tid);
    fa2_commit();
  };
  wg_zero_pad<HD, BQ, NT>(qs, tid);
#pragma unroll
  for (int st = 0; st < ST; st++) {
    wg_zero_pad<HD, BK, NT>(ks + st * TILE, tid);
    wg_zero_pad<HD, BK, NT>(vs + st * TILE, tid);
  }
  wg_load<T, HD, BQ, NT>(qs, q, seq0 + (long)q0 * ld, ld, n - q0, tid);
  load_kv(0);

  float o[NP][NO];
  float m0 = __int_as_float(0xff800000), m1 = m0, l0 = 0.f, l1 = 0.f;  // rows g and g+8
  unsigned kbad = 0;
#pragma unroll
  for (int p = 0; p < NP; p++)
#pragma unroll
    for (int i = 0; i < NO; i++) o[p][i] = 0.f;
  const float sl2 = scale * 1.4426950408889634f;
  const int tq = lane & 3;
  // This warpgroup's Q (64 rows of the block's BQ: panel p at p·BQ·RB).
  const unsigned qw = qs + wg * 64 * RB;
  auto issue_s = [&](float* s, int t) {  // s = Q·K(t)ᵀ, queued; k16 step kk in panel kk/(PW/16)
    const unsigned kb = ks + (t % ST) * TILE;
    constexpr int KP = PW / 16;
#pragma unroll
    for (int kk = 0; kk < G::HP / 16; kk++)
      WgOp<T>::ss(s, G::desc(qw + (kk / KP) * BQ * RB + (kk % KP) * 32), G::desc(kb + (kk / KP) * BK * RB + (kk % KP) * 32),
                  kk);
    wg_commit();
  };
  auto issue_pv = [&](const unsigned (&a)[4][4], int t) {  // O += P·V(t), queued
    const unsigned vb = vs + (t % ST) * TILE;
#pragma unroll
    for (int c = 0; c < BK / 16; c++)
#pragma unroll
      for (int p = 0; p < NP; p++) WgOp<T>::template rs<PW>(o[p], a[c], G::desc(vb + p * BK * RB + c * 16 * RB));
    wg_commit();
  };

  for (int t = 0; t < ntiles; t++) {
    if (t + 1 < ntiles) {
      load_kv(t + 1);
      fa2_wait<1>();
    } else {
      fa2_wait<0>();
    }
    wg_check<T, HD, BK, NT>(kbad, ks + (t % ST) * TILE, tid);
    wg_fence_proxy();  // this thread's cp.async writes, visible to wgmma's reads
    __syncthreads();
    if (active) {
      float s[32], c0, c1;
      unsigned a[4][4];
      wg_fence();
      issue_s(s, t);
      wg_wait<0>();
      wg_keep<32>(s);
      wg_softmax<T>(s, a, t * BK, n, tq, sl2, m0, m1, l0, l1, c0, c1);
      wg_rescale<NP, NO>(o, c0, c1);
      wg_fence();
      issue_pv(a, t);
      wg_wait<0>();
      wg_keep<NP * NO>(&o[0][0]);
      wg_keep_a(a);
    }
    __syncthreads();  // this K/V buffer is refilled by the next iteration's load
  }
  const bool kfinite = !__syncthreads_or((kbad & 0x7fff7fffu) != 0);
  if (!active) return;
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float nan = __int_as_float(0x7fc00000);
  const float i0 = kfinite ? 1.f / l0 : nan, i1 = kfinite ? 1.f / l1 : nan;
  const int ra = q0 + wg * 64 + warp * 16 + lane / 4, rb = ra + 8;
  T* oa = out + (long)(start + ra) * ldo + hoff + 2 * tq;
  T* ob = out + (long)(start + rb) * ldo + hoff + 2 * tq;
#pragma unroll
  for (int p = 0; p < NP; p++)
#pragma unroll
    for (int j = 0; j < NO / 4; j++) {
      if (p * PW + j * 8 >= HD) continue;  // padding columns (HD 24)
      if (ra < n) *reinterpret_cast<unsigned*>(oa + p * PW + j * 8) = Fa2Op<T>::pack(o[p][4 * j] * i0, o[p][4 * j + 1] * i0);
      if (rb < n) *reinterpret_cast<unsigned*>(ob + p * PW + j * 8) = Fa2Op<T>::pack(o[p][4 * j + 2] * i1, o[p][4 * j + 3] * i1);
    }
}

// VARLEN_WG_INST(HD, NWG): the launcher (attention.go, varlenWGWarpgroups)
// asks for the same warpgroups per block. Two warpgroups are faster only at
// HD 24 (esm/cuda/NOTES.md).
#define VARLEN_WG_INST(HD, NWG)                                                                      \
  extern "C" __global__ void __launch_bounds__(128 * NWG)                                           \
      FA2_XCAT3(varlen_wg_, ELEM_NAME, _hd##HD)(ELEM * out, int ldo, const ELEM* q, const ELEM* k,  \
                                                const ELEM* v, int ld, const int* cu_seqlens,       \
                                                float scale) {                                      \
    varlen_wg<ELEM, HD, NWG>(out, ldo, q, k, v, ld, cu_seqlens, scale);                             \
  }
VARLEN_WG_INST(16, 1)
VARLEN_WG_INST(24, 2)
VARLEN_WG_INST(32, 1)
VARLEN_WG_INST(64, 1)
VARLEN_WG_INST(128, 1)
#endif  // VARLEN_WG
#endif  // VARLEN_FA2
