package esm_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/internal/testutil"
)

// A Request may name layers from the end, as users do: -1 is L, -(L+1) is
// 0. The Output is keyed by the absolute index and holds exactly what the
// absolute request gives; out of range is an error naming the layer.
func TestRequestNegativeLayers(t *testing.T) {
	m := testutil.LoadTiny(t, cpu.Options{Threads: 1})
	L := m.Cfg.Layers
	tok := esm.NewTokenizer(esm.DefaultMaxResidues)
	toks, e, err := tok.Encode(nil, []byte("MKTAYIAKQRQISFVKSHFSRQ"))
	if err != nil {
		t.Fatal(err)
	}
	var b esm.Batch
	b.Append(toks, e.Masks)
	var abs, neg esm.Output
	if err := m.Forward(&b, esm.Request{Layers: []int{L, 1, 0}, Reprs: esm.Mean | esm.PerTok}, &abs); err != nil {
		t.Fatal(err)
	}
	layers := []int{-1, 1, -(L + 1)}
	if err := m.Forward(&b, esm.Request{Layers: layers, Reprs: esm.Mean | esm.PerTok}, &neg); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(layers, []int{-1, 1, -(L + 1)}) {
		t.Fatalf("Forward changed the caller's layer list to %v", layers)
	}
	for _, k := range []int{L, 1, 0} {
		if len(neg.Mean[k]) == 0 || !slices.Equal(neg.Mean[k], abs.Mean[k]) || !slices.Equal(neg.PerTok[k], abs.PerTok[k]) {
			t.Errorf("layer %d: the negative request's output differs from the absolute one's", k)
		}
	}
	if len(neg.Mean) != 3 {
		t.Errorf("output holds layers %v, want %d, 1 and 0", keys(neg.Mean), L)
	}
	for _, bad := range []int{L + 1, -(L + 2)} {
		err := m.Forward(&b, esm.Request{Layers: []int{bad}, Reprs: esm.Mean}, &neg)
		if err == nil || !strings.Contains(err.Error(), "layer "+strconv.Itoa(bad)) {
			t.Errorf("layer %d of %d: %v", bad, L, err)
		}
	}
}

func keys(m map[int][]float32) []int {
	var k []int
	for l := range m {
		k = append(k, l)
	}
	slices.Sort(k)
	return k
}
