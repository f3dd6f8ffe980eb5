package output

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// updatePyCheck rewrites output/testdata/pycheck, the small outputs that
// testdata/pycheck/check.py reads with pyarrow, pandas and numpy on a host
// that has them (this one has not): the Python side of the formats and
// dtypes docs/OUTPUT.md documents. The emb_* outputs are written as a
// resumable run writes them (several chunks, completed in place).
var updatePyCheck = flag.Bool("update-pycheck", false, "rewrite testdata/pycheck")

// pyCheckRows are the rows of every pycheck output: a Vector and a Matrix
// column, an empty record, values exact in every dtype and a subnormal
// float16 (quantized on the Go side, so Python compares exactly). The ids
// are ones a careless TSV reading changes: a leading quote (csv quoting
// would join lines), "NA" (read as missing) and "00123" (read as a number).
func pyCheckRows() []Row {
	rows := []Row{
		{ID: `"P1`, Index: 0, Length: 2, Values: [][]float32{{1, -2, 0.5, 65504}, {0.25, -0.125, 3, 1e-6, 7, 8, 9, -10}}},
		{ID: "NA", Index: 1, Length: 0, Values: [][]float32{{0, -0, 1.5, -3.75}, {}}},
		{ID: "00123", Index: 2, Length: 1, Truncated: true, Values: [][]float32{{100, 200, 300, 400}, {-1, 2, -3, 4}}},
	}
	return rows
}

var pyCheckSchema = Schema{
	Columns:  []Column{{Name: "mean_3", Kind: Vector, Dim: 4}, {Name: "per_tok_3", Kind: Matrix, Dim: 4}},
	Metadata: map[string]string{"model": "pycheck"},
}

// TestPyCheckFixtures: the committed pycheck outputs are what this package
// writes now (same rows read back, same dtype), and expected.json holds
// their values as float32 after rounding to each dtype.
func TestPyCheckFixtures(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("testdata", "pycheck")
	type expect struct {
		IDs    []string               `json:"ids"`
		Values map[string][][]float32 `json:"values"` // dtype -> row -> mean then per_tok values
	}
	want := expect{Values: map[string][][]float32{}}
	rows := pyCheckRows()
	for _, r := range rows {
		want.IDs = append(want.IDs, r.ID)
	}
	if *updatePyCheck {
		// Everything but check.py (committed by hand) is regenerated.
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Name() != "check.py" {
				os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
		if err := os.MkdirAll(filepath.Join(dir, "dataset"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range dtypes {
		s := withDType(pyCheckSchema, d)
		for _, r := range rows {
			var v []float32
			for _, c := range r.Values {
				for _, x := range c {
					v = append(v, quantize(x, d))
				}
			}
			want.Values[string(d)] = append(want.Values[string(d)], v)
		}
		for _, f := range formats {
			path := filepath.Join(dir, "emb_"+string(d)+"."+string(f))
			if *updatePyCheck {
				// Through a resumable run with a commit after every row:
				// three chunks, completed in place (parts_data.go), the
				// layout esm2go embed writes.
				p, err := OpenParts(path, f, s, PartsOptions{Identity: map[string]string{"pycheck": string(d)}})
				if err != nil {
					t.Fatal(err)
				}
				writeParts(t, p, rows, 0, len(rows), 1)
				if err := p.Finish(int64(len(rows)), s.Metadata); err != nil {
					t.Fatal(err)
				}
			}
			gs, got := readOutput(t, path)
			if gs.DType != d {
				t.Errorf("%s: dtype %s", path, gs.DType)
			}
			for i := range got {
				var v []float32
				for _, c := range got[i].Values {
					v = append(v, c...)
				}
				if !sameBits(v, want.Values[string(d)][i]) {
					t.Errorf("%s row %d: %v, want %v", path, i, v, want.Values[string(d)][i])
				}
			}
		}
	}
	if *updatePyCheck {
		// A dataset directory of two float32 parts, as sharded runs write it.
		s := pyCheckSchema
		s.Metadata = map[string]string{"model": "pycheck", "shard": "0/2"}
		writeAll(t, filepath.Join(dir, "dataset", "part-00000-of-00002.parquet"), Parquet, s, rows[:2])
		s.Metadata = map[string]string{"model": "pycheck", "shard": "1/2"}
		last := rows[2]
		last.Index = 0
		writeAll(t, filepath.Join(dir, "dataset", "part-00001-of-00002.parquet"), Parquet, s, []Row{last})
		b, _ := json.MarshalIndent(want, "", " ")
		if err := os.WriteFile(filepath.Join(dir, "expected.json"), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var have expect
	if err := json.Unmarshal(b, &have); err != nil {
		t.Fatal(err)
	}
	for d, v := range want.Values {
		for i := range v {
			if !sameBits(have.Values[d][i], v[i]) {
				t.Errorf("expected.json %s row %d: %v, want %v", d, i, have.Values[d][i], v[i])
			}
		}
	}
}
