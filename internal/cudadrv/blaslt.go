//go:build cgo

package cudadrv

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// cublasLt attribute and enum values (cublasLt.h, CUDA 12 and 13).
const (
	ltDescTransA       = 3 // CUBLASLT_MATMUL_DESC_TRANSA
	ltDescTransB       = 4 // CUBLASLT_MATMUL_DESC_TRANSB
	ltDescEpilogue     = 7 // CUBLASLT_MATMUL_DESC_EPILOGUE
	ltPrefMaxWorkspace = 1 // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES
	ltEpilogueBias     = 4 // CUBLASLT_EPILOGUE_BIAS
	cudaR32F           = 0
	// CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK
	ltPrefReductionSchemeMask = 3
	maxLtPlans                = 512
)

// Epilogue is what LinearBias applies after the product.
type Epilogue int

const (
	// EpilogueBias adds the bias: y = x·wᵀ + b.
	EpilogueBias Epilogue = iota
	// EpilogueBiasAccumulate adds the product and the bias to y in place:
	// y += x·wᵀ + b (beta = 1, C = D = y), the residual add with its bias in
	// one pass over y (fp16/bf16 inputs with an fp32 y is a combination
	// cuBLASLt supports for COMPUTE_32F).
	EpilogueBiasAccumulate
)

type ltKey struct {
	T, N, K  int
	prec     Precision
	epilogue Epilogue
}

type ltPlan struct {
	desc      C.cublasLtMatmulDesc_t
	a, b, c   C.cublasLtMatrixLayout_t
	algo      C.cublasLtMatmulAlgo_t
	workspace int
	// the heuristic's candidates for LinearBiasAlgo, asked for once per
	// plan ([0] with split-K allowed, [1] without; nil until asked)
	cands [2][]C.cublasLtMatmulHeuristicResult_t
}

func (p *ltPlan) destroy() error {
	var errs []error
	for _, l := range []C.cublasLtMatrixLayout_t{p.a, p.b, p.c} {
		if l != nil {
			errs = append(errs, blasErr("cublasLtMatrixLayoutDestroy", "", C.esm_cublasLtMatrixLayoutDestroy(l)))
		}
	}
	if p.desc != nil {
		errs = append(errs, blasErr("cublasLtMatmulDescDestroy", "", C.esm_cublasLtMatmulDescDestroy(p.desc)))
	}
	return errors.Join(errs...)
}

func (c *Context) ltPlan(b *blasState, k ltKey) (*ltPlan, error) {
	if p := b.plans[k]; p != nil {
		return p, nil
	}
	desc := fmt.Sprintf("T=%d N=%d K=%d %v->%v", k.T, k.N, k.K, k.prec.In, k.prec.Out)
	p := &ltPlan{}
	fail := func(err error) (*ltPlan, error) { p.destroy(); return nil, err }
	if r := C.esm_cublasLtMatmulDescCreate(&p.desc, k.prec.Compute.cublas(), cudaR32F); r != 0 {
		return fail(blasErr("cublasLtMatmulDescCreate", desc, r))
	}
	setAttr := func(attr int, v int32) error {
		return blasErr("cublasLtMatmulDescSetAttribute", fmt.Sprintf("attr %d = %d", attr, v),
			C.esm_cublasLtMatmulDescSetAttribute(p.desc, C.int(attr), unsafe.Pointer(&v), 4))
	}
	for _, a := range [][2]int32{{ltDescTransA, opT}, {ltDescTransB, opN}, {ltDescEpilogue, ltEpilogueBias}} {
		if err := setAttr(int(a[0]), a[1]); err != nil {
			return fail(err)
		}
	}
	// Column-major view: yᵀ(N,T) = w(N,K)·xᵀ with A = w stored as (K,N) ld K
	// and transposed, B = xᵀ (K,T) ld K, C = D = yᵀ (N,T) ld N.
	in, out := k.prec.In.cuda(), k.prec.Out.cuda()
	for _, l := range []struct {
		dst        *C.cublasLtMatrixLayout_t
		t          C.int
		rows, cols int
	}{{&p.a, in, k.K, k.N}, {&p.b, in, k.K, k.T}, {&p.c, out, k.N, k.T}} {
		if r := C.esm_cublasLtMatrixLayoutCreate(l.dst, l.t, C.uint64_t(l.rows), C.uint64_t(l.cols), C.int64_t(l.rows)); r != 0 {
			return fail(blasErr("cublasLtMatrixLayoutCreate", desc, r))
		}
	}
	res, err := ltHeuristic(b, p, desc, 1, false)
	if err != nil {
		return fail(err)
	}
	p.algo, p.workspace = res[0].algo, int(res[0].workspaceSize)
	if len(b.plans) >= maxLtPlans {
		for key, old := range b.plans {
			old.destroy()
			delete(b.plans, key)
		}
	}
	b.plans[k] = p
	return p, nil
}

// ltHeuristic asks cuBLASLt for up to n algorithms for plan p, best first;
// noSplitK leaves out those that split K (reduction scheme mask 0).
func ltHeuristic(b *blasState, p *ltPlan, desc string, n int, noSplitK bool) ([]C.cublasLtMatmulHeuristicResult_t, error) {
	var pref C.cublasLtMatmulPreference_t
	if r := C.esm_cublasLtMatmulPreferenceCreate(&pref); r != 0 {
		return nil, blasErr("cublasLtMatmulPreferenceCreate", desc, r)
	}
	defer C.esm_cublasLtMatmulPreferenceDestroy(pref)
	ws := C.uint64_t(BlasWorkspaceBytes)
	if r := C.esm_cublasLtMatmulPreferenceSetAttribute(pref, ltPrefMaxWorkspace, unsafe.Pointer(&ws), 8); r != 0 {
		return nil, blasErr("cublasLtMatmulPreferenceSetAttribute", "MAX_WORKSPACE_BYTES", r)
	}
	if noSplitK {
		var mask uint32
		if r := C.esm_cublasLtMatmulPreferenceSetAttribute(pref, ltPrefReductionSchemeMask, unsafe.Pointer(&mask), 4); r != 0 {
			return nil, blasErr("cublasLtMatmulPreferenceSetAttribute", "REDUCTION_SCHEME_MASK = 0", r)
		}
	}
	res := make([]C.cublasLtMatmulHeuristicResult_t, n)
	var got C.int
	if r := C.esm_cublasLtMatmulAlgoGetHeuristic(b.lt, p.desc, p.a, p.b, p.c, p.c, pref, C.int(n), &res[0], &got); r != 0 || got == 0 {
		if r == 0 {
			r = 15 // CUBLAS_STATUS_NOT_SUPPORTED
		}
		return nil, blasErr("cublasLtMatmulAlgoGetHeuristic", desc, r)
	}
	return res[:got], nil
}

// LinearBiasAlgo is LinearBias on the heuristic's candidate algorithm i
// (0 is the heuristic's first choice, the one LinearBias runs; splitK false
// asks for candidates without split-K), for timing the candidates against
// each other (BenchmarkLinearBiasAlgos); the candidates are asked for once
// per shape, so a call costs what LinearBias costs. It returns how many
// candidates the heuristic gave, at most 16; with i out of range it runs
// nothing.
func (c *Context) LinearBiasAlgo(y, x, w, bias DevicePtr, T, N, K int, p Precision, e Epilogue, splitK bool, i int) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	if T <= 0 || N <= 0 || K <= 0 {
		return 0, fmt.Errorf("cuda: LinearBiasAlgo T=%d N=%d K=%d: dimensions must be positive", T, N, K)
	}
	b, err := c.blasHandle()
	if err != nil {
		return 0, err
	}
	plan, err := c.ltPlan(b, ltKey{T, N, K, p, e})
	if err != nil {
		return 0, err
	}
	desc := fmt.Sprintf("T=%d N=%d K=%d %v->%v", T, N, K, p.In, p.Out)
	j := 0
	if !splitK {
		j = 1
	}
	if plan.cands[j] == nil {
		if plan.cands[j], err = ltHeuristic(b, plan, desc, 16, !splitK); err != nil {
			return 0, err
		}
	}
	res := plan.cands[j]
	if i < 0 || i >= len(res) {
		return len(res), nil
	}
	return len(res), c.ltMatmul(b, plan, &res[i].algo, y, x, w, bias, desc, e)
}

// LinearBias computes y(T,N) = x(T,K)·w(N,K)ᵀ + bias(N), or adds it to y
// (EpilogueBiasAccumulate), in one cublasLtMatmul with a bias epilogue, on
// the cuBLAS stream. Layouts as in Linear; bias has the output type p.Out.
// Plans (descriptors and the heuristic's algorithm) are cached per shape.
func (c *Context) LinearBias(y, x, w, bias DevicePtr, T, N, K int, p Precision, e Epilogue) error {
	if err := c.check(); err != nil {
		return err
	}
	if T <= 0 || N <= 0 || K <= 0 {
		return fmt.Errorf("cuda: LinearBias T=%d N=%d K=%d: dimensions must be positive", T, N, K)
	}
	b, err := c.blasHandle()
	if err != nil {
		return err
	}
	plan, err := c.ltPlan(b, ltKey{T, N, K, p, e})
	if err != nil {
		return err
	}
	desc := fmt.Sprintf("T=%d N=%d K=%d %v->%v", T, N, K, p.In, p.Out)
	return c.ltMatmul(b, plan, &plan.algo, y, x, w, bias, desc, e)
}

// ltMatmul runs plan with algo: y = x·wᵀ + bias, or y += x·wᵀ + bias
// with EpilogueBiasAccumulate.
func (c *Context) ltMatmul(b *blasState, plan *ltPlan, algo *C.cublasLtMatmulAlgo_t, y, x, w, bias DevicePtr, desc string, e Epilogue) error {
	if r := C.esm_cublasLtSetBiasPointer(plan.desc, C.CUdeviceptr(bias)); r != 0 {
		return blasErr("cublasLtMatmulDescSetAttribute", "BIAS_POINTER", r)
	}
	alpha, beta := C.float(1), C.float(0)
	if e == EpilogueBiasAccumulate {
		beta = 1
	}
	r := C.esm_cublasLtMatmul(b.lt, plan.desc, &alpha, C.CUdeviceptr(w), plan.a, C.CUdeviceptr(x), plan.b,
		&beta, C.CUdeviceptr(y), plan.c, C.CUdeviceptr(y), plan.c, algo,
		C.CUdeviceptr(b.ws.Ptr), C.size_t(BlasWorkspaceBytes), b.stream.handle())
	return blasErr("cublasLtMatmul", desc, r)
}
