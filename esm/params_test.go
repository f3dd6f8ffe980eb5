package esm_test

import (
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
)

// recorder is a CPU backend that records every upload (name and a copy of
// the data, in order) and counts live tensors.
type recorder struct {
	esm.Backend
	names []string
	data  [][]float32
	live  int
}

func (r *recorder) Upload(name string, d []float32, wide bool) (esm.Tensor, error) {
	t, err := r.Backend.Upload(name, d, wide)
	if err == nil {
		r.names = append(r.names, name)
		r.data = append(r.data, slices.Clone(d))
		r.live++
	}
	return t, err
}

func (r *recorder) Free(t esm.Tensor) {
	r.live--
	r.Backend.Free(t)
}

// parallelSource is esmtest's in-memory source declared safe for
// concurrent reads; each read sleeps a random moment so reads finish out
// of order, and the most reads in flight at once is recorded.
type parallelSource struct {
	esmtest.Source
	mu             sync.Mutex
	r              *rand.Rand
	inFlight, most atomic.Int32
}

func (p *parallelSource) ParallelReads() {}

func (p *parallelSource) Float32(name string, shape ...int) ([]float32, error) {
	n := p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	for {
		m := p.most.Load()
		if n <= m || p.most.CompareAndSwap(m, n) {
			break
		}
	}
	p.mu.Lock()
	d := time.Duration(p.r.IntN(300)) * time.Microsecond
	p.mu.Unlock()
	time.Sleep(d)
	return p.Source.Float32(name, shape...)
}

// With a ParallelSource the parameters are read on several goroutines but
// uploaded in the same order with the same data as from a plain Source.
func TestLoadParamsParallelMatchesSequential(t *testing.T) {
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src := esmtest.Random(cfg, 3)
	load := func(s esm.Source) *recorder {
		r := &recorder{Backend: cpu.New(cpu.Options{})}
		p, err := esm.LoadParams(cfg, s, r)
		if err != nil {
			t.Fatal(err)
		}
		if p.LMDecoder != p.Embed {
			t.Errorf("tied LM decoder is not the word embeddings")
		}
		p.Free(r)
		if r.live != 0 {
			t.Errorf("%d tensors live after Free", r.live)
		}
		return r
	}
	seq := load(src)
	ps := &parallelSource{Source: src, r: rand.New(rand.NewPCG(1, 2))}
	par := load(ps)
	if !slices.Equal(seq.names, par.names) {
		t.Fatalf("upload order differs:\n%v\n%v", seq.names, par.names)
	}
	for i := range seq.data {
		if !slices.Equal(seq.data[i], par.data[i]) {
			t.Errorf("%s: data differs", seq.names[i])
		}
	}
	if want := 1 + cfg.Layers*12 + 2 + 5; len(seq.names) != want { // embed, layers, final LN, LM head
		t.Errorf("%d uploads, want %d", len(seq.names), want)
	}
	if runtime.GOMAXPROCS(0) > 1 && ps.most.Load() < 2 {
		t.Errorf("at most %d reads in flight, want several", ps.most.Load())
	}
}

// A missing parameter in the middle stops the load with an error naming it,
// and every tensor already uploaded is freed, on both paths.
func TestLoadParamsMissingFreesUploads(t *testing.T) {
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src := esmtest.Random(cfg, 3)
	const gone = "encoder.layer.1.output.dense.weight"
	delete(src, gone)
	for _, s := range []esm.Source{src, &parallelSource{Source: src, r: rand.New(rand.NewPCG(3, 4))}} {
		r := &recorder{Backend: cpu.New(cpu.Options{})}
		_, err := esm.LoadParams(cfg, s, r)
		if err == nil || !errors.Is(err, esm.ErrMissing) || !strings.Contains(err.Error(), gone) {
			t.Errorf("%T: err = %v, want ErrMissing naming %s", s, err, gone)
		}
		if len(r.names) == 0 || r.live != 0 {
			t.Errorf("%T: %d uploads before the error, %d still live; want some, none", s, len(r.names), r.live)
		}
	}
}
