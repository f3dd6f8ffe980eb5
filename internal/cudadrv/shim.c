//go:build cgo

// shim.c resolves the CUDA entry points declared in shim.h with dlopen/dlsym
// and forwards calls to them. The function pointers below are the only
// global state; they are written once per library by esm_load (guarded by a
// sync.Once on the Go side) and read-only afterwards.
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include "shim.h"

#define ESM_DEFINE(lib, ret, name, sym, alt, params, args) \
	static ret (*p_##name) params; \
	ret esm_##name params { return p_##name args; }
ESM_PASSTHROUGH(ESM_DEFINE)

static cublasStatus_t (*p_cublasSetWorkspace)(cublasHandle_t, void*, size_t);
static cublasStatus_t (*p_cublasGemmEx)(cublasHandle_t, int, int, int, int, int,
	const void*, const void*, int, int, const void*, int, int,
	const void*, void*, int, int, int, int);
static cublasStatus_t (*p_cublasGemmStridedBatchedEx)(cublasHandle_t, int, int, int, int, int,
	const void*, const void*, int, int, long long,
	const void*, int, int, long long,
	const void*, void*, int, int, long long,
	int, int, int);
static cublasStatus_t (*p_cublasLtMatmul)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void*,
	const void*, cublasLtMatrixLayout_t, const void*, cublasLtMatrixLayout_t,
	const void*, const void*, cublasLtMatrixLayout_t, void*, cublasLtMatrixLayout_t,
	const cublasLtMatmulAlgo_t*, void*, size_t, CUstream);

typedef struct {
	int lib;
	const char* sym;
	const char* alt;
	void** slot;
} esm_symbol;

#define ESM_ENTRY(lib, ret, name, sym, alt, params, args) { lib, sym, alt, (void**)&p_##name },
static esm_symbol esm_symbols[] = {
	ESM_PASSTHROUGH(ESM_ENTRY)
	{ ESM_LIB_CUBLAS, "cublasSetWorkspace_v2", NULL, (void**)&p_cublasSetWorkspace },
	{ ESM_LIB_CUBLAS, "cublasGemmEx", NULL, (void**)&p_cublasGemmEx },
	{ ESM_LIB_CUBLAS, "cublasGemmStridedBatchedEx", NULL, (void**)&p_cublasGemmStridedBatchedEx },
	{ ESM_LIB_CUBLASLT, "cublasLtMatmul", NULL, (void**)&p_cublasLtMatmul },
};

int esm_load(int lib, const char* path, char* err, size_t errlen) {
	void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char* e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
		return 1;
	}
	size_t n = sizeof(esm_symbols) / sizeof(esm_symbols[0]);
	for (size_t i = 0; i < n; i++) {
		if (esm_symbols[i].lib != lib) continue;
		void* f = dlsym(h, esm_symbols[i].sym);
		if (!f && esm_symbols[i].alt) f = dlsym(h, esm_symbols[i].alt);
		if (!f) {
			snprintf(err, errlen, "%s: symbol %s not found", path, esm_symbols[i].sym);
			dlclose(h);
			return 2;
		}
		*esm_symbols[i].slot = f;
	}
	return 0;
}

cublasStatus_t esm_cublasSetWorkspace(cublasHandle_t h, CUdeviceptr ws, size_t n) {
	return p_cublasSetWorkspace(h, (void*)(uintptr_t)ws, n);
}

cublasStatus_t esm_cublasGemmEx(cublasHandle_t h, int transa, int transb, int m, int n, int k,
	const float* alpha, CUdeviceptr A, int atype, int lda, CUdeviceptr B, int btype, int ldb,
	const float* beta, CUdeviceptr C, int ctype, int ldc, int computeType, int algo) {
	return p_cublasGemmEx(h, transa, transb, m, n, k, alpha, (const void*)(uintptr_t)A, atype, lda,
		(const void*)(uintptr_t)B, btype, ldb, beta, (void*)(uintptr_t)C, ctype, ldc, computeType, algo);
}

cublasStatus_t esm_cublasGemmStridedBatchedEx(cublasHandle_t h, int transa, int transb, int m, int n, int k,
	const float* alpha, CUdeviceptr A, int atype, int lda, long long strideA,
	CUdeviceptr B, int btype, int ldb, long long strideB,
	const float* beta, CUdeviceptr C, int ctype, int ldc, long long strideC,
	int batch, int computeType, int algo) {
	return p_cublasGemmStridedBatchedEx(h, transa, transb, m, n, k, alpha,
		(const void*)(uintptr_t)A, atype, lda, strideA, (const void*)(uintptr_t)B, btype, ldb, strideB,
		beta, (void*)(uintptr_t)C, ctype, ldc, strideC, batch, computeType, algo);
}

cublasStatus_t esm_cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const float* alpha,
	CUdeviceptr A, cublasLtMatrixLayout_t adesc, CUdeviceptr B, cublasLtMatrixLayout_t bdesc,
	const float* beta, CUdeviceptr C, cublasLtMatrixLayout_t cdesc, CUdeviceptr D, cublasLtMatrixLayout_t ddesc,
	const cublasLtMatmulAlgo_t* algo, CUdeviceptr ws, size_t wsSize, CUstream s) {
	return p_cublasLtMatmul(h, d, alpha, (const void*)(uintptr_t)A, adesc, (const void*)(uintptr_t)B, bdesc,
		beta, (const void*)(uintptr_t)C, cdesc, (void*)(uintptr_t)D, ddesc, algo, (void*)(uintptr_t)ws, wsSize, s);
}

// CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8
cublasStatus_t esm_cublasLtSetBiasPointer(cublasLtMatmulDesc_t d, CUdeviceptr bias) {
	void* p = (void*)(uintptr_t)bias;
	return p_cublasLtMatmulDescSetAttribute(d, 8, &p, sizeof(p));
}

CUresult esm_launch(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
	unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared, CUstream s,
	void* args, int nargs) {
	void* params[64];
	if (nargs > 64) return 1; // CUDA_ERROR_INVALID_VALUE
	for (int i = 0; i < nargs; i++) params[i] = (char*)args + 8 * (size_t)i;
	return p_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shared, s, nargs ? params : NULL, NULL);
}

CUresult esm_copy_sync_htod(CUdeviceptr dst, const void* src, size_t n, CUstream s) {
	CUresult r = p_cuMemcpyHtoDAsync(dst, src, n, s);
	CUresult r2 = p_cuStreamSynchronize(s);
	return r ? r : r2;
}

CUresult esm_copy_sync_dtoh(void* dst, CUdeviceptr src, size_t n, CUstream s) {
	CUresult r = p_cuMemcpyDtoHAsync(dst, src, n, s);
	CUresult r2 = p_cuStreamSynchronize(s);
	return r ? r : r2;
}
