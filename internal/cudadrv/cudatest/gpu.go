package cudatest

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/esm2go/esm2go/internal/cudadrv"
)

// GPUPresent reports whether this machine shows an NVIDIA GPU to this
// process, with the evidence either way: a /dev/nvidia<N> device node, or
// the CUDA driver loading and reporting at least one device (cudadrv.Load
// returns ErrMissingLibrary only after the driver has reported a device,
// so a host with a GPU but no NVRTC or cuBLAS counts as having a GPU).
func GPUPresent() (bool, string) {
	if nodes, _ := filepath.Glob("/dev/nvidia[0-9]*"); len(nodes) > 0 {
		return true, "device node " + nodes[0]
	}
	lib, err := cudadrv.Load()
	switch {
	case err == nil:
		n, err := lib.DeviceCount()
		if err == nil && n > 0 {
			return true, fmt.Sprintf("the CUDA driver reports %d device(s)", n)
		}
		return false, fmt.Sprintf("no /dev/nvidia<N>; the CUDA driver reports %d devices (%v)", n, err)
	case errors.Is(err, cudadrv.ErrMissingLibrary):
		return true, "the CUDA driver reports a device"
	}
	return false, fmt.Sprintf("no /dev/nvidia<N>; %v", err)
}

// RequireGPU skips t, saying why, where this machine has no NVIDIA GPU
// (GPUPresent); on a machine with one it returns and the test runs.
func RequireGPU(t testing.TB) {
	t.Helper()
	requireGPU(t, GPUPresent)
}

// Start opens what a GPU test needs (a context, a backend) with open, after
// RequireGPU. Where this machine has a GPU, an error from open fails the test
// with that error: on a GPU host a CUDA that does not start (headers or
// libraries missing, a broken driver) is a failure, never a silent skip.
// what names the thing opened in the failure.
func Start[T any](t testing.TB, what string, open func() (T, error)) T {
	t.Helper()
	return start(t, what, GPUPresent, open)
}

func requireGPU(t testing.TB, present func() (bool, string)) {
	t.Helper()
	if ok, why := present(); !ok {
		t.Skipf("GPU test not run: no NVIDIA GPU here (%s)", why)
	}
}

func start[T any](t testing.TB, what string, present func() (bool, string), open func() (T, error)) T {
	t.Helper()
	requireGPU(t, present)
	v, err := open()
	if err != nil {
		_, why := present()
		t.Fatalf("%s did not start on a machine with an NVIDIA GPU (%s): %v", what, why, err)
	}
	return v
}
