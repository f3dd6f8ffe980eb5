package output

import (
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// TestMergeCopiesPerTokenGroupsVerbatim: a large row group with a per-token
// column is copied into the merged file as its compressed bytes, not
// re-encoded value by value (which ran at about 9 MB/s and made joining a
// run's committed chunks the slowest part of a per-token parquet run). The
// row path turns every value into a 24-byte parquet.Value; the copy moves
// pages, so the bytes allocated separate them: measured 2.6 MB allocated
// copied against 968 MB re-encoded for these 19.7 MB of values; the bound
// is twice the values.
func TestMergeCopiesPerTokenGroupsVerbatim(t *testing.T) {
	const n, L, D = 64, 300, 256 // 19.7 MB of values: above mergeCopyBytes
	s := Schema{Columns: []Column{{Name: "per_tok_6", Kind: Matrix, Dim: D}}}
	rng := rand.New(rand.NewPCG(7, 8))
	rows := make([]Row, n)
	for i := range rows {
		v := make([]float32, L*D)
		for k := range v {
			v[k] = float32(rng.NormFloat64())
		}
		rows[i] = Row{ID: "r" + strconv.Itoa(i), Index: int64(i), Length: L, Values: [][]float32{v}}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src.parquet")
	writeAll(t, src, Parquet, s, rows)
	rows = nil

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	sum, err := Merge(filepath.Join(dir, "dst.parquet"), []string{src}, MergeOptions{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if sum.CopiedRows != n {
		t.Fatalf("%d rows went the copy path, want %d", sum.CopiedRows, n)
	}
	values := uint64(n * L * D * 4)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("merge of %.1f MB of values: %.1f MB allocated", float64(values)/1e6, float64(alloc)/1e6)
	if alloc > 2*values {
		t.Errorf("merge allocated %d bytes for %d bytes of values: the row group was re-encoded, not copied", alloc, values)
	}
}
