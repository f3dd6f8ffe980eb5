package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/output"
)

func TestEmbedMetrics(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, mj := filepath.Join(dir, "emb.parquet"), filepath.Join(dir, "metrics.jsonl")
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--toks-per-batch", "1100",
		"--metrics-every", "1", "--metrics-json", mj, "--metrics-addr", "127.0.0.1:0", "--out", out, fasta)
	if code != 0 {
		t.Fatalf("status %d; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"msg=\"serving metrics\" url=http://127.0.0.1:", "msg=progress window=1 ",
		"esm2go: metrics: 15 sequences (15 records, 0 skipped)", "esm2go: metrics: compute ", "esm2go: metrics: peak RSS ",
		"esm2go: done: 15 records embedded of 15 read\n", "esm2go: output: " + out + " ("} {
		if !strings.Contains(stderr, want) {
			t.Errorf("no %q in stderr:\n%s", want, stderr)
		}
	}
	f, err := os.Open(mj)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int
	var last map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		last = nil
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatal(err)
		}
		if _, ok := last["gpu_util_pct"]; ok {
			t.Error("GPU figures on a CPU run")
		}
	}
	if n < 2 || last["final"] != true || last["sequences"].(float64) != fastaRecs {
		t.Errorf("%d lines, last %v", n, last)
	}

	// --quiet: no metrics lines, the JSON file still written.
	code, _, stderr = runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--quiet", "--overwrite",
		"--metrics-json", mj, "--out", out, fasta)
	if code != 0 || stderr != "" {
		t.Errorf("--quiet: status %d, stderr:\n%s", code, stderr)
	}
	if b, _ := os.ReadFile(mj); !strings.Contains(string(b), `"final":true`) {
		t.Errorf("metrics file:\n%s", b)
	}
}

func TestEmbedMetricsErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "emb.parquet")
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--metrics-every", "0", "--out", out, fasta)
	if code != 2 || !strings.Contains(stderr, "invalid --metrics-every 0") {
		t.Errorf("status %d; stderr:\n%s", code, stderr)
	}
	code, _, stderr = runCLI(t, "embed", "--model", tinyModel, "--device", "cpu",
		"--metrics-json", filepath.Join(dir, "no", "such", "dir", "m.jsonl"), "--out", out, fasta)
	if code != 1 || !strings.Contains(stderr, "--metrics-json") {
		t.Errorf("status %d; stderr:\n%s", code, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("the run went on without its metrics file")
	}
}

// TestMetricsJSONResumes: a run that stopped with committed rows is resumed
// by the same command, --metrics-json included: the metrics file (which
// exists now) is appended to, not a reason to refuse; without parts to
// resume an existing file is still refused.
func TestMetricsJSONResumes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// --strict stops at the bad record, after the rows before it are committed.
	// The packer runs at most a few batches ahead of the compute.
	in := writeTemp(t, dir, "in.fa", []byte(strings.Repeat(">a\nMKTAYIAKQR\n", 50)+">bad\nMK1\n"))
	out := filepath.Join(dir, "o.npy")
	metrics := filepath.Join(dir, "m.jsonl")
	args := []string{"embed", "--model", tinyModel, "--device", "cpu", "-q", "--strict", "--format", "npy",
		"--commit-rows", "1", "--toks-per-batch", "20", "--truncation-seq-length", "16", "--metrics-json", metrics, "-o", out, in}
	code, _, stderr := runCLI(t, args...)
	if code == 0 || !strings.Contains(stderr, "run the same command again to resume") {
		t.Fatalf("first run: status %d, stderr %q; want a failure that kept rows", code, stderr)
	}
	first, err := os.ReadFile(metrics)
	if err != nil || len(first) == 0 {
		t.Fatalf("first run's metrics: %v, %d bytes", err, len(first))
	}
	code, _, stderr = runCLI(t, args...)
	if strings.Contains(stderr, "--metrics-json") || !strings.Contains(stderr, `record "bad" cannot be embedded`) || !strings.Contains(stderr, "resumable: records 0..") {
		t.Fatalf("rerun: status %d, stderr %q; want it to resume and stop at the same record", code, stderr)
	}
	second, _ := os.ReadFile(metrics)
	if len(second) <= len(first) || !bytes.HasPrefix(second, first) {
		t.Errorf("metrics file %d bytes after the rerun, %d before: want the first run's lines kept and more appended", len(second), len(first))
	}
	os.RemoveAll(out + output.PartsSuffix)
	code, _, stderr = runCLI(t, args...)
	if code != 1 || !strings.Contains(stderr, "--metrics-json "+metrics+" exists (use --overwrite to replace it)") {
		t.Errorf("no parts to resume: status %d, stderr %q; want the existing metrics file refused", code, stderr)
	}
}
