package esm

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/esm2go/esm2go/weights"
)

// Request says which outputs Forward produces.
type Request struct {
	Layers []int // layer indices 0..L, or negative from the end (-1 = L); Output is keyed by the absolute index
	Reprs  Repr  // what to pool from each of those layers
	Logits bool  // MLM logits (T, V) of the last layer
}

// Output holds one batch's results on the host, float32, reused across calls.
//
// Ownership. The slices are host memory from the backend's HostAlloc
// (pinned on a GPU, Go memory on the CPU), allocated and grown by Launch and
// owned by the Output: they stay valid until the next Launch or Forward with this Output,
// its Release, or the Close of the model that filled it, whichever comes
// first; keep copies of what must outlive that. A slice replaced by a larger
// one stays allocated until Release (freeing pinned memory would wait for the
// whole device); slices grow by at least half, so what is kept stays below
// twice the largest. Do not reuse an Output in Launch before the fence of
// its previous Launch has been waited for.
type Output struct {
	NSeq, T, D int
	Mean       map[int][]float32 // layer -> (nseq, D)
	BOS        map[int][]float32 // layer -> (nseq, D)
	PerTok     map[int][]float32 // layer -> (T, D)
	Logits     []float32         // (T, V)

	host *outputHost // backend memory behind the slices, or nil
}

// Get returns the rows of one representation k (Mean, BOS or PerTok) of
// layer, or nil when the request did not ask for them.
func (o *Output) Get(k Repr, layer int) []float32 {
	switch k {
	case Mean:
		return o.Mean[layer]
	case BOS:
		return o.BOS[layer]
	case PerTok:
		return o.PerTok[layer]
	}
	return nil
}

// outputHost is the backend host memory an Output's slices live in.
type outputHost struct {
	m       *Model // whose backend allocated mem; Model.Close releases it
	mem     map[outSlot]HostMemory
	retired []HostMemory // outgrown buffers (Model.read), freed by Release
}

// outSlot names one slice of an Output.
type outSlot struct {
	kind  Repr // one representation, or 0 for the logits
	layer int
}

// Release frees the backend memory behind o's slices (if any) and empties
// o; o can be used again. Call it from the goroutine that owns the model's
// backend, after the fence of o's last Launch has been waited for.
func (o *Output) Release() error {
	var err error
	if h := o.host; h != nil {
		for _, mem := range h.mem {
			err = errors.Join(err, mem.Free())
		}
		for _, mem := range h.retired {
			err = errors.Join(err, mem.Free())
		}
		delete(h.m.outs, o)
		o.host = nil
	}
	o.NSeq, o.T, o.D = 0, 0, 0
	o.Mean, o.BOS, o.PerTok, o.Logits = nil, nil, nil, nil
	if err != nil {
		return fmt.Errorf("esm: release output: %w", err)
	}
	return nil
}

// Model is an ESM2 model bound to a backend.
type Model struct {
	Cfg    Config
	be     Backend
	params *Params
	closed bool // Close freed the weights: Launch and Contacts refuse

	capT, capSeq int
	x, h, att    Tensor // (T, D): residual stream, LayerNorm output, attention output
	qkv          Tensor // (T, 3D)
	ff           Tensor // (T, F), also the LM head's (T, D) scratch
	logits       Tensor // (T, V)
	pooled       Tensor // (nseq, D)

	outs map[*Output]struct{} // Outputs holding backend host memory
}

// NewModel uploads the weights of src to be.
func NewModel(cfg Config, src Source, be Backend) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p, err := LoadParams(cfg, src, be)
	if err != nil {
		return nil, err
	}
	if err := be.SetRotary(p.InvFreq); err != nil {
		p.Free(be)
		return nil, fmt.Errorf("esm: rotary: %w", err)
	}
	return &Model{Cfg: cfg, be: be, params: p, outs: map[*Output]struct{}{}}, nil
}

// Backend is the backend the model runs on.
func (m *Model) Backend() Backend { return m.be }

// HasLMHead reports whether Request.Logits can be served.
func (m *Model) HasLMHead() bool { return m.params.HasLMHead() }

// Close frees the model's weights and activations, and the backend host
// memory of every Output it filled (see Output); not the backend.
func (m *Model) Close() error {
	if m.closed {
		return nil
	}
	m.closed = true
	var err error
	for o := range m.outs {
		err = errors.Join(err, o.Release())
	}
	m.freeActivations()
	m.params.Free(m.be)
	return err
}

func (m *Model) freeActivations() {
	for _, t := range []Tensor{m.x, m.h, m.att, m.qkv, m.ff, m.logits, m.pooled} {
		if t != nil {
			m.be.Free(t)
		}
	}
	m.x, m.h, m.att, m.qkv, m.ff, m.logits, m.pooled = nil, nil, nil, nil, nil, nil, nil
	m.capT, m.capSeq = 0, 0
}

// reserve grows the activation buffers to hold T tokens and nseq sequences.
func (m *Model) reserve(T, nseq int) error {
	if T <= m.capT && nseq <= m.capSeq {
		return nil
	}
	T, nseq = max(T, m.capT), max(nseq, m.capSeq)
	m.freeActivations()
	D, F, V := m.Cfg.Dim, m.Cfg.FFN, m.Cfg.Vocab
	sizes := []struct {
		dst  *Tensor
		n    int
		wide bool
	}{{&m.x, T * D, true}, {&m.h, T * D, false}, {&m.att, T * D, false}, {&m.qkv, T * 3 * D, false},
		{&m.ff, T * max(F, D), false}, {&m.logits, T * V, true}, {&m.pooled, nseq * D, true}}
	for _, s := range sizes {
		t, err := m.be.Alloc(s.n, s.wide)
		if err != nil {
			m.freeActivations()
			return fmt.Errorf("esm: activations for %d tokens: %w", T, err)
		}
		*s.dst = t
	}
	m.capT, m.capSeq = T, nseq
	return nil
}

// ErrModelClosed is returned by Launch, Forward and Contacts after Close
// (the weights are freed; on a GPU using them would read freed memory).
var ErrModelClosed = errors.New("esm: the model is closed")

// Forward runs the model over one packed batch and fills out: Launch, then
// wait for its fence.
func (m *Model) Forward(b *Batch, req Request, out *Output) error {
	f, err := m.Launch(b, req, out)
	if err != nil {
		return err
	}
	if err := f.Wait(); err != nil {
		return fmt.Errorf("esm: forward: %w", err)
	}
	return nil
}

// Launch queues the forward pass over one packed batch and the copies of
// everything req asks into out, and returns a fence: out is filled once the
// fence's Wait has returned nil. On a synchronous backend (the CPU) the work
// is done before Launch returns (the fence is already complete); on a GPU
// Launch returns as soon as the work is queued, so the
// caller can prepare, or Launch, the next batch (with another Output) while
// the device computes this one. Activation buffers are shared between
// batches: that is safe because the backend runs queued work in order.
//
// Allocation errors (esm.ErrOutOfMemory: activations, the batch, scratch
// and output buffers are allocated while the work is queued) surface from
// Launch, not from the fence. After an error nothing queued is left running
// (Launch waits for it), so the caller may retry at once, e.g. with a
// smaller batch. Call Launch, and the fence's Wait, from the goroutine that
// owns the backend.
func (m *Model) Launch(b *Batch, req Request, out *Output) (Fence, error) {
	if m.closed {
		return nil, ErrModelClosed
	}
	if err := m.launch(b, req, out); err != nil {
		// Let queued work (of this batch and earlier ones) finish, so
		// that no copy into out is pending when the caller retries.
		if f, ferr := m.be.Fence(); ferr == nil {
			err = errors.Join(err, f.Wait())
		}
		return nil, err
	}
	f, err := m.be.Fence()
	if err != nil {
		return nil, fmt.Errorf("esm: forward: %w", err)
	}
	return f, nil
}

func (m *Model) launch(b *Batch, req Request, out *Output) error {
	if err := b.Check(); err != nil {
		return err
	}
	var err error
	if req.Layers, err = m.requestLayers(req.Layers); err != nil {
		return err
	}
	if req.Logits && !m.HasLMHead() {
		return fmt.Errorf("esm: logits requested but the checkpoint has no LM head")
	}
	T, nseq := len(b.Tokens), b.NumSeqs()
	if err := m.reserve(T, nseq); err != nil {
		return err
	}
	if err := m.prepare(out, nseq, T); err != nil {
		return err
	}
	be, p, c := m.be, m.params, m.Cfg
	D, eps := c.Dim, c.LayerNormEps

	if err := be.SetBatch(b); err != nil {
		return err
	}
	e := errs{}
	e.do(m.embed())
	e.do(m.collect(0, req, out))
	for i := range p.Layers {
		e.do(m.layer(i, T, nil))
		if i+1 < c.Layers {
			e.do(m.collect(i+1, req, out))
		}
		if e.err != nil {
			return fmt.Errorf("esm: layer %d: %w", i, e.err)
		}
	}
	// The last representation is after emb_layer_norm_after.
	e.do(be.LayerNorm(m.x, m.x, p.FinalW, p.FinalB, D, eps))
	e.do(m.collect(c.Layers, req, out))
	if req.Logits {
		// logits = decoder(LN(gelu(dense(x)))) + bias
		e.do(be.Linear(m.ff, m.x, p.LMDenseW, p.LMDenseB, D, D, false))
		e.do(be.GELU(m.ff, T*D))
		e.do(be.LayerNorm(m.ff, m.ff, p.LMLNW, p.LMLNB, D, eps))
		e.do(be.Linear(m.logits, m.ff, p.LMDecoder, p.LMBias, D, c.Vocab, false))
		var err error
		out.Logits, err = m.read(out, outSlot{0, 0}, T*c.Vocab, m.logits)
		e.do(err)
	}
	if e.err != nil {
		return fmt.Errorf("esm: forward: %w", e.err)
	}
	return nil
}

// embed queues x = the scaled token embeddings of the current batch (with
// token dropout: <mask> rows zeroed, each sequence scaled).
func (m *Model) embed() error {
	mask := int32(-1)
	if m.Cfg.TokenDropout {
		mask = m.Cfg.MaskToken
	}
	return m.be.Embed(m.x, m.params.Embed, m.Cfg.Dim, mask)
}

// layer queues transformer layer i over the current batch of T tokens
// (the residual stream in m.x). probe, when not nil, runs after the rotary,
// while m.qkv holds the layer's rotated q (pre-scaled), k and v: Contacts
// reads the attention probabilities there.
func (m *Model) layer(i, T int, probe func() error) error {
	be, l, c := m.be, &m.params.Layers[i], m.Cfg
	D, F, H, HD := c.Dim, c.FFN, c.Heads, c.HeadDim()
	eps := c.LayerNormEps
	qScale := float32(1 / math.Sqrt(float64(HD)))
	e := errs{}
	// x += out(attention(rotary(qkv(LN1(x)))))
	e.do(be.LayerNorm(m.h, m.x, l.LN1W, l.LN1B, D, eps))
	e.do(be.Linear(m.qkv, m.h, l.QKVW, l.QKVB, D, 3*D, false))
	e.do(be.RotaryQK(m.qkv, H, HD, qScale))
	if probe != nil && e.err == nil {
		e.do(probe())
	}
	e.do(be.Attention(m.att, m.qkv, H, HD))
	e.do(be.Linear(m.x, m.att, l.OutW, l.OutB, D, D, true))
	// x += fc2(gelu(fc1(LN2(x))))
	e.do(be.LayerNorm(m.h, m.x, l.LN2W, l.LN2B, D, eps))
	e.do(be.Linear(m.ff, m.h, l.FC1W, l.FC1B, D, F, false))
	e.do(be.GELU(m.ff, T*F))
	e.do(be.Linear(m.x, m.ff, l.FC2W, l.FC2B, F, D, true))
	return e.err
}

// collect queues the copies of what req asks of layer k's representation
// (in m.x) into out. m.pooled is reused by each of them, and by the next
// layer's: that is safe because copies are queued in order with the kernels
// (ReadAsync copies src as it is when the copy is queued, on a GPU because
// copy and pooling kernels share one stream).
func (m *Model) collect(k int, req Request, out *Output) error {
	if !slices.Contains(req.Layers, k) {
		return nil
	}
	D := m.Cfg.Dim
	var err error
	if req.Reprs.Has(Mean) {
		if err := m.be.PoolMean(m.pooled, m.x, D); err != nil {
			return err
		}
		if out.Mean[k], err = m.read(out, outSlot{Mean, k}, out.NSeq*D, m.pooled); err != nil {
			return err
		}
	}
	if req.Reprs.Has(BOS) {
		if err := m.be.PoolBOS(m.pooled, m.x, D); err != nil {
			return err
		}
		if out.BOS[k], err = m.read(out, outSlot{BOS, k}, out.NSeq*D, m.pooled); err != nil {
			return err
		}
	}
	if req.Reprs.Has(PerTok) {
		if out.PerTok[k], err = m.read(out, outSlot{PerTok, k}, out.T*D, m.x); err != nil {
			return err
		}
	}
	return nil
}

// read queues a copy of n elements of src (ReadAsync) into the backend host
// memory of out's slot and returns the slot's slice.
func (m *Model) read(out *Output, slot outSlot, n int, src Tensor) ([]float32, error) {
	mem, err := m.hostSlot(out.host, slot, n, true)
	if err != nil {
		return nil, err
	}
	dst := mem.Floats()[:n]
	return dst, m.be.ReadAsync(dst, src)
}

// hostSlot returns the host memory of slot, replaced by a new allocation
// when it holds fewer than n floats: of n+n/4 or half again the old size
// when headroom is set, so that batches of slowly growing size do not
// reallocate (page-locking memory is slow), else of n. The memory replaced
// is retired, not freed: freeing pinned memory waits for the whole device
// (cuMemFreeHost), which would drain the queue of the batch in flight.
// Release frees it.
func (m *Model) hostSlot(h *outputHost, slot outSlot, n int, headroom bool) (HostMemory, error) {
	mem := h.mem[slot]
	if mem != nil && len(mem.Floats()) >= n {
		return mem, nil
	}
	size := n
	if mem != nil {
		old := len(mem.Floats())
		delete(h.mem, slot)
		h.retired = append(h.retired, mem)
		if headroom {
			size = max(n+n/4, old+old/2)
		}
	} else if headroom {
		size = n + n/4
	}
	mem, err := m.be.HostAlloc(size)
	if err != nil {
		return nil, fmt.Errorf("esm: output buffer of %d floats: %w", n, err)
	}
	h.mem[slot] = mem
	return mem, nil
}

// ReserveOutput allocates out's host memory for the per-token rows req asks
// for, for batches of up to tokens tokens, so that Launch does not allocate
// it: on a GPU that memory is pinned, and pinning a few hundred MB takes a
// good part of a second, which a caller can spend while it sets up rather
// than while its first batches run. Other outputs are small and grow as
// Launch needs them.
func (m *Model) ReserveOutput(out *Output, req Request, tokens int) error {
	if !req.Reprs.Has(PerTok) || tokens <= 0 {
		return nil
	}
	layers, err := m.requestLayers(req.Layers)
	if err != nil {
		return err
	}
	if err := m.prepare(out, 0, 0); err != nil {
		return err
	}
	for _, k := range layers {
		if _, err := m.hostSlot(out.host, outSlot{PerTok, k}, tokens*m.Cfg.Dim, false); err != nil {
			return err
		}
	}
	return nil
}

// prepare sets out's shape and binds out's host memory to m. Memory of another model's backend is released first.
func (m *Model) prepare(out *Output, nseq, T int) error {
	if out.host != nil && out.host.m != m {
		if err := out.Release(); err != nil {
			return err
		}
	}
	if out.host == nil {
		out.host = &outputHost{m: m, mem: map[outSlot]HostMemory{}}
		m.outs[out] = struct{}{}
	}
	out.NSeq, out.T, out.D = nseq, T, m.Cfg.Dim
	if out.Mean == nil {
		out.Mean, out.BOS, out.PerTok = map[int][]float32{}, map[int][]float32{}, map[int][]float32{}
	}
	return nil
}

// errs keeps the first error of a flat list of calls.
type errs struct{ err error }

func (e *errs) do(err error) {
	if e.err == nil {
		e.err = err
	}
}

// OpenCheckpoint opens the checkpoint at path (a directory with config.json
// and model.safetensors, or a fair-esm .pt; see weights.Open) and reads its
// ESM2 config: the one way a checkpoint becomes a model's source, for
// LoadModel and for callers that load it on several backends. The caller
// closes the checkpoint.
func OpenCheckpoint(path string) (*weights.Checkpoint, Config, error) {
	ck, err := weights.Open(path)
	if err != nil {
		return nil, Config{}, err
	}
	cfg, err := ConfigFromHF(ck.Config)
	if err != nil {
		ck.Close()
		return nil, Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return ck, cfg, nil
}

// LoadModel opens the checkpoint at path (OpenCheckpoint), uploads its
// weights to be and closes the file: the model keeps its own copy.
func LoadModel(path string, be Backend) (*Model, error) {
	ck, cfg, err := OpenCheckpoint(path)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	return NewModel(cfg, CheckpointSource{C: ck}, be)
}
