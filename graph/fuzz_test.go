package graph

import (
	"math"
	"testing"
)

// FuzzSaliency: any sequence, position and token id gives an error or a
// well-formed, finite attribution; never a panic.
func FuzzSaliency(f *testing.F) {
	m := loadTiny(f)
	f.Add("MKTAYIAKQR", 3, int32(15))
	f.Add(testSeqs[1], 2, int32(15))
	f.Add("<mask>", 1, int32(32))
	f.Add("<mask><mask><unk>", 0, int32(0))
	f.Add("M", 2, int32(2))
	f.Add("mktJ*", 4, int32(4))
	f.Add("", 0, int32(4))
	f.Add("MK<mas", 1, int32(4))
	f.Add("MK", -1, int32(4))
	f.Add("MK", 1, int32(33))
	f.Add("M\x00K", 1, int32(4))
	f.Fuzz(func(t *testing.T, seq string, pos int, tok int32) {
		if len(seq) > 64 {
			seq = seq[:64] // keep an iteration at a few milliseconds
		}
		a, err := m.Saliency(Target{Seq: seq, Pos: pos, Token: tok})
		if err != nil {
			return
		}
		T, D := len(a.Tokens), m.Cfg.Dim
		if T < 3 || T > len(seq)+2 || pos < 0 || pos >= T || tok < 0 || int(tok) >= m.Cfg.Vocab {
			t.Fatalf("accepted %q pos %d tok %d: %d tokens", seq, pos, tok, T)
		}
		if len(a.Grad) != T*D || len(a.Scores) != T {
			t.Fatalf("%q: %d tokens, grad %d, scores %d", seq, T, len(a.Grad), len(a.Scores))
		}
		if math.IsNaN(float64(a.Value)) || math.IsInf(float64(a.Value), 0) {
			t.Fatalf("%q: logit %g", seq, a.Value)
		}
		for i, v := range a.Grad {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("%q: gradient element %d is %g", seq, i, v)
			}
		}
	})
}
