package main

import (
	"github.com/esm2go/esm2go/esm"
	esmcuda "github.com/esm2go/esm2go/esm/cuda"
	"github.com/esm2go/esm2go/monitor"
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

// cudaMetricsBackend returns what the monitor should see of be: for the CUDA
// backend, be itself when it reports its memory (monitor.MemoryReporter),
// else an adapter over its allocator's counters; ok is false for a CPU
// backend (no NVML sampling).
func cudaMetricsBackend(be esm.Backend) (any, bool) {
	b, ok := be.(*esmcuda.Backend)
	if !ok {
		return be, false
	}
	if mr, ok := be.(monitor.MemoryReporter); ok {
		return mr, true
	}
	return cudaMemory{b}, true
}

// cudaMemory reads the CUDA backend's allocator counters. The monitor calls
// it from the Progress hook, on the goroutine that owns the context.
type cudaMemory struct{ b *esmcuda.Backend }

func (c cudaMemory) DeviceMemory() (inUse, reserved int64, ok bool) {
	ctx := c.b.Context()
	if ctx == nil {
		return 0, 0, false
	}
	st := ctx.Stats()
	return int64(st.InUse), int64(st.Reserved), true
}
