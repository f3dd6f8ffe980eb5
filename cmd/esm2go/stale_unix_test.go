//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestScoreRemovesStaleTemps: a score run removes the temporary output a
// stopped run left beside --out, but not one a running process holds
// (locked), nor other files.
func TestScoreRemovesStaleTemps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fa := writeFile(t, dir, "wt.fasta", scoreFasta)
	out := filepath.Join(dir, "s.tsv")
	stale := writeFile(t, dir, ".s.tsv.tmp-111", "id\tmutant\n")
	live := writeFile(t, dir, ".s.tsv.tmp-222", "id\tmutant\n")
	other := writeFile(t, dir, ".t.tsv.tmp-333", "id\tmutant\n")
	f, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI(t, "score", "--model", tinyModel, "--device", "cpu", "--scan", "--out", out, fa)
	if code != 0 {
		t.Fatalf("status %d: %s", code, errs)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the stopped run's temporary is still there: %v", err)
	}
	if !strings.Contains(errs, "removed "+stale) {
		t.Errorf("no note of the removal: %s", errs)
	}
	for _, p := range []string{live, other, out} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
