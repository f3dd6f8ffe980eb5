package score_test

import (
	"context"
	"fmt"
	"log"
	"path/filepath"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/score"
)

// Scoring two mutants of one wild type with the repository's tiny test
// model (random weights: the numbers mean nothing, the calls are the
// point). A real run loads e.g. facebook/esm2_t33_650M_UR50D.
func Example() {
	be := cpu.New(cpu.Options{})
	defer be.Close()
	m, err := esm.LoadModel(filepath.Join("..", "tests", "testdata", "models", "tiny"), be)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	sc, err := score.New(m, score.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer sc.Close()

	wt := "MPADAREYLESKHATRRFDRPAEVAGVVAF"
	var vars []score.Variant
	for _, s := range []string{"E10K", "A5G:R6K"} {
		mut, err := score.ParseMutant(s, 1) // positions count from 1
		if err != nil {
			log.Fatal(err)
		}
		vars = append(vars, score.Variant{WildType: 0, Mutant: mut})
	}
	res, err := sc.Score(context.Background(), []string{wt}, vars, score.MaskedMarginals|score.PLL)
	if err != nil {
		log.Fatal(err)
	}
	for i, r := range res {
		fmt.Printf("%s: masked-marginals %.1f, pll %.1f\n", vars[i].Mutant.Format(1), r.MaskedMarginals, r.PLL)
	}
	// Output:
	// E10K: masked-marginals -17.1, pll -13.1
	// A5G:R6K: masked-marginals -6.6, pll -20.3
}
