package graph

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
	"github.com/esm2go/esm2go/internal/testutil"
	G "gorgonia.org/gorgonia"
)

// tinyPath is the committed tiny checkpoint (3 layers, D=64, 4 heads; HF
// EsmForMaskedLM weights from tests/gen_fixtures.py, with fp16-rounded
// rotary frequencies stored in the file).
var tinyPath = filepath.Join("..", "tests", "testdata", "models", "tiny")

// testSeqs are short proteins (the first residues of
// tests/testdata/fairesm_some_proteins.fasta records), one with <mask>
// tokens so the token-dropout rescale differs between sequences.
var testSeqs = []string{
	"AVIYYRFRSQKPDHIATIKF",
	"M<mask>TAYIAKQR<mask>ISFVKSHF",
	"GSW",
}

// batchOf tokenizes seqs into one packed batch.
func batchOf(t testing.TB, seqs ...string) *esm.Batch {
	t.Helper()
	tok := esm.NewTokenizer(esm.DefaultMaxResidues)
	b := &esm.Batch{}
	b.Reset()
	for _, s := range seqs {
		toks, e, err := tok.Encode(nil, []byte(s))
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		b.Append(toks, e.Masks)
	}
	return b
}

func loadTiny(t testing.TB) *Model {
	t.Helper()
	m, err := Load(tinyPath)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func randomModel(t testing.TB, size string) (*Model, esm.Config, esmtest.Source) {
	t.Helper()
	cfg, err := esmtest.Config(size)
	if err != nil {
		t.Fatal(err)
	}
	src := esmtest.Random(cfg, 11)
	m, err := New(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	return m, cfg, src
}

// relErr is max|got-want| / max|want|, +Inf on a NaN.
var relErr = testutil.MaxRel

// forwardTol bounds max|graph - esm/cpu| / max|esm/cpu| for every hidden
// state and the logits. Both are fp32 from the same parameters; they differ
// in GEMM blocking (Gorgonia's gonum calls vs the backend's row split), in
// exp (math.Exp vs the backend's Cephes expf, 2 ulp) and erf (math.Erfc vs
// a 1.2e-7 Chebyshev fit). Measured: at most 7.6e-7 (tiny checkpoint) and
// 4.8e-7 (random weights) over all layers; 1e-5 leaves a 13x margin and
// still fails on any real bug (a missing scale, bias or rotary pair moves
// these outputs by more than 1e-3).
const forwardTol = 1e-5

// The graph's forward equals the CPU backend's, layer by layer, on the
// committed tiny checkpoint and on random weights, packed.
func TestForwardMatchesCPUBackend(t *testing.T) {
	for _, name := range []string{"tiny checkpoint", "random tiny"} {
		t.Run(name, func(t *testing.T) {
			be := cpu.New(cpu.Options{})
			defer be.Close()
			var (
				gm  *Model
				ref *esm.Model
				err error
			)
			if name == "tiny checkpoint" {
				gm = loadTiny(t)
				ref, err = esm.LoadModel(tinyPath, be)
			} else {
				var cfg esm.Config
				var src esmtest.Source
				gm, cfg, src = randomModel(t, "tiny")
				ref, err = esm.NewModel(cfg, src, be)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			b := batchOf(t, testSeqs...)
			L := gm.Cfg.Layers
			layers := make([]int, L+1)
			for i := range layers {
				layers[i] = i
			}
			var out esm.Output
			if err := ref.Forward(b, esm.Request{Layers: layers, Reprs: esm.PerTok, Logits: true}, &out); err != nil {
				t.Fatal(err)
			}
			p, err := gm.Forward(b, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.Run(Request{Read: append(append([]*G.Node(nil), p.Hidden...), p.Logits)})
			if err != nil {
				t.Fatal(err)
			}
			worst := 0.0
			for k := 0; k <= L; k++ {
				e := relErr(res.Values[k], out.PerTok[k])
				worst = math.Max(worst, e)
				if e > forwardTol {
					t.Errorf("hidden %d: max|graph-cpu|/max|cpu| = %.3g > %g", k, e, forwardTol)
				}
			}
			e := relErr(res.Values[L+1], out.Logits)
			worst = math.Max(worst, e)
			if e > forwardTol {
				t.Errorf("logits: max|graph-cpu|/max|cpu| = %.3g > %g", e, forwardTol)
			}
			t.Logf("worst relative difference %.3g", worst)
		})
	}
}
