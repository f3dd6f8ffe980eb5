//go:build cgo

package cuda

import (
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/backendtest"
)

// The cross-backend conformance suite in every precision (skipped without
// a GPU, by newGPU).
func TestConformance(t *testing.T) {
	for _, prec := range []esm.Precision{esm.FP32, esm.FP16, esm.BF16} {
		t.Run(string(prec), func(t *testing.T) {
			backendtest.RunAll(t, func(t *testing.T) esm.Backend { return newGPU(t, string(prec)) }, backendtest.For(prec))
		})
	}
}
