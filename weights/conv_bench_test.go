package weights

// Checkpoint conversion speed: a 650M fp16 checkpoint is 650M elements.

import (
	"testing"
)

func benchConv(b *testing.B, dt DType) {
	n := 16 << 20
	t := &Tensor{Name: "x", DType: dt, Shape: []int{n}, data: make([]byte, n*dt.Size())}
	for i := range t.data {
		t.data[i] = byte(i * 7)
	}
	// Keep every value finite (the conversion rejects NaN and Inf): clear the
	// top exponent bit in the high byte of each element.
	es := dt.Size()
	for i := es - 1; i < len(t.data); i += es {
		t.data[i] &= 0x3f
	}
	b.SetBytes(int64(len(t.data)))
	for b.Loop() {
		if _, err := t.Float32(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/elem")
}

func BenchmarkFloat32F32(b *testing.B)  { benchConv(b, F32) }
func BenchmarkFloat32F16(b *testing.B)  { benchConv(b, F16) }
func BenchmarkFloat32BF16(b *testing.B) { benchConv(b, BF16) }
