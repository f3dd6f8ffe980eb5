package cpu

import (
	"math"
	"testing"
)

func TestExpfAccuracy(t *testing.T) {
	var worst float64
	for x := -87.0; x <= 88.0; x += 0.0007 {
		got, want := float64(expf(float32(x))), math.Exp(float64(float32(x)))
		worst = math.Max(worst, math.Abs(got-want)/want)
	}
	// fp32 has 2^-24 ~ 6e-8 relative rounding; Cephes expf is within ~2 ulp.
	if worst > 2.5e-7 {
		t.Fatalf("expf worst relative error %g", worst)
	}
	if expf(-100) != 0 || !math.IsInf(float64(expf(100)), 1) {
		t.Fatal("expf range ends wrong")
	}
}

func TestGELUAccuracy(t *testing.T) {
	var worst float64
	for x := -12.0; x <= 12.0; x += 0.0003 {
		xf := float64(float32(x))
		want := 0.5 * xf * math.Erfc(-xf/math.Sqrt2)
		got := float64(gelu(float32(x)))
		// absolute error scaled by max(|x|,1): the model's tolerance is
		// relative to the largest activation, not to tiny tail values.
		worst = math.Max(worst, math.Abs(got-want)/math.Max(math.Abs(xf), 1))
	}
	// erfc's fit has 1.2e-7 fractional error, plus fp32 rounding of the result.
	if worst > 3e-7 {
		t.Fatalf("gelu worst scaled error %g", worst)
	}
}

func BenchmarkGELU(b *testing.B) {
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = float32(i-1<<15) / 4096
	}
	y := make([]float32, len(x))
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		for i, v := range x {
			y[i] = gelu(v)
		}
	}
}

func BenchmarkExpf(b *testing.B) {
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = -float32(i) / 2048
	}
	y := make([]float32, len(x))
	for b.Loop() {
		for i, v := range x {
			y[i] = expf(v)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/exp")
}

func TestExpSubMatchesExpf(t *testing.T) {
	r := make([]float32, 5000)
	for i := range r {
		r[i] = float32(i%997)/7 - 100
	}
	m := float32(42)
	want := make([]float32, len(r))
	var wsum float32
	for i, v := range r {
		want[i] = expf(v - m)
		wsum += want[i]
	}
	got := append([]float32(nil), r...)
	sum := expSub(got, m)
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("expSub[%d] = %g, expf = %g (x=%g)", i, got[i], want[i], r[i]-m)
		}
	}
	if sum != wsum {
		t.Fatalf("sum %g vs %g", sum, wsum)
	}
}

func BenchmarkExpSub(b *testing.B) {
	x := make([]float32, 1<<16)
	y := make([]float32, len(x))
	for i := range x {
		x[i] = -float32(i) / 2048
	}
	for b.Loop() {
		copy(y, x)
		expSub(y, 0)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/exp")
}
