package cpu

import (
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
)

// foreignTensor is an esm.Tensor of no backend.
type foreignTensor int

func (f foreignTensor) Len() int { return int(f) }

// A nil tensor, another backend's, or one too small for what an op reads
// gives an error naming the op, not a panic.
func TestNilForeignAndShortTensorsAreErrors(t *testing.T) {
	b := New(Options{Threads: 1})
	defer b.Close()
	var batch esm.Batch
	batch.Append([]int32{0, 5, 6, 7, 23, 2}, 0) // BOS, residues (23 the highest id), EOS
	if err := b.SetBatch(&batch); err != nil {
		t.Fatal(err)
	}
	const D = 4
	T := len(batch.Tokens)
	alloc := func(n int) esm.Tensor {
		x, err := b.Alloc(n, true)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	good := alloc(T * 3 * D)
	table := alloc(24 * D)
	check := func(what string, op func() error) {
		t.Helper()
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("%s panicked: %v", what, r)
			}
		}()
		if err := op(); err == nil || !strings.HasPrefix(err.Error(), "cpu: ") {
			t.Errorf("%s: %v, want a cpu error", what, err)
		}
	}
	for _, x := range []esm.Tensor{nil, foreignTensor(1 << 20)} {
		name := "nil"
		if x != nil {
			name = "foreign"
		}
		check(name+" embed", func() error { return b.Embed(x, table, D, -1) })
		check(name+" layernorm", func() error { return b.LayerNorm(good, good, x, good, D, 1e-5) })
		check(name+" linear", func() error { return b.Linear(good, good, good, x, D, D, false) })
		check(name+" rotary", func() error { return b.RotaryQK(x, 1, D, 1) })
		check(name+" attention", func() error { return b.Attention(x, good, 1, D) })
		check(name+" gelu", func() error { return b.GELU(x, 4) })
		check(name+" pool mean", func() error { return b.PoolMean(good, x, D) })
		check(name+" pool bos", func() error { return b.PoolBOS(good, x, D) })
		check(name+" read", func() error { return b.Read(make([]float32, 4), x) })
	}
	// Shapes the ops used to read past: a table without the batch's highest
	// token, pooled activations shorter than the batch.
	check("embed, short table", func() error { return b.Embed(good, alloc(23*D), D, -1) })
	check("pool mean, short x", func() error { return b.PoolMean(good, alloc(T*D-1), D) })
	check("pool bos, short x", func() error { return b.PoolBOS(good, alloc(T*D-1), D) })
	// And they work with what they need.
	if err := b.Embed(good, table, D, -1); err != nil {
		t.Errorf("embed: %v", err)
	}
	if err := b.PoolMean(good, good, D); err != nil {
		t.Errorf("pool mean: %v", err)
	}
}
