package main

import "golang.org/x/sys/unix"

// openUnnamed opens an unnamed, writable file in dir (O_TMPFILE): it
// vanishes when closed or when the process dies. File systems without
// O_TMPFILE answer with an error, and probeDir falls back to a named file.
func openUnnamed(dir string) (int, error) {
	return unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
}
