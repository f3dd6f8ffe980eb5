package output

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// BenchmarkPartsPerTokDType is BenchmarkPartsPerTok in every dtype: the
// resumable path's speed per stored dtype, in records/s and MB/s of
// float32 payload (the figure to compare across dtypes: the same
// embeddings per second).
func BenchmarkPartsPerTokDType(b *testing.B) {
	const L, D, every = 300, 1280, 50
	n := *perTokRecords
	s := Schema{Columns: []Column{{Name: "per_tok_33", Kind: Matrix, Dim: D}}}
	rng := rand.New(rand.NewPCG(1, 2))
	pool := make([][]float32, min(n, 64))
	for p := range pool {
		pool[p] = make([]float32, L*D)
		for i := range pool[p] {
			pool[p][i] = float32(rng.NormFloat64())
		}
	}
	for _, f := range formats {
		for _, d := range dtypes {
			b.Run(string(f)+"/"+string(d), func(b *testing.B) {
				dir := b.TempDir()
				s := s
				s.DType = d
				cpu0 := cpuSeconds()
				for b.Loop() {
					p, err := OpenParts(filepath.Join(dir, "out"), f, s, PartsOptions{Overwrite: true, Identity: map[string]string{"k": "v"}})
					if err != nil {
						b.Fatal(err)
					}
					r := Row{Length: L, Values: [][]float32{nil}}
					for i := range n {
						r.Values[0], r.ID, r.Index = pool[i%len(pool)], fmt.Sprintf("seq%d", i), int64(i)
						if err := p.Write(&r); err != nil {
							b.Fatal(err)
						}
						if (i+1)%every == 0 {
							if err := p.Commit(int64(i+1), int64(i+1)); err != nil {
								b.Fatal(err)
							}
						}
					}
					if err := p.Finish(int64(n), nil); err != nil {
						b.Fatal(err)
					}
				}
				payload := float64(4 * L * D * n)
				reportCPU(b, cpu0, payload)
				b.SetBytes(int64(payload))
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}
