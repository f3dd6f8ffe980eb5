//go:build cgo

package cpu

/*
#cgo CFLAGS: -O3
// No -ffast-math or finite-math-only here: every NaN and Inf of q, k and v
// must reach the scores and the outputs as plain multiply-adds carry them.
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

// Attention's two products for one (sequence, head) of the packed qkv
// (rows of stride ld), on operands first copied into contiguous scratch
// (strided rows of qkv are a page apart at ESM2's widths: read in place,
// nearly every row costs a TLB miss):
//   esm2go_attn_pack: K^T and V of the sequence, once per (sequence, head)
//   esm2go_attn_qk:   S(rows, n) = Q(rows, HD)·K(n, HD)^T for a query block
//   esm2go_attn_pv:   O(rows, HD) = P(rows, n)·V(n, HD), each row then
//                     scaled by its softmax's 1/sum where the softmax
//                     left the exponentials unscaled
// Register tiles of 6 rows by 16 columns (12 accumulators of 8 floats);
// every product is a plain sum over HD (or n) terms, so a NaN or an
// infinity anywhere in its operands reaches its result as it does in a
// textbook matmul (no term is ever skipped, zeros included). HD is a
// multiple of 8.
//
// Each kernel is compiled twice, for AVX2+FMA and for any x86-64 (8-lane
// vectors become pairs of SSE registers), what esm2go_attn_head runs per
// strip a third time for AVX-512 (below), and esm2go_attn_level says at
// run time which build the CPU can run.

typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));

// Unaligned 8-float load and store (macros: an inline function passing
// an f8 by value would change ABI between the two builds).
#define ld8(p) ({ f8 v_; memcpy(&v_, (p), sizeof v_); v_; })
#define st8(p, v) do { f8 w_ = (v); memcpy((p), &w_, sizeof w_); } while (0)
// x in all 8 lanes (one vbroadcastss; (f8){} + x would add 0 first).
#define bc8(x) ({ float x_ = (x); (f8){x_, x_, x_, x_, x_, x_, x_, x_}; })

// kt = K(n, HD)^T in strips of 16 keys, each strip contiguous: key j,
// dim d at kt[(j/16)*16*HD + d*16 + j%16], keys n..npad-1 zero (npad: n
// rounded up to 16); unless vp is NULL, vp = V(n, HD) in column strips,
// each strip contiguous: strip c0 (16 columns, or the last 8 where HD is
// an odd multiple of 8) starts at vp + c0*n with rows of its width.
static void esm2go_attn_pack(const float *k, const float *v, int ld, int n, int hd,
	float *kt, int npad, float *vp) {
	// key by key: each strided row of qkv is read once (a cache and TLB
	// miss each, so the rows 8 ahead are prefetched)
	for (int j = 0; j < n; j++) {
		if (j + 8 < n) {
			__builtin_prefetch(k + (long)(j + 8) * ld);
			if (vp) __builtin_prefetch(v + (long)(j + 8) * ld);
		}
		float *dst = kt + (long)(j / 16) * 16 * hd + j % 16;
		for (int d = 0; d < hd; d++) dst[d * 16] = k[(long)j * ld + d];
	}
	for (int j = n; j < npad; j++) {
		float *dst = kt + (long)(j / 16) * 16 * hd + j % 16;
		for (int d = 0; d < hd; d++) dst[d * 16] = 0;
	}
	for (int c0 = 0; vp && c0 < hd; c0 += 16) {
		int w = hd - c0 < 16 ? hd - c0 : 16;
		float *dst = vp + (long)c0 * n;
		for (int j = 0; j < n; j++) memcpy(dst + (long)j * w, v + (long)j * ld + c0, w * sizeof(float));
	}
}

// Q, K^T and V of keys j0..j1-1 of one sequence for all H heads, in
// esm2go_attn_pack's layouts (Q: rows of HD), head h's at qp + h*n*HD,
// kt + h*npad*HD and vp + h*n*HD; x is the sequence's first row of the
// packed qkv (Q, K, V of a token side by side, rows of stride ld). Rows
// are read whole and in order, which the hardware prefetches; packing
// head by head instead reads 64 to 128 bytes from each of n rows 3*HD*H
// floats apart, one cache miss a row, for every head. j1 == n also zeroes
// K^T's padding keys n..npad-1.
//
// Keys go 8 at a time: K's 8 rows of each 8 dims are transposed in
// registers (TR8) and stored as 8 runs of 8 floats of K^T (scalar
// stores of one float each otherwise, 16 per key and head); the copies
// have a size known at compile time for the head dims of the ESM2 models;
// the last keys go one at a time, with the padding's zeros where j1 == n.
// Same bytes as esm2go_attn_pack.
#define TR8(r0, r1, r2, r3, r4, r5, r6, r7) do {                                 \
		const i8 lo_ = {0, 8, 1, 9, 4, 12, 5, 13}, hi_ = {2, 10, 3, 11, 6, 14, 7, 15}; \
		const i8 l2_ = {0, 1, 8, 9, 4, 5, 12, 13}, h2_ = {2, 3, 10, 11, 6, 7, 14, 15}; \
		const i8 l4_ = {0, 1, 2, 3, 8, 9, 10, 11}, h4_ = {4, 5, 6, 7, 12, 13, 14, 15}; \
		f8 t0 = __builtin_shuffle(r0, r1, lo_), t1 = __builtin_shuffle(r0, r1, hi_); \
		f8 t2 = __builtin_shuffle(r2, r3, lo_), t3 = __builtin_shuffle(r2, r3, hi_); \
		f8 t4 = __builtin_shuffle(r4, r5, lo_), t5 = __builtin_shuffle(r4, r5, hi_); \
		f8 t6 = __builtin_shuffle(r6, r7, lo_), t7 = __builtin_shuffle(r6, r7, hi_); \
		f8 u0 = __builtin_shuffle(t0, t2, l2_), u1 = __builtin_shuffle(t0, t2, h2_); \
		f8 u2 = __builtin_shuffle(t1, t3, l2_), u3 = __builtin_shuffle(t1, t3, h2_); \
		f8 u4 = __builtin_shuffle(t4, t6, l2_), u5 = __builtin_shuffle(t4, t6, h2_); \
		f8 u6 = __builtin_shuffle(t5, t7, l2_), u7 = __builtin_shuffle(t5, t7, h2_); \
		r0 = __builtin_shuffle(u0, u4, l4_); r4 = __builtin_shuffle(u0, u4, h4_);    \
		r1 = __builtin_shuffle(u1, u5, l4_); r5 = __builtin_shuffle(u1, u5, h4_);    \
		r2 = __builtin_shuffle(u2, u6, l4_); r6 = __builtin_shuffle(u2, u6, h4_);    \
		r3 = __builtin_shuffle(u3, u7, l4_); r7 = __builtin_shuffle(u3, u7, h4_);    \
	} while (0)
#define PACKR_BODY                                                               \
	const int D = H * hd;                                                        \
	for (int j = j0; j < j1; j++) {                                              \
		const float *row = x + (long)j * ld;                                     \
		for (int h = 0; h < H; h++) {                                            \
			memcpy(qp + (long)h * n * hd + (long)j * hd, row + h * hd, hd * sizeof(float)); \
			const float *v = row + 2 * D + h * hd;                               \
			float *vh = vp + (long)h * n * hd;                                   \
			for (int c0 = 0; c0 < hd; c0 += 16) {                                \
				if (hd - c0 >= 16) memcpy(vh + (long)c0 * n + (long)j * 16, v + c0, 16 * sizeof(float)); \
				else memcpy(vh + (long)c0 * n + (long)j * 8, v + c0, 8 * sizeof(float)); \
			}                                                                    \
		}                                                                        \
	}                                                                            \
	int j = j0;                                                                  \
	for (; j % 8 == 0 && j + 8 <= j1; j += 8) {                                  \
		const float *k0 = x + (long)j * ld + D;                                  \
		for (int h = 0; h < H; h++) {                                            \
			float *dst = kt + (long)h * npad * hd + (long)(j / 16) * 16 * hd + j % 16; \
			for (int c = 0; c < hd; c += 8) {                                    \
				const float *k = k0 + h * hd + c;                                \
				f8 r0 = ld8(k), r1 = ld8(k + ld), r2 = ld8(k + 2L * ld), r3 = ld8(k + 3L * ld); \
				f8 r4 = ld8(k + 4L * ld), r5 = ld8(k + 5L * ld), r6 = ld8(k + 6L * ld), r7 = ld8(k + 7L * ld); \
				TR8(r0, r1, r2, r3, r4, r5, r6, r7);                             \
				float *d_ = dst + (long)c * 16;                                  \
				st8(d_, r0); st8(d_ + 16, r1); st8(d_ + 32, r2); st8(d_ + 48, r3); \
				st8(d_ + 64, r4); st8(d_ + 80, r5); st8(d_ + 96, r6); st8(d_ + 112, r7); \
			}                                                                    \
		}                                                                        \
	}                                                                            \
	for (int je = j1 == n ? npad : j1; j < je; j++)                              \
		for (int h = 0; h < H; h++) {                                            \
			const float *k = x + (long)j * ld + D + h * hd;                      \
			float *dst = kt + (long)h * npad * hd + (long)(j / 16) * 16 * hd + j % 16; \
			for (int d = 0; d < hd; d++) dst[d * 16] = j < n ? k[d] : 0;         \
		}
#define PACKR_FN(NAME, HD, ATTR)                                                 \
	ATTR static void NAME(const float *x, int ld, int n, int H, int hdv, int j0, int j1, \
		float *qp, float *kt, int npad, float *vp) {                             \
		const int hd = HD;                                                       \
		(void)hdv;                                                               \
		PACKR_BODY                                                               \
	}
#define AVX2_FMA __attribute__((target("avx2,fma")))
PACKR_FN(esm2go_attn_pack_rows16_avx2, 16, AVX2_FMA)
PACKR_FN(esm2go_attn_pack_rows24_avx2, 24, AVX2_FMA)
PACKR_FN(esm2go_attn_pack_rows32_avx2, 32, AVX2_FMA)
PACKR_FN(esm2go_attn_pack_rows_avx2, hdv, AVX2_FMA)
PACKR_FN(esm2go_attn_pack_rows_sse, hdv, )
#undef AVX2_FMA
static void esm2go_attn_pack_rows(int level, const float *x, int ld, int n, int H, int hd, int j0, int j1,
	float *qp, float *kt, int npad, float *vp) {
	if (level == 0) esm2go_attn_pack_rows_sse(x, ld, n, H, hd, j0, j1, qp, kt, npad, vp);
	else if (hd == 16) esm2go_attn_pack_rows16_avx2(x, ld, n, H, hd, j0, j1, qp, kt, npad, vp);
	else if (hd == 24) esm2go_attn_pack_rows24_avx2(x, ld, n, H, hd, j0, j1, qp, kt, npad, vp);
	else if (hd == 32) esm2go_attn_pack_rows32_avx2(x, ld, n, H, hd, j0, j1, qp, kt, npad, vp);
	else esm2go_attn_pack_rows_avx2(x, ld, n, H, hd, j0, j1, qp, kt, npad, vp);
}

// S(rows, n) with leading dimension n, in tiles of 6 rows by 16 keys; a
// tile with fewer rows repeats its last row (computed, never stored), one
// with fewer keys goes through a buffer.
#define QK_TILE(A0, A1, A2, A3, A4, A5, STORE)                                   \
	do {                                                                         \
		f8 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {};           \
		f8 c30 = {}, c31 = {}, c40 = {}, c41 = {}, c50 = {}, c51 = {};           \
		const float *bp = b;                                                     \
		for (int d = 0; d < hd; d++, bp += 16) {                                 \
			f8 b0 = ld8(bp), b1 = ld8(bp + 8), x;                                \
			x = bc8(A0[d]); c00 += x * b0; c01 += x * b1;                        \
			x = bc8(A1[d]); c10 += x * b0; c11 += x * b1;                        \
			x = bc8(A2[d]); c20 += x * b0; c21 += x * b1;                        \
			x = bc8(A3[d]); c30 += x * b0; c31 += x * b1;                        \
			x = bc8(A4[d]); c40 += x * b0; c41 += x * b1;                        \
			x = bc8(A5[d]); c50 += x * b0; c51 += x * b1;                        \
		}                                                                        \
		STORE(0, c00, c01); STORE(1, c10, c11); STORE(2, c20, c21);              \
		STORE(3, c30, c31); STORE(4, c40, c41); STORE(5, c50, c51);              \
	} while (0)
// Each stored score also goes into its row's running max (mx, 8 lanes per
// row), for esm2go_attn_softmax: MAX8(a, b) is a > b ? a : b (vmaxps in
// the AVX2 build), exact and independent of the order of the scores. A
// NaN may or may not win it; the softmax makes such a row NaN anyway.
#define SEL_GT(x, m) ({ i8 g_ = (x) > (m); (f8)((g_ & (i8)(x)) | (~g_ & (i8)(m))); })
#define QK_ST(r, x0, x1) do {                                                    \
		float *d_ = s + (long)(i0 + r) * n + j0;                                 \
		st8(d_, x0);                                                             \
		st8(d_ + 8, x1);                                                         \
		float *m_ = mx + (long)(i0 + r) * 8;                                     \
		st8(m_, MAX8(x1, MAX8(x0, ld8(m_))));                                    \
	} while (0)
#define QK_ST_PART(r, x0, x1) do {                                               \
		if (i0 + r < rows) {                                                     \
			float t_[16];                                                        \
			st8(t_, x0);                                                         \
			st8(t_ + 8, x1);                                                     \
			float *m_ = mx + (long)(i0 + r) * 8;                                 \
			for (int j = j0; j < j0 + 16 && j < n; j++) {                        \
				float x_ = t_[j - j0];                                           \
				s[(long)(i0 + r) * n + j] = x_;                                  \
				m_[j & 7] = x_ > m_[j & 7] ? x_ : m_[j & 7];                     \
			}                                                                    \
		}                                                                        \
	} while (0)
// A tile of fewer than 6 rows but all 16 keys (the last of a 64-row
// block) stores its rows as vectors.
#define QK_ST_ROWS(r, x0, x1) do { if (i0 + r < rows) QK_ST(r, x0, x1); } while (0)
#define QK_BODY                                                                  \
	for (int j0 = 0; j0 < npad; j0 += 16) {                                      \
		const float *b = kt + (long)j0 * hd;                                     \
		int i0 = 0;                                                              \
		if (j0 + 16 <= n) {                                                      \
			for (; i0 + 6 <= rows; i0 += 6) {                                    \
				const float *a0 = q + (long)i0 * hd;                             \
				QK_TILE(a0, (a0 + hd), (a0 + 2 * hd), (a0 + 3 * hd), (a0 + 4 * hd), (a0 + 5 * hd), QK_ST); \
			}                                                                    \
		}                                                                        \
		for (; i0 < rows; i0 += 6) {                                             \
			const float *a[6];                                                   \
			for (int r = 0; r < 6; r++) a[r] = q + (long)(i0 + r < rows ? i0 + r : rows - 1) * hd; \
			if (j0 + 16 <= n) {                                                  \
				QK_TILE(a[0], a[1], a[2], a[3], a[4], a[5], QK_ST_ROWS);         \
			} else {                                                             \
				QK_TILE(a[0], a[1], a[2], a[3], a[4], a[5], QK_ST_PART);         \
			}                                                                    \
		}                                                                        \
	}

// q: the block's queries packed, (rows, HD).
#define MAX8(a, b) __builtin_ia32_maxps256((a), (b))
__attribute__((target("avx2,fma"))) static void esm2go_attn_qk_avx2(const float *q,
	const float *kt, int npad, int rows, int n, int hd, float *s, float *mx) { QK_BODY }
#undef MAX8
#define MAX8(a, b) SEL_GT((a), (b))
static void esm2go_attn_qk_sse(const float *q,
	const float *kt, int npad, int rows, int n, int hd, float *s, float *mx) { QK_BODY }
#undef MAX8

// exp(x) for x <= 0 from a table of 2^(j/8) and a degree-4 polynomial
// (expk in attn_twin.go is its Go twin): with k = round(x*8/ln 2) = 8m + j
// (0 <= j < 8) and r = x - k*ln(2)/8 (|r| <= ln(2)/16, by Cody-Waite's
// two-part constant), e^x = 2^m * 2^(j/8) * (1 + q(r)), q(r) ~ e^r - 1 =
// r + r^2*(c2 + c3*r + c4*r^2) (minimax on |r| <= ln(2)/16, relative
// error 2e-10). s = 2^m * 2^(j/8) is exact: entry j of EXP_TAB8 holds the
// bits of 2^(j/8) less j<<20, and r_'s bits shifted left by 20 are k<<20
// (k is r_'s low mantissa bits; the rounding constant's bits shift out),
// so adding them puts m in the exponent field (PERM8 reads only the low 3
// bits of r_ for j); the result is s + s*q (one FMA). Within 0.89 ulp of
// exp over every float in [-87.33654, 0] in the AVX2+FMA build, 1.10 ulp
// in the portable one (exhaustive check against the double exp; the
// previous Cephes expf was within 1.01 ulp), and with 8 FMA-unit
// operations per 8 scores instead of 11 (with the clamp and the 2^n:
// 13 vector operations instead of 16). Inputs below -87.33654 are raised
// to it, so the result is never below 2^-126 (k >= -1008, so m >= -126:
// s is normal; not even for -Inf); for NaN the result is garbage or NaN,
// which the softmax makes NaN through its bad sum. No float-to-int
// conversion (undefined for NaN in C): r_'s bits are k + 1.5*2^23's.
// x < -87.33654 becomes -87.33654 (NaN stays NaN: MAX8 returns its second
// operand unless the first is greater). PERM8(t, i) is lane i&7 of t in
// every lane i (vpermps in the AVX2 build). (A macro: an inline function
// passing an f8 by value would change ABI between the two builds.)
typedef uint32_t u8v __attribute__((vector_size(32)));
#define EXP_TAB8 ((i8){0x3F800000, 0x3F7B95C2, 0x3F7837F0, 0x3F75FED7,         \
		0x3F7504F3, 0x3F75672A, 0x3F7744FD, 0x3F7AC0C7})
#define esm2go_attn_exp8(X) ({                                                   \
		f8 x_ = MAX8((f8){} - 87.33654f, (X));                                   \
		f8 r_ = x_ * 11.5415602f + 12582912.0f;                                  \
		f8 fn_ = r_ - 12582912.0f;                                               \
		x_ = x_ - fn_ * 0.086639404296875f - fn_ * 3.993272912e-6f;              \
		f8 z_ = x_ * x_;                                                         \
		f8 q_ = (4.166585952e-2f * z_ + (1.666803509e-1f * x_ + 0.5f)) * z_ + x_; \
		f8 s_ = (f8)((i8)PERM8(EXP_TAB8, (i8)r_) + (i8)((u8v)r_ << 20));         \
		s_ * q_ + s_;                                                            \
	})

// Row softmax of S(rows, n) (leading dimension lds) in place from the row maxima qk left in mx:
// one pass for the exponentials and their sum, one to scale; or, unless
// norm, only the first, with the row's 1/sum left in mx[r*8] for
// esm2go_attn_pv to scale the row's output by (HD products per row
// instead of n). The first
// pass takes 4 vectors at a time, their exponentials' dependency chains
// (~60 cycles of latency each) interleaved by the compiler's scheduler
// (schedule-insns in the AVX2 build: without it, GCC emits one chain
// after the other and the out-of-order window holds too few of them):
// 0.80 -> 0.69 ns per score per core at n = 1002. A row holding
// a NaN or an infinity comes out all NaN (see softmaxRow in attention.go):
// t = x - max is NaN or -Inf for some x of such a row (NaN x; +Inf x, the
// max, minus itself; -Inf x minus a finite max or -Inf), so the sum of
// t - t, 0 for finite rows, is NaN and is added to the row's sum. A row
// of n >= 8 not a multiple of 8 ends with the vector of its last 8
// elements, of which the lanes in tail are new (the others were done by
// the main loop and are kept); shorter rows go one element at a time.
// The part of a row's exponentials after the 32-score steps (SOFTMAX_BODY
// and the 16-lane build share it): 8 at a time, the last partial vector
// (lanes in tail, declared by the caller) or one at a time for rows of n
// < 8, then the row's sum of acc and bad. Score i of the row is at
// row + SX(i) (i itself in a row-major strip; the 16-lane build keeps
// its strip in blocks of 16 keys, see esm2go_attn_head); 8 scores from a
// multiple of 8 are contiguous either way, the last 8 of the row (from
// n - 8) only where TAIL_LD and TAIL_ST say so. NB(x) is x where the
// scores may hold a NaN or an infinity (bad then makes the row NaN), and
// nothing where they cannot (bad stays +0, and acc[k] + 0 is acc[k]).
#define SOFTMAX_REST                                                             \
		for (; i + 8 <= n; i += 8) {                                             \
			f8 t = ld8(row + SX(i)) - m8;                                        \
			NB(bad += t - t;)                                                    \
			f8 e = esm2go_attn_exp8(t);                                          \
			st8(row + SX(i), e);                                                 \
			acc += e;                                                            \
		}                                                                        \
		if (i < n && n >= 8) {                                                   \
			tail = (i8){0, 1, 2, 3, 4, 5, 6, 7} >= 8 - (n - i);                  \
			f8 old = TAIL_LD(n - 8), t = old - m8;                               \
			f8 e = esm2go_attn_exp8(t);                                          \
			TAIL_ST(n - 8, (f8)((tail & (i8)e) | (~tail & (i8)old)));            \
			acc += (f8)(tail & (i8)e);                                           \
			NB(bad += (f8)(tail & (i8)(t - t));)                                 \
		} else {                                                                 \
			for (; i < n; i++) {                                                 \
				float t = row[SX(i)] - m;                                        \
				f8 e = esm2go_attn_exp8((f8){} + t);                             \
				row[SX(i)] = e[0];                                               \
				acc[0] += e[0];                                                  \
				NB(bad[0] += t - t;)                                             \
			}                                                                    \
		}                                                                        \
		float sum = 0;                                                           \
		for (int k = 0; k < 8; k++) sum += acc[k] + bad[k];
#define SX(i) (i)
#define NB(x) x
#define TAIL_LD(i) ld8(row + (i))
#define TAIL_ST(i, x) st8(row + (i), (x))

#define SOFTMAX_BODY                                                             \
	for (int r = 0; r < rows; r++) {                                             \
		float *row = s + (long)r * lds;                                          \
		f8 mv = ld8(mx + (long)r * 8);                                           \
		float m = mv[0];                                                         \
		for (int k = 1; k < 8; k++) m = mv[k] > m ? mv[k] : m;                   \
		f8 m8 = (f8){} + m, acc = {}, bad = {};                                  \
		int i = 0;                                                               \
		f8 acc1 = {}, bad1 = {};                                                 \
		for (; i + 32 <= n; i += 32) {                                           \
			f8 t0 = ld8(row + i) - m8, t1 = ld8(row + i + 8) - m8;               \
			f8 t2 = ld8(row + i + 16) - m8, t3 = ld8(row + i + 24) - m8;         \
			bad += (t0 - t0) + (t2 - t2);                                        \
			bad1 += (t1 - t1) + (t3 - t3);                                       \
			f8 e0 = esm2go_attn_exp8(t0), e1 = esm2go_attn_exp8(t1);             \
			f8 e2 = esm2go_attn_exp8(t2), e3 = esm2go_attn_exp8(t3);             \
			st8(row + i, e0); st8(row + i + 8, e1);                              \
			st8(row + i + 16, e2); st8(row + i + 24, e3);                        \
			acc += e0 + e2;                                                      \
			acc1 += e1 + e3;                                                     \
		}                                                                        \
		acc += acc1;                                                             \
		bad += bad1;                                                             \
		i8 tail = {};                                                            \
		SOFTMAX_REST                                                             \
		f8 inv = (f8){} + 1.0f / sum;                                            \
		if (!norm) {                                                             \
			mx[(long)r * 8] = inv[0];                                            \
			continue;                                                            \
		}                                                                        \
		for (i = 0; i + 8 <= n; i += 8) st8(row + i, ld8(row + i) * inv);        \
		if (i < n && n >= 8) {                                                   \
			float *p_ = row + n - 8;                                             \
			f8 old = ld8(p_);                                                    \
			st8(p_, (f8)((tail & (i8)(old * inv)) | (~tail & (i8)old)));         \
		} else {                                                                 \
			for (; i < n; i++) row[i] *= inv[0];                                 \
		}                                                                        \
	}

#define MAX8(a, b) __builtin_ia32_maxps256((a), (b))
#define PERM8(t, i) ((i8)__builtin_ia32_permvarsf256((f8)(t), (i)))
__attribute__((optimize("schedule-insns", "sched-pressure"))) __attribute__((target("avx2,fma")))
static void esm2go_attn_softmax_avx2(float *s, int rows, int n, int lds,
	float *mx, int norm) { SOFTMAX_BODY }
// exp8 on x[0..n) (n a multiple of 8) into y, for the tests
__attribute__((target("avx2,fma"))) static void esm2go_attn_exps_avx2(const float *x, float *y, int n) {
	for (int i = 0; i < n; i += 8) st8(y + i, esm2go_attn_exp8(ld8(x + i)));
}
#undef PERM8
#undef MAX8
#define MAX8(a, b) SEL_GT((a), (b))
#define PERM8(t, i) __builtin_shuffle((t), (i) & 7)
static void esm2go_attn_softmax_sse(float *s, int rows, int n, int lds,
	float *mx, int norm) { SOFTMAX_BODY }
static void esm2go_attn_exps_sse(const float *x, float *y, int n) {
	for (int i = 0; i < n; i += 8) st8(y + i, esm2go_attn_exp8(ld8(x + i)));
}
#undef PERM8
#undef MAX8
#undef SX
#undef NB
#undef TAIL_LD
#undef TAIL_ST


// O(rows, HD) with leading dimension ldo, from P(rows, n) (leading
// dimension ldp) and V packed in strips (esm2go_attn_pack), row i scaled by
// inv[i*8] unless inv is NULL: tiles of 6 rows by 16 columns,
// then one 8 columns wide where HD is an odd multiple of 8. A tile with
// fewer rows repeats its last row (computed, never stored).
#define PV_BODY                                                                  \
	for (int i0 = 0; i0 < rows; i0 += 6) {                                       \
		const float *a0, *a1, *a2, *a3, *a4, *a5;                                \
		int nr = rows - i0 < 6 ? rows - i0 : 6;                                  \
		a0 = p + (long)i0 * ldp;                                                 \
		a1 = nr > 1 ? a0 + ldp : a0;                                               \
		a2 = nr > 2 ? a1 + ldp : a1;                                               \
		a3 = nr > 3 ? a2 + ldp : a2;                                               \
		a4 = nr > 4 ? a3 + ldp : a3;                                               \
		a5 = nr > 5 ? a4 + ldp : a4;                                               \
		float *o0 = o + (long)i0 * ldo;                                          \
		int c0 = 0;                                                              \
		for (; c0 + 16 <= hd; c0 += 16) {                                        \
			f8 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {};       \
			f8 c30 = {}, c31 = {}, c40 = {}, c41 = {}, c50 = {}, c51 = {};       \
			const float *bp = v + (long)c0 * n;                                  \
			for (int j = 0; j < n; j++, bp += 16) {                              \
				f8 b0 = ld8(bp), b1 = ld8(bp + 8), x;                            \
				x = bc8(a0[j]); c00 += x * b0; c01 += x * b1;                    \
				x = bc8(a1[j]); c10 += x * b0; c11 += x * b1;                    \
				x = bc8(a2[j]); c20 += x * b0; c21 += x * b1;                    \
				x = bc8(a3[j]); c30 += x * b0; c31 += x * b1;                    \
				x = bc8(a4[j]); c40 += x * b0; c41 += x * b1;                    \
				x = bc8(a5[j]); c50 += x * b0; c51 += x * b1;                    \
			}                                                                    \
			if (inv) {                                                           \
				f8 w_;                                                           \
				w_ = bc8(inv[(i0) * 8]); c00 *= w_; c01 *= w_;                  \
				w_ = bc8(inv[(i0 + (nr > 1)) * 8]); c10 *= w_; c11 *= w_;       \
				w_ = bc8(inv[(i0 + (nr > 2 ? 2 : nr - 1)) * 8]); c20 *= w_; c21 *= w_; \
				w_ = bc8(inv[(i0 + (nr > 3 ? 3 : nr - 1)) * 8]); c30 *= w_; c31 *= w_; \
				w_ = bc8(inv[(i0 + (nr > 4 ? 4 : nr - 1)) * 8]); c40 *= w_; c41 *= w_; \
				w_ = bc8(inv[(i0 + (nr > 5 ? 5 : nr - 1)) * 8]); c50 *= w_; c51 *= w_; \
			}                                                                    \
			float *d_ = o0 + c0;                                                 \
			st8(d_, c00); st8(d_ + 8, c01);                                      \
			if (nr > 1) { d_ += ldo; st8(d_, c10); st8(d_ + 8, c11); }           \
			if (nr > 2) { d_ += ldo; st8(d_, c20); st8(d_ + 8, c21); }           \
			if (nr > 3) { d_ += ldo; st8(d_, c30); st8(d_ + 8, c31); }           \
			if (nr > 4) { d_ += ldo; st8(d_, c40); st8(d_ + 8, c41); }           \
			if (nr > 5) { d_ += ldo; st8(d_, c50); st8(d_ + 8, c51); }           \
		}                                                                        \
		if (c0 < hd) {                                                           \
			f8 c00 = {}, c10 = {}, c20 = {}, c30 = {}, c40 = {}, c50 = {};       \
			const float *bp = v + (long)c0 * n;                                  \
			for (int j = 0; j < n; j++, bp += 8) {                               \
				f8 b0 = ld8(bp);                                                 \
				c00 += bc8(a0[j]) * b0; c10 += bc8(a1[j]) * b0;                  \
				c20 += bc8(a2[j]) * b0; c30 += bc8(a3[j]) * b0;                  \
				c40 += bc8(a4[j]) * b0; c50 += bc8(a5[j]) * b0;                  \
			}                                                                    \
			if (inv) {                                                           \
				c00 *= bc8(inv[(i0) * 8]);                                       \
				c10 *= bc8(inv[(i0 + (nr > 1)) * 8]);                            \
				c20 *= bc8(inv[(i0 + (nr > 2 ? 2 : nr - 1)) * 8]);               \
				c30 *= bc8(inv[(i0 + (nr > 3 ? 3 : nr - 1)) * 8]);               \
				c40 *= bc8(inv[(i0 + (nr > 4 ? 4 : nr - 1)) * 8]);               \
				c50 *= bc8(inv[(i0 + (nr > 5 ? 5 : nr - 1)) * 8]);               \
			}                                                                    \
			float *d_ = o0 + c0;                                                 \
			st8(d_, c00);                                                        \
			if (nr > 1) { d_ += ldo; st8(d_, c10); }                             \
			if (nr > 2) { d_ += ldo; st8(d_, c20); }                             \
			if (nr > 3) { d_ += ldo; st8(d_, c30); }                             \
			if (nr > 4) { d_ += ldo; st8(d_, c40); }                             \
			if (nr > 5) { d_ += ldo; st8(d_, c50); }                             \
		}                                                                        \
	}

__attribute__((target("avx2,fma"))) static void esm2go_attn_pv_avx2(const float *p, int ldp, int n,
	const float *v, int rows, int hd, float *o, int ldo, const float *inv) { PV_BODY }
static void esm2go_attn_pv_sse(const float *p, int ldp, int n,
	const float *v, int rows, int hd, float *o, int ldo, const float *inv) { PV_BODY }

// Q·K^T for a strip of query rows, for esm2go_attn_head: S(6*tiles,
// lds) = Q(6*tiles, HD)·K^T over all ceil(n/16) key strips, in 6×16
// register tiles, each row's max of its n scores into mx (8 lanes a row)
// as the scores are stored. The caller pads the strip to whole tiles
// (rows past its end copy its last row; their scores are computed and
// stored in scratch, never used), so the tile code has no row cases; the
// last key strip stores all 16 columns (lds >= npad; those past n are
// q·0 and never read) and leaves the lanes of keys past n out of the
// max. Each score is the same sum, in the same order, as
// esm2go_attn_qk's. The d loop is fully unrolled for the head dims of
// the ESM2 models (16, 24, 32, ...: esm2go_attn_head picks the build),
// which at HD 16 is what most of the tile's time goes to otherwise
// (loop control and the tile's set-up are paid every 16 steps).
// A 6-row Q·K^T tile of two vectors a row (type V, loaded by LD, x
// broadcast by BC), the second B1 floats after the first in kt.
#define QK_TILE6(V, LD, BC, B1, STORE)                                            \
	do {                                                                         \
		V c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {};            \
		V c30 = {}, c31 = {}, c40 = {}, c41 = {}, c50 = {}, c51 = {};            \
		const float *bp = b;                                                     \
		QKS_UNROLL                                                               \
		for (int d = 0; d < hd; d++, bp += 16) {                                 \
			V b0 = LD(bp), b1 = LD(bp + (B1)), x;                                \
			x = BC(a[d]); c00 += x * b0; c01 += x * b1;                          \
			x = BC(a[hd + d]); c10 += x * b0; c11 += x * b1;                     \
			x = BC(a[2 * hd + d]); c20 += x * b0; c21 += x * b1;                 \
			x = BC(a[3 * hd + d]); c30 += x * b0; c31 += x * b1;                 \
			x = BC(a[4 * hd + d]); c40 += x * b0; c41 += x * b1;                 \
			x = BC(a[5 * hd + d]); c50 += x * b0; c51 += x * b1;                 \
		}                                                                        \
		STORE(0, c00, c01); STORE(1, c10, c11); STORE(2, c20, c21);              \
		STORE(3, c30, c31); STORE(4, c40, c41); STORE(5, c50, c51);              \
	} while (0)
#define QKS_TILE(STORE) QK_TILE6(f8, ld8, bc8, 8, STORE)
#define QKS_ST(r, x0, x1) do {                                                   \
		float *d_ = sp + (long)(r) * lds;                                        \
		st8(d_, x0);                                                             \
		st8(d_ + 8, x1);                                                         \
		float *m_ = mp + (r) * 8;                                                \
		st8(m_, MAX8(x1, MAX8(x0, ld8(m_))));                                    \
	} while (0)
// lanes of keys past n become -Inf before the max
#define SEL(k, x, y) ((f8)(((k) & (i8)(x)) | (~(k) & (i8)(y))))
#define QKS_ST_LAST(r, x0, x1) do {                                              \
		float *d_ = sp + (long)(r) * lds;                                        \
		st8(d_, x0);                                                             \
		st8(d_ + 8, x1);                                                         \
		float *m_ = mp + (r) * 8;                                                \
		st8(m_, MAX8(SEL(k1, x1, ninf), MAX8(SEL(k0, x0, ninf), ld8(m_))));      \
	} while (0)
#define QKS_BODY                                                                 \
	const f8 ninf = (f8){} - __builtin_inff();                                   \
	for (int j0 = 0; j0 < npad; j0 += 16) {                                      \
		const float *b = kt + (long)j0 * hd;                                     \
		if (j0 + 16 <= n) {                                                      \
			for (int t = 0; t < tiles; t++) {                                    \
				const float *a = q + (long)t * 6 * hd;                           \
				float *sp = s + (long)t * 6 * lds + j0, *mp = mx + t * 48;       \
				QKS_TILE(QKS_ST);                                                \
			}                                                                    \
		} else {                                                                 \
			i8 k0 = (i8){0, 1, 2, 3, 4, 5, 6, 7} + j0 < n;                       \
			i8 k1 = (i8){8, 9, 10, 11, 12, 13, 14, 15} + j0 < n;                 \
			for (int t = 0; t < tiles; t++) {                                    \
				const float *a = q + (long)t * 6 * hd;                           \
				float *sp = s + (long)t * 6 * lds + j0, *mp = mx + t * 48;       \
				QKS_TILE(QKS_ST_LAST);                                           \
			}                                                                    \
		}                                                                        \
	}
#define QKS_FN(NAME, HD)                                                         \
	static void NAME(const float *q, const float *kt, int npad, int n,           \
		int hdv, int tiles, float *s, int lds, float *mx) {                      \
		const int hd = HD;                                                       \
		(void)hdv;                                                               \
		QKS_BODY                                                                 \
	}
#define MAX8(a, b) __builtin_ia32_maxps256((a), (b))
#define QKS_UNROLL
__attribute__((target("avx2,fma"))) QKS_FN(esm2go_attn_qks_avx2, hdv)
#undef QKS_UNROLL
#define QKS_UNROLL _Pragma("GCC unroll 32")
__attribute__((target("avx2,fma"))) QKS_FN(esm2go_attn_qks16_avx2, 16)
__attribute__((target("avx2,fma"))) QKS_FN(esm2go_attn_qks24_avx2, 24)
__attribute__((target("avx2,fma"))) QKS_FN(esm2go_attn_qks32_avx2, 32)
#undef QKS_UNROLL
#undef MAX8
#define MAX8(a, b) SEL_GT((a), (b))
#define QKS_UNROLL
QKS_FN(esm2go_attn_qks_sse, hdv)
#undef QKS_UNROLL
#undef MAX8

// The 16-lane (AVX-512F/VL/DQ) build of what esm2go_attn_head runs per
// strip, for CPUs that have it: Q·K^T in tiles of 6 rows by 32 keys (two
// kt strips, 12 accumulators of 16 floats), the exponentials 16 at a time,
// P·V in tiles of 12 rows by up to 32 columns (12 or 24 accumulators).
// Each score, exponential, sum and
// output is the AVX2 build's operation on the same operands in the same
// order (a 16-lane vector is two of its 8-lane ones side by side: the
// softmax's sums go lower half to acc, upper half to acc1, as there), so
// the results are the AVX2 build's bit for bit (TestAttnKernelsHead
// compares head here with the AVX2 qk and pv). The row maxima are kept
// in 16 lanes a row (a max is exact in any order). On a 2-core AVX-512
// Xeon, single core, n = 1000: 1.45-1.5x the AVX2 head at HD 16 (docs/CPU.md).
typedef float f16v __attribute__((vector_size(64)));
typedef int32_t i16v __attribute__((vector_size(64)));
typedef uint32_t u16v __attribute__((vector_size(64)));
#define ld16(p) ({ f16v v_; memcpy(&v_, (p), sizeof v_); v_; })
#define st16(p, v) do { f16v w_ = (v); memcpy((p), &w_, sizeof w_); } while (0)
#define bc16(x) ({ float x_ = (x); (f16v){x_, x_, x_, x_, x_, x_, x_, x_, x_, x_, x_, x_, x_, x_, x_, x_}; })
#define MAX16(a, b) ((f16v)_mm512_max_ps((__m512)(a), (__m512)(b)))
#define LO8(x) ((f8)_mm512_castps512_ps256((__m512)(x)))
#define HI8(x) ((f8)_mm512_extractf32x8_ps((__m512)(x), 1))
#define SEL16(k, x, y) ((f16v)(((k) & (i16v)(x)) | (~(k) & (i16v)(y))))
// esm2go_attn_exp8 on 16 lanes: the table twice (vpermps reads 4 index
// bits here, and k's low 4 bits pick entry k&7 either way).
#define EXP_TAB16 ((i16v){0x3F800000, 0x3F7B95C2, 0x3F7837F0, 0x3F75FED7,      \
		0x3F7504F3, 0x3F75672A, 0x3F7744FD, 0x3F7AC0C7,                          \
		0x3F800000, 0x3F7B95C2, 0x3F7837F0, 0x3F75FED7,                          \
		0x3F7504F3, 0x3F75672A, 0x3F7744FD, 0x3F7AC0C7})
#define PERM16(t, i) ((i16v)_mm512_permutexvar_ps((__m512i)(i), (__m512)(t)))
#define esm2go_attn_exp16(X) ({                                                  \
		f16v x_ = MAX16((f16v){} - 87.33654f, (X));                              \
		f16v r_ = x_ * 11.5415602f + 12582912.0f;                                \
		f16v fn_ = r_ - 12582912.0f;                                             \
		x_ = x_ - fn_ * 0.086639404296875f - fn_ * 3.993272912e-6f;              \
		f16v z_ = x_ * x_;                                                       \
		f16v q_ = (4.166585952e-2f * z_ + (1.666803509e-1f * x_ + 0.5f)) * z_ + x_; \
		f16v s_ = (f16v)((i16v)PERM16(EXP_TAB16, (i16v)r_) + (i16v)((u16v)r_ << 20)); \
		s_ * q_ + s_;                                                            \
	})
#define WIDE __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))

// The 16-lane build's score strip is blocked for P·V: rows in groups of
// 12 (P·V's tile), each group in blocks of 16 keys by its 12 rows, so
// score (r, j) is at PBLK(r, j) and a 12-row tile finds the 12 scores of
// key j at fixed distances from one pointer (row-major, the tile's 12 row
// pointers plus the loop's own did not fit in the 15 usable registers and
// spilled inside P·V's inner loop). A 16-key vector of one row is 16
// contiguous floats, and so is any 8 of them from a multiple of 8.
#define PBLK(r, j) ((long)((r) / 12) * 12 * npad + ((j) >> 4) * 192 + ((r) % 12) * 16 + ((j) & 15))

// Q·K^T of a strip (esm2go_attn_qks_*'s contract, maxima 16 lanes a row
// in mx, scores at PBLK): pairs of whole key strips, then the rest one
// strip at a time (the last one's lanes past n left out of the max).
#define QKW_TILE2(ST) QK_TILE6(f16v, ld16, bc16, 16 * hd, ST)
#define QKW_ST2(r, x0, x1) do {                                                  \
		float *d_ = sp + (r) * 16;                                               \
		st16(d_, x0);                                                            \
		st16(d_ + 192, x1);                                                      \
		float *m_ = mp + (r) * 16;                                               \
		st16(m_, MAX16(x1, MAX16(x0, ld16(m_))));                                \
	} while (0)
#define QKW_TILE1                                                                \
	do {                                                                         \
		f16v c0 = {}, c1 = {}, c2 = {}, c3 = {}, c4 = {}, c5 = {};               \
		const float *bp = b;                                                     \
		QKS_UNROLL                                                               \
		for (int d = 0; d < hd; d++, bp += 16) {                                 \
			f16v b0 = ld16(bp);                                                  \
			c0 += bc16(a[d]) * b0; c1 += bc16(a[hd + d]) * b0;                   \
			c2 += bc16(a[2 * hd + d]) * b0; c3 += bc16(a[3 * hd + d]) * b0;      \
			c4 += bc16(a[4 * hd + d]) * b0; c5 += bc16(a[5 * hd + d]) * b0;      \
		}                                                                        \
		QKW_ST1(0, c0); QKW_ST1(1, c1); QKW_ST1(2, c2);                          \
		QKW_ST1(3, c3); QKW_ST1(4, c4); QKW_ST1(5, c5);                          \
	} while (0)
#define QKW_ST1(r, x0) do {                                                      \
		float *d_ = sp + (r) * 16;                                               \
		st16(d_, x0);                                                            \
		float *m_ = mp + (r) * 16;                                               \
		st16(m_, MAX16(SEL16(km, x0, ninf), ld16(m_)));                          \
	} while (0)
#define QKW_BODY                                                                 \
	const f16v ninf = (f16v){} - __builtin_inff();                               \
	int j0 = 0;                                                                  \
	for (; j0 + 32 <= n; j0 += 32) {                                             \
		const float *b = kt + (long)j0 * hd;                                     \
		for (int t = 0; t < tiles; t++) {                                        \
			const float *a = q + (long)t * 6 * hd;                               \
			float *sp = s + PBLK(t * 6, j0), *mp = mx + t * 96;                  \
			QKW_TILE2(QKW_ST2);                                                  \
		}                                                                        \
	}                                                                            \
	for (; j0 < npad; j0 += 16) {                                                \
		const float *b = kt + (long)j0 * hd;                                     \
		i16v km = (i16v){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} + j0 < n; \
		for (int t = 0; t < tiles; t++) {                                        \
			const float *a = q + (long)t * 6 * hd;                               \
			float *sp = s + PBLK(t * 6, j0), *mp = mx + t * 96;                  \
			QKW_TILE1;                                                           \
		}                                                                        \
	}
#define QKW_FN(NAME, HD)                                                         \
	WIDE static void NAME(const float *q, const float *kt, int npad, int n,      \
		int hdv, int tiles, float *s, float *mx) {                               \
		const int hd = HD;                                                       \
		(void)hdv;                                                               \
		QKW_BODY                                                                 \
	}
#define QKS_UNROLL
QKW_FN(esm2go_attn_qkw, hdv)
#undef QKS_UNROLL
#define QKS_UNROLL _Pragma("GCC unroll 32")
QKW_FN(esm2go_attn_qkw16, 16)
QKW_FN(esm2go_attn_qkw24, 24)
QKW_FN(esm2go_attn_qkw32, 32)
#undef QKS_UNROLL

// The softmax's exponentials and 1/sums of a strip (SOFTMAX_BODY with
// norm 0; the maxima from 16 lanes a row, the 1/sums into inv[r]; the
// scores, and the exponentials written over them, at PBLK): the main
// loop takes 32 scores as two 16-lane vectors, the AVX2 build's four
// 8-lane ones; the rest is SOFTMAX_REST, as there, its last partial
// vector read and written a lane at a time (its 8 scores may straddle two
// blocks).
#define MAX8(a, b) __builtin_ia32_maxps256((a), (b))
#define PERM8(t, i) ((i8)__builtin_ia32_permvarsf256((f8)(t), (i)))
#define SX(i) ((((i) >> 4) * 192) + ((i) & 15))
#define TAIL_LD(i0) ({                                                           \
		f8 tl_;                                                                  \
		if (((i0) & 15) <= 8) tl_ = ld8(row + SX(i0));                           \
		else for (int k_ = 0; k_ < 8; k_++) tl_[k_] = row[SX((i0) + k_)];        \
		tl_;                                                                     \
	})
#define TAIL_ST(i0, x) do {                                                      \
		f8 ts_ = (x);                                                            \
		if (((i0) & 15) <= 8) st8(row + SX(i0), ts_);                            \
		else for (int k_ = 0; k_ < 8; k_++) row[SX((i0) + k_)] = ts_[k_];        \
	} while (0)
// NB as in SOFTMAX_REST: esm2go_attn_softmaxw checks for non-finite
// scores, esm2go_attn_softmaxw_finite is for strips whose scores are all
// finite (esm2go_attn_head knows from the magnitudes of q and k). Every
// row's max comes first (into inv), so that no row's exponentials wait for
// a chain of 15 dependent maxima.
#define SOFTMAXW_FN(NAME)                                                        \
	__attribute__((optimize("schedule-insns", "sched-pressure"))) WIDE           \
	static void NAME(float *s, int rows, int n, int npad, float *mx, float *inv) { \
		for (int r = 0; r < rows; r++) {                                         \
			f16v mv = ld16(mx + (long)r * 16);                                   \
			float m = mv[0];                                                     \
			for (int k = 1; k < 16; k++) m = mv[k] > m ? mv[k] : m;              \
			inv[r] = m;                                                          \
		}                                                                        \
		for (int r = 0; r < rows; r++) {                                         \
			float *row = s + PBLK(r, 0);                                         \
			float m = inv[r];                                                    \
			f16v m16 = bc16(m), acc16 = {}, bad16 = {};                          \
			int i = 0;                                                           \
			float *p_ = row;                                                     \
			for (; i + 32 <= n; i += 32, p_ += 384) {                            \
				f16v t0 = ld16(p_) - m16, t1 = ld16(p_ + 192) - m16;             \
				NB(bad16 += (t0 - t0) + (t1 - t1);)                              \
				f16v e0 = esm2go_attn_exp16(t0), e1 = esm2go_attn_exp16(t1);     \
				st16(p_, e0);                                                    \
				st16(p_ + 192, e1);                                              \
				acc16 += e0 + e1;                                                \
			}                                                                    \
			f8 m8 = (f8){} + m, acc = LO8(acc16), bad = LO8(bad16);              \
			acc += HI8(acc16);                                                   \
			bad += HI8(bad16);                                                   \
			i8 tail = {};                                                        \
			SOFTMAX_REST                                                         \
			inv[r] = 1.0f / sum;                                                 \
		}                                                                        \
	}
#define NB(x) x
SOFTMAXW_FN(esm2go_attn_softmaxw)
#undef NB
#define NB(x)
SOFTMAXW_FN(esm2go_attn_softmaxw_finite)
#undef SX
#undef NB
#undef TAIL_LD
#undef TAIL_ST
// exp16 (then exp8 for the last 8) on x[0..n) into y, for the tests
WIDE static void esm2go_attn_expsw(const float *x, float *y, int n) {
	int i = 0;
	for (; i + 16 <= n; i += 16) st16(y + i, esm2go_attn_exp16(ld16(x + i)));
	for (; i < n; i += 8) st8(y + i, esm2go_attn_exp8(ld8(x + i)));
}
#undef PERM8
#undef MAX8

// O(rows, HD) (leading dimension ldo) = P(rows, n)·V (P at PBLK, V
// packed), row i scaled by inv[i]: tiles of 12 rows (P's 12 rows
// broadcast in turn, 12 or 24 accumulators) by 32 columns (two V strips),
// then 24 (16 in zmm and 8 in ymm, HD 24), 16 or 8; the last rows < 12 in
// tiles of 6 rows by 32, 16, then 8 columns. Keys go 16 at a time (one
// block of P, the loop unrolled by 8: P's operands at fixed offsets from pj),
// the last block's rest one at a time. Every output is esm2go_attn_pv's
// sum, in its order, times the same 1/sum.
#define PVW_KEYS(...)                                                            \
	for (int jb = 0; jb < n; jb += 16) {                                         \
		const float *pj = pg + (long)(jb >> 4) * 192;                            \
		if (jb + 16 <= n) {                                                      \
			_Pragma("GCC unroll 8")                                              \
			for (int jj = 0; jj < 16; jj++) { __VA_ARGS__ }                         \
		} else {                                                                 \
			for (int jj = 0; jj < n - jb; jj++) { __VA_ARGS__ }                         \
		}                                                                        \
	}
// the 12-row tile's P operand of row r; the 6-row tile's of its row r,
// rr[r] floats into the block
#define P12(r) pj[(r) * 16 + jj]
#define P6(r) pj[rr[r] + jj]
WIDE static void esm2go_attn_pvw(const float *p, int npad, int n, const float *v, int rows,
	int hd, float *o, int ldo, const float *inv) {
	int i0 = 0;
	for (; i0 + 12 <= rows; i0 += 12) {
		const float *pg = p + PBLK(i0, 0);
		float *oi = o + (long)i0 * ldo;
		int c0 = 0;
		for (; c0 + 32 <= hd; c0 += 32) {
			f16v c[12], d[12];
			for (int r = 0; r < 12; r++) c[r] = d[r] = (f16v){};
			const float *bp = v + (long)c0 * n, *bq = bp + 16L * n;
			PVW_KEYS(
				f16v b0 = ld16(bp), b1 = ld16(bq);
				bp += 16; bq += 16;
				_Pragma("GCC unroll 12")
				for (int r = 0; r < 12; r++) {
					f16v x = bc16(P12(r));
					c[r] += x * b0;
					d[r] += x * b1;
				}
			)
			for (int r = 0; r < 12; r++) {
				st16(oi + (long)r * ldo + c0, c[r] * inv[i0 + r]);
				st16(oi + (long)r * ldo + c0 + 16, d[r] * inv[i0 + r]);
			}
		}
		if (hd - c0 == 24) { // 16 columns in zmm and 8 in ymm, P read once
			f16v c[12];
			f8 d[12];
			for (int r = 0; r < 12; r++) { c[r] = (f16v){}; d[r] = (f8){}; }
			const float *bp = v + (long)c0 * n, *bq = bp + 16L * n;
			PVW_KEYS(
				f16v b0 = ld16(bp);
				f8 b1 = ld8(bq);
				bp += 16; bq += 8;
				_Pragma("GCC unroll 12")
				for (int r = 0; r < 12; r++) {
					float x = P12(r);
					c[r] += bc16(x) * b0;
					d[r] += bc8(x) * b1;
				}
			)
			for (int r = 0; r < 12; r++) {
				st16(oi + (long)r * ldo + c0, c[r] * inv[i0 + r]);
				st8(oi + (long)r * ldo + c0 + 16, d[r] * bc8(inv[i0 + r]));
			}
			continue;
		}
		if (c0 + 16 <= hd) {
			f16v c[12];
			for (int r = 0; r < 12; r++) c[r] = (f16v){};
			const float *bp = v + (long)c0 * n;
			PVW_KEYS(
				f16v b0 = ld16(bp);
				bp += 16;
				_Pragma("GCC unroll 12")
				for (int r = 0; r < 12; r++) c[r] += bc16(P12(r)) * b0;
			)
			for (int r = 0; r < 12; r++) st16(oi + (long)r * ldo + c0, c[r] * inv[i0 + r]);
			c0 += 16;
		}
		if (c0 < hd) {
			f8 c[12];
			for (int r = 0; r < 12; r++) c[r] = (f8){};
			const float *bp = v + (long)c0 * n;
			PVW_KEYS(
				f8 b0 = ld8(bp);
				bp += 8;
				_Pragma("GCC unroll 12")
				for (int r = 0; r < 12; r++) c[r] += bc8(P12(r)) * b0;
			)
			for (int r = 0; r < 12; r++) st8(oi + (long)r * ldo + c0, c[r] * bc8(inv[i0 + r]));
		}
	}
	for (; i0 < rows; i0 += 6) {
		// rows i0..i0+5 are in one 12-row group (i0 % 12 is 0 or 6); a
		// tile of nr < 6 rows repeats its last row (computed, never stored)
		int nr = rows - i0 < 6 ? rows - i0 : 6;
		const float *pg = p + PBLK(i0 - i0 % 12, 0);
		int rr[6];
		float sc_[6];
		for (int r = 0; r < 6; r++) {
			int ri = i0 + (r < nr ? r : nr - 1);
			rr[r] = (ri % 12) * 16;
			sc_[r] = inv[ri];
		}
		float *o0 = o + (long)i0 * ldo;
		int c0 = 0;
		for (; c0 + 32 <= hd; c0 += 32) {
			f16v c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {};
			f16v c30 = {}, c31 = {}, c40 = {}, c41 = {}, c50 = {}, c51 = {};
			const float *bp = v + (long)c0 * n, *bq = bp + 16L * n;
			PVW_KEYS(
				f16v b0 = ld16(bp), b1 = ld16(bq), x;
				bp += 16; bq += 16;
				x = bc16(P6(0)); c00 += x * b0; c01 += x * b1;
				x = bc16(P6(1)); c10 += x * b0; c11 += x * b1;
				x = bc16(P6(2)); c20 += x * b0; c21 += x * b1;
				x = bc16(P6(3)); c30 += x * b0; c31 += x * b1;
				x = bc16(P6(4)); c40 += x * b0; c41 += x * b1;
				x = bc16(P6(5)); c50 += x * b0; c51 += x * b1;
			)
			float *d_ = o0 + c0;
			st16(d_, c00 * sc_[0]); st16(d_ + 16, c01 * sc_[0]);
			if (nr > 1) { d_ += ldo; st16(d_, c10 * sc_[1]); st16(d_ + 16, c11 * sc_[1]); }
			if (nr > 2) { d_ += ldo; st16(d_, c20 * sc_[2]); st16(d_ + 16, c21 * sc_[2]); }
			if (nr > 3) { d_ += ldo; st16(d_, c30 * sc_[3]); st16(d_ + 16, c31 * sc_[3]); }
			if (nr > 4) { d_ += ldo; st16(d_, c40 * sc_[4]); st16(d_ + 16, c41 * sc_[4]); }
			if (nr > 5) { d_ += ldo; st16(d_, c50 * sc_[5]); st16(d_ + 16, c51 * sc_[5]); }
		}
		for (; c0 + 16 <= hd; c0 += 16) {
			f16v c0v = {}, c1 = {}, c2 = {}, c3 = {}, c4 = {}, c5 = {};
			const float *bp = v + (long)c0 * n;
			PVW_KEYS(
				f16v b0 = ld16(bp);
				bp += 16;
				c0v += bc16(P6(0)) * b0; c1 += bc16(P6(1)) * b0; c2 += bc16(P6(2)) * b0;
				c3 += bc16(P6(3)) * b0; c4 += bc16(P6(4)) * b0; c5 += bc16(P6(5)) * b0;
			)
			float *d_ = o0 + c0;
			st16(d_, c0v * sc_[0]);
			if (nr > 1) { d_ += ldo; st16(d_, c1 * sc_[1]); }
			if (nr > 2) { d_ += ldo; st16(d_, c2 * sc_[2]); }
			if (nr > 3) { d_ += ldo; st16(d_, c3 * sc_[3]); }
			if (nr > 4) { d_ += ldo; st16(d_, c4 * sc_[4]); }
			if (nr > 5) { d_ += ldo; st16(d_, c5 * sc_[5]); }
		}
		if (c0 < hd) {
			f8 c00 = {}, c10 = {}, c20 = {}, c30 = {}, c40 = {}, c50 = {};
			const float *bp = v + (long)c0 * n;
			PVW_KEYS(
				f8 b0 = ld8(bp);
				bp += 8;
				c00 += bc8(P6(0)) * b0; c10 += bc8(P6(1)) * b0;
				c20 += bc8(P6(2)) * b0; c30 += bc8(P6(3)) * b0;
				c40 += bc8(P6(4)) * b0; c50 += bc8(P6(5)) * b0;
			)
			float *d_ = o0 + c0;
			st8(d_, c00 * bc8(sc_[0]));
			if (nr > 1) { d_ += ldo; st8(d_, c10 * bc8(sc_[1])); }
			if (nr > 2) { d_ += ldo; st8(d_, c20 * bc8(sc_[2])); }
			if (nr > 3) { d_ += ldo; st8(d_, c30 * bc8(sc_[3])); }
			if (nr > 4) { d_ += ldo; st8(d_, c40 * bc8(sc_[4])); }
			if (nr > 5) { d_ += ldo; st8(d_, c50 * bc8(sc_[5])); }
		}
	}
}
#undef P12
#undef P6

// The largest |x| of x[0..len) (len a multiple of 16), or +Inf if any x
// is NaN or infinite (x·0 is NaN then; the max alone may drop a NaN).
WIDE static float esm2go_absmax(const float *x, long len) {
	f16v m = {}, z = {};
	for (long i = 0; i < len; i += 16) {
		f16v v = ld16(x + i);
		z += v * 0.0f;
		m = MAX16(m, (f16v)((i16v)v & 0x7fffffff));
	}
	float r = 0, zs = 0;
	for (int k = 0; k < 16; k++) {
		r = m[k] > r ? m[k] : r;
		zs += z[k];
	}
	return zs == 0 ? r : __builtin_inff();
}

// All of one (sequence, head): O(n, HD) (leading dimension ldo) =
// softmax(Q·K^T)·V, q read with row stride ld, kt and vp from
// esm2go_attn_pack, in strips of R query rows (a multiple of 6): per
// strip Q·K^T (esm2go_attn_qks_*) into a score strip of R rows, the
// exponentials and each row's 1/sum (the softmax with norm 0), then P·V
// scaled by the 1/sums, while the strip is still in the L1 or L2 cache
// (at n = 1000 and R = 6, 24 KiB). The same operations on each row as
// esm2go_attn_qk with softmax 2 then esm2go_attn_pv, so the same results
// bit for bit. w: scratch of R*(HD + npad + 8) floats (the strip's
// queries, its scores with leading dimension npad, its maxima and
// 1/sums), R*(HD + npad + 17) for level 2 (the 16-lane build: maxima
// 16 lanes a row, then the 1/sums).
static void esm2go_attn_head(int level, const float *q, int ld, const float *kt, int npad,
	const float *vp, int n, int hd, float *o, int ldo, int R, float *w) {
	float *qp = w, *s = qp + (long)R * hd, *mx = s + (long)R * npad, *inv = mx + (long)R * 16;
	int lanes = level == 2 ? 16 : 8;
	// Every score is a sum of HD products of q and k, so |score| <=
	// HD·max|q|·max|k|(1 + 2^-23)^HD: where HD·max|q|·max|k| <= 1e30 no
	// score, and no score less a row's max, can be NaN or infinite, and the
	// 16-lane build skips the softmax's check for them (the same results).
	float kmax = level == 2 ? esm2go_absmax(kt, (long)npad * hd) : 0;
	for (int i0 = 0; i0 < n; i0 += R) {
		int rows = n - i0 < R ? n - i0 : R, tiles = (rows + 5) / 6;
		for (int i = 0; i < tiles * 6; i++)
			memcpy(qp + (long)i * hd, q + (long)(i0 + (i < rows ? i : rows - 1)) * ld, hd * sizeof(float));
		// the next strip's queries, a cache and TLB miss each otherwise
		for (int i = i0 + R; i < i0 + 2 * R && i < n; i++) {
			__builtin_prefetch(q + (long)i * ld);
			__builtin_prefetch(q + (long)i * ld + hd - 1);
		}
		for (int i = 0; i < tiles * 6 * lanes; i++) mx[i] = -__builtin_inff();
		float *oi = o + (long)i0 * ldo;
		if (level == 2) {
			if (hd == 16) esm2go_attn_qkw16(qp, kt, npad, n, hd, tiles, s, mx);
			else if (hd == 24) esm2go_attn_qkw24(qp, kt, npad, n, hd, tiles, s, mx);
			else if (hd == 32) esm2go_attn_qkw32(qp, kt, npad, n, hd, tiles, s, mx);
			else esm2go_attn_qkw(qp, kt, npad, n, hd, tiles, s, mx);
			if (hd * esm2go_absmax(qp, (long)tiles * 6 * hd) * kmax <= 1e30f)
				esm2go_attn_softmaxw_finite(s, rows, n, npad, mx, inv);
			else
				esm2go_attn_softmaxw(s, rows, n, npad, mx, inv);
			esm2go_attn_pvw(s, npad, n, vp, rows, hd, oi, ldo, inv);
		} else if (level == 1) {
			if (hd == 16) esm2go_attn_qks16_avx2(qp, kt, npad, n, hd, tiles, s, npad, mx);
			else if (hd == 24) esm2go_attn_qks24_avx2(qp, kt, npad, n, hd, tiles, s, npad, mx);
			else if (hd == 32) esm2go_attn_qks32_avx2(qp, kt, npad, n, hd, tiles, s, npad, mx);
			else esm2go_attn_qks_avx2(qp, kt, npad, n, hd, tiles, s, npad, mx);
			esm2go_attn_softmax_avx2(s, rows, n, npad, mx, 0);
			esm2go_attn_pv_avx2(s, npad, n, vp, rows, hd, oi, ldo, mx);
		} else {
			esm2go_attn_qks_sse(qp, kt, npad, n, hd, tiles, s, npad, mx);
			esm2go_attn_softmax_sse(s, rows, n, npad, mx, 0);
			esm2go_attn_pv_sse(s, npad, n, vp, rows, hd, oi, ldo, mx);
		}
	}
}

static void esm2go_attn_exps(int level, const float *x, float *y, int n) {
	if (level == 2) esm2go_attn_expsw(x, y, n);
	else if (level == 1) esm2go_attn_exps_avx2(x, y, n);
	else esm2go_attn_exps_sse(x, y, n);
}

// (libgcc's constructor has run the CPU detection by the time Go code
// runs, so no __builtin_cpu_init here, which concurrent callers would race
// on.)
// The build this CPU runs: 2 for AVX-512F/VL/DQ (and AVX2 and FMA), 1 for
// AVX2 and FMA, 0 for any x86-64. The 16-lane build is the faster one on
// both AVX-512 CPUs measured, an Intel Xeon and an AMD Zen 4 (which runs
// 512-bit operations as two 256-bit halves: attention still 4-10% faster
// there, docs/CPU.md).
static int esm2go_attn_level(void) {
	if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
		__builtin_cpu_supports("avx512dq")) return 2;
	return 1;
}

// q: the block's first query row in qkv (stride ld), packed into qp
// (rows, HD) first.
// red: (rows, 8) scratch for the rows' maxima, then the
// softmax of S in place when softmax is 1, its exponentials only when it
// is 2 (each row's 1/sum then in red[r*8], for esm2go_attn_pv).
static void esm2go_attn_qk(int avx2, const float *q, int ld, float *qp, const float *kt,
	int npad, int rows, int n, int hd, float *s, float *red, int softmax) {
	for (int i = 0; i < rows; i++) memcpy(qp + (long)i * hd, q + (long)i * ld, hd * sizeof(float));
	float *mx = red;
	for (int i = 0; i < rows * 8; i++) mx[i] = -__builtin_inff();
	if (avx2) esm2go_attn_qk_avx2(qp, kt, npad, rows, n, hd, s, mx);
	else esm2go_attn_qk_sse(qp, kt, npad, rows, n, hd, s, mx);
	if (!softmax) return;
	if (avx2) esm2go_attn_softmax_avx2(s, rows, n, n, mx, softmax == 1);
	else esm2go_attn_softmax_sse(s, rows, n, n, mx, softmax == 1);
}

static void esm2go_attn_pv(int avx2, const float *p, int n, const float *vp,
	int rows, int hd, float *o, int ldo, const float *inv) {
	if (avx2) esm2go_attn_pv_avx2(p, n, n, vp, rows, hd, o, ldo, inv);
	else esm2go_attn_pv_sse(p, n, n, vp, rows, hd, o, ldo, inv);
}
*/
import "C"

import "unsafe"

// attnKernels are the C products of Attention (above). ok is false where
// they do not apply (HD not a multiple of 8); Attention then uses sgemm.
// level is the build: 2 the 16-lane one (head and exps; qk and pv are
// the AVX2 build's), 1 AVX2, 0 any x86-64.
type attnKernels struct{ level C.int }

func newAttnKernels() attnKernels { return attnKernels{level: C.esm2go_attn_level()} }

// portable returns the kernels built for any x86-64 (what a CPU without
// AVX2 and FMA runs), for the tests.
func (attnKernels) portable() attnKernels { return attnKernels{level: 0} }

// narrow returns the AVX2 build where a runs the 16-lane one (a itself
// otherwise), for the tests.
func (a attnKernels) narrow() attnKernels { return attnKernels{level: min(a.level, 1)} }

// stripRows is how many query rows head takes at a time.
func (a attnKernels) stripRows(n int) int {
	if a.level == 2 {
		return headRowsWide(n)
	}
	return headRows(n)
}

func (attnKernels) ok(hd int) bool { return hd%8 == 0 }

// pack copies K^T (into kt, ktLen(n, hd) floats) and, unless vp is nil,
// V (into vp, n*hd floats) of one (sequence, head), k and v read with row
// stride ld.
func (attnKernels) pack(k, v []float32, ld, n, hd int, kt, vp []float32) {
	_ = k[(n-1)*ld+hd-1]
	_ = kt[ktLen(n, hd)-1]
	var vptr, vpptr *C.float
	if vp != nil {
		_ = v[(n-1)*ld+hd-1]
		_ = vp[n*hd-1]
		vptr, vpptr = (*C.float)(unsafe.Pointer(&v[0])), (*C.float)(unsafe.Pointer(&vp[0]))
	}
	C.esm2go_attn_pack((*C.float)(unsafe.Pointer(&k[0])), vptr, C.int(ld),
		C.int(n), C.int(hd), (*C.float)(unsafe.Pointer(&kt[0])), C.int(ktPad(n)), vpptr)
}

// packRows packs keys j0..j1-1 of one sequence for all h heads (x: the
// sequence's first row of the packed qkv, row stride ld): head i's Q
// rows (hd floats each) at qp[i*n*hd:], K^T at kt[i*ktLen(n, hd):] and V
// at vp[i*n*hd:], in pack's layouts; j1 == n also writes K^T's padding.
func (a attnKernels) packRows(x []float32, ld, n, h, hd, j0, j1 int, qp, kt, vp []float32) {
	_ = x[(n-1)*ld+3*h*hd-1]
	_ = qp[h*n*hd-1]
	_ = kt[h*ktLen(n, hd)-1]
	_ = vp[h*n*hd-1]
	C.esm2go_attn_pack_rows(a.level, (*C.float)(unsafe.Pointer(&x[0])), C.int(ld), C.int(n), C.int(h), C.int(hd),
		C.int(j0), C.int(j1), (*C.float)(unsafe.Pointer(&qp[0])), (*C.float)(unsafe.Pointer(&kt[0])),
		C.int(ktPad(n)), (*C.float)(unsafe.Pointer(&vp[0])))
}

// qk writes s(rows, n) = q(rows, hd)·K^T, q read with row stride ld and
// copied into qp (rows*hd floats) first, kt from pack, then per sm (see
// smMode) the row softmax of s in place (softmaxRows' semantics: a row
// with a non-finite score is all NaN, weights never below ~2^-126/n) or
// its exponentials, the max taken as the scores are stored. red is
// scratch of qkRed(rows) floats; after smExp it holds row i's 1/sum at
// red[i*8], for pv.
func (a attnKernels) qk(q []float32, ld int, qp, kt []float32, rows, n, hd int, s, red []float32, sm smMode) {
	_ = q[(rows-1)*ld+hd-1]
	_ = qp[rows*hd-1]
	_ = kt[ktLen(n, hd)-1]
	_ = s[rows*n-1]
	_ = red[qkRed(rows)-1]
	C.esm2go_attn_qk(a.level, (*C.float)(unsafe.Pointer(&q[0])), C.int(ld), (*C.float)(unsafe.Pointer(&qp[0])),
		(*C.float)(unsafe.Pointer(&kt[0])), C.int(ktPad(n)), C.int(rows), C.int(n), C.int(hd),
		(*C.float)(unsafe.Pointer(&s[0])), (*C.float)(unsafe.Pointer(&red[0])), C.int(sm))
}

// head writes all n rows of o (row stride ldo) = softmax(q·K^T)·V for
// one (sequence, head): q read with row stride ld, kt and vp from pack,
// the queries in strips of stripRows(n) rows (scores, softmax and P·V of
// a strip while it is in cache). w is scratch of headLen(n, hd) floats.
// Each row is what qk with smExp and then pv give, bit for bit.
func (a attnKernels) head(q []float32, ld int, kt, vp []float32, n, hd int, o []float32, ldo int, w []float32) {
	_ = q[(n-1)*ld+hd-1]
	_ = kt[ktLen(n, hd)-1]
	_ = vp[n*hd-1]
	_ = o[(n-1)*ldo+hd-1]
	_ = w[headLen(n, hd)-1]
	C.esm2go_attn_head(a.level, (*C.float)(unsafe.Pointer(&q[0])), C.int(ld), (*C.float)(unsafe.Pointer(&kt[0])),
		C.int(ktPad(n)), (*C.float)(unsafe.Pointer(&vp[0])), C.int(n), C.int(hd),
		(*C.float)(unsafe.Pointer(&o[0])), C.int(ldo), C.int(a.stripRows(n)), (*C.float)(unsafe.Pointer(&w[0])))
}

// exps sets y[i] to the softmax's exponential of x[i] (the Go twin is
// expk), for the tests; len(x) is a multiple of 8.
func (a attnKernels) exps(x, y []float32) {
	if len(x)%8 != 0 || len(y) < len(x) {
		panic("cpu: attnKernels.exps: bad lengths")
	}
	if len(x) == 0 {
		return
	}
	C.esm2go_attn_exps(a.level, (*C.float)(unsafe.Pointer(&x[0])), (*C.float)(unsafe.Pointer(&y[0])), C.int(len(x)))
}

// pv writes o(rows, hd) (row stride ldo) = p(rows, n)·V, vp from pack,
// row i scaled by inv[i*8] unless inv is nil (qk's red after smExp).
func (a attnKernels) pv(p []float32, n int, vp []float32, rows, hd int, o []float32, ldo int, inv []float32) {
	_ = p[rows*n-1]
	_ = vp[n*hd-1]
	_ = o[(rows-1)*ldo+hd-1]
	var ip *C.float
	if inv != nil {
		_ = inv[(rows-1)*8]
		ip = (*C.float)(unsafe.Pointer(&inv[0]))
	}
	C.esm2go_attn_pv(a.level, (*C.float)(unsafe.Pointer(&p[0])), C.int(n), (*C.float)(unsafe.Pointer(&vp[0])),
		C.int(rows), C.int(hd), (*C.float)(unsafe.Pointer(&o[0])), C.int(ldo), ip)
}
