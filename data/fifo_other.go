//go:build !linux

package data

import (
	"io"
	"os"
)

// openInput opens a named input for reading. Outside Linux a named pipe is
// opened the ordinary way: open(2) blocks until a writer comes, and
// cancellation cannot end that wait.
func openInput(name string) (io.ReadCloser, error) { return os.Open(name) }

// pollableStdin is Linux only: elsewhere a read of stdin blocked in the
// kernel ends only when data or end of file arrives.
func pollableStdin(*os.File) (io.ReadCloser, bool) { return nil, false }
