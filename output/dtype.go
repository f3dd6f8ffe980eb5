package output

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// DType is how an output stores the values of its embedding columns. Rows
// are always given and read back as float32; a narrower dtype halves the
// bytes on disk at the cost of precision (float16: 11 significant bits,
// range ±65504; bfloat16: 8 significant bits, float32's range).
//
// Conversion rounds to nearest, ties to even (what numpy's astype, PyTorch's
// .half()/.bfloat16() and CUDA's __float2half_rn do). Values too small for
// the dtype become its subnormals or a signed zero, as in those libraries.
// A finite value that would round to ±Inf is refused (ErrOutOfRange): an
// output never holds a silent Inf, and clamping would store a wrong value.
//
// On disk (see doc.go):
//
//	dtype     parquet leaf                                  npy descr
//	float32   FLOAT                                         '<f4'
//	float16   FIXED_LEN_BYTE_ARRAY(2), logical type FLOAT16  '<f2'
//	bfloat16  FIXED_LEN_BYTE_ARRAY(2), no logical type       '|V2'
//
// bfloat16 has no parquet or numpy type: its 2-byte values are stored raw
// (little-endian, the top half of the float32 bits) with the dtype in the
// layout metadata, as types a reader cannot mistake for numbers (binary,
// void) rather than as integers a reader would silently average.
type DType string

const (
	Float32  DType = "float32"
	Float16  DType = "float16"
	BFloat16 DType = "bfloat16"
)

// ParseDType accepts float32, float16 or bfloat16 (case-insensitive; also
// fp32, fp16, f2, f4, half, bf16).
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "float32", "fp32", "f4", "single":
		return Float32, nil
	case "float16", "fp16", "f2", "half":
		return Float16, nil
	case "bfloat16", "bf16":
		return BFloat16, nil
	}
	return "", fmt.Errorf("output: unknown dtype %q (want %s, %s or %s)", cut(s, 200), Float32, Float16, BFloat16)
}

// orDefault returns d, or Float32 for the zero DType.
func (d DType) orDefault() DType {
	if d == "" {
		return Float32
	}
	return d
}

func (d DType) valid() bool {
	switch d {
	case "", Float32, Float16, BFloat16:
		return true
	}
	return false
}

// size is the bytes per stored value.
func (d DType) size() int {
	if d.orDefault() == Float32 {
		return 4
	}
	return 2
}

// npyDescr is the NPY header's descr of d.
func (d DType) npyDescr() string {
	switch d.orDefault() {
	case Float16:
		return "<f2"
	case BFloat16:
		return "|V2"
	}
	return "<f4"
}

// ErrOutOfRange is returned (wrapped) by Write for a finite value that the
// output's dtype cannot hold (it would round to ±Inf: |x| >= 65520 for
// float16, beyond about 3.39e38 for bfloat16).
var ErrOutOfRange = errors.New("value out of range for the output dtype")

// firstOutOfRange returns the index of the first value of v (all finite)
// that rounds to ±Inf in d, or -1.
func (d DType) firstOutOfRange(v []float32) int {
	var limit uint32 // smallest |x| bits that round to Inf
	switch d.orDefault() {
	case Float16:
		limit = 0x477ff000 // 65520: halfway between 65504 and 65536, ties to even (65536 = Inf)
	case BFloat16:
		limit = 0x7f7f8000 // halfway between bf16's max 0x7f7f and Inf, ties to even
	default:
		return -1
	}
	for i, x := range v {
		if math.Float32bits(x)&0x7fffffff >= limit {
			return i
		}
	}
	return -1
}

// rangeName describes d's finite range for errors.
func (d DType) rangeName() string {
	if d.orDefault() == Float16 {
		return "float16 (largest finite 65504)"
	}
	return "bfloat16 (largest finite 3.3895e38)"
}

// f32ToF16 converts x to IEEE 754 binary16 bits, rounding to nearest even.
// NaN stays NaN (quiet), ±Inf and values that round beyond 65504 become ±Inf.
func f32ToF16(x float32) uint16 {
	b := math.Float32bits(x)
	if a := b & 0x7fffffff; a-0x38800000 < 0x477ff000-0x38800000 {
		// The common case, a normal result: |x| in [2^-14, 65520). Rebias
		// the exponent and round the 13 dropped bits to nearest even; a
		// carry into the exponent is right.
		a -= (127 - 15) << 23
		a += 0xfff + (a>>13)&1
		return uint16(b>>16)&0x8000 | uint16(a>>13)
	}
	return f32ToF16Rare(b)
}

// f32ToF16Rare is f32ToF16 for the bits b of zeros, subnormal results,
// overflows, Inf and NaN (and is correct for any b).
func f32ToF16Rare(b uint32) uint16 {
	sign := uint16(b>>16) & 0x8000
	e32 := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if e32 == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	exp := e32 - 127 + 15 // binary16 biased exponent
	if exp >= 0x1f {
		return sign | 0x7c00
	}
	if exp <= 0 {
		// Subnormal (or zero): m = (1.mant) * 2^(e+24), i.e. the 24-bit
		// significand shifted right by 14-exp.
		if exp < -10 {
			return sign // below half the smallest subnormal (2^-25)
		}
		full := mant | 0x800000 // e32 > 0 here: float32 subnormals are below 2^-25
		shift := uint(14 - exp)
		m := full >> shift
		rem := full & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && m&1 == 1) {
			m++ // may carry into the smallest normal, 0x0400: still right
		}
		return sign | uint16(m)
	}
	h := uint16(exp)<<10 | uint16(mant>>13)
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // a carry into the exponent is right; up to 0x7c00 (Inf)
	}
	return sign | h
}

// f16ToF32 converts binary16 bits to float32 (exactly).
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: mant * 2^-24, normalized for float32.
	e := uint32(127 - 15 + 1)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
}

// f32ToBF16 converts x to bfloat16 bits (the top 16 bits of a float32),
// rounding to nearest even. NaN stays a quiet NaN.
func f32ToBF16(x float32) uint16 {
	b := math.Float32bits(x)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// bf16ToF32 converts bfloat16 bits to float32 (exactly).
func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// encode16 converts vals into dst (2 bytes per value, little-endian) as d,
// which is Float16 or BFloat16. dst must hold 2*len(vals) bytes. The
// float16 loop carries f32ToF16's common case inline (f32ToF16 is too
// large for the compiler to inline, and the call costs 4 times the
// conversion); other values go to f32ToF16Rare. f32ToBF16 is inlined.
func (d DType) encode16(dst []byte, vals []float32) {
	if len(vals) == 0 {
		return
	}
	dst = dst[:2*len(vals)]
	if d == Float16 {
		for i, x := range vals {
			b := math.Float32bits(x)
			var h uint16
			if a := b & 0x7fffffff; a-0x38800000 < 0x477ff000-0x38800000 {
				a -= (127 - 15) << 23
				a += 0xfff + (a>>13)&1
				h = uint16(b>>16)&0x8000 | uint16(a>>13)
			} else if a < 0x38800000 {
				// A subnormal result or zero: adding 0.5 (float32
				// addition rounds to nearest even) leaves the half's
				// 10 mantissa bits, rounded, at the bottom; a carry
				// into the smallest normal, 0x0400, is right.
				h = uint16(b>>16)&0x8000 | uint16(math.Float32bits(math.Float32frombits(a)+0.5)-0x3f000000)
			} else {
				h = f32ToF16Rare(b)
			}
			binary.LittleEndian.PutUint16(dst[2*i:], h)
		}
		return
	}
	for i, x := range vals {
		binary.LittleEndian.PutUint16(dst[2*i:], f32ToBF16(x)) // inlined
	}
}

// decode16 converts little-endian 2-byte values of d from src into dst.
func (d DType) decode16(dst []float32, src []byte) {
	if len(dst) == 0 {
		return
	}
	_ = src[2*len(dst)-1]
	if d == Float16 {
		for i := range dst {
			dst[i] = f16ToF32(uint16(src[2*i]) | uint16(src[2*i+1])<<8)
		}
		return
	}
	for i := range dst {
		dst[i] = bf16ToF32(uint16(src[2*i]) | uint16(src[2*i+1])<<8)
	}
}

// firstNonFinite16 returns the index of the first NaN or ±Inf among the
// little-endian 2-byte values of d in b, or -1.
func (d DType) firstNonFinite16(b []byte) int {
	exp := uint16(0x7c00) // float16: 5 exponent bits
	if d == BFloat16 {
		exp = 0x7f80 // bfloat16: float32's 8
	}
	for i := 0; i+2 <= len(b); i += 2 {
		if (uint16(b[i])|uint16(b[i+1])<<8)&exp == exp {
			return i / 2
		}
	}
	return -1
}
