package esm

import (
	"fmt"
	"slices"

	"github.com/esm2go/esm2go/weights"
)

// Config is the shape of an ESM2 model.
type Config struct {
	Layers       int     // L, transformer layers
	Dim          int     // D, model width
	Heads        int     // H
	FFN          int     // F, feed-forward width (4*D for ESM2)
	Vocab        int     // V, 33
	TokenDropout bool    // ESM2: true (masked rows zeroed, embeddings rescaled)
	LayerNormEps float32 // 1e-5
	MaskToken    int32   // 32
}

// HeadDim is D/H.
func (c Config) HeadDim() int { return c.Dim / c.Heads }

// Validate rejects shapes the forward pass cannot run.
func (c Config) Validate() error {
	switch {
	case c.Layers < 1:
		return fmt.Errorf("esm: config has %d layers", c.Layers)
	case c.Dim < 1 || c.Heads < 1 || c.Dim%c.Heads != 0:
		return fmt.Errorf("esm: hidden size %d is not divisible into %d heads", c.Dim, c.Heads)
	case c.HeadDim()%2 != 0:
		return fmt.Errorf("esm: head dim %d is odd; rotary needs an even head dim", c.HeadDim())
	case c.FFN < 1:
		return fmt.Errorf("esm: intermediate size %d", c.FFN)
	case c.Vocab != VocabSize:
		return fmt.Errorf("esm: vocab size %d, want %d (the ESM alphabet)", c.Vocab, VocabSize)
	case c.LayerNormEps <= 0:
		return fmt.Errorf("esm: layer_norm_eps %g", c.LayerNormEps)
	}
	return nil
}

// ConfigFromHF converts a checkpoint's HF config. Whether it is an ESM2
// encoder is decided by weights.Config.Validate alone (weights.Open has run
// it, and checked the sizes against the tensors); Validate here adds what
// the forward pass needs.
func ConfigFromHF(w weights.Config) (Config, error) {
	if err := w.Validate(); err != nil {
		return Config{}, fmt.Errorf("esm: %w", err)
	}
	c := Config{
		Layers:       w.NumHiddenLayers,
		Dim:          w.HiddenSize,
		Heads:        w.NumAttentionHeads,
		FFN:          w.IntermediateSize,
		Vocab:        w.VocabSize,
		TokenDropout: w.TokenDropout,
		LayerNormEps: float32(w.LayerNormEps),
		MaskToken:    TokMask,
	}
	return c, c.Validate()
}

// ResolveLayer maps a layer index, negative counting from the end as in
// fair-esm (-1 = the last layer, L), to an absolute index in 0..L.
func (c Config) ResolveLayer(i int) (int, error) {
	if i < -(c.Layers+1) || i > c.Layers {
		return 0, fmt.Errorf("esm: layer %d out of range for a %d-layer model (valid: %d..%d)", i, c.Layers, -(c.Layers + 1), c.Layers)
	}
	return (i + c.Layers + 1) % (c.Layers + 1), nil
}

// ResolveLayers resolves layer numbers as a user gives them (negative
// counts from the end, see ResolveLayer) to absolute ones, keeping the first
// of values that name the same layer: the one place where a layer list is
// decided.
func (c Config) ResolveLayers(vals []int) ([]int, error) {
	if len(vals) == 0 {
		return nil, fmt.Errorf("esm: no layers given")
	}
	var abs []int
	for _, v := range vals {
		a, err := c.ResolveLayer(v)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(abs, a) {
			abs = append(abs, a)
		}
	}
	return abs, nil
}

// FLOPsPerToken counts the useful matmul FLOPs of one token in a sequence of
// n tokens: 24*L*D^2 for the projections and FFN plus 4*L*n*D for attention.
func (c Config) FLOPsPerToken(n int) float64 {
	L, D := float64(c.Layers), float64(c.Dim)
	return 24*L*D*D + 4*L*float64(n)*D
}
