// The PyTorch gradient parity test. It reads
// tests/testdata/fixtures/grad_tiny.safetensors, written on the GPU test
// host by tests/gen_grad_fixtures.py (HF EsmForMaskedLM autograd in float64).

package graph

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/weights"
)

// GradFixtureVersion is the layout this test reads; gen_grad_fixtures.py
// writes it as esm2go_grad_fixture_version.
const GradFixtureVersion = "1"

var gradFixturePath = filepath.Join("..", "tests", "testdata", "fixtures", "grad_tiny.safetensors")

// gradFixtureTol bounds max|graph - HF| / max|HF| per gradient tensor and
// for the logit. The fixture is HF's float64 autograd (rounded to fp32:
// 6e-8); the graph is fp32, whose gradients measured within 2.1e-7 of
// float64 central differences on the same model (grad_test.go) and whose
// logits within 5e-7 of the float64 equations. 2e-5, the tolerance of the
// forward fixtures (tests/parity_test.go), leaves a margin of 40x; a wrong
// term in any op's backward gives errors above 1e-3.
const gradFixtureTol = 2e-5

type gradInput struct {
	Name     string `json:"name"`
	Record   string `json:"record"`
	Sequence string `json:"sequence"`
	Pos      int    `json:"pos"`
	Token    int32  `json:"token"`
}

func TestGradientsMatchPyTorch(t *testing.T) {
	f, err := weights.OpenSafetensors(gradFixturePath)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s is missing: generate it on the GPU test host with\n"+
			"  PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES= python3 tests/gen_grad_fixtures.py\n"+
			"(see the script's docstring) and commit it", gradFixturePath)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v := f.Metadata["esm2go_grad_fixture_version"]; v != GradFixtureVersion {
		t.Fatalf("%s: fixture version %q, this test reads %q: regenerate it with tests/gen_grad_fixtures.py", gradFixturePath, v, GradFixtureVersion)
	}
	var inputs []gradInput
	var params []string
	if err := json.Unmarshal([]byte(f.Metadata["inputs"]), &inputs); err != nil {
		t.Fatalf("%s: inputs metadata: %v", gradFixturePath, err)
	}
	if err := json.Unmarshal([]byte(f.Metadata["params"]), &params); err != nil {
		t.Fatalf("%s: params metadata: %v", gradFixturePath, err)
	}
	if len(inputs) == 0 || len(params) == 0 {
		t.Fatalf("%s: %d inputs, %d parameters", gradFixturePath, len(inputs), len(params))
	}
	t.Logf("fixture from torch %s, transformers %s; its checks: %s", f.Metadata["torch"], f.Metadata["transformers"], f.Metadata["checks"])
	tensor := func(name string) []float32 {
		t.Helper()
		tn, ok := f.Tensors[name]
		if !ok {
			t.Fatalf("%s: no tensor %s", gradFixturePath, name)
		}
		d, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	m := loadTiny(t)
	D := m.Cfg.Dim
	tok := esm.NewTokenizer(esm.DefaultMaxResidues)

	// run computes every input's logit and gradients, the inputs packed
	// into one batch (packed) or each alone, and compares them.
	run := func(packed bool) {
		groups := [][]gradInput{}
		if packed {
			groups = append(groups, inputs)
		} else {
			for _, in := range inputs {
				groups = append(groups, []gradInput{in})
			}
		}
		for _, group := range groups {
			b := &esm.Batch{}
			for _, in := range group {
				toks, e, err := tok.Encode(nil, []byte(in.Sequence))
				if err != nil {
					t.Fatalf("%s: %v", in.Name, err)
				}
				if want, ok := f.Tensors[in.Name+".tokens"]; ok {
					w, err := want.Int32()
					if err != nil || !slices.Equal(toks, w) {
						t.Fatalf("%s: tokens %v, the fixture's %v (%v)", in.Name, toks, w, err)
					}
				}
				b.Append(toks, e.Masks)
			}
			for i, in := range group {
				mode := fmt.Sprintf("%s (alone)", in.Name)
				if packed {
					mode = fmt.Sprintf("%s (packed, sequence %d of %d)", in.Name, i, len(group))
				}
				p, err := m.Forward(b, nil)
				if err != nil {
					t.Fatal(err)
				}
				start, n := b.Seqlens.Start(i), b.Seqlens.Len(i)
				cost, err := p.Logit(start+in.Pos, in.Token)
				if err != nil {
					t.Fatal(err)
				}
				wrt := []*G.Node{p.Embeddings}
				for _, name := range params {
					w, err := p.Param(name)
					if err != nil {
						t.Fatal(err)
					}
					wrt = append(wrt, w)
				}
				res, err := p.Run(Request{Cost: cost, WRT: wrt})
				if err != nil {
					t.Fatal(err)
				}
				check := func(what string, got, want []float32) {
					t.Helper()
					if len(got) != len(want) {
						t.Errorf("%s %s: %d values, the fixture has %d", mode, what, len(got), len(want))
						return
					}
					e := relErr(got, want)
					if e > gradFixtureTol {
						t.Errorf("%s %s: max|graph - PyTorch|/max|PyTorch| = %.3g > %g", mode, what, e, gradFixtureTol)
					}
					t.Logf("%s %s: %.3g", mode, what, e)
				}
				check("logit", []float32{res.Cost}, tensor(in.Name+".logit"))
				check("d/d embeddings", res.Grads[0][start*D:(start+n)*D], tensor(in.Name+".grad.embeddings"))
				for k, name := range params {
					check("d/d "+name, res.Grads[1+k], tensor(in.Name+".grad."+name))
				}
			}
		}
	}
	run(false)
	run(true)
}
