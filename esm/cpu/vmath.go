package cpu

/*
#cgo CFLAGS: -O3
// Finite-math options let GCC if-convert the clamps and vectorize the loops
// (cgo refuses them as flags); attention scores and activations are finite
// (a NaN would already be a broken model).
#pragma GCC optimize ("finite-math-only", "no-signed-zeros", "no-trapping-math")
#include <stdint.h>
#include <string.h>

// Cephes expf, branch-free so the compiler vectorizes the loops that call
// it. Inputs are clamped to [-87.3, 88.7]; softmax only passes x <= 0.
static inline __attribute__((always_inline)) float esm2go_expf(float x) {
	x = x < -87.33654f ? -87.33654f : x;
	x = x > 88.72283f ? 88.72283f : x;
	float t = x * 1.44269504088896341f;
	t += t < 0 ? -0.5f : 0.5f;
	int32_t n = (int32_t)t;
	float fn = (float)n;
	x = x - fn * 0.693359375f - fn * -2.12194440e-4f;
	float z = x * x;
	float y = ((((((1.9875691500e-4f * x + 1.3981999507e-3f) * x + 8.3334519073e-3f) * x
		+ 4.1665795894e-2f) * x + 1.6666665459e-1f) * x + 5.0000001201e-1f) * z + x + 1.0f);
	int32_t bits = (n + 127) << 23;
	float p;
	memcpy(&p, &bits, 4);
	return y * p;
}

// Each function is built twice, for AVX2+FMA and for any x86-64, and the
// loader picks one at run time (GCC target_clones). Reductions keep 8
// independent accumulators so they vectorize without reassociation flags.
#define CLONES __attribute__((target_clones("avx2,fma", "default")))

// Row-wise softmax of s (rows, n) in place.
CLONES static void esm2go_softmax_rows(float *s, int rows, int n) {
	for (int r = 0; r < rows; r++) {
		float *row = s + (long)r * n;
		float mx[8];
		for (int k = 0; k < 8; k++) mx[k] = row[0];
		int i = 0;
		for (; i + 8 <= n; i += 8)
			for (int k = 0; k < 8; k++) mx[k] = row[i + k] > mx[k] ? row[i + k] : mx[k];
		float m = mx[0];
		for (int k = 1; k < 8; k++) m = mx[k] > m ? mx[k] : m;
		for (; i < n; i++) m = row[i] > m ? row[i] : m;
		for (i = 0; i < n; i++) row[i] = esm2go_expf(row[i] - m);
		float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
		for (i = 0; i + 8 <= n; i += 8)
			for (int k = 0; k < 8; k++) acc[k] += row[i + k];
		float sum = 0;
		for (int k = 0; k < 8; k++) sum += acc[k];
		for (; i < n; i++) sum += row[i];
		float inv = 1.0f / sum;
		for (i = 0; i < n; i++) row[i] *= inv;
	}
}

// GELU, exact erf form, as 0.5*x*erfc(-x/sqrt2) with Numerical Recipes'
// erfc fit (fractional error < 1.2e-7), in place.
CLONES static void esm2go_gelu(float *v, long len) {
	for (long i = 0; i < len; i++) {
		float x = v[i];
		float z = x * -0.70710678118654752f;
		float a = z < 0 ? -z : z;
		float t = 1.0f / (1.0f + 0.5f * a);
		float p = -a * a - 1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f +
			t * (-0.18628806f + t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f +
			t * (-0.82215223f + t * 0.17087277f))))))));
		float erfc = t * esm2go_expf(p);
		erfc = z < 0 ? 2.0f - erfc : erfc;
		v[i] = 0.5f * x * erfc;
	}
}
*/
import "C"

import "unsafe"

// vmath runs the elementwise hot loops (softmax exponentials, GELU) in C so
// the compiler vectorizes them (8 lanes with AVX2, chosen at load time); the
// Go versions in mathf.go are their scalar twins, used by the tests.
type vmath struct{}

// softmaxRows applies a row softmax to s (rows, n) in place.
func (v vmath) softmaxRows(s []float32, rows, n int) {
	if rows == 0 || n == 0 {
		return
	}
	_ = s[rows*n-1]
	C.esm2go_softmax_rows((*C.float)(unsafe.Pointer(&s[0])), C.int(rows), C.int(n))
}

// gelu applies the exact GELU to x in place.
func (v vmath) gelu(x []float32) {
	if len(x) == 0 {
		return
	}
	C.esm2go_gelu((*C.float)(unsafe.Pointer(&x[0])), C.long(len(x)))
}
