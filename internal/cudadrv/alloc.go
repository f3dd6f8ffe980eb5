//go:build cgo

package cudadrv

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
)

// DevicePtr is a device address (CUdeviceptr).
type DevicePtr uint64

// Add returns p advanced by bytes.
func (p DevicePtr) Add(bytes int) DevicePtr { return p + DevicePtr(bytes) }

// Buffer is a block of device memory from the Context's caching allocator.
// Ptr is valid until Free (or Close); Size is the size asked for, the block
// behind it may be larger.
type Buffer struct {
	Ptr   DevicePtr
	Size  int
	class int
	c     *Context
}

// Free returns the block to the allocator's cache for reuse. The cache is
// not stream-ordered: free a buffer only when no queued work still reads or
// writes it on a stream other than the one that will reuse it (all work on
// one stream, or after a synchronize, is always safe).
func (b *Buffer) Free() error {
	if b == nil {
		return nil
	}
	if err := b.c.check(); err != nil {
		return err
	}
	return b.c.alloc.free(b)
}

// AllocStats describes the caching allocator. Byte counts are of whole
// blocks (rounded sizes).
type AllocStats struct {
	InUse        int // bytes handed out and not yet freed
	Reserved     int // bytes obtained from cuMemAlloc and not released
	PeakInUse    int //
	PeakReserved int //
	Mallocs      int // cuMemAlloc calls
	Reuses       int // allocations served from the cache
}

// Size classes: powers of two from 512 B up to 1 MiB, then multiples of
// 2 MiB. A large request may take a cached block up to 1/8 larger than its
// class, so batches of slightly different lengths share blocks.
const (
	minClass   = 512
	smallLimit = 1 << 20
	largeGrain = 2 << 20
)

func sizeClass(n int) int {
	if n <= minClass {
		return minClass
	}
	if n <= smallLimit {
		return 1 << bits.Len(uint(n-1))
	}
	return (n + largeGrain - 1) / largeGrain * largeGrain
}

type allocator struct {
	cached map[int][]C.CUdeviceptr // free blocks by class
	live   map[DevicePtr]*Buffer
	stats  AllocStats
}

func (a *allocator) init() {
	a.cached = map[int][]C.CUdeviceptr{}
	a.live = map[DevicePtr]*Buffer{}
}

// take removes a cached block for class, or returns false.
func (a *allocator) take(class int) (C.CUdeviceptr, int, bool) {
	if l := a.cached[class]; len(l) > 0 {
		p := l[len(l)-1]
		a.cached[class] = l[:len(l)-1]
		return p, class, true
	}
	if class <= smallLimit {
		return 0, 0, false
	}
	best := 0
	for k, l := range a.cached {
		if len(l) > 0 && k > class && k <= class+class/8 && (best == 0 || k < best) {
			best = k
		}
	}
	if best == 0 {
		return 0, 0, false
	}
	l := a.cached[best]
	p := l[len(l)-1]
	a.cached[best] = l[:len(l)-1]
	return p, best, true
}

// Alloc returns a device buffer of at least bytes bytes, reusing a cached
// block when one fits. When cuMemAlloc fails for lack of memory the cache is
// released and the allocation retried once; if it still fails the error
// satisfies errors.Is(err, ErrOutOfMemory). The memory is not zeroed.
func (c *Context) Alloc(bytes int) (*Buffer, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if bytes <= 0 {
		return nil, fmt.Errorf("cuda: Alloc(%d bytes): size must be positive", bytes)
	}
	a := &c.alloc
	class := sizeClass(bytes)
	p, got, ok := a.take(class)
	if ok {
		a.stats.Reuses++
	} else {
		got = class
		r := C.esm_cuMemAlloc(&p, C.size_t(class))
		if r == cudaErrorOutOfMemory {
			if err := a.release(); err != nil {
				return nil, err
			}
			r = C.esm_cuMemAlloc(&p, C.size_t(class))
		}
		if r != 0 {
			return nil, cuErr("cuMemAlloc_v2", fmt.Sprintf("%d bytes", class), r)
		}
		a.stats.Mallocs++
		a.stats.Reserved += got
		a.stats.PeakReserved = max(a.stats.PeakReserved, a.stats.Reserved)
	}
	b := &Buffer{Ptr: DevicePtr(p), Size: bytes, class: got, c: c}
	a.live[b.Ptr] = b
	a.stats.InUse += got
	a.stats.PeakInUse = max(a.stats.PeakInUse, a.stats.InUse)
	return b, nil
}

func (a *allocator) free(b *Buffer) error {
	if a.live[b.Ptr] != b {
		return fmt.Errorf("cuda: Free(%#x, %d bytes): %w (double free or foreign buffer)", uint64(b.Ptr), b.Size, ErrClosed)
	}
	delete(a.live, b.Ptr)
	a.cached[b.class] = append(a.cached[b.class], C.CUdeviceptr(b.Ptr))
	a.stats.InUse -= b.class
	return nil
}

// release frees every cached (unused) block.
func (a *allocator) release() error {
	var errs []error
	classes := make([]int, 0, len(a.cached))
	for k := range a.cached {
		classes = append(classes, k)
	}
	sort.Ints(classes)
	for _, k := range classes {
		for _, p := range a.cached[k] {
			if r := C.esm_cuMemFree(p); r != 0 {
				errs = append(errs, cuErr("cuMemFree_v2", fmt.Sprintf("%#x", uint64(p)), r))
			}
			a.stats.Reserved -= k
		}
		delete(a.cached, k)
	}
	return errors.Join(errs...)
}

// freeAll frees cached and live blocks (Close).
func (a *allocator) freeAll() error {
	var errs []error
	for p, b := range a.live {
		if r := C.esm_cuMemFree(C.CUdeviceptr(p)); r != 0 {
			errs = append(errs, cuErr("cuMemFree_v2", fmt.Sprintf("%#x", uint64(p)), r))
		}
		a.stats.Reserved -= b.class
		a.stats.InUse -= b.class
	}
	clear(a.live)
	errs = append(errs, a.release())
	return errors.Join(errs...)
}

// Stats returns the allocator's counters.
func (c *Context) Stats() AllocStats { return c.alloc.stats }

// Release frees all cached blocks back to the driver (buffers in use are
// kept).
func (c *Context) Release() error {
	if err := c.check(); err != nil {
		return err
	}
	return c.alloc.release()
}
