//go:build !cgo

package cudadrv

import "errors"

// A build without cgo (CGO_ENABLED=0) has no dlopen, so no CUDA: Load
// fails with ErrNoCgo, and everything else of the package is absent
// (esm/cuda compiles its own stub then).

var (
	// ErrNoCgo: this binary was built with CGO_ENABLED=0.
	ErrNoCgo = errors.New("CUDA needs the cgo build: this esm2go was built with CGO_ENABLED=0; install a C compiler (e.g. gcc) and rebuild with CGO_ENABLED=1")
)

// Lib stands for the loaded CUDA libraries; without cgo there are none.
type Lib struct{}

// Load returns ErrNoCgo.
func Load() (*Lib, error) { return nil, ErrNoCgo }

// DeviceCount returns ErrNoCgo.
func (l *Lib) DeviceCount() (int, error) { return 0, ErrNoCgo }
