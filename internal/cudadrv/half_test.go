package cudadrv

import (
	"math"
	"testing"
)

// Every fp16 and bf16 value survives a decode/encode round trip, and
// rounding goes to the nearest value (ties to even). Runs without a GPU.
func TestHalfRoundTrip(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := HalfToFloat32(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := HalfBits(f); got != uint16(h) && !(f == 0 && got&0x7fff == 0) {
			t.Fatalf("fp16 %#04x -> %g -> %#04x", h, f, got)
		}
		b := BF16ToFloat32(uint16(h))
		if math.IsNaN(float64(b)) {
			continue
		}
		if got := BF16Bits(b); got != uint16(h) {
			t.Fatalf("bf16 %#04x -> %g -> %#04x", h, b, got)
		}
	}
	// 1 + 2^-11 is halfway between 1 and the next fp16 (1 + 2^-10): ties to even.
	if got := HalfBits(1 + 1.0/2048); got != 0x3c00 {
		t.Fatalf("tie rounded to %#04x, want 0x3c00", got)
	}
	if got := HalfBits(1 + 3.0/2048); got != 0x3c02 {
		t.Fatalf("tie rounded to %#04x, want 0x3c02", got)
	}
}
