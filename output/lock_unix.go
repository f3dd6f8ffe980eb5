//go:build unix

package output

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// outputLock is an exclusive flock on ".<base>.lock" beside an output.
type outputLock struct {
	f    *os.File
	path string
}

func lockPath(final string) string {
	return filepath.Join(filepath.Dir(final), "."+filepath.Base(final)+".lock")
}

// acquireLock takes the output's lock without waiting. The lock file is
// removed on release; a run that opened the file just before it was removed
// notices (the path no longer names its inode) and tries again.
func acquireLock(final string) (*outputLock, error) {
	p := lockPath(final)
	for attempt := 0; attempt < 5; attempt++ {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("output: lock %s: %w", p, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			holder := make([]byte, 128)
			n, _ := f.ReadAt(holder, 0)
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				who := strings.TrimSpace(string(holder[:n]))
				if who == "" {
					who = "unknown"
				}
				return nil, fmt.Errorf("output: %s: %w (%s; lock %s)", final, ErrLocked, quote(who), p)
			}
			return nil, fmt.Errorf("output: lock %s: %w", p, err)
		}
		fi, err1 := f.Stat()
		pi, err2 := os.Stat(p)
		if err1 != nil || err2 != nil || !os.SameFile(fi, pi) {
			f.Close() // released and removed by its previous owner meanwhile
			continue
		}
		host, _ := os.Hostname()
		if err := f.Truncate(0); err == nil {
			fmt.Fprintf(f, "pid %d on %s\n", os.Getpid(), host)
		}
		return &outputLock{f: f, path: p}, nil
	}
	return nil, fmt.Errorf("output: lock %s: it keeps changing; is another run starting and stopping on this output?", p)
}

// release removes the lock file while still holding the lock, then unlocks.
func (l *outputLock) release() {
	if l == nil || l.f == nil {
		return
	}
	os.Remove(l.path)
	l.f.Close()
	l.f = nil
}
