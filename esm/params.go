package esm

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"

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
// meanwhile. When be is a NarrowUploader and src a ConvertSource (a GPU and
// a checkpoint), GEMM weights are converted once, on the host, into the
// backend's type in its pinned staging memory and copied from there.
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
	// The model uses one table for every layer (as the released checkpoints
	// hold); HF uses each layer's own copy, so a copy that differs would
	// give other embeddings than HF's without a word: refused.
	for l := 1; l < cfg.Layers; l++ {
		name := fmt.Sprintf("encoder.layer.%d.attention.self.rotary_embeddings.inv_freq", l)
		if !src.Has(name) {
			continue
		}
		g, err := src.Float32(name, half)
		if err != nil {
			return nil, fmt.Errorf("esm: parameter %s: %w", name, err)
		}
		for i := range f {
			if math.Float32bits(g[i]) != math.Float32bits(f[i]) {
				return nil, fmt.Errorf("esm: parameter %s differs from layer 0's at element %d (%g, layer 0 has %g): esm2go applies layer 0's rotary table in every layer, as the released checkpoints' identical copies allow", name, i, g[i], f[i])
			}
		}
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

// ConvertSource is a ParallelSource that also converts a parameter straight
// into caller memory in a given element type (CheckpointSource), so a
// NarrowUploader backend gets its GEMM weights without a float32 copy.
type ConvertSource interface {
	ParallelSource
	// Check reports an error unless name is present with the given shape;
	// it reads no data.
	Check(name string, shape ...int) error
	// ConvertInto writes name's elements (shape checked) into dst as dt;
	// dst holds exactly that many elements. A NaN, an infinity, or a
	// finite value too large for dt is an error naming the element.
	ConvertInto(dst []byte, dt weights.DType, name string, shape ...int) error
}

// NarrowUploader is an optional Backend interface: the backend takes GEMM
// weights (Upload with wide false) already in its own element type, from
// host memory it lends (HostAlloc: pinned on a GPU). With a ConvertSource,
// LoadParams then converts each weight once, on the host and over the CPUs,
// straight into that memory, and the copy to the device moves 2 bytes per
// weight in fp16/bf16 instead of 4, at the speed of pinned memory.
type NarrowUploader interface {
	// NarrowDType is the element type GEMM weights are kept in.
	NarrowDType() weights.DType
	// UploadNarrow copies the first n elements of NarrowDType in src (from
	// this backend's HostAlloc) to a new GEMM weight tensor. src may be
	// reused once it returns.
	UploadNarrow(name string, src HostMemory, n int) (Tensor, error)
}

// Preparer is an optional Backend interface: one-time set-up the backend
// would otherwise pay in its first forward pass (the CUDA backend: cuBLASLt
// loading itself, ~0.1 s). LoadParams calls Prepare once, on the calling
// goroutine, before the first upload: with a ParallelSource while its
// readers work on the first parameters, so that it costs neither the load
// nor the first batch (with a plain Source, before the first read, so the
// load pays it instead of the first batch). An error stops the load.
type Preparer interface {
	Prepare() error
}

// prepare runs the backend's Prepare when it has one.
func (l *loader) prepare() error {
	p, ok := l.be.(Preparer)
	if !ok {
		return nil
	}
	if err := p.Prepare(); err != nil {
		return fmt.Errorf("esm: preparing the backend: %w", err)
	}
	return nil
}

// Check implements ConvertSource.
func (s CheckpointSource) Check(name string, shape ...int) error {
	if _, ok := s.C.Tensors[name]; !ok {
		return fmt.Errorf("%s: %w %q", s.C.Path, ErrMissing, name)
	}
	_, err := s.C.Tensor(name, shape...)
	return err
}

// ConvertInto implements ConvertSource.
func (s CheckpointSource) ConvertInto(dst []byte, dt weights.DType, name string, shape ...int) error {
	if _, ok := s.C.Tensors[name]; !ok {
		return fmt.Errorf("%s: %w %q", s.C.Path, ErrMissing, name)
	}
	t, err := s.C.Tensor(name, shape...)
	if err != nil {
		return err
	}
	return t.ConvertInto(dst, dt)
}

// loadJob is one parameter to read (several names: stacked along the first
// dimension) and upload into *dst.
type loadJob struct {
	dst    *Tensor
	wide   bool // Upload's wide: the parameter is also read at fp32
	label  string
	names  []string
	shape  []int
	data   []float32  // read result
	stage  HostMemory // staged path: the job's elements in the backend's narrow type (stageN of them)
	stageN int
	err    error
	done   chan struct{} // closed when data/err are set
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

// convert writes a staged job's tensors, one after another, into its stage
// in the backend's narrow type (stages made sure the source and backend
// allow it).
func (l *loader) convert(j *loadJob) error {
	src, dt := l.src.(ConvertSource), l.be.(NarrowUploader).NarrowDType()
	b := stageBytes(j.stage)
	per := j.stageN / len(j.names) * dt.Size()
	for i, name := range j.names {
		if err := src.ConvertInto(b[i*per:(i+1)*per], dt, name, j.shape...); err != nil {
			return fmt.Errorf("esm: parameter %s: %w", name, err)
		}
	}
	return nil
}

// stageBytes views a stage's memory as bytes.
func stageBytes(h HostMemory) []byte {
	f := h.Floats()
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(f))), 4*len(f))
}

func (l *loader) upload(j *loadJob) error {
	var t Tensor
	var err error
	if j.stage != nil {
		t, err = l.be.(NarrowUploader).UploadNarrow(j.label, j.stage, j.stageN)
	} else {
		t, err = l.be.Upload(j.label, j.data, j.wide)
	}
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
func (l *loader) run() (err error) {
	if _, ok := l.src.(ParallelSource); !ok {
		if err := l.prepare(); err != nil {
			return err
		}
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
	stages, err := l.stages()
	if err != nil {
		return err
	}
	defer func() { // every stage is back in the pool by then
		for range len(stages) {
			if ferr := (<-stages).Free(); ferr != nil && err == nil {
				err = fmt.Errorf("esm: free load staging memory: %w", ferr)
			}
		}
	}()
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
			// Stages are taken in job order, so the next job to upload
			// always has one and the uploads that free them go on.
			if j.stageN > 0 {
				select {
				case j.stage = <-stages:
				case <-stop:
					return
				}
			}
			select {
			case next <- j:
			case <-stop:
				if j.stage != nil {
					stages <- j.stage
					j.stage = nil
				}
				return
			}
		}
	})
	for range min(loadReaders, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for j := range next {
				if j.stage != nil {
					j.err = l.convert(j)
				} else {
					j.data, j.err = l.read(j)
				}
				close(j.done)
			}
		})
	}
	handed := 0 // jobs whose done was waited for: their stages are back in the pool or uploaded

	err = l.prepare() // while the readers convert the first jobs
	for _, j := range l.jobs {
		if err != nil {
			break
		}
		<-j.done // handed out: every earlier job holds or released a slot in order
		<-slots
		handed++
		err = j.err
		if err == nil {
			err = l.upload(j)
		}
		if j.stage != nil {
			stages <- j.stage
			j.stage = nil
		}
	}
	close(stop)
	wg.Wait()
	// Jobs handed out but not waited for still hold their stages.
	for _, j := range l.jobs[handed:] {
		if j.stage != nil {
			<-j.done
			stages <- j.stage
			j.stage = nil
		}
	}
	return err
}

// loadStages is how many staging buffers the staged path cycles through:
// one being uploaded, the next ones converted meanwhile.
const loadStages = 3

// stages prepares the staged path when the backend is a NarrowUploader and
// the source a ConvertSource: every GEMM weight's shape is checked with the
// source first (nothing is sized from the config alone), its job marked
// with its element count, and loadStages buffers of the largest job's size
// allocated from the backend. It returns them in a channel (the pool), or
// a nil channel when the path does not apply or the staging memory cannot
// be had (then every parameter takes the plain path).
func (l *loader) stages() (chan HostMemory, error) {
	nu, ok := l.be.(NarrowUploader)
	cs, ok2 := l.src.(ConvertSource)
	if !ok || !ok2 {
		return nil, nil
	}
	dt := nu.NarrowDType()
	if dt.Size() == 0 {
		return nil, fmt.Errorf("esm: backend narrow type %q", dt)
	}
	most := 0
	for _, j := range l.jobs {
		if j.wide {
			continue
		}
		n := 1
		for _, d := range j.shape {
			n *= d
		}
		for _, name := range j.names {
			if err := cs.Check(name, j.shape...); err != nil {
				return nil, fmt.Errorf("esm: parameter %s: %w", name, err)
			}
		}
		j.stageN = n * len(j.names)
		most = max(most, j.stageN*dt.Size())
	}
	pool := make(chan HostMemory, loadStages)
	if most == 0 {
		return pool, nil
	}
	for range loadStages {
		h, err := l.be.HostAlloc((most + 3) / 4)
		if err != nil {
			// Pinned memory can be scarce (a container's limits, many
			// devices loading at once): load the plain way instead.
			for range len(pool) {
				_ = (<-pool).Free()
			}
			for _, j := range l.jobs {
				j.stageN = 0
			}
			return nil, nil
		}
		pool <- h
	}
	return pool, nil
}
