package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseShard(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, c := range []struct {
		arg  string
		env  func(string) string
		want string // "i/N", or an error substring
	}{
		{"", env(), "0/0"},
		{"0/1", env(), "0/1"},
		{"3/4", env(), "3/4"},
		{"4/4", env(), "invalid --shard"},
		{"-1/4", env(), "invalid --shard"},
		{"1/0", env(), "invalid --shard"},
		{"x", env(), "invalid --shard"},
		{"auto", env("SLURM_ARRAY_TASK_ID", "5", "SLURM_ARRAY_TASK_COUNT", "8"), "5/8"},
		{"auto", env("SLURM_ARRAY_TASK_ID", "5", "SLURM_ARRAY_TASK_MIN", "1", "SLURM_ARRAY_TASK_MAX", "8"), "4/8"},
		{"auto", env("SLURM_ARRAY_TASK_ID", "3", "SLURM_ARRAY_TASK_MIN", "0", "SLURM_ARRAY_TASK_MAX", "9", "SLURM_ARRAY_TASK_COUNT", "5"), "contiguous array"},
		{"auto", env("SLURM_ARRAY_TASK_ID", "3"), "neither SLURM_ARRAY_TASK_COUNT"},
		{"auto", env("SLURM_ARRAY_TASK_ID", "x", "SLURM_ARRAY_TASK_COUNT", "8"), "not a number"},
		{"auto", env("JOB_COMPLETION_INDEX", "2", "JOB_COMPLETIONS", "3"), "2/3"},
		{"auto", env("JOB_COMPLETION_INDEX", "2"), "JOB_COMPLETIONS is not"},
		{"auto", env("JOB_COMPLETION_INDEX", "3", "JOB_COMPLETIONS", "3"), "outside"},
		{"auto", env(), "no job array found"},
	} {
		got, err := parseShard(c.arg, c.env)
		if err != nil {
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("%q: error %v, want %q", c.arg, err, c.want)
			}
			continue
		}
		if got.String() != c.want {
			t.Errorf("%q: %v, want %s", c.arg, got, c.want)
		}
	}
}

// TestShardsMerge: three shards of the input, merged, equal one run: same
// records in the same order, values equal up to fp32 rounding of different
// batch compositions (1e-5 of the largest value: the batched-vs-alone bound
// of the embed tests). Missing or repeated shards are refused.
func TestShardsMerge(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	args := func(out string, extra ...string) []string {
		return append([]string{"embed", "--model", tinyModel, "--device", "cpu", "--format", "npy", "-q", "-o", out}, append(extra, fasta)...)
	}
	one := filepath.Join(dir, "one")
	if code, _, stderr := runCLI(t, args(one)...); code != 0 {
		t.Fatalf("single run: %s", stderr)
	}
	var shards []string
	for i := 0; i < 3; i++ {
		out := filepath.Join(dir, fmt.Sprintf("shard-%d", i))
		if code, _, stderr := runCLI(t, args(out, "--shard", fmt.Sprintf("%d/3", i))...); code != 0 {
			t.Fatalf("shard %d: %s", i, stderr)
		}
		shards = append(shards, out)
	}
	merged := filepath.Join(dir, "merged")
	if code, _, stderr := runCLI(t, "merge", merged, shards[2], shards[0], shards[1]); code != 0 {
		t.Fatalf("merge: %s", stderr)
	}
	a, _ := os.ReadFile(filepath.Join(one, "records.tsv"))
	b, _ := os.ReadFile(filepath.Join(merged, "records.tsv"))
	if string(a) != string(b) {
		t.Fatalf("records differ:\n%s\n%s", a, b)
	}
	va, vb := readF32(t, filepath.Join(one, "mean_3.npy")), readF32(t, filepath.Join(merged, "mean_3.npy"))
	var maxAbs, maxDiff float64
	for i := range va {
		maxAbs = max(maxAbs, math.Abs(float64(va[i])))
		maxDiff = max(maxDiff, math.Abs(float64(va[i]-vb[i])))
	}
	if len(va) != len(vb) || maxDiff > 1e-5*maxAbs {
		t.Fatalf("values differ: %d vs %d values, max diff %g of %g", len(va), len(vb), maxDiff, maxAbs)
	}
	for _, bad := range [][]string{{shards[0], shards[1]}, {shards[0], shards[1], shards[1], shards[2]}, {shards[0], shards[1], one}} {
		code, _, stderr := runCLI(t, append([]string{"merge", filepath.Join(dir, "bad")}, bad...)...)
		if code != 1 || !(strings.Contains(stderr, "missing") || strings.Contains(stderr, "twice") || strings.Contains(stderr, "are not")) {
			t.Errorf("merge %v: status %d, stderr %q", bad, code, stderr)
		}
	}
}

// readF32 reads an npy float32 array's values (header length from bytes 8..9).
func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hl := int(binary.LittleEndian.Uint16(b[8:10]))
	raw := b[10+hl:]
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// TestShardsMoreThanRecords: with more shards than records some shards hold
// nothing; each still ends with status 0 and an (empty) output, and the
// merge of all of them equals one run's records.
func TestShardsMoreThanRecords(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const n = 24 // the fixture has 15 records
	one := filepath.Join(dir, "one")
	if code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--format", "npy", "-q", "-o", one, fasta); code != 0 {
		t.Fatalf("single run: %s", stderr)
	}
	var shards []string
	empty := 0
	for i := 0; i < n; i++ {
		out := filepath.Join(dir, fmt.Sprintf("shard-%02d", i))
		if code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--format", "npy", "-q", "-o", out, "--shard", fmt.Sprintf("%d/%d", i, n), fasta); code != 0 {
			t.Fatalf("shard %d/%d: status %d: %s", i, n, code, stderr)
		}
		if _, err := os.Stat(out + ".parts"); !os.IsNotExist(err) {
			t.Errorf("shard %d: parts directory left behind", i)
		}
		if b, _ := os.ReadFile(filepath.Join(out, "records.tsv")); strings.Count(string(b), "\n") == 1 {
			empty++
		}
		shards = append(shards, out)
	}
	if empty == 0 {
		t.Fatalf("no shard of %d was empty; the test needs more shards than records", n)
	}
	merged := filepath.Join(dir, "merged")
	if code, _, stderr := runCLI(t, append([]string{"merge", merged}, shards...)...); code != 0 {
		t.Fatalf("merge: %s", stderr)
	}
	a, _ := os.ReadFile(filepath.Join(one, "records.tsv"))
	b, _ := os.ReadFile(filepath.Join(merged, "records.tsv"))
	if string(a) != string(b) {
		t.Fatalf("records differ:\n%s\n%s", a, b)
	}
}

// TestShardsOfOtherInputsRefused: shards that read inputs of different
// sizes (one rerun after the FASTA was regenerated) are not merged: the
// result would miss and repeat records under fresh indices.
func TestShardsOfOtherInputsRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	orig, err := os.ReadFile(fasta)
	if err != nil {
		t.Fatal(err)
	}
	changed := filepath.Join(dir, "changed.fa")
	os.WriteFile(changed, append(slices.Clone(orig), ">extra\nMKV\n"...), 0o644)
	var shards []string
	for i, in := range []string{fasta, changed} {
		out := filepath.Join(dir, fmt.Sprintf("s%d.parquet", i))
		if code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "-q", "--shard", fmt.Sprintf("%d/2", i), "-o", out, in); code != 0 {
			t.Fatalf("shard %d: status %d: %s", i, code, stderr)
		}
		shards = append(shards, out)
	}
	merged := filepath.Join(dir, "m.parquet")
	code, _, stderr := runCLI(t, "merge", merged, shards[0], shards[1])
	if code != 1 || !strings.Contains(stderr, `"input_bytes"`) || !strings.Contains(stderr, "the shards read inputs of different sizes") {
		t.Errorf("status %d, stderr %q; want the input sizes named", code, stderr)
	}
	if _, err := os.Stat(merged); err == nil {
		t.Error("a refused merge wrote its output")
	}
}

// TestMergeOutInsideSource: merge refuses an OUT inside a dataset
// directory it reads (the merged file became one more part: the directory
// then read every row twice, and could not be merged again).
func TestMergeOutInsideSource(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ds := filepath.Join(dir, "ds") + "/"
	for i := range 2 {
		if code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "-q", "--shard", fmt.Sprintf("%d/2", i), "-o", ds, fasta); code != 0 {
			t.Fatalf("shard %d: status %d: %s", i, code, stderr)
		}
	}
	out := filepath.Join(dir, "ds", "all.parquet")
	code, _, stderr := runCLI(t, "merge", out, ds)
	if code != 1 || !strings.Contains(stderr, "a source being read") {
		t.Errorf("status %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("the merged file was written inside the dataset directory")
	}
	if code, _, stderr := runCLI(t, "merge", "-q", filepath.Join(dir, "all.parquet"), ds); code != 0 {
		t.Errorf("merge beside it: status %d: %s", code, stderr)
	}
}
