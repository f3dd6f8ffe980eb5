package graph_test

import (
	"fmt"
	"log"
	"path/filepath"
	"slices"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/graph"
)

// Which residues does the model look at to fill in a masked residue? The
// saliency of the <mask> logit of the true residue, per input token. (The
// tiny test model has random weights: the answer means nothing, but it is
// decided by margins of 1% or more, far above rounding.)
func ExampleModel_Saliency() {
	m, err := graph.Load(filepath.Join("..", "tests", "testdata", "models", "tiny"))
	if err != nil {
		log.Fatal(err)
	}
	// residue 9 (a Q in MKTAYIAKQRQISFVKSHFSRQ) masked; 16 is Q's token id
	a, err := m.Saliency(graph.Target{Seq: "MKTAYIAK<mask>RQISFVKSHFSRQ", Pos: 9, Token: 16})
	if err != nil {
		log.Fatal(err)
	}
	T := len(a.Tokens)
	fmt.Printf("%d tokens, gradient (%d, %d)\n", T, T, len(a.Grad)/T)
	fmt.Printf("saliency of the <mask> row itself: %g\n", a.Scores[9])
	best := slices.Index(a.Scores, slices.Max(a.Scores))
	fmt.Printf("most salient token: %d (%s)\n", best, esm.Tokens[a.Tokens[best]])
	residues := a.Scores[1 : T-1] // without <cls> and <eos>
	r := 1 + slices.Index(residues, slices.Max(residues))
	fmt.Printf("most salient residue: %d (%s)\n", r, esm.Tokens[a.Tokens[r]])
	// Output:
	// 24 tokens, gradient (24, 64)
	// saliency of the <mask> row itself: 0
	// most salient token: 0 (<cls>)
	// most salient residue: 10 (R)
}
