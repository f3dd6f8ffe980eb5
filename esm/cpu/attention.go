package cpu

import (
	"math"
	"slices"
	"sync/atomic"

	"github.com/esm2go/esm2go/esm"
)

// attnBlock is how many query rows one block handles: its score block
// (attnBlock, n) stays in the L2 cache (256 KiB at n = 1024).
const attnBlock = 64

// attnItem is one (sequence, head) of the attention work list (off: where
// the sequence's packed Q, K^T and V start in b.packed), or with the
// sgemm path one (sequence, head, query block).
type attnItem struct{ start, n, h, q0, off int }

// Attention implements esm.Backend: for every sequence, head and block of
// up to attnBlock query rows, S = Q·K^T over strided views of the packed
// qkv, a row softmax in fp32 (softmaxRows, as AttentionProbs), then O = P·V
// written straight into the head's columns of out. Where the head dim is a
// multiple of 8 (every ESM2 size) the products are the C kernels of
// attn_kernels.go, Q, K^T and V packed once per (sequence, head) (for
// every head in one pass over the rows where the batch is at most
// packAllMax tokens, else K^T and V by each head's worker) and the
// whole head done by one worker in strips of a few query rows (scores,
// softmax and P·V of a strip while it is in cache), P·V multiplying v by
// the exponentials and scaling each output row by its 1/sum (HD products
// a row instead of n); otherwise two sgemm calls per block.
// Workers take items from a shared counter, longest sequences first, each
// with its own scratch. A NaN or infinite element of q, k or v reaches
// exactly the rows attention.Reference says (its row, its sequence, its
// column of its sequence, in its head); softmax weights never underflow to
// 0 (see vmath), and neither product skips a zero factor, so a NaN of v
// reaches every row of its sequence.
func (b *Backend) Attention(out, qkv esm.Tensor, H, HD int) error {
	if b.closed {
		return errClosed
	}
	T, D := b.T(), H*HD
	if err := checkLen("attention qkv", qkv, T*3*D); err != nil {
		return err
	}
	if err := checkLen("attention out", out, T*D); err != nil {
		return err
	}
	x, o := data(qkv), data(out)
	maxN := b.seqlens.MaxLen()
	kern := newAttnKernels()
	fused := kern.ok(HD)
	// With the kernels, Q, K^T and V of every head are packed first in one
	// pass where the batch is at most packAllMax tokens; otherwise (a long
	// sequence: its O(n) packing is nothing next to its O(n²) products, and
	// the packed copy would be as large as qkv) each item packs its own
	// head's K^T and V into its worker's scratch. Per worker: scores
	// (attnBlock, maxN) without the kernels; the head's scratch with them,
	// after K^T and V where each item packs its own.
	prepack := fused && T <= b.packAllMax
	need := attnBlock * maxN
	if fused {
		need = headLenMax(maxN, HD)
		if !prepack {
			need += ktLen(maxN, HD) + maxN*HD
		}
	}
	if len(b.scratch) != b.threads || len(b.scratch[0]) < need {
		b.scratch = make([][]float32, b.threads)
		for i := range b.scratch {
			b.scratch[i] = make([]float32, need)
		}
	}
	items, units := b.attnItems[:0], b.packUnits[:0]
	off := 0
	for seq := 0; seq < b.seqlens.N(); seq++ {
		start, n := b.seqlens.Start(seq), b.seqlens.Len(seq)
		for j0 := 0; prepack && j0 < n; j0 += packKeys {
			units = append(units, packUnit{start, n, j0, off})
		}
		for h := 0; h < H; h++ {
			if fused {
				items = append(items, attnItem{start, n, h, 0, off})
				continue
			}
			for q0 := 0; q0 < n; q0 += attnBlock {
				items = append(items, attnItem{start, n, h, q0, 0})
			}
		}
		off += packedLen(n, H, HD)
	}
	b.packUnits = units
	if prepack {
		b.packAll(kern, x, units, off, H, HD)
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
			k := x[it.start*ld+D+it.h*HD:]
			v := x[it.start*ld+2*D+it.h*HD:]
			if !fused {
				rows := min(attnBlock, it.n-it.q0)
				q := x[(it.start+it.q0)*ld+it.h*HD:]
				b.mm.Sgemm(true, rows, it.n, HD, 1, q, ld, k, ld, 0, s, it.n)
				b.vm.softmaxRows(s, rows, it.n)
				b.mm.Sgemm(false, rows, HD, it.n, 1, s, it.n, v, ld, 0, o[(it.start+it.q0)*D+it.h*HD:], D)
				continue
			}
			if prepack {
				q, kt, vp := b.packedHead(it.off, it.n, it.h, H, HD)
				kern.head(q, HD, kt, vp, it.n, HD, o[it.start*D+it.h*HD:], D, s[:headLen(it.n, HD)])
				continue
			}
			kt, vp := s[:ktLen(it.n, HD)], s[ktLen(maxN, HD):][:it.n*HD]
			kern.pack(k, v, ld, it.n, HD, kt, vp)
			kern.head(x[it.start*ld+it.h*HD:], ld, kt, vp, it.n, HD, o[it.start*D+it.h*HD:], D,
				s[ktLen(maxN, HD)+maxN*HD:][:headLen(it.n, HD)])
		}
	})
	return nil
}

// packUnit is one block of keys of one sequence for packAll (off: the
// sequence's part of b.packed).
type packUnit struct{ start, n, j0, off int }

// packKeys is how many keys of a sequence one packRows call takes.
const packKeys = 64

// packAllMaxTokens is the default Backend.packAllMax: twice the default
// CPU batch, so every batch of the default budget packs in one pass while
// the packed copy (3·D floats a token, as qkv) stays bounded for long
// proteins, which pack head by head.
const packAllMaxTokens = 2 * esm.DefaultCPUTokensPerBatch

// packAll packs Q, K^T and V of every (sequence, head) of the batch into
// b.packed (packRows' layouts, total floats), its units (blocks of
// packKeys keys) split over the workers: each token's row of qkv is read
// once, in order, rather than a few of its cache lines for each head. Each
// sequence's part holds all heads' Q, then K^T, then V (packedHead), after
// its predecessors'.
func (b *Backend) packAll(kern attnKernels, x []float32, units []packUnit, total, H, HD int) {
	if len(b.packed) < total {
		b.packed = make([]float32, total)
	}
	ld := 3 * H * HD
	b.parallel(len(units), 1, func(lo, hi int) {
		for _, u := range units[lo:hi] {
			q, kt, vp := b.packedHead(u.off, u.n, 0, H, HD)
			kern.packRows(x[u.start*ld:], ld, u.n, H, HD, u.j0, min(u.j0+packKeys, u.n), q, kt, vp)
		}
	})
}

// packedLen is the length of a sequence of n tokens' part of b.packed.
func packedLen(n, H, HD int) int { return H * (2*n*HD + ktLen(n, HD)) }

// packedHead returns head h's packed Q (rows of HD), K^T and V of the
// sequence of n tokens whose part of b.packed starts at off, as packAll
// left them; for h = 0 they run on over every head of the sequence.
func (b *Backend) packedHead(off, n, h, H, HD int) (q, kt, vp []float32) {
	p := b.packed[off : off+packedLen(n, H, HD)]
	q = p[h*n*HD : H*n*HD]
	kt = p[H*n*HD+h*ktLen(n, HD) : H*n*HD+H*ktLen(n, HD)]
	vp = p[H*n*HD+H*ktLen(n, HD)+h*n*HD:]
	return q, kt, vp
}

// headLenMax bounds headLen(n, hd) for every n <= maxN: the strip
// heights fall as n grows, so a shorter sequence of the batch may need
// more than the longest. AVX2 strips: queries and 1/sums at most
// 24·(hd+8) floats, scores headRows(n)·ktPad(n) floats, within 6 KiFloats
// unless headRows is held at its floor of 6, and then 6·ktPad(n) <=
// 6·ktPad(maxN). 16-lane strips alike: 48·(hd+17), and 12 KiFloats or
// 12·ktPad(maxN).
func headLenMax(maxN, hd int) int {
	return max(24*(hd+8)+max((24<<10)/4, 6*ktPad(maxN)),
		48*(hd+17)+max((48<<10)/4, 12*ktPad(maxN)))
}

// softmaxRow is the scalar Go twin of vmath.softmaxRows.
//
// Non-finite scores. ESM2's attention has no mask (packing replaces
// padding), so no score is legitimately -Inf, and from finite q and k a
// score overflows fp32 (|q·k| > 3.4e38) only if q or k is already ~1e18,
// far beyond LayerNorm'd activations (|x| <= sqrt(D)) through any sane
// weights. A NaN or an infinity (either sign) among a row's scores
// therefore means a broken input or weight, and the whole row comes out
// NaN: it is never treated as a masked key or a one-hot row. This is
// stricter than PyTorch's softmax, which gives a -Inf score weight 0.
func softmaxRow(r []float32) {
	m := float32(math.Inf(-1))
	var bad float32 // 0, or NaN once a non-finite score is seen
	for _, v := range r {
		m = max(m, v)
		bad += v - v
	}
	inv := 1 / (expSub(r, m) + bad)
	for i := range r {
		r[i] *= inv
	}
}
