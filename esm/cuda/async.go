//go:build cgo

package cuda

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/internal/cudadrv"
)

// Asynchronous reads (esm.Backend's ReadAsync, Fence, HostAlloc): results leave the device on the compute stream, so each
// copy is ordered after the kernels that produce its source and before
// those that overwrite it; a fence is an event recorded on the compute
// stream after the copies. Like every method, these and the Wait and Free
// of what they return must be called from the goroutine that owns the
// backend.

// ReadAsync implements esm.Backend: a narrow (fp16/bf16) src is first
// converted to fp32 on the device, in a scratch buffer reused by the next
// read (safe: the copy runs before the next conversion on the one stream);
// dst must lie in memory from HostAlloc.
func (b *Backend) ReadAsync(dst []float32, src esm.Tensor) error {
	n := len(dst)
	if err := b.checkRead(n, src); err != nil || n == 0 {
		return err
	}
	s := tens(src)
	p := s.buf.Ptr
	if s.dt != cudadrv.F32 {
		sc, err := b.grow(&b.readScratch, 4*n)
		if err != nil {
			return fmt.Errorf("cuda: read %d elements: %w", n, oom(err))
		}
		if err := b.k.convert(sc.Ptr, cudadrv.F32, p, s.dt, n); err != nil {
			return err
		}
		p = sc.Ptr
	}
	if err := b.ctx.CopyDtoHAsync(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*n), p, b.ctx.Stream()); err != nil {
		return fmt.Errorf("cuda: read %d elements: %w", n, err)
	}
	return nil
}

// fence is an event recorded on the compute stream; Wait returns the event
// to the backend's pool.
type fence struct {
	b    *Backend
	ev   *cudadrv.Event
	done bool
	err  error
}

// Fence implements esm.Backend.
func (b *Backend) Fence() (esm.Fence, error) {
	dp := &b.dp
	var ev *cudadrv.Event
	if k := len(dp.fences); k > 0 {
		ev, dp.fences = dp.fences[k-1], dp.fences[:k-1]
	} else {
		var err error
		if ev, err = b.ctx.NewEvent(false); err != nil {
			return nil, fmt.Errorf("cuda: fence: %w", err)
		}
	}
	if err := ev.Record(b.ctx.Stream()); err != nil {
		dp.fences = append(dp.fences, ev)
		return nil, fmt.Errorf("cuda: fence: %w", err)
	}
	return &fence{b: b, ev: ev}, nil
}

// Wait implements esm.Fence (cuEventSynchronize; from the owning goroutine).
func (f *fence) Wait() error {
	if f.done {
		return f.err
	}
	if err := f.ev.Synchronize(); err != nil {
		if errors.Is(err, cudadrv.ErrWrongGoroutine) {
			return fmt.Errorf("cuda: fence: %w", err) // not waited: the owner still can
		}
		f.err = fmt.Errorf("cuda: waiting for queued work: %w", err)
	}
	f.done = true
	f.b.dp.fences = append(f.b.dp.fences, f.ev)
	f.ev = nil
	return f.err
}

// hostMem is pinned host memory from HostAlloc.
type hostMem struct {
	b *Backend
	h *cudadrv.HostBuffer
	n int
}

// HostAlloc implements esm.Backend: page-locked memory
// (cuMemHostAlloc), freed by Free or by Close.
func (b *Backend) HostAlloc(n int) (esm.HostMemory, error) {
	if n <= 0 {
		return nil, fmt.Errorf("cuda: host memory for %d floats", n)
	}
	h, err := b.ctx.HostAlloc(4 * n)
	if err != nil {
		return nil, fmt.Errorf("cuda: pinned host memory for %d floats: %w", n, err)
	}
	return &hostMem{b: b, h: h, n: n}, nil
}

// Floats implements esm.HostMemory.
func (h *hostMem) Floats() []float32 {
	if h.h == nil || h.h.Bytes == nil {
		return nil
	}
	return h.h.Float32()[:h.n]
}

// Free implements esm.HostMemory: waits for the compute stream (a queued
// copy may target the memory), then frees it. After Backend.Close, the
// memory is already freed and Free does nothing.
func (h *hostMem) Free() error {
	if h.h == nil {
		return nil
	}
	if h.b.ctx == nil || h.h.Bytes == nil { // freed by Close
		h.h = nil
		return nil
	}
	if err := h.b.ctx.Stream().Synchronize(); err != nil {
		return fmt.Errorf("cuda: free host memory: %w", err)
	}
	err := h.h.Free()
	h.h = nil
	if err != nil {
		return fmt.Errorf("cuda: free host memory: %w", err)
	}
	return nil
}
