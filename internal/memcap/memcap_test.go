package memcap

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCapBites proves the cap is real: a child that allocates far past it
// must die, which the parent sees as a failed child.
func TestCapBites(t *testing.T) {
	if os.Getenv("MEMCAP_SELFTEST") == "1" {
		Run(t, 64<<20, func(t *testing.T) {
			b := make([]byte, 1<<30) // 16x the cap
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
		t.Fatalf("allocating 1 GiB under a 64 MiB cap succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "out of memory") {
		t.Fatalf("want an out-of-memory death in the child, got:\n%s", out)
	}
}

func TestCapAllowsSmallWork(t *testing.T) {
	Run(t, 64<<20, func(t *testing.T) {
		b := make([]byte, 8<<20)
		for i := range b {
			b[i] = byte(i)
		}
		if b[len(b)-1] != byte(len(b)-1) {
			t.Fatal("bad write")
		}
	})
}
