//go:build cgo

package cpu

/*
#cgo CFLAGS: -O3
// No signed zeros and no trapping math let GCC if-convert the clamps and
// vectorize the loops (cgo refuses them as flags; without no-trapping-math
// nothing vectorizes). Not finite-math-only: NaN and Inf must reach the
// outputs, and under it GCC compiled the max and the clamps to
// instructions that drop a NaN (a NaN score came out of the softmax as a
// finite weight) and may fold the v - v check below to 0.
#pragma GCC optimize ("no-signed-zeros", "no-trapping-math")
#include <stdint.h>
#include <string.h>

// Cephes expf for x <= 88.7 (both callers pass x <= 0, up to rounding),
// branch-free so the compiler vectorizes the loops that call it. Inputs
// below -87.3 are raised to it, so the result is never below 2^-126 (not
// even for -Inf); larger inputs are the caller's to avoid. No input is
// undefined behaviour: for NaN or +Inf the result is NaN or garbage, and
// both callers make such a result NaN themselves (softmax through its bad
// sum, GELU through its factor x).
static inline __attribute__((always_inline)) float esm2go_expf(float x) {
	x = x < -87.33654f ? -87.33654f : x;
	// n = round(x*log2e) by adding 1.5*2^23: the sum's low mantissa bits
	// are n (|n| <= 128); no float-to-int conversion, which C leaves
	// undefined for NaN.
	float r = x * 1.44269504088896341f + 12582912.0f;
	float fn = r - 12582912.0f;
	uint32_t rb;
	memcpy(&rb, &r, 4);
	x = x - fn * 0.693359375f - fn * -2.12194440e-4f;
	float z = x * x;
	float y = ((((((1.9875691500e-4f * x + 1.3981999507e-3f) * x + 8.3334519073e-3f) * x
		+ 4.1665795894e-2f) * x + 1.6666665459e-1f) * x + 5.0000001201e-1f) * z + x + 1.0f);
	uint32_t bits = (rb - 0x4B400000u + 127u) << 23; // 2^n
	float p;
	memcpy(&p, &bits, 4);
	return y * p;
}

// Each function is built twice, for AVX2+FMA and for any x86-64, and the
// loader picks one at run time (GCC target_clones). Reductions keep 8
// independent accumulators so they vectorize without reassociation flags.
#define CLONES __attribute__((target_clones("avx2,fma", "default")))

// 8-lane vectors (GCC vector extensions): AVX registers in the avx2 clone,
// pairs of SSE registers in the default one.
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));

// Row-wise softmax of s (rows, n) in place. A row holding a NaN or an
// infinity comes out all NaN (see softmaxRow in attention.go): bad
// accumulates v - v, which is 0 for every finite v and NaN otherwise, and
// is added to the row's sum, whatever the max and the clamped exp made of
// the bad value. Weights of a finite row are at least about 2^-126/n,
// never 0.
CLONES static void esm2go_softmax_rows(float *s, int rows, int n) {
	for (int r = 0; r < rows; r++) {
		float *row = s + (long)r * n;
		// The max as a compare and select on whole vectors: GCC does not
		// vectorize the scalar form without finite-math-only.
		f8 mx = (f8){} + row[0], bad = {};
		int i = 0;
		for (; i + 8 <= n; i += 8) {
			f8 v;
			memcpy(&v, row + i, sizeof v);
			i8 gt = v > mx;
			mx = (f8)((gt & (i8)v) | (~gt & (i8)mx));
			bad += v - v;
		}
		float m = mx[0], z = bad[0];
		for (int k = 1; k < 8; k++) {
			m = mx[k] > m ? mx[k] : m;
			z += bad[k];
		}
		for (; i < n; i++) {
			m = row[i] > m ? row[i] : m;
			z += row[i] - row[i];
		}
		for (i = 0; i < n; i++) row[i] = esm2go_expf(row[i] - m);
		float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
		for (i = 0; i + 8 <= n; i += 8)
			for (int k = 0; k < 8; k++) acc[k] += row[i + k];
		float sum = z;
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
