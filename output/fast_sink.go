package output

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sync/atomic"
	"syscall"
)

// fastSink appends to one file through a small, ordered pipeline of
// buffers, so that the goroutine producing the bytes does not wait in
// write(2): Write (or room and fill) puts the bytes into the buffer being
// filled; a full buffer goes to the sink's goroutines, which compute its
// CRC-32C and write it, in order, then hand it back. At most
// sinkBuffers buffers of sinkBufferSize bytes exist, so a producer faster
// than the disk waits for a buffer, and memory stays bounded.
//
// A write error is sticky: later buffers are dropped, and Write, flush and
// sum return it, naming the file. flush waits until every byte given is
// written; the CRC and the count then cover exactly those bytes (the
// manifest records them only after the file is fsynced, parts.go).
//
// The producer's methods are called from one goroutine. The sink's
// goroutines start with the first bytes given and end at close.
type fastSink struct {
	f    *os.File
	rc   syscall.RawConn // f's descriptor, for startWriteback; nil if none
	path string          // for errors

	cur  []byte        // buffer being filled; nil when none yet
	made int           // buffers allocated
	free chan []byte   // written buffers, ready to fill again
	todo chan []byte   // full buffers, in file order; nil marks a flush
	ack  chan struct{} // the writing goroutine reached a flush mark
	done chan struct{} // closed when both goroutines have ended
	err  atomic.Pointer[error]
	stop atomic.Bool // close: drop what is still queued

	// Written by the goroutines (crc by the first, the others by the
	// second); read by the producer only after a flush (ordered by ack).
	crc     uint32
	written int64
	pos     int64 // the file offset of the next byte written
}

const (
	// Three: tried with up to 64 (made as needed), so that a parquet row
	// group's 64 MiB burst would not hold the writer at the disk's pace,
	// per-token parquet float32 on the H200 went from 611 to 381 seq/s
	// (npy unchanged); most likely buffers that stay in the cache count
	// for more (not profiled).
	sinkBuffers    = 3
	sinkBufferSize = 1 << 20 // as the disk benchmarks write (benchDisk, BenchmarkPipelinePerTok/disk)
)

// newFastSink appends to f, whose offset is pos.
func newFastSink(f *os.File, path string, pos int64) *fastSink {
	rc, err := f.SyscallConn()
	if err != nil {
		rc = nil
	}
	return &fastSink{f: f, rc: rc, path: path, pos: pos}
}

// failed is the sink's sticky error, or nil.
func (s *fastSink) failed() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *fastSink) start() {
	if s.todo != nil {
		return
	}
	s.free = make(chan []byte, sinkBuffers)
	s.todo = make(chan []byte, sinkBuffers)
	s.ack = make(chan struct{})
	s.done = make(chan struct{})
	go s.run()
}

// run is the sink's first goroutine: the CRC-32C of each buffer, in order.
// A second writes them, in the same order, so that checksumming one buffer
// overlaps the write call of the one before (one goroutine doing both
// capped a file at about 1.8 GB/s on the H200 host, near its disk's 1.56).
// On a write error the CRC may cover a buffer not written; the error is
// then what sum returns.
func (s *fastSink) run() {
	defer close(s.done)
	wq := make(chan []byte, sinkBuffers)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		s.write(wq)
	}()
	for b := range s.todo {
		if b != nil && s.failed() == nil && !s.stop.Load() {
			s.crc = crc32.Update(s.crc, castagnoli, b)
		}
		wq <- b
	}
	close(wq)
	<-wrote
}

// write is the sink's second goroutine: write each buffer, then hand it
// back; a flush mark (nil) is acknowledged once every buffer before it is
// written.
func (s *fastSink) write(wq <-chan []byte) {
	for b := range wq {
		if b == nil {
			s.ack <- struct{}{}
			continue
		}
		if s.failed() == nil && !s.stop.Load() {
			n, err := s.f.Write(b)
			s.written += int64(n)
			startWriteback(s.rc, s.pos, int64(n))
			s.pos += int64(n)
			if err == nil && n < len(b) {
				err = errors.New("short write")
			}
			if err != nil {
				err = fmt.Errorf("writing %s: %w", s.path, err)
				s.err.Store(&err)
			}
		}
		s.free <- b[:0]
	}
}

// buffer returns an empty buffer, waiting for one to be written if all
// are in use.
func (s *fastSink) buffer() []byte {
	s.start()
	select {
	case b := <-s.free:
		return b
	default:
	}
	if s.made < sinkBuffers {
		s.made++
		return make([]byte, 0, sinkBufferSize)
	}
	return <-s.free
}

// room returns the free space of the buffer being filled, at least one
// byte (a full buffer is sent to be written first); fill(k) then marks k
// bytes of it as given.
func (s *fastSink) room() []byte {
	if s.cur != nil && len(s.cur) == cap(s.cur) {
		s.todo <- s.cur
		s.cur = nil
	}
	if s.cur == nil {
		s.cur = s.buffer()
	}
	return s.cur[len(s.cur):cap(s.cur)]
}

func (s *fastSink) fill(k int) { s.cur = s.cur[:len(s.cur)+k] }

// Write copies b into the sink's buffers.
func (s *fastSink) Write(b []byte) (int, error) {
	if err := s.failed(); err != nil {
		return 0, err
	}
	n := 0
	for n < len(b) {
		k := copy(s.room(), b[n:])
		s.fill(k)
		n += k
	}
	return n, nil
}

// flush writes every byte given so far and waits until they are written.
func (s *fastSink) flush() error {
	if len(s.cur) > 0 {
		s.todo <- s.cur
		s.cur = nil
	}
	if s.todo != nil {
		s.todo <- nil
		<-s.ack
	}
	return s.failed()
}

// sum flushes and returns the bytes written and their CRC-32C since the
// last reset.
func (s *fastSink) sum() (int64, uint32, error) {
	err := s.flush()
	return s.written, s.crc, err
}

// reset flushes and starts a new count and CRC.
func (s *fastSink) reset() error {
	err := s.flush()
	s.written, s.crc = 0, 0
	return err
}

// close ends the goroutine; bytes not yet flushed are dropped.
func (s *fastSink) close() {
	if s.todo == nil {
		return
	}
	s.stop.Store(true)
	close(s.todo)
	<-s.done
	s.todo = nil
	s.cur = nil
}
