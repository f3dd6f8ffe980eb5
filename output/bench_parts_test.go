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
	n := *perTokRecords
	pool := perTokPool(n)
	b.Run("disk", func(b *testing.B) { benchDisk(b, int64(4*perTokL*perTokD*n)) })
	for _, f := range formats {
		b.Run(string(f), func(b *testing.B) { benchParts(b, f, "", pool, n) })
	}
}

// BenchmarkPartsPerTokDType is BenchmarkPartsPerTok in every dtype: the
// resumable path's speed per stored dtype, in records/s and MB/s of
// float32 payload (the figure to compare across dtypes: the same
// embeddings per second).
func BenchmarkPartsPerTokDType(b *testing.B) {
	n := *perTokRecords
	pool := perTokPool(n)
	for _, f := range formats {
		for _, d := range dtypes {
			b.Run(string(f)+"/"+string(d), func(b *testing.B) { benchParts(b, f, d, pool, n) })
		}
	}
}

// The per-token benchmarks' records: perTokL residues of the 650M width.
const perTokL, perTokD = 300, 1280

// perTokPool returns up to 64 distinct records' values (98 MB), which
// the benchmarks' n records cycle through.
func perTokPool(n int) [][]float32 {
	rng := rand.New(rand.NewPCG(1, 2))
	pool := make([][]float32, min(n, 64))
	for p := range pool {
		pool[p] = make([]float32, perTokL*perTokD)
		for i := range pool[p] {
			pool[p][i] = float32(rng.NormFloat64())
		}
	}
	return pool
}

// benchParts writes n per-token records through OpenParts in format f and
// dtype d, a Commit every 50 records, then Finish, and reports records/s,
// MB/s and CPU time per MB of float32 payload.
func benchParts(b *testing.B, f Format, d DType, pool [][]float32, n int) {
	const every = 50
	s := Schema{Columns: []Column{{Name: "per_tok_33", Kind: Matrix, Dim: perTokD}}, DType: d}
	dir := b.TempDir()
	cpu0 := cpuSeconds()
	for b.Loop() {
		p, err := OpenParts(filepath.Join(dir, "out"), f, s, PartsOptions{Overwrite: true, Identity: map[string]string{"k": "v"}})
		if err != nil {
			b.Fatal(err)
		}
		r := Row{Length: perTokL, Values: [][]float32{nil}}
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
	payload := float64(4 * perTokL * perTokD * n)
	reportCPU(b, cpu0, payload)
	b.SetBytes(int64(payload))
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
}
