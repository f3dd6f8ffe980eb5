package esm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// Contact prediction, as fair-esm's ContactPredictionHead and HF's
// EsmContactPredictionHead compute it from a sequence's attention
// probabilities A (layers, heads, n, n), n = L+2 tokens with BOS and EOS:
//
//	x_c = A_c without the BOS and EOS rows and columns   c = layer*heads + head
//	s_c = x_c + x_cᵀ                                     symmetrize
//	a_c = s_c - rowsum(s_c)·colsum(s_c) / sum(s_c)       average product correction (APC)
//	contacts = sigmoid(Σ_c w_c·a_c + bias)               the checkpoint's logistic regression
//
// (HF multiplies the EOS row and column by 0 before cutting them off; for
// one unpadded sequence that is the same as dropping them.) Every step is
// linear in A_c or per channel, so Model.Contacts never holds A: layer by
// layer it asks the backend for a few heads' (n, n) maps of one sequence
// (Backend.AttentionProbs), applies symmetrize and APC to each on the host
// and adds w_c times the result into one (L, L) accumulator per sequence.

// The contact head's parameters, by canonical name.
const (
	ContactWeightName = "contact_head.regression.weight" // (1, Layers*Heads)
	ContactBiasName   = "contact_head.regression.bias"   // (1)
)

// ContactHead is the checkpoint's contact regression: a logistic
// regression over the Layers*Heads attention channels.
type ContactHead struct {
	Weight []float32 // (Layers*Heads), channel layer*Heads + head
	Bias   float32
}

// loadContactHead reads the contact regression of src, or returns nil
// when src has none.
func loadContactHead(cfg Config, src Source) (*ContactHead, error) {
	hasW, hasB := src.Has(ContactWeightName), src.Has(ContactBiasName)
	switch {
	case !hasW && !hasB:
		return nil, nil
	case !hasB:
		return nil, fmt.Errorf("esm: the checkpoint has %s but no %s: %w", ContactWeightName, ContactBiasName, ErrMissing)
	case !hasW:
		return nil, fmt.Errorf("esm: the checkpoint has %s but no %s: %w", ContactBiasName, ContactWeightName, ErrMissing)
	}
	w, err := src.Float32(ContactWeightName, 1, cfg.Layers*cfg.Heads)
	if err != nil {
		return nil, fmt.Errorf("esm: parameter %s (want %d layers × %d heads inputs): %w", ContactWeightName, cfg.Layers, cfg.Heads, err)
	}
	b, err := src.Float32(ContactBiasName, 1)
	if err != nil {
		return nil, fmt.Errorf("esm: parameter %s: %w", ContactBiasName, err)
	}
	return &ContactHead{Weight: w, Bias: b[0]}, nil
}

// CheckAttentionProbs checks the arguments of Backend.AttentionProbs
// against a batch of nseq sequences: the backends' one shared check.
func CheckAttentionProbs(nseq, H, HD, seq, h0, nh int) error {
	switch {
	case H <= 0 || HD <= 0:
		return fmt.Errorf("attention probs: heads %d and head dim %d must be positive", H, HD)
	case seq < 0 || seq >= nseq:
		return fmt.Errorf("attention probs: sequence %d outside the batch's 0..%d", seq, nseq-1)
	case h0 < 0 || nh <= 0 || h0+nh > H:
		return fmt.Errorf("attention probs: heads %d..%d outside 0..%d", h0, h0+nh-1, H-1)
	}
	return nil
}

// HasContactHead reports whether Contacts can be served.
func (m *Model) HasContactHead() bool { return m.params.Contact != nil }

// ContactProbsBytes bounds the attention probabilities Contacts holds at
// once: heads are taken a few at a time so that nh·n·n fp32 stays within
// it (at least one head).
const ContactProbsBytes = 16 << 20

// contactHeads is how many heads Contacts reads at once for sequences of
// up to n tokens.
func (m *Model) contactHeads(n int) int {
	if n < 1 {
		return m.Cfg.Heads
	}
	return min(m.Cfg.Heads, max(1, ContactProbsBytes/(4*n*n)))
}

// ContactBytes is the memory Contacts needs beyond the model's activations
// for one sequence of n tokens (BOS and EOS included): its (L, L) float32
// result plus the attention probabilities of a few heads on the backend
// and their host copy. Callers use it to refuse work before it starts.
func (m *Model) ContactBytes(n int) int64 {
	n = max(n, 0)
	L, nn := int64(max(n-2, 0)), int64(n)*int64(n)
	return 4*L*L + 2*4*int64(m.contactHeads(n))*nn
}

// Contacts predicts the contact map of every sequence of b: maps[s] is
// (L, L) row-major float32, L = the sequence's residues (tokens minus BOS
// and EOS), symmetric, each value the probability that residues i and j
// are in contact. It runs the model layer by layer and reads each layer's
// attention probabilities one sequence and a few heads at a time (see the
// top of this file), so memory grows with the longest sequence's n² (see
// ContactBytes), never with layers × heads. ctx is checked between those
// reads. Call it from the goroutine that owns the backend; the model's
// activations are reused, so do not interleave it with a Launch whose
// fence has not been waited for.
func (m *Model) Contacts(ctx context.Context, b *Batch) ([][]float32, error) {
	if m.closed {
		return nil, ErrModelClosed
	}
	head := m.params.Contact
	if head == nil {
		return nil, fmt.Errorf("esm: contacts: the checkpoint has no contact head (%s)", ContactWeightName)
	}
	if err := b.Check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	T, nseq := len(b.Tokens), b.NumSeqs()
	H, HD := m.Cfg.Heads, m.Cfg.HeadDim()
	maxN := b.Seqlens.MaxLen()
	nn := maxN * maxN
	nh := m.contactHeads(maxN)
	if err := m.reserve(T, nseq); err != nil {
		return nil, err
	}
	probs, err := m.be.Alloc(nh*nn, true)
	if err != nil {
		return nil, fmt.Errorf("esm: contacts: attention probabilities of %d heads × %d² tokens: %w", nh, maxN, err)
	}
	defer m.be.Free(probs)
	host := make([]float32, nh*nn)
	maps := make([][]float32, nseq)
	for s := range maps {
		L := b.Seqlens.Len(s) - 2
		maps[s] = make([]float32, L*L)
	}
	ch := newChannelAdder(runtime.GOMAXPROCS(0), maxN-2)

	if err := m.be.SetBatch(b); err != nil {
		return nil, err
	}
	if err := m.embed(); err != nil {
		return nil, fmt.Errorf("esm: contacts: %w", err)
	}
	for i := range m.params.Layers {
		probe := func() error {
			for s := 0; s < nseq; s++ {
				n := b.Seqlens.Len(s)
				for h0 := 0; h0 < H; h0 += nh {
					if err := ctx.Err(); err != nil {
						return err
					}
					cnt := min(nh, H-h0)
					if err := m.be.AttentionProbs(probs, m.qkv, H, HD, s, h0, cnt); err != nil {
						return err
					}
					if err := m.be.Read(host[:cnt*n*n], probs); err != nil {
						return err
					}
					for j := 0; j < cnt; j++ {
						ch.add(maps[s], host[j*n*n:(j+1)*n*n], n, head.Weight[i*H+h0+j])
					}
				}
			}
			return nil
		}
		if err := m.layer(i, T, probe); err != nil {
			// Let queued work finish, so the model can be used again at once.
			if f, ferr := m.be.Fence(); ferr == nil {
				err = errors.Join(err, f.Wait())
			}
			if ctx.Err() != nil {
				return nil, err
			}
			return nil, fmt.Errorf("esm: contacts: layer %d: %w", i, err)
		}
	}
	// Let the backend finish the last layer's queued ops (nothing reads
	// them) before the buffers are reused.
	f, err := m.be.Fence()
	if err == nil {
		err = f.Wait()
	}
	if err != nil {
		return nil, fmt.Errorf("esm: contacts: %w", err)
	}
	for s := range maps {
		finishContacts(maps[s], b.Seqlens.Len(s)-2, head.Bias)
	}
	return maps, nil
}

// contactTile is the side of the square blocks addChannel works in, so that
// the transposed reads of p stay in cache.
const contactTile = 64

// channelAdder adds channels into contact accumulators with a few
// goroutines; its scratch is sized for the longest sequence.
type channelAdder struct {
	workers int
	a       []float64   // (L) row sums of s
	cols    [][]float64 // per worker (L) partial column sums of x
}

func newChannelAdder(workers, maxL int) *channelAdder {
	c := &channelAdder{workers: max(1, workers), a: make([]float64, maxL)}
	c.cols = make([][]float64, c.workers)
	for w := range c.cols {
		c.cols[w] = make([]float64, maxL)
	}
	return c
}

// add adds w·APC(symmetrize(x)) to the upper triangle (j >= i) of acc
// (L, L), L = n-2, where x is p (n, n) without its first and last rows and
// columns (BOS and EOS):
//
//	s = x + xᵀ
//	a[i] = Σ_j s[i][j] = rowsum_i(x) + colsum_i(x)   (= Σ_j s[j][i]: s is symmetric)
//	acc[i][j] += w · (s[i][j] - a[i]·a[j] / Σ_i a[i])
//
// Sums are float64. finishContacts mirrors the triangle afterwards.
func (c *channelAdder) add(acc, p []float32, n int, w float32) {
	L := n - 2
	x := func(i, j int) float32 { return p[(i+1)*n+j+1] }
	a := c.a[:L]
	// Row sums into a, column sums per worker, rows split into ranges.
	workers := min(c.workers, max(1, L/contactTile))
	var wg sync.WaitGroup
	for wk := 0; wk < workers; wk++ {
		lo, hi := L*wk/workers, L*(wk+1)/workers
		col := c.cols[wk][:L]
		clear(col)
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				row := p[(i+1)*n+1 : (i+1)*n+1+L]
				var r float64
				for j, v := range row {
					r += float64(v)
					col[j] += float64(v)
				}
				a[i] = r
			}
		})
	}
	wg.Wait()
	var total float64
	for i := range a {
		for wk := 0; wk < workers; wk++ {
			a[i] += c.cols[wk][i]
		}
		total += a[i]
	}
	inv := 1 / total // +Inf when every probability underflowed, as 0/0 in PyTorch gives NaN below
	wd := float64(w)
	// The upper triangle, one block row of tiles per work item.
	tiles := (L + contactTile - 1) / contactTile
	var next atomic.Int64
	for wk := 0; wk < min(c.workers, tiles); wk++ {
		wg.Go(func() {
			for {
				bi := int(next.Add(1) - 1)
				if bi >= tiles {
					return
				}
				i0, i1 := bi*contactTile, min(L, (bi+1)*contactTile)
				for j0 := i0; j0 < L; j0 += contactTile {
					j1 := min(L, j0+contactTile)
					for i := i0; i < i1; i++ {
						ai := a[i] * inv
						r := acc[i*L : (i+1)*L]
						for j := max(j0, i); j < j1; j++ {
							s := float64(x(i, j)) + float64(x(j, i))
							r[j] += float32(wd * (s - ai*a[j]))
						}
					}
				}
			}
		})
	}
	wg.Wait()
}

// finishContacts turns an accumulated upper triangle into the symmetric
// contact map: acc[i][j] = acc[j][i] = sigmoid(acc[i][j] + bias), j >= i.
func finishContacts(acc []float32, L int, bias float32) {
	for i := 0; i < L; i++ {
		for j := i; j < L; j++ {
			v := float32(1 / (1 + math.Exp(-(float64(acc[i*L+j]) + float64(bias)))))
			acc[i*L+j], acc[j*L+i] = v, v
		}
	}
}
