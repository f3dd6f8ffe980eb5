package esm

import (
	"fmt"
	"math"
	"slices"

	"github.com/esm2go/esm2go/weights"
)

// Request says which outputs Forward produces.
type Request struct {
	Layers []int // absolute layer indices 0..L (see Config.ResolveLayer)
	Mean   bool  // mean over residue tokens (BOS/EOS excluded), per layer
	BOS    bool  // the BOS (<cls>) row, per layer
	PerTok bool  // every token's row (BOS and EOS included), per layer
	Logits bool  // MLM logits (T, V) of the last layer
}

// Output holds one batch's results on the host, float32, reused across calls.
type Output struct {
	NSeq, T, D int
	Mean       map[int][]float32 // layer -> (nseq, D)
	BOS        map[int][]float32 // layer -> (nseq, D)
	PerTok     map[int][]float32 // layer -> (T, D)
	Logits     []float32         // (T, V)
}

// Model is an ESM2 model bound to a backend.
type Model struct {
	Cfg    Config
	be     Backend
	params *Params

	capT, capSeq int
	x, h, att    Tensor // (T, D): residual stream, LayerNorm output, attention output
	qkv          Tensor // (T, 3D)
	ff           Tensor // (T, F), also the LM head's (T, D) scratch
	logits       Tensor // (T, V)
	pooled       Tensor // (nseq, D)
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
	return &Model{Cfg: cfg, be: be, params: p}, nil
}

// Backend is the backend the model runs on.
func (m *Model) Backend() Backend { return m.be }

// HasLMHead reports whether Request.Logits can be served.
func (m *Model) HasLMHead() bool { return m.params.HasLMHead() }

// Close frees the model's weights and activations (not the backend).
func (m *Model) Close() error {
	m.freeActivations()
	m.params.Free(m.be)
	return nil
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

// Forward runs the model over one packed batch and fills out.
func (m *Model) Forward(b *Batch, req Request, out *Output) error {
	if err := b.Check(); err != nil {
		return err
	}
	for _, l := range req.Layers {
		if l < 0 || l > m.Cfg.Layers {
			return fmt.Errorf("esm: requested layer %d outside 0..%d", l, m.Cfg.Layers)
		}
	}
	if req.Logits && !m.HasLMHead() {
		return fmt.Errorf("esm: logits requested but the checkpoint has no LM head")
	}
	T, nseq := len(b.Tokens), b.NumSeqs()
	if err := m.reserve(T, nseq); err != nil {
		return err
	}
	out.prepare(nseq, T, m.Cfg.Dim)
	be, p, c := m.be, m.params, m.Cfg
	D, F, H, HD := c.Dim, c.FFN, c.Heads, c.HeadDim()
	eps := c.LayerNormEps
	mask := int32(-1)
	if c.TokenDropout {
		mask = c.MaskToken
	}
	qScale := float32(1 / math.Sqrt(float64(HD)))

	if err := be.SetBatch(b); err != nil {
		return err
	}
	e := errs{}
	e.do(be.Embed(m.x, p.Embed, D, mask))
	e.do(m.collect(0, req, out))
	for i, l := range p.Layers {
		// x += out(attention(rotary(qkv(LN1(x)))))
		e.do(be.LayerNorm(m.h, m.x, l.LN1W, l.LN1B, D, eps))
		e.do(be.Linear(m.qkv, m.h, l.QKVW, l.QKVB, D, 3*D, false))
		e.do(be.RotaryQK(m.qkv, H, HD, qScale))
		e.do(be.Attention(m.att, m.qkv, H, HD))
		e.do(be.Linear(m.x, m.att, l.OutW, l.OutB, D, D, true))
		// x += fc2(gelu(fc1(LN2(x))))
		e.do(be.LayerNorm(m.h, m.x, l.LN2W, l.LN2B, D, eps))
		e.do(be.Linear(m.ff, m.h, l.FC1W, l.FC1B, D, F, false))
		e.do(be.GELU(m.ff, T*F))
		e.do(be.Linear(m.x, m.ff, l.FC2W, l.FC2B, F, D, true))
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
		out.Logits = grow(out.Logits, T*c.Vocab)
		e.do(be.Read(out.Logits, m.logits))
	}
	if e.err != nil {
		return fmt.Errorf("esm: forward: %w", e.err)
	}
	return nil
}

// collect copies what req asks of layer k's representation (in m.x) out.
func (m *Model) collect(k int, req Request, out *Output) error {
	if !slices.Contains(req.Layers, k) {
		return nil
	}
	D := m.Cfg.Dim
	if req.Mean {
		if err := m.be.PoolMean(m.pooled, m.x, D); err != nil {
			return err
		}
		out.Mean[k] = grow(out.Mean[k], out.NSeq*D)
		if err := m.be.Read(out.Mean[k], m.pooled); err != nil {
			return err
		}
	}
	if req.BOS {
		if err := m.be.PoolBOS(m.pooled, m.x, D); err != nil {
			return err
		}
		out.BOS[k] = grow(out.BOS[k], out.NSeq*D)
		if err := m.be.Read(out.BOS[k], m.pooled); err != nil {
			return err
		}
	}
	if req.PerTok {
		out.PerTok[k] = grow(out.PerTok[k], out.T*D)
		if err := m.be.Read(out.PerTok[k], m.x); err != nil {
			return err
		}
	}
	return nil
}

func (o *Output) prepare(nseq, T, D int) {
	o.NSeq, o.T, o.D = nseq, T, D
	if o.Mean == nil {
		o.Mean, o.BOS, o.PerTok = map[int][]float32{}, map[int][]float32{}, map[int][]float32{}
	}
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// errs keeps the first error of a flat list of calls.
type errs struct{ err error }

func (e *errs) do(err error) {
	if e.err == nil {
		e.err = err
	}
}

// LoadModel opens the checkpoint at path (a directory with config.json and
// model.safetensors, or a fair-esm .pt; see weights.Open), uploads its
// weights to be and closes the file: the model keeps its own copy.
func LoadModel(path string, be Backend) (*Model, error) {
	ck, err := weights.Open(path)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	cfg, err := ConfigFromHF(ck.Config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return NewModel(cfg, CheckpointSource{C: ck}, be)
}
