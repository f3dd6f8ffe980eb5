//go:build cgo

package cuda

import (
	"errors"
	"fmt"

	"github.com/esm2go/esm2go/internal/cudadrv"
)

// Probe says how many CUDA devices a backend could start on, without
// creating a context: the driver and libraries load, devices are present,
// and the CUDA headers NVRTC needs are found. It is safe to call from any
// goroutine, on machines without a GPU (it returns the reason).
func Probe() (devices int, err error) {
	lib, err := cudadrv.Load()
	if err != nil {
		return 0, fmt.Errorf("CUDA driver or libraries not found: %w", err)
	}
	n, err := lib.DeviceCount()
	if err != nil {
		return 0, fmt.Errorf("no usable CUDA device: %w", err)
	}
	if n == 0 {
		return 0, errors.New("no CUDA device")
	}
	if cudadrv.CUDAIncludeDir() == "" {
		return 0, errors.New("CUDA headers (cuda_fp16.h) not found for NVRTC under $CUDA_HOME/include, $CUDA_PATH/include or /usr/local/cuda/include; set CUDA_HOME to the CUDA toolkit root")
	}
	return n, nil
}
