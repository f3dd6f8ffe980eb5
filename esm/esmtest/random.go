// Package esmtest provides random-weight ESM2 models for tests and
// benchmarks: speed does not depend on the values, and parity tests use
// PyTorch fixtures instead.
package esmtest

import (
	"fmt"
	"math/rand/v2"

	"github.com/esm2go/esm2go/esm"
)

// Source is an in-memory esm.Source.
type Source map[string][]float32

// Has implements esm.Source.
func (s Source) Has(name string) bool { _, ok := s[name]; return ok }

// Float32 implements esm.Source (shapes are not recorded, only sizes).
func (s Source) Float32(name string, shape ...int) ([]float32, error) {
	d, ok := s[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", esm.ErrMissing, name)
	}
	n := 1
	for _, v := range shape {
		n *= v
	}
	if n != len(d) {
		return nil, fmt.Errorf("%s has %d elements, want %v", name, len(d), shape)
	}
	return d, nil
}

// Config returns the shape of an ESM2 size: "8M", "35M", "150M", "650M",
// "3B", "15B", or "tiny" (3 layers, 64 dim, 4 heads).
func Config(size string) (esm.Config, error) {
	shapes := map[string][3]int{
		"tiny": {3, 64, 4}, "8M": {6, 320, 20}, "35M": {12, 480, 20}, "150M": {30, 640, 20},
		"650M": {33, 1280, 20}, "3B": {36, 2560, 40}, "15B": {48, 5120, 40},
	}
	s, ok := shapes[size]
	if !ok {
		return esm.Config{}, fmt.Errorf("unknown ESM2 size %q", size)
	}
	return esm.Config{Layers: s[0], Dim: s[1], Heads: s[2], FFN: 4 * s[1], Vocab: esm.VocabSize,
		TokenDropout: true, LayerNormEps: 1e-5, MaskToken: esm.TokMask}, nil
}

// Random makes random weights of cfg's shape (with an LM head), scaled like
// a trained model's (weights ~N(0, 0.02), LayerNorm weights near 1), from a
// fixed seed.
func Random(cfg esm.Config, seed uint64) Source {
	r := rand.New(rand.NewPCG(seed, 1))
	s := Source{}
	normal := func(name string, n int, mean, std float64) {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(mean + std*r.NormFloat64())
		}
		s[name] = d
	}
	D, F, V := cfg.Dim, cfg.FFN, cfg.Vocab
	normal("embeddings.word_embeddings.weight", V*D, 0, 1)
	ln := func(pre string) {
		normal(pre+".weight", D, 1, 0.1)
		normal(pre+".bias", D, 0, 0.02)
	}
	lin := func(pre string, out, in int) {
		normal(pre+".weight", out*in, 0, 0.02)
		normal(pre+".bias", out, 0, 0.02)
	}
	for i := 0; i < cfg.Layers; i++ {
		p := fmt.Sprintf("encoder.layer.%d.", i)
		ln(p + "attention.LayerNorm")
		for _, n := range []string{"query", "key", "value"} {
			lin(p+"attention.self."+n, D, D)
		}
		lin(p+"attention.output.dense", D, D)
		ln(p + "LayerNorm")
		lin(p+"intermediate.dense", F, D)
		lin(p+"output.dense", D, F)
	}
	ln("encoder.emb_layer_norm_after")
	lin("lm_head.dense", D, D)
	ln("lm_head.layer_norm")
	normal("lm_head.bias", V, 0, 0.02)
	return s
}

// Sequence returns a random protein of n residues over the 20 standard
// amino acids.
func Sequence(r *rand.Rand, n int) []byte {
	const aa = "ACDEFGHIKLMNPQRSTVWY"
	b := make([]byte, n)
	for i := range b {
		b[i] = aa[r.IntN(len(aa))]
	}
	return b
}
