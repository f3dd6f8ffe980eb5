package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartProfiles: the environment variables write a CPU profile (gzip,
// as pprof writes it) and an execution trace (its "go 1." header), and a
// file that cannot be created is an error naming the variable, before
// anything runs.
func TestStartProfiles(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{
		envCPUProfile: filepath.Join(dir, "cpu.prof"),
		envTrace:      filepath.Join(dir, "trace.out"),
	}
	stop, err := startProfiles(func(k string) string { return env[k] })
	if err != nil {
		if strings.Contains(err.Error(), "already") { // go test -cpuprofile or -trace
			t.Skipf("profiling is in use by the test binary: %v", err)
		}
		t.Fatal(err)
	}
	var sum float64
	for i := range 2_000_000 {
		sum += float64(i % 7)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil { // a second stop does nothing
		t.Fatal(err)
	}
	prof, err := os.ReadFile(env[envCPUProfile])
	if err != nil || !bytes.HasPrefix(prof, []byte{0x1f, 0x8b}) {
		t.Fatalf("CPU profile: %d bytes, %v (sum %v)", len(prof), err, sum)
	}
	tr, err := os.ReadFile(env[envTrace])
	if err != nil || !bytes.HasPrefix(tr, []byte("go 1.")) {
		t.Fatalf("trace: %d bytes starting %q, %v", len(tr), tr[:min(len(tr), 16)], err)
	}

	bad := filepath.Join(dir, "missing", "trace.out")
	_, err = startProfiles(func(k string) string {
		if k == envTrace {
			return bad
		}
		return env[k]
	})
	if err == nil || !strings.Contains(err.Error(), envTrace) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("uncreatable trace file: %v", err)
	}
	// The CPU profile started before the trace failed was stopped: a new
	// one can start.
	stop, err = startProfiles(func(k string) string {
		if k == envCPUProfile {
			return env[k]
		}
		return ""
	})
	if err != nil {
		t.Fatalf("a CPU profile after a failed start: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
