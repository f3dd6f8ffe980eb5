// Harness of the wgmma GEMM experiment (kernel.cuh): y = act(x·wᵀ + b) against
// cuBLASLt (bias epilogue) and cuBLASLt + a GELU pass, on random N(0,1)
// inputs, with the output poisoned (NaN) before each checked run. Built and
// run on the GPU host by run.sh (nvcc -gencode arch=compute_90a,code=sm_90a).
// Usage: gemm M N K [label]
#include <cuda.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cublasLt.h>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cmath>
#include <vector>
#include <algorithm>
#include <random>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(1); } } while (0)
#define CB(x) do { cublasStatus_t e_ = (x); if (e_ != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "%s:%d %s: %d\n", __FILE__, __LINE__, #x, (int)e_); exit(1); } } while (0)

#include "kernel.cuh"

__global__ void gelu_pass(half* x, long n) {
  long i = (long)(blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (i + 8 <= n) {
    uint4 v = *(uint4*)(x + i);
    half2* h = (half2*)&v;
#pragma unroll
    for (int q = 0; q < 4; q++) {
      float2 f = __half22float2(h[q]);
      h[q] = __floats2half2_rn(gelu_f(f.x), gelu_f(f.y));
    }
    *(uint4*)(x + i) = v;
  }
}

static CUtensorMap tmap(const half* p, int rows, int K, int boxRows) {
  CUtensorMap m;
  cuuint64_t dims[2] = {(cuuint64_t)K, (cuuint64_t)rows};
  cuuint64_t strides[1] = {(cuuint64_t)K * 2};
  cuuint32_t box[2] = {BK, (cuuint32_t)boxRows};
  cuuint32_t es[2] = {1, 1};
  CUresult r = cuTensorMapEncodeTiled(&m, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, (void*)p, dims, strides, box, es,
                                      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    fprintf(stderr, "cuTensorMapEncodeTiled: %d\n", (int)r);
    exit(1);
  }
  return m;
}

struct Lt {
  cublasLtHandle_t h;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulAlgo_t algo;
  void* ws;
  size_t wsSize = 32 << 20;
};

// y (M×N row-major) = x·wᵀ + b: in column-major terms yᵀ (N×M) = w (K×N)ᵀ · xᵀ (K×M).
static void ltSetup(Lt& L, int M, int N, int K, const half* bias) {
  CB(cublasLtCreate(&L.h));
  CB(cublasLtMatmulDescCreate(&L.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
  CB(cublasLtMatmulDescSetAttribute(L.desc, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA));
  CB(cublasLtMatmulDescSetAttribute(L.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB));
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
  CB(cublasLtMatmulDescSetAttribute(L.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  CB(cublasLtMatmulDescSetAttribute(L.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  CB(cublasLtMatrixLayoutCreate(&L.la, CUDA_R_16F, K, N, K));
  CB(cublasLtMatrixLayoutCreate(&L.lb, CUDA_R_16F, K, M, K));
  CB(cublasLtMatrixLayoutCreate(&L.lc, CUDA_R_16F, N, M, N));
  CK(cudaMalloc(&L.ws, L.wsSize));
  cublasLtMatmulPreference_t pref;
  CB(cublasLtMatmulPreferenceCreate(&pref));
  CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &L.wsSize, sizeof L.wsSize));
  cublasLtMatmulHeuristicResult_t res;
  int n = 0;
  CB(cublasLtMatmulAlgoGetHeuristic(L.h, L.desc, L.la, L.lb, L.lc, L.lc, pref, 1, &res, &n));
  if (n == 0) {
    fprintf(stderr, "no cuBLASLt algorithm\n");
    exit(1);
  }
  L.algo = res.algo;
}
static void ltRun(Lt& L, half* y, const half* x, const half* w) {
  float one = 1, zero = 0;
  CB(cublasLtMatmul(L.h, L.desc, &one, w, L.la, x, L.lb, &zero, y, L.lc, y, L.lc, &L.algo, L.ws, L.wsSize, 0));
}

template <class F>
static float timeit(F f, int reps) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> ts;
  for (int r = 0; r < 3; r++) f();
  for (int r = 0; r < reps; r++) {
    CK(cudaEventRecord(a));
    f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms);
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

static float h2f(half h) { return __half2float(h); }

int main(int argc, char** argv) {
  int M = atoi(argv[1]), N = atoi(argv[2]), K = atoi(argv[3]);
  const char* label = argc > 4 ? argv[4] : "";
  std::mt19937 rng(M * 31 + N * 7 + K);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<half> hx((size_t)M * K), hw((size_t)N * K), hb(N);
  for (auto& v : hx) v = __float2half(nd(rng));
  float ws = 1.f / sqrtf((float)K);
  for (auto& v : hw) v = __float2half(nd(rng) * ws);
  for (auto& v : hb) v = __float2half(nd(rng) * 0.5f);
  half *x, *w, *b, *y0, *y1, *y2;
  CK(cudaMalloc(&x, hx.size() * 2));
  CK(cudaMalloc(&w, hw.size() * 2));
  CK(cudaMalloc(&b, N * 2));
  CK(cudaMalloc(&y0, (size_t)M * N * 2));
  CK(cudaMalloc(&y1, (size_t)M * N * 2));
  CK(cudaMalloc(&y2, (size_t)M * N * 2));
  CK(cudaMemcpy(x, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(w, hw.data(), hw.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(b, hb.data(), N * 2, cudaMemcpyHostToDevice));

  Lt L;
  ltSetup(L, M, N, K, b);
  CUtensorMap mx = tmap(x, M, K, BM), mw = tmap(w, N, K, BN / CLUSTER);
  int sms;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  size_t smem = 1024 + STAGES * (BM + BN) * BK * 2 + STAGING_BYTES + (2 * STAGES + 2) * 8;
  CK(cudaFuncSetAttribute(gemm_bias_f16, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  CK(cudaFuncSetAttribute(gemm_bias_gelu_f16, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  int tiles = ((M + BM - 1) / BM) * ((N + BN - 1) / BN);
  int grid = std::min(tiles, sms) / CLUSTER * CLUSTER;
  if (getenv("GRID")) grid = std::min(grid, atoi(getenv("GRID")) / CLUSTER * CLUSTER);
  auto own = [&](bool gelu, half* out) {
    if (gelu)
      gemm_bias_gelu_f16<<<grid, NTHREADS, smem>>>(mx, mw, b, out, M, N, K);
    else
      gemm_bias_f16<<<grid, NTHREADS, smem>>>(mx, mw, b, out, M, N, K);
  };
  int nb = (int)(((size_t)M * N / 8 + 255) / 256);

  // Correctness: bias only, then with GELU, against cuBLASLt (+ GELU pass):
  // ours into a NaN-poisoned y1, compared element by element with y0.
  std::vector<half> r0((size_t)M * N), r1((size_t)M * N);
  auto check = [&](bool gelu, const char* what) {
    CK(cudaMemset(y1, 0xFF, (size_t)M * N * 2)); // NaN poison
    own(gelu, y1);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(r0.data(), y0, r0.size() * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(r1.data(), y1, r1.size() * 2, cudaMemcpyDeviceToHost));
    double md = 0, mr = 0;
    long bad = 0, diff = 0;
    for (size_t i = 0; i < r0.size(); i++) {
      float a = h2f(r0[i]), c = h2f(r1[i]);
      if (!std::isfinite(c)) bad++;
      if (a != c) diff++;
      md = std::max(md, (double)fabsf(a - c));
      mr = std::max(mr, (double)fabsf(a));
    }
    printf("%s%s: max|diff| %.3g of max %.3g (%.2e), %ld non-finite, %.2f%% differ\n", label, what, md, mr, md / mr, bad,
           100.0 * diff / r0.size());
  };
  ltRun(L, y0, x, w);
  char what[96];
  snprintf(what, sizeof what, " M=%d N=%d K=%d bias", M, N, K);
  check(false, what);
  gelu_pass<<<nb, 256>>>(y0, (long)M * N);
  check(true, " gelu");

  double fl = 2.0 * M * N * K;
  int reps = 30;
  float tl = timeit([&] { ltRun(L, y0, x, w); }, reps);
  float tg = timeit([&] { gelu_pass<<<nb, 256>>>(y0, (long)M * N); }, reps);
  float to = timeit([&] { own(false, y1); }, reps);
  float tog = timeit([&] { own(true, y1); }, reps);
  float tl2 = timeit([&] { ltRun(L, y0, x, w); }, reps);
  float to2 = timeit([&] { own(false, y1); }, reps);
  printf("%s times (ms, median of %d): cuBLASLt %.4f/%.4f (%.0f TFLOP/s), gelu pass %.4f, own %.4f/%.4f (%.0f TFLOP/s), own+gelu %.4f (%.0f); "
         "lt+gelu %.4f -> own+gelu %.2fx\n",
         label, reps, tl, tl2, fl / tl / 1e9, tg, to, to2, fl / to / 1e9, tog, fl / tog / 1e9, tl + tg, (tl + tg) / tog);
  return 0;
}
