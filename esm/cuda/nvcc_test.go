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
// The varlen_wg module's wgmma needs sm_90a: it is compiled whole where
// nvcc knows sm_90a (CUDA 12 and later) and goes through the front end
// only with older nvcc (its C++ checked); TestVarlenWGCompiles compiles it
// with NVRTC on an sm_90 GPU.
func TestAttentionCompilesNVCC(t *testing.T) {
	v := func(name string, opts ...string) cudatest.Variant { return cudatest.Variant{Name: name, Opts: opts} }
	wg := func(name string, opts ...string) cudatest.Variant {
		return cudatest.Variant{Name: name, Opts: opts, SM90a: true}
	}
	cudatest.CompileNVCC(t, attentionSource, "attention.cu",
		v("f32"),
		v("fa2 f16", "-DVARLEN_FA2=1", "-DELEM=__half", "-DELEM_NAME=f16"),
		v("fa2 bf16", "-DVARLEN_FA2=1", "-DELEM=__nv_bfloat16", "-DELEM_NAME=bf16"),
		wg("wg f16", "-DVARLEN_FA2=1", "-DVARLEN_WG=1", "-DELEM=__half", "-DELEM_NAME=f16"),
		wg("wg bf16", "-DVARLEN_FA2=1", "-DVARLEN_WG=1", "-DELEM=__nv_bfloat16", "-DELEM_NAME=bf16"))
}
