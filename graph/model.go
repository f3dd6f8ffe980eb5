package graph

import (
	"errors"
	"fmt"
	"math"
	"slices"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/esm2go/esm2go/attention"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/weights"
)

// Model holds ESM2 parameters on the host as float32, by canonical name
// (the names of esm.Source: HF EsmModel names without "esm.", lm_head.* as
// in EsmForMaskedLM), and builds one graph per batch (Forward).
//
// Model is safe for concurrent use while nobody writes its parameters; the
// slices Param returns are its live storage (write them to train, between
// passes, never during one).
type Model struct {
	Cfg     esm.Config
	params  map[string]*tensor.Dense // by canonical name
	names   []string                 // in load order
	invFreq []float32                // (HD/2) rotary inverse frequencies
	decoder string                   // the LM decoder's parameter name ("" without an LM head)
}

// New reads cfg's parameters from src through esm.LoadParams, the loader
// of the inference backends: the same names, shape checks, stacked q/k/v,
// tied decoder and stored rotary frequencies, so a graph and an esm.Model
// built from one source compute from identical numbers.
func New(cfg esm.Config, src esm.Source) (*Model, error) {
	var store hostStore
	p, err := esm.LoadParams(cfg, src, store)
	if err != nil {
		return nil, fmt.Errorf("graph: %w", err)
	}
	D, F, V := cfg.Dim, cfg.FFN, cfg.Vocab
	m := &Model{Cfg: cfg, params: map[string]*tensor.Dense{}, invFreq: slices.Clone(p.InvFreq)}
	add := func(name string, t esm.Tensor, shape ...int) {
		m.params[name] = dense(t.(*hostTensor).d, shape...)
		m.names = append(m.names, name)
	}
	// split views the stacked (3N, ...) q/k/v tensor as three parameters.
	split := func(pre, suffix string, t esm.Tensor, shape ...int) {
		d := t.(*hostTensor).d
		n := len(d) / 3
		for i, part := range []string{"query", "key", "value"} {
			name := pre + "attention.self." + part + "." + suffix
			m.params[name] = dense(d[i*n:(i+1)*n:(i+1)*n], shape...)
			m.names = append(m.names, name)
		}
	}
	add("embeddings.word_embeddings.weight", p.Embed, V, D)
	for i, l := range p.Layers {
		pre := fmt.Sprintf("encoder.layer.%d.", i)
		add(pre+"attention.LayerNorm.weight", l.LN1W, D)
		add(pre+"attention.LayerNorm.bias", l.LN1B, D)
		split(pre, "weight", l.QKVW, D, D)
		split(pre, "bias", l.QKVB, D)
		add(pre+"attention.output.dense.weight", l.OutW, D, D)
		add(pre+"attention.output.dense.bias", l.OutB, D)
		add(pre+"LayerNorm.weight", l.LN2W, D)
		add(pre+"LayerNorm.bias", l.LN2B, D)
		add(pre+"intermediate.dense.weight", l.FC1W, F, D)
		add(pre+"intermediate.dense.bias", l.FC1B, F)
		add(pre+"output.dense.weight", l.FC2W, D, F)
		add(pre+"output.dense.bias", l.FC2B, D)
	}
	add("encoder.emb_layer_norm_after.weight", p.FinalW, D)
	add("encoder.emb_layer_norm_after.bias", p.FinalB, D)
	if p.HasLMHead() {
		add("lm_head.dense.weight", p.LMDenseW, D, D)
		add("lm_head.dense.bias", p.LMDenseB, D)
		add("lm_head.layer_norm.weight", p.LMLNW, D)
		add("lm_head.layer_norm.bias", p.LMLNB, D)
		add("lm_head.bias", p.LMBias, V)
		m.decoder = "embeddings.word_embeddings.weight" // tied, as in every released ESM2
		if p.LMDecoder != p.Embed {
			m.decoder = "lm_head.decoder.weight"
			add(m.decoder, p.LMDecoder, V, D)
		}
	}
	return m, nil
}

// Load opens the checkpoint at path (see weights.Open) and reads its
// parameters; the file is closed before Load returns.
func Load(path string) (*Model, error) {
	ck, err := weights.Open(path)
	if err != nil {
		return nil, fmt.Errorf("graph: %w", err)
	}
	defer ck.Close()
	cfg, err := esm.ConfigFromHF(ck.Config)
	if err != nil {
		return nil, fmt.Errorf("graph: %s: %w", path, err)
	}
	return New(cfg, esm.CheckpointSource{C: ck})
}

// HasLMHead reports whether the model has the masked-LM head (Pass.Logits).
func (m *Model) HasLMHead() bool { return m.decoder != "" }

// ParamNames lists the parameters in load order (a tied decoder is the
// word embeddings and has no name of its own).
func (m *Model) ParamNames() []string { return slices.Clone(m.names) }

// Param returns a parameter's live storage (row-major) and shape. Writes
// change the model (that is how a training step updates it).
func (m *Model) Param(name string) ([]float32, []int, error) {
	t, ok := m.params[name]
	if !ok {
		return nil, nil, fmt.Errorf("graph: no parameter %q (see Model.ParamNames)", cut(name))
	}
	return t.Data().([]float32), slices.Clone([]int(t.Shape())), nil
}

// Options change what Forward builds.
type Options struct {
	// Embeddings (T*D, row-major), when set, replace the word-embedding rows
	// of the batch's tokens as the pass's input (e.g. the interpolations of
	// integrated gradients). Token dropout still applies to them.
	Embeddings []float32
	// Adapt, when set, is called once per parameter the graph uses, with
	// the parameter's node; the graph uses the node it returns instead (of
	// the same shape), e.g. w + B·A for a low-rank adapter whose leaves the
	// caller creates in w.Graph() and keeps for Pass.Run's WRT. Returning w
	// keeps the parameter.
	Adapt func(name string, w *G.Node) (*G.Node, error)
}

// Pass is the forward graph of one packed batch: nodes a caller combines
// into a scalar with Gorgonia's operations (or Pass.Project) and runs once
// with Pass.Run.
type Pass struct {
	Graph *G.ExprGraph
	Cfg   esm.Config
	// Tokens and Seqlens are the batch's (copies).
	Tokens  []int32
	Seqlens []int32
	// Embeddings (T, D) is the input: the word-embedding rows of the
	// tokens (or Options.Embeddings), before token dropout. Its gradient is
	// the per-residue saliency.
	Embeddings *G.Node
	// Hidden[k] (T, D) is representation k as esm.Model defines it: 0 the
	// scaled embeddings, k the output of layer k, Hidden[L] with
	// emb_layer_norm_after applied.
	Hidden []*G.Node
	// Logits (T, V) are the masked-LM logits; nil without an LM head.
	Logits *G.Node

	params map[string]*G.Node // the parameter leaves, by name
	ran    bool
}

// Forward builds the graph of one packed batch (tokens concatenated, no
// padding, positions restarting per sequence). opt may be nil.
func (m *Model) Forward(b *esm.Batch, opt *Options) (*Pass, error) {
	if err := b.Check(); err != nil {
		return nil, fmt.Errorf("graph: %w", err)
	}
	if opt == nil {
		opt = &Options{}
	}
	c := m.Cfg
	D, H, HD, T := c.Dim, c.Heads, c.HeadDim(), len(b.Tokens)
	if opt.Embeddings != nil && len(opt.Embeddings) != T*D {
		return nil, fmt.Errorf("graph: Options.Embeddings has %d values, the batch needs %d (T=%d x D=%d)", len(opt.Embeddings), T*D, T, D)
	}
	g := G.NewGraph()
	p := &Pass{Graph: g, Cfg: c, Tokens: slices.Clone(b.Tokens), Seqlens: slices.Clone(b.Seqlens.Cu), params: map[string]*G.Node{}}
	seqlens := attention.Seqlens{Cu: p.Seqlens}

	// The input rows, and token dropout: x *= 0.88/(1-n_mask/n) per
	// sequence, <mask> rows zeroed (esm.Backend.Embed).
	emb := make([]float32, T*D)
	if opt.Embeddings != nil {
		copy(emb, opt.Embeddings)
	} else {
		table := m.params["embeddings.word_embeddings.weight"].Data().([]float32)
		for t, tok := range p.Tokens {
			copy(emb[t*D:(t+1)*D], table[int(tok)*D:])
		}
	}
	scale := make([]float32, T)
	pos := make([]int32, T)
	for s := range seqlens.N() {
		for i := range seqlens.Len(s) {
			t := seqlens.Start(s) + i
			pos[t] = int32(i)
			switch {
			case !c.TokenDropout:
				scale[t] = 1
			case p.Tokens[t] != c.MaskToken:
				scale[t] = b.Scales[s]
			}
		}
	}
	p.Embeddings = G.NewMatrix(g, tensor.Float32, G.WithShape(T, D), G.WithName("embeddings"), G.WithValue(dense(emb, T, D)))

	bd := &builder{m: m, p: p, adapt: opt.Adapt, used: map[string]*G.Node{}}
	r := newRope(pos, m.invFreq)
	qScale := float32(1 / math.Sqrt(float64(HD)))
	x := bd.apply(rowScaleOp{scale: scale}, p.Embeddings)
	p.Hidden = append(p.Hidden, x)
	for i := range c.Layers {
		pre := fmt.Sprintf("encoder.layer.%d.", i)
		// x += out(attention(rotary(qkv(LN1(x)))))
		h := bd.layerNorm(x, pre+"attention.LayerNorm")
		qkv := bd.qkv(h, pre+"attention.self.")
		qkv = bd.apply(rotaryOp{r: r, H: H, HD: HD, qScale: qScale}, qkv)
		a := bd.apply(attentionOp{seqlens: seqlens, H: H, HD: HD}, qkv)
		x = bd.add(x, bd.linear(a, pre+"attention.output.dense"))
		// x += fc2(gelu(fc1(LN2(x))))
		h = bd.layerNorm(x, pre+"LayerNorm")
		f := bd.apply(geluOp{}, bd.linear(h, pre+"intermediate.dense"))
		x = bd.add(x, bd.linear(f, pre+"output.dense"))
		p.Hidden = append(p.Hidden, x)
	}
	// The last representation is after emb_layer_norm_after.
	x = bd.layerNorm(x, "encoder.emb_layer_norm_after")
	p.Hidden[c.Layers] = x
	if m.HasLMHead() {
		// logits = decoder(LN(gelu(dense(x)))) + bias
		h := bd.apply(geluOp{}, bd.linear(x, "lm_head.dense"))
		h = bd.layerNorm(h, "lm_head.layer_norm")
		p.Logits = bd.affine(h, bd.param(m.decoder), bd.param("lm_head.bias"))
	}
	if bd.err != nil {
		return nil, bd.err
	}
	return p, nil
}

// builder adds the layers' nodes to a pass's graph, keeping the first error
// (so the forward above reads as a flat list of calls).
type builder struct {
	m     *Model
	p     *Pass
	adapt func(name string, w *G.Node) (*G.Node, error)
	used  map[string]*G.Node // what the layers use: the leaf or its adaptation
	err   error
}

func (b *builder) fail(err error, what string) *G.Node {
	if b.err == nil && err != nil {
		b.err = fmt.Errorf("graph: %s: %w", what, err)
	}
	return nil
}

// param is the node of a parameter (one leaf per name and pass), or what
// Options.Adapt made of it.
func (b *builder) param(name string) *G.Node {
	if b.err != nil {
		return nil
	}
	if n, ok := b.used[name]; ok {
		return n
	}
	t, ok := b.m.params[name]
	if !ok {
		return b.fail(fmt.Errorf("no parameter %q", name), "forward")
	}
	// A tensor header of its own per pass (Gorgonia writes to headers,
	// e.g. their engine), over the model's storage.
	v := dense(t.Data().([]float32), t.Shape()...)
	n := G.NewTensor(b.p.Graph, tensor.Float32, t.Dims(), G.WithShape(t.Shape()...), G.WithName(name), G.WithValue(v))
	b.p.params[name] = n
	if b.adapt != nil {
		a, err := b.adapt(name, n)
		switch {
		case err != nil:
			return b.fail(err, "Options.Adapt("+name+")")
		case a == nil || a.Graph() != b.p.Graph || !a.Shape().Eq(n.Shape()):
			return b.fail(errors.New("must return a node of the pass's graph with the parameter's shape"), "Options.Adapt("+name+")")
		}
		n = a
	}
	b.used[name] = n
	return n
}

func (b *builder) apply(op G.Op, in ...*G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	n, err := G.ApplyOp(op, in...)
	if err != nil {
		return b.fail(err, op.String())
	}
	return n
}

func (b *builder) add(x, y *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	n, err := G.Add(x, y)
	if err != nil {
		return b.fail(err, "residual add")
	}
	return n
}

// affine is x(T,K)·w(N,K)ᵀ + bias(N), in Gorgonia's own operations.
func (b *builder) affine(x, w, bias *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	wt, err := G.Transpose(w)
	if err != nil {
		return b.fail(err, "linear "+w.Name())
	}
	y, err := G.Mul(x, wt)
	if err != nil {
		return b.fail(err, "linear "+w.Name())
	}
	row, err := G.Reshape(bias, tensor.Shape{1, bias.Shape()[0]})
	if err != nil {
		return b.fail(err, "linear "+bias.Name())
	}
	if y, err = G.BroadcastAdd(y, row, nil, []byte{0}); err != nil {
		return b.fail(err, "linear "+bias.Name())
	}
	return y
}

// linear is the affine map of the parameters pre.weight and pre.bias.
func (b *builder) linear(x *G.Node, pre string) *G.Node {
	return b.affine(x, b.param(pre+".weight"), b.param(pre+".bias"))
}

// qkv is the packed (T, 3D) = [q | k | v] of the projections pre{query,key,value}.
func (b *builder) qkv(x *G.Node, pre string) *G.Node {
	var w, bias [3]*G.Node
	for i, part := range []string{"query", "key", "value"} {
		w[i], bias[i] = b.param(pre+part+".weight"), b.param(pre+part+".bias")
	}
	if b.err != nil {
		return nil
	}
	wc, err := G.Concat(0, w[:]...)
	if err != nil {
		return b.fail(err, "concat "+pre+"{query,key,value}.weight")
	}
	bc, err := G.Concat(0, bias[:]...)
	if err != nil {
		return b.fail(err, "concat "+pre+"{query,key,value}.bias")
	}
	return b.affine(x, wc, bc)
}

// layerNorm is the LayerNorm of the parameters pre.weight and pre.bias.
func (b *builder) layerNorm(x *G.Node, pre string) *G.Node {
	w, bias := b.param(pre+".weight"), b.param(pre+".bias")
	return b.apply(layerNormOp{eps: b.m.Cfg.LayerNormEps}, x, w, bias)
}

// hostStore is an esm.Backend that only keeps what esm.LoadParams uploads,
// as host float32 slices; it computes nothing.
type hostStore struct{}

type hostTensor struct{ d []float32 }

func (t *hostTensor) Len() int { return len(t.d) }

var errHostStore = errors.New("graph: the parameter store runs no operations")

func (hostStore) Name() string             { return "graph parameter store" }
func (hostStore) Precision() esm.Precision { return esm.FP32 }
func (hostStore) Upload(name string, d []float32, wide bool) (esm.Tensor, error) {
	return &hostTensor{d: slices.Clone(d)}, nil
}
func (hostStore) Alloc(n int, wide bool) (esm.Tensor, error)         { return nil, errHostStore }
func (hostStore) Free(esm.Tensor)                                    {}
func (hostStore) SetBatch(*esm.Batch) error                          { return errHostStore }
func (hostStore) Embed(x, table esm.Tensor, D int, mask int32) error { return errHostStore }
func (hostStore) LayerNorm(out, in, w, b esm.Tensor, D int, eps float32) error {
	return errHostStore
}
func (hostStore) Linear(out, in, w, b esm.Tensor, K, N int, acc bool) error { return errHostStore }
func (hostStore) SetRotary([]float32) error                                 { return errHostStore }
func (hostStore) RotaryQK(qkv esm.Tensor, H, HD int, qScale float32) error {
	return errHostStore
}
func (hostStore) Attention(out, qkv esm.Tensor, H, HD int) error { return errHostStore }
func (hostStore) GELU(x esm.Tensor, n int) error                 { return errHostStore }
func (hostStore) PoolMean(dst, x esm.Tensor, D int) error        { return errHostStore }
func (hostStore) PoolBOS(dst, x esm.Tensor, D int) error         { return errHostStore }
func (hostStore) Read(dst []float32, src esm.Tensor) error       { return errHostStore }
func (hostStore) ReadAsync(dst []float32, src esm.Tensor) error  { return errHostStore }
func (hostStore) Fence() (esm.Fence, error)                      { return esm.Done, nil }
func (hostStore) HostAlloc(n int) (esm.HostMemory, error)        { return nil, errHostStore }
func (hostStore) MemInfo() (free, total uint64, err error) {
	return 0, 0, fmt.Errorf("graph: %w", esm.ErrNoDeviceMemory)
}
func (hostStore) DeviceMemory() (inUse, reserved int64, ok bool) { return 0, 0, false }
func (hostStore) Close() error                                   { return nil }

func (hostStore) AttentionProbs(p, qkv esm.Tensor, H, HD, s, h0, nh int) error {
	return errHostStore
}

var _ esm.Backend = hostStore{}

// cut shortens user-supplied text quoted in errors to about 200 bytes.
func cut(s string) string {
	if len(s) <= 200 {
		return s
	}
	return s[:200] + "..."
}
