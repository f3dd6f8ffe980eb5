//go:build !linux

package memcap

// capAddressSpace only sets the Go memory limit outside Linux (no
// /proc/self/status to size the cap against).
func capAddressSpace(limit uint64) error { return nil }
