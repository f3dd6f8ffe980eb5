package attention

import (
	"fmt"
	"math"
)

// Legend: T = total tokens of the packed batch, H = heads, hd = head dim,
// D = H*hd. Q, K and V are row-major with a row stride ld (elements), so they
// can be column blocks of one packed (T, 3*D) QKV buffer: q = qkv[0:],
// k = qkv[D:], v = qkv[2*D:], ld = 3*D. Head h of a row occupies columns
// [h*hd, (h+1)*hd). The output is (T, D) with row stride ldo, heads merged in
// the same order.

// Args are the operands of one varlen attention call.
type Args struct {
	Out     []float32 // (T, ldo), written
	LdOut   int
	Q, K, V []float32 // (T, ld) each, read
	Ld      int
	Seqlens Seqlens
	H, HD   int
	Scale   float32 // multiplies q·k; ESM2 pre-scales q, so it passes 1
}

// Check validates shapes so a kernel can trust them.
func (a *Args) Check() error {
	T := a.Seqlens.Total()
	if err := a.Seqlens.Validate(T); err != nil {
		return err
	}
	D := a.H * a.HD
	if a.H < 1 || a.HD < 1 {
		return fmt.Errorf("attention: bad heads %d x head dim %d", a.H, a.HD)
	}
	if a.Ld < D || a.LdOut < D {
		return fmt.Errorf("attention: row strides ld=%d ldo=%d smaller than D=%d", a.Ld, a.LdOut, D)
	}
	need := (T-1)*a.Ld + D
	for name, s := range map[string][]float32{"q": a.Q, "k": a.K, "v": a.V} {
		if len(s) < need {
			return fmt.Errorf("attention: %s has %d elements, need %d for T=%d ld=%d", name, len(s), need, T, a.Ld)
		}
	}
	if len(a.Out) < (T-1)*a.LdOut+D {
		return fmt.Errorf("attention: out has %d elements, need %d", len(a.Out), (T-1)*a.LdOut+D)
	}
	return nil
}

// Reference computes softmax(scale*Q·K^T)·V independently for every sequence
// and head, in plain float32 Go with float32 softmax statistics (as PyTorch's
// fp32 eager path). It is the twin every accelerated kernel is checked against.
//
// Non-finite values are never hidden. This attention has no mask (packing
// replaces padding), so no score is legitimately infinite: a NaN or an
// infinite score (either sign) makes its whole query row NaN, where
// PyTorch would give a -Inf score weight 0. So a NaN or infinite element of
// q poisons its own row (that head), of k every row of its sequence, and of
// v its column in every row of its sequence (every weight is > 0 in exact
// arithmetic, and 0*NaN is NaN where fp32 underflows). Other sequences and
// heads are untouched.
func Reference(a Args) error {
	if err := a.Check(); err != nil {
		return err
	}
	scores := make([]float32, a.Seqlens.MaxLen())
	for s := 0; s < a.Seqlens.N(); s++ {
		for h := 0; h < a.H; h++ {
			referenceHead(&a, a.Seqlens.Start(s), a.Seqlens.Len(s), h, scores)
		}
	}
	return nil
}

// referenceHead handles one (sequence, head) pair: n tokens from row start.
func referenceHead(a *Args, start, n, h int, scores []float32) {
	off := h * a.HD
	for i := 0; i < n; i++ {
		q := a.Q[(start+i)*a.Ld+off:][:a.HD]
		m := float32(math.Inf(-1))
		var bad float32 // 0, or NaN once a score is NaN or infinite
		for j := 0; j < n; j++ {
			k := a.K[(start+j)*a.Ld+off:][:a.HD]
			var dot float32
			for d, qd := range q {
				dot += qd * k[d]
			}
			dot *= a.Scale
			scores[j] = dot
			m = max(m, dot)
			bad += dot - dot
		}
		sum := bad
		for j := 0; j < n; j++ {
			e := float32(math.Exp(float64(scores[j] - m)))
			scores[j] = e
			sum += e
		}
		o := a.Out[(start+i)*a.LdOut+off:][:a.HD]
		clear(o)
		inv := 1 / sum
		for j := 0; j < n; j++ {
			p := scores[j] * inv
			v := a.V[(start+j)*a.Ld+off:][:a.HD]
			for d := range o {
				o[d] += p * v[d]
			}
		}
	}
}
