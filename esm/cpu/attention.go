package cpu

import (
	"math"
	"slices"
	"sync/atomic"

	"github.com/esm2go/esm2go/esm"
)

// attnBlock is how many query rows one work item handles: its score block
// (attnBlock, n) stays in the L2 cache (256 KiB at n = 1024).
const attnBlock = 64

// attnItem is one (sequence, head, query block) of the attention work list.
type attnItem struct{ start, n, h, q0 int }

// Attention implements esm.Backend: for every sequence, head and block of
// up to attnBlock query rows, S = Q·K^T (one sgemm over strided views of the
// packed qkv), a row softmax in fp32, then O = P·V written straight into the
// head's columns of out. Workers take items from a shared counter, longest
// sequences first, each with its own scratch.
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
	if len(b.scratch) != b.threads || len(b.scratch[0]) < attnBlock*maxN {
		b.scratch = make([][]float32, b.threads)
		for i := range b.scratch {
			b.scratch[i] = make([]float32, attnBlock*maxN)
		}
	}
	items := b.attnItems[:0]
	for seq := 0; seq < b.seqlens.N(); seq++ {
		start, n := b.seqlens.Start(seq), b.seqlens.Len(seq)
		for h := 0; h < H; h++ {
			for q0 := 0; q0 < n; q0 += attnBlock {
				items = append(items, attnItem{start, n, h, q0})
			}
		}
	}
	slices.SortStableFunc(items, func(a, b attnItem) int { return b.n - a.n })
	b.attnItems = items
	ld := 3 * D
	var next atomic.Int64
	b.eachWorker(func(worker int) {
		s := b.scratch[worker]
		for {
			i := int(next.Add(1) - 1)
			if i >= len(items) {
				return
			}
			it := items[i]
			rows := min(attnBlock, it.n-it.q0)
			q := x[(it.start+it.q0)*ld+it.h*HD:]
			k := x[it.start*ld+D+it.h*HD:]
			v := x[it.start*ld+2*D+it.h*HD:]
			b.mm.Sgemm(true, rows, it.n, HD, 1, q, ld, k, ld, 0, s, it.n)
			b.vm.softmaxRows(s, rows, it.n)
			b.mm.Sgemm(false, rows, HD, it.n, 1, s, it.n, v, ld, 0, o[(it.start+it.q0)*D+it.h*HD:], D)
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
