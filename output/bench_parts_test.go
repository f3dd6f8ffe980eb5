package output

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// BenchmarkPartsPerTok is BenchmarkWritePerTok through the resumable path
// esm2go embed takes (OpenParts, Write, a Commit every 50 records, Finish):
// chunks committed with fsync, the manifest, and the final output made
// from them. Against the disk row of BenchmarkWritePerTok it says how much
// the resumable output costs beyond writing the bytes once. Float32 only.
func BenchmarkPartsPerTok(b *testing.B) {
	const L, D, every = 300, 1280, 50
	n := *perTokRecords
	col := Column{Name: "per_tok_33", Kind: Matrix, Dim: D}
	s := Schema{Columns: []Column{col}}
	rng := rand.New(rand.NewPCG(1, 2))
	pool := make([][]float32, min(n, 64)) // 98 MB of distinct rows
	for p := range pool {
		pool[p] = make([]float32, L*D)
		for i := range pool[p] {
			pool[p][i] = float32(rng.NormFloat64())
		}
	}
	b.Run("disk", func(b *testing.B) { benchDisk(b, int64(4*L*D*n)) })
	for _, f := range formats {
		b.Run(string(f), func(b *testing.B) {
			dir := b.TempDir()
			cpu0 := cpuSeconds()
			for b.Loop() {
				path := filepath.Join(dir, "out")
				p, err := OpenParts(path, f, s, PartsOptions{Overwrite: true, Identity: map[string]string{"k": "v"}})
				if err != nil {
					b.Fatal(err)
				}
				r := Row{Length: L, Values: [][]float32{nil}}
				for i := range n {
					r.Values[0] = pool[i%len(pool)]
					r.ID = fmt.Sprintf("seq%d", i)
					r.Index = int64(i)
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
