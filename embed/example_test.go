package embed_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/esm2go/esm2go/embed"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/output"
)

// A 2,500-residue protein embedded whole in overlapping windows of 1,000
// residues (300 shared) instead of being truncated, FASTA in, parquet out,
// with the repository's tiny test model on the CPU.
func ExampleRun_windows() {
	dir, err := os.MkdirTemp("", "embed-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	fasta := filepath.Join(dir, "long.fasta")
	seq := strings.Repeat("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", 80)[:2500]
	if err := os.WriteFile(fasta, []byte(">long\n"+seq+"\n>short\nMLKKRSSVAELG\n"), 0o644); err != nil {
		log.Fatal(err)
	}

	be := cpu.New(cpu.Options{})
	defer be.Close()
	m, err := esm.LoadModel("../tests/testdata/models/tiny", be)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	out := filepath.Join(dir, "emb.parquet")
	sum, err := embed.Run(context.Background(), m, embed.Options{
		Inputs:    []string{fasta},
		Out:       out,
		Include:   esm.Mean | esm.PerTok,
		Windowing: embed.Windowing{Size: 1000, Overlap: 300},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d records, %d embedded in windows\n", sum.Embedded, sum.Windowed)

	r, err := output.Open(out)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	var row output.Row
	for r.Next(&row) == nil {
		fmt.Printf("%s: %d residues, truncated %v, %d per-residue values\n", row.ID, row.Length, row.Truncated, len(row.Values[1]))
	}
	// Output:
	// 2 records, 1 embedded in windows
	// long: 2500 residues, truncated false, 160000 per-residue values
	// short: 12 residues, truncated false, 768 per-residue values
}
