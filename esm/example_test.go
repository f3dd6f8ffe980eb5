package esm_test

import (
	"context"
	"fmt"
	"log"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
)

// Contact maps of two proteins packed in one batch, on the CPU. The
// repository's tiny test model has random weights and a contact head; use a
// released checkpoint (e.g. facebook/esm2_t33_650M_UR50D, resolved to a
// path with weights.Resolve) for real maps.
func ExampleModel_Contacts() {
	be := cpu.New(cpu.Options{})
	defer be.Close()
	m, err := esm.LoadModel("../tests/testdata/models/tiny", be)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	tok := esm.NewTokenizer(esm.DefaultMaxResidues)
	var b esm.Batch
	b.Reset()
	for _, seq := range []string{"MKTAYIAKQRQISFVKSHFSRQ", "MLKKRSSVAELG"} {
		ids, enc, err := tok.Encode(nil, []byte(seq))
		if err != nil {
			log.Fatal(err)
		}
		b.Append(ids, enc.Masks)
	}
	maps, err := m.Contacts(context.Background(), &b)
	if err != nil {
		log.Fatal(err)
	}
	for s, c := range maps {
		L := isqrt(len(c)) // each map is L×L, L = the protein's residues
		fmt.Printf("protein %d: %dx%d map, p(1,3) = %.3f = p(3,1) = %.3f\n", s, L, L, c[0*L+2], c[2*L+0])
	}
	// Output:
	// protein 0: 22x22 map, p(1,3) = 0.528 = p(3,1) = 0.528
	// protein 1: 12x12 map, p(1,3) = 0.492 = p(3,1) = 0.492
}

func isqrt(n int) int {
	r := 0
	for (r+1)*(r+1) <= n {
		r++
	}
	return r
}
