package cpu

import (
	"sync/atomic"

	"github.com/esm2go/esm2go/esm"
)

// AttentionProbs implements esm.Backend: for each head of the range and
// block of up to attnBlock query rows, S = Q·K^T written straight into the
// head's (n, n) slab of probs, then the row softmax, both as Attention
// computes them (the attention kernels where the head dim allows, else
// sgemm over strided views of the packed qkv and softmaxRows): the
// weights Attention multiplies v by, bit for bit on the sgemm path and up
// to the last bit with the kernels, where Attention multiplies v by the
// row's exponentials and scales the row's output by 1/sum, which this
// multiplies into the weights. Workers take blocks from a shared counter.
func (b *Backend) AttentionProbs(probs, qkv esm.Tensor, H, HD, seq, h0, nh int) error {
	if b.closed {
		return errClosed
	}
	if err := esm.CheckAttentionProbs(b.seqlens.N(), H, HD, seq, h0, nh); err != nil {
		return err
	}
	T, D := b.T(), H*HD
	start, n := b.seqlens.Start(seq), b.seqlens.Len(seq)
	if err := checkLen("attention probs qkv", qkv, T*3*D); err != nil {
		return err
	}
	if err := checkLen("attention probs", probs, nh*n*n); err != nil {
		return err
	}
	x, p := data(qkv), data(probs)
	ld := 3 * D
	blocks := (n + attnBlock - 1) / attnBlock
	kern := newAttnKernels()
	fused := kern.ok(HD)
	var next atomic.Int64
	b.eachWorker(func(int) {
		var kt, qp, red []float32 // the kernels' scratch: K^T of head packed, a query block, row maxima
		packed := -1
		if fused {
			kt, qp, red = make([]float32, ktLen(n, HD)), make([]float32, attnBlock*HD), make([]float32, qkRed(attnBlock))
		}
		for {
			i := int(next.Add(1) - 1)
			if i >= nh*blocks {
				return
			}
			h, q0 := i/blocks, (i%blocks)*attnBlock
			rows := min(attnBlock, n-q0)
			q := x[(start+q0)*ld+(h0+h)*HD:]
			k := x[start*ld+D+(h0+h)*HD:]
			s := p[h*n*n+q0*n : h*n*n+(q0+rows)*n]
			if fused {
				if packed != h {
					kern.pack(k, nil, ld, n, HD, kt, nil)
					packed = h
				}
				kern.qk(q, ld, qp, kt, rows, n, HD, s, red, smNorm)
				continue
			}
			b.mm.Sgemm(true, rows, n, HD, 1, q, ld, k, ld, 0, s, n)
			b.vm.softmaxRows(s, rows, n)
		}
	})
	return nil
}
