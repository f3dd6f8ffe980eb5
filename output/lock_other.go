//go:build !unix

package output

// outputLock is a no-op where flock is unavailable: concurrent runs on one
// output are not detected there.
type outputLock struct{}

func acquireLock(final string) (*outputLock, error) { return &outputLock{}, nil }

func (l *outputLock) release() {}
