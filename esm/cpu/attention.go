package cpu

import (
	"math"

	"github.com/esm2go/esm2go/esm"
)

// Attention implements esm.Backend: for every (sequence, head) pair,
// S = Q·K^T (one sgemm over strided views of the packed qkv), a row softmax
// in fp32, then O = P·V written straight into the head's columns of out.
// Pairs are spread over the worker goroutines, each with its own scratch.
func (b *Backend) Attention(out, qkv esm.Tensor, H, HD int) error {
	T, D := b.T(), H*HD
	if err := checkLen("attention qkv", qkv, T*3*D); err != nil {
		return err
	}
	if err := checkLen("attention out", out, T*D); err != nil {
		return err
	}
	x, o := data(qkv), data(out)
	maxN := b.seqlens.MaxLen()
	if len(b.scratch) != b.threads || len(b.scratch[0]) < maxN*maxN {
		b.scratch = make([][]float32, b.threads)
		for i := range b.scratch {
			b.scratch[i] = make([]float32, maxN*maxN)
		}
	}
	ld := 3 * D
	nseq := b.seqlens.N()
	// Work items in order of decreasing cost would balance better; sequences
	// are split evenly by count, which is close enough for packed batches.
	b.parallelWorkers(nseq*H, func(worker, lo, hi int) {
		s := b.scratch[worker]
		for item := lo; item < hi; item++ {
			seq, h := item/H, item%H
			start, n := b.seqlens.Start(seq), b.seqlens.Len(seq)
			q := x[start*ld+h*HD:]
			k := x[start*ld+D+h*HD:]
			v := x[start*ld+2*D+h*HD:]
			b.mm.Sgemm(true, n, n, HD, 1, q, ld, k, ld, 0, s, n)
			b.vm.softmaxRows(s, n, n)
			b.mm.Sgemm(false, n, HD, n, 1, s, n, v, ld, 0, o[start*D+h*HD:], D)
		}
	})
	return nil
}

// softmaxRow is the scalar Go twin of vmath.softmaxRows.
func softmaxRow(r []float32) {
	m := float32(math.Inf(-1))
	for _, v := range r {
		m = max(m, v)
	}
	inv := 1 / expSub(r, m)
	for i := range r {
		r[i] *= inv
	}
}
