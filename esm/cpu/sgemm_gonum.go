package cpu

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// sgemm computes c(m,n) = alpha*a(m,k)·op(b) + beta*c with row-major operands,
// op(b) = b(n,k)^T when transB, else b(k,n). OpenBLAS is used when a shared
// library is found at run time (dlopen: it is not a build requirement); the
// pure-Go gonum kernel otherwise (about 9x slower on 2 cores).
type sgemm interface {
	Sgemm(transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
	Name() string
	Close()
}

type gonumBLAS struct{}

func (gonumBLAS) Name() string { return "gonum (pure Go; install OpenBLAS for ~9x faster matmul)" }

func (gonumBLAS) Sgemm(transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	tb := blas.NoTrans
	if transB {
		tb = blas.Trans
	}
	gonum.Implementation{}.Sgemm(blas.NoTrans, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func (gonumBLAS) Close() {}
