//go:build cgo

package cudadrv

/*
#include "shim.h"
*/
import "C"

// CU_STREAM_NON_BLOCKING: the stream does not synchronize with the legacy
// default stream. CU_EVENT_DISABLE_TIMING for events used only to order
// streams.
const (
	streamNonBlocking  = 1
	eventDisableTiming = 2
)

// Stream is a CUDA stream of a Context.
type Stream struct {
	c *Context
	s C.CUstream
}

// NewStream creates a non-blocking stream, destroyed by Destroy or Close.
func (c *Context) NewStream() (*Stream, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	s := &Stream{c: c}
	if r := C.esm_cuStreamCreate(&s.s, streamNonBlocking); r != 0 {
		return nil, cuErr("cuStreamCreate", "non-blocking", r)
	}
	c.streams[s] = true
	return s, nil
}

func (s *Stream) handle() C.CUstream {
	if s == nil {
		return nil // legacy default stream
	}
	return s.s
}

// Synchronize waits until all work queued on s has finished.
func (s *Stream) Synchronize() error {
	if err := s.c.check(); err != nil {
		return err
	}
	return cuErr("cuStreamSynchronize", "", C.esm_cuStreamSynchronize(s.s))
}

// WaitEvent makes later work on s wait until e has completed.
func (s *Stream) WaitEvent(e *Event) error {
	if err := s.c.check(); err != nil {
		return err
	}
	return cuErr("cuStreamWaitEvent", "", C.esm_cuStreamWaitEvent(s.s, e.ev, 0))
}

// Destroy destroys the stream (after its queued work completes). The
// context's main stream is destroyed only by Close.
func (s *Stream) Destroy() error {
	if err := s.c.check(); err != nil {
		return err
	}
	if s == s.c.stream || s.s == nil {
		return nil
	}
	delete(s.c.streams, s)
	r := C.esm_cuStreamDestroy(s.s)
	s.s = nil
	return cuErr("cuStreamDestroy_v2", "", r)
}

// Event is a CUDA event of a Context.
type Event struct {
	c  *Context
	ev C.CUevent
}

// NewEvent creates an event; timing=false makes a cheaper event that can
// order streams but not measure time.
func (c *Context) NewEvent(timing bool) (*Event, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	var flags C.uint
	if !timing {
		flags = eventDisableTiming
	}
	e := &Event{c: c}
	if r := C.esm_cuEventCreate(&e.ev, flags); r != 0 {
		return nil, cuErr("cuEventCreate", "", r)
	}
	c.events[e] = true
	return e, nil
}

// Record captures the work queued on s so far.
func (e *Event) Record(s *Stream) error {
	if err := e.c.check(); err != nil {
		return err
	}
	return cuErr("cuEventRecord", "", C.esm_cuEventRecord(e.ev, s.handle()))
}

// Synchronize waits until the recorded work has completed.
func (e *Event) Synchronize() error {
	if err := e.c.check(); err != nil {
		return err
	}
	return cuErr("cuEventSynchronize", "", C.esm_cuEventSynchronize(e.ev))
}

// ElapsedMs returns the milliseconds between two completed timing events.
func ElapsedMs(start, end *Event) (float32, error) {
	if err := start.c.check(); err != nil {
		return 0, err
	}
	var ms C.float
	if r := C.esm_cuEventElapsedTime(&ms, start.ev, end.ev); r != 0 {
		return 0, cuErr("cuEventElapsedTime", "", r)
	}
	return float32(ms), nil
}

// Destroy destroys the event.
func (e *Event) Destroy() error {
	if err := e.c.check(); err != nil {
		return err
	}
	if e.ev == nil {
		return nil
	}
	delete(e.c.events, e)
	r := C.esm_cuEventDestroy(e.ev)
	e.ev = nil
	return cuErr("cuEventDestroy_v2", "", r)
}
