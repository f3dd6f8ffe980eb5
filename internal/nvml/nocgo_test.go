//go:build !cgo

package nvml

import (
	"errors"
	"testing"
)

// A build without cgo reads no NVML and says why.
func TestNoCgo(t *testing.T) {
	if err := Init(); !errors.Is(err, ErrNoCgo) {
		t.Fatalf("Init: %v, want ErrNoCgo", err)
	}
	if _, err := DeviceCount(); !errors.Is(err, ErrNoCgo) {
		t.Errorf("DeviceCount: %v, want ErrNoCgo", err)
	}
	if _, err := (Device{}).MemoryInfo(); !errors.Is(err, ErrNoCgo) {
		t.Errorf("MemoryInfo: %v, want ErrNoCgo", err)
	}
}
