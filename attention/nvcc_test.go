package attention

import (
	"testing"

	"github.com/esm2go/esm2go/internal/cudadrv/cudatest"
)

// TestVarlenCompilesNVCC compiles varlen.cu as Varlen.module does for each
// element type and kernel family (fp32: the scalar kernel; fp16/bf16: fa2,
// and the WMMA/scalar module, skipped with -short: ~17 s each), with nvcc
// where a CUDA toolkit is installed.
func TestVarlenCompilesNVCC(t *testing.T) {
	v := func(name string, opts ...string) cudatest.Variant { return cudatest.Variant{Name: name, Opts: opts} }
	variants := []cudatest.Variant{
		v("f32", "-DELEM=float", "-DELEM_NAME=f32"),
		v("fa2 f16", "-DELEM=__half", "-DELEM_NAME=f16", "-DVARLEN_FA2=1"),
		v("fa2 bf16", "-DELEM=__nv_bfloat16", "-DELEM_NAME=bf16", "-DVARLEN_FA2=1"),
	}
	if !testing.Short() {
		variants = append(variants,
			v("tc f16", "-DELEM=__half", "-DELEM_NAME=f16", "-DVARLEN_TC=1"),
			v("tc bf16", "-DELEM=__nv_bfloat16", "-DELEM_NAME=bf16", "-DVARLEN_TC=1"))
	}
	cudatest.CompileNVCC(t, varlenSource, "varlen.cu", variants...)
}
