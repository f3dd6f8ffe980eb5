package output

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/parquet-go/parquet-go/encoding/rle"
)

// encodeLevelRuns gives parquet-go's EncodeLevels bytes for the same levels
// written out: the shapes of embedding pages (runs of one level thousands
// long, single levels between them, at any offset from a word boundary),
// random short runs, and lengths that are not multiples of 8.
func TestEncodeLevelRunsMatchesParquet(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	var scratch []uint64
	check := func(name string, runs *levelRuns, w uint) {
		t.Helper()
		var flat []byte
		for _, run := range runs.runs {
			flat = append(flat, bytes.Repeat([]byte{run.level}, run.count)...)
		}
		enc := rle.Encoding{BitWidth: int(w)}
		want, err := enc.EncodeLevels(nil, flat)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		got, scratch = encodeLevelRuns(nil, runs, w, scratch)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s (bit width %d, %d levels in %d runs): encoded %x, parquet-go %x", name, w, runs.n, len(runs.runs), got, want)
		}
	}
	// Pages of matrix records (rep 0, then 1 at each residue, 2 within)
	// and vector records, with the record widths of real models and odd ones.
	for _, d := range []int{1, 3, 7, 8, 9, 16, 320, 1280} {
		for _, lens := range [][]int{{1}, {2}, {5, 1, 3}, {300}, {17, 0, 4}} {
			var rep, def levelRuns
			for _, l := range lens {
				if l == 0 { // a null record
					rep.add(0, 1)
					def.add(0, 1)
					continue
				}
				rep.add(0, 1)
				rep.add(2, d-1)
				for range l - 1 {
					rep.add(1, 1)
					rep.add(2, d-1)
				}
				def.add(2, l*d)
			}
			check("matrix rep", &rep, 2)
			check("matrix def", &def, 2)
			var vrep levelRuns
			for _, l := range lens {
				vrep.add(0, 1)
				vrep.add(1, l*d-1)
			}
			check("vector rep", &vrep, 1)
		}
	}
	// Random runs, short and long, every bit width.
	for trial := range 3000 {
		w := uint(1 + trial%8)
		var runs levelRuns
		for range 1 + r.IntN(12) {
			count := 1 + r.IntN(5)
			if r.IntN(3) == 0 {
				count = 1 + r.IntN(40)
			}
			runs.add(byte(r.IntN(1<<w)), count)
		}
		check("random", &runs, w)
	}
}

// BenchmarkPageLevels: the levels of a page holding one per-token record of
// 300 residues × 1280 (a 650M page), written out a byte per value and
// encoded by parquet-go, against encodeLevelRuns.
func BenchmarkPageLevels(b *testing.B) {
	const L, D = 300, 1280
	b.Run("written-out", func(b *testing.B) {
		rep, def := make([]byte, L*D), make([]byte, L*D)
		var dst []byte
		enc := rle.Encoding{BitWidth: 2}
		b.SetBytes(L * D)
		for b.Loop() {
			for i := range rep {
				rep[i], def[i] = 2, 2
			}
			for j := 0; j < L*D; j += D {
				rep[j] = 1
			}
			rep[0] = 0
			dst, _ = enc.EncodeLevels(dst[:0], rep)
			dst, _ = enc.EncodeLevels(dst[:0], def)
		}
	})
	b.Run("runs", func(b *testing.B) {
		var rep, def levelRuns
		var dst []byte
		var scratch []uint64
		b.SetBytes(L * D)
		for b.Loop() {
			rep.reset()
			def.reset()
			def.add(2, L*D)
			rep.add(0, 1)
			rep.add(2, D-1)
			for range L - 1 {
				rep.add(1, 1)
				rep.add(2, D-1)
			}
			dst, scratch = encodeLevelRuns(dst[:0], &rep, 2, scratch)
			dst, scratch = encodeLevelRuns(dst[:0], &def, 2, scratch)
		}
	})
}
