package cpu

// headRows is how many query rows attnKernels.head takes at a time: a
// multiple of the 6-row register tile, as many as keep the strip's
// scores within about 24 KiB (the L1 data cache is 32 KiB), from 6 to 24
// rows: 6 at n = 1000, 18 at n = 300, 24 at n = 100.
func headRows(n int) int {
	r := (24 << 10) / 4 / ktPad(n) / 6 * 6
	return min(max(r, 6), 24)
}

// headRowsWide is headRows for the 16-lane build (12-row P·V tiles): a
// multiple of 12, as many as keep the strip's scores within
// about 48 KiB (the L1 data cache of the AVX-512 CPUs measured), from 12
// to 48 rows: 12 at n = 1000, 36 at n = 300, 48 at n = 100. On a 2-core
// AVX-512 Xeon (single core, HD 16) 12 rows at n = 1000 were 10-15%
// faster than 6, 36-48 at n = 100 7% faster than 24; taller strips were
// no faster.
func headRowsWide(n int) int {
	r := (48 << 10) / 4 / ktPad(n) / 12 * 12
	return min(max(r, 12), 48)
}

// headLen is the scratch length of attnKernels.head in any build: a
// strip's queries (padded to whole 6-row tiles), its scores (leading
// dimension ktPad(n)) and its maxima and 1/sums (8 floats a row; 17 in
// the 16-lane build).
func headLen(n, hd int) int {
	return max(headRows(n)*(hd+ktPad(n)+8), headRowsWide(n)*(hd+ktPad(n)+17))
}

// headGo is the Go twin of attnKernels.head: qkGo with smExp then pvGo,
// in blocks of headRows(n) query rows (w, of headLen(n, hd) floats, holds
// a block's scores and 1/sums).
func headGo(q []float32, ld int, kt, vp []float32, n, hd int, o []float32, ldo int, w []float32) {
	R := headRows(n)
	s, red := w[:R*n], w[R*n:R*n+qkRed(R)]
	for i0 := 0; i0 < n; i0 += R {
		rows := min(R, n-i0)
		qkGo(q[i0*ld:], ld, nil, kt, rows, n, hd, s, red, smExp)
		pvGo(s, n, vp, rows, hd, o[i0*ldo:], ldo, red)
	}
}
