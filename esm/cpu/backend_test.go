package cpu

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/esm2go/esm2go/attention"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/esmtest"
)

func backends(t testing.TB) map[string]*Backend {
	m := map[string]*Backend{"gonum": New(Options{NoBLAS: true})}
	if b := New(Options{}); b.mm.Name() == "openblas" {
		m["openblas"] = b
	} else {
		t.Logf("OpenBLAS not installed: only the pure-Go matmul is tested")
	}
	return m
}

// The backend's BLAS attention must equal the plain Go reference on the
// varlen shapes that catch real bugs.
func TestAttentionMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	cases := map[string][]int{
		"one-token": {1}, "single": {37}, "not-tile": {1, 65, 3, 129},
		"many-short": {3, 1, 2, 5, 1, 4, 3, 2, 2, 1, 7, 3}, "longest": {1024, 5},
	}
	for bname, be := range backends(t) {
		for name, lens := range cases {
			for _, hd := range []int{16, 24, 32, 64, 128} {
				H := 2
				D := H * hd
				s, err := attention.NewSeqlens(lens)
				if err != nil {
					t.Fatal(err)
				}
				T := s.Total()
				qkv := make([]float32, T*3*D)
				for i := range qkv {
					qkv[i] = float32(r.NormFloat64())
				}
				want := make([]float32, T*D)
				if err := attention.Reference(attention.Args{Out: want, LdOut: D, Q: qkv, K: qkv[D:], V: qkv[2*D:], Ld: 3 * D, Seqlens: s, H: H, HD: hd, Scale: 1}); err != nil {
					t.Fatal(err)
				}
				be.seqlens, be.tokens = s, make([]int32, T)
				// all heads packed in one pass (the default for these
				// batches), then each head packing its own
				for _, packAllMax := range []int{packAllMaxTokens, 0} {
					be.packAllMax = packAllMax
					got := &tensor{d: make([]float32, T*D)}
					if err := be.Attention(got, &tensor{d: qkv}, H, hd); err != nil {
						t.Fatal(err)
					}
					var maxDiff, maxRef float64
					for i := range want {
						maxDiff = math.Max(maxDiff, math.Abs(float64(got.d[i]-want[i])))
						maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
					}
					// Both are fp32; they differ only in summation order (BLAS
					// blocking vs a plain loop): ~1e-6 relative, 1e-5 is margin.
					if maxDiff > 1e-5*maxRef {
						t.Errorf("%s %s hd=%d packAllMax=%d: max diff %g (max ref %g)", bname, name, hd, packAllMax, maxDiff, maxRef)
					}
				}
				be.packAllMax = packAllMaxTokens
			}
		}
	}
}

func newModel(t testing.TB, size string, be esm.Backend) *esm.Model {
	cfg, err := esmtest.Config(size)
	if err != nil {
		t.Fatal(err)
	}
	m, err := esm.NewModel(cfg, esmtest.Random(cfg, 7), be)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Results must not depend on batch neighbours: every sequence run alone
// equals the same sequence packed with others.
func TestPackedEqualsAlone(t *testing.T) {
	be := New(Options{})
	defer be.Close()
	m := newModel(t, "tiny", be)
	defer m.Close()
	tok := esm.NewTokenizer(esm.DefaultMaxResidues)
	r := rand.New(rand.NewPCG(5, 6))
	seqs := [][]byte{[]byte("M"), esmtest.Sequence(r, 50), []byte("MK<mask>TAYIAK<mask>QR"), esmtest.Sequence(r, 300), esmtest.Sequence(r, 7)}
	req := esm.Request{Layers: []int{0, 2, 3}, Reprs: esm.Mean | esm.BOS | esm.PerTok, Logits: true}
	var packed esm.Batch
	packed.Reset()
	for _, s := range seqs {
		toks, e, err := tok.Encode(nil, s)
		if err != nil {
			t.Fatal(err)
		}
		packed.Append(toks, e.Masks)
	}
	var all esm.Output
	if err := m.Forward(&packed, req, &all); err != nil {
		t.Fatal(err)
	}
	for i, s := range seqs {
		var b esm.Batch
		b.Reset()
		toks, e, _ := tok.Encode(nil, s)
		b.Append(toks, e.Masks)
		var one esm.Output
		if err := m.Forward(&b, req, &one); err != nil {
			t.Fatal(err)
		}
		D, st, n := m.Cfg.Dim, packed.Seqlens.Start(i), packed.Seqlens.Len(i)
		for _, l := range req.Layers {
			// Alone and packed differ only by BLAS blocking over a different
			// T: fp32 rounding, ~1e-6 relative; 1e-5 is margin.
			compare(t, fmt.Sprintf("seq %d mean %d", i, l), one.Mean[l], all.Mean[l][i*D:(i+1)*D], 1e-5)
			compare(t, fmt.Sprintf("seq %d bos %d", i, l), one.BOS[l], all.BOS[l][i*D:(i+1)*D], 1e-5)
			compare(t, fmt.Sprintf("seq %d per_tok %d", i, l), one.PerTok[l], all.PerTok[l][st*D:(st+n)*D], 1e-5)
		}
		V := m.Cfg.Vocab
		compare(t, fmt.Sprintf("seq %d logits", i), one.Logits, all.Logits[st*V:(st+n)*V], 1e-5)
	}
}

func compare(t *testing.T, what string, got, want []float32, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: length %d vs %d", what, len(got), len(want))
	}
	var maxDiff, maxRef float64
	for i := range want {
		if math.IsNaN(float64(got[i])) {
			t.Fatalf("%s: NaN at %d", what, i)
		}
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i]-want[i])))
		maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
	}
	if maxDiff > rel*maxRef {
		t.Errorf("%s: max |diff| %g > %g x max |ref| %g", what, maxDiff, rel, maxRef)
	}
}

func TestForwardRejectsBadRequests(t *testing.T) {
	be := New(Options{})
	m := newModel(t, "tiny", be)
	var b esm.Batch
	b.Reset()
	b.Append([]int32{0, 5, 2}, 0)
	var out esm.Output
	if err := m.Forward(&b, esm.Request{Layers: []int{4}}, &out); err == nil {
		t.Error("layer 4 of a 3-layer model accepted")
	}
	bad := esm.Batch{Tokens: []int32{0, 99, 2}, Seqlens: b.Seqlens, Scales: b.Scales}
	if err := m.Forward(&bad, esm.Request{}, &out); err == nil {
		t.Error("token id 99 accepted")
	}
}

// BenchmarkForward reports CPU tokens/s of the forward pass over packed
// batches of random sequences (lengths 100..500, 4096-token batches).
func BenchmarkForward(b *testing.B) {
	for _, size := range []string{"8M", "35M"} {
		for name, be := range backends(b) {
			b.Run(size+"/"+name, func(b *testing.B) {
				m := newModel(b, size, be)
				defer m.Close()
				tok := esm.NewTokenizer(esm.DefaultMaxResidues)
				r := rand.New(rand.NewPCG(1, 1))
				var batch esm.Batch
				batch.Reset()
				for len(batch.Tokens) < 4096-502 {
					toks, _, _ := tok.Encode(nil, esmtest.Sequence(r, 100+r.IntN(400)))
					batch.Append(toks, 0)
				}
				req := esm.Request{Layers: []int{m.Cfg.Layers}, Reprs: esm.Mean}
				var out esm.Output
				for b.Loop() {
					if err := m.Forward(&batch, req, &out); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(batch.Tokens))*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
			})
		}
	}
}

// TestClosedBackendRefuses: after Close (which unloads OpenBLAS) the
// products return an error instead of calling into the unloaded library,
// which ended the process with SIGSEGV; Close twice is fine.
func TestClosedBackendRefuses(t *testing.T) {
	be := New(Options{})
	m := newModel(t, "tiny", be)
	defer m.Close()
	toks, e, err := esm.NewTokenizer(0).Encode(nil, []byte("MKTAYIAKQR"))
	if err != nil {
		t.Fatal(err)
	}
	var b esm.Batch
	b.Reset()
	b.Append(toks, e.Masks)
	var out esm.Output
	if err := m.Forward(&b, esm.Request{Logits: true}, &out); err != nil {
		t.Fatal(err)
	}
	be.Close()
	be.Close()
	if err := m.Forward(&b, esm.Request{Logits: true}, &out); !errors.Is(err, errClosed) {
		t.Errorf("Forward on a closed backend: %v", err)
	}
	n := 4
	if err := be.Attention(&tensor{d: make([]float32, n)}, &tensor{d: make([]float32, 3*n)}, 1, n); !errors.Is(err, errClosed) {
		t.Errorf("Attention on a closed backend: %v", err)
	}
}
