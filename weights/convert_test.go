package weights

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
)

// refRound16 rounds float32 bits u to the 16-bit type whose positive values,
// in increasing order, are the float32 values vals (bit pattern = index;
// the last entry is +Inf), to nearest with ties to the even pattern,
// computed in float64 from the table alone: an oracle independent of
// f32ToF16's bit arithmetic. ok is false for NaN, infinities and values
// that round to infinity.
func refRound16(u uint32, vals []float64) (uint16, bool) {
	sign := uint16(u>>16) & 0x8000
	x := math.Abs(float64(math.Float32frombits(u)))
	if math.IsNaN(x) {
		return sign | 0x7fff, false
	}
	inf := len(vals) - 1
	// first index with vals[i] > x; the candidates are i-1 and i
	i := sort.Search(len(vals), func(i int) bool { return vals[i] > x })
	lo := i - 1
	if lo >= inf {
		return sign | uint16(inf), false
	}
	hi := lo + 1
	var h int
	switch dl, dh := x-vals[lo], vals[hi]-x; {
	case hi == inf:
		// Past the largest finite value, rounding follows the binade's step:
		// the midpoint to the next power of two rounds up (to infinity).
		step := vals[lo] - vals[lo-1]
		if x >= vals[lo]+step/2 {
			return sign | uint16(inf), false
		}
		h = lo
	case dl < dh:
		h = lo
	case dh < dl:
		h = hi
	default:
		h = lo
		if lo%2 == 1 {
			h = hi
		}
	}
	return sign | uint16(h), true
}

func f16Values() []float64 {
	v := make([]float64, 0x7c01)
	for h := range v {
		v[h] = float64(math.Float32frombits(f16ToF32Bits(uint16(h))))
	}
	return v
}

func bf16Values() []float64 {
	v := make([]float64, 0x7f81)
	for h := range v {
		v[h] = float64(math.Float32frombits(uint32(h) << 16))
	}
	return v
}

// probes are float32 bit patterns where rounding is decided: every 16-bit
// value's float32 image, the midpoints between neighbours and one float32
// ulp either side, the extremes, and random patterns.
func probes(vals []float64, r *rand.Rand) []uint32 {
	var p []uint32
	add := func(u uint32) { p = append(p, u, u^0x80000000, u+1, u-1) }
	for h := 0; h+1 < len(vals); h++ {
		add(math.Float32bits(float32(vals[h])))
		if h+2 < len(vals) {
			add(math.Float32bits(float32((vals[h] + vals[h+1]) / 2))) // exact in float32 for both types
		}
	}
	for _, u := range []uint32{0, 0x7f800000, 0x7f7fffff, 0x7fc00000, 0x7f800001, 0x477fefff, 0x477ff000, 0x477fe000,
		0x7f7f7fff, 0x7f7f8000, 0x38800000, 0x387fffff, 0x33000000, 0x33000001, 0x32ffffff, 1} {
		add(u)
	}
	for range 2_000_000 {
		p = append(p, r.Uint32())
	}
	return p
}

func TestF32ToF16MatchesOracle(t *testing.T) {
	matchesOracle(t, "f32ToF16", f32ToF16, f16Values(), 0x7c00, 0x3ff, 1)
}

func TestF32ToBF16MatchesOracle(t *testing.T) {
	matchesOracle(t, "f32ToBF16", f32ToBF16, bf16Values(), 0x7f80, 0x7f, 3)
}

// matchesOracle checks round (f32ToF16 or f32ToBF16) against refRound16 over
// probes of vals; NaNs must give a NaN (exponent bits exp all set, some
// mantissa bit of mant) flagged bad.
func matchesOracle(t *testing.T, name string, round func(uint32) (uint16, bool), vals []float64, exp, mant uint16, seed uint64) {
	t.Helper()
	bad := 0
	for _, u := range probes(vals, rand.New(rand.NewPCG(seed, seed+1))) {
		want, wantOK := refRound16(u, vals)
		got, gotBad := round(u)
		if math.IsNaN(float64(math.Float32frombits(u))) {
			if got&exp != exp || got&mant == 0 || !gotBad {
				t.Errorf("%s(%#08x) = %#04x bad=%v, want a NaN, bad", name, u, got, gotBad)
			}
			continue
		}
		if got != want || gotBad == wantOK {
			if bad++; bad < 10 {
				t.Errorf("%s(%#08x = %g) = %#04x bad=%v, want %#04x bad=%v", name, u, math.Float32frombits(u), got, gotBad, want, !wantOK)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d mismatches", bad)
	}
}

// tensorOf builds a tensor of the given type holding vals (rounded to it by
// the oracle's functions, which TestF32ToF16MatchesOracle checks).
func tensorOf(st DType, vals []float32) *Tensor {
	var b []byte
	for _, v := range vals {
		u := math.Float32bits(v)
		switch st {
		case F32:
			b = binary.LittleEndian.AppendUint32(b, u)
		case F16:
			h, _ := f32ToF16(u)
			b = binary.LittleEndian.AppendUint16(b, h)
		case BF16:
			h, _ := f32ToBF16(u)
			b = binary.LittleEndian.AppendUint16(b, h)
		}
	}
	return &Tensor{Name: "w", DType: st, Shape: []int{len(vals)}, data: b, file: "m.safetensors"}
}

// ConvertInto gives, for every pair of types, the destination type's
// rounding of the source's exact float32 value, on the parallel path too
// (more than two chunks' worth of elements).
func TestConvertIntoEveryPair(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	vals := make([]float32, 2<<20+7)
	for i := range vals {
		switch i % 4 {
		case 0:
			vals[i] = float32(r.NormFloat64())
		case 1:
			vals[i] = float32(r.NormFloat64() * 1e-6) // float16 subnormals
		case 2:
			vals[i] = float32(r.NormFloat64() * 1e4)
		default:
			vals[i] = math.Float32frombits(r.Uint32() & 0x3fffffff) // |x| < 2, any mantissa
		}
	}
	types := []DType{F32, F16, BF16}
	for _, st := range types {
		src := tensorOf(st, vals)
		for _, dt := range types {
			dst := make([]byte, len(vals)*dt.Size())
			if err := src.ConvertInto(dst, dt); err != nil {
				t.Fatalf("%s -> %s: %v", st, dt, err)
			}
			mismatch := 0
			for i := range vals {
				exact := math.Float32bits(elemFloat32(src.data, st, i))
				var want uint32
				var got uint32
				switch dt {
				case F32:
					want, got = exact, binary.LittleEndian.Uint32(dst[4*i:])
				case F16:
					h, _ := f32ToF16(exact)
					want, got = uint32(h), uint32(binary.LittleEndian.Uint16(dst[2*i:]))
				case BF16:
					h, _ := f32ToBF16(exact)
					want, got = uint32(h), uint32(binary.LittleEndian.Uint16(dst[2*i:]))
				}
				if got != want {
					mismatch++
				}
			}
			if mismatch > 0 {
				t.Errorf("%s -> %s: %d elements differ from the scalar rounding", st, dt, mismatch)
			}
		}
	}
}

// A NaN or Inf in the source, or a finite value past the destination's
// range, is an error naming the file, tensor and element; sizes are checked.
func TestConvertIntoErrors(t *testing.T) {
	vals := make([]float32, 100)
	for i := range vals {
		vals[i] = float32(i) / 10
	}
	nan := append([]float32(nil), vals...)
	nan[37] = float32(math.NaN())
	var nf *NonFiniteError
	for _, st := range []DType{F32, F16, BF16} {
		for _, dt := range []DType{F32, F16, BF16} {
			err := tensorOf(st, nan).ConvertInto(make([]byte, 100*dt.Size()), dt)
			if !errors.As(err, &nf) || nf.Index != 37 || nf.File != "m.safetensors" {
				t.Errorf("%s -> %s with a NaN at 37: %v, want a NonFiniteError at 37", st, dt, err)
			}
		}
	}
	big := append([]float32(nil), vals...)
	big[60] = 70000 // past float16's 65504
	var re *RangeError
	for _, st := range []DType{F32, BF16} {
		err := tensorOf(st, big).ConvertInto(make([]byte, 200), F16)
		if !errors.As(err, &re) || re.Index != 60 || re.To != F16 || !strings.Contains(err.Error(), "m.safetensors") {
			t.Errorf("%s -> F16 with 70000 at 60: %v, want a RangeError at 60", st, err)
		}
	}
	if err := tensorOf(F32, big).ConvertInto(make([]byte, 200), BF16); err != nil {
		t.Errorf("70000 -> BF16: %v, want no error", err)
	}
	huge := append([]float32(nil), vals...)
	huge[5] = math.MaxFloat32
	if err := tensorOf(F32, huge).ConvertInto(make([]byte, 200), BF16); !errors.As(err, &re) || re.Index != 5 {
		t.Errorf("MaxFloat32 -> BF16: %v, want a RangeError at 5", err)
	}
	if err := tensorOf(F32, vals).ConvertInto(make([]byte, 199), F16); err == nil {
		t.Errorf("short destination: no error")
	}
	if err := tensorOf(F32, vals).ConvertInto(make([]byte, 800), I64); err == nil {
		t.Errorf("I64 destination: no error")
	}
	if err := Convert(make([]byte, 8), F16, f32Bytes(1, 2, 3), F32); err == nil {
		t.Errorf("Convert with a short destination: no error")
	}
	got := make([]byte, 6)
	if err := Convert(got, F16, f32Bytes(1, -2, 0.5), F32); err != nil || string(got) != string(u16Bytes(0x3c00, 0xc000, 0x3800)) {
		t.Errorf("Convert(1, -2, 0.5) = %x, %v", got, err)
	}
}

// A float32 destination that is not 4-byte aligned converts the same.
func TestConvertIntoUnaligned(t *testing.T) {
	vals := []float32{1, -2.5, 3e-8, 65504, 1e-3}
	for _, st := range []DType{F32, F16, BF16} {
		src := tensorOf(st, vals)
		buf := make([]byte, 4*len(vals)+1)
		if err := src.ConvertInto(buf[1:], F32); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
		for i := range vals {
			got := math.Float32frombits(binary.LittleEndian.Uint32(buf[1+4*i:]))
			if want := elemFloat32(src.data, st, i); got != want {
				t.Errorf("%s element %d: %v, want %v", st, i, got, want)
			}
		}
	}
}

func BenchmarkConvertF32ToF16(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	vals := make([]float32, 16<<20)
	for i := range vals {
		vals[i] = float32(r.NormFloat64() * 0.05)
	}
	src := tensorOf(F32, vals)
	dst := make([]byte, 2*len(vals))
	b.SetBytes(int64(len(src.data)))
	for b.Loop() {
		if err := src.ConvertInto(dst, F16); err != nil {
			b.Fatal(err)
		}
	}
}

// The typed float32 -> float16 loop and the byte loop used for unaligned
// buffers agree with f32ToF16 element by element, bad flags included.
func TestF32sToF16Paths(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	n := 100_003
	src := make([]byte, 4*n+1)
	for i := 0; i+4 <= len(src); i += 4 {
		u := r.Uint32()
		if i%12 == 0 {
			u = math.Float32bits(float32(r.NormFloat64()))
		}
		binary.LittleEndian.PutUint32(src[i:], u)
	}
	for _, off := range []int{0, 1} { // aligned: the typed loop; off by one: bytes
		s := src[off : off+4*n]
		d := make([]byte, 2*n+1)[off : off+2*n]
		bad := f32sToF16(d, s)
		wantBad := false
		for i := range n {
			h, b := f32ToF16(binary.LittleEndian.Uint32(s[4*i:]))
			wantBad = wantBad || b
			if got := binary.LittleEndian.Uint16(d[2*i:]); got != h {
				t.Fatalf("offset %d, element %d (%#08x): %#04x, want %#04x", off, i, binary.LittleEndian.Uint32(s[4*i:]), got, h)
			}
		}
		if bad != wantBad {
			t.Errorf("offset %d: bad %v, want %v", off, bad, wantBad)
		}
	}
	ok := make([]byte, 8)
	binary.LittleEndian.PutUint32(ok, math.Float32bits(1.5))
	binary.LittleEndian.PutUint32(ok[4:], math.Float32bits(-3e-6))
	if f32sToF16(make([]byte, 4), ok) {
		t.Errorf("finite in-range values flagged bad")
	}
}

func BenchmarkConvertF16ToF16(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 9))
	vals := make([]float32, 16<<20)
	for i := range vals {
		vals[i] = float32(r.NormFloat64() * 0.05)
	}
	src := tensorOf(F16, vals)
	dst := make([]byte, len(src.data))
	b.SetBytes(int64(len(src.data)))
	for b.Loop() {
		if err := src.ConvertInto(dst, F16); err != nil {
			b.Fatal(err)
		}
	}
}
