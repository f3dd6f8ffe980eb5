package output

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// writeValuesTo appends vals stored as d (little-endian float32, float16
// or bfloat16) to df, converting them straight into its sink's buffers:
// no copy through a buffer of the writer's own.
func writeValuesTo(df *dataFile, vals []float32, d DType) error {
	if err := df.sink.failed(); err != nil {
		return err
	}
	size := d.size()
	if size == 4 && nativeLittleEndian {
		_, err := df.Write(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(vals))), 4*len(vals)))
		return err
	}
	for len(vals) > 0 {
		room := df.room()
		n := min(len(vals), len(room)/size)
		if n == 0 {
			// Less room than one value: through a small buffer.
			var one [4]byte
			if size == 4 {
				binary.LittleEndian.PutUint32(one[:], math.Float32bits(vals[0]))
			} else {
				d.encode16(one[:2], vals[:1])
			}
			if _, err := df.Write(one[:size]); err != nil {
				return err
			}
			vals = vals[1:]
			continue
		}
		if size == 4 {
			for i, v := range vals[:n] {
				binary.LittleEndian.PutUint32(room[4*i:], math.Float32bits(v))
			}
		} else {
			d.encode16Parallel(room[:2*n], vals[:n])
		}
		df.fill(size * n)
		vals = vals[n:]
	}
	return nil
}
