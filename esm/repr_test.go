package esm

import "testing"

func TestRepr(t *testing.T) {
	r, err := ParseRepr([]string{"PER-TOK, mean", "bos", "mean"})
	if err != nil || r != Mean|BOS|PerTok || r.String() != "mean,bos,per_tok" || len(r.Kinds()) != 3 {
		t.Fatalf("%v %v %v", r, err, r.Kinds())
	}
	if !r.Has(BOS) || (Mean).Has(BOS) || r.Has(0) {
		t.Error("Has")
	}
	for _, bad := range [][]string{nil, {""}, {"mean,"}, {"logits"}} {
		if _, err := ParseRepr(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if Repr(0).String() != "none" || PerTok.String() != "per_tok" {
		t.Error("String")
	}
}
