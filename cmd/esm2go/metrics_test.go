package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
