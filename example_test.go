package esm2go_test

import (
	"context"
	"fmt"
	"log"
	"slices"

	"github.com/esm2go/esm2go"
)

// The examples load the repository's tiny test model (3 layers, D=64); use
// an id such as "facebook/esm2_t33_650M_UR50D" for real work (it is
// downloaded into the Hugging Face cache on first use).
const model = "tests/testdata/models/tiny"

// Mean embeddings of the last layer, one vector per sequence.
func Example() {
	ctx := context.Background()
	m, err := esm2go.Load(ctx, model, esm2go.Options{Device: "cpu"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	embs, err := m.Embed(ctx, []esm2go.Sequence{
		{ID: "p1", Residues: "MKTAYIAKQRQISFVKSHFSRQ"},
		{ID: "p2", Residues: "MLKKRSSVAELG"},
	}, esm2go.EmbedOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range embs {
		v := e.Mean(-1) // -1: the last layer
		fmt.Printf("%s: %d residues, mean of layer %d: %d values, v[0] = %.2f\n", e.ID, e.Length, m.Info().Layers, len(v), v[0])
	}
	// Output:
	// p1: 22 residues, mean of layer 3: 64 values, v[0] = 0.08
	// p2: 12 residues, mean of layer 3: 64 values, v[0] = -0.12
}

// Per-residue embeddings of two layers, and the BOS token's.
func ExampleModel_Embed() {
	ctx := context.Background()
	m, err := esm2go.Load(ctx, model, esm2go.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	embs, err := m.Embed(ctx, esm2go.Sequences("MKTAYIAKQR"), esm2go.EmbedOptions{
		Layers:  []int{1, -1},
		Include: esm2go.PerTok | esm2go.BOS,
	})
	if err != nil {
		log.Fatal(err)
	}
	e := embs[0]
	for _, layer := range e.Layers() {
		x := e.PerResidue(layer) // (L, D)
		fmt.Printf("layer %d: per-residue (%d, %d), residue 0 starts %.2f; BOS (%d)\n", layer, x.Rows, x.Cols, x.Row(0)[0], len(e.BOS(layer)))
	}
	// Output:
	// layer 1: per-residue (10, 64), residue 0 starts -1.05; BOS (64)
	// layer 3: per-residue (10, 64), residue 0 starts -0.17; BOS (64)
}

// A stream of any length, embedded with bounded memory.
func ExampleModel_EmbedSeq() {
	ctx := context.Background()
	m, err := esm2go.Load(ctx, model, esm2go.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	// Any iter.Seq[Sequence] works: a FASTA reader, a database cursor, ...
	seqs := slices.Values(esm2go.Sequences("MKTAYIAKQR", "MLKKR", "GSHMSEQ"))
	for e, err := range m.EmbedSeq(ctx, seqs, esm2go.EmbedOptions{}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Index, e.ID, e.Length, len(e.Mean(-1)))
	}
	// Output:
	// 0 0 10 64
	// 1 1 5 64
	// 2 2 7 64
}

// Masked-LM logits: the most likely residue at a masked position.
func ExampleModel_Logits() {
	ctx := context.Background()
	m, err := esm2go.Load(ctx, model, esm2go.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	lg, err := m.Logits(ctx, esm2go.Sequences("MKT<mask>YIAK"), esm2go.LogitsOptions{})
	if err != nil {
		log.Fatal(err)
	}
	res := lg[0].Residues() // (L, 33): row i is residue i, column j token j
	row := res.Row(3)
	best := 0
	for j, v := range row {
		if v > row[best] {
			best = j
		}
	}
	fmt.Printf("logits (%d, %d); residue 3 (%s) -> %s\n", res.Rows, res.Cols,
		esm2go.Alphabet()[lg[0].Tokens[1+3]], esm2go.Alphabet()[best])
	// Output:
	// logits (8, 33); residue 3 (<mask>) -> F
}
