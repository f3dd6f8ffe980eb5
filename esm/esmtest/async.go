package esmtest

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/esm2go/esm2go/esm"
)

// Async wraps a synchronous backend (the CPU one) so that its asynchronous
// reads (ReadAsync, Fence, HostAlloc) behave like a GPU's stream as far as a caller can observe: ReadAsync
// takes what src holds when it is called (the copy is ordered after earlier
// work) but writes dst only when a later Fence is waited for, and poisons
// dst with NaN meanwhile. Code that reads an output before its fence sees
// NaN; results otherwise equal the wrapped backend's.
//
// It also checks the rules of asynchronous reads and records the first
// violation (Err): ReadAsync into memory that is not from its HostAlloc, and
// freeing host memory that a queued copy still targets. Live counts the host
// blocks not freed (a leak check for callers that should free theirs).
type Async struct {
	esm.Backend

	seq     int64         // copies queued so far
	pending []pendingCopy // queued, not yet written
	mem     map[*hostMem]bool
	err     error

	// Counters for tests: fences taken, copies queued, fences taken and not
	// yet waited for (now and at most).
	Fences, Copies, Outstanding, MaxOutstanding int
}

type pendingCopy struct {
	seq int64
	dst []float32
	val []float32
	mem *hostMem
}

var _ esm.Backend = (*Async)(nil)

// NewAsync wraps be.
func NewAsync(be esm.Backend) *Async {
	return &Async{Backend: be, mem: map[*hostMem]bool{}}
}

// Err returns the first violation of the asynchronous-read rules seen, or nil.
func (a *Async) Err() error { return a.err }

// Live is the number of HostAlloc blocks not yet freed.
func (a *Async) Live() int { return len(a.mem) }

func (a *Async) fail(format string, args ...any) {
	if a.err == nil {
		a.err = fmt.Errorf("esmtest.Async: "+format, args...)
	}
}

type hostMem struct {
	a *Async
	d []float32
}

func (h *hostMem) Floats() []float32 { return h.d }

func (h *hostMem) Free() error {
	if h.d == nil {
		return nil
	}
	// A GPU's Free waits for copies still queued into the memory; here they
	// are dropped, and freeing memory with one queued is reported: callers
	// must wait for the fence of the copies first.
	for _, p := range h.a.pending {
		if p.mem == h {
			h.a.fail("host memory freed while a copy into it is still queued (no fence waited)")
			break
		}
	}
	delete(h.a.mem, h)
	h.d = nil
	return nil
}

// HostAlloc implements esm.Backend.
func (a *Async) HostAlloc(n int) (esm.HostMemory, error) {
	if n <= 0 {
		return nil, fmt.Errorf("esmtest.Async: HostAlloc(%d)", n)
	}
	h := &hostMem{a: a, d: make([]float32, n)}
	a.mem[h] = true
	return h, nil
}

// owner returns the host block that holds all of dst, or nil.
func (a *Async) owner(dst []float32) *hostMem {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(dst)))
	for h := range a.mem {
		base := uintptr(unsafe.Pointer(unsafe.SliceData(h.d)))
		if p >= base && p+4*uintptr(len(dst)) <= base+4*uintptr(len(h.d)) {
			return h
		}
	}
	return nil
}

// ReadAsync implements esm.Backend.
func (a *Async) ReadAsync(dst []float32, src esm.Tensor) error {
	if len(dst) == 0 {
		return nil
	}
	h := a.owner(dst)
	if h == nil {
		a.fail("ReadAsync into %d floats that are not from HostAlloc", len(dst))
		return errors.New("esmtest.Async: ReadAsync destination is not from HostAlloc")
	}
	val := make([]float32, len(dst))
	if err := a.Backend.Read(val, src); err != nil {
		return err
	}
	nan := float32(math.NaN())
	for i := range dst {
		dst[i] = nan
	}
	a.seq++
	a.Copies++
	a.pending = append(a.pending, pendingCopy{seq: a.seq, dst: dst, val: val, mem: h})
	return nil
}

// Read implements esm.Backend: like a stream synchronize, it also completes
// the queued copies.
func (a *Async) Read(dst []float32, src esm.Tensor) error {
	a.complete(a.seq)
	return a.Backend.Read(dst, src)
}

// complete writes the queued copies up to seq.
func (a *Async) complete(seq int64) {
	n := 0
	for _, p := range a.pending {
		if p.seq > seq {
			break
		}
		if a.mem[p.mem] {
			copy(p.dst, p.val)
		}
		n++
	}
	a.pending = append(a.pending[:0], a.pending[n:]...)
}

type fence struct {
	a      *Async
	seq    int64
	waited bool
}

func (f *fence) Wait() error {
	if !f.waited {
		f.waited = true
		f.a.Outstanding--
	}
	f.a.complete(f.seq)
	return nil
}

// Fence implements esm.Backend.
func (a *Async) Fence() (esm.Fence, error) {
	a.Fences++
	a.Outstanding++
	a.MaxOutstanding = max(a.MaxOutstanding, a.Outstanding)
	return &fence{a: a, seq: a.seq}, nil
}

// Close implements esm.Backend: frees the host memory left and closes the
// wrapped backend.
func (a *Async) Close() error {
	for h := range a.mem {
		h.d = nil
	}
	a.mem = map[*hostMem]bool{}
	a.pending = nil
	return a.Backend.Close()
}
