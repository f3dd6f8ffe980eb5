//go:build cgo

package cuda

import (
	"errors"
	"testing"
	"time"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
	"github.com/esm2go/esm2go/internal/cudadrv"
)

// GPU tests of the asynchronous data path (batch.go, async.go): SetBatch on
// the copy stream, ReadAsync/Fence into pinned Output memory, Model.Launch
// with two batches in flight. They skip where there is no GPU.

// clone copies an Output into Go memory (a GPU Output's slices are pinned
// memory reused by the next Launch).
func clone(o *esm.Output) *esm.Output {
	c := &esm.Output{NSeq: o.NSeq, T: o.T, D: o.D, Mean: map[int][]float32{}, BOS: map[int][]float32{}, PerTok: map[int][]float32{}}
	for l, v := range o.Mean {
		c.Mean[l] = append([]float32(nil), v...)
	}
	for l, v := range o.BOS {
		c.BOS[l] = append([]float32(nil), v...)
	}
	for l, v := range o.PerTok {
		c.PerTok[l] = append([]float32(nil), v...)
	}
	c.Logits = append([]float32(nil), o.Logits...)
	return c
}

// worstDiff is the largest maxRel over every output of req.
func worstDiff(t *testing.T, req esm.Request, got, want *esm.Output) float64 {
	t.Helper()
	if got.NSeq != want.NSeq || got.T != want.T {
		t.Fatalf("output shape nseq=%d T=%d, want nseq=%d T=%d", got.NSeq, got.T, want.NSeq, want.T)
	}
	w := 0.0
	for _, l := range req.Layers {
		w = max(w, maxRel(got.Mean[l], want.Mean[l]), maxRel(got.BOS[l], want.BOS[l]), maxRel(got.PerTok[l], want.PerTok[l]))
	}
	if req.Logits {
		w = max(w, maxRel(got.Logits, want.Logits))
	}
	return w
}

func everything(cfg esm.Config) esm.Request {
	req := esm.Request{Reprs: esm.Mean | esm.BOS | esm.PerTok, Logits: true}
	for l := 0; l <= cfg.Layers; l++ {
		req.Layers = append(req.Layers, l)
	}
	return req
}

// Batches of changing size (the device slots and staging buffers grow,
// shrink back and alternate), each with masks.
var asyncLengths = [][]int{
	{5, 31, 100, 257},
	{1022, 400, 63, 64, 1, 2},
	{7},
	{1100, 1022, 900, 700, 500, 300, 100, 3},
	{62, 62, 62},
	{257, 31},
}

// Two batches launched back to back, waited in order, equal the Forward of
// each on the same GPU model (same kernels on the same batch: expected
// bit-identical; 1e-6 allows for a GEMM algorithm choice), for a whole run
// of batches with two in flight and two Outputs in rotation.
func TestLaunchBackToBackMatchesForward(t *testing.T) {
	requireGPU(t)
	for _, prec := range []string{"fp32", "fp16", "bf16"} {
		t.Run(prec, func(t *testing.T) {
			cfg, err := esmtest.Config("8M")
			if err != nil {
				t.Fatal(err)
			}
			g := newGPU(t, prec)
			defer g.Close()
			m, err := esm.NewModel(cfg, esmtest.Random(cfg, 11), g)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			req := everything(cfg)
			var batches []*esm.Batch
			var want []*esm.Output
			var o esm.Output
			for i, ls := range asyncLengths {
				b := testBatch(t, uint64(20+i), ls)
				batches = append(batches, b)
				if err := m.Forward(b, req, &o); err != nil {
					t.Fatal(err)
				}
				want = append(want, clone(&o))
			}
			if err := o.Release(); err != nil {
				t.Fatal(err)
			}

			var outs [2]esm.Output
			type flight struct {
				i int
				f esm.Fence
			}
			var inFlight []flight
			check := func(fl flight) {
				if err := fl.f.Wait(); err != nil {
					t.Fatalf("batch %d: %v", fl.i, err)
				}
				got := &outs[fl.i%2]
				w := worstDiff(t, req, got, want[fl.i])
				if w > 1e-6 {
					t.Errorf("batch %d (T=%d): launched back to back differs from Forward by %.3g", fl.i, len(batches[fl.i].Tokens), w)
				}
				t.Logf("batch %d T=%d: max rel diff to Forward %.3g", fl.i, len(batches[fl.i].Tokens), w)
			}
			for round := 0; round < 2; round++ {
				for i, b := range batches {
					f, err := m.Launch(b, req, &outs[i%2])
					if err != nil {
						t.Fatal(err)
					}
					inFlight = append(inFlight, flight{i, f})
					if len(inFlight) == 2 { // launch i, then wait i-1
						check(inFlight[0])
						inFlight = inFlight[1:]
					}
				}
				for _, fl := range inFlight {
					check(fl)
				}
				inFlight = nil
			}
		})
	}
}

// SetBatch on the copy stream gives the results the CPU backend gives
// (the bounds of TestForwardMatchesCPU), batch after batch with two in
// flight, on the tiny and 8M shapes.
func TestSetBatchCopyStreamMatchesCPU(t *testing.T) {
	requireGPU(t)
	tols := map[string]float64{"fp32": 1e-4, "fp16": 3e-2}
	for _, size := range []string{"tiny", "8M"} {
		cfg, err := esmtest.Config(size)
		if err != nil {
			t.Fatal(err)
		}
		src := esmtest.Random(cfg, 42)
		req := everything(cfg)
		var batches []*esm.Batch
		var want []*esm.Output
		cb := cpu.New(cpu.Options{})
		cm, err := esm.NewModel(cfg, src, cb)
		if err != nil {
			t.Fatal(err)
		}
		for i, ls := range asyncLengths {
			b := testBatch(t, uint64(40+i), ls)
			batches = append(batches, b)
			var o esm.Output
			if err := cm.Forward(b, req, &o); err != nil {
				t.Fatal(err)
			}
			want = append(want, &o)
		}
		// The CPU outputs live in its backend's host memory: close the
		// reference only after the comparisons.
		defer cb.Close()
		defer cm.Close()
		for _, prec := range []string{"fp32", "fp16"} {
			t.Run(size+"/"+prec, func(t *testing.T) {
				g := newGPU(t, prec)
				defer g.Close()
				m, err := esm.NewModel(cfg, src, g)
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				var outs [2]esm.Output
				worst := 0.0
				launchInFlight(t, m, batches, req, &outs, func(i int, o *esm.Output) {
					worst = max(worst, worstDiff(t, req, o, want[i]))
				})
				if worst > tols[prec] {
					t.Errorf("%s %s: worst max rel err against the CPU %.3g > %.3g", size, prec, worst, tols[prec])
				}
				t.Logf("%s %s (%s): %d batches, worst max rel err against the CPU %.3g", size, prec, g.Name(), len(batches), worst)
				st := g.ctx.Stats()
				t.Logf("allocator: %d bytes in use, %d reserved, %d mallocs, %d reuses", st.InUse, st.Reserved, st.Mallocs, st.Reuses)
			})
		}
	}
}

// The rules of the capability: ReadAsync refuses Go memory, a Fence is
// waited only by the owning goroutine, HostMemory frees once, Output memory
// goes back with Release and Model.Close.
func TestAsyncReaderRules(t *testing.T) {
	g := newGPU(t, "fp32")
	defer g.Close()
	x, err := g.Alloc(64, true)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free(x)
	if err := g.ReadAsync(make([]float32, 64), x); err == nil {
		t.Error("ReadAsync into Go memory accepted")
	}
	h, err := g.HostAlloc(64)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.ReadAsync(h.Floats(), x); err != nil {
		t.Fatal(err)
	}
	f, err := g.Fence()
	if err != nil {
		t.Fatal(err)
	}
	werr := make(chan error)
	go func() { werr <- f.Wait() }()
	if err := <-werr; !errors.Is(err, cudadrv.ErrWrongGoroutine) {
		t.Errorf("Fence.Wait from another goroutine: %v, want ErrWrongGoroutine", err)
	}
	if err := f.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(); err != nil {
		t.Fatalf("second Wait: %v", err)
	}
	if err := h.Free(); err != nil {
		t.Fatal(err)
	}
	if err := h.Free(); err != nil || h.Floats() != nil {
		t.Fatalf("second Free: %v", err)
	}

	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	ch := &countingHost{Backend: g}
	m, err := esm.NewModel(cfg, esmtest.Random(cfg, 1), ch)
	if err != nil {
		t.Fatal(err)
	}
	hosts := func() int { return ch.live }
	base := 0
	var o1, o2 esm.Output
	b := testBatch(t, 1, []int{10, 20})
	req := everything(cfg)
	if err := m.Forward(b, req, &o1); err != nil {
		t.Fatal(err)
	}
	if err := m.Forward(b, req, &o2); err != nil {
		t.Fatal(err)
	}
	n := hosts() - base
	if n == 0 {
		t.Fatal("Forward on the GPU did not put the Output in pinned memory")
	}
	if err := o1.Release(); err != nil {
		t.Fatal(err)
	}
	if got := hosts() - base; got != n/2 {
		t.Errorf("Release: %d pinned buffers left of %d, want %d", got, n, n/2)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := hosts() - base; got != 0 {
		t.Errorf("Model.Close left %d pinned buffers", got)
	}
}

// Host timeline of a run of batches, each copied out after its results are
// in (as the embed pipeline's fill does): Forward then copy, one by one,
// against Launch of batch i+1 before the wait and copy of batch i (logged,
// not checked: the gain is the host work that overlaps the kernels).
func TestLaunchOverlapTiming(t *testing.T) {
	requireGPU(t)
	cfg, err := esmtest.Config("35M")
	if err != nil {
		t.Fatal(err)
	}
	g := newGPU(t, "fp16")
	defer g.Close()
	m, err := esm.NewModel(cfg, esmtest.Random(cfg, 3), g)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	L := cfg.Layers
	req := esm.Request{Layers: []int{L}, Reprs: esm.Mean | esm.PerTok}
	var batches []*esm.Batch
	tokens := 0
	for i := 0; i < 8; i++ {
		b := testBatch(t, uint64(60+i), benchLengths(uint64(60+i), 16000))
		batches = append(batches, b)
		tokens += len(b.Tokens)
	}
	var outs [2]esm.Output
	var host []float32
	copyOut := func(o *esm.Output) {
		host = append(append(host[:0], o.Mean[L]...), o.PerTok[L]...)
	}
	for _, b := range batches { // warm up: kernels, plans, device and pinned buffers
		for i := range outs {
			if err := m.Forward(b, req, &outs[i]); err != nil {
				t.Fatal(err)
			}
			copyOut(&outs[i])
		}
	}
	for rep := 0; rep < 3; rep++ {
		t0 := time.Now()
		for _, b := range batches {
			if err := m.Forward(b, req, &outs[0]); err != nil {
				t.Fatal(err)
			}
			copyOut(&outs[0])
		}
		seq := time.Since(t0)
		t0 = time.Now()
		launchInFlight(t, m, batches, req, &outs, func(_ int, o *esm.Output) { copyOut(o) })
		pipe := time.Since(t0)
		t.Logf("%s 35M fp16, %d batches, %d tokens (mean + per_tok of the last layer, copied out): Forward one by one %v (%.0f tokens/s), Launch with one in flight %v (%.0f tokens/s)",
			g.ctx.Device.Name, len(batches), tokens, seq, float64(tokens)/seq.Seconds(), pipe, float64(tokens)/pipe.Seconds())
	}
}

// launchInFlight runs the batches as the embed pipeline does on a GPU, one in
// flight: Launch batch i into outs[i%2], then wait for batch i-1 and hand its
// Output to done (and the last one after the loop).
func launchInFlight(t *testing.T, m *esm.Model, batches []*esm.Batch, req esm.Request, outs *[2]esm.Output,
	done func(i int, o *esm.Output)) {
	t.Helper()
	var prev esm.Fence
	for i, b := range batches {
		f, err := m.Launch(b, req, &outs[i%2])
		if err != nil {
			t.Fatal(err)
		}
		if prev != nil {
			if err := prev.Wait(); err != nil {
				t.Fatal(err)
			}
			done(i-1, &outs[(i-1)%2])
		}
		prev = f
	}
	if prev != nil {
		if err := prev.Wait(); err != nil {
			t.Fatal(err)
		}
		done(len(batches)-1, &outs[(len(batches)-1)%2])
	}
}

// countingHost counts the live HostMemory blocks a model takes from the
// backend (the model sees the GPU backend through it).
type countingHost struct {
	*Backend
	live int
}

type countedMem struct {
	esm.HostMemory
	c     *countingHost
	freed bool
}

func (c *countingHost) HostAlloc(n int) (esm.HostMemory, error) {
	h, err := c.Backend.HostAlloc(n)
	if err != nil {
		return nil, err
	}
	c.live++
	return &countedMem{HostMemory: h, c: c}, nil
}

func (m *countedMem) Free() error {
	if !m.freed {
		m.freed = true
		m.c.live--
	}
	return m.HostMemory.Free()
}
