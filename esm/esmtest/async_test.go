package esmtest_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
)

func batchOf(t *testing.T, seed uint64, lengths ...int) *esm.Batch {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 3))
	tok := esm.NewTokenizer(0)
	var b esm.Batch
	b.Reset()
	for _, n := range lengths {
		toks, e, err := tok.Encode(nil, esmtest.Sequence(r, n))
		if err != nil {
			t.Fatal(err)
		}
		b.Append(toks, e.Masks)
	}
	return &b
}

func allOf(cfg esm.Config) esm.Request {
	req := esm.Request{Reprs: esm.Mean | esm.BOS | esm.PerTok, Logits: true}
	for l := 0; l <= cfg.Layers; l++ {
		req.Layers = append(req.Layers, l)
	}
	return req
}

// equal compares every slice of two Outputs exactly (same CPU arithmetic).
func equal(t *testing.T, what string, got, want *esm.Output) {
	t.Helper()
	if got.NSeq != want.NSeq || got.T != want.T || got.D != want.D {
		t.Fatalf("%s: shape %d/%d/%d, want %d/%d/%d", what, got.NSeq, got.T, got.D, want.NSeq, want.T, want.D)
	}
	cmp := func(name string, a, b []float32) {
		if len(a) != len(b) {
			t.Fatalf("%s %s: %d values, want %d", what, name, len(a), len(b))
		}
		for i := range b {
			if a[i] != b[i] && !(math.IsNaN(float64(a[i])) && math.IsNaN(float64(b[i]))) {
				t.Fatalf("%s %s[%d] = %g, want %g", what, name, i, a[i], b[i])
			}
		}
	}
	for l, v := range want.Mean {
		cmp("mean", got.Mean[l], v)
		cmp("bos", got.BOS[l], want.BOS[l])
		cmp("per_tok", got.PerTok[l], want.PerTok[l])
	}
	cmp("logits", got.Logits, want.Logits)
}

func hasNaN(o *esm.Output) bool {
	for _, m := range []map[int][]float32{o.Mean, o.BOS, o.PerTok} {
		for _, v := range m {
			for _, x := range v {
				if math.IsNaN(float64(x)) {
					return true
				}
			}
		}
	}
	return false
}

// Two batches launched back to back on the fake async backend: nothing is
// readable before the fences, and after them every output equals the
// synchronous CPU forward of each batch. Output memory comes from the
// backend and is freed by Release and Model.Close.
func TestLaunchAsyncMatchesForward(t *testing.T) {
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src := esmtest.Random(cfg, 5)
	req := allOf(cfg)
	b1 := batchOf(t, 1, 1, 30, 7, 120)
	b2 := batchOf(t, 2, 300, 2) // more tokens: activations grow between launches

	sb := cpu.New(cpu.Options{})
	sm, err := esm.NewModel(cfg, src, sb)
	if err != nil {
		t.Fatal(err)
	}
	var want1, want2 esm.Output
	if err := sm.Forward(b1, req, &want1); err != nil {
		t.Fatal(err)
	}
	if err := sm.Forward(b2, req, &want2); err != nil {
		t.Fatal(err)
	}
	// The outputs live in sm's host memory: sm stays open while they are used.
	defer sb.Close()
	defer sm.Close()

	ab := esmtest.NewAsync(cpu.New(cpu.Options{}))
	defer ab.Close()
	m, err := esm.NewModel(cfg, src, ab)
	if err != nil {
		t.Fatal(err)
	}
	var o1, o2 esm.Output
	for round := 0; round < 2; round++ { // the second round reuses the Outputs' memory
		f1, err := m.Launch(b1, req, &o1)
		if err != nil {
			t.Fatal(err)
		}
		f2, err := m.Launch(b2, req, &o2)
		if err != nil {
			t.Fatal(err)
		}
		if !hasNaN(&o1) || !hasNaN(&o2) {
			t.Fatal("outputs readable before their fence: the fake backend did not defer the copies")
		}
		if err := f1.Wait(); err != nil {
			t.Fatal(err)
		}
		equal(t, "batch 1", &o1, &want1)
		if err := f2.Wait(); err != nil {
			t.Fatal(err)
		}
		equal(t, "batch 2", &o2, &want2)
	}
	// Forward (Launch + Wait) on the async backend.
	var o3 esm.Output
	if err := m.Forward(b2, req, &o3); err != nil {
		t.Fatal(err)
	}
	equal(t, "forward", &o3, &want2)
	if ab.Fences == 0 || ab.Copies == 0 {
		t.Fatalf("the model did not use the async path (%d fences, %d copies)", ab.Fences, ab.Copies)
	}
	if err := ab.Err(); err != nil {
		t.Fatal(err)
	}
	live := ab.Live()
	if err := o1.Release(); err != nil {
		t.Fatal(err)
	}
	if ab.Live() >= live || o1.Mean != nil {
		t.Fatalf("Release left %d of %d host blocks, Mean %v", ab.Live(), live, o1.Mean != nil)
	}
	// o1 is usable again after Release.
	f, err := m.Launch(b1, req, &o1)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(); err != nil {
		t.Fatal(err)
	}
	equal(t, "after release", &o1, &want1)
	// A failed Launch leaves nothing queued: the earlier batch's fence
	// still completes its copies.
	f2, err := m.Launch(b2, req, &o2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Launch(b1, esm.Request{Layers: []int{cfg.Layers + 1}}, &o3); err == nil {
		t.Fatal("layer outside the model accepted")
	}
	if err := f2.Wait(); err != nil {
		t.Fatal(err)
	}
	equal(t, "before a failed launch", &o2, &want2)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if ab.Live() != 0 {
		t.Fatalf("Model.Close left %d host blocks allocated", ab.Live())
	}
	if err := ab.Err(); err != nil {
		t.Fatal(err)
	}
}

// On a synchronous backend Launch does the work before it returns.
func TestLaunchSyncIsComplete(t *testing.T) {
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New(cpu.Options{})
	defer be.Close()
	m, err := esm.NewModel(cfg, esmtest.Random(cfg, 5), be)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	req := allOf(cfg)
	b := batchOf(t, 1, 10, 20)
	var o, want esm.Output
	if _, err := m.Launch(b, req, &o); err != nil {
		t.Fatal(err)
	}
	if err := m.Forward(b, req, &want); err != nil {
		t.Fatal(err)
	}
	equal(t, "launch", &o, &want)
}
