package graph

import (
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
)

// benchBatch is one packed batch of four random proteins (100, 150, 200
// and 250 residues: T = 708 tokens).
func benchBatch(b *testing.B) *esm.Batch {
	r := rand.New(rand.NewPCG(1, 1))
	var seqs []string
	for _, n := range []int{100, 150, 200, 250} {
		seqs = append(seqs, string(esmtest.Sequence(r, n)))
	}
	return batchOf(b, seqs...)
}

func reportTokens(b *testing.B, T int) {
	b.ReportMetric(float64(T)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkForwardBackward: graph construction, forward and backward of a
// projection of the logits on the 8M shape (random weights), with the
// gradient of the input embeddings only (saliency) or of every parameter
// as well (training).
func BenchmarkForwardBackward(b *testing.B) {
	m, _, _ := randomModel(b, "8M")
	batch := benchBatch(b)
	T := len(batch.Tokens)
	w := randn(rand.New(rand.NewPCG(2, 2)), T*m.Cfg.Vocab, 1)
	for _, all := range []bool{false, true} {
		name := "embeddings"
		if all {
			name = "all-parameters"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				p, err := m.Forward(batch, nil)
				if err != nil {
					b.Fatal(err)
				}
				cost, err := p.Project(p.Logits, w)
				if err != nil {
					b.Fatal(err)
				}
				wrt := []*G.Node{p.Embeddings}
				if all {
					for _, n := range m.ParamNames() {
						pn, err := p.Param(n)
						if err != nil {
							b.Fatal(err)
						}
						wrt = append(wrt, pn)
					}
				}
				if _, err := p.Run(Request{Cost: cost, WRT: wrt}); err != nil {
					b.Fatal(err)
				}
			}
			reportTokens(b, T)
		})
	}
}

// BenchmarkForward: the graph's forward pass alone (logits read back), to
// set against BenchmarkCPUBackendForward on the same batch.
func BenchmarkForward(b *testing.B) {
	m, _, _ := randomModel(b, "8M")
	batch := benchBatch(b)
	for b.Loop() {
		p, err := m.Forward(batch, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Run(Request{Read: []*G.Node{p.Logits}}); err != nil {
			b.Fatal(err)
		}
	}
	reportTokens(b, len(batch.Tokens))
}

// BenchmarkCPUBackendForward: esm.Model on esm/cpu, the inference path,
// same weights and batch as BenchmarkForward; with OpenBLAS when it is
// installed, and with gonum's pure-Go matmul (the kernel the graph uses).
func BenchmarkCPUBackendForward(b *testing.B) {
	_, cfg, src := randomModel(b, "8M")
	batch := benchBatch(b)
	for _, noBLAS := range []bool{false, true} {
		be := cpu.New(cpu.Options{NoBLAS: noBLAS})
		name := "default"
		if noBLAS {
			name = "gonum"
		}
		b.Run(name, func(b *testing.B) {
			b.Logf("backend: %s", be.Name())
			m, err := esm.NewModel(cfg, src, be)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			var out esm.Output
			for b.Loop() {
				if err := m.Forward(batch, esm.Request{Logits: true}, &out); err != nil {
					b.Fatal(err)
				}
			}
			reportTokens(b, len(batch.Tokens))
		})
		be.Close()
	}
}
