//go:build !cgo

package monitor

import (
	"strings"
	"testing"
)

// A build without cgo has no NVML: the reader says why, and a monitor
// asked for GPU figures runs without them.
func TestNoCgoNVMLReason(t *testing.T) {
	r := &nvmlReader{}
	err := r.Init()
	if err == nil || !strings.Contains(err.Error(), "NVML needs the cgo build") {
		t.Fatalf("Init: %v, want the cgo reason", err)
	}
}
