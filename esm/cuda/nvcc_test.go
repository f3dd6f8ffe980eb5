//go:build cgo

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

// TestAttentionCompilesNVCC compiles attention.cu as varlen.module does for
// each element type (fp32: the scalar module; fp16/bf16: the fa2 module).
// The varlen_wg module needs sm_90a (CUDA 12 or later), so it is compiled
// by TestVarlenWGCompiles on an sm_90 GPU instead.
func TestAttentionCompilesNVCC(t *testing.T) {
	v := func(name string, opts ...string) cudatest.Variant { return cudatest.Variant{Name: name, Opts: opts} }
	cudatest.CompileNVCC(t, attentionSource, "attention.cu",
		v("f32"),
		v("fa2 f16", "-DVARLEN_FA2=1", "-DELEM=__half", "-DELEM_NAME=f16"),
		v("fa2 bf16", "-DVARLEN_FA2=1", "-DELEM=__nv_bfloat16", "-DELEM_NAME=bf16"))
}
