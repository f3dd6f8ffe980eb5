package cpu

import (
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/backendtest"
)

// The cross-backend conformance suite, on both matmul kernels.
func TestConformance(t *testing.T) {
	for name, noBLAS := range map[string]bool{"gonum": true, "default": false} {
		t.Run(name, func(t *testing.T) {
			backendtest.RunAll(t, func(t *testing.T) esm.Backend { return New(Options{NoBLAS: noBLAS}) }, backendtest.For(esm.FP32))
		})
	}
}
