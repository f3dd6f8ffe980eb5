//go:build cgo

package cudadrv

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
)

// DataType is an element type of a GEMM operand.
type DataType int

const (
	F32  DataType = iota // float
	F16                  // IEEE half
	BF16                 // bfloat16
)

// cudaDataType values (library_types.h): CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF.
func (d DataType) cuda() C.int {
	switch d {
	case F16:
		return 2
	case BF16:
		return 14
	default:
		return 0
	}
}

// Size is the element size in bytes.
func (d DataType) Size() int {
	if d == F32 {
		return 4
	}
	return 2
}

func (d DataType) String() string { return [...]string{"f32", "f16", "bf16"}[d] }

// Compute is the cuBLAS compute type (accumulation and internal precision).
type Compute int

const (
	// ComputeF32 accumulates in fp32 (CUBLAS_COMPUTE_32F). fp16/bf16 inputs
	// run on tensor cores; fp32 inputs run in plain fp32 (the handle's math
	// mode is CUBLAS_DEFAULT_MATH, so no TF32).
	ComputeF32 Compute = iota
	// ComputeF32Pedantic is CUBLAS_COMPUTE_32F_PEDANTIC: fp32 throughout, no
	// reduced-precision shortcuts; for parity tests against the CPU.
	ComputeF32Pedantic
)

// cublasComputeType_t values (cublas_api.h).
func (c Compute) cublas() C.int {
	switch c {
	case ComputeF32Pedantic:
		return 69
	default:
		return 68
	}
}

// Precision names the input and output types and the compute type of a GEMM.
type Precision struct {
	In, Out DataType
	Compute Compute
}

// Common precisions.
var (
	FP32Pedantic = Precision{F32, F32, ComputeF32Pedantic} // parity with the CPU reference
	FP16         = Precision{F16, F16, ComputeF32}         // fp16 in and out, fp32 accumulation
	BF16Prec     = Precision{BF16, BF16, ComputeF32}
)

const (
	opN               = 0  // CUBLAS_OP_N
	opT               = 1  // CUBLAS_OP_T
	gemmDefault       = -1 // CUBLAS_GEMM_DEFAULT
	cublasDefaultMath = 0  // CUBLAS_DEFAULT_MATH
	// BlasWorkspaceBytes is the cuBLAS/cuBLASLt workspace per context
	// (NVIDIA recommends 32 MiB on Hopper).
	BlasWorkspaceBytes = 32 << 20
)

type blasState struct {
	h      C.cublasHandle_t
	lt     C.cublasLtHandle_t
	ws     *Buffer
	stream *Stream
	plans  map[ltKey]*ltPlan
}

// blasHandle creates the cuBLAS and cuBLASLt handles on first use, bound to
// the context's main stream with a BlasWorkspaceBytes workspace.
func (c *Context) blasHandle() (*blasState, error) {
	if c.blas != nil {
		return c.blas, nil
	}
	b := &blasState{plans: map[ltKey]*ltPlan{}}
	if r := C.esm_cublasCreate(&b.h); r != 0 {
		return nil, blasErr("cublasCreate_v2", "", r)
	}
	ws, err := c.Alloc(BlasWorkspaceBytes)
	if err != nil {
		C.esm_cublasDestroy(b.h)
		return nil, err
	}
	b.ws = ws
	if r := C.esm_cublasLtCreate(&b.lt); r != 0 {
		C.esm_cublasDestroy(b.h)
		return nil, blasErr("cublasLtCreate", "", r)
	}
	c.blas = b
	if r := C.esm_cublasSetWorkspace(b.h, C.CUdeviceptr(ws.Ptr), BlasWorkspaceBytes); r != 0 {
		return nil, blasErr("cublasSetWorkspace_v2", fmt.Sprintf("%d bytes", BlasWorkspaceBytes), r)
	}
	if r := C.esm_cublasSetMathMode(b.h, cublasDefaultMath); r != 0 {
		return nil, blasErr("cublasSetMathMode", "CUBLAS_DEFAULT_MATH", r)
	}
	if err := c.setBlasStream(c.stream); err != nil {
		return nil, err
	}
	return b, nil
}

func (c *Context) setBlasStream(s *Stream) error {
	if r := C.esm_cublasSetStream(c.blas.h, s.handle()); r != 0 {
		return blasErr("cublasSetStream_v2", "", r)
	}
	c.blas.stream = s
	return nil
}

// SetBlasStream makes later GEMMs run on s (the main stream by default).
// The handle has one workspace: do not run GEMMs on two streams at once.
func (c *Context) SetBlasStream(s *Stream) error {
	if err := c.check(); err != nil {
		return err
	}
	if _, err := c.blasHandle(); err != nil {
		return err
	}
	return c.setBlasStream(s)
}

func (b *blasState) destroy() error {
	var errs []error
	for _, p := range b.plans {
		errs = append(errs, p.destroy())
	}
	if b.lt != nil {
		errs = append(errs, blasErr("cublasLtDestroy", "", C.esm_cublasLtDestroy(b.lt)))
	}
	if b.h != nil {
		errs = append(errs, blasErr("cublasDestroy_v2", "", C.esm_cublasDestroy(b.h)))
	}
	return errors.Join(errs...) // the workspace goes with the allocator
}

// GemmArgs is a row-major GEMM, optionally strided-batched:
//
//	C(M,N) = Alpha · op(A)(M,K) · op(B)(K,N) + Beta · C
//
// All matrices are row-major. A is stored (M,K), or (K,M) when TransA; B is
// stored (K,N), or (N,K) when TransB (so TransB with B = a PyTorch weight
// (N,K) gives X·Wᵀ). LDA, LDB, LDC are row strides in elements; 0 means
// packed (the stored column count). With Batch > 1 the matrices of batch i
// start at A + i·StrideA elements (likewise B, C), e.g. per-head attention
// scores from a (T, 3·D) QKV buffer.
type GemmArgs struct {
	TransA, TransB bool
	M, N, K        int
	A              DevicePtr
	LDA            int
	StrideA        int64
	B              DevicePtr
	LDB            int
	StrideB        int64
	C              DevicePtr
	LDC            int
	StrideC        int64
	Batch          int
	Alpha, Beta    float32
	Prec           Precision // In is the type of A and B, Out of C
}

// Gemm runs g on the cuBLAS stream with cublasGemmEx (Batch ≤ 1) or
// cublasGemmStridedBatchedEx. Row-major C = op(A)·op(B) is computed as the
// column-major Cᵀ(N,M) = op(B)ᵀ·op(A)ᵀ: cuBLAS gets B as its first operand
// and A as its second, with m=N, n=M.
func (c *Context) Gemm(g GemmArgs) error {
	if err := c.check(); err != nil {
		return err
	}
	if g.M <= 0 || g.N <= 0 || g.K <= 0 {
		return fmt.Errorf("cuda: Gemm M=%d N=%d K=%d: dimensions must be positive", g.M, g.N, g.K)
	}
	b, err := c.blasHandle()
	if err != nil {
		return err
	}
	ta, tb := C.int(opN), C.int(opN)
	lda, ldb, ldc := g.K, g.N, g.N
	if g.TransA {
		ta, lda = opT, g.M
	}
	if g.TransB {
		tb, ldb = opT, g.K
	}
	if g.LDA != 0 {
		lda = g.LDA
	}
	if g.LDB != 0 {
		ldb = g.LDB
	}
	if g.LDC != 0 {
		ldc = g.LDC
	}
	in, out, ct := g.Prec.In.cuda(), g.Prec.Out.cuda(), g.Prec.Compute.cublas()
	alpha, beta := C.float(g.Alpha), C.float(g.Beta)
	desc := fmt.Sprintf("M=%d N=%d K=%d transA=%v transB=%v lda=%d ldb=%d ldc=%d batch=%d %v->%v",
		g.M, g.N, g.K, g.TransA, g.TransB, lda, ldb, ldc, g.Batch, g.Prec.In, g.Prec.Out)
	if g.Batch <= 1 {
		r := C.esm_cublasGemmEx(b.h, tb, ta, C.int(g.N), C.int(g.M), C.int(g.K), &alpha,
			C.CUdeviceptr(g.B), in, C.int(ldb), C.CUdeviceptr(g.A), in, C.int(lda),
			&beta, C.CUdeviceptr(g.C), out, C.int(ldc), ct, gemmDefault)
		return blasErr("cublasGemmEx", desc, r)
	}
	r := C.esm_cublasGemmStridedBatchedEx(b.h, tb, ta, C.int(g.N), C.int(g.M), C.int(g.K), &alpha,
		C.CUdeviceptr(g.B), in, C.int(ldb), C.longlong(g.StrideB),
		C.CUdeviceptr(g.A), in, C.int(lda), C.longlong(g.StrideA),
		&beta, C.CUdeviceptr(g.C), out, C.int(ldc), C.longlong(g.StrideC),
		C.int(g.Batch), ct, gemmDefault)
	return blasErr("cublasGemmStridedBatchedEx", desc, r)
}

// Linear computes the model's projection without bias,
//
//	y(T,N) = x(T,K) · w(N,K)ᵀ
//
// with x, y row-major and w as PyTorch stores it, i.e. the cuBLAS call
// GemmEx(OP_T, OP_N, m=N, n=T, k=K, A=w lda=K, B=x ldb=K, C=y ldc=N).
func (c *Context) Linear(y, x, w DevicePtr, T, N, K int, p Precision) error {
	return c.Gemm(GemmArgs{TransB: true, M: T, N: N, K: K, A: x, B: w, C: y, Alpha: 1, Prec: p})
}
