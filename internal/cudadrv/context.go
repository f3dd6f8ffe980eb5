//go:build cgo

package cudadrv

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
)

// Context is one GPU's primary context, owned by the goroutine that created
// it. All its methods, and those of the objects it hands out, must be called
// from that goroutine; others get ErrWrongGoroutine. A Context is not safe for
// concurrent use (it needs none: only its owner may call it).
type Context struct {
	lib    *Lib
	Device DeviceInfo
	dev    C.CUdevice
	ctx    C.CUcontext
	tid    int // OS thread of the owning goroutine (locked)
	closed bool

	stream  *Stream          // the context's main stream; cuBLAS runs on it unless SetBlasStream
	streams map[*Stream]bool // streams to destroy on Close
	events  map[*Event]bool  // events to destroy on Close
	hosts   map[*HostBuffer]bool
	mods    map[string]*Module // by compile-cache key
	alloc   allocator
	blas    *blasState

	// KernelCacheDir is where Compile keeps CUBINs; "" disables the disk
	// cache. NewContext sets it from $ESM2GO_KERNEL_CACHE, else
	// $XDG_CACHE_HOME/esm2go/kernels, else ~/.cache/esm2go/kernels.
	KernelCacheDir string
}

// NewContext locks the calling goroutine to its OS thread, retains the
// primary context of device ordinal and makes it current, and creates the
// context's main stream (non-blocking). Call Close from the same goroutine.
func NewContext(ordinal int) (*Context, error) {
	lib, err := Load()
	if err != nil {
		return nil, err
	}
	info, err := lib.Device(ordinal)
	if err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	c := &Context{
		lib: lib, Device: info, tid: syscall.Gettid(),
		streams: map[*Stream]bool{}, events: map[*Event]bool{},
		hosts: map[*HostBuffer]bool{}, mods: map[string]*Module{},
		KernelCacheDir: defaultKernelCacheDir(),
	}
	c.alloc.init()
	fail := func(err error) (*Context, error) {
		if c.ctx != nil {
			C.esm_cuDevicePrimaryCtxRelease(c.dev)
		}
		runtime.UnlockOSThread()
		return nil, err
	}
	if r := C.esm_cuDeviceGet(&c.dev, C.int(ordinal)); r != 0 {
		return fail(cuErr("cuDeviceGet", fmt.Sprint(ordinal), r))
	}
	if r := C.esm_cuDevicePrimaryCtxRetain(&c.ctx, c.dev); r != 0 {
		return fail(cuErr("cuDevicePrimaryCtxRetain", fmt.Sprint(ordinal), r))
	}
	if r := C.esm_cuCtxSetCurrent(c.ctx); r != 0 {
		return fail(cuErr("cuCtxSetCurrent", fmt.Sprint(ordinal), r))
	}
	s, err := c.NewStream()
	if err != nil {
		return fail(err)
	}
	c.stream = s
	return c, nil
}

// Lib returns the loaded libraries.
func (c *Context) Lib() *Lib { return c.lib }

// Stream returns the context's main stream.
func (c *Context) Stream() *Stream { return c.stream }

// check returns an error unless the caller is the owning goroutine of an open
// context.
func (c *Context) check() error {
	if c == nil || c.closed {
		return ErrClosed
	}
	if tid := syscall.Gettid(); tid != c.tid {
		return fmt.Errorf("%w (owner thread %d, caller thread %d)", ErrWrongGoroutine, c.tid, tid)
	}
	return nil
}

// Synchronize waits for all work on the device (cuCtxSynchronize).
func (c *Context) Synchronize() error {
	if err := c.check(); err != nil {
		return err
	}
	return cuErr("cuCtxSynchronize", "", C.esm_cuCtxSynchronize())
}

// MemInfo returns the device's free and total memory in bytes.
func (c *Context) MemInfo() (free, total uint64, err error) {
	if err := c.check(); err != nil {
		return 0, 0, err
	}
	var f, t C.size_t
	if r := C.esm_cuMemGetInfo(&f, &t); r != 0 {
		return 0, 0, cuErr("cuMemGetInfo_v2", "", r)
	}
	return uint64(f), uint64(t), nil
}

// Close synchronizes, then frees everything the context owns: cuBLAS
// handles and plans, modules, events, streams, pinned host buffers and all
// device memory (cached and still in use), releases the primary context and
// unlocks the OS thread. Buffers still held by the caller become invalid.
// Close must be called from the owning goroutine; a second Close is a no-op.
func (c *Context) Close() error {
	if c == nil || c.closed {
		return nil
	}
	if err := c.check(); err != nil {
		return err
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(cuErr("cuCtxSynchronize", "", C.esm_cuCtxSynchronize()))
	if c.blas != nil {
		add(c.blas.destroy())
		c.blas = nil
	}
	for _, m := range c.mods {
		add(cuErr("cuModuleUnload", m.Name, C.esm_cuModuleUnload(m.mod)))
	}
	for e := range c.events {
		add(cuErr("cuEventDestroy_v2", "", C.esm_cuEventDestroy(e.ev)))
		e.ev = nil
	}
	for s := range c.streams {
		add(cuErr("cuStreamDestroy_v2", "", C.esm_cuStreamDestroy(s.s)))
		s.s = nil
	}
	for h := range c.hosts {
		add(cuErr("cuMemFreeHost", "", C.esm_cuMemFreeHost(h.p)))
		h.p, h.Bytes = nil, nil
	}
	add(c.alloc.freeAll())
	add(cuErr("cuDevicePrimaryCtxRelease_v2", "", C.esm_cuDevicePrimaryCtxRelease(c.dev)))
	c.closed = true
	runtime.UnlockOSThread()
	return errors.Join(errs...)
}
