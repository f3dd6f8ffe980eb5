// Package embed is the FASTA-to-embeddings pipeline: reader goroutines (pure
// I/O, package data) → the packer (tokenize once, length-bucket, pack varlen
// batches with no padding) → one worker per device (each owns its model on
// its own locked goroutine; on a GPU the next batch is launched before the
// current one is copied out) → an asynchronous writer that restores input
// order and commits rows in resumable chunks (output.Parts), completed and
// published atomically at the end.
package embed

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/output"
)

// recMeta describes one record of a packed batch.
type recMeta struct {
	index     int64
	id        string
	length    int // residues embedded
	truncated bool
	// A window of a record cut in several (window.go): part of parts,
	// starting at residue start of the record's total; parts <= 1 for a
	// record embedded whole.
	part, parts, start, total int
}

// job is one packed batch travelling from the packer to the compute stage.
type job struct {
	batch esm.Batch
	recs  []recMeta
	// perTok: a window of a long record is in the batch; per-token rows of
	// every requested layer are read back (the record's mean is taken over
	// its averaged per-residue rows).
	perTok bool
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
	kind  esm.Repr // one of esm.Mean, esm.BOS, esm.PerTok
}

type counters struct {
	records, embedded, skipped, truncated, unknown, emptyIDs, dupIDs atomic.Int64
	recordsRead                                                      atomic.Int64
	residues, tokens, batches                                        atomic.Int64
	readerQueue, readyQueue                                          atomic.Int64
	resumed                                                          atomic.Int64
	windowed                                                         atomic.Int64
}

// Run embeds every record of opts.Inputs with m and writes opts.Out, with m
// computing on the calling goroutine (which must own m's backend: the device
// goroutine for a GPU). It is RunDevices with one device that is already
// open. Rows are committed as they go (output.Parts): on failure or
// cancellation the error wraps ErrResumable when some are, and a later run
// with the same Identity resumes after them. What may be replaced, and how
// two runs on one output are kept apart, is the output package's decision
// (output.Check).
func Run(ctx context.Context, m *esm.Model, opts Options) (*Summary, error) {
	return run(ctx, m.Cfg, []Device{{Name: m.Backend().Name(), model: m}}, opts)
}

// RunDevices embeds every record of opts.Inputs on the given devices, all
// holding the model of cfg, and writes opts.Out. Readers and the packer are
// shared; each device has a worker goroutine, locked to its OS thread, that
// opens the device's model, takes the next packed batch whenever it is free
// (a slower device takes fewer), and closes the model at the end; one
// writer restores input order. If a device fails, the run stops: every row
// before the first one not computed is kept in the partial output, none is
// written twice.
func RunDevices(ctx context.Context, cfg esm.Config, devs []Device, opts Options) (*Summary, error) {
	if len(devs) == 0 {
		return nil, errors.New("embed: no devices")
	}
	for i, d := range devs {
		if d.Open == nil {
			return nil, fmt.Errorf("embed: device %d (%s) has no Open", i, d.Name)
		}
	}
	return run(ctx, cfg, devs, opts)
}

func run(ctx context.Context, cfg esm.Config, devs []Device, opts Options) (*Summary, error) {
	o, cols, err := prepare(cfg, opts)
	if err != nil {
		return nil, err
	}
	parts, err := output.OpenPartsContext(ctx, o.Out, o.Format, output.Schema{Columns: outputColumns(cols), Metadata: o.Metadata, DType: o.DType}, o.partsOptions())
	if errors.Is(err, output.ErrComplete) {
		// An earlier run with these settings published it and was killed
		// while cleaning up: nothing is left to do.
		return &Summary{Output: o.Out, Complete: true}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	defer parts.Close()
	resume, replay := parts.Next(), parts.Boundary()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Packed batches ready or in use: two in flight per device plus two the
	// packer works ahead; result buffers: one per device being filled plus
	// two with the writer (triple buffering for one device).
	n := len(devs)
	p := &pipeline{cfg: cfg, o: o, cols: cols, parts: parts, resume: resume, replay: replay, lastBound: replay, cancel: cancel, startRows: parts.Rows(),
		ready: make(chan *job, 2*n+2), free: make(chan *job, 2*n+2),
		results: make(chan *result, n+2), wch: make(chan writerMsg, 64),
		advanced: make(chan struct{}, 1)}
	p.nextIndex.Store(resume)
	for i := 0; i < cap(p.free); i++ {
		p.free <- &job{}
	}
	for i := 0; i < cap(p.results); i++ {
		p.results <- &result{vals: make([][]float32, len(cols))}
	}
	sum := &Summary{}
	p.sum = sum
	p.workers = make([]*worker, n)
	for i, d := range devs {
		p.workers[i] = &worker{p: p, dev: d}
	}

	// Devices open first (weights load on all of them at once); the packer
	// starts once every device has its budget.
	cw := p.startWorkers(ctx)
	if err := cw.opened(); err != nil {
		cancel()
		// Each worker that failed to open returns the error it reported
		// (with any close error joined): say it once.
		if werr := cw.wait(); werr != nil {
			return nil, werr
		}
		return nil, err
	}
	p.setWindow()
	if err := p.checkWindowFits(); err != nil {
		cancel()
		return nil, errors.Join(err, cw.wait())
	}
	// The reader keeps at most readLimit residues of a record in memory,
	// however long the record is.
	rd, err := data.Open(ctx, o.Inputs, data.Options{Workers: o.Workers, Prefetch: o.Prefetch, StallTimeout: o.ReaderStall,
		Stdin: o.Stdin, Open: o.Open, MaxResidues: p.readLimit(), Shard: o.Shard})
	if err != nil {
		cancel()
		return nil, errors.Join(fmt.Errorf("embed: %w", err), cw.wait())
	}
	defer rd.Close()
	p.rd = rd
	if o.Started != nil {
		o.Started() // before the clock starts: the hook's own time is not the run's
	}
	p.start = time.Now() // throughput and shares of wall time count from here, after loading
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { defer close(p.ready); return p.pack(gctx) })
	writerDone := make(chan error, 1)
	go func() { writerDone <- p.write(gctx) }()

	computeErr := cw.run(gctx)
	if computeErr != nil {
		cancel()
	}
	packErr := g.Wait()
	close(p.wch) // the packer and the workers are the only senders
	writeErr := <-writerDone
	p.snapshot(sum)

	runErr := joinCauses(computeErr, packErr, writeErr)
	if runErr == nil {
		runErr = ctx.Err()
	}
	if runErr != nil {
		return sum, p.keepCommitted(sum, runErr)
	}
	if err := parts.Finish(p.nextIndex.Load(), o.Metadata); err != nil {
		return sum, fmt.Errorf("embed: %w", err)
	}
	// The run's time includes completing the output (footer, headers).
	sum.Elapsed = time.Since(p.start)
	sum.Output = o.Out
	if o.Progress != nil {
		o.Progress(sum, true)
	}
	return sum, nil
}

// keepCommitted commits the rows written before err, so that a later run
// resumes after them, and says so in the error.
func (p *pipeline) keepCommitted(sum *Summary, err error) error {
	if p.o.NoResume {
		p.parts.Abandon()
		return fmt.Errorf("%w (the input cannot be read again, so no rows were kept: run the command again to start over)", err)
	}
	next := p.nextIndex.Load()
	if cerr := p.parts.Commit(next, p.boundaryBefore(next)); cerr != nil {
		// After a failed write (a full disk) the commit fails of the same
		// cause: say it once. What earlier commits made durable stays.
		if !sameCause(err, cerr) {
			err = errors.Join(err, fmt.Errorf("embed: committing the rows written so far: %w", cerr))
		}
	}
	if p.parts.Next() == 0 {
		return err
	}
	sum.Output = p.parts.Dir()
	return fmt.Errorf("%w (%w: records 0..%d are committed in %s: %d rows, %d of them from this run; run the same command again to resume)",
		err, ErrResumable, p.parts.Next()-1, p.parts.Dir(), p.parts.Rows(), p.parts.Rows()-p.startRows)
}

// joinCauses joins the stages' errors, leaving out the cancellations
// that one stage's failure caused in the others.
func joinCauses(errs ...error) error {
	var causes []error
	for _, e := range errs {
		if e != nil && !errors.Is(e, context.Canceled) {
			causes = append(causes, e)
		}
	}
	if len(causes) == 0 {
		return errors.Join(errs...)
	}
	return errors.Join(causes...)
}

// sameCause reports whether a and b both come from the same failed file
// operation (path and errno), as a write and the commit after it do.
func sameCause(a, b error) bool {
	var pa, pb *fs.PathError
	return errors.As(a, &pa) && errors.As(b, &pb) && pa.Path == pb.Path && errors.Is(pb.Err, pa.Err)
}

// ErrResumable is wrapped by Run's error when committed rows wait in the
// output's parts directory for a later run with the same settings.
var ErrResumable = errors.New("resumable")

// prepare fills defaults and checks the options against the model.
func prepare(cfg esm.Config, opts Options) (Options, []column, error) {
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
	if o.Include == 0 {
		o.Include = esm.Mean
	}
	if len(o.Layers) == 0 {
		o.Layers = []int{-1}
	}
	if err := o.prepareWindowing(); err != nil {
		return o, nil, err
	}
	if o.MaxResidues == 0 {
		o.MaxResidues = esm.DefaultMaxResidues
	}
	if o.ToksPerBatch < 0 {
		o.ToksPerBatch = 0
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	layers, err := cfg.ResolveLayers(o.Layers)
	if err != nil {
		return o, nil, fmt.Errorf("embed: layers: %w", err)
	}
	o.Layers = layers
	var cols []column
	D := cfg.Dim
	for _, l := range layers {
		for _, k := range o.Include.Kinds() {
			kind := output.Vector
			if k == esm.PerTok {
				kind = output.Matrix
			}
			cols = append(cols, column{output.Column{Name: fmt.Sprintf("%s_%d", k, l), Kind: kind, Dim: D}, l, k})
		}
	}
	return o, cols, nil
}

// readLimit is the most residue bytes a record keeps while it is read. With
// truncation to m residues: 6m+6 bytes, enough for m tokens plus one even
// if every one is a literal 6-byte "<mask>" (the tokenizer then truncates).
// Without truncation: the longest sequence every device can embed whole;
// longer records are skipped (pack).
func (p *pipeline) readLimit() int {
	if p.o.Windowing.On() {
		return 6*MaxWindowedResidues + 6 // longer records are skipped (pack)
	}
	if m := p.o.MaxResidues; m > 0 {
		return 6*m + 6
	}
	limit := 0
	for _, w := range p.workers {
		if t := w.maxSeq - 2; limit == 0 || t < limit {
			limit = t
		}
	}
	p.maxWhole = max(limit, 1)
	return p.maxWhole
}

// setWindow sets the packer's budget (the largest device budget) and, unless
// given, the bucketing window: rows leave the writer in input order, so up
// to a window's rows wait in memory; per-token rows are D floats per
// residue, so their window is kept small.
func (p *pipeline) setWindow() {
	p.lowerBudget()
	if p.o.Window <= 0 {
		b := int(p.budget.Load())
		p.o.Window = 16 * b
		if p.o.Include.Has(esm.PerTok) {
			p.o.Window = 2 * b
		}
	}
}

func outputColumns(cols []column) []output.Column {
	out := make([]output.Column, len(cols))
	for i, c := range cols {
		out[i] = c.Column
	}
	return out
}

type pipeline struct {
	cfg   esm.Config
	o     Options
	cols  []column
	rd    *data.Reader
	parts *output.Parts
	// maxWhole is, without truncation, the longest record (residues) every
	// device can embed whole; longer ones are skipped.
	maxWhole int
	resume   int64 // first input index this run writes (earlier ones are committed)
	replay   int64 // first input index this run computes: the window boundary at or before resume
	cancel   context.CancelFunc
	start    time.Time

	ready, free chan *job
	results     chan *result
	wch         chan writerMsg

	c       counters
	budget  atomic.Int64 // tokens per packed batch: the largest device budget
	written int64        // rows written by this run (writer goroutine; read after it ends)
	// startRows are the rows earlier runs committed (what this run resumed).
	startRows int64

	// nextIndex is the first input index not yet written or skipped (the
	// index the writer waits for; what is committed at the end). The packer
	// keeps at most two windows ahead of it, so rows waiting for a slow
	// device stay bounded. advanced is signalled when it moves.
	nextIndex atomic.Int64
	advanced  chan struct{}

	// Window boundaries (input indices) the packer has passed and the
	// writer has not yet; lastBound is the latest one the writer passed.
	bmu       sync.Mutex
	bounds    []int64
	lastBound int64

	workers []*worker
	mu      sync.Mutex // serializes snapshot and Progress across workers
	sum     *Summary
}

// snapshot fills s with the running totals.
func (p *pipeline) snapshot(s *Summary) {
	s.Records = p.c.records.Load()
	s.RecordsRead = p.c.recordsRead.Load()
	s.Embedded = p.c.embedded.Load()
	s.Skipped = p.c.skipped.Load()
	s.Resumed = p.c.resumed.Load()
	s.Truncated = p.c.truncated.Load()
	s.Windowed = p.c.windowed.Load()
	s.UnknownRecs = p.c.unknown.Load()
	s.EmptyIDs = p.c.emptyIDs.Load()
	s.DupIDs = p.c.dupIDs.Load()
	s.Residues = p.c.residues.Load()
	s.Tokens = p.c.tokens.Load()
	s.Batches = p.c.batches.Load()
	s.Elapsed = time.Since(p.start)
	s.LoaderWait, s.WriterWait, s.Compute = 0, 0, 0
	s.Devices = s.Devices[:0]
	for _, w := range p.workers {
		d := w.stats.load()
		s.LoaderWait += d.LoaderWait
		s.WriterWait += d.WriterWait
		s.Compute += d.Compute
		s.Devices = append(s.Devices, d)
	}
	s.QueueDepth = int(p.c.readyQueue.Load())
	s.ReaderQueue = int(p.c.readerQueue.Load())
	if p.rd != nil {
		s.InputBytes = p.rd.InputBytes()
		if n, ok := p.rd.InputSize(); ok {
			s.InputSize = n
		}
	}
}

// progress reports running totals after a batch (any worker).
func (p *pipeline) progress() {
	if p.o.Progress == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.snapshot(p.sum)
	p.o.Progress(p.sum, false)
}
