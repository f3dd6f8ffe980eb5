package graph

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	G "gorgonia.org/gorgonia"
)

// Whole-model tolerances (tiny checkpoint, T = 26 tokens).
//
// refForwardTol: the graph's fp32 logits against the float64 equations
// (ref64), max|diff|/max|ref|. fp32 error through 3 layers and the head:
// measured 4.9e-7; 2e-5 as in tests/parity_test.go for fp32 against HF.
//
// modelGradTol: the fp32 gradient against central differences of the
// float64 forward (step 1e-5 on inputs of size ~1: truncation ~1e-10,
// cancellation ~1e-11), per checked direction |g·v - fd| / (max row |g|
// times |v|), rows of the input and whole parameters. The backward's fp32
// rounding measured 2.1e-7 at worst; 5e-5 is margin; a wrong op gradient
// shows as 5e-4 or more (a dropped LayerNorm term measured 9e-3).
const (
	refForwardTol = 2e-5
	modelGradTol  = 5e-5
	modelFDStep   = 1e-5
)

// The whole model's gradient of one masked-LM logit with respect to the
// input embeddings, and to parameters, agrees with finite differences of
// an independent float64 forward; packing changes nothing and no gradient
// crosses into another sequence.
func TestModelGradientMatchesFiniteDifferences(t *testing.T) {
	m := loadTiny(t)
	ref := newRef64(m)
	b := batchOf(t, testSeqs[2], testSeqs[1]) // the logit is in the second, masked sequence
	D, V := m.Cfg.Dim, m.Cfg.Vocab
	start, n := b.Seqlens.Start(1), b.Seqlens.Len(1)
	row := start + 2 // the first <mask> of the second sequence
	if b.Tokens[row] != m.Cfg.MaskToken {
		t.Fatalf("row %d holds token %d, want <mask>", row, b.Tokens[row])
	}
	const tok = int32(15) // K, the residue that was masked

	pass, err := m.Forward(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := pass.Logit(row, tok)
	if err != nil {
		t.Fatal(err)
	}
	paramNames := []string{
		"encoder.layer.0.attention.self.query.weight",
		"encoder.layer.1.intermediate.dense.bias",
		"encoder.layer.2.LayerNorm.weight",
		"lm_head.bias",
	}
	wrt := []*G.Node{pass.Embeddings}
	for _, name := range paramNames {
		n, err := pass.Param(name)
		if err != nil {
			t.Fatal(err)
		}
		wrt = append(wrt, n)
	}
	res, err := pass.Run(Request{Cost: cost, WRT: wrt, Read: []*G.Node{pass.Logits}})
	if err != nil {
		t.Fatal(err)
	}
	gEmb := res.Grads[0]

	// forward: the graph against the float64 equations
	emb := make([]float64, len(b.Tokens)*D)
	table := ref.p["embeddings.word_embeddings.weight"]
	for i, tk := range b.Tokens {
		copy(emb[i*D:(i+1)*D], table[int(tk)*D:])
	}
	_, logits := ref.forward(emb, b.Tokens, b.Seqlens.Cu)
	e := relErr(res.Values[0], f32s(logits))
	t.Logf("logits: graph vs float64 equations %.3g", e)
	if e > refForwardTol {
		t.Errorf("logits: max|graph - float64 equations|/max|ref| = %.3g > %g", e, refForwardTol)
	}
	if got, want := float64(res.Cost), logits[row*V+int(tok)]; math.Abs(got-want) > refForwardTol*math.Abs(want)+1e-6 {
		t.Errorf("cost %g, float64 logit %g", got, want)
	}

	// No gradient crosses sequences; <mask> rows (zeroed by token dropout)
	// have none either.
	for i := range len(b.Tokens) {
		zero := i < start || b.Tokens[i] == m.Cfg.MaskToken
		nz := slices.ContainsFunc(gEmb[i*D:(i+1)*D], func(v float32) bool { return v != 0 })
		if zero && nz {
			t.Errorf("token %d (id %d): nonzero gradient, want exactly 0", i, b.Tokens[i])
		}
		if !zero && !nz {
			t.Errorf("token %d (id %d): gradient is all zero", i, b.Tokens[i])
		}
	}

	// central differences of the float64 forward along directions v
	logit := func(e []float64, params map[string][]float64) float64 {
		old := ref.p
		if params != nil {
			ref.p = params
		}
		_, lg := ref.forward(e, b.Tokens, b.Seqlens.Cu)
		ref.p = old
		return lg[row*V+int(tok)]
	}
	r := rand.New(rand.NewPCG(9, 10))
	var worst float64
	checkDir := func(what string, grad []float32, v []float64, fdOf func(h float64) float64, scale float64) {
		t.Helper()
		fd := (fdOf(modelFDStep) - fdOf(-modelFDStep)) / (2 * modelFDStep)
		var gv, vn float64
		for i, x := range v {
			gv += float64(grad[i]) * x
			vn += x * x
		}
		e := math.Abs(gv-fd) / (scale * math.Sqrt(vn))
		worst = math.Max(worst, e)
		if e > modelGradTol {
			t.Errorf("%s: g·v = %.8g, finite differences %.8g (error %.3g of the gradient's scale > %g)", what, gv, fd, e, modelGradTol)
		}
	}
	// embeddings: one random direction per row of the second sequence
	var rowMax float64
	for i := start; i < start+n; i++ {
		rowMax = math.Max(rowMax, norm(gEmb[i*D:(i+1)*D]))
	}
	for i := start; i < start+n; i++ {
		v := make([]float64, len(emb))
		for j := i * D; j < (i+1)*D; j++ {
			v[j] = r.NormFloat64()
		}
		checkDir("embeddings row "+strconv.Itoa(i), gEmb, v, func(h float64) float64 { return logit(axpy(emb, v, h), nil) }, rowMax)
	}
	// parameters: one random direction each
	for k, name := range paramNames {
		g := res.Grads[1+k]
		v := make([]float64, len(g))
		for j := range v {
			v[j] = r.NormFloat64()
		}
		checkDir(name, g, v, func(h float64) float64 {
			ps := maps64(ref.p)
			ps[name] = axpy(ref.p[name], v, h)
			return logit(emb, ps)
		}, norm(g))
	}
	t.Logf("worst directional error %.3g of the gradient's scale", worst)

	// packing changes nothing: the second sequence alone gives the same
	// gradient rows (fp32 differences only: the matmuls see other shapes)
	alone := batchOf(t, testSeqs[1])
	p2, err := m.Forward(alone, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := p2.Logit(2, tok)
	if err != nil {
		t.Fatal(err)
	}
	res2, err := p2.Run(Request{Cost: c2, WRT: []*G.Node{p2.Embeddings}})
	if err != nil {
		t.Fatal(err)
	}
	// Measured identical (gonum computes each row of a GEMM alike whatever
	// the other rows); 1e-5 allows a kernel that blocks rows differently.
	e = relErr(gEmb[start*D:(start+n)*D], res2.Grads[0])
	t.Logf("packed vs alone gradient %.3g", e)
	if e > 1e-5 {
		t.Errorf("packed vs alone gradient: max|diff|/max = %.3g > 1e-5", e)
	}
}

// axpy returns x + h*v.
func axpy(x, v []float64, h float64) []float64 {
	y := make([]float64, len(x))
	for i := range x {
		y[i] = x[i] + h*v[i]
	}
	return y
}

func maps64(m map[string][]float64) map[string][]float64 {
	c := make(map[string][]float64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
