//go:build cgo

package cpu

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -lm
// No signed zeros and no trapping math let GCC if-convert the clamps and
// vectorize the loops (cgo refuses them as flags; without no-trapping-math
// nothing vectorizes). Not finite-math-only: NaN and Inf must reach the
// outputs, and under it GCC compiled the max and the clamps to
// instructions that drop a NaN (a NaN score came out of the softmax as a
// finite weight) and may fold the v - v check below to 0.
#pragma GCC optimize ("no-signed-zeros", "no-trapping-math")
#include <stdint.h>
#include <string.h>

// Cephes expf for x <= 88.7 (the softmax passes x <= 0, up to rounding),
// branch-free so the compiler vectorizes the loop that calls it. Inputs
// below -87.3 are raised to it, so the result is never below 2^-126 (not
// even for -Inf); larger inputs are the caller's to avoid. No input is
// undefined behaviour: for NaN or +Inf the result is NaN or garbage, and
// the softmax makes such a result NaN through its bad sum. (GELUV below is
// the same exp on 8 lanes.)
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

// esm2go_softmax_rows (only the attention's sgemm path, for head dims not
// a multiple of 8, uses it) is built by GCC target_clones and the loader
// picks a build at run time. Note that "avx2,fma" makes two clones, one
// for AVX2 without FMA and one for FMA, not one for both; the kernels
// below therefore dispatch themselves. Reductions keep 8 independent
// accumulators so they vectorize without reassociation flags.
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

// 8-lane helpers for the kernels below, which are each compiled twice,
// for AVX2+FMA and for any x86-64 (GELU a third time, for AVX-512), with
// the CPU asked at run time (esm2go_vm_level) which one it runs, as in
// attn_kernels.go. Unaligned
// load and store, broadcast: macros, since an inline function passing an
// f8 by value would change ABI between the two builds.
#define ld8(p) ({ f8 v_; memcpy(&v_, (p), sizeof v_); v_; })
#define st8(p, v) do { f8 w_ = (v); memcpy((p), &w_, sizeof w_); } while (0)
#define bc8(x) ({ float x_ = (x); (f8){x_, x_, x_, x_, x_, x_, x_, x_}; })

// GELU of a vector x of type F (integer twin I), exact erf form, as
// 0.5*x*erfc(-x/sqrt2) with Numerical Recipes' erfc fit (fractional error
// < 1.2e-7) and the Cephes expf above (inputs below -87.33654 raised to
// it; a NaN stays NaN through the clamp). The fit's polynomial in t is
// evaluated by Horner, like the Go twin (mathf.go's gelu, which does it in
// float64); here in float32, with fused multiply-adds in the AVX2 build.
#define GELUV(F, I, X) ({                                                        \
		F x_ = (X);                                                              \
		F z_ = x_ * -0.70710678118654752f;                                       \
		F a_ = (F)((I)z_ & 0x7fffffff);                                          \
		F t_ = 1.0f / (1.0f + 0.5f * a_);                                        \
		F p_ = -a_ * a_ - 1.26551223f + t_ * (1.00002368f + t_ * (0.37409196f +  \
			t_ * (0.09678418f + t_ * (-0.18628806f + t_ * (0.27886807f +         \
			t_ * (-1.13520398f + t_ * (1.48851587f + t_ * (-0.82215223f +        \
			t_ * 0.17087277f))))))));                                            \
		F lo_ = (F){} - 87.33654f;                                               \
		I gt_ = lo_ > p_;                                                        \
		p_ = (F)((gt_ & (I)lo_) | (~gt_ & (I)p_));                               \
		F r_ = p_ * 1.44269504088896341f + 12582912.0f;                          \
		F fn_ = r_ - 12582912.0f;                                                \
		F e_ = p_ - fn_ * 0.693359375f - fn_ * -2.12194440e-4f;                  \
		F ee_ = e_ * e_;                                                         \
		F y_ = ((((((1.9875691500e-4f * e_ + 1.3981999507e-3f) * e_ + 8.3334519073e-3f) * e_ \
			+ 4.1665795894e-2f) * e_ + 1.6666665459e-1f) * e_ + 5.0000001201e-1f) * ee_ + e_ + 1.0f); \
		I bits_ = ((I)r_ - 0x4B400000 + 127) << 23;                              \
		F erfc_ = t_ * (y_ * (F)bits_);                                          \
		I neg_ = z_ < 0;                                                         \
		erfc_ = (F)((neg_ & (I)(2.0f - erfc_)) | (~neg_ & (I)erfc_));            \
		0.5f * x_ * erfc_;                                                       \
	})

// GELU of v[0:len] in place, 32 lanes at a time (four vectors, four
// independent dependency chains of ~100 cycles of latency each, which
// the compiler's scheduler interleaves so the out-of-order core overlaps
// them), then 8, then the last len%8 elements through a zero-padded
// vector.
#define GELU_BODY                                                                \
	long i = 0;                                                                  \
	for (; i + 32 <= len; i += 32) {                                             \
		f8 a = GELUV(f8, i8, ld8(v + i)), b = GELUV(f8, i8, ld8(v + i + 8));     \
		f8 c = GELUV(f8, i8, ld8(v + i + 16)), d = GELUV(f8, i8, ld8(v + i + 24)); \
		st8(v + i, a); st8(v + i + 8, b); st8(v + i + 16, c); st8(v + i + 24, d); \
	}                                                                            \
	for (; i + 8 <= len; i += 8) st8(v + i, GELUV(f8, i8, ld8(v + i)));         \
	if (i < len) {                                                               \
		float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                   \
		memcpy(t, v + i, (len - i) * sizeof(float));                            \
		st8(t, GELUV(f8, i8, ld8(t)));                                           \
		memcpy(v + i, t, (len - i) * sizeof(float));                            \
	}

// LayerNorm of rows rows of width d: out = (x - mean)*rstd*w + b, rstd =
// 1/sqrt(var + eps). The mean, then the variance as the mean of (x -
// mean)^2 (two passes, so no cancellation; the second reads the row from
// L1), each summed in 16 float lanes and the lanes added in double. A NaN
// or infinity in a row makes its mean or variance NaN or infinite, so the
// whole output row is NaN. out may be in.
#define LN_BODY                                                                  \
	for (long r = 0; r < rows; r++) {                                            \
		const float *x = in + r * d;                                             \
		float *o = out + r * d;                                                  \
		f8 s0 = {}, s1 = {};                                                     \
		int i = 0;                                                               \
		for (; i + 16 <= d; i += 16) { s0 += ld8(x + i); s1 += ld8(x + i + 8); } \
		for (; i + 8 <= d; i += 8) s0 += ld8(x + i);                             \
		double sum = 0;                                                          \
		for (; i < d; i++) sum += x[i];                                          \
		for (int k = 0; k < 8; k++) sum += (double)s0[k] + (double)s1[k];        \
		float m = (float)(sum / d);                                              \
		f8 m8 = bc8(m);                                                          \
		s0 = (f8){}; s1 = (f8){};                                                \
		for (i = 0; i + 16 <= d; i += 16) {                                      \
			f8 a = ld8(x + i) - m8, b = ld8(x + i + 8) - m8;                     \
			s0 += a * a; s1 += b * b;                                            \
		}                                                                        \
		for (; i + 8 <= d; i += 8) { f8 a = ld8(x + i) - m8; s0 += a * a; }     \
		double sq = 0;                                                           \
		for (; i < d; i++) sq += (double)(x[i] - m) * (x[i] - m);               \
		for (int k = 0; k < 8; k++) sq += (double)s0[k] + (double)s1[k];         \
		float rstd = (float)(1.0 / __builtin_sqrt(sq / d + (double)eps));       \
		f8 r8 = bc8(rstd);                                                       \
		for (i = 0; i + 8 <= d; i += 8)                                          \
			st8(o + i, (ld8(x + i) - m8) * r8 * ld8(w + i) + ld8(b + i));        \
		for (; i < d; i++) o[i] = (x[i] - m) * rstd * w[i] + b[i];               \
	}

// o[r*n + i] += bias[i] for rows rows of width n.
#define ADD_BODY                                                                 \
	for (long r = 0; r < rows; r++) {                                            \
		float *o = out + r * n;                                                  \
		int i = 0;                                                               \
		for (; i + 8 <= n; i += 8) st8(o + i, ld8(o + i) + ld8(bias + i));       \
		for (; i < n; i++) o[i] += bias[i];                                      \
	}

// Rotary embedding of the q and k heads of rows tokens of the packed qkv
// (rows of stride ld; h heads of dim hd, half = hd/2): q is first scaled
// by qs, then each head's dims (i, i+half) are rotated by the angle of
// the token's position: cos/sin tables (positions, half), row pos[r].
#define ROT_BODY                                                                 \
	int half = hd / 2;                                                           \
	for (long r = 0; r < rows; r++) {                                            \
		float *row = x + r * ld;                                                 \
		const float *c = cs + (long)pos[r] * half, *s = sn + (long)pos[r] * half; \
		for (int hh = 0; hh < 2 * h; hh++) {                                     \
			float *v = row + (long)hh * hd;                                      \
			float q = hh < h ? qs : 1.0f;                                        \
			f8 q8 = bc8(q);                                                      \
			int i = 0;                                                           \
			for (; i + 8 <= half; i += 8) {                                      \
				f8 x1 = ld8(v + i), x2 = ld8(v + i + half);                      \
				if (hh < h) { x1 *= q8; x2 *= q8; }                              \
				f8 c8 = ld8(c + i), s8 = ld8(s + i);                             \
				st8(v + i, x1 * c8 - x2 * s8);                                   \
				st8(v + i + half, x2 * c8 + x1 * s8);                            \
			}                                                                    \
			for (; i < half; i++) {                                              \
				float x1 = v[i], x2 = v[i + half];                               \
				if (hh < h) { x1 *= q; x2 *= q; }                                \
				v[i] = x1 * c[i] - x2 * s[i];                                    \
				v[i + half] = x2 * c[i] + x1 * s[i];                             \
			}                                                                    \
		}                                                                        \
	}

#define SCHED __attribute__((optimize("schedule-insns", "sched-pressure")))
SCHED __attribute__((target("avx2,fma"))) static void esm2go_gelu_avx2(float *v, long len) { GELU_BODY }
static void esm2go_gelu_sse(float *v, long len) { GELU_BODY }

// GELU in 16-lane vectors (AVX-512F/DQ): 64 lanes at a time as four
// vectors, then 16, then GELU_BODY's 8-lane code for the rest. Every lane
// is GELUV's operations on one element, as in the AVX2 build, so the
// results are its bits (TestVMathGELUWide checks every length's tail).
typedef float f16v __attribute__((vector_size(64)));
typedef int32_t i16v __attribute__((vector_size(64)));
#define ld16(p) ({ f16v v_; memcpy(&v_, (p), sizeof v_); v_; })
#define st16(p, v) do { f16v w_ = (v); memcpy((p), &w_, sizeof w_); } while (0)
SCHED __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))
static void esm2go_gelu_avx512(float *v, long len) {
	long j = 0;
	for (; j + 64 <= len; j += 64) {
		f16v a = GELUV(f16v, i16v, ld16(v + j)), b = GELUV(f16v, i16v, ld16(v + j + 16));
		f16v c = GELUV(f16v, i16v, ld16(v + j + 32)), d = GELUV(f16v, i16v, ld16(v + j + 48));
		st16(v + j, a); st16(v + j + 16, b); st16(v + j + 32, c); st16(v + j + 48, d);
	}
	for (; j + 16 <= len; j += 16) st16(v + j, GELUV(f16v, i16v, ld16(v + j)));
	v += j;
	len -= j;
	GELU_BODY
}

__attribute__((target("avx2,fma"))) static void esm2go_ln_avx2(float *out, const float *in,
	const float *w, const float *b, long rows, int d, float eps) { LN_BODY }
static void esm2go_ln_sse(float *out, const float *in,
	const float *w, const float *b, long rows, int d, float eps) { LN_BODY }

__attribute__((target("avx2,fma"))) static void esm2go_add_avx2(float *out, const float *bias,
	long rows, int n) { ADD_BODY }
static void esm2go_add_sse(float *out, const float *bias, long rows, int n) { ADD_BODY }

__attribute__((target("avx2,fma"))) static void esm2go_rot_avx2(float *x, long ld, long rows,
	const int32_t *pos, const float *cs, const float *sn, int h, int hd, float qs) { ROT_BODY }
static void esm2go_rot_sse(float *x, long ld, long rows,
	const int32_t *pos, const float *cs, const float *sn, int h, int hd, float qs) { ROT_BODY }

// (libgcc's constructor has run the CPU detection by the time Go code
// runs, so no __builtin_cpu_init here.)
// The build this CPU runs: 2 for AVX-512F/VL/DQ besides AVX2 and FMA (GELU
// in 16 lanes, the rest as 1), 1 for AVX2 and FMA, 0 for any x86-64, as
// esm2go_attn_level.
static int esm2go_vm_level(void) {
	if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
		__builtin_cpu_supports("avx512dq")) return 2;
	return 1;
}

static void esm2go_gelu(int level, float *v, long len) {
	if (level == 2) esm2go_gelu_avx512(v, len);
	else if (level == 1) esm2go_gelu_avx2(v, len);
	else esm2go_gelu_sse(v, len);
}
static void esm2go_ln(int avx2, float *out, const float *in, const float *w, const float *b,
	long rows, int d, float eps) {
	if (avx2) esm2go_ln_avx2(out, in, w, b, rows, d, eps); else esm2go_ln_sse(out, in, w, b, rows, d, eps);
}
static void esm2go_add(int avx2, float *out, const float *bias, long rows, int n) {
	if (avx2) esm2go_add_avx2(out, bias, rows, n); else esm2go_add_sse(out, bias, rows, n);
}
static void esm2go_rot(int avx2, float *x, long ld, long rows, const int32_t *pos,
	const float *cs, const float *sn, int h, int hd, float qs) {
	if (avx2) esm2go_rot_avx2(x, ld, rows, pos, cs, sn, h, hd, qs);
	else esm2go_rot_sse(x, ld, rows, pos, cs, sn, h, hd, qs);
}
*/
import "C"

import "unsafe"

// vmath runs the elementwise hot loops (softmax exponentials, GELU,
// LayerNorm, bias adds, rotary) in C so they run as 8-lane vectors; the Go
// versions in mathf.go and vmath_twin.go are their twins, used by the
// tests and by the pure-Go build. level picks the build of the kernels
// (newVMath asks the CPU): 2 AVX-512 (GELU; the rest as 1), 1 AVX2+FMA;
// the zero vmath runs the build for any x86-64.
type vmath struct{ level C.int }

func newVMath() vmath { return vmath{level: C.esm2go_vm_level()} }

// portable returns the kernels built for any x86-64, for the tests.
func (vmath) portable() vmath { return vmath{} }

// narrow returns the AVX2 build where v runs the AVX-512 one (v itself
// otherwise), for the tests.
func (v vmath) narrow() vmath { return vmath{level: min(v.level, 1)} }

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
	C.esm2go_gelu(v.level, (*C.float)(unsafe.Pointer(&x[0])), C.long(len(x)))
}

// layerNorm writes out = LayerNorm(in) with weight w and bias b over rows
// of width d (len(in)/d rows; out may be in), as layerNormGo.
func (v vmath) layerNorm(out, in, w, b []float32, d int, eps float32) {
	rows := len(in) / d
	if rows == 0 {
		return
	}
	_, _, _ = out[rows*d-1], w[d-1], b[d-1]
	C.esm2go_ln(v.level, (*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&in[0])),
		(*C.float)(unsafe.Pointer(&w[0])), (*C.float)(unsafe.Pointer(&b[0])), C.long(rows), C.int(d), C.float(eps))
}

// addRows adds bias (n) to every row of out (len(out)/n rows of width n).
func (v vmath) addRows(out, bias []float32, n int) {
	rows := len(out) / n
	if rows == 0 {
		return
	}
	_ = bias[n-1]
	C.esm2go_add(v.level, (*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&bias[0])), C.long(rows), C.int(n))
}

// rotary applies the rotary embedding (and the q scale qs) to the q and k
// heads of len(pos) tokens of qkv (rows of stride ld, h heads of dim hd),
// as rotaryGo: token r at position pos[r], cos and sin tables of hd/2
// columns.
func (v vmath) rotary(x []float32, ld int, pos []int32, cos, sin []float32, h, hd int, qs float32) {
	rows := len(pos)
	if rows == 0 {
		return
	}
	half := hd / 2
	_ = x[(rows-1)*ld+2*h*hd-1]
	for _, p := range pos {
		_ = cos[(int(p)+1)*half-1]
		_ = sin[(int(p)+1)*half-1]
	}
	C.esm2go_rot(v.level, (*C.float)(unsafe.Pointer(&x[0])), C.long(ld), C.long(rows),
		(*C.int32_t)(unsafe.Pointer(&pos[0])), (*C.float)(unsafe.Pointer(&cos[0])), (*C.float)(unsafe.Pointer(&sin[0])),
		C.int(h), C.int(hd), C.float(qs))
}
