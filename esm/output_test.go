package esm_test

import (
	"math/rand/v2"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
)

// hostCounter is a CPU backend that counts host memory allocated and
// freed through HostAlloc.
type hostCounter struct {
	esm.Backend
	allocs, frees int
}

type countedMem struct {
	esm.HostMemory
	c *hostCounter
}

func (m countedMem) Free() error {
	m.c.frees++
	return m.HostMemory.Free()
}

func (h *hostCounter) HostAlloc(n int) (esm.HostMemory, error) {
	mem, err := h.Backend.HostAlloc(n)
	if err != nil {
		return nil, err
	}
	h.allocs++
	return countedMem{mem, h}, nil
}

// countingModel is the tiny model on a CPU backend that counts its host
// memory; both are closed when the test ends.
func countingModel(t *testing.T) (*esm.Model, *hostCounter) {
	t.Helper()
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	inner := cpu.New(cpu.Options{})
	t.Cleanup(func() { inner.Close() })
	be := &hostCounter{Backend: inner}
	m, err := esm.NewModel(cfg, esmtest.Random(cfg, 3), be)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, be
}

// An Output's buffers outgrown by a larger batch are not freed during
// Launch (on a GPU freeing pinned memory waits for the whole device, the
// batch in flight included) but by Release; the rows read are right for
// every batch.
func TestOutputGrowthFreesAtRelease(t *testing.T) {
	m, be := countingModel(t)
	cfg := m.Cfg
	r := rand.New(rand.NewPCG(5, 6))
	req := esm.Request{Layers: []int{-1}, Reprs: esm.Mean | esm.PerTok}
	var out esm.Output
	for i, n := range []int{5, 40, 300} { // each batch outgrows the buffers of the one before
		seq := esmtest.Sequence(r, n)
		f, err := m.Launch(encode(t, seq), req, &out)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Wait(); err != nil {
			t.Fatal(err)
		}
		if be.frees != 0 {
			t.Fatalf("batch %d: %d host buffers freed during Launch", i, be.frees)
		}
		if got, want := len(out.PerTok[cfg.Layers]), (n+2)*cfg.Dim; got != want {
			t.Fatalf("batch %d: per_tok has %d values, want %d", i, got, want)
		}
		// The same batch alone, in a fresh Output, gives the same rows.
		var ref esm.Output
		if err := m.Forward(encode(t, seq), req, &ref); err != nil {
			t.Fatal(err)
		}
		for k, v := range ref.PerTok[cfg.Layers] {
			if out.PerTok[cfg.Layers][k] != v {
				t.Fatalf("batch %d: per_tok[%d] = %v, alone %v", i, k, out.PerTok[cfg.Layers][k], v)
			}
		}
		if err := ref.Release(); err != nil {
			t.Fatal(err)
		}
		be.frees -= 2 // ref's two buffers
		be.allocs -= 2
	}
	if be.allocs <= 2 {
		t.Fatalf("%d host buffers allocated: the batches did not grow the output", be.allocs)
	}
	if err := out.Release(); err != nil {
		t.Fatal(err)
	}
	if be.frees != be.allocs {
		t.Fatalf("Release freed %d of %d host buffers", be.frees, be.allocs)
	}
}

// ReserveOutput allocates the per-token memory up front: Launch then
// allocates none for batches within the reserved tokens (only the small
// pooled outputs), and grows it for a larger one.
func TestReserveOutput(t *testing.T) {
	m, be := countingModel(t)
	req := esm.Request{Layers: []int{0, -1}, Reprs: esm.PerTok}
	var out esm.Output
	if err := m.ReserveOutput(&out, req, 100); err != nil {
		t.Fatal(err)
	}
	if be.allocs != 2 { // one per layer
		t.Fatalf("ReserveOutput allocated %d buffers, want 2", be.allocs)
	}
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{10, 98} { // 12 and 100 tokens
		if err := m.Forward(encode(t, esmtest.Sequence(r, n)), req, &out); err != nil {
			t.Fatal(err)
		}
	}
	if be.allocs != 2 {
		t.Fatalf("Launch allocated %d buffers within the reserved tokens", be.allocs-2)
	}
	if err := m.Forward(encode(t, esmtest.Sequence(r, 99)), req, &out); err != nil {
		t.Fatal(err)
	}
	if be.allocs != 4 {
		t.Fatalf("%d buffers after a batch over the reserve, want 4", be.allocs)
	}
	if err := out.Release(); err != nil {
		t.Fatal(err)
	}
	if be.frees != be.allocs {
		t.Fatalf("Release freed %d of %d host buffers", be.frees, be.allocs)
	}
}
