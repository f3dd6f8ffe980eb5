package tests

import (
	"path/filepath"
	"testing"

	"github.com/esm2go/esm2go/esm"
	esmcuda "github.com/esm2go/esm2go/esm/cuda"
	"github.com/esm2go/esm2go/internal/cudadrv/cudatest"
)

// GPU parity against the same PyTorch fixtures. Tolerances:
//   - fp32: the bound, 1e-4 x max|ref| (cuBLAS fp32 without TF32
//     and fp32 kernels differ from PyTorch only in summation order, ~1e-6).
//   - fp16/bf16: the fixtures are fp32, so this checks only that the reduced
//     precision path is sane: fp16 has a 2^-11 ~ 5e-4 unit roundoff and the
//     error grows over layers; 3e-2 (bf16: 1e-1, 2^-8 roundoff) catches a
//     broken kernel (errors of order 1) while allowing honest rounding. The
//     comparison with HF's own fp16 error is made by tests/gpu_parity.py.
var cudaTolerance = map[string]map[string]float64{
	"fp32": {"hidden": 1e-4, "mean": 1e-4, "bos": 1e-4, "logits": 1e-4},
	"fp16": {"hidden": 3e-2, "mean": 3e-2, "bos": 3e-2, "logits": 3e-2},
	"bf16": {"hidden": 1e-1, "mean": 1e-1, "bos": 1e-1, "logits": 1e-1},
}

func TestParityCUDA(t *testing.T) {
	for _, prec := range []string{"fp32", "fp16", "bf16"} {
		for _, c := range []struct{ fixture, model string }{
			{"tiny", "tiny"}, {"esm2_8M_shape", "esm2_8M_shape"},
		} {
			t.Run(prec+"/"+c.fixture, func(t *testing.T) {
				be := cudatest.Start(t, "CUDA backend ("+prec+")", func() (*esmcuda.Backend, error) {
					return esmcuda.New(esmcuda.Options{Precision: esm.Precision(prec)})
				})
				defer be.Close()
				w := runParityOn(t, c.fixture, filepath.Join("testdata", "models", c.model), be, cudaTolerance[prec])
				t.Logf("GPU parity %s %s: %v", prec, c.fixture, w)
			})
		}
	}
}
