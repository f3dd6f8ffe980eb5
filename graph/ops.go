package graph

// The custom Ops of the graph, part 1: the plumbing every Op shares, and the
// row-wise and elementwise ones (token dropout, exact GELU, LayerNorm).
//
// Each Op implements gorgonia.SDOp: SymDiff returns gradient nodes built
// from a backward Op of this package, so gorgonia.Grad can differentiate
// through it. Backward Ops are not differentiable again (no second order).
// Every Do allocates its output: values of earlier nodes are never
// overwritten, and parameter tensors are never written.
//
// Legend: T = tokens of the pass, D = model dim, F = FFN dim, H = heads,
// HD = head dim. All tensors are float32, row-major.

import (
	"fmt"
	"hash"
	"hash/fnv"
	"math"
	"runtime"
	"sync"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// tt is the Gorgonia type of a float32 tensor of dims dimensions.
func tt(dims int) hm.Type { return G.TensorType{Dims: dims, Of: tensor.Float32} }

// hashString is the Hashcode of an Op described by s.
func hashString(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// floats returns v's elements in row-major order: its own storage, or a
// materialized copy when v is a strided view.
func floats(v G.Value) ([]float32, error) {
	if d, ok := v.(*tensor.Dense); ok && d.RequiresIterator() {
		m, ok := d.Materialize().(*tensor.Dense)
		if !ok {
			return nil, fmt.Errorf("graph: cannot materialize a %v view", d.Shape())
		}
		v = m
	}
	f, ok := v.Data().([]float32)
	if !ok {
		return nil, fmt.Errorf("graph: value of type %v (shape %v), want float32", v.Dtype(), v.Shape())
	}
	if len(f) < v.Size() {
		return nil, fmt.Errorf("graph: value of shape %v holds %d elements", v.Shape(), len(f))
	}
	return f[:v.Size()], nil
}

// matrix returns v as (rows, cols) and its elements, checking that it is a
// matrix with cols columns (cols < 0: any).
func matrix(op string, v G.Value, cols int) (int, int, []float32, error) {
	s := v.Shape()
	if len(s) != 2 || (cols >= 0 && s[1] != cols) {
		return 0, 0, nil, fmt.Errorf("graph: %s: input of shape %v, want (T, %d)", op, s, cols)
	}
	f, err := floats(v)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("%s: %w", op, err)
	}
	return s[0], s[1], f, nil
}

// vector returns v's n elements, checking its shape.
func vector(op string, v G.Value, n int) ([]float32, error) {
	if s := v.Shape(); len(s) != 1 || s[0] != n {
		return nil, fmt.Errorf("graph: %s: input of shape %v, want (%d)", op, s, n)
	}
	return floats(v)
}

func dense(data []float32, shape ...int) *tensor.Dense {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))
}

// parallelRows runs fn over [0,n) split into contiguous ranges on up to
// GOMAXPROCS goroutines (at least minRows rows each), and waits for them.
func parallelRows(n, minRows int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), max(1, n/max(minRows, 1)))
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}

// plain holds the Op methods all ops of this package share: they return
// fresh values, call no external code and overwrite no input.
type plain struct{}

func (plain) ReturnsPtr() bool     { return false }
func (plain) CallsExtern() bool    { return false }
func (plain) OverwritesInput() int { return -1 }

// ---------------------------------------------------------------- token dropout

// rowScaleOp multiplies row t of x (T, D) by scale[t]. It is the token
// dropout of the embeddings: scale is the sequence's 0.88/(1-n_mask/n) and
// 0 on <mask> rows. Linear and diagonal, so it is its own adjoint.
type rowScaleOp struct {
	plain
	scale []float32 // (T)
}

func (op rowScaleOp) Arity() int    { return 1 }
func (op rowScaleOp) Type() hm.Type { return hm.NewFnType(tt(2), tt(2)) }
func (op rowScaleOp) String() string {
	return fmt.Sprintf("TokenDropout{T=%d %p}", len(op.scale), op.scale)
}
func (op rowScaleOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op rowScaleOp) Hashcode() uint32      { return hashString(op.String()) }
func (op rowScaleOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}

func (op rowScaleOp) Do(in ...G.Value) (G.Value, error) {
	T, D, x, err := matrix("token dropout", in[0], -1)
	if err != nil {
		return nil, err
	}
	if T != len(op.scale) {
		return nil, fmt.Errorf("graph: token dropout: %d rows, %d scales", T, len(op.scale))
	}
	y := make([]float32, T*D)
	for t, s := range op.scale {
		for i, v := range x[t*D : (t+1)*D] {
			y[t*D+i] = v * s
		}
	}
	return dense(y, T, D), nil
}

func (op rowScaleOp) DiffWRT(int) []bool { return []bool{true} }
func (op rowScaleOp) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(op, grad)
	return G.Nodes{dx}, err
}

// ---------------------------------------------------------------- GELU

// geluOp is the exact GELU 0.5*x*(1+erf(x/sqrt 2)), evaluated in float64.
type geluOp struct{ plain }

func (geluOp) Arity() int               { return 1 }
func (geluOp) Type() hm.Type            { return hm.NewFnType(tt(2), tt(2)) }
func (geluOp) String() string           { return "GELU{erf}" }
func (op geluOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op geluOp) Hashcode() uint32      { return hashString(op.String()) }
func (geluOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}

func (geluOp) Do(in ...G.Value) (G.Value, error) {
	T, N, x, err := matrix("gelu", in[0], -1)
	if err != nil {
		return nil, err
	}
	y := make([]float32, len(x))
	parallelRows(len(x), 8192, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := float64(x[i])
			y[i] = float32(0.5 * v * math.Erfc(-v/math.Sqrt2))
		}
	})
	return dense(y, T, N), nil
}

func (geluOp) DiffWRT(int) []bool { return []bool{true} }
func (geluOp) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(geluGradOp{}, in[0], grad)
	return G.Nodes{dx}, err
}

// geluGradOp: dx = dy * (Phi(x) + x*phi(x)), the derivative of x*Phi(x).
type geluGradOp struct{ plain }

func (geluGradOp) Arity() int               { return 2 }
func (geluGradOp) Type() hm.Type            { return hm.NewFnType(tt(2), tt(2), tt(2)) }
func (geluGradOp) String() string           { return "GELUGrad{erf}" }
func (op geluGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op geluGradOp) Hashcode() uint32      { return hashString(op.String()) }
func (geluGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}

func (geluGradOp) Do(in ...G.Value) (G.Value, error) {
	T, N, x, err := matrix("gelu grad", in[0], -1)
	if err != nil {
		return nil, err
	}
	_, _, dy, err := matrix("gelu grad", in[1], N)
	if err != nil || len(dy) != len(x) {
		return nil, fmt.Errorf("graph: gelu grad: gradient of shape %v for input %v (%v)", in[1].Shape(), in[0].Shape(), err)
	}
	dx := make([]float32, len(x))
	const invSqrt2Pi = 0.3989422804014327
	parallelRows(len(x), 8192, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := float64(x[i])
			d := 0.5*math.Erfc(-v/math.Sqrt2) + v*invSqrt2Pi*math.Exp(-0.5*v*v)
			dx[i] = float32(float64(dy[i]) * d)
		}
	})
	return dense(dx, T, N), nil
}

// ---------------------------------------------------------------- LayerNorm

// layerNormOp: y(T,D) = (x-mean)/sqrt(var+eps)*w + b per row, with the
// statistics in float64 and the rest in float32, as esm/cpu computes it.
// Gorgonia's composition of Mean, Sub, Square and broadcasts would take ten
// nodes and (T, D) temporaries per LayerNorm, with float32 statistics.
type layerNormOp struct {
	plain
	eps float32
}

func (op layerNormOp) Arity() int    { return 3 }
func (op layerNormOp) Type() hm.Type { return hm.NewFnType(tt(2), tt(1), tt(1), tt(2)) }
func (op layerNormOp) String() string {
	return fmt.Sprintf("LayerNorm{eps=%g}", op.eps)
}
func (op layerNormOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op layerNormOp) Hashcode() uint32      { return hashString(op.String()) }
func (op layerNormOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}

// rowStats returns the mean and 1/sqrt(var+eps) of row, in float64.
func rowStats(row []float32, eps float32) (mean, rstd float64) {
	var sum float64
	for _, v := range row {
		sum += float64(v)
	}
	mean = sum / float64(len(row))
	var sq float64
	for _, v := range row {
		d := float64(v) - mean
		sq += d * d
	}
	return mean, 1 / math.Sqrt(sq/float64(len(row))+float64(eps))
}

func (op layerNormOp) Do(in ...G.Value) (G.Value, error) {
	T, D, x, err := matrix("layernorm", in[0], -1)
	if err != nil {
		return nil, err
	}
	w, err := vector("layernorm weight", in[1], D)
	if err != nil {
		return nil, err
	}
	b, err := vector("layernorm bias", in[2], D)
	if err != nil {
		return nil, err
	}
	y := make([]float32, T*D)
	parallelRows(T, 16, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			row := x[t*D : (t+1)*D]
			mean, rstd := rowStats(row, op.eps)
			m, r := float32(mean), float32(rstd)
			out := y[t*D : (t+1)*D]
			for i, v := range row {
				out[i] = (v-m)*r*w[i] + b[i]
			}
		}
	})
	return dense(y, T, D), nil
}

func (op layerNormOp) DiffWRT(int) []bool { return []bool{true, true, true} }

// SymDiff: with xhat = (x-mean)*rstd and g = dy*w,
// dx = rstd*(g - mean(g) - xhat*mean(g*xhat)), dw = sum_t dy*xhat,
// db = sum_t dy.
func (op layerNormOp) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(layerNormGradOp{eps: op.eps, wrtX: true}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	dw, err := G.ApplyOp(layerNormGradOp{eps: op.eps}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	db, err := G.Sum(grad, 0)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, dw, db}, nil
}

// layerNormGradOp(x, w, dy) is dx (T, D) when wrtX, else dw (D).
type layerNormGradOp struct {
	plain
	eps  float32
	wrtX bool
}

func (op layerNormGradOp) Arity() int { return 3 }
func (op layerNormGradOp) Type() hm.Type {
	if op.wrtX {
		return hm.NewFnType(tt(2), tt(1), tt(2), tt(2))
	}
	return hm.NewFnType(tt(2), tt(1), tt(2), tt(1))
}
func (op layerNormGradOp) String() string {
	return fmt.Sprintf("LayerNormGrad{eps=%g x=%v}", op.eps, op.wrtX)
}
func (op layerNormGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op layerNormGradOp) Hashcode() uint32      { return hashString(op.String()) }
func (op layerNormGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	s := in[0].(tensor.Shape)
	if op.wrtX {
		return s.Clone(), nil
	}
	if len(s) != 2 {
		return nil, fmt.Errorf("graph: layernorm grad: input of shape %v", s)
	}
	return tensor.Shape{s[1]}, nil
}

func (op layerNormGradOp) Do(in ...G.Value) (G.Value, error) {
	T, D, x, err := matrix("layernorm grad", in[0], -1)
	if err != nil {
		return nil, err
	}
	w, err := vector("layernorm grad weight", in[1], D)
	if err != nil {
		return nil, err
	}
	if s := in[2].Shape(); len(s) != 2 || s[0] != T || s[1] != D {
		return nil, fmt.Errorf("graph: layernorm grad: gradient of shape %v for input (%d, %d)", s, T, D)
	}
	dy, err := floats(in[2])
	if err != nil {
		return nil, err
	}
	if !op.wrtX {
		dw := make([]float64, D)
		for t := range T {
			row := x[t*D : (t+1)*D]
			mean, rstd := rowStats(row, op.eps)
			for i, v := range row {
				dw[i] += float64(dy[t*D+i]) * (float64(v) - mean) * rstd
			}
		}
		out := make([]float32, D)
		for i, v := range dw {
			out[i] = float32(v)
		}
		return dense(out, D), nil
	}
	dx := make([]float32, T*D)
	parallelRows(T, 16, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			row, g := x[t*D:(t+1)*D], dy[t*D:(t+1)*D]
			mean, rstd := rowStats(row, op.eps)
			var mg, mgx float64 // mean(g), mean(g*xhat)
			for i, v := range row {
				gi := float64(g[i]) * float64(w[i])
				mg += gi
				mgx += gi * (float64(v) - mean) * rstd
			}
			mg /= float64(D)
			mgx /= float64(D)
			out := dx[t*D : (t+1)*D]
			for i, v := range row {
				gi := float64(g[i]) * float64(w[i])
				out[i] = float32(rstd * (gi - mg - (float64(v)-mean)*rstd*mgx))
			}
		}
	})
	return dense(dx, T, D), nil
}
