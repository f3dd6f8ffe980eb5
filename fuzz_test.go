package esm2go

import (
	"strings"
	"testing"
)

// FuzzEmbed feeds arbitrary residue strings to Embed (through the
// tokenizer policy, packing and the per-record slicing): a call either
// fails with an error naming the sequence or returns one well-formed
// embedding per input with finite values.
func FuzzEmbed(f *testing.F) {
	for _, s := range []string{"MKTAYIAKQR", "m", "MK*", "MK<mask>T", "<mask>", "MK<unk", "J", "", "MK1", "ACDEFGHIKLMNPQRSTVWYXBUZO.-", "MKT\x00", "é", strings.Repeat("G", 40)} {
		f.Add(s, "MLKKR", 0)
		f.Add(s, s, 3)
	}
	m, err := Load(f.Context(), tinyModel, Options{Threads: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	f.Fuzz(func(t *testing.T, a, b string, maxRes int) {
		if len(a)+len(b) > 4096 { // keep an iteration fast; longer inputs are not a different path
			t.Skip()
		}
		seqs := []Sequence{{ID: "a", Residues: a}, {ID: "b", Residues: b}}
		embs, err := m.Embed(t.Context(), seqs, EmbedOptions{Layers: []int{0, -1}, Include: Mean | BOS | PerTok, MaxResidues: maxRes % 50})
		if err != nil {
			if !strings.Contains(err.Error(), `(id "a")`) && !strings.Contains(err.Error(), `(id "b")`) {
				t.Fatalf("error names no sequence: %v", err)
			}
			return
		}
		if len(embs) != 2 {
			t.Fatalf("%d embeddings for 2 sequences", len(embs))
		}
		for i, e := range embs {
			if e.ID != seqs[i].ID || e.Index != i || e.Length < 1 || e.Length > len(seqs[i].Residues) {
				t.Fatalf("embedding %d: id %q index %d length %d for %d bytes", i, e.ID, e.Index, e.Length, len(seqs[i].Residues))
			}
			if lim := maxRes % 50; lim > 0 && e.Length > lim {
				t.Fatalf("embedding %d: length %d over MaxResidues %d", i, e.Length, lim)
			}
			for _, l := range []int{0, -1} {
				x := e.PerResidue(l)
				if x.Rows != e.Length || len(x.Data) != e.Length*e.Dim || len(e.Mean(l)) != e.Dim || len(e.BOS(l)) != e.Dim {
					t.Fatalf("embedding %d layer %d: shapes (%d, %d)/%d, mean %d, bos %d", i, l, x.Rows, x.Cols, len(x.Data), len(e.Mean(l)), len(e.BOS(l)))
				}
				for _, v := range append(append([]float32(nil), x.Data...), e.Mean(l)...) {
					if v != v || v > 1e30 || v < -1e30 {
						t.Fatalf("embedding %d layer %d: non-finite value %g", i, l, v)
					}
				}
			}
		}
	})
}
