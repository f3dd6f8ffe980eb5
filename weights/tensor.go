package weights

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
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
	raw  string // the name in that file (Name may be the canonical one), for errors
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

// Float32 converts the tensor to a new float32 slice. F16 and BF16 convert
// exactly (subnormals included). A NaN or infinite element is an error, a
// *NonFiniteError naming the file, the tensor and the first bad element: one
// such weight makes every embedding NaN, or finite but wrong. The check is
// folded into the conversion pass (convF32, convF16, convBF16) and costs
// little next to it.
func (t *Tensor) Float32() ([]float32, error) {
	out, sawBad, err := t.float32()
	if err != nil {
		return nil, err
	}
	if sawBad {
		i := t.firstNonFinite()
		return nil, t.nonFiniteError(i, out[i])
	}
	return out, nil
}

// float32 converts without rejecting non-finite values and reports whether
// it saw one; its error is only for a bad dtype or size.
func (t *Tensor) float32() (out []float32, sawBad bool, err error) {
	if !t.DType.isFloat() {
		return nil, false, fmt.Errorf("%s: tensor %s: Float32 of dtype %s is not supported", t.file, quoteName(t.Name), t.DType)
	}
	n := t.NumElements()
	if len(t.data) != n*t.DType.Size() {
		return nil, false, fmt.Errorf("%s: tensor %s: %d bytes for %d elements of %s", t.file, quoteName(t.Name), len(t.data), n, t.DType)
	}
	out = make([]float32, n)
	b := t.data
	var bad atomic.Bool // some chunk saw a NaN or Inf
	var ferr error
	switch t.DType {
	case F32:
		ferr = parallelChunks(n, func(lo, hi int) {
			if convF32(out[lo:hi], b[4*lo:4*hi]) {
				bad.Store(true)
			}
		})
	case F16:
		tab := f16Table()
		ferr = parallelChunks(n, func(lo, hi int) {
			if convF16(out[lo:hi], b[2*lo:2*hi], tab) {
				bad.Store(true)
			}
		})
	case BF16:
		ferr = parallelChunks(n, func(lo, hi int) {
			if convBF16(out[lo:hi], b[2*lo:2*hi]) {
				bad.Store(true)
			}
		})
	}
	if ferr != nil {
		return nil, false, fmt.Errorf("%s: tensor %s: %w", t.file, quoteName(t.Name), ferr)
	}
	return out, bad.Load(), nil
}

// NonFiniteError reports a NaN or infinite element in a tensor.
type NonFiniteError struct {
	File   string // the checkpoint file holding the tensor
	Tensor string // its name (canonical in a Checkpoint)
	Stored string // its name in the file when that differs, else ""
	Index  int    // flat (row-major) index of the first bad element
	Coords []int  // the same index per dimension
	Value  float32
}

func (e *NonFiniteError) Error() string {
	name := quoteName(e.Tensor)
	if e.Stored != "" {
		name += " (stored as " + quoteName(e.Stored) + ")"
	}
	return fmt.Sprintf("%s: tensor %s: element %d %v is %v; a checkpoint with non-finite weights gives NaN or wrong embeddings",
		e.File, name, e.Index, e.Coords, e.Value)
}

// nonFiniteError builds the error for the bad element at flat index i.
func (t *Tensor) nonFiniteError(i int, v float32) error {
	coords := make([]int, len(t.Shape))
	for d, r := len(t.Shape)-1, i; d >= 0; d-- {
		if t.Shape[d] > 0 {
			coords[d], r = r%t.Shape[d], r/t.Shape[d]
		}
	}
	e := &NonFiniteError{File: t.file, Tensor: t.Name, Index: i, Coords: coords, Value: v}
	if t.raw != "" && t.raw != t.Name {
		e.Stored = t.raw
	}
	return e
}

// firstNonFinite returns the index of the first NaN or Inf of a float
// tensor, or -1. It scans the raw bytes one element at a time: it runs only
// on the error path, after the conversion saw a non-finite value.
func (t *Tensor) firstNonFinite() int {
	b := t.data
	switch t.DType {
	case F32:
		for i := 0; 4*i+4 <= len(b); i++ {
			if binary.LittleEndian.Uint32(b[4*i:])&0x7f800000 == 0x7f800000 {
				return i
			}
		}
	case F16:
		for i := 0; 2*i+2 <= len(b); i++ {
			if binary.LittleEndian.Uint16(b[2*i:])&0x7c00 == 0x7c00 {
				return i
			}
		}
	case BF16:
		for i := 0; 2*i+2 <= len(b); i++ {
			if binary.LittleEndian.Uint16(b[2*i:])&0x7f80 == 0x7f80 {
				return i
			}
		}
	}
	return -1
}

// NaN and ±Inf are the values whose exponent bits are all set. The
// conversion loops test several values at once in a uint64 ("SWAR"): per
// lane, (bits & expMask) + expLSB carries into the lane's top (sign) bit
// exactly when every exponent bit is set, and no lane carries into the
// next (the largest lane sum is the sign bit itself). OR-ing the sums over
// a chunk and masking the top bits leaves a non-zero word exactly when some
// value was non-finite.
const (
	f32ExpMask  = 0x7f800000_7f800000
	f32ExpLSB   = 0x00800000_00800000
	f32Top      = 0x80000000_80000000
	f16ExpMask  = 0x7c00_7c00_7c00_7c00
	f16ExpLSB   = 0x0400_0400_0400_0400
	bf16ExpMask = 0x7f80_7f80_7f80_7f80
	bf16ExpLSB  = 0x0080_0080_0080_0080
	top16       = 0x8000_8000_8000_8000
)

// convF32 copies src (little-endian F32) into dst and reports whether it
// held a NaN or Inf. Copy and check are one pass over 8-byte words (a
// separate check after a memmove measured slower: the check then reads
// everything twice).
func convF32(dst []float32, src []byte) bool {
	if !littleEndian {
		var acc uint32
		for i := range dst {
			u := binary.LittleEndian.Uint32(src[4*i:])
			acc |= u&0x7f800000 + 0x00800000
			dst[i] = math.Float32frombits(u)
		}
		return acc&0x80000000 != 0
	}
	// d views dst as bytes: dst[lo:] need not be 8-byte aligned, so words
	// are stored through byte slices (one unaligned MOVQ on amd64/arm64).
	d := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(dst))), 4*len(dst))
	src = src[:len(d)]
	acc, n := copyWords(d, src, f32ExpMask, f32ExpLSB)
	for d, src = d[n:], src[n:]; len(d) >= 4 && len(src) >= 4; d, src = d[4:], src[4:] {
		u := binary.LittleEndian.Uint32(src)
		acc |= uint64(u&0x7f800000 + 0x00800000)
		binary.LittleEndian.PutUint32(d, u)
	}
	return acc&f32Top != 0
}

// copyWords copies the leading multiple of 32 bytes of src into dst, 8
// bytes at a time, and returns how many it copied and the OR over the words
// of w&mask + lsb: with mask and lsb an element type's exponent bits and
// their lowest bit in every lane, the lanes' top bits of the result are set
// where some element was NaN or infinite (see the constants above).
func copyWords(dst, src []byte, mask, lsb uint64) (acc uint64, n int) {
	var a0, a1 uint64
	for len(dst)-n >= 32 && len(src)-n >= 32 {
		s, d := src[n:n+32], dst[n:n+32]
		w0 := binary.LittleEndian.Uint64(s[0:])
		w1 := binary.LittleEndian.Uint64(s[8:])
		w2 := binary.LittleEndian.Uint64(s[16:])
		w3 := binary.LittleEndian.Uint64(s[24:])
		a0 |= (w0&mask + lsb) | (w1&mask + lsb)
		a1 |= (w2&mask + lsb) | (w3&mask + lsb)
		binary.LittleEndian.PutUint64(d[0:], w0)
		binary.LittleEndian.PutUint64(d[8:], w1)
		binary.LittleEndian.PutUint64(d[16:], w2)
		binary.LittleEndian.PutUint64(d[24:], w3)
		n += 32
	}
	return a0 | a1, n
}

// convF16 converts src (little-endian F16) into dst through tab and reports
// whether it held a NaN or Inf.
func convF16(dst []float32, src []byte, tab *[1 << 16]uint32) bool {
	var acc uint64
	for len(dst) >= 4 && len(src) >= 8 {
		w := binary.LittleEndian.Uint64(src)
		acc |= w&f16ExpMask + f16ExpLSB
		d := dst[:4:4]
		d[0] = math.Float32frombits(tab[uint16(w)])
		d[1] = math.Float32frombits(tab[uint16(w>>16)])
		d[2] = math.Float32frombits(tab[uint16(w>>32)])
		d[3] = math.Float32frombits(tab[uint16(w>>48)])
		dst, src = dst[4:], src[8:]
	}
	for i := range dst {
		h := binary.LittleEndian.Uint16(src[2*i:])
		acc |= uint64(h&0x7c00 + 0x0400)
		dst[i] = math.Float32frombits(tab[h])
	}
	return acc&top16 != 0
}

// convBF16 converts src (little-endian BF16) into dst and reports whether it
// held a NaN or Inf.
func convBF16(dst []float32, src []byte) bool {
	var acc uint64
	for len(dst) >= 4 && len(src) >= 8 {
		w := binary.LittleEndian.Uint64(src)
		acc |= w&bf16ExpMask + bf16ExpLSB
		d := dst[:4:4]
		d[0] = math.Float32frombits(uint32(w) << 16)
		d[1] = math.Float32frombits(uint32(w>>16) << 16)
		d[2] = math.Float32frombits(uint32(w>>32) << 16)
		d[3] = math.Float32frombits(uint32(w>>48) << 16)
		dst, src = dst[4:], src[8:]
	}
	for i := range dst {
		h := binary.LittleEndian.Uint16(src[2*i:])
		acc |= uint64(h&0x7f80 + 0x0080)
		dst[i] = math.Float32frombits(uint32(h) << 16)
	}
	return acc&top16 != 0
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
func parallelChunks(n int, fn func(lo, hi int)) error {
	const minChunk = 1 << 20
	workers := min(runtime.GOMAXPROCS(0), n/minChunk)
	if workers <= 1 {
		return faultGuard(func() { fn(0, n) })
	}
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := 0; w < workers; w++ {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Go(func() { errs[w] = faultGuard(func() { fn(lo, hi) }) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// errFileChanged marks a fault on a mapped checkpoint: the file was cut
// short (or rewritten) while it was read, as "cp new old" does in place.
var errFileChanged = errors.New("the file changed while it was read (truncated or rewritten in place?)")

// faultGuard runs fn, turning a fault on mapped memory into an error: the
// kernel sends SIGBUS for pages past a mapped file's new end, which would
// otherwise end the process. It must run on the goroutine that reads.
func faultGuard(fn func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(interface{ Addr() uintptr }); ok {
				err = fmt.Errorf("%w: %v", errFileChanged, f)
				return
			}
			panic(r)
		}
	}()
	fn()
	return nil
}

// Int32 converts an I32 or I64 tensor to a new int32 slice; an I64 value outside the
// int32 range is an error.
func (t *Tensor) Int32() ([]int32, error) {
	n := t.NumElements()
	if len(t.data) != n*t.DType.Size() {
		return nil, fmt.Errorf("%s: tensor %s: %d bytes for %d elements of %s", t.file, quoteName(t.Name), len(t.data), n, t.DType)
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
				return nil, fmt.Errorf("%s: tensor %s: element %d = %d does not fit in int32", t.file, quoteName(t.Name), i, v)
			}
			out[i] = int32(v)
		}
	default:
		return nil, fmt.Errorf("%s: tensor %s: Int32 of dtype %s is not supported", t.file, quoteName(t.Name), t.DType)
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
