package memcap

import (
	"fmt"
	"syscall"
)

func capAddressSpace(limit uint64) error {
	vm, err := vmSize()
	if err != nil {
		return err
	}
	lim := &syscall.Rlimit{Cur: vm + limit, Max: vm + limit}
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, lim); err != nil {
		return fmt.Errorf("setrlimit(RLIMIT_AS, %d): %w", lim.Cur, err)
	}
	return nil
}
