package esm

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"

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
	// Contact is the contact head's regression (host memory), or nil
	// when the checkpoint has none.
	Contact *ContactHead
	all     []Tensor
}

// LoadParams uploads the weights of cfg's shape from src to be. Uploads
// happen in a fixed order on the calling goroutine (the backend's); with a
// ParallelSource a few goroutines read and convert the next parameters
// meanwhile.
//
// Nothing is sized from cfg before src confirms it: the source must hold
// the last layer cfg names (so cfg.Layers is bounded by what src holds),
// and every read checks the tensor's shape before converting it.
func LoadParams(cfg Config, src Source, be Backend) (*Params, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if last := fmt.Sprintf("encoder.layer.%d.attention.self.query.weight", cfg.Layers-1); !src.Has(last) {
		return nil, fmt.Errorf("esm: the config has %d layers but the weights have no %s: %w", cfg.Layers, last, ErrMissing)
	}
	p := &Params{Layers: make([]LayerParams, cfg.Layers)}
	l := loader{src: src, be: be, p: p}
	D, F, V := cfg.Dim, cfg.FFN, cfg.Vocab
	l.get(&p.Embed, wide, "embeddings.word_embeddings.weight", V, D)
	for i := range p.Layers {
		pre := fmt.Sprintf("encoder.layer.%d.", i)
		lp := &p.Layers[i]
		l.get(&lp.LN1W, wide, pre+"attention.LayerNorm.weight", D)
		l.get(&lp.LN1B, wide, pre+"attention.LayerNorm.bias", D)
		l.cat(&lp.QKVW, narrow, pre+"attention.self.{query,key,value}.weight", []string{
			pre + "attention.self.query.weight", pre + "attention.self.key.weight", pre + "attention.self.value.weight"}, D, D)
		l.cat(&lp.QKVB, wide, pre+"attention.self.{query,key,value}.bias", []string{
			pre + "attention.self.query.bias", pre + "attention.self.key.bias", pre + "attention.self.value.bias"}, D)
		l.get(&lp.OutW, narrow, pre+"attention.output.dense.weight", D, D)
		l.get(&lp.OutB, wide, pre+"attention.output.dense.bias", D)
		l.get(&lp.LN2W, wide, pre+"LayerNorm.weight", D)
		l.get(&lp.LN2B, wide, pre+"LayerNorm.bias", D)
		l.get(&lp.FC1W, narrow, pre+"intermediate.dense.weight", F, D)
		l.get(&lp.FC1B, wide, pre+"intermediate.dense.bias", F)
		l.get(&lp.FC2W, narrow, pre+"output.dense.weight", D, F)
		l.get(&lp.FC2B, wide, pre+"output.dense.bias", D)
	}
	l.get(&p.FinalW, wide, "encoder.emb_layer_norm_after.weight", D)
	l.get(&p.FinalB, wide, "encoder.emb_layer_norm_after.bias", D)
	// The LM head is optional (EsmModel checkpoints have none); its decoder
	// is the word embeddings when tied (no tensor of its own).
	lmHead := src.Has("lm_head.dense.weight")
	tied := !src.Has("lm_head.decoder.weight")
	if lmHead {
		l.get(&p.LMDenseW, narrow, "lm_head.dense.weight", D, D)
		l.get(&p.LMDenseB, wide, "lm_head.dense.bias", D)
		l.get(&p.LMLNW, wide, "lm_head.layer_norm.weight", D)
		l.get(&p.LMLNB, wide, "lm_head.layer_norm.bias", D)
		l.get(&p.LMBias, wide, "lm_head.bias", V)
		if !tied {
			l.get(&p.LMDecoder, narrow, "lm_head.decoder.weight", V, D)
		}
	}
	err := l.run()
	if err == nil {
		p.InvFreq, err = rotaryFreqs(cfg, src)
	}
	if err == nil {
		p.Contact, err = loadContactHead(cfg, src)
	}
	if err != nil {
		p.Free(be)
		return nil, err
	}
	if lmHead && tied {
		p.LMDecoder = p.Embed
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

// ParallelSource is a Source whose Float32 may be called from several
// goroutines at once (CheckpointSource: copies out of read-only mmaps).
type ParallelSource interface {
	Source
	ParallelReads()
}

// ParallelReads implements ParallelSource.
func (CheckpointSource) ParallelReads() {}

// loadJob is one parameter to read (several names: stacked along the first
// dimension) and upload into *dst.
type loadJob struct {
	dst   *Tensor
	wide  bool // Upload's wide: the parameter is also read at fp32
	label string
	names []string
	shape []int
	data  []float32 // read result
	err   error
	done  chan struct{} // closed when data/err are set
}

// loader collects the parameters' jobs in upload order, then runs them.
type loader struct {
	src  Source
	be   Backend
	p    *Params
	jobs []*loadJob
}

// The precision each parameter needs, decided here by what the forward pass
// does with it (Backend.Upload): wide for what is read at fp32 outside
// GEMMs (the embedding table, LayerNorm weights, every bias), narrow for
// GEMM weights, which may be kept in the backend's compute precision only.
// (The tied LM decoder is the embedding table: wide, and also a GEMM weight,
// which every upload can serve.)
const (
	narrow = false
	wide   = true
)

func (l *loader) get(dst *Tensor, wide bool, name string, shape ...int) {
	l.cat(dst, wide, name, []string{name}, shape...)
}

// cat stacks same-shaped tensors along their first dimension.
func (l *loader) cat(dst *Tensor, wide bool, label string, names []string, shape ...int) {
	l.jobs = append(l.jobs, &loadJob{dst: dst, wide: wide, label: label, names: names, shape: shape, done: make(chan struct{})})
}

// read returns a job's data: one tensor, or the named tensors stacked.
func (l *loader) read(j *loadJob) ([]float32, error) {
	if len(j.names) == 1 {
		d, err := l.src.Float32(j.names[0], j.shape...)
		if err != nil {
			return nil, fmt.Errorf("esm: parameter %s: %w", j.names[0], err)
		}
		return d, nil
	}
	// Sized from the first tensor read (its shape checked by the source),
	// never from j.shape alone.
	var all []float32
	for i, name := range j.names {
		d, err := l.src.Float32(name, j.shape...)
		if err != nil {
			return nil, fmt.Errorf("esm: parameter %s: %w", name, err)
		}
		if i == 0 {
			all = make([]float32, 0, len(d)*len(j.names))
		}
		all = append(all, d...)
	}
	return all, nil
}

func (l *loader) upload(j *loadJob) error {
	t, err := l.be.Upload(j.label, j.data, j.wide)
	j.data = nil
	if err != nil {
		return fmt.Errorf("esm: upload %s: %w", j.label, err)
	}
	l.p.all = append(l.p.all, t)
	*j.dst = t
	return nil
}

// loadReaders and loadAhead bound the parallel read: goroutines reading, and
// parameters read but not yet uploaded (host memory: for 3B at most ~8 of
// its 105 MB FFN matrices as float32).
const (
	loadReaders = 4
	loadAhead   = 8
)

// run reads and uploads every job in order, stopping at the first error.
// With a ParallelSource, reader goroutines work up to loadAhead jobs ahead of
// the uploads, which stay on this goroutine.
func (l *loader) run() error {
	if _, ok := l.src.(ParallelSource); !ok {
		for _, j := range l.jobs {
			if j.data, j.err = l.read(j); j.err != nil {
				return j.err
			}
			if err := l.upload(j); err != nil {
				return err
			}
		}
		return nil
	}
	next := make(chan *loadJob)
	slots := make(chan struct{}, loadAhead)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // feeder: hands out jobs in order, at most loadAhead not yet uploaded
		defer close(next)
		for _, j := range l.jobs {
			select {
			case slots <- struct{}{}:
			case <-stop:
				return
			}
			select {
			case next <- j:
			case <-stop:
				return
			}
		}
	})
	for range min(loadReaders, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for j := range next {
				j.data, j.err = l.read(j)
				close(j.done)
			}
		})
	}
	var err error
	for _, j := range l.jobs {
		<-j.done // handed out: every earlier job holds or released a slot in order
		<-slots
		if err = j.err; err != nil {
			break
		}
		if err = l.upload(j); err != nil {
			break
		}
	}
	close(stop)
	wg.Wait()
	return err
}
