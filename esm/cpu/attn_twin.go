package cpu

import "math"

// Plain Go twins of the C attention kernels (attn_kernels.go), on the same
// packed layouts: the same sums over the same operands, one term at a
// time. The tests check the C kernels against them; the pure-Go build
// runs them where Attention takes the kernel path.

// ktPad is the number of columns of packed K^T: n rounded up to 16.
func ktPad(n int) int { return (n + 15) &^ 15 }

// ktLen is the length of packed K^T for n keys.
func ktLen(n, hd int) int { return hd * ktPad(n) }

// packGo copies K^T into kt in strips of 16 keys (key j, dim d at
// kt[(j/16)*16*hd + d*16 + j%16]; keys n..ktPad(n)-1 zero) and, unless vp
// is nil, V into vp in column strips (16 wide, the last 8 wide where hd is an odd
// multiple of 8), strip c0 at vp[c0*n:] with rows of its width.
func packGo(k, v []float32, ld, n, hd int, kt, vp []float32) {
	for j := 0; j < ktPad(n); j++ {
		for d := 0; d < hd; d++ {
			x := float32(0)
			if j < n {
				x = k[j*ld+d]
			}
			kt[ktAt(j, d, hd)] = x
		}
	}
	for c0 := 0; vp != nil && c0 < hd; c0 += 16 {
		w := min(16, hd-c0)
		for j := 0; j < n; j++ {
			copy(vp[c0*n+j*w:c0*n+(j+1)*w], v[j*ld+c0:j*ld+c0+w])
		}
	}
}

// packRowsGo is the Go twin of attnKernels.packRows: keys j0..j1-1 of
// one sequence for all h heads, head i's Q rows at qp[i*n*hd:], K^T at
// kt[i*ktLen(n, hd):] and V at vp[i*n*hd:] (packGo's layouts); j1 == n
// also zeroes K^T's padding.
func packRowsGo(x []float32, ld, n, h, hd, j0, j1 int, qp, kt, vp []float32) {
	D := h * hd
	for i := 0; i < h; i++ {
		q, k, v := x[i*hd:], x[D+i*hd:], x[2*D+i*hd:]
		kti, vpi := kt[i*ktLen(n, hd):], vp[i*n*hd:]
		for j := j0; j < j1; j++ {
			copy(qp[i*n*hd+j*hd:][:hd], q[j*ld:][:hd])
			for d := 0; d < hd; d++ {
				kti[ktAt(j, d, hd)] = k[j*ld+d]
			}
			for c0 := 0; c0 < hd; c0 += 16 {
				w := min(16, hd-c0)
				copy(vpi[c0*n+j*w:][:w], v[j*ld+c0:][:w])
			}
		}
		for j := n; j1 == n && j < ktPad(n); j++ {
			for d := 0; d < hd; d++ {
				kti[ktAt(j, d, hd)] = 0
			}
		}
	}
}

// ktAt is the index of key j, dim d in packed K^T.
func ktAt(j, d, hd int) int { return j/16*16*hd + d*16 + j%16 }

// qkRed is the scratch length of qk for a block of rows.
func qkRed(rows int) int { return 8 * rows }

// smMode says what qk does after the product: nothing (smNone), the row
// softmax (smNorm), or its exponentials only, with each row's 1/sum left
// in red[row*8] for pv to scale the row's output by (smExp: HD products
// per row instead of n).
type smMode int

const (
	smNone smMode = iota
	smNorm
	smExp
)

// qkGo writes s(rows, n) = q(rows, hd)·K^T, q read with row stride ld,
// K^T from packGo, then per sm the row softmax of s in place (vmath's
// softmaxRows) or its exponentials, with 1/sum in red[i*8]; qp is unused
// (the C kernel's scratch).
func qkGo(q []float32, ld int, qp, kt []float32, rows, n, hd int, s, red []float32, sm smMode) {
	for i := 0; i < rows; i++ {
		qi := q[i*ld : i*ld+hd]
		si := s[i*n : (i+1)*n]
		for j := range si {
			var acc float32
			for d, x := range qi {
				acc += x * kt[ktAt(j, d, hd)]
			}
			si[j] = acc
		}
	}
	switch sm {
	case smNorm:
		vmath{}.softmaxRows(s, rows, n)
	case smExp:
		for i := 0; i < rows; i++ {
			red[i*8] = expRow(s[i*n : (i+1)*n])
		}
	}
}

// expRow is softmaxRows on one row without the final scaling, with the
// kernels' exponential: it leaves expk(x - max) in r and returns 1/sum,
// NaN where the row holds a NaN or an infinity.
func expRow(r []float32) float32 {
	m := float32(math.Inf(-1))
	var bad float32 // 0, or NaN once a non-finite score is seen
	for _, x := range r {
		m = max(m, x)
		bad += x - x
	}
	sum := bad
	for i, x := range r {
		e := expk(x - m)
		r[i] = e
		sum += e
	}
	return 1 / sum
}

// expTab8 holds the bits of 2^(j/8), j = 0..7, each less j<<20 (see
// expk).
var expTab8 = [8]uint32{0x3F800000, 0x3F7B95C2, 0x3F7837F0, 0x3F75FED7,
	0x3F7504F3, 0x3F75672A, 0x3F7744FD, 0x3F7AC0C7}

// expk is the attention kernels' exponential (esm2go_attn_exp8 in
// attn_kernels.go) for x <= 0: exp(max(x, -87.33654)), never below
// 2^-126, from k = round(x*8/ln 2) = 8m + j, r = x - k*ln(2)/8 (two-part
// constant), 2^m*2^(j/8) exactly from expTab8 and k's bits, times 1 +
// q(r) with q a degree-4 polynomial. Each operation is rounded to float32
// on its own (the conversions keep the compiler from fusing them), as in
// the portable C build, which computes the same bits; the AVX2 build
// fuses the multiply-adds. Within 1.1 ulp of exp (TestAttnExpAccuracy).
func expk(x float32) float32 {
	x = max(x, -87.33654)
	r := float32(x*11.5415602) + 12582912 // 1.5*2^23 + k, k's bits at the bottom
	fn := r - 12582912
	x = float32(x-float32(fn*0.086639404296875)) - float32(fn*3.993272912e-6)
	z := float32(x * x)
	q := float32(float32(float32(4.166585952e-2*z)+float32(float32(1.666803509e-1*x)+0.5))*z) + x
	rb := math.Float32bits(r)
	s := math.Float32frombits(expTab8[rb&7] + rb<<20)
	return float32(s*q) + s
}

// pvGo writes o(rows, hd) (row stride ldo) = p(rows, n)·V, V from packGo,
// row i scaled by inv[i*8] unless inv is nil.
func pvGo(p []float32, n int, vp []float32, rows, hd int, o []float32, ldo int, inv []float32) {
	for i := 0; i < rows; i++ {
		oi := o[i*ldo : i*ldo+hd]
		clear(oi)
		for j, w := range p[i*n : (i+1)*n] {
			for c := range oi {
				c0 := c &^ 15
				width := min(16, hd-c0)
				oi[c] += w * vp[c0*n+j*width+c-c0]
			}
		}
		if inv != nil {
			for c := range oi {
				oi[c] *= inv[i*8]
			}
		}
	}
}
