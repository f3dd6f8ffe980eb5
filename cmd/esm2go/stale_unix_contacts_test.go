//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestContactsRemovesStalePartials: a contacts run removes (and reports)
// the temporary directory a killed run left beside its output, and keeps
// one a live run holds locked and one holding a file contacts never writes.
func TestContactsRemovesStalePartials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeFASTA(t, dir, contactsFASTA)
	out := filepath.Join(dir, "maps")
	mk := func(name string, files ...string) string {
		p := filepath.Join(dir, ".maps.partial-"+name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			os.WriteFile(filepath.Join(p, f), []byte("x"), 0o644)
		}
		return p
	}
	stale := mk("1", contactsValues, contactsRecords)
	foreign := mk("2", contactsValues, "notes.txt")
	live := mk("3", contactsValues)
	f, err := os.Open(filepath.Join(live, contactsValues))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, "contacts", "--model", tinyModel, "--device", "cpu", "--truncation-seq-length", "40", "-o", out, in)
	if code != 0 {
		t.Fatalf("status %d: %s", code, stderr)
	}
	if _, err := os.Lstat(stale); err == nil || !strings.Contains(stderr, "removed "+stale+", left by a run that was stopped") {
		t.Errorf("the stale temporary is still there or was not reported: %s", stderr)
	}
	for _, p := range []string{foreign, live} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
}
