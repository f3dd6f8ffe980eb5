//go:build cgo

package cpu

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>

typedef void (*sgemm_fn)(int order, int transA, int transB, int m, int n, int k,
	float alpha, const float *a, int lda, const float *b, int ldb,
	float beta, float *c, int ldc);
typedef void (*set_threads_fn)(int);

// esm2go_blas_open dlopens the first OpenBLAS found and returns its handle,
// or NULL. The function pointers come back through out parameters, so no
// state lives in C.
static void *esm2go_blas_open(const char *name, void **sgemm, void **set_threads) {
	void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!h) return NULL;
	*sgemm = dlsym(h, "cblas_sgemm");
	*set_threads = dlsym(h, "openblas_set_num_threads");
	if (!*sgemm) { dlclose(h); return NULL; }
	return h;
}

static void esm2go_sgemm(void *f, int transB, int m, int n, int k, float alpha,
	const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
	// CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
	((sgemm_fn)f)(101, 111, transB ? 112 : 111, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static void esm2go_set_threads(void *f, int n) { if (f) ((set_threads_fn)f)(n); }
static void esm2go_blas_close(void *h) { if (h) dlclose(h); }
*/
import "C"

import (
	"os"
	"unsafe"
)

var openblasNames = []string{"libopenblas.so.0", "libopenblas.so", "libopenblasp-r0.3.so"}

type openblas struct {
	handle, fn, setThreads unsafe.Pointer
	name                   string
}

// openOpenBLAS returns nil when no OpenBLAS library can be loaded.
//
// OpenBLAS starts its thread pool when it is loaded, sized by
// OPENBLAS_NUM_THREADS (else all cores), and idle pool threads spin; the
// backend splits work across cores itself and calls OpenBLAS
// single-threaded, so unless the user set the variable, it is set to 1
// before the first load (measured: idle pool threads took ~10% of the CPU
// time of a 2-core run).
func openOpenBLAS(threads int) *openblas {
	if _, set := os.LookupEnv("OPENBLAS_NUM_THREADS"); !set {
		os.Setenv("OPENBLAS_NUM_THREADS", "1")
	}
	for _, name := range openblasNames {
		cname := C.CString(name)
		var fn, st unsafe.Pointer
		h := C.esm2go_blas_open(cname, &fn, &st)
		C.free(unsafe.Pointer(cname))
		if h != nil {
			C.esm2go_set_threads(st, C.int(threads))
			return &openblas{handle: h, fn: fn, setThreads: st, name: name}
		}
	}
	return nil
}

func (o *openblas) Name() string { return "openblas" }

func (o *openblas) Sgemm(transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	tb := C.int(0)
	if transB {
		tb = 1
	}
	C.esm2go_sgemm(o.fn, tb, C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.int(ldb), C.float(beta),
		(*C.float)(unsafe.Pointer(&c[0])), C.int(ldc))
}

func (o *openblas) Close() {
	C.esm2go_blas_close(o.handle)
	o.handle = nil
}
