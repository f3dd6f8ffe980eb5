//go:build !cgo

package cuda

import (
	"fmt"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/internal/cudadrv"
)

// Without cgo (CGO_ENABLED=0) there is no CUDA backend: Probe and New say
// so, and the CPU backend (esm/cpu, pure Go) runs instead.

// Options configure the CUDA backend (the same fields as the cgo build's).
type Options struct {
	Device    int           // device ordinal
	Precision esm.Precision // esm.FP16 (the default, also for ""), esm.BF16 or esm.FP32
}

// Backend is never created without cgo; the embedded interface only lets
// callers written for the cgo build compile.
type Backend struct{ esm.Backend }

// Probe reports that CUDA needs the cgo build.
func Probe() (devices int, err error) { return 0, cudadrv.ErrNoCgo }

// New reports that CUDA needs the cgo build.
func New(opts Options) (*Backend, error) {
	return nil, fmt.Errorf("CUDA device %d: %w", opts.Device, cudadrv.ErrNoCgo)
}
