package main

import (
	"github.com/esm2go/esm2go/esm"
	esmcuda "github.com/esm2go/esm2go/esm/cuda"
)

// The CUDA backend links no CUDA library at build time (dlopen), so it is
// always compiled in; without a GPU its New returns the reason.
func init() {
	openGPU = func(dev int, precision string) (gpuBackend, error) {
		be, err := esmcuda.New(esmcuda.Options{Device: dev, Precision: precision})
		if err != nil {
			return nil, err
		}
		return be, nil
	}
	metricsBackend = cudaMetricsBackend
}

// cudaMetricsBackend returns what the monitor should see of be: the CUDA
// backend itself (it reports its allocator's memory); ok is false for a CPU
// backend (no NVML sampling).
func cudaMetricsBackend(be esm.Backend) (any, bool) {
	if b, ok := be.(*esmcuda.Backend); ok {
		return b, true
	}
	return be, false
}
