package embed

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
	"github.com/esm2go/esm2go/output"
)

// TestNonFiniteEmbeddingEndsTheRun: a NaN in the last layer's FFN output
// bias (given straight to the model, as a research caller could, past the
// checkpoint readers' load-time check) makes every embedding NaN; the run
// must fail naming the first record and column, never write the row, and
// publish nothing.
func TestNonFiniteEmbeddingEndsTheRun(t *testing.T) {
	t.Parallel()
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src := esmtest.Random(cfg, 7)
	src["encoder.layer.2.output.dense.bias"][5] = float32(math.NaN())
	be := cpu.New(cpu.Options{})
	defer be.Close()
	m, err := esm.NewModel(cfg, src, be)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := filepath.Join(t.TempDir(), "emb.parquet")
	_, err = Run(context.Background(), m, Options{Inputs: []string{someFASTA}, Out: out})
	if !errors.Is(err, output.ErrNonFinite) {
		t.Fatalf("error %v, want output.ErrNonFinite", err)
	}
	if !strings.Contains(err.Error(), "record 0 ") || !strings.Contains(err.Error(), "column mean_3") {
		t.Errorf("error does not name the record and layer: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("an output was published: %v", err)
	}
}
