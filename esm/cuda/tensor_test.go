//go:build cgo

package cuda

import (
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/internal/cudadrv"
)

// A nil tensor or another backend's gives an error from the ops' checks,
// not a panic. No GPU is needed: every check runs before any device work,
// so a Backend with only a batch size set is enough.
func TestNilAndForeignTensorsAreErrors(t *testing.T) {
	c := cpu.New(cpu.Options{Threads: 1})
	defer c.Close()
	ft, err := c.Alloc(64, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []esm.Tensor{nil, ft} {
		if tens(x) != nil {
			t.Errorf("tens(%T) is not nil", x)
		}
		b := &Backend{T: 4, nseq: 1}
		ops := map[string]func() error{
			"embed":     func() error { return b.Embed(x, x, 4, -1) },
			"layernorm": func() error { return b.LayerNorm(x, x, x, x, 4, 1e-5) },
			"linear":    func() error { return b.Linear(x, x, x, x, 4, 4, false) },
			"rotary":    func() error { return b.RotaryQK(x, 1, 4, 1) },
			"attention": func() error { return b.Attention(x, x, 1, 4) },
			"gelu":      func() error { return b.GELU(x, 4) },
			"pool mean": func() error { return b.PoolMean(x, x, 4) },
			"pool bos":  func() error { return b.PoolBOS(x, x, 4) },
			"read":      func() error { return b.ReadAsync(make([]float32, 4), x) },
		}
		for name, op := range ops {
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Errorf("%s with a %T tensor panicked: %v", name, x, r)
					}
				}()
				if err := op(); err == nil || !strings.HasPrefix(err.Error(), "cuda: ") {
					t.Errorf("%s with a %T tensor: %v, want a cuda error", name, x, err)
				}
			}()
		}
		if _, err := wideOf("linear bias", tens(x), 4); err == nil || !strings.Contains(err.Error(), "foreign") {
			t.Errorf("wideOf(%T): %v, want an error naming a foreign tensor", x, err)
		}
	}
}

// Embed checks that the table holds a row for the batch's highest token
// (the kernel indexes it with the token ids), before any device work.
func TestEmbedShortTable(t *testing.T) {
	b := &Backend{T: 6, nseq: 1, topToken: 23}
	x := &tensor{buf: &cudadrv.Buffer{}, wide: &cudadrv.Buffer{}, n: 6 * 4, dt: cudadrv.F32}
	table := &tensor{buf: &cudadrv.Buffer{}, wide: &cudadrv.Buffer{}, n: 23 * 4, dt: cudadrv.F32}
	err := b.Embed(x, table, 4, -1)
	if err == nil || !strings.Contains(err.Error(), "embed table") || !strings.Contains(err.Error(), "need 96") {
		t.Errorf("a table of 23 rows for token 23: %v, want an error naming the table and the 96 elements needed", err)
	}
}
