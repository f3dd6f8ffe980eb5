package main

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// On Linux the output folder's probe is an unnamed file: nothing is ever
// named in the user's folder, so a run killed during the check leaves
// nothing there.
func TestProbeDirUnnamed(t *testing.T) {
	dir := t.TempDir()
	fd, err := openUnnamed(dir)
	if err != nil {
		t.Skipf("this file system has no O_TMPFILE (%v): probeDir uses a named file here", err)
	}
	unix.Close(fd)
	if err := probeDir(dir); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("probe left %v", ents)
	}
}
