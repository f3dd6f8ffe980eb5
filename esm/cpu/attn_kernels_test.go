package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/esm2go/esm2go/attention"
)

// attnKernelBuilds are the builds of the C kernels this CPU can run: the
// one Attention picks, the one for any x86-64 and, where the first is
// the 16-lane build, the AVX2 one.
func attnKernelBuilds() map[string]attnKernels {
	k := newAttnKernels()
	b := map[string]attnKernels{"dispatched": k, "portable": k.portable()}
	if k.narrow() != k {
		b["avx2"] = k.narrow()
	}
	return b
}

// packRows must write exactly what packRowsGo writes (and what pack
// writes head by head), for head dims with their own build and without,
// lengths around the 8-key transpose and the 16-key strip, and the keys
// split into blocks as Attention splits them (packKeys) and otherwise.
func TestAttnKernelsPackRows(t *testing.T) {
	for bname, kern := range attnKernelBuilds() {
		t.Run(bname, func(t *testing.T) {
			if !kern.ok(8) {
				t.Skip("no C attention kernels in this build")
			}
			r := rand.New(rand.NewPCG(25, 26))
			for _, hd := range []int{8, 16, 24, 32, 40} {
				for _, n := range []int{1, 7, 8, 9, 16, 17, 63, 64, 65, 130} {
					const h = 3
					ld := 3*h*hd + 8
					x := randn(r, n*ld, 1)
					for _, block := range []int{packKeys, 16, n} {
						name := fmt.Sprintf("hd=%d n=%d block=%d", hd, n, block)
						got := make([]float32, packedLen(n, h, hd))
						for i := range got {
							got[i] = float32(math.NaN()) // every element must be written
						}
						want := make([]float32, packedLen(n, h, hd))
						q, kt, vp := got[:h*n*hd], got[h*n*hd:h*n*hd+h*ktLen(n, hd)], got[h*n*hd+h*ktLen(n, hd):]
						wq, wkt, wvp := want[:h*n*hd], want[h*n*hd:h*n*hd+h*ktLen(n, hd)], want[h*n*hd+h*ktLen(n, hd):]
						for j0 := 0; j0 < n; j0 += block {
							kern.packRows(x, ld, n, h, hd, j0, min(j0+block, n), q, kt, vp)
							packRowsGo(x, ld, n, h, hd, j0, min(j0+block, n), wq, wkt, wvp)
						}
						closeTo(t, name+" packRows", got, want, 0)
						// and head 1 as pack packs it on its own
						pkt, pvp := make([]float32, ktLen(n, hd)), make([]float32, n*hd)
						kern.pack(x[h*hd+hd:], x[2*h*hd+hd:], ld, n, hd, pkt, pvp)
						closeTo(t, name+" K^T vs pack", kt[ktLen(n, hd):2*ktLen(n, hd)], pkt, 0)
						closeTo(t, name+" V vs pack", vp[n*hd:2*n*hd], pvp, 0)
					}
				}
			}
		})
	}
}

// The C attention products must equal their Go twins (attn_twin.go) at
// head dims with and without a 16-column remainder, row counts around the
// 6-row tile and key counts around the 16-column strip.
func TestAttnKernelsMatchTwins(t *testing.T) {
	for bname, kern := range attnKernelBuilds() {
		t.Run(bname, func(t *testing.T) { testAttnKernelsMatchTwins(t, kern) })
	}
}

func testAttnKernelsMatchTwins(t *testing.T, kern attnKernels) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, hd := range []int{8, 16, 24, 32, 64, 128} {
		if !kern.ok(hd) {
			t.Skipf("no C attention kernels in this build (head dim %d)", hd)
		}
		for _, rows := range []int{1, 5, 6, 7, 13, attnBlock} {
			for _, n := range []int{1, 15, 16, 17, 70, 257} {
				name := fmt.Sprintf("hd=%d rows=%d n=%d", hd, rows, n)
				ld := 3*hd + 8 // strided rows, as in the packed qkv
				q, k, v := randn(r, rows*ld, 1), randn(r, n*ld, 1), randn(r, n*ld, 1)
				kt, vp := make([]float32, ktLen(n, hd)), make([]float32, n*hd)
				for i := range kt {
					kt[i] = float32(math.NaN()) // padding must be written, not assumed zero
				}
				kern.pack(k, v, ld, n, hd, kt, vp)
				wantKt, wantVp := make([]float32, len(kt)), make([]float32, len(vp))
				packGo(k, v, ld, n, hd, wantKt, wantVp)
				closeTo(t, name+" pack K", kt, wantKt, 0)
				closeTo(t, name+" pack V", vp, wantVp, 0)
				s, want := make([]float32, rows*n), make([]float32, rows*n)
				kern.qk(q, ld, make([]float32, rows*hd), kt, rows, n, hd, s, make([]float32, qkRed(rows)), smNone)
				qkGo(q, ld, nil, wantKt, rows, n, hd, want, nil, smNone)
				closeTo(t, name+" qk", s, want, hd)
				ldo := hd + 5
				o, wantO := make([]float32, rows*ldo), make([]float32, rows*ldo)
				p := randn(r, rows*n, 1)
				kern.pv(p, n, vp, rows, hd, o, ldo, nil)
				pvGo(p, n, wantVp, rows, hd, wantO, ldo, nil)
				closeTo(t, name+" pv", o, wantO, n)
				// with each row scaled (inv of stride 8, as qk leaves it):
				// one more rounding, within the same bound
				inv := make([]float32, qkRed(rows))
				for i := range inv {
					inv[i] = 0.5 + r.Float32()
				}
				kern.pv(p, n, vp, rows, hd, o, ldo, inv)
				pvGo(p, n, wantVp, rows, hd, wantO, ldo, inv)
				closeTo(t, name+" pv scaled", o, wantO, n)
			}
		}
	}
}

// closeTo compares sums of `terms` products of standard normals (0: plain
// copies, which must be exact). The C kernels fuse multiply-adds, so each
// sum may differ from the twin's by about an ulp of a partial sum per term;
// terms * 2^-22 (2 ulp of 1 per term) times max(1, |want|) bounds that for
// partial sums of magnitude ~sqrt(terms) <= 16 here.
func closeTo(t *testing.T, what string, got, want []float32, terms int) {
	t.Helper()
	for i := range want {
		tol := float64(terms) * 0x1p-22 * math.Max(1, math.Abs(float64(want[i])))
		if d := math.Abs(float64(got[i] - want[i])); !(d <= tol) {
			t.Fatalf("%s: element %d = %g, want %g", what, i, got[i], want[i])
		}
	}
}

// The kernels' softmax (qk with softmax set) must give softmaxRows'
// weights, and its semantics: a row holding one non-finite score, at any
// position (vector body, the overlapped tail, rows shorter than 8), comes
// out all NaN; every other row is finite with every weight > 0.
func TestAttnKernelsSoftmax(t *testing.T) {
	for bname, kern := range attnKernelBuilds() {
		t.Run(bname, func(t *testing.T) { testAttnKernelsSoftmax(t, kern) })
	}
}

func testAttnKernelsSoftmax(t *testing.T, kern attnKernels) {
	const hd = 16
	if !kern.ok(hd) {
		t.Skip("no C attention kernels in this build")
	}
	r := rand.New(rand.NewPCG(13, 14))
	const rows, ld = 7, 3 * hd
	for _, n := range []int{1, 5, 8, 9, 17, 40, 65, 70, 1002} { // around the 8- and 32-lane steps
		q, k := randn(r, rows*ld, 1), randn(r, n*ld, 1)
		// Row 2 scores about 30 above the rest at key 0: other keys' weights
		// are ~e^-60, tiny but never 0.
		q[2*ld] = 10
		k[0] = 3
		kt := make([]float32, ktLen(n, hd))
		red := make([]float32, qkRed(rows))
		kern.pack(k, nil, ld, n, hd, kt, nil)
		got, want := make([]float32, rows*n), make([]float32, rows*n)
		kern.qk(q, ld, make([]float32, rows*hd), kt, rows, n, hd, got, red, smNorm)
		qkGo(q, ld, nil, kt, rows, n, hd, want, nil, smNorm)
		// Scores differ by FMA rounding (~1e-6 of |score| <= ~30) and exp
		// by its own: 1e-4 relative covers both, far below any semantic
		// difference.
		closeWeights := func(what string, got, want []float32) {
			t.Helper()
			for i := range want {
				if d := math.Abs(float64(got[i] - want[i])); !(d <= 1e-4*float64(want[i])) || got[i] <= 0 {
					t.Fatalf("n=%d %s: %d = %g, want %g (> 0)", n, what, i, got[i], want[i])
				}
			}
		}
		closeWeights("weight", got, want)
		// smExp: the exponentials and each row's 1/sum, which times them
		// are the weights
		wantRed := make([]float32, qkRed(rows))
		kern.qk(q, ld, make([]float32, rows*hd), kt, rows, n, hd, got, red, smExp)
		qkGo(q, ld, nil, kt, rows, n, hd, want, wantRed, smExp)
		closeWeights("exp", got, want)
		for i := 0; i < rows; i++ {
			closeWeights("1/sum", red[i*8:i*8+1], wantRed[i*8:i*8+1])
		}
		for _, bname := range []string{"NaN", "+Inf", "-Inf"} {
			for _, pos := range []int{0, n / 2, n - 1} {
				const row = 4
				// every other score stays finite
				q2, k2 := poisonScore(q, k, ld, row, pos, bname)
				kern.pack(k2, nil, ld, n, hd, kt, nil)
				kern.qk(q2, ld, make([]float32, rows*hd), kt, rows, n, hd, got, red, smNorm)
				checkReach(t, fmt.Sprintf("n=%d %s at %d", n, bname, pos), got, func(i int) bool { return i/n == row })
				// smExp: the bad row's 1/sum is NaN (so is its output
				// after pv), the others' finite
				kern.qk(q2, ld, make([]float32, rows*hd), kt, rows, n, hd, got, red, smExp)
				for i := 0; i < rows; i++ {
					if finite(red[i*8]) == (i == row) {
						t.Errorf("n=%d %s at %d: row %d 1/sum = %g", n, bname, pos, i, red[i*8])
					}
				}
			}
		}
	}
}

// head (a whole (sequence, head) in strips of query rows) must give
// exactly what qk with smExp and then pv give on the same build, bit for
// bit (the same operations on every row), and its Go twin's results
// within rounding, at head dims with their own unrolled build (16, 24,
// 32) and without, and lengths around the 6-row tile, the 16-key strip
// and the strip of headRows(n) rows.
func TestAttnKernelsHead(t *testing.T) {
	for bname, kern := range attnKernelBuilds() {
		t.Run(bname, func(t *testing.T) { testAttnKernelsHead(t, kern) })
	}
}

func testAttnKernelsHead(t *testing.T, kern attnKernels) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, hd := range []int{8, 16, 24, 32, 40, 64} {
		if !kern.ok(hd) {
			t.Skipf("no C attention kernels in this build (head dim %d)", hd)
		}
		for _, n := range []int{1, 5, 6, 7, 15, 16, 17, 25, 70, 257, 302, 1000} {
			if n == 1000 && hd != 16 {
				continue // the strip of 12 rows (16-lane build) at HD 16 is what this length adds
			}
			name := fmt.Sprintf("hd=%d n=%d", hd, n)
			ld := 3*hd + 8
			// q scaled by hd^-1/2 as RotaryQK leaves it: scores ~ N(0, 1)
			q, k, v := randn(r, n*ld, 1/math.Sqrt(float64(hd))), randn(r, n*ld, 1), randn(r, n*ld, 1)
			kt, vp := make([]float32, ktLen(n, hd)), make([]float32, n*hd)
			kern.pack(k, v, ld, n, hd, kt, vp)
			ldo := hd + 3
			w := make([]float32, headLen(n, hd))
			for i := range w {
				w[i] = float32(math.NaN()) // scratch must be written before it is read
			}
			got := make([]float32, n*ldo)
			kern.head(q, ld, kt, vp, n, hd, got, ldo, w)
			// the same build's qk and pv, in one block of all n rows
			s, red, want := make([]float32, n*n), make([]float32, qkRed(n)), make([]float32, n*ldo)
			kern.qk(q, ld, make([]float32, n*hd), kt, n, n, hd, s, red, smExp)
			kern.pv(s, n, vp, n, hd, want, ldo, red)
			closeTo(t, name+" head vs qk+pv", got, want, 0)
			// The twin: scores differ by FMA rounding, at most hd*2^-22
			// (closeTo's bound, |scores| <= ~5 here, so 2^-19 covers the
			// max too); each weight exp(s - max)/sum then by ~3 such
			// errors and 2 ulp of the exp and 1/sum, relatively; the
			// output, a weighted mean of v, by that times max|v|, plus
			// the sums' rounding (n terms of 2^-23 relative to
			// sum|w*v| <= max|v|).
			twin := make([]float32, n*ldo)
			headGo(q, ld, kt, vp, n, hd, twin, ldo, make([]float32, headLen(n, hd)))
			var maxV float64
			for j := 0; j < n; j++ {
				for _, x := range v[j*ld : j*ld+hd] {
					maxV = math.Max(maxV, math.Abs(float64(x)))
				}
			}
			tol := (3*float64(hd)*0x1p-19 + 0x1p-20 + float64(n)*0x1p-22) * maxV
			for i := 0; i < n; i++ {
				for c := 0; c < hd; c++ {
					g, w := got[i*ldo+c], twin[i*ldo+c]
					if d := math.Abs(float64(g - w)); !(d <= tol) {
						t.Fatalf("%s: row %d col %d = %g, twin %g (tolerance %g)", name, i, c, g, w, tol)
					}
				}
			}
			for i := range got {
				if i%ldo >= hd && got[i] != 0 {
					t.Fatalf("%s: element %d outside the head's columns written", name, i)
				}
			}
		}
	}
}

// The 16-lane head skips the softmax's check for non-finite scores where
// HD·max|q|·max|k| <= 1e30 (no score can be NaN or infinite then): with
// huge but finite scores on either side of that bound (q and k ~1e13, so
// ~3e28, and ~1e15, ~3e32: the check runs, nothing overflows) it must
// still give exactly what qk with smExp and pv give, which always check.
func TestAttnKernelsHeadLargeScores(t *testing.T) {
	for bname, kern := range attnKernelBuilds() {
		t.Run(bname, func(t *testing.T) {
			const hd = 16
			if !kern.ok(hd) {
				t.Skip("no C attention kernels in this build")
			}
			r := rand.New(rand.NewPCG(23, 24))
			for _, scale := range []float64{1e13, 1e15} {
				for _, n := range []int{7, 40, 302} {
					name := fmt.Sprintf("scale %g n=%d", scale, n)
					ld := 3 * hd
					q, k, v := randn(r, n*ld, scale), randn(r, n*ld, scale), randn(r, n*ld, 1)
					kt, vp := make([]float32, ktLen(n, hd)), make([]float32, n*hd)
					kern.pack(k, v, ld, n, hd, kt, vp)
					got := make([]float32, n*hd)
					kern.head(q, ld, kt, vp, n, hd, got, hd, make([]float32, headLen(n, hd)))
					s, red, want := make([]float32, n*n), make([]float32, qkRed(n)), make([]float32, n*hd)
					kern.qk(q, ld, make([]float32, n*hd), kt, n, n, hd, s, red, smExp)
					kern.pv(s, n, vp, n, hd, want, hd, red)
					closeTo(t, name+" head vs qk+pv", got, want, 0)
					for i, x := range got {
						if !finite(x) {
							t.Fatalf("%s: element %d = %g from finite scores", name, i, x)
						}
					}
				}
			}
		})
	}
}

// A non-finite score makes its query row's output all NaN and no other
// row's: in any key strip (the last one, whose padding columns are left
// out of the max, included) and any row of a strip (the last, partial
// tile included).
func TestAttnKernelsHeadNonFinite(t *testing.T) {
	for bname, kern := range attnKernelBuilds() {
		t.Run(bname, func(t *testing.T) { testAttnKernelsHeadNonFinite(t, kern) })
	}
}

func testAttnKernelsHeadNonFinite(t *testing.T, kern attnKernels) {
	const hd = 16
	if !kern.ok(hd) {
		t.Skip("no C attention kernels in this build")
	}
	r := rand.New(rand.NewPCG(17, 18))
	const ld = 3 * hd
	for _, n := range []int{7, 17, 40, 302} {
		q, k, v := randn(r, n*ld, 0.25), randn(r, n*ld, 1), randn(r, n*ld, 1)
		kt, vp := make([]float32, ktLen(n, hd)), make([]float32, n*hd)
		o, w := make([]float32, n*hd), make([]float32, headLen(n, hd))
		for _, bname := range []string{"NaN", "+Inf", "-Inf"} {
			for _, row := range []int{0, n - 1, min(n-1, kern.stripRows(n)+1)} {
				for _, pos := range []int{0, n / 2, n - 1} {
					q2, k2 := poisonScore(q, k, ld, row, pos, bname)
					// every other score of the row is 1e20 * k[j][0] (+ the
					// rest): finite unless it overflows too, so keep k's
					// other first elements small
					for j := 0; j < n; j++ {
						if j != pos {
							k2[j*ld], k2[j*ld+1] = 1e-30, 1e-30
						}
					}
					kern.pack(k2, v, ld, n, hd, kt, vp)
					kern.head(q2, ld, kt, vp, n, hd, o, hd, w)
					what := fmt.Sprintf("n=%d %s at row %d key %d", n, bname, row, pos)
					checkReach(t, what, o, func(i int) bool { return i/hd == row })
					for i := row * hd; i < (row+1)*hd; i++ {
						if !math.IsNaN(float64(o[i])) {
							t.Fatalf("%s: element %d = %g, want NaN", what, i, o[i])
						}
					}
				}
			}
		}
	}
}

// poisonScore returns copies of q and k (rows of ld floats) whose score of
// query row and key pos is kind: "+Inf" or "-Inf" (the product's first
// term overflows, 1e40), or "NaN" (two first terms overflow to +Inf and
// -Inf and add up to NaN).
func poisonScore(q, k []float32, ld, row, pos int, kind string) (q2, k2 []float32) {
	q2, k2 = append([]float32(nil), q...), append([]float32(nil), k...)
	q2[row*ld], k2[pos*ld] = 1e20, 1e20
	switch kind {
	case "-Inf":
		q2[row*ld] = -1e20
	case "NaN":
		q2[row*ld+1], k2[pos*ld+1] = 1e20, -1e20
	}
	return q2, k2
}

// TestHeadLenMax checks that headLenMax(maxN, hd) holds headLen(n, hd) for
// every n up to maxN (headRows falls as n grows, so the longest sequence of
// a batch is not the one that needs the most scratch).
func TestHeadLenMax(t *testing.T) {
	for _, hd := range []int{16, 24, 32, 64, 128} {
		most, at := 0, 0 // the largest headLen(n, hd) for n <= maxN, and its n
		for maxN := 1; maxN <= 4200; maxN++ {
			if l := headLen(maxN, hd); l > most {
				most, at = l, maxN
			}
			if bound := headLenMax(maxN, hd); most > bound {
				t.Fatalf("hd %d: headLen(%d) = %d > headLenMax(%d) = %d", hd, at, most, maxN, bound)
			}
		}
	}
}

// A batch whose sequences get strips of different heights (6 rows at
// n = 1002, 24 at n = 241, one short tile at n = 5) must fit the workers'
// scratch and give attention.Reference's result: the scratch is sized for
// the tallest strip of any length in the batch, not the longest sequence's.
func TestAttentionStripHeights(t *testing.T) {
	lens := []int{1002, 241, 5}
	for _, hd := range []int{16, 24} {
		const H = 2
		D := H * hd
		s, err := attention.NewSeqlens(lens)
		if err != nil {
			t.Fatal(err)
		}
		T := s.Total()
		r := rand.New(rand.NewPCG(19, 20))
		qkv := randn(r, T*3*D, 1)
		want := make([]float32, T*D)
		if err := attention.Reference(attention.Args{Out: want, LdOut: D, Q: qkv, K: qkv[D:], V: qkv[2*D:], Ld: 3 * D, Seqlens: s, H: H, HD: hd, Scale: 1}); err != nil {
			t.Fatal(err)
		}
		be := New(Options{})
		be.seqlens, be.tokens = s, make([]int32, T)
		got := &tensor{d: make([]float32, T*D)}
		if err := be.Attention(got, &tensor{d: qkv}, H, hd); err != nil {
			t.Fatal(err)
		}
		be.Close()
		// as TestAttentionMatchesReference: fp32 both, summation order
		// only, ~1e-6 relative; 1e-5 of the largest output is margin
		var maxDiff, maxRef float64
		for i := range want {
			maxDiff = math.Max(maxDiff, math.Abs(float64(got.d[i]-want[i])))
			maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
		}
		if !(maxDiff <= 1e-5*maxRef) {
			t.Errorf("hd=%d: max diff %g (max ref %g)", hd, maxDiff, maxRef)
		}
	}
}

// The kernels' exponential (esm2go_attn_exp8, Go twin expk) must be
// within 1.1 ulp of exp on x <= 0 (every 127th float of [-87.33654, 0]
// here; an exhaustive check over all of them gave 0.89 ulp for the AVX2
// build and 1.10 for the portable one and the twin), never below 2^-126
// (inputs below -87.33654 are raised to it, -Inf included), NaN for NaN,
// and the portable build must compute the twin's bits.
func TestAttnExpAccuracy(t *testing.T) {
	lo := math.Float32bits(-87.33654)
	step := uint32(127)
	if testing.Short() {
		step = 997
	}
	var x []float32
	for u := uint32(0x80000000); u <= lo; u += step {
		x = append(x, math.Float32frombits(u))
	}
	x = append(x, 0, -87.33654, -87.33655, -88, -100, -1e30, float32(math.Inf(-1)), float32(math.NaN()))
	for len(x)%8 != 0 {
		x = append(x, -1)
	}
	ulpErr := func(got float32, x float32) float64 {
		want := math.Exp(float64(max(x, -87.33654)))
		_, e := math.Frexp(want)
		return math.Abs(float64(got)-want) / math.Ldexp(1, e-24)
	}
	check := func(name string, y []float32) {
		t.Helper()
		worst, at := 0.0, float32(0)
		for i, v := range x {
			if v != v {
				if y[i] == y[i] {
					t.Errorf("%s: exp(NaN) = %g", name, y[i])
				}
				continue
			}
			if !(y[i] >= 0x1p-126) {
				t.Errorf("%s: exp(%g) = %g, below 2^-126", name, v, y[i])
			}
			if d := ulpErr(y[i], v); d > worst {
				worst, at = d, v
			}
		}
		t.Logf("%s: max error %.3f ulp (at %g)", name, worst, at)
		if worst > 1.1 {
			t.Errorf("%s: max error %.3f ulp at %g", name, worst, at)
		}
	}
	twin := make([]float32, len(x))
	for i, v := range x {
		twin[i] = expk(v)
	}
	check("twin", twin)
	builds := attnKernelBuilds()
	for bname, kern := range builds {
		y := make([]float32, len(x))
		kern.exps(x, y)
		check(bname, y)
		if bname == "dispatched" && len(builds) == 3 {
			// the 16-lane build's exponential is the AVX2 one's, bit for bit
			y2 := make([]float32, len(x))
			builds["avx2"].exps(x, y2)
			for i := range x {
				if math.Float32bits(y[i]) != math.Float32bits(y2[i]) && x[i] == x[i] {
					t.Fatalf("16-lane: exp(%g) = %g, AVX2 build %g", x[i], y[i], y2[i])
				}
			}
		}
		if bname == "portable" {
			for i := range x {
				if math.Float32bits(y[i]) != math.Float32bits(twin[i]) && x[i] == x[i] {
					t.Fatalf("portable: exp(%g) = %g, twin %g", x[i], y[i], twin[i])
				}
			}
		}
	}
}
