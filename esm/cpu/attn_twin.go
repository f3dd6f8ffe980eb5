package cpu

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

// ktAt is the index of key j, dim d in packed K^T.
func ktAt(j, d, hd int) int { return j/16*16*hd + d*16 + j%16 }

// qkRed is the scratch length of qk for a block of rows.
func qkRed(rows int) int { return 8 * rows }

// qkGo writes s(rows, n) = q(rows, hd)·K^T, q read with row stride ld,
// K^T from packGo, then with softmax set the row softmax of s in place
// (vmath's softmaxRows); qp and red are unused (the C kernel's scratch).
func qkGo(q []float32, ld int, qp, kt []float32, rows, n, hd int, s, red []float32, softmax bool) {
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
	if softmax {
		vmath{}.softmaxRows(s, rows, n)
	}
}

// pvGo writes o(rows, hd) (row stride ldo) = p(rows, n)·V, V from packGo.
func pvGo(p []float32, n int, vp []float32, rows, hd int, o []float32, ldo int) {
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
	}
}
