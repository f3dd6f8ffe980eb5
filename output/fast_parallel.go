package output

import (
	"math"

	"github.com/esm2go/esm2go/internal/par"
)

// Per-value work on a large row (the finiteness and range checks, the
// conversion to a 2-byte dtype) is split over the CPUs: the writer's
// goroutine would otherwise do it alone, at a fraction of what the disk
// takes. A row smaller than parallelMin values is done in one piece; the
// goroutines end before the call returns.
const parallelMin = 1 << 15 // 128 KiB of float32: well above a goroutine's start-up cost

// parallelDo calls do on consecutive ranges covering [0, n), at once.
func parallelDo(n int, do func(lo, hi int)) { par.Do(n, parallelMin, do) }

// parallelFirst returns the smallest index that find reports over
// consecutive ranges covering [0, n) (find returns an index in its range,
// or -1), or -1.
func parallelFirst(n int, find func(lo, hi int) int) int {
	p := par.Pieces(n, parallelMin)
	if p == 1 {
		return find(0, n)
	}
	found := make([]int, p)
	for i := range found {
		found[i] = -1
	}
	step := (n + p - 1) / p
	parallelDo(n, func(lo, hi int) { found[lo/step] = find(lo, hi) })
	for _, j := range found {
		if j >= 0 {
			return j
		}
	}
	return -1
}

// firstBad returns the index of the first value of v that is NaN, ±Inf
// or rounds to ±Inf in d (all three when d is Float32: NaN and ±Inf), or
// -1: one pass for both of rowChecker's checks.
func firstBad(v []float32, d DType) int {
	limit := uint32(0x7f800000) // NaN and ±Inf
	switch d.orDefault() {
	case Float16:
		limit = 0x477ff000 // as firstOutOfRange
	case BFloat16:
		limit = 0x7f7f8000
	}
	return parallelFirst(len(v), func(lo, hi int) int {
		if j := scanBad(v[lo:hi], limit); j >= 0 {
			return lo + j
		}
		return -1
	})
}

// scanBad returns the index of the first value of v whose magnitude's
// bits are limit or more, or -1. Without a branch per value: for each
// block of 16 it ORs (|x| bits) + (2^31 - limit), whose top bit is set
// exactly when |x| >= limit (no carry leaves the 32 bits), then looks
// for the value only in a block that has one.
func scanBad(v []float32, limit uint32) int {
	k := 0x80000000 - limit
	i := 0
	for ; i+16 <= len(v); i += 16 {
		w := v[i : i+16 : i+16]
		acc := (math.Float32bits(w[0])&0x7fffffff + k) | (math.Float32bits(w[1])&0x7fffffff + k) |
			(math.Float32bits(w[2])&0x7fffffff + k) | (math.Float32bits(w[3])&0x7fffffff + k) |
			(math.Float32bits(w[4])&0x7fffffff + k) | (math.Float32bits(w[5])&0x7fffffff + k) |
			(math.Float32bits(w[6])&0x7fffffff + k) | (math.Float32bits(w[7])&0x7fffffff + k) |
			(math.Float32bits(w[8])&0x7fffffff + k) | (math.Float32bits(w[9])&0x7fffffff + k) |
			(math.Float32bits(w[10])&0x7fffffff + k) | (math.Float32bits(w[11])&0x7fffffff + k) |
			(math.Float32bits(w[12])&0x7fffffff + k) | (math.Float32bits(w[13])&0x7fffffff + k) |
			(math.Float32bits(w[14])&0x7fffffff + k) | (math.Float32bits(w[15])&0x7fffffff + k)
		if acc&0x80000000 != 0 {
			break
		}
	}
	for ; i < len(v); i++ {
		if math.Float32bits(v[i])&0x7fffffff >= limit {
			return i
		}
	}
	return -1
}

// encode16Parallel is d.encode16 with large inputs split over the CPUs.
func (d DType) encode16Parallel(dst []byte, vals []float32) {
	parallelDo(len(vals), func(lo, hi int) { d.encode16(dst[2*lo:2*hi], vals[lo:hi]) })
}
