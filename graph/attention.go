package graph

import (
	"fmt"
	"hash"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/chewxy/hm"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/esm2go/esm2go/attention"
)

// attentionOp is varlen self-attention over the packed qkv (T, 3D) =
// [q | k | v] (q already scaled by head_dim^-0.5 and rotated): for every
// sequence s and head h, out_s,h = softmax(q_s,h · k_s,hᵀ) · v_s,h, with no
// attention across sequences and no mask (packing replaces padding). The
// output (T, D) holds the heads side by side, head h in columns h*HD...
// The softmax is computed in fp32 with float64 exponentials.
//
// The backward (attentionGradOp) recomputes the probabilities P per
// sequence and head (as FlashAttention does: nothing of size T^2 is kept
// between forward and backward) and returns dqkv (T, 3D):
//
//	dV = Pᵀ·dO   dP = dO·Vᵀ   dS = P∘(dP - rowsum(P∘dP))   dQ = dS·K   dK = dSᵀ·Q
type attentionOp struct {
	plain
	seqlens attention.Seqlens
	H, HD   int
}

func (op attentionOp) Arity() int    { return 1 }
func (op attentionOp) Type() hm.Type { return hm.NewFnType(tt(2), tt(2)) }
func (op attentionOp) String() string {
	return fmt.Sprintf("VarlenAttention{nseq=%d H=%d HD=%d %p}", op.seqlens.N(), op.H, op.HD, op.seqlens.Cu)
}
func (op attentionOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op attentionOp) Hashcode() uint32      { return hashString(op.String()) }
func (op attentionOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	s := in[0].(tensor.Shape)
	if len(s) != 2 || s[1] != 3*op.H*op.HD {
		return nil, fmt.Errorf("graph: attention: qkv of shape %v, want (T, %d)", s, 3*op.H*op.HD)
	}
	return tensor.Shape{s[0], op.H * op.HD}, nil
}

func (op attentionOp) Do(in ...G.Value) (G.Value, error) {
	D := op.H * op.HD
	T, _, qkv, err := matrix("attention", in[0], 3*D)
	if err != nil {
		return nil, err
	}
	if err := op.seqlens.Validate(T); err != nil {
		return nil, fmt.Errorf("graph: attention: %w", err)
	}
	out := make([]float32, T*D)
	ld := 3 * D
	op.each(func(p []float32, start, n, h int) {
		q := qkv[start*ld+h*op.HD:]
		k := qkv[start*ld+D+h*op.HD:]
		v := qkv[start*ld+2*D+h*op.HD:]
		probs(p, q, k, ld, n, op.HD)
		gonum.Implementation{}.Sgemm(blas.NoTrans, blas.NoTrans, n, op.HD, n, 1, p, n, v, ld, 0, out[start*D+h*op.HD:], D)
	}, 1)
	return dense(out, T, D), nil
}

func (op attentionOp) DiffWRT(int) []bool { return []bool{true} }
func (op attentionOp) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	d, err := G.ApplyOp(attentionGradOp{op}, in[0], grad)
	return G.Nodes{d}, err
}

// probs sets p (n, n) = softmax(q·kᵀ) row by row, q and k (n, HD) with
// leading dimension ld.
func probs(p, q, k []float32, ld, n, HD int) {
	gonum.Implementation{}.Sgemm(blas.NoTrans, blas.Trans, n, n, HD, 1, q, ld, k, ld, 0, p, n)
	for r := range n {
		row := p[r*n : (r+1)*n]
		m := float32(math.Inf(-1))
		for _, v := range row {
			m = max(m, v)
		}
		var sum float64
		for i, v := range row {
			e := math.Exp(float64(v - m))
			row[i] = float32(e)
			sum += e
		}
		inv := float32(1 / sum)
		for i := range row {
			row[i] *= inv
		}
	}
}

// each calls fn for every (sequence, head) on up to GOMAXPROCS goroutines,
// longest sequences first, with a per-goroutine scratch of bufs (n, n)
// matrices (n = the longest sequence), and waits for all of them.
func (op attentionOp) each(fn func(scratch []float32, start, n, h int), bufs int) {
	type item struct{ start, n, h int }
	var items []item
	for s := range op.seqlens.N() {
		for h := range op.H {
			items = append(items, item{op.seqlens.Start(s), op.seqlens.Len(s), h})
		}
	}
	slices.SortStableFunc(items, func(a, b item) int { return b.n - a.n })
	maxN := op.seqlens.MaxLen()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(items)) {
		wg.Go(func() {
			scratch := make([]float32, bufs*maxN*maxN)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(items) {
					return
				}
				it := items[i]
				fn(scratch[:bufs*it.n*it.n], it.start, it.n, it.h)
			}
		})
	}
	wg.Wait()
}

// attentionGradOp(qkv, dout) is dqkv (T, 3D); see attentionOp.
type attentionGradOp struct{ fwd attentionOp }

func (op attentionGradOp) Arity() int            { return 2 }
func (op attentionGradOp) ReturnsPtr() bool      { return false }
func (op attentionGradOp) CallsExtern() bool     { return false }
func (op attentionGradOp) OverwritesInput() int  { return -1 }
func (op attentionGradOp) Type() hm.Type         { return hm.NewFnType(tt(2), tt(2), tt(2)) }
func (op attentionGradOp) String() string        { return "Grad" + op.fwd.String() }
func (op attentionGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op attentionGradOp) Hashcode() uint32      { return hashString(op.String()) }
func (op attentionGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}

func (op attentionGradOp) Do(in ...G.Value) (G.Value, error) {
	H, HD := op.fwd.H, op.fwd.HD
	D := H * HD
	T, _, qkv, err := matrix("attention grad", in[0], 3*D)
	if err != nil {
		return nil, err
	}
	if err := op.fwd.seqlens.Validate(T); err != nil {
		return nil, fmt.Errorf("graph: attention grad: %w", err)
	}
	if s := in[1].Shape(); len(s) != 2 || s[0] != T || s[1] != D {
		return nil, fmt.Errorf("graph: attention grad: gradient of shape %v, want (%d, %d)", s, T, D)
	}
	dout, err := floats(in[1])
	if err != nil {
		return nil, err
	}
	dqkv := make([]float32, T*3*D)
	ld := 3 * D
	gemm := gonum.Implementation{}.Sgemm
	op.fwd.each(func(scratch []float32, start, n, h int) {
		p, dp := scratch[:n*n], scratch[n*n:]
		off := start*ld + h*HD
		q, k, v := qkv[off:], qkv[off+D:], qkv[off+2*D:]
		dq, dk, dv := dqkv[off:], dqkv[off+D:], dqkv[off+2*D:]
		do := dout[start*D+h*HD:]
		probs(p, q, k, ld, n, HD)
		gemm(blas.Trans, blas.NoTrans, n, HD, n, 1, p, n, do, D, 0, dv, ld) // dV = Pᵀ·dO
		gemm(blas.NoTrans, blas.Trans, n, n, HD, 1, do, D, v, ld, 0, dp, n) // dP = dO·Vᵀ
		for r := range n {
			pr, dr := p[r*n:(r+1)*n], dp[r*n:(r+1)*n]
			var dot float64
			for i, pv := range pr {
				dot += float64(pv) * float64(dr[i])
			}
			for i, pv := range pr {
				dr[i] = pv * (dr[i] - float32(dot)) // dS
			}
		}
		gemm(blas.NoTrans, blas.NoTrans, n, HD, n, 1, dp, n, k, ld, 0, dq, ld) // dQ = dS·K
		gemm(blas.Trans, blas.NoTrans, n, HD, n, 1, dp, n, q, ld, 0, dk, ld)   // dK = dSᵀ·Q
	}, 2)
	return dense(dqkv, T, 3*D), nil
}
