package main

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/output"
)

// readRows reads an output's rows with the output package's Reader.
func readRows(t *testing.T, path string) (output.Schema, []output.Row) {
	t.Helper()
	r, err := output.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var rows []output.Row
	for {
		var row output.Row
		err := r.Next(&row)
		if err == io.EOF {
			return r.Schema(), rows
		}
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, row)
	}
}

// readIDs is the id of every row of the output at path, in order.
func readIDs(t *testing.T, path string) []string {
	t.Helper()
	_, rows := readRows(t, path)
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	return ids
}

// TestShardsIntoDatasetDir: shards run with --out DIR/ write
// DIR/part-0000i-of-0000N.parquet (or npy part directories), each holding
// its shard's rows with shard-local indices; merge accepts DIR and gives
// the rows of one unsharded run. --dtype float16 is stored and kept by the
// merge.
func TestShardsIntoDatasetDir(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"parquet", "npy"} {
		dir := t.TempDir()
		base := []string{"embed", "--model", tinyModel, "--device", "cpu", "-q", "--dtype", "float16"}
		if format == "npy" {
			base = append(base, "--format", "npy")
		}
		// npy: two shards (the merge of npy parts is covered by
		// TestShardsMerge); parquet: three, compared with one run.
		shards := []string{"0/3", "1/3", "2/3"}
		if format == "npy" {
			shards = []string{"0/2", "1/2"}
		}
		ds := filepath.Join(dir, "emb") + "/"
		for _, sh := range shards {
			if code, _, stderr := runCLI(t, append(base, "-o", ds, "--shard", sh, fasta)...); code != 0 {
				t.Fatalf("%s shard %s: %s", format, sh, stderr)
			}
		}
		ents, err := os.ReadDir(ds)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
		ext := map[string]string{"parquet": ".parquet", "npy": ""}[format]
		var want []string
		for i := range shards {
			want = append(want, partName(shardSpec{Index: i, Count: len(shards)})+ext)
		}
		if !slices.Equal(names, want) {
			t.Fatalf("%s: dataset directory holds %v, want %v", format, names, want)
		}
		// Each part: shard-local indices from 0, the shard in its metadata,
		// the dtype stored.
		var total int
		for i, n := range names {
			s, rows := readRows(t, filepath.Join(ds, n))
			if s.DType != output.Float16 || s.Metadata["shard"] != shards[i] {
				t.Errorf("%s %s: dtype %s, shard %q", format, n, s.DType, s.Metadata["shard"])
			}
			if len(rows) > 0 && rows[0].Index != 0 {
				t.Errorf("%s %s: first index %d, want 0 (shard-local)", format, n, rows[0].Index)
			}
			total += len(rows)
		}
		merged := filepath.Join(dir, "merged."+format)
		if code, _, stderr := runCLI(t, "merge", "-q", merged, ds); code != 0 {
			t.Fatalf("%s merge DIR: %s", format, stderr)
		}
		s2, r2 := readRows(t, merged)
		if s2.DType != output.Float16 || len(r2) != total {
			t.Fatalf("%s: merged %s with %d rows, parts %d", format, s2.DType, len(r2), total)
		}
		if format == "npy" {
			continue
		}
		one := filepath.Join(dir, "one."+format)
		if code, _, stderr := runCLI(t, append(base, "-o", one, fasta)...); code != 0 {
			t.Fatalf("%s single run: %s", format, stderr)
		}
		_, r1 := readRows(t, one)
		if len(r1) != len(r2) {
			t.Fatalf("%s: merged %s with %d rows, single run %d, parts %d", format, s2.DType, len(r2), len(r1), total)
		}
		// The same model on the same records, stored as float16: values
		// that differ by float32 noise of other batch compositions (~1e-5
		// relative) round to the same or adjacent float16 values, at most
		// one step apart: 2^-10 relative (2^-11 absolute below 1), inside
		// 1e-3 of max(1, |a|).
		for i := range r1 {
			if r1[i].ID != r2[i].ID || r1[i].Index != r2[i].Index || len(r1[i].Values[0]) != len(r2[i].Values[0]) {
				t.Fatalf("%s row %d: %q/%d vs %q/%d", format, i, r1[i].ID, r1[i].Index, r2[i].ID, r2[i].Index)
			}
			for j, a := range r1[i].Values[0] {
				b := r2[i].Values[0][j]
				if math.Abs(float64(a-b)) > 1e-3*max(1, math.Abs(float64(a))) {
					t.Fatalf("%s row %d value %d: %v vs %v", format, i, j, a, b)
				}
			}
		}
	}
}

// TestDTypeFlag: --dtype is checked before the model loads; an output of
// another dtype is not resumed or taken as complete.
func TestDTypeFlag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "emb.parquet")
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "-q", "--dtype", "int8", "-o", out, fasta)
	if code != 2 || !strings.Contains(stderr, `invalid --dtype "int8"`) {
		t.Errorf("--dtype int8: status %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "-q", "--dtype", "bf16", "-o", out, fasta); code != 0 {
		t.Fatalf("bf16: %s", stderr)
	}
	if s, _ := readRows(t, out); s.DType != output.BFloat16 {
		t.Errorf("dtype %s, want bfloat16", s.DType)
	}
	// A float32 run over it is not "already complete": it is refused as
	// an existing output.
	code, _, stderr = runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "-q", "-o", out, fasta)
	if code == 0 || strings.Contains(stderr, "already complete") {
		t.Errorf("float32 over bfloat16: status %d, %q", code, stderr)
	}
}

// TestExpandDatasetDirs: a directory of parts stands for its parts in name
// order; one holding a shard in progress, other files, or no parts is
// refused; files and npy outputs pass through.
func TestExpandDatasetDirs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b := mk("ds/part-00001-of-00002.parquet")
	a := mk("ds/part-00000-of-00002.parquet")
	mk("ds/.part-00000-of-00002.parquet.lock")
	npy := mk("out.npy/metadata.json")
	file := mk("single.parquet")
	got, err := expandDatasetDirs([]string{file, filepath.Join(dir, "ds"), filepath.Dir(npy)})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{file, a, b, filepath.Dir(npy)}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for out, want := range map[string]bool{
		filepath.Join(dir, "new") + "/":   true,  // a name ending in /
		filepath.Join(dir, "ds"):          true,  // an existing directory
		filepath.Join(dir, "new"):         false, // a new name: an output of its own
		filepath.Join(dir, "x.npy") + "/": false, // *.npy names an npy output
		filepath.Dir(npy) + "/":           false, // an existing npy output
		file:                              false,
	} {
		if got := isDatasetDir(out); got != want {
			t.Errorf("isDatasetDir(%s) = %v, want %v", out, got, want)
		}
	}
	if s := partName(shardSpec{Index: 7, Count: 123456}); s != "part-000007-of-123456" {
		t.Errorf("partName: %s", s)
	}
	for name, want := range map[string]string{
		"running/part-00001-of-00002.parquet.parts/manifest.json": "still in progress",
		"other/notes.txt": `"notes.txt", which are not shard parts`,
		"empty/.hidden":   "no shard parts",
	} {
		mk(name)
		d := filepath.Join(dir, strings.Split(name, "/")[0])
		if _, err := expandDatasetDirs([]string{d}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", d, err, want)
		}
	}
}
