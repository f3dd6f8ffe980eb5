//go:build !linux

package main

import "errors"

// openUnnamed: unnamed files (O_TMPFILE) are Linux's; elsewhere probeDir
// creates and removes a named file.
func openUnnamed(string) (int, error) { return -1, errors.New("no O_TMPFILE here") }
