// Package embed is the FASTA-to-embeddings pipeline: reader goroutines (pure
// I/O, package data) → the packer (tokenize once, length-bucket, pack varlen
// batches with no padding) → the compute stage (the model's forward pass, on
// the goroutine that called Run, which owns the device; on a GPU the next
// batch is launched before the current one is copied out) → a
// triple-buffered asynchronous writer that restores input order and
// publishes atomically.
package embed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/output"
)

const (
	// batchBuffers is the number of packed batches that can be ready or in
	// use at once (the packer works ahead of the compute stage).
	batchBuffers = 4
	// resultBuffers is the output ring: compute fills one while the writer
	// drains another (triple buffering).
	resultBuffers = 3
)

// recMeta describes one record of a packed batch.
type recMeta struct {
	index     int64
	id        string
	length    int // residues embedded
	truncated bool
}

// job is one packed batch travelling from the packer to the compute stage.
type job struct {
	batch esm.Batch
	recs  []recMeta
}

// result is one batch's outputs on the host, travelling to the writer.
type result struct {
	recs []recMeta
	// vals[c] holds column c for every record, concatenated: (nseq, D) for a
	// vector column, (sum of lengths, D) for a matrix column.
	vals [][]float32
}

// writerMsg is either a result or the index of a skipped record.
type writerMsg struct {
	res  *result
	skip int64
}

// column is one output column and where it comes from.
type column struct {
	output.Column
	layer int
	kind  string // "mean", "bos", "per_tok"
}

type counters struct {
	records, embedded, skipped, truncated, unknown, emptyIDs, dupIDs atomic.Int64
	residues, tokens, batches                                        atomic.Int64
	readerQueue, readyQueue                                          atomic.Int64
}

// Run embeds every record of opts.Inputs with m and writes opts.Out. It must
// be called from the goroutine that owns m's backend (the device goroutine
// for a GPU). On failure or cancellation, rows already written are published
// at opts.Out+output.PartialSuffix and the error says so. What may be
// replaced, and how two runs on one output are kept apart, is the output
// package's decision (output.Check).
func Run(ctx context.Context, m *esm.Model, opts Options) (*Summary, error) {
	o, cols, err := prepare(m, opts)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	w, err := output.CreateWithOptions(o.Out, o.Format, output.Schema{Columns: outputColumns(cols), Metadata: o.Metadata}, o.outputOptions())
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	defer w.Abort()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rd, err := data.Open(ctx, o.Inputs, data.Options{Workers: o.Workers, Prefetch: o.Prefetch, StallTimeout: o.ReaderStall, Stdin: o.Stdin, Open: o.Open})
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	defer rd.Close()

	p := &pipeline{m: m, o: o, cols: cols, rd: rd, w: w, cancel: cancel,
		ready: make(chan *job, batchBuffers), free: make(chan *job, batchBuffers),
		results: make(chan *result, resultBuffers), wch: make(chan writerMsg, 64)}
	p.budget.Store(int64(o.ToksPerBatch))
	for i := 0; i < batchBuffers; i++ {
		p.free <- &job{}
	}
	for i := 0; i < resultBuffers; i++ {
		p.results <- &result{vals: make([][]float32, len(cols))}
	}
	sum := &Summary{}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { defer close(p.ready); return p.pack(gctx) })
	writerDone := make(chan error, 1)
	go func() { writerDone <- p.write(gctx) }()

	computeErr := p.compute(gctx, sum, start)
	if computeErr != nil {
		cancel()
	}
	packErr := g.Wait()
	close(p.wch) // the packer and the compute stage are the only senders
	writeErr := <-writerDone
	p.snapshot(sum, start)

	runErr := errors.Join(computeErr, packErr, writeErr)
	if runErr == nil {
		runErr = ctx.Err()
	}
	if runErr != nil {
		return sum, p.keepPartial(w, sum, runErr)
	}
	if err := w.Close(); err != nil {
		return sum, fmt.Errorf("embed: %w", err)
	}
	sum.Output = o.Out
	if o.Progress != nil {
		o.Progress(sum, true)
	}
	return sum, nil
}

// keepPartial publishes what was written before err, or nothing.
func (p *pipeline) keepPartial(w output.Writer, sum *Summary, err error) error {
	if p.written == 0 {
		return err
	}
	partial, cerr := w.ClosePartial()
	if cerr != nil {
		return errors.Join(err, cerr)
	}
	sum.Output = partial
	return fmt.Errorf("%w (the %d records written before this, in input order, are kept in %s)", err, p.written, partial)
}

// prepare fills defaults and checks the options against the model.
func prepare(m *esm.Model, opts Options) (Options, []column, error) {
	o := opts
	if len(o.Inputs) == 0 {
		return o, nil, errors.New("embed: no input files")
	}
	if o.Out == "" {
		return o, nil, errors.New("embed: no output path")
	}
	if o.Format == "" {
		o.Format = output.Parquet
	}
	if o.Include == (Include{}) {
		o.Include.Mean = true
	}
	if len(o.Layers) == 0 {
		o.Layers = []int{-1}
	}
	if o.MaxResidues == 0 {
		o.MaxResidues = esm.DefaultMaxResidues
	}
	if o.ToksPerBatch <= 0 {
		o.ToksPerBatch = 4096
	}
	if o.Window <= 0 {
		// Rows leave the writer in input order, so up to a window's rows
		// wait in memory: per-token rows are D floats per residue, so their
		// window is kept small.
		o.Window = 16 * o.ToksPerBatch
		if o.Include.PerTok {
			o.Window = 2 * o.ToksPerBatch
		}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	var layers []int
	for _, l := range o.Layers {
		a, err := m.Cfg.ResolveLayer(l)
		if err != nil {
			return o, nil, fmt.Errorf("embed: --repr-layers: %w", err)
		}
		if !slices.Contains(layers, a) {
			layers = append(layers, a)
		}
	}
	o.Layers = layers
	var cols []column
	D := m.Cfg.Dim
	for _, l := range layers {
		if o.Include.Mean {
			cols = append(cols, column{output.Column{Name: fmt.Sprintf("mean_%d", l), Kind: output.Vector, Dim: D}, l, "mean"})
		}
		if o.Include.BOS {
			cols = append(cols, column{output.Column{Name: fmt.Sprintf("bos_%d", l), Kind: output.Vector, Dim: D}, l, "bos"})
		}
		if o.Include.PerTok {
			cols = append(cols, column{output.Column{Name: fmt.Sprintf("per_tok_%d", l), Kind: output.Matrix, Dim: D}, l, "per_tok"})
		}
	}
	return o, cols, nil
}

func outputColumns(cols []column) []output.Column {
	out := make([]output.Column, len(cols))
	for i, c := range cols {
		out[i] = c.Column
	}
	return out
}

type pipeline struct {
	m      *esm.Model
	o      Options
	cols   []column
	rd     *data.Reader
	w      output.Writer
	cancel context.CancelFunc

	ready, free chan *job
	results     chan *result
	wch         chan writerMsg

	c       counters
	budget  atomic.Int64 // tokens per batch; lowered after out-of-memory
	written int64        // rows written (writer goroutine; read after it ends)

	loaderWait, writerWait, computeTime time.Duration // compute goroutine only

	// compute goroutine only: batches in flight (see compute)
	depth   int           // at most this many in flight: 2 on an esm.AsyncReader backend, else 1
	outs    []*esm.Output // depth outputs in rotation
	flights []flight      // oldest first
	failed  bool          // a fence reported a device error: later results are dropped
	sum     *Summary
	start   time.Time
}

func (p *pipeline) snapshot(s *Summary, start time.Time) {
	s.Records = p.c.records.Load()
	s.Embedded = p.c.embedded.Load()
	s.Skipped = p.c.skipped.Load()
	s.Truncated = p.c.truncated.Load()
	s.UnknownRecs = p.c.unknown.Load()
	s.EmptyIDs = p.c.emptyIDs.Load()
	s.DupIDs = p.c.dupIDs.Load()
	s.Residues = p.c.residues.Load()
	s.Tokens = p.c.tokens.Load()
	s.Batches = p.c.batches.Load()
	s.Elapsed = time.Since(start)
	s.LoaderWait, s.WriterWait, s.Compute = p.loaderWait, p.writerWait, p.computeTime
	s.QueueDepth = int(p.c.readyQueue.Load())
	s.ReaderQueue = int(p.c.readerQueue.Load())
}

// flight is a batch launched on the device whose rows have not yet been
// handed to the writer.
type flight struct {
	j      *job
	pooled bool // j goes back to the free pool when done (not a half of a split)
	out    *esm.Output
	fence  esm.Fence
}

// compute runs the model over every packed batch, on the calling goroutine
// (the only one that calls the backend: Launch and every fence's Wait happen
// here). On an esm.AsyncReader backend (a GPU) two batches are in flight:
// batch i+1 is launched before the rows of batch i are waited for and handed
// to the writer, so the device never idles while the host copies out,
// packs or waits for a result buffer. Whatever way compute ends (done,
// error, cancellation), the batches already launched are waited for and,
// unless the device failed, handed to the writer, so no computed row is
// lost; then the outputs' backend memory is released.
func (p *pipeline) compute(ctx context.Context, sum *Summary, start time.Time) (err error) {
	req := esm.Request{Layers: p.o.Layers, Mean: p.o.Include.Mean, BOS: p.o.Include.BOS, PerTok: p.o.Include.PerTok}
	p.sum, p.start = sum, start
	p.depth = 1
	if _, ok := p.m.Backend().(esm.AsyncReader); ok {
		p.depth = 2
	}
	p.outs = make([]*esm.Output, p.depth)
	for i := range p.outs {
		p.outs[i] = &esm.Output{}
	}
	defer func() {
		err = errors.Join(err, p.finishAll())
		for _, o := range p.outs {
			err = errors.Join(err, o.Release())
		}
	}()
	for {
		t0 := time.Now()
		var j *job
		select {
		case j = <-p.ready:
		case <-ctx.Done():
			return nil // the cause is reported by whoever cancelled
		}
		if j == nil {
			return nil // the packer is done
		}
		p.c.readyQueue.Store(int64(len(p.ready)))
		p.loaderWait += time.Since(t0)
		if err := p.launch(j, true, req); err != nil {
			return err
		}
	}
}

// launch queues one packed batch on the device, then finishes the oldest
// batches until fewer than p.depth are in flight. When the device runs out
// of memory, the batch in flight is finished first, then the batch is split
// in two and each half launched (and later batches get half the token
// budget); a single sequence that does not fit is an error.
func (p *pipeline) launch(j *job, pooled bool, req esm.Request) error {
	out, err := p.freeOutput()
	if err != nil {
		return err
	}
	t := time.Now()
	f, err := p.m.Launch(&j.batch, req, out)
	p.computeTime += time.Since(t)
	if errors.Is(err, esm.ErrOutOfMemory) && j.batch.NumSeqs() > 1 {
		if err := p.finishAll(); err != nil {
			return err
		}
		T := len(j.batch.Tokens)
		if b := p.budget.Load(); int64(T/2) < b {
			p.budget.Store(max(int64(T/2), esm.DefaultMaxResidues+2))
		}
		p.o.Log.Warn("out of device memory: splitting the batch and lowering the token budget",
			"tokens", T, "sequences", j.batch.NumSeqs(), "budget", p.budget.Load())
		a, b := j.split()
		if pooled {
			p.free <- j // never blocks: the pool holds exactly batchBuffers jobs
		}
		if err := p.launch(a, false, req); err != nil {
			return err
		}
		return p.launch(b, false, req)
	}
	if err != nil {
		return fmt.Errorf("embed: batch of %d sequences (%d tokens), first record index %d: %w",
			j.batch.NumSeqs(), len(j.batch.Tokens), j.recs[0].index, err)
	}
	p.flights = append(p.flights, flight{j: j, pooled: pooled, out: out, fence: f})
	for len(p.flights) >= p.depth {
		if err := p.finish(); err != nil {
			return err
		}
	}
	return nil
}

// freeOutput returns an Output that no batch in flight uses (launch keeps
// fewer than len(p.outs) in flight).
func (p *pipeline) freeOutput() (*esm.Output, error) {
	for _, o := range p.outs {
		if !slices.ContainsFunc(p.flights, func(f flight) bool { return f.out == o }) {
			return o, nil
		}
	}
	return nil, fmt.Errorf("embed: internal error: all %d outputs in flight", len(p.outs))
}

// finish waits for the oldest batch in flight and hands its rows to the
// writer. The hand-off blocks even after cancellation (the writer drains
// its channel until the compute stage is over), so computed rows reach the
// partial output.
func (p *pipeline) finish() error {
	fl := p.flights[0]
	p.flights = p.flights[1:]
	t := time.Now()
	err := fl.fence.Wait()
	p.computeTime += time.Since(t)
	if err != nil {
		p.failed = true
		return fmt.Errorf("embed: batch of %d sequences (%d tokens), first record index %d: %w",
			fl.j.batch.NumSeqs(), len(fl.j.batch.Tokens), fl.j.recs[0].index, err)
	}
	if p.failed {
		return nil // the device failed on an earlier batch: its results are not trusted
	}
	t2 := time.Now()
	res := <-p.results
	p.writerWait += time.Since(t2)
	p.fill(res, fl.j, fl.out)
	p.c.batches.Add(1)
	p.c.tokens.Add(int64(len(fl.j.batch.Tokens)))
	p.wch <- writerMsg{res: res}
	if fl.pooled {
		p.free <- fl.j // never blocks: the pool holds exactly batchBuffers jobs
	}
	if p.o.Progress != nil {
		p.snapshot(p.sum, p.start)
		p.o.Progress(p.sum, false)
	}
	return nil
}

// finishAll finishes every batch in flight, oldest first; after a failure it
// still waits for the rest (so no copy into an output is left queued).
func (p *pipeline) finishAll() error {
	var errs error
	for len(p.flights) > 0 {
		errs = errors.Join(errs, p.finish())
	}
	return errs
}

// split cuts a job into two jobs of about half the sequences each.
func (j *job) split() (*job, *job) {
	n := j.batch.NumSeqs()
	half := n / 2
	a, b := &job{}, &job{}
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
	D := p.m.Cfg.Dim
	for c, col := range p.cols {
		v := res.vals[c][:0]
		switch col.kind {
		case "mean":
			v = append(v, out.Mean[col.layer][:out.NSeq*D]...)
		case "bos":
			v = append(v, out.BOS[col.layer][:out.NSeq*D]...)
		case "per_tok":
			x := out.PerTok[col.layer]
			for s := range j.recs {
				st, n := j.batch.Seqlens.Start(s), j.batch.Seqlens.Len(s)
				v = append(v, x[(st+1)*D:(st+n-1)*D]...) // residues only: BOS and EOS dropped
			}
		}
		res.vals[c] = v
	}
}
