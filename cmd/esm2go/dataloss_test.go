package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/output"
)

// TestEmbedNeverDestroysUserData runs embed the way a careless command line
// would and checks that nothing esm2go did not write is ever replaced.
func TestEmbedNeverDestroysUserData(t *testing.T) {
	t.Parallel()
	t.Run("overwrite refuses a user directory", func(t *testing.T) {
		dir := t.TempDir()
		work := filepath.Join(dir, "project")
		os.MkdirAll(filepath.Join(work, "results"), 0o755)
		os.WriteFile(filepath.Join(work, "results", "table.csv"), []byte("precious"), 0o644)
		for _, format := range []string{"npy", "parquet"} {
			code, _, errs := runCLI(t, "embed", "--model", tinyModel, "--format", format, "--overwrite", "-o", work, fasta)
			if code != 1 || !strings.Contains(errs, "did not write") {
				t.Fatalf("%s: status %d, stderr %q", format, code, errs)
			}
			if b, err := os.ReadFile(filepath.Join(work, "results", "table.csv")); err != nil || string(b) != "precious" {
				t.Fatalf("%s: the user's directory was touched: %v", format, err)
			}
		}
	})
	t.Run("overwrite refuses the current directory", func(t *testing.T) {
		code, _, errs := runCLI(t, "embed", "--model", tinyModel, "--format", "npy", "--overwrite", "-o", ".", fasta)
		if code != 1 || !strings.Contains(errs, "names a directory itself") {
			t.Fatalf("status %d, stderr %q", code, errs)
		}
	})
	t.Run("overwrite refuses an input", func(t *testing.T) {
		dir := t.TempDir()
		in := filepath.Join(dir, "in.fasta")
		b, _ := os.ReadFile(fasta)
		os.WriteFile(in, b, 0o644)
		code, _, errs := runCLI(t, "embed", "--model", tinyModel, "--overwrite", "-o", in, in)
		if code != 1 || !strings.Contains(errs, "an input of this run") {
			t.Fatalf("status %d, stderr %q", code, errs)
		}
		if got, _ := os.ReadFile(in); string(got) != string(b) {
			t.Fatal("input changed")
		}
	})
	t.Run("overwrite replaces its own npy output", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "emb")
		for i := 0; i < 2; i++ {
			code, _, errs := runCLI(t, "embed", "--model", tinyModel, "--format", "npy", "--overwrite", "-q", "-o", out, fasta)
			if code != 0 {
				t.Fatalf("run %d: status %d, stderr %q", i, code, errs)
			}
		}
		if shape := npyShape(t, filepath.Join(out, "mean_3.npy")); shape[0] != fastaRecs {
			t.Fatalf("shape %v", shape)
		}
	})
	t.Run("a second run on a locked output fails at once", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "emb.parquet")
		w, err := output.Create(out, output.Parquet, output.Schema{Columns: []output.Column{{Name: "mean_3", Kind: output.Vector, Dim: 64}}})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		for _, extra := range [][]string{nil, {"--overwrite"}} {
			args := append([]string{"embed", "--model", tinyModel, "-o", out, fasta}, extra...)
			code, _, errs := runCLI(t, args...)
			if code != 1 || !strings.Contains(errs, "being written by another run") {
				t.Fatalf("%v: status %d, stderr %q", extra, code, errs)
			}
		}
	})
	t.Run("an earlier run's parts are kept unless --overwrite", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "emb.parquet")
		schema := output.Schema{Columns: []output.Column{{Name: "mean_3", Kind: output.Vector, Dim: 64}}}
		p, err := output.OpenParts(out, output.Parquet, schema, output.PartsOptions{Identity: map[string]string{"model": "another"}})
		if err != nil {
			t.Fatal(err)
		}
		row := output.Row{ID: "x", Index: 0, Length: 1, Values: [][]float32{make([]float32, 64)}}
		if err := p.Write(&row); err != nil {
			t.Fatal(err)
		}
		if err := p.Commit(1, 1); err != nil {
			t.Fatal(err)
		}
		p.Close()
		code, _, errs := runCLI(t, "embed", "--model", tinyModel, "-o", out, fasta)
		if code != 1 || !strings.Contains(errs, "other settings") || !strings.Contains(errs, "this run has") {
			t.Fatalf("status %d, stderr %q", code, errs)
		}
		if _, err := os.Stat(filepath.Join(out+output.PartsSuffix, "manifest.json")); err != nil {
			t.Fatalf("the earlier run's parts were touched: %v", err)
		}
		code, _, errs = runCLI(t, "embed", "--model", tinyModel, "-q", "--overwrite", "-o", out, fasta)
		if code != 0 {
			t.Fatalf("with --overwrite: status %d, stderr %q", code, errs)
		}
		if _, err := os.Stat(out + output.PartsSuffix); !os.IsNotExist(err) {
			t.Fatalf("parts left after a complete run: %v", err)
		}
	})
	t.Run("metrics-json never truncates without overwrite", func(t *testing.T) {
		dir := t.TempDir()
		mj := filepath.Join(dir, "metrics.jsonl")
		os.WriteFile(mj, []byte("last week's metrics\n"), 0o644)
		code, _, errs := runCLI(t, "embed", "--model", tinyModel, "--metrics-json", mj, "-o", filepath.Join(dir, "a.parquet"), fasta)
		if code != 1 || !strings.Contains(errs, "--metrics-json") || !strings.Contains(errs, "--overwrite") {
			t.Fatalf("status %d, stderr %q", code, errs)
		}
		if b, _ := os.ReadFile(mj); string(b) != "last week's metrics\n" {
			t.Fatal("metrics file truncated")
		}
		code, _, errs = runCLI(t, "embed", "--model", tinyModel, "--metrics-json", fasta, "--overwrite", "-o", filepath.Join(dir, "b.parquet"), fasta)
		if code != 1 || !strings.Contains(errs, "same file") {
			t.Fatalf("metrics = input: status %d, stderr %q", code, errs)
		}
	})
}

// runCLIStdin runs the CLI in a child process with standard input read from
// the file in (a shell's "< in") and returns its status and stderr.
func runCLIStdin(t *testing.T, in string, args ...string) (int, string) {
	t.Helper()
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := cliChild(args...)
	cmd.Stdin = f
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	}
	t.Fatal(err)
	return -1, ""
}

// TestStdinFileIsAnInput: a file given on standard input ("- < in.fa") is an
// input like one given by name: neither --out (embed, score) nor
// --metrics-json may replace it, with or without --overwrite; and
// --metrics-json may not be --out or lie inside it, whether or not either
// exists yet.
func TestStdinFileIsAnInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	orig, err := os.ReadFile(fasta)
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "in.fa")
	muts := filepath.Join(dir, "m.tsv")
	os.WriteFile(muts, []byte("mutant\nM1A\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"embed --out", []string{"embed", "--model", tinyModel, "--device", "cpu", "--overwrite", "--out", in, "-"},
			"--out " + in + " is the file on standard input, an input of this run"},
		{"embed --metrics-json", []string{"embed", "--model", tinyModel, "--device", "cpu", "--overwrite", "--metrics-json", in, "--out", filepath.Join(dir, "o.parquet"), "-"},
			"--metrics-json " + in + " is the file on standard input, an input of this run"},
		{"score --out", []string{"score", "--model", tinyModel, "--device", "cpu", "--mutations", muts, "--overwrite", "--out", in, "-"},
			"--out " + in + " is the file on standard input, an input of this run"},
	} {
		os.WriteFile(in, orig, 0o644)
		code, stderr := runCLIStdin(t, in, tc.args...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: status %d, stderr %q; want 1 and %q", tc.name, code, stderr, tc.want)
		}
		if got, _ := os.ReadFile(in); string(got) != string(orig) {
			t.Errorf("%s: the input on standard input was changed", tc.name)
		}
	}

	for _, tc := range []struct{ out, metrics string }{
		{filepath.Join(dir, "same.parquet"), filepath.Join(dir, "same.parquet")},
		{filepath.Join(dir, "emb") + "/", filepath.Join(dir, "emb")},
		{filepath.Join(dir, "emb2") + "/", filepath.Join(dir, "emb2", "metrics.jsonl")},
	} {
		code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--overwrite", "--out", tc.out, "--metrics-json", tc.metrics, fasta)
		if code != 1 || !strings.Contains(stderr, "write the metrics beside the output") {
			t.Errorf("--out %s --metrics-json %s: status %d, stderr %q", tc.out, tc.metrics, code, stderr)
		}
		if _, err := os.Lstat(strings.TrimSuffix(tc.out, "/")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("--out %s: a refused run left something there (%v)", tc.out, err)
		}
	}
	beside := filepath.Join(dir, "emb3.metrics.jsonl")
	if code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "-q", "--out", filepath.Join(dir, "emb3")+"/", "--metrics-json", beside, fasta); code != 0 {
		t.Errorf("metrics beside an npy output: status %d, stderr %q", code, stderr)
	}
}
