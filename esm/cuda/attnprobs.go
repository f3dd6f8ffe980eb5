//go:build cgo

package cuda

import (
	"fmt"
	"math"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/internal/cudadrv"
)

// AttentionProbs implements esm.Backend: the scores S_h(n,n) = Q_h·K_hᵀ of
// the nh heads in one strided-batched cuBLAS GEMM over the sequence's rows
// of the packed qkv (inputs in the compute type, fp32 output and
// accumulation), written into probs (nh, n, n) fp32, then softmax_rows_f32
// (kernels.cu) over its nh·n rows in place. Its CPU twin is esm/cpu's
// AttentionProbs; esm/backendtest compares the two.
func (b *Backend) AttentionProbs(probs, qkv esm.Tensor, H, HD, seq, h0, nh int) error {
	if err := esm.CheckAttentionProbs(b.nseq, H, HD, seq, h0, nh); err != nil {
		return fmt.Errorf("cuda: %w", err)
	}
	p, q := tens(probs), tens(qkv)
	D := H * HD
	start, n := b.seqlens.Start(seq), b.seqlens.Len(seq)
	if err := b.need("attention probs qkv", q, b.T*3*D); err != nil {
		return err
	}
	if err := b.need("attention probs", p, nh*n*n); err != nil {
		return err
	}
	if p.dt != cudadrv.F32 {
		return fmt.Errorf("cuda: attention probs: destination is %v, want a wide (fp32) tensor", p.dt)
	}
	es := q.dt.Size()
	row := q.buf.Ptr.Add(es * start * 3 * D) // the sequence's first token
	err := b.ctx.Gemm(cudadrv.GemmArgs{
		TransB: true, M: n, N: n, K: HD,
		A: row.Add(es * h0 * HD), LDA: 3 * D, StrideA: int64(HD),
		B: row.Add(es * (D + h0*HD)), LDB: 3 * D, StrideB: int64(HD),
		C: p.buf.Ptr, StrideC: int64(n) * int64(n), Batch: nh,
		Alpha: 1, Prec: cudadrv.Precision{In: q.dt, Out: cudadrv.F32, Compute: cudadrv.ComputeF32},
	})
	if err != nil {
		return fmt.Errorf("cuda: attention probs n=%d heads %d..%d: %w", n, h0, h0+nh-1, err)
	}
	return b.k.softmaxRows(p.buf.Ptr, nh*n, n)
}

// softmaxRows: x(rows, n) f32 in place, one block of 256 threads per row.
func (k *kernels) softmaxRows(x cudadrv.DevicePtr, rows, n int) error {
	if err := positive("softmax_rows", rows, n); err != nil {
		return err
	}
	if rows > math.MaxInt32 || n > math.MaxInt32 {
		return fmt.Errorf("softmax_rows: %d rows of %d exceed the grid", rows, n)
	}
	return k.launch("softmax_rows_f32", [3]uint32{uint32(rows), 1, 1}, block256, x, int32(n))
}
