package backendtest

import (
	"fmt"
	"math"

	"github.com/esm2go/esm2go/esm"
)

// refAttentionProbs is softmax(q·kᵀ) of heads h0..h0+nh-1 of sequence seq,
// (nh, n, n), in float64 from qkv (T, 3D) as the backend holds it.
func refAttentionProbs(x []float32, b *esm.Batch, H, HD, seq, h0, nh int) []float32 {
	D := H * HD
	start, n := b.Seqlens.Start(seq), b.Seqlens.Len(seq)
	out := make([]float32, nh*n*n)
	row := make([]float64, n)
	for h := 0; h < nh; h++ {
		for i := 0; i < n; i++ {
			q := x[(start+i)*3*D+(h0+h)*HD:]
			m := math.Inf(-1)
			for j := 0; j < n; j++ {
				k := x[(start+j)*3*D+D+(h0+h)*HD:]
				var s float64
				for d := 0; d < HD; d++ {
					s += float64(q[d]) * float64(k[d])
				}
				row[j] = s
				m = max(m, s)
			}
			var z float64
			for j := range row {
				row[j] = math.Exp(row[j] - m)
				z += row[j]
			}
			for j, v := range row {
				out[h*n*n+i*n+j] = float32(v / z)
			}
		}
	}
	return out
}

// checkAttentionProbs compares AttentionProbs with refAttentionProbs for
// the first and last sequence of a batch, all heads at once and a head
// range that does not start at 0; and checks that bad arguments are
// errors, not panics or out-of-bounds accesses.
func checkAttentionProbs(e *env, lens []int, HD int) {
	const H = 2
	b := e.batch(lens, false)
	T, D := len(b.Tokens), H*HD
	qkv := e.upload(e.randn(T*3*D, 1/math.Sqrt(math.Sqrt(float64(HD)))), false)
	x := e.read(qkv, T*3*D)
	maxN := b.Seqlens.MaxLen()
	probs := e.alloc(H*maxN*maxN, true)
	last := b.NumSeqs() - 1
	for _, c := range []struct{ seq, h0, nh int }{{0, 0, H}, {last, 1, 1}} {
		n := b.Seqlens.Len(c.seq)
		e.must(e.be.AttentionProbs(probs, qkv, H, HD, c.seq, c.h0, c.nh))
		e.compare(fmt.Sprintf("seq %d heads %d+%d", c.seq, c.h0, c.nh), e.read(probs, c.nh*n*n),
			refAttentionProbs(x, b, H, HD, c.seq, c.h0, c.nh))
	}
	small := e.alloc(1, true)
	for _, c := range []struct {
		name        string
		p           esm.Tensor
		seq, h0, nh int
	}{
		{"seq -1", probs, -1, 0, 1}, {"seq past the batch", probs, last + 1, 0, 1},
		{"no heads", probs, 0, 0, 0}, {"heads past H", probs, 0, 1, 2}, {"h0 -1", probs, 0, -1, 1},
		{"probs too small", small, 0, 0, 1},
	} {
		if err := e.be.AttentionProbs(c.p, qkv, H, HD, c.seq, c.h0, c.nh); err == nil {
			e.t.Errorf("%s: AttentionProbs(%s) gave no error", e.op, c.name)
		}
	}
}
