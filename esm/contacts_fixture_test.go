package esm_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/weights"
)

// contactFixture is written by tests/gen_contact_fixtures.py (HF
// EsmModel.predict_contacts on the tiny model, fp32, eager attention).
const (
	contactFixture        = "../tests/testdata/fixtures/contacts_tiny.safetensors"
	contactFixtureVersion = "1"
)

// contactFixtureTol bounds max|Go − HF| over the fixture's contacts. How
// chosen: both are fp32 implementations; HF's own error against float64 is
// at most 1.8e-7 on these inputs (metadata fp64_max_abs_err), this
// package's at most 1.3e-7 (TestContactsMatchFloat64Reference). Measured
// Go − HF: 0 (L=1), 1.2e-7 (L=80), 6e-8 (L=602). 2e-6 leaves a 10x margin
// over their sum, while a wrong step moves contacts by 1e-4 or more
// (TestContactsReferenceIsSensitive).
const contactFixtureTol = 2e-6

func TestContactsMatchHFFixture(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(contactFixture); errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s not generated yet: run tests/gen_contact_fixtures.py --out tests/testdata/fixtures on a host with torch and transformers", contactFixture)
	}
	f, err := weights.OpenSafetensors(contactFixture)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v := f.Metadata["esm2go_fixture_version"]; v != contactFixtureVersion {
		t.Fatalf("%s: fixture version %q, this test reads %q: regenerate with tests/gen_contact_fixtures.py", contactFixture, v, contactFixtureVersion)
	}
	var inputs []struct {
		Name     string `json:"name"`
		Sequence string `json:"sequence"`
	}
	if err := json.Unmarshal([]byte(f.Metadata["inputs"]), &inputs); err != nil || len(inputs) == 0 {
		t.Fatalf("%s: inputs metadata: %v (%d inputs)", contactFixture, err, len(inputs))
	}
	t.Logf("fixture: torch %s, transformers %s, HF fp32 vs fp64 %s", f.Metadata["torch"], f.Metadata["transformers"], f.Metadata["fp64_max_abs_err"])
	get := func(name string) *weights.Tensor {
		tn, ok := f.Tensors[name]
		if !ok {
			t.Fatalf("%s: no tensor %s", contactFixture, name)
		}
		return tn
	}
	m := loadCPU(t, tinyModel, cpu.Options{})
	tok := esm.NewTokenizer(esm.DefaultMaxResidues)
	for _, in := range inputs {
		tokens, err := get(in.Name + ".tokens").Int32()
		if err != nil {
			t.Fatal(err)
		}
		ids, e, err := tok.Encode(nil, []byte(in.Sequence))
		if err != nil {
			t.Fatalf("%s: %v", in.Name, err)
		}
		if !slices.Equal(ids, tokens) {
			t.Fatalf("%s: tokens differ from the fixture's", in.Name)
		}
		rows, err := get(in.Name + ".rows").Int32()
		if err != nil {
			t.Fatal(err)
		}
		want, err := get(in.Name + ".contacts").Float32()
		if err != nil {
			t.Fatal(err)
		}
		var b esm.Batch
		b.Reset()
		b.Append(ids, e.Masks)
		maps, err := m.Contacts(context.Background(), &b)
		if err != nil {
			t.Fatal(err)
		}
		L := len(ids) - 2
		if len(want) != len(rows)*L {
			t.Fatalf("%s: fixture has %d values for %d rows of %d", in.Name, len(want), len(rows), L)
		}
		var worst float64
		for k, r := range rows {
			for j := 0; j < L; j++ {
				if d := math.Abs(float64(maps[0][int(r)*L+j]) - float64(want[k*L+j])); !(d <= worst) {
					worst = d
				}
			}
		}
		if worst > contactFixtureTol {
			t.Errorf("%s (L=%d): max|Go-HF| = %.3g > %g", in.Name, L, worst, contactFixtureTol)
		} else {
			t.Logf("%s (L=%d): max|Go-HF| = %.3g", in.Name, L, worst)
		}
	}
}
