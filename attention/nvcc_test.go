package attention

import (
	"testing"

	"github.com/esm2go/esm2go/internal/cudadrv/cudatest"
)

// TestVarlenCompilesNVCC compiles varlen.cu as Varlen.module does for each
// element type (fp32: the scalar module; fp16/bf16: the fa2 module), with
// nvcc where a CUDA toolkit is installed.
func TestVarlenCompilesNVCC(t *testing.T) {
	v := func(name string, opts ...string) cudatest.Variant { return cudatest.Variant{Name: name, Opts: opts} }
	cudatest.CompileNVCC(t, varlenSource, "varlen.cu",
		v("f32"),
		v("fa2 f16", "-DVARLEN_FA2=1", "-DELEM=__half", "-DELEM_NAME=f16"),
		v("fa2 bf16", "-DVARLEN_FA2=1", "-DELEM=__nv_bfloat16", "-DELEM_NAME=bf16"))
}
