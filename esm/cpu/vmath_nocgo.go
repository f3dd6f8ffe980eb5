//go:build !cgo

package cpu

import (
	"math"
)

// vmath without cgo runs Go loops with the C kernels' semantics (vmath.go):
// a few times slower than the vectorized C, the same results up to the last
// bits.
type vmath struct{}

func newVMath() vmath { return vmath{} }

func (v vmath) portable() vmath { return v }

func (v vmath) narrow() vmath { return v }

// softmaxRows applies a row softmax to s (rows, n) in place, as the C
// esm2go_softmax_rows does: exponent inputs below -87.33654 are raised to
// it, so a finite row's weights are never 0 (a NaN in the value of an all
// but ignored key still reaches the output through the matmul), and a row
// holding a NaN or an infinity comes out all NaN (see softmaxRow).
func (v vmath) softmaxRows(s []float32, rows, n int) {
	for r := 0; r < rows; r++ {
		row := s[r*n : (r+1)*n]
		m := float32(math.Inf(-1))
		var bad float32 // 0, or NaN once a non-finite score is seen
		for _, x := range row {
			m = max(m, x)
			bad += x - x
		}
		sum := bad
		for i, x := range row {
			e := expf(max(x-m, -87.33654))
			row[i] = e
			sum += e
		}
		inv := 1 / sum
		for i := range row {
			row[i] *= inv
		}
	}
}

// gelu applies the exact GELU to x in place (mathf.go's gelu).
func (v vmath) gelu(x []float32) {
	for i, f := range x {
		x[i] = gelu(f)
	}
}

// layerNorm is layerNormGo.
func (v vmath) layerNorm(out, in, w, b []float32, d int, eps float32) {
	layerNormGo(out, in, w, b, d, eps)
}

// addRows is addRowsGo.
func (v vmath) addRows(out, bias []float32, n int) { addRowsGo(out, bias, n) }

// rotary is rotaryGo.
func (v vmath) rotary(x []float32, ld int, pos []int32, cos, sin []float32, h, hd int, qs float32) {
	rotaryGo(x, ld, pos, cos, sin, h, hd, qs)
}
