package graph

import (
	"context"
	"fmt"
	"math"
	"slices"

	G "gorgonia.org/gorgonia"

	"github.com/esm2go/esm2go/esm"
)

// Target names one masked-LM logit of one sequence.
type Target struct {
	// Seq is the protein (residue letters; "<mask>" and "<unk>" are one
	// token each), tokenized as esm.Tokenizer does, truncated to
	// esm.DefaultMaxResidues.
	Seq string
	// Pos is the token index of the logit: 0 is <cls>, residue r (1-based)
	// is token r, the last token is <eos>.
	Pos int
	// Token is the vocabulary id of the logit (esm.Tokens), e.g. the true
	// residue at a <mask>.
	Token int32
}

// Attribution spreads one logit over the input tokens.
type Attribution struct {
	Tokens []int32 // (T) the sequence's tokens, <cls> and <eos> included
	Value  float32 // the logit at the input
	// Grad (T, D): for Saliency the gradient of the logit with respect to
	// the input embeddings (the word-embedding rows before token dropout);
	// for IntegratedGradients the attributions (input - baseline) ⊙ the
	// path-averaged gradient.
	Grad []float32
	// Scores (T) per token: Saliency, the L2 norm of the token's gradient
	// row; IntegratedGradients, the sum of its attribution row (they add up
	// to Value - Baseline, up to the Riemann sum's error).
	Scores []float32
	// Baseline is the logit at the baseline input (IntegratedGradients);
	// 0 for Saliency.
	Baseline float32
}

// encode tokenizes t.Seq into a one-sequence batch and checks the target.
func (m *Model) encode(t Target) (*esm.Batch, error) {
	if !m.HasLMHead() {
		return nil, fmt.Errorf("graph: the model has no LM head, so no logits to attribute")
	}
	toks, e, err := esm.NewTokenizer(esm.DefaultMaxResidues).Encode(nil, []byte(t.Seq))
	if err != nil {
		return nil, fmt.Errorf("graph: sequence %q: %w", cut(t.Seq), err)
	}
	if t.Pos < 0 || t.Pos >= len(toks) {
		return nil, fmt.Errorf("graph: target position %d outside the sequence's %d tokens (<cls> and <eos> included)", t.Pos, len(toks))
	}
	if t.Token < 0 || int(t.Token) >= m.Cfg.Vocab {
		return nil, fmt.Errorf("graph: target token id %d outside the %d-token alphabet", t.Token, m.Cfg.Vocab)
	}
	b := &esm.Batch{}
	b.Append(toks, e.Masks)
	return b, nil
}

// Saliency is the gradient of the target logit with respect to the input
// embeddings, with per-token L2 norms as scores.
func (m *Model) Saliency(t Target) (*Attribution, error) {
	b, err := m.encode(t)
	if err != nil {
		return nil, err
	}
	p, err := m.Forward(b, nil)
	if err != nil {
		return nil, err
	}
	cost, err := p.Logit(t.Pos, t.Token)
	if err != nil {
		return nil, err
	}
	res, err := p.Run(Request{Cost: cost, WRT: []*G.Node{p.Embeddings}})
	if err != nil {
		return nil, err
	}
	D := m.Cfg.Dim
	a := &Attribution{Tokens: p.Tokens, Value: res.Cost, Grad: res.Grads[0], Scores: make([]float32, len(p.Tokens))}
	for i := range a.Scores {
		a.Scores[i] = float32(norm(a.Grad[i*D : (i+1)*D]))
	}
	return a, nil
}

// igTokens bounds the tokens of one integrated-gradients pass: the path's
// points are packed as separate sequences of one batch, this many tokens
// at a time (activations of all layers are kept for the backward: for the
// 8M model ~50 KB per token).
const igTokens = 4096

// IGOptions configure IntegratedGradients.
type IGOptions struct {
	// Steps is the number of points on the path (midpoint rule); 0 means
	// 64. Completeness (Scores adding up to Value - Baseline) improves as
	// 1/Steps^2.
	Steps int
	// Baseline (T*D, row-major) is where the path starts; nil means the
	// default: every residue row the mean word embedding of the 20
	// standard amino acids (an uninformative residue), the <cls> and <eos>
	// rows as in the input (so they get no attribution). All-zero rows are
	// a poor baseline for ESM2: zero is what token dropout makes of a
	// <mask>, and the first LayerNorm maps every other multiple of a row
	// to the same normalized vector, so the logit jumps within
	// |alpha| < ~1e-2 of zero, where a Riemann sum cannot follow it.
	Baseline []float32
}

// IntegratedGradients attributes the target logit to the input embeddings
// along the straight path from a baseline (Sundararajan et al. 2017):
// Grad = (input - baseline) ⊙ the mean gradient over the path's points.
// The points are packed as separate sequences of a batch, so one backward
// pass serves many of them. ctx is checked between passes.
func (m *Model) IntegratedGradients(ctx context.Context, t Target, o IGOptions) (*Attribution, error) {
	return m.integratedGradients(ctx, t, o, igTokens)
}

// integratedGradients packs at most maxTokens tokens (and at least one
// point) per pass.
func (m *Model) integratedGradients(ctx context.Context, t Target, o IGOptions, maxTokens int) (*Attribution, error) {
	steps := o.Steps
	if steps == 0 {
		steps = 64
	}
	if steps < 1 || steps > 1<<16 {
		return nil, fmt.Errorf("graph: integrated gradients with %d steps (want 1..65536)", steps)
	}
	b, err := m.encode(t)
	if err != nil {
		return nil, err
	}
	T, D := len(b.Tokens), m.Cfg.Dim
	table, _, err := m.Param("embeddings.word_embeddings.weight")
	if err != nil {
		return nil, err
	}
	x := make([]float32, T*D) // the input's word-embedding rows
	for i, tok := range b.Tokens {
		copy(x[i*D:(i+1)*D], table[int(tok)*D:])
	}
	base := o.Baseline
	switch {
	case base == nil:
		base = m.residueBaseline(b.Tokens, x)
	case len(base) != T*D:
		return nil, fmt.Errorf("graph: integrated gradients: baseline of %d values, the sequence needs %d (T=%d x D=%d)", len(base), T*D, T, D)
	}
	dir := make([]float32, T*D) // input - baseline
	for i := range dir {
		dir[i] = x[i] - base[i]
	}

	// the logit at the input and at the baseline, in one pass
	ends, err := m.pathLogits(b, base, dir, []float64{1, 0}, t, nil)
	if err != nil {
		return nil, err
	}
	sum := make([]float64, T*D) // sum over points of the gradient
	per := max(1, maxTokens/T)
	for k0 := 0; k0 < steps; k0 += per {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("graph: integrated gradients: %w", err)
		}
		alphas := make([]float64, 0, per)
		for k := k0; k < min(k0+per, steps); k++ {
			alphas = append(alphas, (float64(k)+0.5)/float64(steps))
		}
		if _, err := m.pathLogits(b, base, dir, alphas, t, sum); err != nil {
			return nil, err
		}
	}
	a := &Attribution{Tokens: b.Tokens, Value: ends[0], Baseline: ends[1], Grad: make([]float32, T*D), Scores: make([]float32, T)}
	for i := range sum {
		a.Grad[i] = float32(float64(dir[i]) * sum[i] / float64(steps))
	}
	for i := range T {
		var s float64
		for _, v := range a.Grad[i*D : (i+1)*D] {
			s += float64(v)
		}
		a.Scores[i] = float32(s)
	}
	return a, nil
}

// residueBaseline is IGOptions' default baseline for tokens whose input
// rows are x: the mean embedding of the 20 standard amino acids at every
// token but <cls> and <eos>, which keep their rows.
func (m *Model) residueBaseline(tokens []int32, x []float32) []float32 {
	D := m.Cfg.Dim
	table, _, _ := m.Param("embeddings.word_embeddings.weight")
	mean := make([]float32, D)
	const standard = "ACDEFGHIKLMNPQRSTVWY"
	acc := make([]float64, D)
	for _, c := range []byte(standard) {
		id := slices.Index(esm.Tokens[:], string(c))
		for i, v := range table[id*D : (id+1)*D] {
			acc[i] += float64(v)
		}
	}
	for i, v := range acc {
		mean[i] = float32(v / float64(len(standard)))
	}
	base := make([]float32, len(x))
	for t, tok := range tokens {
		if tok == esm.TokCLS || tok == esm.TokEOS {
			copy(base[t*D:(t+1)*D], x[t*D:])
		} else {
			copy(base[t*D:(t+1)*D], mean)
		}
	}
	return base
}

// pathLogits runs the target logit at the points base + alpha*dir (one
// sequence of a packed batch each) and returns their values; when gradSum
// is non-nil it also adds each point's gradient with respect to its
// embeddings into it.
func (m *Model) pathLogits(one *esm.Batch, base, dir []float32, alphas []float64, t Target, gradSum []float64) ([]float32, error) {
	T, D := len(one.Tokens), m.Cfg.Dim
	b := &esm.Batch{}
	masks := masksOf(one.Tokens, m.Cfg.MaskToken)
	emb := make([]float32, 0, len(alphas)*T*D)
	for _, a := range alphas {
		b.Append(one.Tokens, masks)
		for i, v := range dir {
			emb = append(emb, base[i]+float32(a*float64(v)))
		}
	}
	p, err := m.Forward(b, &Options{Embeddings: emb})
	if err != nil {
		return nil, err
	}
	w := make([]float32, len(b.Tokens)*m.Cfg.Vocab)
	for k := range alphas {
		w[(k*T+t.Pos)*m.Cfg.Vocab+int(t.Token)] = 1
	}
	cost, err := p.Project(p.Logits, w)
	if err != nil {
		return nil, err
	}
	req := Request{Read: []*G.Node{p.Logits}}
	if gradSum != nil {
		req.Cost, req.WRT = cost, []*G.Node{p.Embeddings}
	}
	res, err := p.Run(req)
	if err != nil {
		return nil, err
	}
	vals := make([]float32, len(alphas))
	for k := range alphas {
		vals[k] = res.Values[0][(k*T+t.Pos)*m.Cfg.Vocab+int(t.Token)]
	}
	if gradSum != nil {
		g := res.Grads[0]
		for k := range alphas {
			for i, v := range g[k*T*D : (k+1)*T*D] {
				gradSum[i] += float64(v)
			}
		}
	}
	return vals, nil
}

func masksOf(toks []int32, mask int32) int {
	n := 0
	for _, t := range toks {
		if t == mask {
			n++
		}
	}
	return n
}

// norm is the L2 norm of x, accumulated in float64.
func norm(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s)
}
