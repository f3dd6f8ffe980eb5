package output

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// TestFirstBadParallel: the one-pass check split over pieces finds the
// same first value as a plain scan, for a bad value planted anywhere
// (piece boundaries included), in every dtype; and a row stays refused
// with the error the two separate checks give (a NaN after an
// out-of-range value is what is named).
func TestFirstBadParallel(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	n := 4*parallelMin + 13
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	naive := func(v []float32, d DType) int {
		for i, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) || d.firstOutOfRange([]float32{x}) == 0 {
				return i
			}
		}
		return -1
	}
	bads := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 65520, -1e38, math.MaxFloat32}
	for _, d := range dtypes {
		if got := firstBad(v, d); got != -1 {
			t.Fatalf("%s: clean values: firstBad %d", d, got)
		}
		for _, at := range []int{0, 7, 8, parallelMin - 1, parallelMin, n/2 - 1, n / 2, n - 9, n - 1} {
			for _, x := range bads {
				w := append([]float32(nil), v...)
				w[at] = x
				if at+3 < n {
					w[at+3] = float32(math.NaN()) // a later one must not win
				}
				if got, want := firstBad(w, d), naive(w, d); got != want {
					t.Errorf("%s: %v at %d: firstBad %d, want %d", d, x, at, got, want)
				}
			}
		}
	}

	// The error named: a NaN anywhere before an out-of-range value.
	c := rowChecker{cols: []Column{{Name: "x", Kind: Vector, Dim: n}}, dtype: Float16}
	w := append([]float32(nil), v...)
	w[10], w[n-1] = 70000, float32(math.NaN())
	err := c.check(&Row{ID: "r", Values: [][]float32{w}})
	if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), "element "+strconv.Itoa(n-1)) {
		t.Errorf("NaN after an out-of-range value: %v", err)
	}
	w[n-1] = 1
	if err := c.check(&Row{ID: "r", Values: [][]float32{w}}); !errors.Is(err, ErrOutOfRange) || !strings.Contains(err.Error(), "element 10") {
		t.Errorf("out-of-range value: %v", err)
	}
}

// TestEncode16Parallel: the conversion split over pieces writes the bytes
// the one-piece conversion writes, for sizes around the split.
func TestEncode16Parallel(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, parallelMin - 1, 2 * parallelMin, 3*parallelMin + 5} {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 1000)
		}
		if n > 0 {
			v[n-1] = 1e-7 // a subnormal half
		}
		for _, d := range []DType{Float16, BFloat16} {
			want := make([]byte, 2*n)
			d.encode16(want, v)
			got := make([]byte, 2*n)
			d.encode16Parallel(got, v)
			if !bytes.Equal(got, want) {
				t.Errorf("%s, %d values: the bytes differ", d, n)
			}
		}
	}
}

// TestEncode16Small: encode16's inline path for zeros and subnormal
// halves gives f32ToF16Rare's bits (correct for every float32) below
// 2^-14, both signs: every 4099th bit pattern, and the patterns at and
// next to each rounding tie of a few thousand mantissas per exponent;
// and the normal range sampled.
func TestEncode16Small(t *testing.T) {
	var vals []float32
	for a := uint32(0); a < 0x38800000; a += 4099 {
		vals = append(vals, math.Float32frombits(a))
	}
	for e := uint32(0x33000000); e < 0x38800000; e += 1 << 23 {
		for m := uint32(1 << 10); m < 1<<23; m += 1 << 12 {
			vals = append(vals, math.Float32frombits(e|m), math.Float32frombits(e|m+1), math.Float32frombits(e|m-1))
		}
	}
	for a := uint32(0x38800000); a < 0x7f800000; a += 99991 {
		vals = append(vals, math.Float32frombits(a))
	}
	for _, x := range vals[:len(vals):len(vals)] {
		vals = append(vals, -x)
	}
	dst := make([]byte, 2*len(vals))
	Float16.encode16(dst, vals)
	for i, x := range vals {
		if got, want := uint16(dst[2*i])|uint16(dst[2*i+1])<<8, f32ToF16Rare(math.Float32bits(x)); got != want {
			t.Fatalf("%g (%08x): %04x, want %04x", x, math.Float32bits(x), got, want)
		}
	}
}

// TestEncode16MatchesScalar: encode16's inline loops write the bits of
// f32ToF16 and f32ToBF16 (the scalar conversions FuzzFloat16 checks) for
// bit patterns across the whole float32 range, NaNs, infinities, the
// largest finite values and the rounding ties included.
func TestEncode16MatchesScalar(t *testing.T) {
	var bits []uint32
	for b := uint64(0); b <= math.MaxUint32; b += 65521 {
		bits = append(bits, uint32(b))
	}
	for _, b := range []uint32{0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffffffff, 0x7f7fffff,
		0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0x7f7f7fff, 0x7f7f8000, 0x38800000, 0x387fffff, 0x33000000, 0x33000001} {
		bits = append(bits, b, b|0x80000000)
	}
	for e := uint32(1); e < 0xff; e++ { // ties of both dtypes at every exponent
		for _, m := range []uint32{0x1000, 0x3000, 0x8000, 0x18000} {
			bits = append(bits, e<<23|m, e<<23|m+1, e<<23|m-1)
		}
	}
	vals := make([]float32, len(bits))
	for i, b := range bits {
		vals[i] = math.Float32frombits(b)
	}
	for _, d := range []DType{Float16, BFloat16} {
		dst := make([]byte, 2*len(vals))
		d.encode16(dst, vals)
		for i, x := range vals {
			want := f32ToBF16(x)
			if d == Float16 {
				want = f32ToF16(x)
			}
			if got := uint16(dst[2*i]) | uint16(dst[2*i+1])<<8; got != want {
				t.Fatalf("%s: %08x: %04x, want %04x", d, bits[i], got, want)
			}
		}
	}
}
