package cuda

import (
	"testing"

	"github.com/esm2go/esm2go/internal/cudadrv/cudatest"
)

// TestKernelsCompileNVCC compiles kernels.cu as newKernels does (no extra
// options, every element type), with nvcc where a CUDA toolkit is installed:
// a kernel that does not compile fails here, without a GPU.
func TestKernelsCompileNVCC(t *testing.T) {
	cudatest.CompileNVCC(t, kernelSource, "esm_kernels.cu", cudatest.Variant{Name: "all types"})
}
