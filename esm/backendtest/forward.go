package backendtest

import (
	"fmt"
	"math"

	"github.com/esm2go/esm2go/attention"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/esmtest"
)

// checkForward runs a whole tiny model (3 layers, D 64, 4 heads, LM head)
// through esm.Model on the backend and through refForward, and compares
// every output: mean, BOS and per-token rows of every layer, and logits.
func checkForward(e *env) {
	cfg, err := esmtest.Config("tiny")
	e.must(err)
	src := esmtest.Random(cfg, 21)
	m, err := esm.NewModel(cfg, src, e.be)
	e.must(err)
	defer func() { e.must(m.Close()) }()
	b := e.batch([]int{3, 40, 130, 9}, true)
	req := esm.Request{Reprs: esm.Mean | esm.BOS | esm.PerTok, Logits: true}
	for l := 0; l <= cfg.Layers; l++ {
		req.Layers = append(req.Layers, l)
	}
	var out esm.Output
	e.must(m.Forward(b, req, &out))
	reps, logits := refForward(e, cfg, src, b)
	D, T := cfg.Dim, len(b.Tokens)
	for l, x := range reps {
		mean, bos := make([]float32, b.NumSeqs()*D), make([]float32, b.NumSeqs()*D)
		for s := 0; s < b.NumSeqs(); s++ {
			st, n := b.Seqlens.Start(s), b.Seqlens.Len(s)
			copy(bos[s*D:], x[st*D:(st+1)*D])
			for i := 0; i < D; i++ {
				var acc float64
				for t := st + 1; t < st+n-1; t++ {
					acc += float64(x[t*D+i])
				}
				mean[s*D+i] = float32(acc / float64(n-2))
			}
		}
		e.compare(fmt.Sprintf("layer %d per-token", l), out.PerTok[l], x[:T*D])
		e.compare(fmt.Sprintf("layer %d mean", l), out.Mean[l], mean)
		e.compare(fmt.Sprintf("layer %d bos", l), out.BOS[l], bos)
	}
	e.compare("logits", out.Logits, logits)
}

// refForward is ESM2 in plain Go loops over src's float32 weights: the
// representation of every layer (the last after emb_layer_norm_after) and
// the LM head's logits.
func refForward(e *env, cfg esm.Config, src esmtest.Source, b *esm.Batch) (reps [][]float32, logits []float32) {
	D, F, H, HD, V := cfg.Dim, cfg.FFN, cfg.Heads, cfg.HeadDim(), cfg.Vocab
	T := len(b.Tokens)
	eps := cfg.LayerNormEps
	w := func(name string) []float32 { return src[name] }
	x := make([]float32, T*D)
	table := w("embeddings.word_embeddings.weight")
	for s := 0; s < b.NumSeqs(); s++ {
		for t := b.Seqlens.Start(s); t < b.Seqlens.Start(s)+b.Seqlens.Len(s); t++ {
			if b.Tokens[t] == cfg.MaskToken {
				continue
			}
			for i := 0; i < D; i++ {
				x[t*D+i] = table[int(b.Tokens[t])*D+i] * b.Scales[s]
			}
		}
	}
	clone := func(d []float32) []float32 { return append([]float32(nil), d...) }
	reps = append(reps, clone(x))
	inv := esm.DefaultInvFreq(HD)
	qs := float32(1 / math.Sqrt(float64(HD)))
	for l := 0; l < cfg.Layers; l++ {
		p := fmt.Sprintf("encoder.layer.%d.", l)
		h := refLayerNorm(x, w(p+"attention.LayerNorm.weight"), w(p+"attention.LayerNorm.bias"), D, eps)
		var qkvW, qkvB []float32
		for _, n := range []string{"query", "key", "value"} {
			qkvW = append(qkvW, w(p+"attention.self."+n+".weight")...)
			qkvB = append(qkvB, w(p+"attention.self."+n+".bias")...)
		}
		qkv := refLinear(h, qkvW, qkvB, T, D, 3*D)
		refRotary(qkv, b, inv, H, HD, qs)
		att := make([]float32, T*D)
		e.must(attention.Reference(attention.Args{Out: att, LdOut: D, Q: qkv, K: qkv[D:], V: qkv[2*D:], Ld: 3 * D,
			Seqlens: b.Seqlens, H: H, HD: HD, Scale: 1}))
		o := refLinear(att, w(p+"attention.output.dense.weight"), w(p+"attention.output.dense.bias"), T, D, D)
		for i := range x {
			x[i] += o[i]
		}
		h = refLayerNorm(x, w(p+"LayerNorm.weight"), w(p+"LayerNorm.bias"), D, eps)
		ff := refLinear(h, w(p+"intermediate.dense.weight"), w(p+"intermediate.dense.bias"), T, D, F)
		for i, v := range ff {
			ff[i] = refGELU(v)
		}
		o = refLinear(ff, w(p+"output.dense.weight"), w(p+"output.dense.bias"), T, F, D)
		for i := range x {
			x[i] += o[i]
		}
		if l+1 < cfg.Layers {
			reps = append(reps, clone(x))
		}
	}
	x = refLayerNorm(x, w("encoder.emb_layer_norm_after.weight"), w("encoder.emb_layer_norm_after.bias"), D, eps)
	reps = append(reps, x)
	h := refLinear(x, w("lm_head.dense.weight"), w("lm_head.dense.bias"), T, D, D)
	for i, v := range h {
		h[i] = refGELU(v)
	}
	h = refLayerNorm(h, w("lm_head.layer_norm.weight"), w("lm_head.layer_norm.bias"), D, eps)
	return reps, refLinear(h, table, w("lm_head.bias"), T, D, V)
}
