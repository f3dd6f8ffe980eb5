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

// CU_MEMHOSTALLOC_PORTABLE: pinned memory usable from every context.
const memHostAllocPortable = 1

// HostBuffer is page-locked (pinned) host memory from cuMemHostAlloc, needed
// for truly asynchronous copies. Bytes views the whole block; it is invalid
// after Free or Close.
type HostBuffer struct {
	Bytes []byte
	p     unsafe.Pointer
	c     *Context
}

// HostAlloc allocates bytes of pinned, portable host memory.
func (c *Context) HostAlloc(bytes int) (*HostBuffer, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if bytes <= 0 {
		return nil, fmt.Errorf("cuda: HostAlloc(%d bytes): size must be positive", bytes)
	}
	h := &HostBuffer{c: c}
	if r := C.esm_cuMemHostAlloc(&h.p, C.size_t(bytes), memHostAllocPortable); r != 0 {
		return nil, cuErr("cuMemHostAlloc", fmt.Sprintf("%d bytes, PORTABLE", bytes), r)
	}
	h.Bytes = unsafe.Slice((*byte)(h.p), bytes)
	c.hosts[h] = true
	return h, nil
}

// Float32 views the buffer as float32s (len = bytes/4).
func (h *HostBuffer) Float32() []float32 {
	return unsafe.Slice((*float32)(h.p), len(h.Bytes)/4)
}

// Int32 views the buffer as int32s (len = bytes/4).
func (h *HostBuffer) Int32() []int32 { return unsafe.Slice((*int32)(h.p), len(h.Bytes)/4) }

// Uint16 views the buffer as uint16s, e.g. fp16 or bf16 bit patterns.
func (h *HostBuffer) Uint16() []uint16 { return unsafe.Slice((*uint16)(h.p), len(h.Bytes)/2) }

// Free releases the pinned memory (cuMemFreeHost).
func (h *HostBuffer) Free() error {
	if err := h.c.check(); err != nil {
		return err
	}
	if h.p == nil {
		return nil
	}
	delete(h.c.hosts, h)
	r := C.esm_cuMemFreeHost(h.p)
	h.p, h.Bytes = nil, nil
	return cuErr("cuMemFreeHost", "", r)
}

// pinned reports whether [p, p+n) lies inside one of the context's pinned
// buffers.
func (c *Context) pinned(p unsafe.Pointer, n int) bool {
	for h := range c.hosts {
		base := uintptr(h.p)
		if uintptr(p) >= base && uintptr(p)+uintptr(n) <= base+uintptr(len(h.Bytes)) {
			return true
		}
	}
	return false
}

// CopyHtoDAsync queues a copy of src into device memory at dst on s. src must
// lie in a HostBuffer of this context (Go memory is refused: the copy runs
// after the call returns). Keep src unchanged until the stream has passed
// the copy.
func (c *Context) CopyHtoDAsync(dst DevicePtr, src []byte, s *Stream) error {
	if err := c.check(); err != nil {
		return err
	}
	if len(src) == 0 {
		return nil
	}
	p := unsafe.Pointer(&src[0])
	if !c.pinned(p, len(src)) {
		return fmt.Errorf("cuda: CopyHtoDAsync(%d bytes): source is not in a pinned HostBuffer of this context", len(src))
	}
	r := C.esm_cuMemcpyHtoDAsync(C.CUdeviceptr(dst), p, C.size_t(len(src)), s.handle())
	return cuErr("cuMemcpyHtoDAsync_v2", fmt.Sprintf("%d bytes", len(src)), r)
}

// CopyDtoHAsync queues a copy of len(dst) bytes from device address src into
// dst on s. dst must lie in a HostBuffer of this context; read it only after
// the stream (or an event after the copy) has been synchronized.
func (c *Context) CopyDtoHAsync(dst []byte, src DevicePtr, s *Stream) error {
	if err := c.check(); err != nil {
		return err
	}
	if len(dst) == 0 {
		return nil
	}
	p := unsafe.Pointer(&dst[0])
	if !c.pinned(p, len(dst)) {
		return fmt.Errorf("cuda: CopyDtoHAsync(%d bytes): destination is not in a pinned HostBuffer of this context", len(dst))
	}
	r := C.esm_cuMemcpyDtoHAsync(p, C.CUdeviceptr(src), C.size_t(len(dst)), s.handle())
	return cuErr("cuMemcpyDtoHAsync_v2", fmt.Sprintf("%d bytes", len(dst)), r)
}

// CopyHtoD copies src (any memory, Go or pinned) to dst on the context's
// main stream and waits for that stream, so the copy is ordered after all
// work queued there (the main stream is non-blocking: a plain cuMemcpyHtoD
// would not wait for it). Meant for weights and tests; the hot path uses
// pinned buffers and CopyHtoDAsync.
func (c *Context) CopyHtoD(dst DevicePtr, src []byte) error {
	if err := c.check(); err != nil {
		return err
	}
	if len(src) == 0 {
		return nil
	}
	r := C.esm_copy_sync_htod(C.CUdeviceptr(dst), unsafe.Pointer(&src[0]), C.size_t(len(src)), c.stream.s)
	return cuErr("cuMemcpyHtoDAsync_v2+cuStreamSynchronize", fmt.Sprintf("%d bytes", len(src)), r)
}

// CopyDtoH copies len(dst) bytes from src into dst (any memory) on the
// context's main stream and waits for it: the result includes all work queued
// on the main stream (and on the cuBLAS stream when that is the main one).
func (c *Context) CopyDtoH(dst []byte, src DevicePtr) error {
	if err := c.check(); err != nil {
		return err
	}
	if len(dst) == 0 {
		return nil
	}
	r := C.esm_copy_sync_dtoh(unsafe.Pointer(&dst[0]), C.CUdeviceptr(src), C.size_t(len(dst)), c.stream.s)
	return cuErr("cuMemcpyDtoHAsync_v2+cuStreamSynchronize", fmt.Sprintf("%d bytes", len(dst)), r)
}

// CopyDtoDAsync queues a device-to-device copy of bytes bytes on s.
func (c *Context) CopyDtoDAsync(dst, src DevicePtr, bytes int, s *Stream) error {
	if err := c.check(); err != nil {
		return err
	}
	r := C.esm_cuMemcpyDtoDAsync(C.CUdeviceptr(dst), C.CUdeviceptr(src), C.size_t(bytes), s.handle())
	return cuErr("cuMemcpyDtoDAsync_v2", fmt.Sprintf("%d bytes", bytes), r)
}

// MemsetD8Async sets bytes bytes at dst to v on s.
func (c *Context) MemsetD8Async(dst DevicePtr, v byte, bytes int, s *Stream) error {
	if err := c.check(); err != nil {
		return err
	}
	r := C.esm_cuMemsetD8Async(C.CUdeviceptr(dst), C.uchar(v), C.size_t(bytes), s.handle())
	return cuErr("cuMemsetD8Async", fmt.Sprintf("%d bytes", bytes), r)
}

// MemsetD32Async sets n 32-bit words at dst (4-byte aligned) to v on s; use
// math.Float32bits(x) to fill with a float32, e.g. NaN to poison an output.
func (c *Context) MemsetD32Async(dst DevicePtr, v uint32, n int, s *Stream) error {
	if err := c.check(); err != nil {
		return err
	}
	r := C.esm_cuMemsetD32Async(C.CUdeviceptr(dst), C.uint(v), C.size_t(n), s.handle())
	return cuErr("cuMemsetD32Async", fmt.Sprintf("%d words", n), r)
}
