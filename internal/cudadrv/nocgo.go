//go:build !cgo

package cudadrv

// A build without cgo (CGO_ENABLED=0) has no dlopen, so no CUDA: Load
// fails with ErrNoCgo, and everything else of the package is absent
// (esm/cuda compiles its own stub then).

// Lib stands for the loaded CUDA libraries; without cgo there are none.
type Lib struct{}

// Load returns ErrNoCgo.
func Load() (*Lib, error) { return nil, ErrNoCgo }

// DeviceCount returns ErrNoCgo.
func (l *Lib) DeviceCount() (int, error) { return 0, ErrNoCgo }
