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
	shard  shardPlan // with Options.Shard: the byte range of each input this shard reads

	ctx    context.Context // the run: cancelled on the first error, on Close, or with Open's ctx
	cancel context.CancelCauseFunc
	order  chan *slot // blocks in input order, filled or being filled; cap Workers*Prefetch
	jobs   chan *job
	idle   chan struct{} // closed when the dispatcher and all workers have returned
	wg     sync.WaitGroup
	closed sync.Once

	trackers []*tracker // one per worker, then the dispatcher
	ready    atomic.Int64

	size      int64        // input bytes this reader reads in all (InputSize)
	sizeKnown bool         // false when an input has no size (stdin, a pipe, a custom Open)
	consumed  atomic.Int64 // input bytes of the blocks Next has passed (InputBytes)

	mu      sync.Mutex
	sources map[*source]struct{} // open inputs, closed on cancellation
	stopped bool

	// Consumer state, owned by Next.
	cur      *slot
	index    int64
	lineBase int
	lineFrom int64 // Record.LineFrom of the current file's records

	linesMu     sync.Mutex
	linesBefore map[lineKey]lineCount // Line's cache: line breaks before a shard's part of a file
}

// slot is one unit of input order: a byte range of a regular file, or one
// block of a sequential input. Its worker sends the slot's blocks on out (a
// range holding more than blockRecords records gives several) and closes
// it; err, when set, is set before.
type slot struct {
	out       chan *Block // capacity 1: a slot holds at most one finished block and one being built
	fileStart bool        // first slot of a file (or of a shard's part of it): line numbers restart
	lineFrom  int64       // with fileStart: the byte where line counting starts (a shard's part), else 0
	err       error
}

func newSlot(fileStart bool, lineFrom int64) *slot {
	return &slot{out: make(chan *Block, 1), fileStart: fileStart, lineFrom: lineFrom}
}

// source is one open input.
type source struct {
	name    string
	r       io.Reader
	closeFn func() error // nil: nothing to close
	own     bool         // closed when done (false for the caller's stdin: closed only on cancellation)
	once    sync.Once
	refs    atomic.Int64 // range jobs not yet finished
	bom     bool         // a regular plain file that starts with a UTF-8 byte order mark
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
	n    int64 // bytes read so far (the reading worker's own count)
}

func (p *progressReader) Read(b []byte) (int, error) {
	p.t.begin(p.name)
	n, err := p.r.Read(b)
	p.t.end()
	p.n += int64(n)
	return n, err
}

type statReaderAt interface {
	io.ReaderAt
	Stat() (fs.FileInfo, error)
}

// Open checks the inputs and starts the reader goroutines. A missing input is
// reported here when Options.Open is not set; with a custom Open, failures
// come from Next. Open itself never blocks on an input (a named pipe without
// a writer included). Cancelling ctx stops the run. Close must be called.
func Open(ctx context.Context, inputs []string, opts Options) (*Reader, error) {
	opts = opts.withDefaults()
	customOpen := opts.Open != nil
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
		opts.Open = openInput
	}
	var shard shardPlan
	if opts.Shard.Count > 1 && customOpen {
		return nil, errors.New("data: sharding reads files by byte range; it cannot be combined with Options.Open")
	}
	if opts.Shard.Count > 1 {
		var err error
		if shard, err = planShard(inputs, opts); err != nil {
			return nil, err
		}
	}
	r := &Reader{
		opts:     opts,
		shard:    shard,
		inputs:   slices.Clone(inputs),
		order:    make(chan *slot, opts.Workers*opts.Prefetch),
		jobs:     make(chan *job),
		idle:     make(chan struct{}),
		sources:  make(map[*source]struct{}),
		trackers: make([]*tracker, opts.Workers+1),
	}
	if !customOpen {
		r.size, r.sizeKnown = inputSize(inputs, shard)
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
				if sl.fileStart {
					r.lineBase = 0
					r.lineFrom = sl.lineFrom
				}
			case <-r.ctx.Done():
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		select {
		case blk, ok := <-r.cur.out:
			if !ok {
				err := r.cur.err
				r.cur = nil
				if err != nil {
					return nil, err
				}
				continue
			}
			r.ready.Add(-1)
			r.consumed.Add(blk.bytes)
			recs := blk.Records
			for i := range recs {
				recs[i].Line += r.lineBase + 1
				recs[i].LineFrom = r.lineFrom
				recs[i].Index = r.index
				r.index++
			}
			r.lineBase += blk.breaks
			if len(recs) > 0 {
				return blk, nil
			}
		case <-r.ctx.Done():
			continue
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// QueueDepth returns the number of finished blocks waiting for Next.
func (r *Reader) QueueDepth() int { return int(r.ready.Load()) }

// InputBytes returns the input bytes behind the blocks Next has returned:
// for a gzip input, compressed bytes. Safe from any goroutine.
func (r *Reader) InputBytes() int64 { return r.consumed.Load() }

// InputSize returns the input bytes the reader reads in all (a shard's
// part; a gzip input's compressed size); ok is false when an input has no
// size known up front (stdin, a named pipe, a custom Options.Open).
func (r *Reader) InputSize() (size int64, ok bool) { return r.size, r.sizeKnown }

// inputSize sums the sizes of inputs (their parts in shard), false when one
// is not a regular file.
func inputSize(inputs []string, shard shardPlan) (int64, bool) {
	var total int64
	for i, name := range inputs {
		if name == "-" {
			return 0, false
		}
		fi, err := os.Stat(name)
		if err != nil || !fi.Mode().IsRegular() {
			return 0, false
		}
		switch {
		case !shard.on:
			total += fi.Size()
		case shard.ranges[i].whole:
			total += fi.Size()
		default:
			total += max(0, min(shard.ranges[i].b, fi.Size())-shard.ranges[i].a)
		}
	}
	return total, true
}

// Close stops the run, closes the open inputs and waits for every goroutine.
// It is idempotent and always returns nil. Options.Stdin is closed only when
// a run is stopped early and it implements io.Closer, and never when it is
// a pipe or socket *os.File on Linux (a duplicate of it is read and closed
// instead). A Read on an input that never returns, even once the input is
// closed, delays Close until it does (see Cancellation in the package doc).
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
	for i, name := range r.inputs {
		if r.ctx.Err() != nil {
			return
		}
		if r.shard.on && r.shard.ranges[i].empty() {
			continue
		}
		if err := r.dispatchFile(i, name, t); err != nil {
			r.fail(err)
			return
		}
	}
}

func (r *Reader) dispatchFile(i int, name string, t *tracker) error {
	if name == "-" {
		src := &source{name: name, r: r.opts.Stdin}
		if f, ok := r.opts.Stdin.(*os.File); ok {
			if rc, ok := pollableStdin(f); ok {
				src = &source{name: name, r: rc, closeFn: rc.Close, own: true}
			}
		}
		if c, ok := src.r.(io.Closer); ok && src.closeFn == nil {
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
			var magic [3]byte
			t.begin(&name)
			n, err := ra.ReadAt(magic[:], 0)
			t.end()
			if err != nil && !errors.Is(err, io.EOF) {
				r.release(src)
				return fmt.Errorf("data: reading %s at byte 0: %w", name, err)
			}
			if n < 2 || magic[0] != 0x1f || magic[1] != 0x8b {
				src.bom = n == len(magic) && bytes.Equal(magic[:], utf8BOM)
				a, b := int64(0), fi.Size()
				if r.shard.on {
					a, b = r.shard.ranges[i].a, min(r.shard.ranges[i].b, fi.Size())
				}
				return r.dispatchRanges(src, ra, fi.Size(), a, b)
			}
			if r.shard.on && !r.shard.ranges[i].whole {
				r.release(src) // gzip: whole files only, and this one is another shard's
				return nil
			}
		}
	}
	if r.shard.on && !r.shard.ranges[i].whole {
		r.release(src) // a plain file that cannot be read in ranges: not split, and not this shard's
		return nil
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

// dispatchRanges reads bytes [a, b) of a regular file of size bytes (the
// whole file, or a shard's part of it) in BlockBytes ranges.
func (r *Reader) dispatchRanges(src *source, ra io.ReaderAt, size, a, b int64) error {
	bb := int64(r.opts.BlockBytes)
	n := (b - a + bb - 1) / bb
	if n <= 0 {
		r.release(src)
		return nil
	}
	src.refs.Store(n)
	for i := range n {
		s := a + i*bb
		sl := newSlot(i == 0, a)
		select {
		case r.order <- sl:
		case <-r.ctx.Done():
			return nil
		}
		j := &job{src: src, ra: ra, s: s, e: min(b, s+bb), size: size, slot: sl}
		select {
		case r.jobs <- j:
		case <-r.ctx.Done():
			return nil
		}
	}
	return nil
}

// scratch is a worker's reusable read buffers; records never point into
// them.
type scratch struct {
	buf []byte // a range and its overshoot, or a stream's reads
	ext []byte // reads past a range's end
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

func (r *Reader) worker(t *tracker) {
	var w scratch
	for {
		select {
		case j, ok := <-r.jobs:
			if !ok {
				return
			}
			if j.stream {
				if err := r.readStream(j.src, t, &w); err != nil {
					r.fail(err)
				}
				r.release(j.src)
				close(j.done)
				continue
			}
			err := r.readRange(j, t, &w)
			if j.src.refs.Add(-1) == 0 {
				r.release(j.src)
			}
			if err != nil {
				r.fail(err)
				j.slot.err = err
			}
			close(j.slot.out)
		case <-r.ctx.Done():
			return
		}
	}
}

// put hands a finished block to the consumer; false if the run stopped
// first.
func (r *Reader) put(sl *slot, blk *Block) bool {
	r.ready.Add(1)
	select {
	case sl.out <- blk:
		return true
	case <-r.ctx.Done():
		r.ready.Add(-1)
		return false
	}
}

// overshoot is how far past its range end a range worker reads at first.
func overshoot(blockBytes int) int {
	return min(max(blockBytes/8, 512), 64<<10)
}

// maxExtension caps the reads past a range's end (the tail of its last
// record, however long, is read in pieces of at most this size).
const maxExtension = 1 << 20

// readRange parses the records whose header lines start in [j.s, j.e) and
// sends them to j.slot: one block, or several when they are many. Reading
// goes on past j.e to the end of the last record, in pieces; the parser
// keeps only what its caps allow, so memory does not grow with a record.
func (r *Reader) readRange(j *job, t *tracker, w *scratch) error {
	if err := r.ctx.Err(); err != nil {
		return context.Cause(r.ctx)
	}
	name := j.src.name
	start := max(j.s-1, 0) // one byte before the range tells whether j.s starts a line
	from := int(j.s - start)
	ext := int64(overshoot(r.opts.BlockBytes))
	readAt := func(p []byte, off int64) (int, bool, error) {
		t.begin(&name)
		n, err := j.ra.ReadAt(p, off)
		t.end()
		if errors.Is(err, io.EOF) {
			return n, true, nil
		}
		if err != nil {
			return n, false, fmt.Errorf("data: reading %s at byte %d: %w", name, off+int64(n), err)
		}
		return n, off+int64(n) >= j.size, nil
	}
	w.buf = grow(w.buf, int(min(j.size, j.e+ext)-start))
	n, eof, err := readAt(w.buf, start)
	if err != nil {
		return err
	}
	buf := w.buf[:n]
	limit := min(int(j.e-start), len(buf))
	if limit <= from {
		return nil // the file shrank under us
	}
	// The range's line breaks; buf holds at least one byte past the range
	// (unless the file ends there) to tell CRLF from a lone CR.
	breaks := countBreaks(buf, from, limit, bytes.IndexByte(buf, '\r') >= 0)

	p := newParser(name, r.opts)
	chunk, off := buf[from:], start+int64(len(buf))
	bom := int64(len(utf8BOM))
	switch {
	case j.src.bom && j.e <= bom: // inside the byte order mark: no record, no line break
		blk := p.take()
		blk.bytes = j.e - j.s
		if !r.put(j.slot, blk) {
			return context.Cause(r.ctx)
		}
		return nil
	case j.src.bom && j.s <= bom:
		// The range holding the first byte after the mark reads from
		// there as a file's first range does.
		p.skipBOM()
		chunk = buf[bom-start:]
	case j.s == 0:
		p.pos = 0
	default:
		p.startRange(j.s, buf[0])
	}
	if cap(p.recs) == 0 {
		p.recs = make([]Record, 0, min(bytes.Count(buf[from:limit], []byte{'>'})+1, p.maxRecs))
	}
	sent := 0 // line breaks in the blocks sent so far
	for {
		k, ev := p.feed(chunk, j.e)
		chunk = chunk[k:]
		if ev == evFull {
			blk := p.take()
			sent += blk.breaks
			if !r.put(j.slot, blk) {
				return context.Cause(r.ctx)
			}
			continue
		}
		if ev == evStop {
			break
		}
		if eof {
			p.finish()
			break
		}
		if err := r.ctx.Err(); err != nil {
			return context.Cause(r.ctx)
		}
		w.ext = grow(w.ext, int(min(ext, j.size-off, maxExtension)))
		n, eof, err = readAt(w.ext, off)
		if err != nil {
			return err
		}
		chunk, off = w.ext[:n], off+int64(n)
		if n == 0 {
			eof = true
		}
		ext = min(2*ext, maxExtension)
	}
	blk := p.take()
	blk.breaks = breaks - sent
	blk.bytes = j.e - j.s
	if !r.put(j.slot, blk) {
		return context.Cause(r.ctx)
	}
	return nil
}

// streamRead is what readStream reads at a time.
const streamRead = 256 << 10

// readStream reads a sequential input (stdin, gzip, or a reader without
// ReadAt), cuts it into blocks at header lines and pushes them in order.
func (r *Reader) readStream(src *source, t *tracker, w *scratch) error {
	name := src.name
	pr := &progressReader{r: src.r, t: t, name: &name}
	br := bufio.NewReaderSize(pr, 64<<10)
	var in io.Reader = br
	what := "reading " + name
	magic, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		if r.ctx.Err() != nil {
			err = context.Cause(r.ctx)
		}
		return fmt.Errorf("data: %s at byte 0: %w", what, err)
	}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("data: %s: gzip header: %w", what, err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 64<<10) // for the BOM's Peek below
		in = br
		what = "decompressing " + name
	}

	target := int64(max(r.opts.BlockBytes, 1))
	p := newParser(name, r.opts)
	// A read error here is returned again by the first Read below.
	if head, _ := br.Peek(len(utf8BOM)); bytes.Equal(head, utf8BOM) {
		br.Discard(len(utf8BOM))
		p.skipBOM()
	}
	w.buf = grow(w.buf, streamRead)
	var chunk []byte
	eof, first := false, true
	var blockStart int64 // input offset where the current block starts
	lines := 0           // line breaks before the current block
	var counted int64    // input bytes accounted to blocks sent
	for {
		sl := newSlot(first, 0)
		select {
		case r.order <- sl:
		case <-r.ctx.Done():
			return nil
		}
		stop := blockStart + target
		for {
			if len(chunk) == 0 {
				if eof {
					p.finish()
					break
				}
				if r.ctx.Err() != nil { // a record without end must not outlive the run
					close(sl.out)
					return nil
				}
				n, err := in.Read(w.buf)
				chunk = w.buf[:n]
				if errors.Is(err, io.EOF) {
					eof = true
				} else if err != nil {
					if r.ctx.Err() != nil {
						err = context.Cause(r.ctx)
					}
					sl.err = fmt.Errorf("data: %s after byte %d (line %d): %w", what, p.pos+int64(n), lines+p.line+countBreaks(chunk, 0, n, true)+1, err)
					close(sl.out)
					return sl.err
				}
				continue
			}
			k, ev := p.feed(chunk, stop)
			chunk = chunk[k:]
			if ev != evMore {
				blockStart = p.pos // the header line's '>': blanks before it hold no breaks
				break
			}
		}
		final := eof && len(chunk) == 0
		blk := p.take()
		blk.bytes, counted = pr.n-counted, pr.n
		lines += blk.breaks
		if !r.put(sl, blk) {
			close(sl.out)
			return nil
		}
		close(sl.out)
		if final {
			return nil
		}
		first = false
	}
}
