package main

import (
	"fmt"
	"os"
	"testing"
)

// TestMain keeps the runs of these tests (in process and the binaries they
// start) from remembering fingerprints in the user's cache folder.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "esm2go-fingerprints-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("ESM2GO_FINGERPRINT_CACHE", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
