package weights

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync/atomic"
	"unsafe"
)

// Conversion between the checkpoint float types, for loaders that store GEMM
// weights in a GPU's compute type: converting once on the host, straight
// into the memory that is copied to the device, moves half the bytes of
// float32 and skips a float32 copy of every weight.
//
// Rounding is to nearest, ties to even, as CUDA's __float2half_rn and
// __float2bfloat16_rn do, so a weight converted here has the bits the
// device would give it from the same float32 value. A value that is NaN or
// infinite in the source, or finite but too large for the destination (it
// would become infinite), is an error: either makes every embedding NaN.

// RangeError reports a finite weight too large for the type it is converted
// to (float16's largest value is 65504).
type RangeError struct {
	File   string // the checkpoint file holding the tensor ("" for raw data)
	Tensor string // its name
	Index  int    // flat index of the first such element
	Value  float32
	To     DType
}

func (e *RangeError) Error() string {
	where := ""
	if e.File != "" {
		where = e.File + ": "
	}
	return fmt.Sprintf("%stensor %s: element %d (%v) is outside the %s range; load the model in a wider precision (fp32, or bf16 for float16 overflow)",
		where, quoteName(e.Tensor), e.Index, e.Value, e.To)
}

// ConvertInto writes the tensor's elements into dst as dt (F32, F16 or
// BF16); dst must hold exactly NumElements()*dt.Size() bytes. NaN or
// infinite elements are a *NonFiniteError, finite ones that overflow dt a
// *RangeError, both naming the file, tensor and element.
func (t *Tensor) ConvertInto(dst []byte, dt DType) error {
	if !t.DType.isFloat() || !dt.isFloat() {
		return fmt.Errorf("%s: tensor %s: conversion %s -> %s is not supported", t.file, quoteName(t.Name), t.DType, dt)
	}
	n := t.NumElements()
	if len(t.data) != n*t.DType.Size() {
		return fmt.Errorf("%s: tensor %s: %d bytes for %d elements of %s", t.file, quoteName(t.Name), len(t.data), n, t.DType)
	}
	if len(dst) != n*dt.Size() {
		return fmt.Errorf("%s: tensor %s: destination of %d bytes for %d elements of %s", t.file, quoteName(t.Name), len(dst), n, dt)
	}
	bad, err := convertChunks(dst, dt, t.data, t.DType, n)
	if err != nil {
		return fmt.Errorf("%s: tensor %s: %w", t.file, quoteName(t.Name), err)
	}
	if !bad {
		return nil
	}
	if i := t.firstNonFinite(); i >= 0 {
		return t.nonFiniteError(i, elemFloat32(t.data, t.DType, i))
	}
	i := firstOverflow(t.data, t.DType, dt, n)
	e := &RangeError{File: t.file, Tensor: t.Name, Index: i, To: dt}
	if i >= 0 {
		e.Value = elemFloat32(t.data, t.DType, i)
	}
	return e
}

// Convert writes the n elements of src (type st) into dst as dt, with the
// checks of Tensor.ConvertInto; errors name the element by its flat index.
func Convert(dst []byte, dt DType, src []byte, st DType) error {
	t := Tensor{Name: "(raw)", DType: st, Shape: []int{len(src) / max(st.Size(), 1)}, data: src}
	if st.Size() == 0 || len(src)%st.Size() != 0 {
		return fmt.Errorf("weights: convert: %d bytes of %s", len(src), st)
	}
	return t.ConvertInto(dst, dt)
}

// convertChunks converts over all cores for large tensors and reports
// whether some element was non-finite or overflowed.
func convertChunks(dst []byte, dt DType, src []byte, st DType, n int) (bool, error) {
	ds, ss := dt.Size(), st.Size()
	var bad atomic.Bool
	err := parallelChunks(n, func(lo, hi int) {
		if convertRange(dst[ds*lo:ds*hi], dt, src[ss*lo:ss*hi], st) {
			bad.Store(true)
		}
	})
	return bad.Load(), err
}

// convertRange converts one range; it reports whether it saw a bad element.
func convertRange(dst []byte, dt DType, src []byte, st DType) bool {
	if dt == F32 && uintptr(unsafe.Pointer(unsafe.SliceData(dst)))%4 != 0 {
		return convertUnaligned(dst, src, st)
	}
	switch {
	case st == dt:
		return copyChecked(dst, src, st)
	case dt == F32:
		out := bytesAsFloat32(dst)
		if st == F16 {
			return convF16(out, src, f16Table())
		}
		return convBF16(out, src)
	}
	// to F16 or BF16, from F32 or the other 16-bit type through float32 bits
	if st == F32 && dt == F16 {
		return f32sToF16(dst, src)
	}
	var tab *[1 << 16]uint32
	if st == F16 {
		tab = f16Table()
	}
	n := len(dst) / 2
	bad := false
	for i := range n {
		var u uint32
		switch st {
		case F32:
			u = binary.LittleEndian.Uint32(src[4*i:])
		case F16:
			u = tab[binary.LittleEndian.Uint16(src[2*i:])]
		default:
			u = uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16
		}
		var h uint16
		var b bool
		if dt == F16 {
			h, b = f32ToF16(u)
		} else {
			h, b = f32ToBF16(u)
		}
		bad = bad || b
		binary.LittleEndian.PutUint16(dst[2*i:], h)
	}
	return bad
}

// f32sToF16 is convertRange's float32 -> float16 loop (the common case:
// float32 checkpoints on an fp16 GPU). Values in float16's normal range
// take one predictable branch and the rounding of f32ToF16's default case;
// the rest go through f32ToF16.
func f32sToF16(dst, src []byte) bool {
	n := min(len(dst)/2, len(src)/4)
	if !littleEndian || n == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(src)))%4 != 0 || uintptr(unsafe.Pointer(unsafe.SliceData(dst)))%2 != 0 {
		return f32sToF16Bytes(dst[:2*n], src[:4*n])
	}
	s := unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(src))), n)
	d := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(dst))), n)
	var bad bool
	for i, u := range s {
		a := u & 0x7fffffff
		if a-0x38800000 < 0x477ff000-0x38800000 { // 2^-14 <= |x| < 65520
			d[i] = uint16(u>>16)&0x8000 | uint16((a+0xc8000fff+(a>>13)&1)>>13)
			continue
		}
		h, b := f32ToF16(u)
		d[i] = h
		bad = bad || b
	}
	return bad
}

// f32sToF16Bytes is f32sToF16 through byte loads and stores, for buffers
// that are not aligned for the typed loop (or a big-endian host).
func f32sToF16Bytes(dst, src []byte) bool {
	var bad bool
	for i := 0; 2*i+2 <= len(dst) && 4*i+4 <= len(src); i++ {
		h, b := f32ToF16(binary.LittleEndian.Uint32(src[4*i:]))
		binary.LittleEndian.PutUint16(dst[2*i:], h)
		bad = bad || b
	}
	return bad
}

// copyChecked copies same-typed elements, reporting a NaN or Inf. Copy and
// check are one pass over 8-byte words (copyWords, as convF32: a check
// after a memmove reads everything twice).
func copyChecked(dst, src []byte, st DType) bool {
	if st == F32 {
		return convF32(bytesAsFloat32(dst), src)
	}
	mask, lsb := uint64(f16ExpMask), uint64(f16ExpLSB)
	if st == BF16 {
		mask, lsb = bf16ExpMask, bf16ExpLSB
	}
	src = src[:len(dst)]
	acc, n := copyWords(dst, src, mask, lsb)
	for dst, src = dst[n:], src[n:]; len(dst) >= 2 && len(src) >= 2; dst, src = dst[2:], src[2:] {
		u := uint64(binary.LittleEndian.Uint16(src))
		acc |= u&(mask&0xffff) + lsb&0xffff
		binary.LittleEndian.PutUint16(dst, uint16(u))
	}
	return acc&top16 != 0
}

// f32ToF16 rounds float32 bits u to float16 (nearest, ties to even) and
// reports whether u was NaN, infinite or beyond float16's range (those give
// a NaN or infinity of the same sign).
func f32ToF16(u uint32) (uint16, bool) {
	sign := uint16(u>>16) & 0x8000
	a := u & 0x7fffffff
	switch {
	case a > 0x7f800000: // NaN: a quiet NaN
		return sign | 0x7e00, true
	case a >= 0x477ff000: // ±Inf, or at least 65520 (the midpoint above 65504): rounds to infinity
		return sign | 0x7c00, true
	case a < 0x38800000: // below 2^-14: a float16 subnormal or zero
		// Adding 0.5 puts the value in a binade whose ulp is 2^-24, float16's
		// subnormal step, so the FPU rounds it (to nearest even) to a multiple
		// of that step; the mantissa bits are then the float16 bits. A value
		// that rounds up to 2^-14 gives 0x400, the smallest normal.
		f := math.Float32frombits(a) + 0.5
		return sign | uint16(math.Float32bits(f)-0x3f000000), false
	default:
		// Re-bias the exponent (127 -> 15), add just under half of the 13
		// dropped bits plus the kept LSB (ties to even), shift; a carry out of
		// the mantissa steps the exponent, which is the correct rounding.
		a += 0xc8000000 + 0xfff + (a>>13)&1
		return sign | uint16(a>>13), false
	}
}

// f32ToBF16 rounds float32 bits u to bfloat16 (nearest, ties to even) and
// reports whether u was NaN, infinite or rounds to infinity.
func f32ToBF16(u uint32) (uint16, bool) {
	a := u & 0x7fffffff
	if a > 0x7f800000 {
		return uint16(u>>16) | 0x40, true // quiet NaN
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16), a >= 0x7f7f8000
}

// firstOverflow is the index of the first finite element of src that
// overflows dt, or -1 (the error path: one element at a time).
func firstOverflow(src []byte, st, dt DType, n int) int {
	for i := range n {
		v := elemFloat32(src, st, i)
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			continue
		}
		var bad bool
		switch dt {
		case F16:
			_, bad = f32ToF16(math.Float32bits(v))
		case BF16:
			_, bad = f32ToBF16(math.Float32bits(v))
		}
		if bad {
			return i
		}
	}
	return -1
}

// elemFloat32 is element i of little-endian src of type st, as float32.
func elemFloat32(src []byte, st DType, i int) float32 {
	switch st {
	case F32:
		return math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	case F16:
		return math.Float32frombits(f16ToF32Bits(binary.LittleEndian.Uint16(src[2*i:])))
	default:
		return math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}

// bytesAsFloat32 views 4-byte-aligned b as float32s.
func bytesAsFloat32(b []byte) []float32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

// convertUnaligned converts to float32 bytes that are not 4-byte aligned
// (never the case for the loader's buffers; kept for Convert's callers).
func convertUnaligned(dst, src []byte, st DType) bool {
	bad := false
	for i := range len(dst) / 4 {
		v := elemFloat32(src, st, i)
		bad = bad || math.IsNaN(float64(v)) || math.IsInf(float64(v), 0)
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
	return bad
}
