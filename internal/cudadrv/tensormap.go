//go:build cgo

package cudadrv

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// TensorMap is an encoded CUtensorMap: how the copy engine (TMA, sm_90+)
// reads boxes of a matrix in device memory into shared memory. Pass it to
// Launch by value, for a `const __grid_constant__ CUtensorMap` parameter.
type TensorMap struct {
	b  [128]byte
	ok bool
}

// Swizzle is a CUtensorMapSwizzle: how the copy engine lays rows of a box
// out in shared memory.
type Swizzle int

// The swizzles of CUtensorMapSwizzle.
const (
	SwizzleNone Swizzle = 0
	Swizzle128B Swizzle = 3 // 128-byte rows, 16-byte chunks permuted by row % 8 (wgmma's 128B layout)
)

// TensorMap2D encodes a TensorMap for the row-major rows×cols matrix of dt
// at p (rows of pitch bytes), read in boxes of boxRows×boxCols elements;
// reads past the matrix fill zeros. The driver checks the rest: p 16-byte
// aligned, pitch a multiple of 16, boxes of at most 256 per side, boxCols
// of 128 bytes at most with Swizzle128B. It fails on drivers before CUDA 12.
func (c *Context) TensorMap2D(p DevicePtr, dt DataType, rows, cols, pitch, boxRows, boxCols int, sw Swizzle) (TensorMap, error) {
	var m TensorMap
	if err := c.check(); err != nil {
		return m, err
	}
	var code C.int
	switch dt {
	case F16:
		code = 6 // CU_TENSOR_MAP_DATA_TYPE_FLOAT16
	case BF16:
		code = 9 // CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
	case F32:
		code = 7 // CU_TENSOR_MAP_DATA_TYPE_FLOAT32
	default:
		return m, fmt.Errorf("cuda: tensor map: data type %v", dt)
	}
	if rows <= 0 || cols <= 0 || boxRows <= 0 || boxCols <= 0 || pitch < cols*dt.Size() {
		return m, fmt.Errorf("cuda: tensor map: %d×%d (pitch %d bytes), box %d×%d", rows, cols, pitch, boxRows, boxCols)
	}
	r := C.esm_tensor_map_2d(unsafe.Pointer(&m.b[0]), code, C.CUdeviceptr(p), C.uint64_t(rows), C.uint64_t(cols),
		C.uint64_t(pitch), C.uint32_t(boxRows), C.uint32_t(boxCols), C.int(sw))
	if err := cuErr("cuTensorMapEncodeTiled", fmt.Sprintf("%v %d×%d pitch %d, box %d×%d, swizzle %d", dt, rows, cols, pitch, boxRows, boxCols, sw), r); err != nil {
		return m, err
	}
	m.ok = true
	return m, nil
}
