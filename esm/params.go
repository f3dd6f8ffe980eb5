package esm

import (
	"errors"
	"fmt"
	"math"

	"github.com/esm2go/esm2go/weights"
)

// Source gives a parameter by its canonical (HF EsmModel) name as float32,
// checking its shape. weights.Checkpoint satisfies it through CheckpointSource.
type Source interface {
	Has(name string) bool
	Float32(name string, shape ...int) ([]float32, error)
}

// ErrMissing marks a parameter the source does not have.
var ErrMissing = errors.New("missing tensor")

// CheckpointSource adapts a weights.Checkpoint to Source.
type CheckpointSource struct{ C *weights.Checkpoint }

// Has implements Source.
func (s CheckpointSource) Has(name string) bool { _, ok := s.C.Tensors[name]; return ok }

// Float32 implements Source.
func (s CheckpointSource) Float32(name string, shape ...int) ([]float32, error) {
	if _, ok := s.C.Tensors[name]; !ok {
		return nil, fmt.Errorf("%s: %w %q", s.C.Path, ErrMissing, name)
	}
	t, err := s.C.Tensor(name, shape...)
	if err != nil {
		return nil, err
	}
	return t.Float32()
}

// LayerParams are one transformer layer's weights on the backend.
type LayerParams struct {
	LN1W, LN1B Tensor // (D) pre-attention LayerNorm
	QKVW, QKVB Tensor // (3D, D), (3D): query, key, value stacked
	OutW, OutB Tensor // (D, D), (D)
	LN2W, LN2B Tensor // (D) pre-FFN LayerNorm
	FC1W, FC1B Tensor // (F, D), (F)
	FC2W, FC2B Tensor // (D, F), (D)
}

// Params are all the weights of the model on the backend.
type Params struct {
	Embed          Tensor // (V, D) word embeddings
	Layers         []LayerParams
	FinalW, FinalB Tensor // (D) emb_layer_norm_after
	// The LM head (nil Dense when the checkpoint has none).
	LMDenseW, LMDenseB Tensor // (D, D), (D)
	LMLNW, LMLNB       Tensor // (D)
	LMDecoder          Tensor // (V, D); the word embeddings when tied
	LMBias             Tensor // (V)
	// InvFreq are the rotary inverse frequencies (HD/2): the checkpoint's
	// stored buffer when it has one, else 1/10000^(2i/HD) in fp32.
	InvFreq []float32
	all     []Tensor
}

// LoadParams uploads the weights of cfg's shape from src to be.
func LoadParams(cfg Config, src Source, be Backend) (*Params, error) {
	p := &Params{}
	l := loader{src: src, be: be, p: p}
	D, F, V := cfg.Dim, cfg.FFN, cfg.Vocab
	p.Embed = l.get("embeddings.word_embeddings.weight", V, D)
	for i := 0; i < cfg.Layers; i++ {
		pre := fmt.Sprintf("encoder.layer.%d.", i)
		var lp LayerParams
		lp.LN1W = l.get(pre+"attention.LayerNorm.weight", D)
		lp.LN1B = l.get(pre+"attention.LayerNorm.bias", D)
		lp.QKVW = l.cat(pre+"attention.self.{query,key,value}.weight", []string{
			pre + "attention.self.query.weight", pre + "attention.self.key.weight", pre + "attention.self.value.weight"}, D, D)
		lp.QKVB = l.cat(pre+"attention.self.{query,key,value}.bias", []string{
			pre + "attention.self.query.bias", pre + "attention.self.key.bias", pre + "attention.self.value.bias"}, D)
		lp.OutW = l.get(pre+"attention.output.dense.weight", D, D)
		lp.OutB = l.get(pre+"attention.output.dense.bias", D)
		lp.LN2W = l.get(pre+"LayerNorm.weight", D)
		lp.LN2B = l.get(pre+"LayerNorm.bias", D)
		lp.FC1W = l.get(pre+"intermediate.dense.weight", F, D)
		lp.FC1B = l.get(pre+"intermediate.dense.bias", F)
		lp.FC2W = l.get(pre+"output.dense.weight", D, F)
		lp.FC2B = l.get(pre+"output.dense.bias", D)
		p.Layers = append(p.Layers, lp)
	}
	if l.err == nil {
		p.InvFreq, l.err = rotaryFreqs(cfg, src)
	}
	p.FinalW = l.get("encoder.emb_layer_norm_after.weight", D)
	p.FinalB = l.get("encoder.emb_layer_norm_after.bias", D)
	if l.err != nil {
		p.Free(be)
		return nil, l.err
	}
	// The LM head is optional (EsmModel checkpoints have none).
	if src.Has("lm_head.dense.weight") {
		p.LMDenseW = l.get("lm_head.dense.weight", D, D)
		p.LMDenseB = l.get("lm_head.dense.bias", D)
		p.LMLNW = l.get("lm_head.layer_norm.weight", D)
		p.LMLNB = l.get("lm_head.layer_norm.bias", D)
		p.LMBias = l.get("lm_head.bias", V)
		p.LMDecoder = l.optional("lm_head.decoder.weight", p.Embed, V, D)
	}
	if l.err != nil {
		p.Free(be)
		return nil, l.err
	}
	return p, nil
}

// RotaryInvFreqName is where checkpoints store layer 0's rotary buffer (all
// layers hold the same values).
const RotaryInvFreqName = "encoder.layer.0.attention.self.rotary_embeddings.inv_freq"

// DefaultInvFreq is the rotary formula in fp32 as PyTorch evaluates it:
// 1 / 10000^(arange(0, HD, 2)/HD).
func DefaultInvFreq(HD int) []float32 {
	f := make([]float32, HD/2)
	for i := range f {
		e := float32(2*i) / float32(HD)
		f[i] = 1 / float32(math.Pow(10000, float64(e)))
	}
	return f
}

func rotaryFreqs(cfg Config, src Source) ([]float32, error) {
	half := cfg.HeadDim() / 2
	if !src.Has(RotaryInvFreqName) {
		return DefaultInvFreq(cfg.HeadDim()), nil
	}
	f, err := src.Float32(RotaryInvFreqName, half)
	if err != nil {
		return nil, fmt.Errorf("esm: parameter %s: %w", RotaryInvFreqName, err)
	}
	return f, nil
}

// HasLMHead reports whether logits can be computed.
func (p *Params) HasLMHead() bool { return p.LMDenseW != nil }

// Free releases every uploaded tensor.
func (p *Params) Free(be Backend) {
	for _, t := range p.all {
		be.Free(t)
	}
	p.all = nil
}

type loader struct {
	src Source
	be  Backend
	p   *Params
	err error
}

func (l *loader) upload(name string, data []float32) Tensor {
	t, err := l.be.Upload(name, data)
	if err != nil {
		l.err = fmt.Errorf("esm: upload %s: %w", name, err)
		return nil
	}
	l.p.all = append(l.p.all, t)
	return t
}

func (l *loader) get(name string, shape ...int) Tensor {
	if l.err != nil {
		return nil
	}
	d, err := l.src.Float32(name, shape...)
	if err != nil {
		l.err = fmt.Errorf("esm: parameter %s: %w", name, err)
		return nil
	}
	return l.upload(name, d)
}

// cat stacks same-shaped tensors along their first dimension.
func (l *loader) cat(label string, names []string, shape ...int) Tensor {
	if l.err != nil {
		return nil
	}
	var all []float32
	for _, n := range names {
		d, err := l.src.Float32(n, shape...)
		if err != nil {
			l.err = fmt.Errorf("esm: parameter %s: %w", n, err)
			return nil
		}
		all = append(all, d...)
	}
	return l.upload(label, all)
}

func (l *loader) optional(name string, fallback Tensor, shape ...int) Tensor {
	if l.err != nil {
		return nil
	}
	if !l.src.Has(name) {
		return fallback
	}
	d, err := l.src.Float32(name, shape...)
	if err != nil {
		l.err = fmt.Errorf("esm: parameter %s: %w", name, err)
		return nil
	}
	return l.upload(name, d)
}
