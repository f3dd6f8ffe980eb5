package esm_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
	"github.com/esm2go/esm2go/weights"
)

// convertSource is esmtest's in-memory source as an esm.ConvertSource: its
// float32 values converted by weights.Convert, each conversion after a
// random short sleep so they finish out of order.
type convertSource struct {
	esmtest.Source
	mu sync.Mutex
	r  *rand.Rand
}

func (c *convertSource) ParallelReads() {}

func (c *convertSource) Check(name string, shape ...int) error {
	_, err := c.Source.Float32(name, shape...)
	return err
}

func (c *convertSource) ConvertInto(dst []byte, dt weights.DType, name string, shape ...int) error {
	d, err := c.Source.Float32(name, shape...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	sleep := time.Duration(c.r.IntN(200)) * time.Microsecond
	c.mu.Unlock()
	time.Sleep(sleep)
	return weights.Convert(dst, dt, f32b(d), weights.F32)
}

func f32b(d []float32) []byte { return unsafe.Slice((*byte)(unsafe.Pointer(&d[0])), 4*len(d)) }

// stager is a recorder that is also an esm.NarrowUploader of type dt: it
// turns staged weights back into float32 (exact from every type) and
// uploads those, counting staging memory and staged uploads.
type stager struct {
	*recorder
	dt            weights.DType
	allocs, frees int
	staged        []string
}

type countedMemory struct {
	esm.GoMemory
	s *stager
}

func (m countedMemory) Free() error { m.s.frees++; return nil }

func (s *stager) HostAlloc(n int) (esm.HostMemory, error) {
	s.allocs++
	return countedMemory{make(esm.GoMemory, n), s}, nil
}

func (s *stager) NarrowDType() weights.DType { return s.dt }

func (s *stager) UploadNarrow(name string, src esm.HostMemory, n int) (esm.Tensor, error) {
	f := make([]float32, n)
	if err := weights.Convert(f32b(f), weights.F32, f32b(src.Floats())[:n*s.dt.Size()], s.dt); err != nil {
		return nil, err
	}
	s.staged = append(s.staged, name)
	return s.Upload(name, f, false)
}

// plainUploads records what loading src uploads through the plain path
// (a CPU backend that is no NarrowUploader).
func plainUploads(t *testing.T, cfg esm.Config, src esm.Source) *recorder {
	t.Helper()
	r := &recorder{Backend: cpu.New(cpu.Options{})}
	p, err := esm.LoadParams(cfg, src, r)
	if err != nil {
		t.Fatal(err)
	}
	p.Free(r)
	return r
}

// sameUploads checks that s uploaded what plain did, in the same order,
// with the weights it staged rounded to its type.
func sameUploads(t *testing.T, plain *recorder, s *stager) {
	t.Helper()
	if !slices.Equal(plain.names, s.names) {
		t.Fatalf("%s: upload order differs:\n%v\n%v", s.dt, plain.names, s.names)
	}
	for i, name := range s.names {
		want := plain.data[i]
		if slices.Contains(s.staged, name) {
			want = rounded(t, want, s.dt)
		}
		if !slices.Equal(s.data[i], want) {
			t.Errorf("%s: %s: data differs", s.dt, name)
		}
	}
}

// rounded is d as dt would hold it (weights.Convert's rounding, which the
// weights tests check against an oracle), back in float32.
func rounded(t *testing.T, d []float32, dt weights.DType) []float32 {
	t.Helper()
	b := make([]byte, len(d)*dt.Size())
	if err := weights.Convert(b, dt, f32b(d), weights.F32); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(d))
	if err := weights.Convert(f32b(out), weights.F32, b, dt); err != nil {
		t.Fatal(err)
	}
	return out
}

// With a NarrowUploader backend and a ConvertSource, every GEMM weight goes
// through the staged path, in the same order as the plain path and with the
// values rounded to the backend's type; the other parameters keep the plain
// path; every staging buffer is freed.
func TestLoadParamsStaged(t *testing.T) {
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src := esmtest.Random(cfg, 5)
	plain := plainUploads(t, cfg, src)
	for _, dt := range []weights.DType{weights.F32, weights.F16, weights.BF16} {
		for round := range 5 { // random conversion times: different interleavings
			s := &stager{recorder: &recorder{Backend: cpu.New(cpu.Options{})}, dt: dt}
			cs := &convertSource{Source: src, r: rand.New(rand.NewPCG(uint64(round), 9))}
			p, err := esm.LoadParams(cfg, cs, s)
			if err != nil {
				t.Fatalf("%s: %v", dt, err)
			}
			sameUploads(t, plain, s)
			if want := cfg.Layers*4 + 1; len(s.staged) != want { // QKV, out, FC1, FC2 per layer; the LM head's dense
				t.Errorf("%s: %d staged uploads, want %d: %v", dt, len(s.staged), want, s.staged)
			}
			p.Free(s)
			if s.live != 0 || s.allocs != 3 || s.frees != s.allocs {
				t.Errorf("%s: %d tensors live, %d staging buffers allocated, %d freed; want 0, 3, 3", dt, s.live, s.allocs, s.frees)
			}
		}
	}
}

// A NaN in a GEMM weight stops the staged load with an error naming the
// parameter and element; every tensor uploaded before it and every staging
// buffer is freed, whatever the order conversions finish in. A weight with
// the wrong shape is found before anything is uploaded or allocated.
func TestLoadParamsStagedErrors(t *testing.T) {
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	const bad = "encoder.layer.1.intermediate.dense.weight"
	for round := range 20 {
		src := esmtest.Random(cfg, 6)
		src[bad] = slices.Clone(src[bad])
		src[bad][7] = float32(math.NaN())
		s := &stager{recorder: &recorder{Backend: cpu.New(cpu.Options{})}, dt: weights.F16}
		_, err := esm.LoadParams(cfg, &convertSource{Source: src, r: rand.New(rand.NewPCG(uint64(round), 10))}, s)
		var nf *weights.NonFiniteError
		if !errors.As(err, &nf) || nf.Index != 7 || !strings.Contains(err.Error(), bad) {
			t.Fatalf("NaN in %s: %v, want a NonFiniteError at 7 naming it", bad, err)
		}
		if len(s.names) == 0 || s.live != 0 || s.frees != s.allocs {
			t.Fatalf("%d uploads, %d still live, %d of %d staging buffers freed; want some, none, all", len(s.names), s.live, s.frees, s.allocs)
		}
	}
	// A weight beyond float16's range stops an fp16 load naming it; a bf16
	// load takes it.
	big := esmtest.Random(cfg, 6)
	big[bad] = slices.Clone(big[bad])
	big[bad][3] = 70000
	s16 := &stager{recorder: &recorder{Backend: cpu.New(cpu.Options{})}, dt: weights.F16}
	_, err = esm.LoadParams(cfg, &convertSource{Source: big, r: rand.New(rand.NewPCG(5, 5))}, s16)
	var re *weights.RangeError
	if !errors.As(err, &re) || re.Index != 3 || !strings.Contains(err.Error(), bad) {
		t.Errorf("70000 in %s, fp16: %v, want a RangeError at 3 naming it", bad, err)
	}
	if s16.live != 0 || s16.frees != s16.allocs {
		t.Errorf("fp16 overflow: %d tensors live, %d of %d staging buffers freed", s16.live, s16.frees, s16.allocs)
	}
	sbf := &stager{recorder: &recorder{Backend: cpu.New(cpu.Options{})}, dt: weights.BF16}
	p, err := esm.LoadParams(cfg, &convertSource{Source: big, r: rand.New(rand.NewPCG(5, 5))}, sbf)
	if err != nil {
		t.Errorf("70000 in %s, bf16: %v", bad, err)
	} else {
		p.Free(sbf)
	}

	src := esmtest.Random(cfg, 6)
	src["encoder.layer.1.output.dense.weight"] = src["encoder.layer.1.output.dense.weight"][1:]
	s := &stager{recorder: &recorder{Backend: cpu.New(cpu.Options{})}, dt: weights.F16}
	_, err = esm.LoadParams(cfg, &convertSource{Source: src, r: rand.New(rand.NewPCG(1, 1))}, s)
	if err == nil || !strings.Contains(err.Error(), "encoder.layer.1.output.dense.weight") {
		t.Errorf("short weight: %v, want an error naming it", err)
	}
	if len(s.names) != 0 || s.allocs != 0 {
		t.Errorf("short weight: %d uploads and %d staging buffers before the error, want none", len(s.names), s.allocs)
	}
}

// The staged path through a real checkpoint (CheckpointSource: shapes
// checked by Check, tensors converted by Tensor.ConvertInto) uploads what
// the plain path uploads, GEMM weights rounded to the backend's type.
func TestLoadParamsStagedCheckpoint(t *testing.T) {
	ck, cfg, err := esm.OpenCheckpoint(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	src := esm.CheckpointSource{C: ck}
	plain := plainUploads(t, cfg, src)
	s := &stager{recorder: &recorder{Backend: cpu.New(cpu.Options{})}, dt: weights.F16}
	p, err := esm.LoadParams(cfg, src, s)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Free(s)
	sameUploads(t, plain, s)
	if len(s.staged) != cfg.Layers*4+1 {
		t.Fatalf("staged %v, want every GEMM weight of %v", s.staged, plain.names)
	}
	if err := src.Check("encoder.layer.0.output.dense.weight", 1, 2); err == nil {
		t.Errorf("Check with a wrong shape: no error")
	}
	if err := src.Check("no.such.tensor"); !errors.Is(err, esm.ErrMissing) {
		t.Errorf("Check of a missing tensor: %v, want ErrMissing", err)
	}
}

// noPinned is a stager whose staging memory runs out after the first buffer.
type noPinned struct{ *stager }

func (n *noPinned) HostAlloc(k int) (esm.HostMemory, error) {
	if n.allocs >= 1 {
		return nil, errors.New("out of pinned memory")
	}
	return n.stager.HostAlloc(k)
}

// When the staging memory cannot be had, the load takes the plain path for
// every parameter (same uploads as without a NarrowUploader) and frees the
// buffer it got.
func TestLoadParamsStagedFallback(t *testing.T) {
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src := esmtest.Random(cfg, 7)
	plain := plainUploads(t, cfg, src)
	n := &noPinned{&stager{recorder: &recorder{Backend: cpu.New(cpu.Options{})}, dt: weights.F16}}
	p, err := esm.LoadParams(cfg, &convertSource{Source: src, r: rand.New(rand.NewPCG(2, 2))}, n)
	if err != nil {
		t.Fatal(err)
	}
	p.Free(n)
	if len(n.staged) != 0 || n.allocs != 1 || n.frees != 1 {
		t.Errorf("%d staged uploads, %d buffers allocated, %d freed; want 0, 1, 1", len(n.staged), n.allocs, n.frees)
	}
	sameUploads(t, plain, n.stager) // nothing staged: the plain path's data exactly
}

// preparer is a stager that is also an esm.Preparer: it counts its calls
// and the uploads made before the first, and fails when err is set.
type preparer struct {
	*stager
	calls, uploadsBefore int
	err                  error
}

func (p *preparer) Prepare() error {
	p.calls++
	p.uploadsBefore = len(p.names)
	return p.err
}

// LoadParams calls a backend's Prepare once, before the first upload, on
// every path (plain source, parallel reads, staged conversion); an error
// from it stops the load with the error wrapped, nothing uploaded or left
// allocated.
func TestLoadParamsPrepare(t *testing.T) {
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src := esmtest.Random(cfg, 8)
	sources := map[string]func() esm.Source{
		"plain":    func() esm.Source { return src },
		"parallel": func() esm.Source { return &parallelSource{Source: src, r: rand.New(rand.NewPCG(8, 1))} },
		"staged":   func() esm.Source { return &convertSource{Source: src, r: rand.New(rand.NewPCG(8, 2))} },
	}
	for name, mk := range sources {
		p := &preparer{stager: &stager{recorder: &recorder{Backend: cpu.New(cpu.Options{})}, dt: weights.F16}}
		ps, err := esm.LoadParams(cfg, mk(), p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if p.calls != 1 || p.uploadsBefore != 0 || len(p.names) == 0 {
			t.Errorf("%s: Prepare called %d times after %d uploads (%d in all); want once, before the first", name, p.calls, p.uploadsBefore, len(p.names))
		}
		ps.Free(p)

		boom := errors.New("no GEMM library")
		f := &preparer{stager: &stager{recorder: &recorder{Backend: cpu.New(cpu.Options{})}, dt: weights.F16}, err: boom}
		_, err = esm.LoadParams(cfg, mk(), f)
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "preparing the backend") {
			t.Errorf("%s: failing Prepare: %v, want it wrapped", name, err)
		}
		if len(f.names) != 0 || f.live != 0 || f.frees != f.allocs {
			t.Errorf("%s: failing Prepare: %d uploads, %d live, %d of %d staging buffers freed; want none, none, all", name, len(f.names), f.live, f.frees, f.allocs)
		}
	}
}
