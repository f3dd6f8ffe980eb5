package embed

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/output"
)

// FuzzWindows: for any valid policy and record length, the windows cover
// the record, are each Size residues (one window of n when n <= Size),
// increase, share at least Overlap residues with the one before, and are as
// few as that allows; and the assembler, fed the windows in any order,
// returns the documented per-residue average, mean and <cls> average.
func FuzzWindows(f *testing.F) {
	f.Add(uint16(1022), uint16(256), uint32(1500), uint64(1))
	f.Add(uint16(10), uint16(0), uint32(10), uint64(2))
	f.Add(uint16(10), uint16(9), uint32(11), uint64(3))
	f.Add(uint16(1), uint16(0), uint32(7), uint64(4))
	f.Add(uint16(7), uint16(6), uint32(100), uint64(5))
	f.Add(uint16(5), uint16(7), uint32(3), uint64(6)) // invalid overlap
	f.Fuzz(func(t *testing.T, size, overlap uint16, n32 uint32, seed uint64) {
		w := Windowing{Size: int(size), Overlap: int(overlap)}
		n := int(n32%(1<<17)) + 1
		if err := w.Validate(); err != nil {
			if w.Size > 0 && w.Overlap < w.Size {
				t.Fatalf("%+v refused: %v", w, err)
			}
			return
		}
		if !w.On() {
			return
		}
		k := w.Count(n)
		if k < 1 || k > n {
			t.Fatalf("%+v n=%d: %d windows", w, n, k)
		}
		prevS, prevE := -1, 0
		for i := range k {
			s, e := w.Span(i, k, n)
			want := min(w.Size, n)
			if e-s != want || s <= prevS || s < 0 || e > n || (i > 0 && (prevE-s < w.Overlap || s > prevE)) {
				t.Fatalf("%+v n=%d: window %d/%d [%d,%d) after [%d,%d)", w, n, i, k, s, e, prevS, prevE)
			}
			if i == 0 && s != 0 {
				t.Fatalf("%+v n=%d: first window starts at %d", w, n, s)
			}
			prevS, prevE = s, e
		}
		if prevE != n {
			t.Fatalf("%+v n=%d: windows end at %d", w, n, prevE)
		}
		if k > 1 && (k-2)*(w.Size-w.Overlap)+w.Size >= n {
			t.Fatalf("%+v n=%d: %d windows where %d would do", w, n, k, k-1)
		}
		if k > 64 || n > 4096 {
			return // the assembler check below is for small records
		}
		checkAssembler(t, w, n, k, seed)
	})
}

// checkAssembler feeds the k windows of a record of n residues, with random
// values, to an assembler in a random order and compares its row with the
// rule computed directly.
func checkAssembler(t *testing.T, w Windowing, n, k int, seed uint64) {
	const D = 3
	cols := []column{
		{output.Column{Name: "mean_1", Kind: output.Vector, Dim: D}, 1, esm.Mean},
		{output.Column{Name: "bos_1", Kind: output.Vector, Dim: D}, 1, esm.BOS},
		{output.Column{Name: "per_tok_1", Kind: output.Matrix, Dim: D}, 1, esm.PerTok},
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	type win struct {
		rec  recMeta
		vals [][]float32
	}
	wins := make([]win, k)
	sum, cnt := make([]float64, n*D), make([]int, n)
	bos := make([]float64, D)
	for i := range k {
		s, e := w.Span(i, k, n)
		rows := make([]float32, (e-s)*D)
		for j := range rows {
			rows[j] = rng.Float32()*2 - 1
		}
		b := []float32{rng.Float32(), rng.Float32(), rng.Float32()}
		wins[i] = win{recMeta{index: 9, id: "r", length: e - s, part: i, parts: k, start: s, total: n},
			[][]float32{rows, b, rows}}
		for r := s; r < e; r++ {
			for d := range D {
				sum[r*D+d] += float64(rows[(r-s)*D+d])
			}
			cnt[r]++
		}
		for d := range D {
			bos[d] += float64(b[d])
		}
	}
	wantTok := make([]float32, n*D)
	msum := make([]float64, D)
	for r := range n {
		for d := range D {
			wantTok[r*D+d] = float32(sum[r*D+d] / float64(cnt[r]))
			msum[d] += float64(wantTok[r*D+d])
		}
	}
	wantMean, wantBOS := make([]float32, D), make([]float32, D)
	for d := range D {
		wantMean[d], wantBOS[d] = float32(msum[d]/float64(n)), float32(bos[d]/float64(k))
	}
	if k == 1 {
		return // a record in one window never reaches the assembler
	}
	a := newAssembler(cols)
	var row *output.Row
	for j, i := range rng.Perm(k) {
		got, err := a.add(&wins[i].rec, wins[i].vals)
		if err != nil {
			t.Fatal(err)
		}
		if (got != nil) != (j == k-1) {
			t.Fatalf("window %d (%d-th in): row %v", i, j, got != nil)
		}
		row = got
	}
	if a.pending() != 0 || row.Length != n || row.Index != 9 || row.Truncated {
		t.Fatalf("row %+v, %d pending", row, a.pending())
	}
	// The sums above run in window order, as the assembler's: bit-identical.
	if !reflect.DeepEqual(row.Values[0], wantMean) || !reflect.DeepEqual(row.Values[1], wantBOS) || !reflect.DeepEqual(row.Values[2], wantTok) {
		t.Fatalf("%+v n=%d: row differs from the rule", w, n)
	}
	// A window received twice is an internal error, not a wrong row.
	a = newAssembler(cols)
	if _, err := a.add(&wins[0].rec, wins[0].vals); err != nil {
		t.Fatal(err)
	}
	if _, err := a.add(&wins[0].rec, wins[0].vals); err == nil {
		t.Fatal("a window received twice was accepted")
	}
}
