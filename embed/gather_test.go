package embed

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// gatherResidues equals the residue rows of each sequence appended one by
// one, for any number of CPUs, sequences without residues, pieces that end
// inside a sequence, and a destination that already holds rows.
func TestGatherResidues(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, procs := range []int{1, 2, 7} {
		old := runtime.GOMAXPROCS(procs)
		for trial := range 20 {
			D := []int{1, 3, 320}[trial%3]
			j := &job{}
			j.batch.Reset()
			nseq := 1 + r.IntN(40)
			for range nseq {
				n := 2 + r.IntN(3000)
				if r.IntN(5) == 0 {
					n = 2 // no residues
				}
				j.batch.Append(make([]int32, n), 0)
				j.recs = append(j.recs, recMeta{})
			}
			x := make([]float32, len(j.batch.Tokens)*D)
			for i := range x {
				x[i] = float32(i)
			}
			prefix := []float32{-1, -2}
			var want []float32
			want = append(want, prefix...)
			for s := range nseq {
				st, n := j.batch.Seqlens.Start(s), j.batch.Seqlens.Len(s)
				want = append(want, x[(st+1)*D:(st+n-1)*D]...)
			}
			got := gatherResidues(slices.Clone(prefix), x, j, D)
			if !slices.Equal(got, want) {
				t.Fatalf("procs %d trial %d (D %d, %d sequences): gathered rows differ", procs, trial, D, nseq)
			}
		}
		runtime.GOMAXPROCS(old)
	}
}
