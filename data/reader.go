package data

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
)

// errClosed is the cause of a run stopped by Reader.Close.
var errClosed = errors.New("data: reader closed")

// Reader reads FASTA inputs with persistent worker goroutines and returns
// their records block by block, in input order. Next is meant for one
// consumer goroutine; QueueDepth and Close may be called from any goroutine.
type Reader struct {
	opts   Options
	inputs []string

	ctx    context.Context // the run: cancelled on the first error, on Close, or with Open's ctx
	cancel context.CancelCauseFunc
	order  chan *slot // blocks in input order, filled or being filled; cap Workers*Prefetch
	jobs   chan *job
	idle   chan struct{} // closed when the dispatcher and all workers have returned
	wg     sync.WaitGroup
	closed sync.Once

	trackers []*tracker // one per worker, then the dispatcher
	ready    atomic.Int64

	mu      sync.Mutex
	sources map[*source]struct{} // open inputs, closed on cancellation
	stopped bool

	// Consumer state, owned by Next.
	cur      *slot
	index    int64
	lineBase int
}

// slot is one block's place in the input order.
type slot struct {
	done      chan struct{} // closed when blk or err is set
	blk       *Block
	breaks    int  // line breaks in the block's byte span
	fileStart bool // first block of a file: line numbers restart
	err       error
}

// source is one open input.
type source struct {
	name    string
	r       io.Reader
	closeFn func() error // nil: nothing to close
	own     bool         // closed when done (false for stdin: closed only on cancellation)
	once    sync.Once
	refs    atomic.Int64 // range jobs not yet finished
}

func (s *source) close() {
	s.once.Do(func() {
		if s.closeFn != nil {
			_ = s.closeFn() // read-only input: nothing to flush, the error says nothing new
		}
	})
}

// job is one unit of work for a worker: a byte range of a regular file, or a
// whole stream read sequentially (the worker then pushes its own slots).
type job struct {
	src        *source
	ra         io.ReaderAt
	s, e, size int64
	slot       *slot
	stream     bool
	done       chan struct{} // stream jobs: closed when the stream is finished
}

// tracker records when a goroutine entered a blocking read, for StallTimeout.
type tracker struct {
	since atomic.Int64 // unix nanoseconds; 0 when not inside a read
	name  atomic.Pointer[string]
}

func (t *tracker) begin(name *string) {
	t.name.Store(name)
	t.since.Store(time.Now().UnixNano())
}

func (t *tracker) end() { t.since.Store(0) }

type progressReader struct {
	r    io.Reader
	t    *tracker
	name *string
}

func (p *progressReader) Read(b []byte) (int, error) {
	p.t.begin(p.name)
	n, err := p.r.Read(b)
	p.t.end()
	return n, err
}

type statReaderAt interface {
	io.ReaderAt
	Stat() (fs.FileInfo, error)
}

// Open checks the inputs and starts the reader goroutines. A missing input is
// reported here when Options.Open is not set; with a custom Open, failures
// come from Next. Cancelling ctx stops the run. Close must be called.
func Open(ctx context.Context, inputs []string, opts Options) (*Reader, error) {
	opts = opts.withDefaults()
	if opts.Stdin == nil {
		opts.Stdin = os.Stdin
	}
	if opts.Open == nil {
		for _, name := range inputs {
			if name == "-" {
				continue
			}
			fi, err := os.Stat(name)
			if err != nil {
				return nil, fmt.Errorf("data: input %s: %w", name, err)
			}
			if fi.IsDir() {
				return nil, fmt.Errorf("data: input %s: is a directory", name)
			}
		}
		opts.Open = func(name string) (io.ReadCloser, error) { return os.Open(name) }
	}
	r := &Reader{
		opts:     opts,
		inputs:   slices.Clone(inputs),
		order:    make(chan *slot, opts.Workers*opts.Prefetch),
		jobs:     make(chan *job),
		idle:     make(chan struct{}),
		sources:  make(map[*source]struct{}),
		trackers: make([]*tracker, opts.Workers+1),
	}
	r.ctx, r.cancel = context.WithCancelCause(ctx)
	for i := range r.trackers {
		r.trackers[i] = new(tracker)
	}

	var busy sync.WaitGroup
	for i := range opts.Workers {
		busy.Go(func() { r.worker(r.trackers[i]) })
	}
	busy.Go(func() { r.dispatch(r.trackers[opts.Workers]) })
	r.wg.Go(func() {
		busy.Wait()
		close(r.idle)
	})
	r.wg.Go(r.closer)
	if opts.StallTimeout > 0 {
		r.wg.Go(r.watchdog)
	}
	return r, nil
}

// Next returns the next non-empty block in input order, io.EOF after the last
// one, or the error that ended the run. It returns ctx.Err() if ctx ends
// first; the Reader stays usable then.
func (r *Reader) Next(ctx context.Context) (*Block, error) {
	for {
		if err := r.failure(); err != nil {
			return nil, err
		}
		if r.cur == nil {
			select {
			case sl, ok := <-r.order:
				if !ok {
					if err := r.failure(); err != nil {
						return nil, err
					}
					return nil, io.EOF
				}
				r.cur = sl
			case <-r.ctx.Done():
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		select {
		case <-r.cur.done:
		case <-r.ctx.Done():
			continue
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		sl := r.cur
		r.cur = nil
		if sl.err != nil {
			return nil, sl.err
		}
		r.ready.Add(-1)
		if sl.fileStart {
			r.lineBase = 0
		}
		recs := sl.blk.Records
		for i := range recs {
			recs[i].Line += r.lineBase + 1
			recs[i].Index = r.index
			r.index++
		}
		r.lineBase += sl.breaks
		if len(recs) > 0 {
			return sl.blk, nil
		}
	}
}

// QueueDepth returns the number of finished blocks waiting for Next.
func (r *Reader) QueueDepth() int { return int(r.ready.Load()) }

// Close stops the run, closes the open inputs and waits for every goroutine.
// It is idempotent and always returns nil. Options.Stdin is closed only when
// a run is stopped early and it implements io.Closer. A Read on an input
// that never returns, even once the input is closed, delays Close until it
// does.
func (r *Reader) Close() error {
	r.closed.Do(func() {
		r.cancel(errClosed)
		r.wg.Wait()
	})
	return nil
}

// failure returns the error that ended the run, or nil while it runs.
func (r *Reader) failure() error {
	if r.ctx.Err() == nil {
		return nil
	}
	cause := context.Cause(r.ctx)
	if errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded) {
		return fmt.Errorf("data: reading stopped: %w", cause)
	}
	return cause
}

func (r *Reader) fail(err error) { r.cancel(err) }

// register adds src to the open inputs; if the run is already stopped it
// closes src and returns false.
func (r *Reader) register(src *source) bool {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		src.close()
		return false
	}
	r.sources[src] = struct{}{}
	r.mu.Unlock()
	return true
}

// release removes src from the open inputs and closes it if it is ours.
func (r *Reader) release(src *source) {
	r.mu.Lock()
	delete(r.sources, src)
	r.mu.Unlock()
	if src.own {
		src.close()
	}
}

// closer closes every open input when the run is cancelled, so that reads
// blocked in them return.
func (r *Reader) closer() {
	select {
	case <-r.ctx.Done():
	case <-r.idle:
		return
	}
	r.mu.Lock()
	r.stopped = true
	srcs := r.sources
	r.sources = nil
	r.mu.Unlock()
	for src := range srcs {
		src.close()
	}
}

// watchdog ends the run when a read has been blocked for StallTimeout.
func (r *Reader) watchdog() {
	timeout := r.opts.StallTimeout
	tick := time.NewTicker(max(min(timeout/4, time.Second), time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.idle:
			return
		case now := <-tick.C:
			for _, t := range r.trackers {
				since := t.since.Load()
				if since == 0 || now.UnixNano()-since < int64(timeout) {
					continue
				}
				name := "?"
				if p := t.name.Load(); p != nil {
					name = *p
				}
				r.fail(fmt.Errorf("data: reading %s: no progress for %v (StallTimeout)", name, timeout))
				return
			}
		}
	}
}

// dispatch opens the inputs in order and hands out their work.
func (r *Reader) dispatch(t *tracker) {
	defer close(r.order)
	defer close(r.jobs)
	for _, name := range r.inputs {
		if r.ctx.Err() != nil {
			return
		}
		if err := r.dispatchFile(name, t); err != nil {
			r.fail(err)
			return
		}
	}
}

func (r *Reader) dispatchFile(name string, t *tracker) error {
	if name == "-" {
		src := &source{name: name, r: r.opts.Stdin}
		if c, ok := r.opts.Stdin.(io.Closer); ok {
			src.closeFn = c.Close
		}
		if !r.register(src) {
			return nil
		}
		return r.runStream(src)
	}
	t.begin(&name)
	rc, err := r.opts.Open(name)
	t.end()
	if err != nil {
		return fmt.Errorf("data: opening %s: %w", name, err)
	}
	src := &source{name: name, r: rc, closeFn: rc.Close, own: true}
	if !r.register(src) {
		return nil
	}
	if ra, ok := rc.(statReaderAt); ok {
		fi, err := ra.Stat()
		if err != nil {
			r.release(src)
			return fmt.Errorf("data: %s: %w", name, err)
		}
		if fi.Mode().IsRegular() {
			var magic [2]byte
			t.begin(&name)
			n, err := ra.ReadAt(magic[:], 0)
			t.end()
			if err != nil && !errors.Is(err, io.EOF) {
				r.release(src)
				return fmt.Errorf("data: reading %s at byte 0: %w", name, err)
			}
			if n < 2 || magic[0] != 0x1f || magic[1] != 0x8b {
				return r.dispatchRanges(src, ra, fi.Size())
			}
		}
	}
	return r.runStream(src)
}

// runStream hands a sequential input to a worker and waits until it is read:
// the worker pushes the stream's slots itself, so nothing after it may be
// dispatched meanwhile.
func (r *Reader) runStream(src *source) error {
	j := &job{src: src, stream: true, done: make(chan struct{})}
	select {
	case r.jobs <- j:
	case <-r.ctx.Done():
		r.release(src)
		return nil
	}
	<-j.done // the worker returns promptly on cancellation: its input gets closed
	return nil
}

func (r *Reader) dispatchRanges(src *source, ra io.ReaderAt, size int64) error {
	bb := int64(r.opts.BlockBytes)
	n := (size + bb - 1) / bb
	if n == 0 {
		r.release(src)
		return nil
	}
	src.refs.Store(n)
	for i := range n {
		sl := &slot{done: make(chan struct{}), fileStart: i == 0}
		select {
		case r.order <- sl:
		case <-r.ctx.Done():
			return nil
		}
		j := &job{src: src, ra: ra, s: i * bb, e: min(size, (i+1)*bb), size: size, slot: sl}
		select {
		case r.jobs <- j:
		case <-r.ctx.Done():
			return nil
		}
	}
	return nil
}

func (r *Reader) worker(t *tracker) {
	for {
		select {
		case j, ok := <-r.jobs:
			if !ok {
				return
			}
			if j.stream {
				if err := r.readStream(j.src, t); err != nil {
					r.fail(err)
				}
				r.release(j.src)
				close(j.done)
				continue
			}
			blk, breaks, err := r.readRange(j, t)
			if j.src.refs.Add(-1) == 0 {
				r.release(j.src)
			}
			if err != nil {
				r.fail(err)
				j.slot.err = err
			} else {
				j.slot.blk, j.slot.breaks = blk, breaks
				r.ready.Add(1)
			}
			close(j.slot.done)
		case <-r.ctx.Done():
			return
		}
	}
}

// overshoot is how far past its range end a range worker reads at first.
func overshoot(blockBytes int) int {
	return min(max(blockBytes/8, 512), 64<<10)
}

// readRange parses the records whose header lines start in [j.s, j.e).
func (r *Reader) readRange(j *job, t *tracker) (*Block, int, error) {
	if err := r.ctx.Err(); err != nil {
		return nil, 0, context.Cause(r.ctx)
	}
	name := j.src.name
	start := max(j.s-1, 0) // one byte before the range tells whether j.s starts a line
	from := int(j.s - start)
	ext := int64(overshoot(r.opts.BlockBytes))
	eof := false
	readAt := func(p []byte, off int64) (int, error) {
		t.begin(&name)
		n, err := j.ra.ReadAt(p, off)
		t.end()
		if errors.Is(err, io.EOF) {
			eof = true
			err = nil
		}
		if err != nil {
			return n, fmt.Errorf("data: reading %s at byte %d: %w", name, off+int64(n), err)
		}
		return n, nil
	}
	buf := make([]byte, min(j.size, j.e+ext)-start)
	n, err := readAt(buf, start)
	if err != nil {
		return nil, 0, err
	}
	buf = buf[:n]
	if start+int64(len(buf)) >= j.size {
		eof = true
	}
	cr := bytes.IndexByte(buf, '\r') >= 0
	more := func() error {
		old := len(buf)
		want := min(ext, j.size-(start+int64(old)))
		if want <= 0 {
			eof = true
			return nil
		}
		buf = slices.Grow(buf, int(want))[:old+int(want)]
		n, err := readAt(buf[old:], start+int64(old))
		buf = buf[:old+n]
		if err != nil {
			return err
		}
		if n == 0 || start+int64(len(buf)) >= j.size {
			eof = true
		}
		cr = cr || bytes.IndexByte(buf[old:], '\r') >= 0
		ext *= 2
		return nil
	}
	limit := min(int(j.e-start), len(buf))
	if limit <= from {
		return &Block{}, 0, nil // the file shrank under us
	}
	// Read at least one byte past the range end (to tell CRLF from a lone
	// CR there), and past the blanks that open a line at the end of the
	// range: a header line starting in the range may have its '>' after them.
	for !eof {
		if len(buf) > limit {
			if !isBlank(buf[limit-1]) {
				break
			}
			k := limit - 1
			for k > from && isBlank(buf[k-1]) {
				k--
			}
			if k > 0 && buf[k-1] != '\n' && buf[k-1] != '\r' {
				break // blanks inside a line: no header can start there
			}
			i := limit
			for i < len(buf) && isBlank(buf[i]) {
				i++
			}
			if i < len(buf) {
				break
			}
		}
		if err := more(); err != nil {
			return nil, 0, err
		}
	}
	breaks := countBreaks(buf, from, limit, cr)

	h0 := findHeader(buf, from, from)
	end := from
	switch {
	case h0 >= 0 && h0 < limit:
		// Read on to the first header line starting at or after the range end.
		search := limit
		for {
			if h := findHeader(buf, limit, search); h >= 0 {
				end = h
				break
			}
			if eof {
				end = len(buf)
				break
			}
			search = len(buf)
			if err := more(); err != nil {
				return nil, 0, err
			}
		}
	case j.s == 0:
		// No header in the first range: the text before the first header is
		// a problem record, which may run past the range.
		search := from
		for h0 < 0 && !eof {
			search = len(buf)
			if err := more(); err != nil {
				return nil, 0, err
			}
			h0 = findHeader(buf, from, search)
		}
		end = h0
		if h0 < 0 {
			end = len(buf)
		}
	}
	recs := parseChunk(buf[:end], from, from, j.s == 0, cr, name)
	return &Block{Records: recs}, breaks, nil
}

// readStream reads a sequential input (stdin, gzip, or a reader without
// ReadAt), cuts it into blocks at header lines and pushes them in order.
func (r *Reader) readStream(src *source, t *tracker) error {
	name := src.name
	br := bufio.NewReaderSize(&progressReader{r: src.r, t: t, name: &name}, 64<<10)
	var in io.Reader = br
	what := "reading " + name
	magic, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("data: %s at byte 0: %w", what, err)
	}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("data: %s: gzip header: %w", what, err)
		}
		defer zr.Close()
		in = zr
		what = "decompressing " + name
	}

	bb := r.opts.BlockBytes
	target := max(bb, 1)
	var carry []byte
	first, eof := true, false
	var off int64 // input bytes (decompressed) before the current block
	lines := 0    // line breaks before the current block
	for !eof || len(carry) > 0 {
		sl := &slot{done: make(chan struct{}), fileStart: first}
		select {
		case r.order <- sl:
		case <-r.ctx.Done():
			return nil
		}
		buf := make([]byte, len(carry), max(bb+bb/4, 2*len(carry), 64<<10))
		copy(buf, carry)
		cut, search := -1, target
		for cut < 0 {
			if len(buf) > target {
				if h := findHeader(buf, target, search); h >= 0 {
					cut = h
					break
				}
				search = len(buf)
			}
			if eof {
				cut = len(buf)
				break
			}
			if cap(buf)-len(buf) < 32<<10 {
				buf = slices.Grow(buf, max(len(buf)/2, 64<<10))
			}
			n, err := in.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if errors.Is(err, io.EOF) {
				eof = true
			} else if err != nil {
				if r.ctx.Err() != nil {
					err = context.Cause(r.ctx)
				}
				sl.err = fmt.Errorf("data: %s after byte %d (line %d): %w", what, off+int64(len(buf)), lines+countBreaks(buf, 0, len(buf), true)+1, err)
				close(sl.done)
				return sl.err
			}
		}
		chunk := buf[:cut]
		cr := bytes.IndexByte(chunk, '\r') >= 0
		breaks := countBreaks(chunk, 0, cut, cr) // before parseChunk compacts
		sl.blk = &Block{Records: parseChunk(chunk, 0, 0, first, cr, name)}
		sl.breaks = breaks
		r.ready.Add(1)
		close(sl.done)
		carry = buf[cut:]
		off += int64(cut)
		lines += breaks
		first = false
	}
	return nil
}
