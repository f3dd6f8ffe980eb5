package memcap

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// testCap is the cap of these self-tests: the one the memory tests of the
// project use. Under 64 MiB the Go runtime itself occasionally failed to
// reserve its heap arena metadata at start-up ("out of memory allocating
// heap arena metadata", seen once in a CI run on the 2-core box), which says
// nothing about the code under test.
const testCap = 256 << 20

// TestCapBites proves the cap is real: a child that allocates far past it
// must die, which the parent sees as a failed child.
func TestCapBites(t *testing.T) {
	if os.Getenv("MEMCAP_SELFTEST") == "1" {
		Run(t, testCap, func(t *testing.T) {
			b := make([]byte, 4<<30) // 16x the cap
			for i := range b {
				b[i] = 1
			}
			t.Log(len(b))
		})
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCapBites$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "MEMCAP_SELFTEST=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("allocating 4 GiB under a 256 MiB cap succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "out of memory") {
		t.Fatalf("want an out-of-memory death in the child, got:\n%s", out)
	}
}

func TestCapAllowsSmallWork(t *testing.T) {
	Run(t, testCap, func(t *testing.T) {
		b := make([]byte, 32<<20)
		for i := range b {
			b[i] = byte(i)
		}
		if b[len(b)-1] != byte(len(b)-1) {
			t.Fatal("bad write")
		}
	})
}
