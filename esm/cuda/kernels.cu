// Elementwise, normalization and pooling kernels of the ESM2 CUDA backend.
// Launchers: kernels.go (same names, same argument order). Plain Go twins:
// the esm/cpu backend's ops of the same names (checked by backend_test.go).
//
// Legend: T = tokens of the batch, D = model dim, H = heads, HD = head dim,
// N = output features of a Linear, nseq = sequences, V = vocab.
// Element types: f32 = float, f16 = __half, bf16 = __nv_bfloat16; every
// kernel is instantiated per type as extern "C" <kernel>_<type>[_<type>].
// All arithmetic is fp32 (statistics, rotary tables, GELU); only loads and
// stores convert. Compiled without --use_fast_math (exact erf/exp/sin/cos).
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16_rn(x); }

// vec4: 4 elements loaded or stored in one access (8 bytes for fp16/bf16,
// 16 for fp32); the address must be aligned to its size.
template <typename E>
struct alignas(4 * sizeof(E)) vec4 {
  E e[4];
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// embed: x(T,D) = table(V,D)[tokens(T)] * scales[seqid[t]]; rows whose token
// is mask (>= 0) are zero. scales == nullptr means no scaling (mask < 0).
// One block per token row.
template <typename O>
__device__ void embed(O* __restrict__ x, const float* __restrict__ table, const int* __restrict__ tokens,
                      const int* __restrict__ seqid, const float* __restrict__ scales, int T, int D, int mask) {
  const int t = blockIdx.x;
  if (t >= T) return;
  const int tok = tokens[t];
  const float s = mask >= 0 ? scales[seqid[t]] : 1.f;
  const bool zero = tok == mask;
  for (int i = threadIdx.x; i < D; i += blockDim.x)
    x[(long)t * D + i] = from_f<O>(zero ? 0.f : table[(long)tok * D + i] * s);
}

// layernorm: out(T,D) = (in - mean) * rstd * w(D) + b(D), with mean and
// variance in fp32 (two passes over the row), eps inside the sqrt. One warp
// per row, 4 rows per block. out may alias in (each element is read before
// the same thread writes it).
template <typename I, typename O>
__device__ void layernorm(O* out, const I* in, const float* __restrict__ w, const float* __restrict__ b,
                          int T, int D, float eps) {
  const int row = blockIdx.x * 4 + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= T) return;
  const I* x = in + (long)row * D;
  float sum = 0.f;
  for (int i = lane; i < D; i += 32) sum += to_f(x[i]);
  const float mean = warp_sum(sum) / D;
  float sq = 0.f;
  for (int i = lane; i < D; i += 32) {
    const float d = to_f(x[i]) - mean;
    sq += d * d;
  }
  const float rstd = 1.f / sqrtf(warp_sum(sq) / D + eps);
  O* o = out + (long)row * D;
  for (int i = lane; i < D; i += 32) o[i] = from_f<O>((to_f(x[i]) - mean) * rstd * w[i] + b[i]);
}

// layernorm_vec: the same LayerNorm for an fp32 input (the residual stream)
// with D % 4 == 0, D <= 128 * V and 16-byte aligned in, out, w, b: one warp per
// row, the row held in registers (V float4 per lane), two-pass statistics
// from the registers, so the row is read from memory once (the general form
// above reads it three times, one scalar at a time). Instantiated for V = 4,
// 8, 12, 16, 24 (layernorm_vec<V>_f32_<out>); the launcher takes the smallest
// that holds D, so small models do not pay registers (and occupancy) for 3B's
// rows.
template <typename O, int LN_VEC>
__device__ void layernorm_vec(O* out, const float* in, const float* __restrict__ w, const float* __restrict__ b,
                              int T, int D, float eps) {
  const int row = blockIdx.x * 4 + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= T) return;
  const int nv = D / 4;
  const float4* x = reinterpret_cast<const float4*>(in + (long)row * D);
  float4 r[LN_VEC];
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < LN_VEC; j++) {
    const int i = lane + 32 * j;
    if (i < nv) {
      r[j] = x[i];
      sum += (r[j].x + r[j].y) + (r[j].z + r[j].w);
    }
  }
  const float mean = warp_sum(sum) / D;
  float sq = 0.f;
#pragma unroll
  for (int j = 0; j < LN_VEC; j++) {
    if (lane + 32 * j < nv) {
      const float a = r[j].x - mean, c = r[j].y - mean, d = r[j].z - mean, e = r[j].w - mean;
      sq += (a * a + c * c) + (d * d + e * e);
    }
  }
  const float rstd = 1.f / sqrtf(warp_sum(sq) / D + eps);
  O* o = out + (long)row * D;
  const float4* w4 = reinterpret_cast<const float4*>(w);
  const float4* b4 = reinterpret_cast<const float4*>(b);
#pragma unroll
  for (int j = 0; j < LN_VEC; j++) {
    const int i = lane + 32 * j;
    if (i < nv) {
      const float4 ww = w4[i], bb = b4[i];
      vec4<O> y;
      y.e[0] = from_f<O>((r[j].x - mean) * rstd * ww.x + bb.x);
      y.e[1] = from_f<O>((r[j].y - mean) * rstd * ww.y + bb.y);
      y.e[2] = from_f<O>((r[j].z - mean) * rstd * ww.z + bb.z);
      y.e[3] = from_f<O>((r[j].w - mean) * rstd * ww.w + bb.w);
      reinterpret_cast<vec4<O>*>(o)[i] = y;
    }
  }
}

// rope_table: cs(P, HD/2) float2 = (cos, sin) of float(p) * inv_freq[i] for
// positions p < P, in fp32 (the angles rotary computes; computed once per
// longest sequence instead of once per layer).
__device__ void rope_table_impl(float2* cs, const float* __restrict__ inv_freq, int P, int half) {
  const long n = (long)P * half;
  for (long idx = blockIdx.x * (long)blockDim.x + threadIdx.x; idx < n; idx += (long)gridDim.x * blockDim.x) {
    const int i = idx % half, p = idx / half;
    float sn, c;
    sincosf((float)p * inv_freq[i], &sn, &c);
    cs[idx] = make_float2(c, sn);
  }
}

// rotary_tab: rotary (below) with the angles from rope_table and 4
// consecutive pairs per thread (HD/2 % 4 == 0, as for every ESM2 head dim,
// and qkv aligned to 4 elements). Index arithmetic in 32 bits (the launcher
// checks T·H·HD/4 < 2^31): two 32-bit divisions per thread instead of three
// 64-bit ones, which made the pass as much integer work as memory traffic.
template <typename E>
__device__ void rotary_tab(E* qkv, const int* __restrict__ pos, const float2* __restrict__ cs, int T, int H,
                          int HD, float qscale) {
  const unsigned half = HD / 2, q4 = half / 4, per = 2u * H * q4;  // 4-pair chunks per token
  const unsigned n = (unsigned)T * per;
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += gridDim.x * blockDim.x) {
    const unsigned t = idx / per, r = idx - t * per, hh = r / q4, i = (r - hh * q4) * 4;
    E* v = qkv + (long)t * 3 * H * HD + hh * HD;
    const float2* c = cs + (long)pos[t] * half + i;
    const float sc = hh < (unsigned)H ? qscale : 1.f;
    vec4<E>* p1 = reinterpret_cast<vec4<E>*>(v + i);
    vec4<E>* p2 = reinterpret_cast<vec4<E>*>(v + i + half);
    vec4<E> a = *p1, bb = *p2;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const float x1 = to_f(a.e[j]) * sc, x2 = to_f(bb.e[j]) * sc;
      const float2 k = c[j];
      a.e[j] = from_f<E>(x1 * k.x - x2 * k.y);
      bb.e[j] = from_f<E>(x2 * k.x + x1 * k.y);
    }
    *p1 = a;
    *p2 = bb;
  }
}

// rotary_wide: rotary_tab's rotation for 16-bit elements with 16-byte
// accesses: a thread takes 8 consecutive pairs (16 bytes at i and at
// i + HD/2) where HD/2 % 8 == 0, and a whole head (HD/8 chunks of 16
// bytes) at HD 24, whose halves of 12 elements do not split into 16-byte
// chunks. Built for the head dims where it beat rotary_tab's 8-byte
// accesses on an H200 in every run (BenchmarkPassBandwidth, 65,536
// tokens): HD 24 91.1–92.0 → 81.6–81.9 µs (2.8 → 3.1 TB/s), HD 64
// 184.6–185.1 → 179.7–180.9; level at HD 16 and 32, 3% slower at 128
// in one run of two, so those keep rotary_tab. Per element the same
// expression as rotary_tab, so the same bits (TestRotaryWideMatchesTab).
template <typename E, int HD>
__device__ void rotary_wide(E* qkv, const int* __restrict__ pos, const float2* __restrict__ cs, int T, int H,
                            float qscale) {
  constexpr int HALF = HD / 2;
  constexpr bool WHOLE = HALF % 8 != 0;          // HD 24: a whole head per thread
  constexpr int G = WHOLE ? HALF : 8;            // pairs per thread
  constexpr unsigned PH = HALF / G;              // threads per head
  constexpr int NC = WHOLE ? HD / 8 : 2;         // 16-byte chunks per thread
  static_assert(HALF % 4 == 0 && HD % 8 == 0, "16-byte chunks of pairs");
  const unsigned per = 2u * H * PH;              // threads per token
  const unsigned n = (unsigned)T * per;
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += gridDim.x * blockDim.x) {
    const unsigned t = idx / per, r = idx - t * per, hh = r / PH, i = (r - hh * PH) * G;
    E* v = qkv + (long)t * 3 * H * HD + hh * HD;
    const float4* c4 = reinterpret_cast<const float4*>(cs + (long)pos[t] * HALF + i);
    const float sc = hh < (unsigned)H ? qscale : 1.f;
    union {
      uint4 u[NC];
      E e[NC * 8];
    } w;
    if constexpr (WHOLE) {
#pragma unroll
      for (int k = 0; k < NC; k++) w.u[k] = reinterpret_cast<const uint4*>(v)[k];
    } else {
      w.u[0] = *reinterpret_cast<const uint4*>(v + i);
      w.u[1] = *reinterpret_cast<const uint4*>(v + i + HALF);
    }
    constexpr int B = WHOLE ? HALF : 8;  // offset of x2 in w.e
#pragma unroll
    for (int j = 0; j < G; j += 2) {
      const float4 kk = c4[j / 2];
      const float2 k2[2] = {make_float2(kk.x, kk.y), make_float2(kk.z, kk.w)};
#pragma unroll
      for (int q = 0; q < 2; q++) {
        const float x1 = to_f(w.e[j + q]) * sc, x2 = to_f(w.e[B + j + q]) * sc;
        const float2 k = k2[q];
        w.e[j + q] = from_f<E>(x1 * k.x - x2 * k.y);
        w.e[B + j + q] = from_f<E>(x2 * k.x + x1 * k.y);
      }
    }
    if constexpr (WHOLE) {
#pragma unroll
      for (int k = 0; k < NC; k++) reinterpret_cast<uint4*>(v)[k] = w.u[k];
    } else {
      *reinterpret_cast<uint4*>(v + i) = w.u[0];
      *reinterpret_cast<uint4*>(v + i + HALF) = w.u[1];
    }
  }
}

// rotary: in place on qkv(T, 3D) = [q | k | v]. One thread per (token,
// head among the 2H q and k heads, i < HD/2): q is multiplied by qscale,
// then (x1, x2) = (x[i], x[i+HD/2]) becomes (x1 c - x2 s, x2 c + x1 s) with
// angle = float(pos[t]) * inv_freq[i], cos/sin in fp32 (non-interleaved
// rotate_half). pos(T) restarts at 0 for every sequence.
template <typename E>
__device__ void rotary(E* qkv, const int* __restrict__ pos, const float* __restrict__ inv_freq, int T, int H,
                       int HD, float qscale) {
  const int half = HD / 2;
  const long n = (long)T * 2 * H * half;
  for (long idx = blockIdx.x * (long)blockDim.x + threadIdx.x; idx < n; idx += (long)gridDim.x * blockDim.x) {
    const int i = idx % half;
    const int hh = (idx / half) % (2 * H);
    const long t = idx / ((long)half * 2 * H);
    E* v = qkv + t * 3 * H * HD + (long)hh * HD;
    float x1 = to_f(v[i]), x2 = to_f(v[i + half]);
    if (hh < H) {
      x1 *= qscale;
      x2 *= qscale;
    }
    const float a = (float)pos[t] * inv_freq[i];
    float s, c;
    sincosf(a, &s, &c);
    v[i] = from_f<E>(x1 * c - x2 * s);
    v[i + half] = from_f<E>(x2 * c + x1 * s);
  }
}

// gelu: x(n) = 0.5 x (1 + erf(x / sqrt 2)) in place: the exact erf GELU
// (not the tanh form), the formula PyTorch's GELU evaluates in fp32 for
// fp16/bf16 tensors. Each thread handles 16 bytes (8 fp16/bf16 or 4 fp32)
// per step so enough loads are in flight to reach memory bandwidth; a
// scalar loop takes the tail when n or x is not 16-byte aligned.
__device__ __forceinline__ float gelu_f(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }
template <typename E>
__device__ void gelu(E* x, long n) {
  constexpr int V = 16 / sizeof(E);
  const long stride = (long)gridDim.x * blockDim.x, tid = blockIdx.x * (long)blockDim.x + threadIdx.x;
  long nv = ((unsigned long)x % 16 == 0) ? n / V : 0;
  uint4* xv = reinterpret_cast<uint4*>(x);
  for (long i = tid; i < nv; i += stride) {
    uint4 u = xv[i];
    E* e = reinterpret_cast<E*>(&u);
#pragma unroll
    for (int j = 0; j < V; j++) e[j] = from_f<E>(gelu_f(to_f(e[j])));
    xv[i] = u;
  }
  for (long i = nv * V + tid; i < n; i += stride) x[i] = from_f<E>(gelu_f(to_f(x[i])));
}

// gelu_table: tab[h] = the bits of gelu(h) for each of the 65,536 bit
// patterns h of E (fp16 or bf16), computed by gelu_f as gelu does it; NaN
// and infinite inputs included (gelu(-Inf) is NaN, as 0.5·x·(1+erf) makes it).
template <typename E>
__device__ void gelu_table(unsigned short* tab) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < 65536; i += gridDim.x * blockDim.x) {
    unsigned short h = (unsigned short)i;
    E g = from_f<E>(gelu_f(to_f(*reinterpret_cast<E*>(&h))));
    tab[i] = *reinterpret_cast<unsigned short*>(&g);
  }
}

// gelu_lut: x(n) of 16-bit elements = tab[x] in place, tab from gelu_table:
// the same bits as gelu, without its ~29 instructions of erff per element
// (which made the pass as much compute as memory). Each block copies the
// 128 KiB table into dynamic shared memory (131072 bytes) before it walks
// the tensor grid-stride, so launch about one block per SM. Lookups hit
// random banks: ~3-4-way conflicts, far below the memory's pace.
__device__ __forceinline__ unsigned lut2(const unsigned short* t, unsigned w) {
  return (unsigned)t[w & 0xffffu] | ((unsigned)t[w >> 16] << 16);
}
__device__ __forceinline__ uint4 lut8(const unsigned short* t, uint4 u) {
  return make_uint4(lut2(t, u.x), lut2(t, u.y), lut2(t, u.z), lut2(t, u.w));
}
extern "C" __global__ void gelu_lut(unsigned short* x, long n, const uint4* __restrict__ tab) {
  extern __shared__ uint4 lut_smem[];
  for (int i = threadIdx.x; i < 65536 / 8; i += blockDim.x) lut_smem[i] = tab[i];
  __syncthreads();
  const unsigned short* t = reinterpret_cast<const unsigned short*>(lut_smem);
  constexpr int U = 4;  // 16-byte loads in flight per thread
  const long stride = (long)gridDim.x * blockDim.x, tid = blockIdx.x * (long)blockDim.x + threadIdx.x;
  const long nv = ((unsigned long)x % 16 == 0) ? n / 8 : 0;
  uint4* xv = reinterpret_cast<uint4*>(x);
  long i = tid;
  for (; i + (U - 1) * stride < nv; i += U * stride) {
    uint4 u[U];
#pragma unroll
    for (int j = 0; j < U; j++) u[j] = xv[i + j * stride];
#pragma unroll
    for (int j = 0; j < U; j++) xv[i + j * stride] = lut8(t, u[j]);
  }
  for (; i < nv; i += stride) xv[i] = lut8(t, xv[i]);
  for (long k = nv * 8 + tid; k < n; k += stride) x[k] = t[x[k]];
}
extern "C" __global__ void gelu_table_f16(unsigned short* tab) { gelu_table<__half>(tab); }
extern "C" __global__ void gelu_table_bf16(unsigned short* tab) { gelu_table<bf16>(tab); }

// bias_add: out(T,N) += b(N).
template <typename O>
__device__ void bias_add(O* out, const float* __restrict__ b, long n, int N) {
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    out[i] = from_f<O>(to_f(out[i]) + b[i % N]);
}

// pool_mean: dst(nseq,D) fp32 = mean of x(T,D) over each sequence's residue
// rows (BOS and EOS excluded), accumulated in fp64 like the CPU twin.
// Grid (nseq, ceil(D/128)), block (128, POOL_ROWS): one column per x thread
// (coalesced rows), the rows split over the POOL_ROWS y threads (row r goes
// to thread r % POOL_ROWS), whose partial sums are then added in a fixed
// order: the same result on every run. One thread per column walked a whole
// sequence alone before, one dependent load after another.
#define POOL_ROWS 8
template <typename I>
__device__ void pool_mean(float* dst, const I* __restrict__ x, const int* __restrict__ cu, int D) {
  __shared__ double part[POOL_ROWS][128];
  const int s = blockIdx.x, i = blockIdx.y * 128 + threadIdx.x, ty = threadIdx.y;
  const int start = cu[s], n = cu[s + 1] - start;
  double acc = 0;
  if (i < D)
    for (int t = start + 1 + ty; t < start + n - 1; t += POOL_ROWS) acc += to_f(x[(long)t * D + i]);
  part[ty][threadIdx.x] = acc;
  __syncthreads();
  if (ty != 0 || i >= D) return;
  acc = part[0][threadIdx.x];
#pragma unroll
  for (int r = 1; r < POOL_ROWS; r++) acc += part[r][threadIdx.x];
  dst[(long)s * D + i] = (float)(acc * (1.0 / (n - 2)));
}

// pool_bos: dst(nseq,D) fp32 = x's BOS row of each sequence. Grid as
// pool_mean.
template <typename I>
__device__ void pool_bos(float* dst, const I* __restrict__ x, const int* __restrict__ cu, int D) {
  const int s = blockIdx.x, i = blockIdx.y * blockDim.x + threadIdx.x;
  if (i >= D) return;
  dst[(long)s * D + i] = to_f(x[(long)cu[s] * D + i]);
}

// convert: dst(n) = src(n) converted (round to nearest even).
template <typename I, typename O>
__device__ void convert(O* dst, const I* __restrict__ src, long n) {
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    dst[i] = from_f<O>(to_f(src[i]));
}

extern "C" __global__ void rope_table(float2* cs, const float* inv_freq, int P, int half) {
  rope_table_impl(cs, inv_freq, P, half);
}

#define ROTARY_WIDE(E, EN, HD)                                                                            \
  extern "C" __global__ void rotary_wide_##EN##_hd##HD(E* qkv, const int* pos, const float2* cs, int T, int H, \
                                                       float qscale) {                                     \
    rotary_wide<E, HD>(qkv, pos, cs, T, H, qscale);                                                        \
  }
#define ROTARY_WIDE_ALL(E, EN) ROTARY_WIDE(E, EN, 24) ROTARY_WIDE(E, EN, 64)
ROTARY_WIDE_ALL(__half, f16)
ROTARY_WIDE_ALL(bf16, bf16)
#undef ROTARY_WIDE_ALL
#undef ROTARY_WIDE

// Instantiations.
#define ONE(X) X(float, f32) X(__half, f16) X(bf16, bf16)
#define TWO_I(X, I, IN) X(I, IN, float, f32) X(I, IN, __half, f16) X(I, IN, bf16, bf16)
#define TWO(X) TWO_I(X, float, f32) TWO_I(X, __half, f16) TWO_I(X, bf16, bf16)

#define INST1(E, EN)                                                                                        \
  extern "C" __global__ void embed_##EN(E* x, const float* table, const int* tokens, const int* seqid,     \
                                        const float* scales, int T, int D, int mask) {                     \
    embed<E>(x, table, tokens, seqid, scales, T, D, mask);                                                  \
  }                                                                                                         \
  extern "C" __global__ void rotary_##EN(E* qkv, const int* pos, const float* inv_freq, int T, int H,       \
                                         int HD, float qscale) {                                            \
    rotary<E>(qkv, pos, inv_freq, T, H, HD, qscale);                                                        \
  }                                                                                                         \
  extern "C" __global__ void gelu_##EN(E* x, long n) { gelu<E>(x, n); }                                     \
  extern "C" __global__ void rotary_tab_##EN(E* qkv, const int* pos, const float2* cs, int T, int H, int HD, \
                                             float qscale) {                                                \
    rotary_tab<E>(qkv, pos, cs, T, H, HD, qscale);                                                          \
  }                                                                                                         \
  extern "C" __global__ void bias_add_##EN(E* out, const float* b, long n, int N) {                         \
    bias_add<E>(out, b, n, N);                                                                              \
  }                                                                                                         \
  extern "C" __global__ void pool_mean_##EN(float* dst, const E* x, const int* cu, int D) {                 \
    pool_mean<E>(dst, x, cu, D);                                                                            \
  }                                                                                                         \
  extern "C" __global__ void pool_bos_##EN(float* dst, const E* x, const int* cu, int D) {                  \
    pool_bos<E>(dst, x, cu, D);                                                                             \
  }
ONE(INST1)

#define LNV(V, E, EN)                                                                                       \
  extern "C" __global__ void layernorm_vec##V##_f32_##EN(E* out, const float* in, const float* w,           \
                                                         const float* b, int T, int D, float eps) {         \
    layernorm_vec<E, V>(out, in, w, b, T, D, eps);                                                          \
  }
#define LNV_ALL(E, EN) LNV(4, E, EN) LNV(8, E, EN) LNV(12, E, EN) LNV(16, E, EN) LNV(24, E, EN)
ONE(LNV_ALL)

#define INST2(I, IN, O, ON)                                                                                 \
  extern "C" __global__ void layernorm_##IN##_##ON(O* out, const I* in, const float* w, const float* b,     \
                                                   int T, int D, float eps) {                               \
    layernorm<I, O>(out, in, w, b, T, D, eps);                                                              \
  }                                                                                                         \
  extern "C" __global__ void convert_##IN##_##ON(O* dst, const I* src, long n) { convert<I, O>(dst, src, n); }
TWO(INST2)

// softmax_rows_f32: x(rows, n) fp32, each row replaced in place by its
// softmax, all in fp32 (expf, no fast math). A NaN or an infinite score
// (either sign) makes its whole row NaN, as in the CPU twin (esm/cpu
// softmaxRow): bad sums v - v, which is 0 for finite v and NaN otherwise.
// One block of blockDim.x (a multiple of 32, at most 1024) threads per row;
// grid (rows). Used by AttentionProbs (esm/cuda/attnprobs.go).
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }  // no math.h under NVRTC
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// block_reduce: the sum (is_max false) or max (is_max true) of v over the
// block, returned to every thread; red is 32 floats of shared memory.
__device__ float block_reduce(float v, float* red, bool is_max) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = is_max ? warp_max(v) : warp_sum(v);
  __syncthreads();  // red may still be read by an earlier reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  const float neutral = is_max ? neg_inf() : 0.f;
  v = lane < warps ? red[lane] : neutral;
  return is_max ? warp_max(v) : warp_sum(v);
}
extern "C" __global__ void softmax_rows_f32(float* x, int n) {
  __shared__ float red[32];
  float* r = x + (long)blockIdx.x * n;
  float m = neg_inf(), bad = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = r[i];
    m = fmaxf(m, v);
    bad += v - v;
  }
  m = block_reduce(m, red, true);
  float s = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float e = expf(r[i] - m);
    r[i] = e;
    s += e;
  }
  s = block_reduce(s + bad, red, false);
  const float inv = 1.f / s;
  for (int i = threadIdx.x; i < n; i += blockDim.x) r[i] *= inv;
}
