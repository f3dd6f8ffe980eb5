package main

import (
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
}
