package weights

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"
)

// DType is a tensor element type, spelled as in safetensors headers.
type DType string

// Element types. Model checkpoints may hold only F32, F16 and BF16; I32 and I64 are
// accepted in standalone safetensors files (test fixtures: token ids, row indices).
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I32  DType = "I32"
	I64  DType = "I64"
)

// Size returns the size in bytes of one element, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case F32, I32:
		return 4
	case F16, BF16:
		return 2
	case I64:
		return 8
	}
	return 0
}

// isFloat reports whether d is a dtype valid for model weights.
func (d DType) isFloat() bool { return d == F32 || d == F16 || d == BF16 }

// Tensor is a named, shaped view of little-endian bytes, usually a slice of a
// read-only mmap: it stays valid until the Checkpoint or SafetensorsFile that made it
// is closed. Never write to it.
type Tensor struct {
	Name  string // canonical name in a Checkpoint, raw name in a SafetensorsFile
	DType DType
	Shape []int

	data []byte // NumElements()*DType.Size() bytes, little-endian
	file string // where the bytes came from, for errors
}

// NumElements returns the product of the shape (1 for a scalar).
func (t *Tensor) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Bytes returns the raw little-endian bytes. They alias the mapped file: read only,
// and do not keep them past Close.
func (t *Tensor) Bytes() []byte { return t.data }

// Float32 converts the tensor to a new float32 slice. F16 and BF16 convert exactly
// (subnormals, infinities and NaN included).
func (t *Tensor) Float32() ([]float32, error) {
	n := t.NumElements()
	if len(t.data) != n*t.DType.Size() {
		return nil, fmt.Errorf("%s: tensor %q: %d bytes for %d elements of %s", t.file, t.Name, len(t.data), n, t.DType)
	}
	out := make([]float32, n)
	b := t.data
	switch t.DType {
	case F32:
		if littleEndian {
			copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(out))), 4*n), b)
			break
		}
		parallelChunks(n, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			}
		})
	case F16:
		tab := f16Table()
		parallelChunks(n, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				out[i] = math.Float32frombits(tab[binary.LittleEndian.Uint16(b[2*i:])])
			}
		})
	case BF16:
		parallelChunks(n, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
			}
		})
	default:
		return nil, fmt.Errorf("%s: tensor %q: Float32 of dtype %s is not supported", t.file, t.Name, t.DType)
	}
	return out, nil
}

// littleEndian is true on the usual hosts, where F32 data is copied as is.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// f16Table is every fp16 value's fp32 bits (256 KiB), built once on first
// use and read-only after: a lookup is several times faster than decoding.
var f16Table = sync.OnceValue(func() *[1 << 16]uint32 {
	var t [1 << 16]uint32
	for h := range t {
		t[h] = f16ToF32Bits(uint16(h))
	}
	return &t
})

// parallelChunks runs fn over [0, n) in contiguous chunks on all cores when
// n is large (multi-gigabyte checkpoints convert at memory speed).
func parallelChunks(n int, fn func(lo, hi int)) {
	const minChunk = 1 << 20
	workers := min(runtime.GOMAXPROCS(0), n/minChunk)
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}

// Int32 converts an I32 or I64 tensor to a new int32 slice; an I64 value outside the
// int32 range is an error.
func (t *Tensor) Int32() ([]int32, error) {
	n := t.NumElements()
	if len(t.data) != n*t.DType.Size() {
		return nil, fmt.Errorf("%s: tensor %q: %d bytes for %d elements of %s", t.file, t.Name, len(t.data), n, t.DType)
	}
	out := make([]int32, n)
	b := t.data
	switch t.DType {
	case I32:
		for i := range out {
			out[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case I64:
		for i := range out {
			v := int64(binary.LittleEndian.Uint64(b[8*i:]))
			if v < math.MinInt32 || v > math.MaxInt32 {
				return nil, fmt.Errorf("%s: tensor %q: element %d = %d does not fit in int32", t.file, t.Name, i, v)
			}
			out[i] = int32(v)
		}
	default:
		return nil, fmt.Errorf("%s: tensor %q: Int32 of dtype %s is not supported", t.file, t.Name, t.DType)
	}
	return out, nil
}

// f16ToF32Bits converts IEEE binary16 bits to binary32 bits exactly.
func f16ToF32Bits(h uint16) uint32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or NaN (payload kept)
		return sign | 0xff<<23 | mant<<13
	case exp != 0: // normal
		return sign | (exp+127-15)<<23 | mant<<13
	case mant == 0: // ±0
		return sign
	}
	// Subnormal: value = mant * 2^-24; normalise.
	e := uint32(127 - 15 + 1)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return sign | e<<23 | (mant&0x3ff)<<13
}

// shapeEqual reports whether a and b are the same shape.
func shapeEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkedNumel returns the element count of shape and false when a dimension is
// negative or the count (times elemSize bytes) overflows int.
func checkedNumel(shape []int64, elemSize int) (int, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, false
		}
		n *= d
	}
	if elemSize > 0 && n > math.MaxInt64/int64(elemSize) {
		return 0, false
	}
	if n > math.MaxInt || n*int64(elemSize) > math.MaxInt {
		return 0, false
	}
	return int(n), true
}
