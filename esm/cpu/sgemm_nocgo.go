//go:build !cgo

package cpu

// Without cgo there is no dlopen, so OpenBLAS cannot be loaded: the
// backend uses the pure-Go gonum matmul (sgemm_gonum.go).

type openblas struct{ gonumBLAS }

// openOpenBLAS returns nil: a pure-Go build (CGO_ENABLED=0) cannot load a
// shared library.
func openOpenBLAS(threads int) *openblas { return nil }
