// Package esm2go computes ESM2 protein language model outputs in Go, in
// memory: load a model once (a Hugging Face id such as
// "facebook/esm2_t33_650M_UR50D", a checkpoint directory or a fair-esm .pt),
// then turn protein sequences into per-sequence (mean, BOS) or per-residue
// embeddings of any layers, or into masked-LM logits. It is the library
// behind the esm2go command, for research code written in Go; the command
// (cmd/esm2go) is what to use for FASTA files to Parquet/NPY.
//
//	m, err := esm2go.Load(ctx, "facebook/esm2_t33_650M_UR50D", esm2go.Options{Device: "cuda:0"})
//	if err != nil { ... }
//	defer m.Close()
//	embs, err := m.Embed(ctx, esm2go.Sequences("MKTAYIAKQR", "MLKKR"), esm2go.EmbedOptions{Layers: []int{-1}})
//	v := embs[0].Mean(-1) // (D) float32
//
// Numbers match fair-esm and HF transformers (see the repository's parity
// tests): truncation keeps the first 1022 residues by default, the mean is
// over residue tokens (BOS and EOS excluded), layer k is the output of
// transformer layer k (0 = the scaled embedding, -1 or L = the last layer,
// after the final LayerNorm). Sequences go through esm's tokenizer policy
// (esm.Tokenizer: case-insensitive letters, J as <unk>, "<mask>" literal, a
// trailing '*' dropped; anything else is an error naming the record).
//
// Underneath, the calls pack many sequences into varlen batches under the
// device's token budget (no padding), sorted by length, and run them on one
// goroutine that owns the device (CUDA contexts belong to one OS thread). A
// Model is safe for concurrent use; calls are served one at a time.
package esm2go

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	esmcuda "github.com/esm2go/esm2go/esm/cuda"
	"github.com/esm2go/esm2go/weights"
)

// Repr names a per-sequence output (esm's one encoding; combine with |).
type Repr = esm.Repr

// The outputs Embed can compute from each requested layer.
const (
	Mean   = esm.Mean   // mean over residues (BOS/EOS excluded): (D)
	BOS    = esm.BOS    // the BOS (<cls>) token's row: (D)
	PerTok = esm.PerTok // every residue's row: (L, D), BOS/EOS dropped
)

// Precision is the GPU compute type (esm.Precision).
type Precision = esm.Precision

// Compute types. The CPU always computes in fp32.
const (
	FP16 = esm.FP16
	BF16 = esm.BF16
	FP32 = esm.FP32
)

// ErrClosed is returned by calls on a Model after Close.
var ErrClosed = errors.New("esm2go: model is closed")

// ErrNonFinite is returned (wrapped, naming the sequence) when the model
// produced NaN or ±Inf for a sequence: a damaged checkpoint, or an
// overflow in fp16/bf16 (fp32 does not overflow on ESM2's activations).
// No result of that call is returned.
var ErrNonFinite = errors.New("esm2go: the model's output is not finite (NaN or ±Inf)")

// checkFinite returns an error naming sequence idx (id) if v holds NaN or
// ±Inf.
func checkFinite(v []float32, idx int, id, what string) error {
	for _, x := range v {
		if f := float64(x); math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("sequence %d (%q): %s: %w", idx, id, what, ErrNonFinite)
		}
	}
	return nil
}

// Options configure Load. Zero values take the defaults noted.
type Options struct {
	// Device is "cpu" (the default, also for ""), "cuda" (= "cuda:0"),
	// "cuda:N", or "auto" (GPU 0 when the CUDA backend can start there,
	// else the CPU). CUDA needs the cgo build and an NVIDIA driver.
	Device string
	// Precision is the GPU compute type: FP16 (default), BF16 or FP32.
	// On the CPU only "" or FP32 is accepted.
	Precision Precision
	// Threads is the CPU backend's worker count; 0 = GOMAXPROCS.
	Threads int
	// TokensPerBatch is the most tokens (residues plus BOS/EOS of every
	// sequence) one forward pass holds; 0 = the device's automatic budget
	// (esm.Model.AutoTokensPerBatch: 4096 on the CPU, what half the free
	// memory holds on a GPU). Lowered automatically when the GPU runs out
	// of memory.
	TokensPerBatch int
	// Resolve says where a model id is looked for (the HF cache, the torch
	// hub cache) and how it is downloaded when missing; zero fields follow
	// the environment (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, TORCH_HOME,
	// HF_ENDPOINT, HF_TOKEN) as huggingface_hub does.
	Resolve weights.ResolveOptions

	// newBackend, when set (tests), replaces the device's backend.
	newBackend func() (esm.Backend, error)
}

// Info describes a loaded model.
type Info struct {
	Path      string // the checkpoint that was loaded (after resolving an id)
	Format    string // checkpoint format (weights.Checkpoint.Format)
	Layers    int    // L: representations 0..L exist
	Dim       int    // D: the width of every embedding
	Heads     int
	Device    string // "cpu" or "cuda:N"
	Backend   string // the backend's description (matmul library, threads, precision)
	HasLMHead bool   // Logits can be computed
	// TokensPerBatch is the token budget of one forward pass
	// (Options.TokensPerBatch or the device's automatic one).
	TokensPerBatch int
}

// Model is an ESM2 model loaded on one device. Close it to free the device
// memory and end its goroutine.
type Model struct {
	info   Info
	cfg    esm.Config
	tokens int // Options.TokensPerBatch

	work      chan func(*runner) // calls run on the owner goroutine
	quit      chan struct{}      // closed by Close
	done      chan struct{}      // closed when the owner goroutine has ended
	closeOnce sync.Once
	closeErr  error // set by the owner goroutine before done is closed
}

// runner is the owner goroutine's state: only that goroutine touches it.
type runner struct {
	m      *esm.Model
	slots  [2]slot // two batches in flight: the device computes one while the host copies out the other
	budget int     // tokens per batch; lowered after an out-of-memory error
	maxSeq int     // the longest sequence (tokens) the device embeds whole
}

// slot is one batch in flight: its tokens, the Output its results land in,
// the fence that says they have, and the items it holds.
type slot struct {
	batch esm.Batch
	out   esm.Output
	fence esm.Fence // nil: nothing in flight
	its   []item
}

// Load resolves model (a Hugging Face id, downloaded into the HF cache when
// missing; a directory with config.json and model.safetensors; or a
// fair-esm .pt) and loads it on opts.Device. The weights are read once and
// copied to the device; the checkpoint file is closed before Load returns.
func Load(ctx context.Context, model string, opts Options) (*Model, error) {
	if opts.Precision != "" { // "FP16" as "fp16", as Device is read
		p, err := esm.ParsePrecision(string(opts.Precision))
		if err != nil {
			return nil, fmt.Errorf("esm2go: %w", err)
		}
		opts.Precision = p
	}
	dev, err := chooseDevice(opts.Device, opts.Precision)
	if err != nil {
		return nil, err
	}
	if opts.TokensPerBatch < 0 {
		return nil, fmt.Errorf("esm2go: TokensPerBatch %d is negative", opts.TokensPerBatch)
	}
	path, err := weights.Resolve(ctx, model, opts.Resolve)
	if err != nil {
		return nil, fmt.Errorf("esm2go: %w", err)
	}
	ck, cfg, err := esm.OpenCheckpoint(path)
	if err != nil {
		return nil, fmt.Errorf("esm2go: %w", err)
	}
	defer ck.Close() // after the owner goroutine has uploaded the weights
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m := &Model{
		info: Info{Path: ck.Path, Format: ck.Format, Layers: cfg.Layers, Dim: cfg.Dim, Heads: cfg.Heads, Device: dev},
		cfg:  cfg, tokens: opts.TokensPerBatch,
		work: make(chan func(*runner)), quit: make(chan struct{}), done: make(chan struct{}),
	}
	ready := make(chan error, 1)
	go m.own(esm.CheckpointSource{C: ck}, opts, ready)
	if err := <-ready; err != nil {
		<-m.done
		return nil, err
	}
	return m, nil
}

// chooseDevice resolves Options.Device to "cpu" or "cuda:N".
func chooseDevice(dev string, prec Precision) (string, error) {
	d := strings.ToLower(strings.TrimSpace(dev))
	switch d {
	case "", "cpu":
		if prec != "" && prec != FP32 {
			return "", fmt.Errorf("esm2go: precision %s is for the GPU; the CPU computes in fp32", prec)
		}
		return "cpu", nil
	case "auto":
		if _, err := esmcuda.Probe(); err != nil {
			return "cpu", nil
		}
		return "cuda:0", nil
	case "cuda":
		d = "cuda:0"
	}
	if prec != "" {
		if _, err := esm.ParsePrecision(string(prec)); err != nil {
			return "", fmt.Errorf("esm2go: %w", err)
		}
	}
	var n int
	if _, err := fmt.Sscanf(d, "cuda:%d", &n); err != nil || n < 0 || fmt.Sprintf("cuda:%d", n) != d {
		return "", fmt.Errorf("esm2go: device %s: want cpu, cuda, cuda:N or auto", data.Quote(dev))
	}
	return d, nil
}

// own is the owner goroutine: it creates the backend and the model on its
// locked OS thread, reports on ready, runs the calls sent on m.work until
// Close, then frees everything.
func (m *Model) own(src esm.Source, opts Options, ready chan<- error) {
	defer close(m.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var be esm.Backend
	if opts.newBackend != nil {
		b, err := opts.newBackend()
		if err != nil {
			ready <- err
			return
		}
		be = b
	} else if m.info.Device == "cpu" {
		be = cpu.New(cpu.Options{Threads: opts.Threads})
	} else {
		var ord int
		fmt.Sscanf(m.info.Device, "cuda:%d", &ord) // checked by chooseDevice
		b, err := newCUDA(ord, opts.Precision)
		if err != nil {
			ready <- fmt.Errorf("esm2go: %s: %w", m.info.Device, err)
			return
		}
		be = b
	}
	em, err := esm.NewModel(m.cfg, src, be)
	if err != nil {
		ready <- errors.Join(fmt.Errorf("esm2go: loading %s on %s: %w", m.info.Path, m.info.Device, err), be.Close())
		return
	}
	r := &runner{m: em, maxSeq: em.MaxSequenceTokens(), budget: m.tokens}
	if r.budget == 0 {
		r.budget = em.AutoTokensPerBatch(esm.DefaultMaxResidues)
	}
	m.info.Backend, m.info.HasLMHead, m.info.TokensPerBatch = be.Name(), em.HasLMHead(), r.budget
	ready <- nil
	for {
		select {
		case f := <-m.work:
			f(r)
		case <-m.quit:
			m.closeErr = errors.Join(r.slots[0].out.Release(), r.slots[1].out.Release(), em.Close(), be.Close())
			return
		}
	}
}

// newCUDA starts the CUDA backend on device ord; a panic in it becomes an
// error (a backend must never take the process down).
func newCUDA(ord int, prec Precision) (b *esmcuda.Backend, err error) {
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("starting the CUDA backend panicked: %v", r)
		}
	}()
	return esmcuda.New(esmcuda.Options{Device: ord, Precision: prec})
}

// Close frees the model's device memory and ends its goroutine, after the
// call in progress (if any). Later calls return ErrClosed.
func (m *Model) Close() error {
	m.closeOnce.Do(func() {
		close(m.quit)
		<-m.done
	})
	return m.closeErr
}

// Info describes the loaded model.
func (m *Model) Info() Info { return m.info }

// closed reports whether Close was called: calls check it before their
// arguments, so that a call after Close returns ErrClosed, as documented.
func (m *Model) closed() bool {
	select {
	case <-m.quit:
		return true
	default:
		return false
	}
}

// do runs f on the owner goroutine and waits for it.
func (m *Model) do(ctx context.Context, f func(*runner) error) error {
	res := make(chan error, 1)
	select {
	case m.work <- func(r *runner) { res <- f(r) }:
	case <-m.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-res // f checks ctx between batches
}

// Sequence is one protein: an identifier (free text, carried into the
// results) and its residues (one-letter codes).
type Sequence struct {
	ID       string
	Residues string
}

// Sequences makes Sequences of residue strings, with IDs "0", "1", ...
func Sequences(residues ...string) []Sequence {
	out := make([]Sequence, len(residues))
	for i, r := range residues {
		out[i] = Sequence{ID: fmt.Sprint(i), Residues: r}
	}
	return out
}

// EmbedOptions say what Embed computes. Zero values take the defaults noted.
type EmbedOptions struct {
	// Layers are the representations to return: 0..L, or negative
	// counting from the end (-1 = L, the last layer). Default [-1].
	Layers []int
	// Include is what to return of each layer (Mean, BOS, PerTok,
	// combined with |). Default Mean.
	Include Repr
	// MaxResidues truncates each sequence to its first MaxResidues
	// residues (fair-esm's rule). 0 = 1022 (esm.DefaultMaxResidues, the
	// length ESM2 was trained on); < 0 = no truncation (a sequence longer
	// than the device can hold is an error).
	MaxResidues int
	// ReadAhead is how many tokens EmbedSeq reads ahead and sorts by
	// length before packing batches; results wait in memory until their
	// stretch is done. Default: 4 batches (Info.TokensPerBatch), 1 with
	// PerTok, at least MinReadAhead. Embed packs all its input at once.
	// (Not to be confused with the CLI's --window for long proteins.)
	ReadAhead int
}

// MinReadAhead is the smallest default read-ahead of EmbedSeq, in tokens.
const MinReadAhead = 16384

// Matrix is a row-major (Rows, Cols) view of float32s.
type Matrix struct {
	Rows, Cols int
	Data       []float32 // (Rows*Cols)
}

// Row returns row i (Cols values), sharing Data.
func (x Matrix) Row(i int) []float32 { return x.Data[i*x.Cols : (i+1)*x.Cols : (i+1)*x.Cols] }

// At returns element (i, j).
func (x Matrix) At(i, j int) float32 { return x.Data[i*x.Cols+j] }

// Embedding is what Embed returns for one sequence. Accessors take a layer
// as EmbedOptions.Layers does (negative counts from the end) and return nil
// (an empty Matrix) for a layer or output that was not requested. The
// slices are the Embedding's own; callers may keep or modify them.
type Embedding struct {
	ID        string
	Index     int  // position in the input (0-based)
	Length    int  // residues embedded (after truncation)
	Truncated bool // Length < the sequence's residues
	Dim       int  // D

	nLayers int   // the model's L, to resolve negative layers
	layers  []int // absolute, as requested
	mean    [][]float32
	bos     [][]float32
	perTok  [][]float32 // (Length, D) each
}

// Layers returns the absolute layer numbers the embedding holds.
func (e Embedding) Layers() []int { return slices.Clone(e.layers) }

func (e Embedding) slot(layer int) int {
	if layer < 0 {
		layer += e.nLayers + 1
	}
	return slices.Index(e.layers, layer)
}

// Mean returns the mean over residues of layer's representation: (D).
func (e Embedding) Mean(layer int) []float32 {
	if i := e.slot(layer); i >= 0 && e.mean != nil {
		return e.mean[i]
	}
	return nil
}

// BOS returns layer's representation of the BOS (<cls>) token: (D).
func (e Embedding) BOS(layer int) []float32 {
	if i := e.slot(layer); i >= 0 && e.bos != nil {
		return e.bos[i]
	}
	return nil
}

// PerResidue returns layer's representation of every residue: (Length, D),
// row i for residue i (BOS and EOS dropped).
func (e Embedding) PerResidue(layer int) Matrix {
	if i := e.slot(layer); i >= 0 && e.perTok != nil {
		return Matrix{Rows: e.Length, Cols: e.Dim, Data: e.perTok[i]}
	}
	return Matrix{}
}

// item is one tokenized sequence of a call.
type item struct {
	idx   int     // position in the call's input
	toks  []int32 // (n) with BOS and EOS
	masks int
	enc   esm.Encoded
}

// tokenize encodes seqs (base is the input position of seqs[0]) with the
// truncation of maxResidues (EmbedOptions.MaxResidues).
func tokenize(seqs []Sequence, base, maxResidues int) ([]item, error) {
	if maxResidues == 0 {
		maxResidues = esm.DefaultMaxResidues
	}
	tok := esm.NewTokenizer(max(maxResidues, 0))
	items := make([]item, len(seqs))
	var arena []int32
	for i, s := range seqs {
		n0 := len(arena)
		toks, e, err := tok.Encode(arena, []byte(s.Residues))
		if err != nil {
			return nil, fmt.Errorf("esm2go: sequence %d (id %s): %w", base+i, data.Quote(s.ID), err)
		}
		// A grown arena leaves earlier items on the old array, which stays valid.
		arena = toks
		items[i] = item{idx: i, toks: toks[n0:len(toks):len(toks)], masks: e.Masks, enc: e}
	}
	return items, nil
}

// forward runs items in batches of at most the budget's tokens, longest
// first, and calls emit with each finished batch, its output and the items
// it holds (in batch order). It runs on the owner goroutine and checks ctx
// between batches. Two batches are in flight: batch i+1 is launched before
// batch i's results are copied out, so a GPU does not wait for the host
// (on the CPU, whose Launch computes before it returns, this changes
// nothing). After an out-of-memory error the batch is cut in half and the
// budget lowered for the rest of the model's life. Whatever way forward
// ends, nothing it launched is left running.
func (r *runner) forward(ctx context.Context, m *Model, items []item, seqs []Sequence, base int, req esm.Request,
	emit func(b *esm.Batch, out *esm.Output, its []item)) (err error) {
	for _, it := range items {
		if len(it.toks) > r.maxSeq {
			return fmt.Errorf("esm2go: sequence %d (id %s) has %d tokens; %s embeds at most %d tokens whole: truncate it (EmbedOptions.MaxResidues)",
				base+it.idx, data.Quote(seqs[it.idx].ID), len(it.toks), m.info.Device, r.maxSeq)
		}
	}
	slices.SortStableFunc(items, func(a, b item) int { return len(b.toks) - len(a.toks) })
	batchErr := func(its []item, T int, err error) error {
		return fmt.Errorf("esm2go: batch of %d sequences (%d tokens) from sequence %d (id %s): %w",
			len(its), T, base+its[0].idx, data.Quote(seqs[its[0].idx].ID), err)
	}
	// finish waits for slot s's batch and hands its results to emit.
	finish := func(s *slot) error {
		if s.fence == nil {
			return nil
		}
		f := s.fence
		s.fence = nil
		if err := f.Wait(); err != nil {
			return batchErr(s.its, len(s.batch.Tokens), err)
		}
		emit(&s.batch, &s.out, s.its)
		return nil
	}
	defer func() {
		for i := range r.slots { // on an early return: wait, drop the results
			if f := r.slots[i].fence; f != nil {
				r.slots[i].fence = nil
				err = errors.Join(err, f.Wait())
			}
		}
	}()
	cur := 0
	for lo := 0; lo < len(items); {
		if err := ctx.Err(); err != nil {
			return err
		}
		s := &r.slots[cur]
		if err := finish(s); err != nil { // the batch launched two rounds ago
			return err
		}
		b := &s.batch
		b.Reset()
		hi, T := lo, 0
		for hi < len(items) && (hi == lo || T+len(items[hi].toks) <= r.budget) {
			b.Append(items[hi].toks, items[hi].masks)
			T += len(items[hi].toks)
			hi++
		}
		f, err := r.m.Launch(b, req, &s.out)
		if errors.Is(err, esm.ErrOutOfMemory) && hi-lo > 1 {
			r.budget = max(T/2, 1)
			continue
		}
		if err != nil {
			return batchErr(items[lo:hi], T, err)
		}
		s.fence, s.its = f, items[lo:hi]
		lo, cur = hi, 1-cur
	}
	// The older batch first, so emit sees batches in launch order.
	if err := finish(&r.slots[cur]); err != nil {
		return err
	}
	return finish(&r.slots[1-cur])
}

// embedRequest checks opts and makes the forward pass's request.
func (m *Model) embedRequest(opts EmbedOptions) (esm.Request, error) {
	layers := opts.Layers
	if len(layers) == 0 {
		layers = []int{-1}
	}
	abs, err := m.cfg.ResolveLayers(layers)
	if err != nil {
		return esm.Request{}, fmt.Errorf("esm2go: %w", err)
	}
	inc := opts.Include
	if inc == 0 {
		inc = Mean
	}
	if inc&^(Mean|BOS|PerTok) != 0 {
		return esm.Request{}, fmt.Errorf("esm2go: unknown representation bits %#x in Include (want Mean, BOS or PerTok)", uint8(inc))
	}
	return esm.Request{Layers: abs, Reprs: inc}, nil
}

// Embed computes the embeddings of seqs, returned in input order. An
// invalid sequence fails the whole call, naming it.
func (m *Model) Embed(ctx context.Context, seqs []Sequence, opts EmbedOptions) ([]Embedding, error) {
	if m.closed() {
		return nil, ErrClosed
	}
	req, err := m.embedRequest(opts)
	if err != nil {
		return nil, err
	}
	return m.embedBatch(ctx, seqs, 0, req, opts.MaxResidues)
}

// embedBatch embeds seqs (base is the input position of seqs[0]).
func (m *Model) embedBatch(ctx context.Context, seqs []Sequence, base int, req esm.Request, maxResidues int) ([]Embedding, error) {
	items, err := tokenize(seqs, base, maxResidues)
	if err != nil {
		return nil, err
	}
	res := make([]Embedding, len(seqs))
	D, nl := m.cfg.Dim, len(req.Layers)
	var bad error
	err = m.do(ctx, func(r *runner) error {
		return r.forward(ctx, m, items, seqs, base, req, func(b *esm.Batch, out *esm.Output, its []item) {
			for s, it := range its {
				L := it.enc.Kept
				e := Embedding{ID: seqs[it.idx].ID, Index: base + it.idx, Length: L, Truncated: it.enc.Truncated,
					Dim: D, nLayers: m.cfg.Layers, layers: req.Layers}
				// One allocation per sequence holds all its vectors.
				per := 0
				for _, k := range []Repr{Mean, BOS} {
					if req.Reprs.Has(k) {
						per += D
					}
				}
				if req.Reprs.Has(PerTok) {
					per += L * D
				}
				buf := make([]float32, 0, nl*per)
				take := func(src []float32) []float32 {
					n0 := len(buf)
					buf = append(buf, src...)
					return buf[n0:len(buf):len(buf)]
				}
				if req.Reprs.Has(Mean) {
					e.mean = make([][]float32, nl)
				}
				if req.Reprs.Has(BOS) {
					e.bos = make([][]float32, nl)
				}
				if req.Reprs.Has(PerTok) {
					e.perTok = make([][]float32, nl)
				}
				st := b.Seqlens.Start(s)
				for li, k := range req.Layers {
					if e.mean != nil {
						e.mean[li] = take(out.Mean[k][s*D : (s+1)*D])
					}
					if e.bos != nil {
						e.bos[li] = take(out.BOS[k][s*D : (s+1)*D])
					}
					if e.perTok != nil {
						e.perTok[li] = take(out.PerTok[k][(st+1)*D : (st+1+L)*D])
					}
				}
				if bad == nil {
					bad = checkFinite(buf, base+it.idx, e.ID, "embedding")
				}
				res[it.idx] = e
			}
		})
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// EmbedSeq embeds a stream of sequences of any length, yielding each
// Embedding in input order with a nil error; memory stays bounded by
// opts.ReadAhead. On a failure (an invalid sequence, a device error, ctx's
// end) it yields one zero Embedding with the error and stops. Stopping the
// range early stops reading in.
func (m *Model) EmbedSeq(ctx context.Context, in iter.Seq[Sequence], opts EmbedOptions) iter.Seq2[Embedding, error] {
	return func(yield func(Embedding, error) bool) {
		if m.closed() {
			yield(Embedding{}, ErrClosed)
			return
		}
		req, err := m.embedRequest(opts)
		if err != nil {
			yield(Embedding{}, err)
			return
		}
		window := opts.ReadAhead
		if window <= 0 {
			window = 4 * m.info.TokensPerBatch
			if req.Reprs.Has(PerTok) {
				window = m.info.TokensPerBatch
			}
			window = max(window, MinReadAhead)
		}
		var (
			buf  []Sequence
			toks int
			base int
		)
		// flush embeds buf and yields its results; false: stop.
		flush := func() bool {
			if len(buf) == 0 {
				return true
			}
			embs, err := m.embedBatch(ctx, buf, base, req, opts.MaxResidues)
			if err != nil {
				yield(Embedding{}, err)
				return false
			}
			for _, e := range embs {
				if !yield(e, nil) {
					return false
				}
			}
			base += len(buf)
			buf, toks = buf[:0], 0
			return true
		}
		for s := range in {
			buf = append(buf, s)
			toks += len(s.Residues) + 2
			if toks >= window && !flush() {
				return
			}
		}
		flush()
	}
}

// Logits is the masked-LM output of one sequence: a score for each of the
// 33 tokens of the alphabet (Alphabet) at every position.
type Logits struct {
	ID        string
	Index     int  // position in the input (0-based)
	Length    int  // residues (after truncation)
	Truncated bool // Length < the sequence's residues
	// Tokens are the input token ids, BOS and EOS included: (Length+2).
	Tokens []int32
	data   []float32 // (Length+2, V)
}

// All returns the logits of every token: (Length+2, 33); row 0 is BOS, row
// Length+1 is EOS, row i (1..Length) is residue i-1.
func (l Logits) All() Matrix {
	if len(l.data) == 0 { // the zero Logits
		return Matrix{}
	}
	return Matrix{Rows: l.Length + 2, Cols: esm.VocabSize, Data: l.data}
}

// Residues returns the logits of the residues only: (Length, 33), row i for
// residue i.
func (l Logits) Residues() Matrix {
	V := esm.VocabSize
	if len(l.data) < (l.Length+2)*V { // the zero Logits
		return Matrix{}
	}
	return Matrix{Rows: l.Length, Cols: V, Data: l.data[V : (l.Length+1)*V : (l.Length+1)*V]}
}

// LogitsOptions say how Logits reads its input.
type LogitsOptions struct {
	// MaxResidues truncates as EmbedOptions.MaxResidues does.
	MaxResidues int
}

// Logits computes the masked-LM logits of seqs (the checkpoint's LM head
// after the last layer), returned in input order. Column j is token id j
// of Alphabet. A "<mask>" in a residue string is the mask token, so
// masked-marginal scores need no extra API.
func (m *Model) Logits(ctx context.Context, seqs []Sequence, opts LogitsOptions) ([]Logits, error) {
	if m.closed() {
		return nil, ErrClosed
	}
	if !m.info.HasLMHead {
		return nil, fmt.Errorf("esm2go: %s has no LM head (lm_head.* tensors); logits cannot be computed", m.info.Path)
	}
	items, err := tokenize(seqs, 0, opts.MaxResidues)
	if err != nil {
		return nil, err
	}
	res := make([]Logits, len(seqs))
	V := esm.VocabSize
	req := esm.Request{Logits: true}
	var bad error
	err = m.do(ctx, func(r *runner) error {
		return r.forward(ctx, m, items, seqs, 0, req, func(b *esm.Batch, out *esm.Output, its []item) {
			for s, it := range its {
				st, n := b.Seqlens.Start(s), b.Seqlens.Len(s)
				res[it.idx] = Logits{ID: seqs[it.idx].ID, Index: it.idx, Length: it.enc.Kept, Truncated: it.enc.Truncated,
					Tokens: slices.Clone(it.toks), data: slices.Clone(out.Logits[st*V : (st+n)*V])}
				if bad == nil {
					bad = checkFinite(res[it.idx].data, it.idx, res[it.idx].ID, "logits")
				}
			}
		})
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// Alphabet returns ESM2's 33 tokens; the index is the token id (the column
// of a Logits matrix): <cls>=0 <pad>=1 <eos>=2 <unk>=3, residues 4..30
// (L A G V S E R T I D P K Q N F Y M H W C X B U Z O . -), <null_1>=31,
// <mask>=32.
func Alphabet() [esm.VocabSize]string { return esm.Tokens }

// TokenID returns the id of an alphabet token ("A", "<mask>"), or -1.
func TokenID(tok string) int {
	return slices.Index(esm.Tokens[:], tok)
}
