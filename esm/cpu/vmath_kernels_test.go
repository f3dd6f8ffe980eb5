package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// vmathBuilds are the builds of vmath's C kernels this CPU can run: the
// one the backend picks, the one for any x86-64 and, where the first is
// the AVX-512 one, the AVX2 one (in the pure-Go build all are the Go
// twins).
func vmathBuilds() map[string]vmath {
	v := newVMath()
	b := map[string]vmath{"dispatched": v, "portable": v.portable()}
	if v.narrow() != v {
		b["avx2"] = v.narrow()
	}
	return b
}

// LayerNorm's C kernel against layerNormGo, at widths below, at and
// around the 8- and 16-lane steps and at ESM2's 320, on rows with a large
// mean (3, std 1: the variance must not cancel) and in place. The
// differences come from the float32 lane sums of the mean and the
// variance (the twin sums in float64) and the fused multiply-adds of the
// output: measured at most 1.1e-6 relative to max(1, |want|) over 50
// draws of these widths and 1280; 4e-6 leaves a 4x margin.
func TestVMathLayerNormMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for bname, v := range vmathBuilds() {
		for _, d := range []int{1, 5, 8, 13, 16, 24, 40, 320, 333} {
			const rows = 5
			x := randn(r, rows*d, 1)
			for i := range x {
				x[i] += 3
			}
			w, b := randn(r, d, 1), randn(r, d, 1)
			want := make([]float32, rows*d)
			layerNormGo(want, x, w, b, d, 1e-5)
			got := make([]float32, rows*d)
			v.layerNorm(got, x, w, b, d, 1e-5)
			what := fmt.Sprintf("%s d=%d", bname, d)
			closeRel(t, what, got, want, 4e-6)
			v.layerNorm(x, x, w, b, d, 1e-5) // in place
			closeRel(t, what+" in place", x, want, 4e-6)
			// a non-finite element poisons its row only
			for _, bad := range badValues {
				x := randn(r, rows*d, 1)
				x[2*d+d/2] = bad
				v.layerNorm(got, x, w, b, d, 1e-5)
				checkReach(t, what+" non-finite", got, func(i int) bool { return i/d == 2 })
			}
		}
	}
}

// The bias add is one float32 addition per element on either side: bit
// for bit equal.
func TestVMathAddRowsMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	for bname, v := range vmathBuilds() {
		for _, n := range []int{1, 7, 8, 9, 17, 320} {
			out, bias := randn(r, 3*n, 1), randn(r, n, 1)
			want := append([]float32(nil), out...)
			addRowsGo(want, bias, n)
			v.addRows(out, bias, n)
			closeRel(t, fmt.Sprintf("%s n=%d", bname, n), out, want, 0)
		}
	}
}

// Rotary's C kernel against rotaryGo on strided rows, at head dims whose
// half is below 8, a multiple of 8 and not (12: 35M's), positions out of
// order. Each output is x1*c - x2*s (or x2*c + x1*s) of standard normals
// scaled by qs <= 1: the C kernel fuses the multiply-add, which changes
// the result by at most 1 ulp of the larger product (< 8 here), so
// 2^-20 absolute bounds it (measured over 50 draws: 2^-21).
func TestVMathRotaryMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	for bname, v := range vmathBuilds() {
		for _, hd := range []int{2, 8, 16, 24, 32, 64} {
			const h, rows, maxPos = 3, 7, 50
			half := hd / 2
			cos, sin := make([]float32, maxPos*half), make([]float32, maxPos*half)
			for i := range cos {
				a := r.Float64() * 2 * math.Pi
				cos[i], sin[i] = float32(math.Cos(a)), float32(math.Sin(a))
			}
			pos := make([]int32, rows)
			for i := range pos {
				pos[i] = int32(r.IntN(maxPos))
			}
			ld := 3*h*hd + 5
			x := randn(r, rows*ld, 1)
			want := append([]float32(nil), x...)
			rotaryGo(want, ld, pos, cos, sin, h, hd, 0.25)
			v.rotary(x, ld, pos, cos, sin, h, hd, 0.25)
			for i := range x {
				if d := math.Abs(float64(x[i] - want[i])); !(d <= 0x1p-20) {
					t.Fatalf("%s hd=%d: element %d (row %d col %d) = %g, want %g", bname, hd, i, i/ld, i%ld, x[i], want[i])
				}
			}
		}
	}
}

// GELU's C kernel against the Go gelu at lengths around its 32- and
// 8-lane steps (the zero-padded tail), as TestVMathMatchesGo: 1e-6
// absolute, times |x| where |x| > 1 (float32 Horner and FMA against the
// twin's float64).
func TestVMathGELULengths(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	for bname, v := range vmathBuilds() {
		for _, n := range []int{1, 7, 8, 9, 31, 32, 33, 40, 1005} {
			x := randn(r, n, 3)
			g := append([]float32(nil), x...)
			v.gelu(g)
			for i, xv := range x {
				w := float64(gelu(xv))
				if math.Abs(float64(g[i])-w) > 1e-6*math.Max(1, math.Abs(float64(xv))) {
					t.Fatalf("%s n=%d: gelu(%g) = %g, Go %g", bname, n, xv, g[i], w)
				}
			}
		}
	}
}

// The AVX-512 GELU must give the AVX2 build's bits (the same operations
// on each lane) at lengths around its 64-, 16- and 8-lane steps, NaN,
// infinities and the clamp's range included.
func TestVMathGELUWide(t *testing.T) {
	v := newVMath()
	if v.narrow() == v {
		t.Skip("this CPU runs no AVX-512 build of the kernels")
	}
	r := rand.New(rand.NewPCG(29, 30))
	for _, n := range []int{1, 8, 15, 16, 17, 63, 64, 65, 88, 95, 1005, 4099} {
		x := randn(r, n, 4)
		for i, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), -200, 200, -0} {
			if k := i * 7; k < n {
				x[k] = bad
			}
		}
		g, w := append([]float32(nil), x...), append([]float32(nil), x...)
		v.gelu(g)
		v.narrow().gelu(w)
		for i := range x {
			if math.Float32bits(g[i]) != math.Float32bits(w[i]) {
				t.Fatalf("n=%d: gelu(%g) = %g (AVX-512), %g (AVX2)", n, x[i], g[i], w[i])
			}
		}
	}
}

// closeRel fails where |got - want| > tol*max(1, |want|) (tol 0: equal).
func closeRel(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); !(d <= tol*math.Max(1, math.Abs(float64(want[i])))) {
			t.Fatalf("%s: element %d = %g, want %g", what, i, got[i], want[i])
		}
	}
}
