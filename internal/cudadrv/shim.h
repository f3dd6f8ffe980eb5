// shim.h declares the few CUDA driver, NVRTC, cuBLAS and cuBLASLt types and
// entry points that package cudadrv calls. No CUDA header is included: the types
// are declared here (opaque handles as void*, enums as int) so the package
// builds on machines without CUDA. Every esm_* function calls through a
// pointer resolved with dlsym by esm_load (shim.c).
#ifndef ESM2GO_CUDA_SHIM_H
#define ESM2GO_CUDA_SHIM_H

#include <stddef.h>
#include <stdint.h>

typedef int CUresult;
typedef int CUdevice;
typedef void* CUcontext;
typedef void* CUmodule;
typedef void* CUfunction;
typedef void* CUstream;
typedef void* CUevent;
typedef unsigned long long CUdeviceptr;

typedef int nvrtcResult;
typedef void* nvrtcProgram;

typedef int cublasStatus_t;
typedef void* cublasHandle_t;
typedef void* cublasLtHandle_t;
typedef void* cublasLtMatmulDesc_t;
typedef void* cublasLtMatrixLayout_t;
typedef void* cublasLtMatmulPreference_t;

// cublasLtMatmulAlgo_t and cublasLtMatmulHeuristicResult_t as laid out in
// cublasLt.h (CUDA 12 and 13).
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
typedef struct {
	cublasLtMatmulAlgo_t algo;
	size_t workspaceSize;
	cublasStatus_t state;
	float wavesCount;
	int reserved[4];
} cublasLtMatmulHeuristicResult_t;

// Library slots for esm_load.
enum { ESM_LIB_CUDA = 0, ESM_LIB_NVRTC = 1, ESM_LIB_CUBLASLT = 2, ESM_LIB_CUBLAS = 3, ESM_NLIBS = 4 };

// esm_load dlopens path into slot lib and resolves that library's symbols.
// It returns 0 on success; otherwise it writes a message to err.
int esm_load(int lib, const char* path, char* err, size_t errlen);

// X(lib, return type, wrapper name, symbol, alternative symbol or NULL, params, args)
#define ESM_PASSTHROUGH(X) \
	X(ESM_LIB_CUDA, CUresult, cuInit, "cuInit", NULL, (unsigned int flags), (flags)) \
	X(ESM_LIB_CUDA, CUresult, cuDriverGetVersion, "cuDriverGetVersion", NULL, (int* v), (v)) \
	X(ESM_LIB_CUDA, CUresult, cuDeviceGetCount, "cuDeviceGetCount", NULL, (int* n), (n)) \
	X(ESM_LIB_CUDA, CUresult, cuDeviceGet, "cuDeviceGet", NULL, (CUdevice* d, int ordinal), (d, ordinal)) \
	X(ESM_LIB_CUDA, CUresult, cuDeviceGetName, "cuDeviceGetName", NULL, (char* name, int len, CUdevice d), (name, len, d)) \
	X(ESM_LIB_CUDA, CUresult, cuDeviceGetAttribute, "cuDeviceGetAttribute", NULL, (int* v, int attr, CUdevice d), (v, attr, d)) \
	X(ESM_LIB_CUDA, CUresult, cuDeviceTotalMem, "cuDeviceTotalMem_v2", NULL, (size_t* bytes, CUdevice d), (bytes, d)) \
	X(ESM_LIB_CUDA, CUresult, cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", NULL, (CUcontext* c, CUdevice d), (c, d)) \
	X(ESM_LIB_CUDA, CUresult, cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease", (CUdevice d), (d)) \
	X(ESM_LIB_CUDA, CUresult, cuCtxSetCurrent, "cuCtxSetCurrent", NULL, (CUcontext c), (c)) \
	X(ESM_LIB_CUDA, CUresult, cuCtxSynchronize, "cuCtxSynchronize", NULL, (void), ()) \
	X(ESM_LIB_CUDA, CUresult, cuMemGetInfo, "cuMemGetInfo_v2", NULL, (size_t* free, size_t* total), (free, total)) \
	X(ESM_LIB_CUDA, CUresult, cuMemAlloc, "cuMemAlloc_v2", NULL, (CUdeviceptr* p, size_t n), (p, n)) \
	X(ESM_LIB_CUDA, CUresult, cuMemFree, "cuMemFree_v2", NULL, (CUdeviceptr p), (p)) \
	X(ESM_LIB_CUDA, CUresult, cuMemHostAlloc, "cuMemHostAlloc", NULL, (void** p, size_t n, unsigned int flags), (p, n, flags)) \
	X(ESM_LIB_CUDA, CUresult, cuMemFreeHost, "cuMemFreeHost", NULL, (void* p), (p)) \
	X(ESM_LIB_CUDA, CUresult, cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", NULL, (CUdeviceptr dst, const void* src, size_t n, CUstream s), (dst, src, n, s)) \
	X(ESM_LIB_CUDA, CUresult, cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", NULL, (void* dst, CUdeviceptr src, size_t n, CUstream s), (dst, src, n, s)) \
	X(ESM_LIB_CUDA, CUresult, cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2", NULL, (CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s), (dst, src, n, s)) \
	X(ESM_LIB_CUDA, CUresult, cuMemsetD8Async, "cuMemsetD8Async", NULL, (CUdeviceptr dst, unsigned char v, size_t n, CUstream s), (dst, v, n, s)) \
	X(ESM_LIB_CUDA, CUresult, cuMemsetD32Async, "cuMemsetD32Async", NULL, (CUdeviceptr dst, unsigned int v, size_t n, CUstream s), (dst, v, n, s)) \
	X(ESM_LIB_CUDA, CUresult, cuStreamCreate, "cuStreamCreate", NULL, (CUstream* s, unsigned int flags), (s, flags)) \
	X(ESM_LIB_CUDA, CUresult, cuStreamDestroy, "cuStreamDestroy_v2", NULL, (CUstream s), (s)) \
	X(ESM_LIB_CUDA, CUresult, cuStreamSynchronize, "cuStreamSynchronize", NULL, (CUstream s), (s)) \
	X(ESM_LIB_CUDA, CUresult, cuStreamWaitEvent, "cuStreamWaitEvent", NULL, (CUstream s, CUevent e, unsigned int flags), (s, e, flags)) \
	X(ESM_LIB_CUDA, CUresult, cuEventCreate, "cuEventCreate", NULL, (CUevent* e, unsigned int flags), (e, flags)) \
	X(ESM_LIB_CUDA, CUresult, cuEventDestroy, "cuEventDestroy_v2", NULL, (CUevent e), (e)) \
	X(ESM_LIB_CUDA, CUresult, cuEventRecord, "cuEventRecord", NULL, (CUevent e, CUstream s), (e, s)) \
	X(ESM_LIB_CUDA, CUresult, cuEventSynchronize, "cuEventSynchronize", NULL, (CUevent e), (e)) \
	X(ESM_LIB_CUDA, CUresult, cuEventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime", (float* ms, CUevent start, CUevent end), (ms, start, end)) \
	X(ESM_LIB_CUDA, CUresult, cuModuleLoadData, "cuModuleLoadData", NULL, (CUmodule* m, const void* image), (m, image)) \
	X(ESM_LIB_CUDA, CUresult, cuModuleUnload, "cuModuleUnload", NULL, (CUmodule m), (m)) \
	X(ESM_LIB_CUDA, CUresult, cuModuleGetFunction, "cuModuleGetFunction", NULL, (CUfunction* f, CUmodule m, const char* name), (f, m, name)) \
	X(ESM_LIB_CUDA, CUresult, cuFuncSetAttribute, "cuFuncSetAttribute", NULL, (CUfunction f, int attr, int v), (f, attr, v)) \
	X(ESM_LIB_CUDA, CUresult, cuLaunchKernel, "cuLaunchKernel", NULL, \
		(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, \
		 unsigned int shared, CUstream s, void** params, void** extra), \
		(f, gx, gy, gz, bx, by, bz, shared, s, params, extra)) \
	X(ESM_LIB_CUDA, CUresult, cuGetErrorName, "cuGetErrorName", NULL, (CUresult e, const char** s), (e, s)) \
	X(ESM_LIB_CUDA, CUresult, cuGetErrorString, "cuGetErrorString", NULL, (CUresult e, const char** s), (e, s)) \
	X(ESM_LIB_NVRTC, nvrtcResult, nvrtcVersion, "nvrtcVersion", NULL, (int* major, int* minor), (major, minor)) \
	X(ESM_LIB_NVRTC, const char*, nvrtcGetErrorString, "nvrtcGetErrorString", NULL, (nvrtcResult r), (r)) \
	X(ESM_LIB_NVRTC, nvrtcResult, nvrtcCreateProgram, "nvrtcCreateProgram", NULL, \
		(nvrtcProgram* p, const char* src, const char* name, int nheaders, const char* const* headers, const char* const* includeNames), \
		(p, src, name, nheaders, headers, includeNames)) \
	X(ESM_LIB_NVRTC, nvrtcResult, nvrtcDestroyProgram, "nvrtcDestroyProgram", NULL, (nvrtcProgram* p), (p)) \
	X(ESM_LIB_NVRTC, nvrtcResult, nvrtcCompileProgram, "nvrtcCompileProgram", NULL, (nvrtcProgram p, int nopts, const char* const* opts), (p, nopts, opts)) \
	X(ESM_LIB_NVRTC, nvrtcResult, nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize", NULL, (nvrtcProgram p, size_t* n), (p, n)) \
	X(ESM_LIB_NVRTC, nvrtcResult, nvrtcGetProgramLog, "nvrtcGetProgramLog", NULL, (nvrtcProgram p, char* log), (p, log)) \
	X(ESM_LIB_NVRTC, nvrtcResult, nvrtcGetCUBINSize, "nvrtcGetCUBINSize", NULL, (nvrtcProgram p, size_t* n), (p, n)) \
	X(ESM_LIB_NVRTC, nvrtcResult, nvrtcGetCUBIN, "nvrtcGetCUBIN", NULL, (nvrtcProgram p, char* cubin), (p, cubin)) \
	X(ESM_LIB_CUBLAS, cublasStatus_t, cublasCreate, "cublasCreate_v2", NULL, (cublasHandle_t* h), (h)) \
	X(ESM_LIB_CUBLAS, cublasStatus_t, cublasDestroy, "cublasDestroy_v2", NULL, (cublasHandle_t h), (h)) \
	X(ESM_LIB_CUBLAS, cublasStatus_t, cublasSetStream, "cublasSetStream_v2", NULL, (cublasHandle_t h, CUstream s), (h, s)) \
	X(ESM_LIB_CUBLAS, cublasStatus_t, cublasSetMathMode, "cublasSetMathMode", NULL, (cublasHandle_t h, int mode), (h, mode)) \
	X(ESM_LIB_CUBLAS, const char*, cublasGetStatusName, "cublasGetStatusName", NULL, (cublasStatus_t s), (s)) \
	X(ESM_LIB_CUBLAS, const char*, cublasGetStatusString, "cublasGetStatusString", NULL, (cublasStatus_t s), (s)) \
	X(ESM_LIB_CUBLASLT, cublasStatus_t, cublasLtCreate, "cublasLtCreate", NULL, (cublasLtHandle_t* h), (h)) \
	X(ESM_LIB_CUBLASLT, cublasStatus_t, cublasLtDestroy, "cublasLtDestroy", NULL, (cublasLtHandle_t h), (h)) \
	X(ESM_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulDescCreate, "cublasLtMatmulDescCreate", NULL, (cublasLtMatmulDesc_t* d, int computeType, int scaleType), (d, computeType, scaleType)) \
	X(ESM_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulDescDestroy, "cublasLtMatmulDescDestroy", NULL, (cublasLtMatmulDesc_t d), (d)) \
	X(ESM_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute", NULL, (cublasLtMatmulDesc_t d, int attr, const void* buf, size_t n), (d, attr, buf, n)) \
	X(ESM_LIB_CUBLASLT, cublasStatus_t, cublasLtMatrixLayoutCreate, "cublasLtMatrixLayoutCreate", NULL, (cublasLtMatrixLayout_t* l, int type, uint64_t rows, uint64_t cols, int64_t ld), (l, type, rows, cols, ld)) \
	X(ESM_LIB_CUBLASLT, cublasStatus_t, cublasLtMatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy", NULL, (cublasLtMatrixLayout_t l), (l)) \
	X(ESM_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate", NULL, (cublasLtMatmulPreference_t* p), (p)) \
	X(ESM_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy", NULL, (cublasLtMatmulPreference_t p), (p)) \
	X(ESM_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute", NULL, (cublasLtMatmulPreference_t p, int attr, const void* buf, size_t n), (p, attr, buf, n)) \
	X(ESM_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic", NULL, \
		(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, \
		 cublasLtMatrixLayout_t dd, cublasLtMatmulPreference_t p, int requested, cublasLtMatmulHeuristicResult_t* results, int* returned), \
		(h, d, a, b, c, dd, p, requested, results, returned))

#define ESM_DECLARE(lib, ret, name, sym, alt, params, args) ret esm_##name params;
ESM_PASSTHROUGH(ESM_DECLARE)

// Hand-written wrappers: device pointers travel as CUdeviceptr (an integer in
// Go) and are cast to void* here, so Go never converts an integer to
// unsafe.Pointer.
cublasStatus_t esm_cublasSetWorkspace(cublasHandle_t h, CUdeviceptr ws, size_t n);
cublasStatus_t esm_cublasGemmEx(cublasHandle_t h, int transa, int transb, int m, int n, int k,
	const float* alpha, CUdeviceptr A, int atype, int lda, CUdeviceptr B, int btype, int ldb,
	const float* beta, CUdeviceptr C, int ctype, int ldc, int computeType, int algo);
cublasStatus_t esm_cublasGemmStridedBatchedEx(cublasHandle_t h, int transa, int transb, int m, int n, int k,
	const float* alpha, CUdeviceptr A, int atype, int lda, long long strideA,
	CUdeviceptr B, int btype, int ldb, long long strideB,
	const float* beta, CUdeviceptr C, int ctype, int ldc, long long strideC,
	int batch, int computeType, int algo);
cublasStatus_t esm_cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const float* alpha,
	CUdeviceptr A, cublasLtMatrixLayout_t adesc, CUdeviceptr B, cublasLtMatrixLayout_t bdesc,
	const float* beta, CUdeviceptr C, cublasLtMatrixLayout_t cdesc, CUdeviceptr D, cublasLtMatrixLayout_t ddesc,
	const cublasLtMatmulAlgo_t* algo, CUdeviceptr ws, size_t wsSize, CUstream s);
cublasStatus_t esm_cublasLtSetBiasPointer(cublasLtMatmulDesc_t d, CUdeviceptr bias);

// esm_launch builds the kernel parameter array in C memory: args holds nargs
// 8-byte slots, one per kernel argument, each written little-endian by Go.
CUresult esm_launch(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
	unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared, CUstream s,
	void* args, int nargs);

// esm_copy_sync_* queue a copy on s and wait for s, in one C call, so that a
// Go pointer is never used after the call returns.
CUresult esm_copy_sync_htod(CUdeviceptr dst, const void* src, size_t n, CUstream s);
CUresult esm_copy_sync_dtoh(void* dst, CUdeviceptr src, size_t n, CUstream s);

#endif
