package embed

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/internal/par"
)

// Device is one compute device of a run (RunDevices).
type Device struct {
	// Name identifies the device in logs, errors and the Summary ("cuda:0").
	Name string
	// Open loads the model on the device. RunDevices calls it on the
	// device's worker goroutine, locked to its OS thread for the whole run,
	// and closes the model (Model.Close) at the end: the worker is the only
	// goroutine that calls the model and its backend. Closing the backend
	// itself is Open's caller's business (e.g. a Close in the same closure's
	// scope after RunDevices returns) unless Close is set.
	Open func() (*esm.Model, error)
	// Close, when set, runs on the worker goroutine after the model is
	// closed (to release a backend created by Open on that goroutine).
	Close func() error
	// ToksPerBatch is this device's token budget; 0 = Options.ToksPerBatch.
	// Batches larger than it are split before they are launched.
	ToksPerBatch int

	model *esm.Model // Run: already open, computes on the calling goroutine
}

// DeviceSummary is one device's share of a run.
type DeviceSummary struct {
	Name                   string
	Batches, Tokens        int64
	Sequences              int64         // sequences computed, counted as their batch completes
	Compute                time.Duration // inside the forward pass
	LoaderWait, WriterWait time.Duration // waiting for a batch / a free output buffer
	ToksPerBatch           int           // its token budget now (lowered after out-of-memory)
	// Device memory of the backend's allocator after the last batch, where
	// the backend reports it (a GPU): bytes in use and reserved.
	MemInUse, MemReserved int64
	MemKnown              bool
}

// deviceStats is a worker's account, written by the worker and read by
// snapshot from other goroutines.
type deviceStats struct {
	mu sync.Mutex
	d  DeviceSummary
}

func (s *deviceStats) load() DeviceSummary {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.d
}

func (s *deviceStats) update(f func(d *DeviceSummary)) {
	s.mu.Lock()
	f(&s.d)
	s.mu.Unlock()
}

// worker runs batches on one device.
type worker struct {
	p      *pipeline
	dev    Device
	m      *esm.Model
	budget int // tokens per batch on this device
	maxSeq int // the longest sequence (tokens) the device embeds whole
	stats  deviceStats

	depth   int           // at most this many batches in flight (2)
	outs    []*esm.Output // depth outputs in rotation
	flights []flight      // oldest first
	failed  bool          // a fence reported a device error: later results are dropped
}

// flight is a batch launched on the device whose rows have not yet been
// handed to the writer.
type flight struct {
	j      *job
	pooled bool // j goes back to the free pool when done (not a part of a split)
	out    *esm.Output
	fence  esm.Fence
}

// workers is the set of running device workers.
type workers struct {
	p       *pipeline
	openErr chan error    // one per worker once its device is open (or failed to open)
	start   chan struct{} // closed when the packer runs
	ctx     context.Context
	errs    []error
	wg      sync.WaitGroup
	inline  bool // Run: one open model on the caller's goroutine
}

// startWorkers opens every device on its own goroutine, locked to its OS
// thread (an already open model, from Run, stays on the caller's).
func (p *pipeline) startWorkers(ctx context.Context) *workers {
	cw := &workers{p: p, openErr: make(chan error, len(p.workers)), start: make(chan struct{}), ctx: ctx,
		errs: make([]error, len(p.workers))}
	if len(p.workers) == 1 && p.workers[0].dev.model != nil {
		w := p.workers[0]
		w.m = w.dev.model
		w.setBudget()
		cw.inline = true
		return cw
	}
	for i, w := range p.workers {
		cw.wg.Add(1)
		go func() {
			defer cw.wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cw.errs[i] = w.openAndRun(cw)
			if cw.errs[i] != nil {
				p.cancel()
			}
		}()
	}
	return cw
}

// opened waits until every device is open; the first failure is returned.
func (cw *workers) opened() error {
	if cw.inline {
		return nil
	}
	var errs error
	for range cw.p.workers {
		errs = errors.Join(errs, <-cw.openErr)
	}
	return errs
}

// run lets the workers take batches and waits for them to end.
func (cw *workers) run(ctx context.Context) error {
	if cw.inline {
		return cw.p.workers[0].run(ctx)
	}
	close(cw.start)
	return cw.wait()
}

// wait waits for every worker goroutine to end.
func (cw *workers) wait() error {
	select {
	case <-cw.start:
	default:
		close(cw.start) // after a failed open: let the others end
	}
	cw.wg.Wait()
	return errors.Join(cw.errs...)
}

// setBudget fixes the worker's token budget: the device's own, else the
// run's, else the model's automatic budget for its device; and the longest
// sequence it embeds whole. It runs on the worker's goroutine (it asks the
// device for its free memory).
func (w *worker) setBudget() {
	w.maxSeq = w.m.MaxSequenceTokens()
	switch {
	case w.dev.ToksPerBatch > 0:
		w.budget = w.dev.ToksPerBatch
	case w.p.o.ToksPerBatch > 0:
		w.budget = w.p.o.ToksPerBatch
	case w.p.o.Windowing.On():
		w.budget = w.m.AutoTokensPerBatch(w.p.o.Windowing.Size)
	default:
		w.budget = w.m.AutoTokensPerBatch(w.p.o.MaxResidues)
	}
	w.stats.update(func(d *DeviceSummary) { d.Name, d.ToksPerBatch = w.dev.Name, w.budget })
}

// openAndRun opens the worker's device, reports on cw.openErr, waits for the
// start and runs; the model is closed (and Device.Close called) on this
// goroutine before it returns.
func (w *worker) openAndRun(cw *workers) (err error) {
	name := w.dev.Name
	reported := false
	defer func() {
		if !reported {
			cw.openErr <- err
		}
		if w.dev.Close != nil {
			if cerr := w.dev.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("embed: device %s: close: %w", name, cerr))
			}
		}
	}()
	m, err := w.dev.Open()
	if err != nil {
		return fmt.Errorf("embed: device %s: %w", name, err)
	}
	defer func() {
		if cerr := m.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("embed: device %s: close model: %w", name, cerr))
		}
	}()
	if m.Cfg != w.p.cfg {
		return fmt.Errorf("embed: device %s opened a model of another shape (%d layers, dim %d; the run's is %d, %d)",
			name, m.Cfg.Layers, m.Cfg.Dim, w.p.cfg.Layers, w.p.cfg.Dim)
	}
	w.m = m
	w.setBudget()
	if err := w.newOutputs(); err != nil {
		return fmt.Errorf("embed: device %s: %w", name, err)
	}
	reported = true
	cw.openErr <- nil
	<-cw.start
	if err := w.run(cw.ctx); err != nil {
		return fmt.Errorf("device %s: %w", name, err)
	}
	return nil
}

// run takes packed batches until the packer is done or ctx ends. Two
// batches are in flight: batch i+1 is launched before the rows of batch i
// are waited for and handed to the writer, so a GPU never idles while the
// host copies out, packs or waits for a result buffer (on the CPU, whose
// Launch computes before it returns, this only holds one finished batch
// while the next is computed). Whatever way run ends (done, error,
// cancellation), the batches already launched are waited for and, unless
// the device failed, handed to the writer, so no computed row is lost; then
// the outputs' backend memory is released.
func (w *worker) run(ctx context.Context) (err error) {
	p := w.p
	req := esm.Request{Layers: p.o.Layers, Reprs: p.o.Include}
	if w.outs == nil {
		if err := w.newOutputs(); err != nil {
			return err
		}
	}
	defer func() {
		err = errors.Join(err, w.finishAll())
		for _, o := range w.outs {
			err = errors.Join(err, o.Release())
		}
	}()
	for {
		t0 := time.Now()
		var j *job
		select {
		case j = <-p.ready:
		default:
			// Nothing ready: hand the batches in flight to the writer
			// rather than hold them (the packer may be waiting for their
			// rows to be written; on the CPU they are already computed).
			if err := w.finishAll(); err != nil {
				return err
			}
			select {
			case j = <-p.ready:
			case <-ctx.Done():
				return nil // the cause is reported by whoever cancelled
			}
		}
		if j == nil {
			return nil // the packer is done
		}
		p.c.readyQueue.Store(int64(len(p.ready)))
		wait := time.Since(t0)
		w.stats.update(func(d *DeviceSummary) { d.LoaderWait += wait })
		if err := w.launch(j, true, req); err != nil {
			return err
		}
	}
}

// newOutputs makes the worker's outputs, one per batch in flight, and
// reserves their per-token memory for the token budget when per-token rows
// come back (per_tok, or windows of long records): pinned on a GPU, it is
// allocated while the device opens, not while the first batches run.
func (w *worker) newOutputs() error {
	req := esm.Request{Layers: w.p.o.Layers, Reprs: w.p.o.Include}
	if w.p.o.Windowing.On() {
		req.Reprs |= esm.PerTok
	}
	w.depth = 2
	w.outs = make([]*esm.Output, w.depth)
	for i := range w.outs {
		w.outs[i] = &esm.Output{}
		if err := w.m.ReserveOutput(w.outs[i], req, w.budget); err != nil {
			return err
		}
	}
	return nil
}

// launch queues one packed batch on the device, then finishes the oldest
// batches until fewer than w.depth are in flight. A batch over this
// device's budget is split first. When the device runs out of memory, the
// batch in flight is finished first, then the batch is split in two and
// each half launched (and this device's budget is halved); a single
// sequence that does not fit is an error.
func (w *worker) launch(j *job, pooled bool, req esm.Request) error {
	p := w.p
	T := len(j.batch.Tokens)
	if T > w.budget && j.batch.NumSeqs() > 1 {
		return w.launchSplit(j, pooled, req)
	}
	out, err := w.freeOutput()
	if err != nil {
		return err
	}
	t := time.Now()
	jreq := req
	if j.perTok {
		jreq.Reprs |= esm.PerTok
	}
	f, err := w.m.Launch(&j.batch, jreq, out)
	spent := time.Since(t)
	w.stats.update(func(d *DeviceSummary) { d.Compute += spent })
	if errors.Is(err, esm.ErrOutOfMemory) && j.batch.NumSeqs() > 1 {
		if err := w.finishAll(); err != nil {
			return err
		}
		if T/2 < w.budget {
			w.budget = max(T/2, esm.DefaultMaxResidues+2)
			w.stats.update(func(d *DeviceSummary) { d.ToksPerBatch = w.budget })
			p.lowerBudget()
		}
		p.o.Log.Warn("out of device memory: splitting the batch and lowering the token budget",
			"device", w.dev.Name, "tokens", T, "sequences", j.batch.NumSeqs(), "budget", w.budget)
		return w.launchSplit(j, pooled, req)
	}
	if err != nil {
		return fmt.Errorf("embed: batch of %d sequences (%d tokens), first record index %d: %w",
			j.batch.NumSeqs(), T, j.recs[0].index, err)
	}
	w.flights = append(w.flights, flight{j: j, pooled: pooled, out: out, fence: f})
	for len(w.flights) >= w.depth {
		if err := w.finish(); err != nil {
			return err
		}
	}
	return nil
}

// launchSplit launches the two halves of j.
func (w *worker) launchSplit(j *job, pooled bool, req esm.Request) error {
	a, b := j.split()
	if pooled {
		w.p.free <- j // never blocks: the pool holds exactly cap(free) jobs
	}
	if err := w.launch(a, false, req); err != nil {
		return err
	}
	return w.launch(b, false, req)
}

// lowerBudget makes the packer's budget the largest device budget.
func (p *pipeline) lowerBudget() {
	var b int
	for _, w := range p.workers {
		b = max(b, w.stats.load().ToksPerBatch)
	}
	if b > 0 {
		p.budget.Store(int64(b))
	}
}

// freeOutput returns an Output that no batch in flight uses (launch keeps
// fewer than len(w.outs) in flight).
func (w *worker) freeOutput() (*esm.Output, error) {
	for _, o := range w.outs {
		if !slices.ContainsFunc(w.flights, func(f flight) bool { return f.out == o }) {
			return o, nil
		}
	}
	return nil, fmt.Errorf("embed: internal error: all %d outputs in flight", len(w.outs))
}

// finish waits for the oldest batch in flight and hands its rows to the
// writer. The hand-off blocks even after cancellation (the writer drains
// its channel until the compute stage is over), so computed rows reach the
// partial output.
func (w *worker) finish() error {
	p := w.p
	fl := w.flights[0]
	w.flights = w.flights[1:]
	t := time.Now()
	err := fl.fence.Wait()
	spent := time.Since(t)
	w.stats.update(func(d *DeviceSummary) { d.Compute += spent })
	if err != nil {
		w.failed = true
		return fmt.Errorf("embed: batch of %d sequences (%d tokens), first record index %d: %w",
			fl.j.batch.NumSeqs(), len(fl.j.batch.Tokens), fl.j.recs[0].index, err)
	}
	if w.failed {
		return nil // the device failed on an earlier batch: its results are not trusted
	}
	t2 := time.Now()
	res := <-p.results
	waited := time.Since(t2)
	p.fill(res, fl.j, fl.out)
	toks := int64(len(fl.j.batch.Tokens))
	inUse, reserved, known := w.m.Backend().DeviceMemory()
	w.stats.update(func(d *DeviceSummary) {
		d.WriterWait += waited
		d.Batches++
		d.Tokens += toks
		d.Sequences += int64(fl.j.batch.NumSeqs())
		d.MemInUse, d.MemReserved, d.MemKnown = inUse, reserved, known
	})
	p.c.batches.Add(1)
	p.c.tokens.Add(toks)
	p.wch <- writerMsg{res: res}
	if fl.pooled {
		p.free <- fl.j // never blocks: the pool holds exactly cap(free) jobs
	}
	p.progress()
	return nil
}

// finishAll finishes every batch in flight, oldest first; after a failure it
// still waits for the rest (so no copy into an output is left queued).
func (w *worker) finishAll() error {
	var errs error
	for len(w.flights) > 0 {
		errs = errors.Join(errs, w.finish())
	}
	return errs
}

// split cuts a job into two jobs of about half the sequences each.
func (j *job) split() (*job, *job) {
	n := j.batch.NumSeqs()
	half := n / 2
	a, b := &job{perTok: j.perTok}, &job{perTok: j.perTok}
	for i := 0; i < n; i++ {
		dst := a
		if i >= half {
			dst = b
		}
		st, l := j.batch.Seqlens.Start(i), j.batch.Seqlens.Len(i)
		if len(dst.batch.Seqlens.Cu) == 0 {
			dst.batch.Reset()
		}
		dst.batch.Tokens = append(dst.batch.Tokens, j.batch.Tokens[st:st+l]...)
		dst.batch.Seqlens.Cu = append(dst.batch.Seqlens.Cu, int32(len(dst.batch.Tokens)))
		dst.batch.Scales = append(dst.batch.Scales, j.batch.Scales[i])
		dst.recs = append(dst.recs, j.recs[i])
	}
	return a, b
}

// fill copies what the columns need out of the model's output.
func (p *pipeline) fill(res *result, j *job, out *esm.Output) {
	res.recs = append(res.recs[:0], j.recs...)
	D := p.cfg.Dim
	for c := range p.cols {
		col := &p.cols[c]
		// Sized once: a buffer handed out new (its predecessor still holds
		// rows waiting for an earlier record) would otherwise grow by
		// append's steps, copying a per-token batch's hundreds of MB
		// several times over.
		need := 0
		for s := range j.recs {
			need += colSize(*col, &j.recs[s])
		}
		v := res.vals[c][:0]
		if cap(v) < need {
			v = make([]float32, 0, need+need/8)
		}
		switch col.kind {
		case esm.Mean:
			if !j.perTok {
				v = append(v, out.Mean[col.layer][:out.NSeq*D]...)
				break
			}
			for s := range j.recs {
				if !j.recs[s].windowed() {
					v = append(v, out.Mean[col.layer][s*D:(s+1)*D]...)
					continue
				}
				// a window: its residue rows (the record's mean comes later)
				st, n := j.batch.Seqlens.Start(s), j.batch.Seqlens.Len(s)
				v = append(v, out.PerTok[col.layer][(st+1)*D:(st+n-1)*D]...)
			}
		case esm.BOS:
			v = append(v, out.BOS[col.layer][:out.NSeq*D]...)
		case esm.PerTok:
			v = gatherResidues(v, out.PerTok[col.layer], j, D)
		}
		res.vals[c] = v
	}
}

// gatherMin is the fewest values one goroutine of gatherResidues copies:
// 1 MiB, far above a goroutine's start-up cost.
const gatherMin = 1 << 18

// gatherResidues appends the residue rows of every sequence of j (BOS and
// EOS dropped) from x, a (T, D) per-token output, to v (grown if its
// capacity does not hold them; fill sizes it beforehand). A batch's rows are hundreds of MB at the larger models:
// copied by one goroutine they would hold the device worker for longer
// than the GPU takes for a batch, so the copy is split over the CPUs.
func gatherResidues(v, x []float32, j *job, D int) []float32 {
	base := len(v)
	offs := make([]int, len(j.recs)+1) // where each sequence's rows start in v[base:]
	for s := range j.recs {
		offs[s+1] = offs[s] + (j.batch.Seqlens.Len(s)-2)*D
	}
	v = slices.Grow(v, offs[len(j.recs)])[:base+offs[len(j.recs)]]
	dst := v[base:]
	par.Do(len(dst), gatherMin, func(lo, hi int) {
		// the sequences overlapping dst[lo:hi]
		s, _ := slices.BinarySearch(offs, lo+1)
		for s--; s < len(j.recs) && offs[s] < hi; s++ {
			a, b := max(lo, offs[s]), min(hi, offs[s+1])
			src := (j.batch.Seqlens.Start(s)+1)*D + a - offs[s]
			copy(dst[a:b], x[src:src+b-a])
		}
	})
	return v
}
