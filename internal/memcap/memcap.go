// Package memcap runs a test body in a child process whose address space is
// capped (RLIMIT_AS), so a test can assert that hostile input gives a clean
// error instead of "fatal error: runtime: out of memory", which no recover
// catches and which would kill the whole test binary.
//
//	func TestBomb(t *testing.T) {
//		memcap.Run(t, 256<<20, func(t *testing.T) {
//			if _, err := Parse(bomb); err == nil {
//				t.Fatal("no error")
//			}
//		})
//	}
//
// The parent re-executes the test binary for this one test; the child sets
// the cap (its address space at start plus limit bytes), also sets the Go
// memory limit to that budget, and runs body. The parent fails the test if the
// child did not run the body to a PASS: a crash, an out-of-memory death or a
// test failure in the child all show up with the child's output.
package memcap

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
)

// envChild carries the name of the test the child must run the body of.
const envChild = "ESM2GO_MEMCAP_CHILD"

// Run runs body under a cap of limit bytes of address space beyond what the
// process has mapped at the start of the child.
func Run(t *testing.T, limit uint64, body func(t *testing.T)) {
	t.Helper()
	if os.Getenv(envChild) == t.Name() {
		if err := capAddressSpace(limit); err != nil {
			t.Fatalf("memcap: %v", err)
		}
		debug.SetMemoryLimit(int64(limit))
		body(t)
		return
	}
	if testing.Short() && os.Getenv(envChild) != "" {
		t.Skip("memcap: nested child")
	}
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	cmd := exec.Command(os.Args[0], "-test.run="+strings.Join(parts, "/"), "-test.v", "-test.count=1")
	// glibc gives each thread that calls malloc (C kernels on the backend's
	// worker threads) its own arena, each reserving 64 MiB of address
	// space: under a cap of a few hundred MiB, a loaded machine that runs
	// the body on more threads ran out of address space with little in
	// use (7 of 40 runs of a 160 MiB test, none with one arena). One arena
	// keeps the cap a measure of the memory the body uses.
	cmd.Env = append(os.Environ(), envChild+"="+t.Name(), "MALLOC_ARENA_MAX=1")
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("memcap: child for %s under a %d MiB cap failed: %v\n%s", t.Name(), limit>>20, err, tail(text, 4000))
	}
	if !strings.Contains(text, "--- PASS: "+t.Name()) {
		t.Fatalf("memcap: child for %s did not report PASS:\n%s", t.Name(), tail(text, 4000))
	}
}

// tail keeps the "fatal error" line of a runtime crash (it comes first,
// before megabytes of goroutine dumps) and the end of the output.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	head := ""
	if i := strings.Index(s, "fatal error:"); i >= 0 {
		head = s[i:]
		if j := strings.IndexByte(head, '\n'); j >= 0 {
			head = head[:j]
		}
		head += "\n"
	}
	return head + "..." + s[len(s)-n:]
}

// vmSize returns the process's current address-space size in bytes.
func vmSize() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmSize:"); ok {
			var kb uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("parse VmSize %q: %w", rest, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmSize in /proc/self/status")
}
