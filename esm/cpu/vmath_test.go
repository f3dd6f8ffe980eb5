package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The vectorized C loops must agree with their Go twins: FMA contraction and
// a different summation order change only the last bits (relative 1e-6).
func TestVMathMatchesGo(t *testing.T) {
	v := newVMath()
	{
		r := rand.New(rand.NewPCG(9, 9))
		rows, n := 7, 333
		s := make([]float32, rows*n)
		for i := range s {
			s[i] = float32(r.NormFloat64() * 8)
		}
		want := append([]float32(nil), s...)
		for i := 0; i < rows; i++ {
			softmaxRow(want[i*n : (i+1)*n])
		}
		v.softmaxRows(s, rows, n)
		for i := range s {
			if math.Abs(float64(s[i]-want[i])) > 1e-6*math.Max(1e-3, float64(want[i])) {
				t.Fatalf("softmax[%d] = %g, Go %g", i, s[i], want[i])
			}
		}
		x := make([]float32, 10000)
		for i := range x {
			x[i] = float32(i-5000) / 400
		}
		g := append([]float32(nil), x...)
		v.gelu(g)
		for i, xv := range x {
			w := float64(gelu(xv))
			if math.Abs(float64(g[i])-w) > 1e-6*math.Max(1, math.Abs(float64(xv))) {
				t.Fatalf("gelu(%g) = %g, Go %g", xv, g[i], w)
			}
		}
	}
}

func BenchmarkVSoftmax(b *testing.B) {
	v := newVMath()
	src := make([]float32, 300*300)
	for i := range src {
		src[i] = float32(i%300) / 30
	}
	s := make([]float32, len(src))
	for b.Loop() {
		copy(s, src)
		v.softmaxRows(s, 300, 300)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(s)), "ns/elem")
}

func BenchmarkVGELU(b *testing.B) {
	v := newVMath()
	src := make([]float32, 1<<16)
	for i := range src {
		src[i] = float32(i-1<<15) / 4096
	}
	x := make([]float32, len(src))
	for b.Loop() {
		copy(x, src)
		v.gelu(x)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/elem")
}
