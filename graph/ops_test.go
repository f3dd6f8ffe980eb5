package graph

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/esm2go/esm2go/attention"
	"github.com/esm2go/esm2go/esm"
)

// opCase is one custom op under test: float32 inputs, how to apply the op
// in a graph, and an independent float64 reference of its forward.
type opCase struct {
	name   string
	shapes [][]int
	in     [][]float32
	build  func(in []*G.Node) (*G.Node, error)
	ref    func(in [][]float64) []float64
}

// Tolerances of the op tests.
//
// Forward: the op in fp32 against its float64 reference, max|diff| /
// max|ref|. fp32 rounding of a few dozen operations: measured at most
// 9.4e-8 (rotary); 2e-6 is margin.
//
// Gradient: the op's fp32 backward through gorgonia.Grad against central
// differences of the float64 reference (step 1e-6 on inputs of size ~1:
// truncation ~1e-12 and cancellation ~1e-10, both far below fp32), as
// max|grad - fd| / max|fd| over every input element. The backward's own
// fp32 rounding measured at most 2.4e-7 (attention); 1e-5 is margin, while
// a wrong term (a missing mean(g) in LayerNorm, a sign in the rotation, the
// softmax Jacobian's rowsum) gives errors of order 1e-1 to 1.
const (
	opForwardTol = 2e-6
	opGradTol    = 1e-5
	fdStep       = 1e-6
)

func randn(r *rand.Rand, n int, std float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(std * r.NormFloat64())
	}
	return x
}

func checkOp(t *testing.T, c opCase) {
	t.Helper()
	g := G.NewGraph()
	leaves := make([]*G.Node, len(c.in))
	for i, d := range c.in {
		leaves[i] = G.NewTensor(g, tensor.Float32, len(c.shapes[i]), G.WithShape(c.shapes[i]...), G.WithName(string(rune('a'+i))),
			G.WithValue(dense(append([]float32(nil), d...), c.shapes[i]...)))
	}
	y, err := c.build(leaves)
	if err != nil {
		t.Fatalf("%s: build: %v", c.name, err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	proj := randn(r, y.Shape().TotalSize(), 1) // cost = sum(y ⊙ proj)
	p := &Pass{Graph: g}
	cost, err := p.Project(y, proj)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Run(Request{Cost: cost, WRT: leaves, Read: []*G.Node{y}})
	if err != nil {
		t.Fatalf("%s: run: %v", c.name, err)
	}

	in64 := make([][]float64, len(c.in))
	for i, d := range c.in {
		in64[i] = to64(d)
	}
	want := c.ref(in64)
	e := relErr(res.Values[0], f32s(want))
	if e > opForwardTol {
		t.Errorf("%s forward: max|op - float64 ref|/max|ref| = %.3g > %g", c.name, e, opForwardTol)
	}
	t.Logf("%s: forward vs float64 reference %.2g", c.name, e)
	f := func() float64 {
		var s float64
		for i, v := range c.ref(in64) {
			s += v * float64(proj[i])
		}
		return s
	}
	for i := range c.in {
		fd := make([]float64, len(c.in[i]))
		for j := range fd {
			x0 := in64[i][j]
			in64[i][j] = x0 + fdStep
			fp := f()
			in64[i][j] = x0 - fdStep
			fm := f()
			in64[i][j] = x0
			fd[j] = (fp - fm) / (2 * fdStep)
		}
		e := relErr64(to64(res.Grads[i]), fd)
		if e > opGradTol {
			t.Errorf("%s d/d input %d: max|grad - fd|/max|fd| = %.3g > %g", c.name, i, e, opGradTol)
		}
		t.Logf("%s: input %d: gradient vs central differences %.2g", c.name, i, e)
	}
}

func f32s(x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
	}
	return y
}

func relErr64(got, want []float64) float64 {
	var d, r float64
	for i := range want {
		if math.IsNaN(got[i]) {
			return math.Inf(1)
		}
		d = math.Max(d, math.Abs(got[i]-want[i]))
		r = math.Max(r, math.Abs(want[i]))
	}
	return d / math.Max(r, 1e-30)
}

// Every custom op: forward against a float64 reference, gradient (through
// gorgonia.Grad and the op's SymDiff) against central differences of that
// reference, for every input element.
func TestOpGradients(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const T, D, H, HD = 7, 8, 2, 4
	lens := []int{1, 4, 2} // a sequence of one token, and packing
	seqlens, err := attention.NewSeqlens(lens)
	if err != nil {
		t.Fatal(err)
	}
	var pos []int32
	for _, n := range lens {
		for i := range n {
			pos = append(pos, int32(i))
		}
	}
	invFreq := esm.DefaultInvFreq(HD)
	scale := []float32{0.9, 0, 0.9, 0.9, 1.1, 1.1, 0} // 0: <mask> rows
	qScale := float32(1 / math.Sqrt(HD))
	apply := func(op G.Op) func(in []*G.Node) (*G.Node, error) {
		return func(in []*G.Node) (*G.Node, error) { return G.ApplyOp(op, in...) }
	}
	cases := []opCase{{
		name: "token dropout", shapes: [][]int{{T, D}}, in: [][]float32{randn(r, T*D, 1)},
		build: apply(rowScaleOp{scale: scale}),
		ref: func(in [][]float64) []float64 {
			y := make([]float64, T*D)
			for i := range y {
				y[i] = in[0][i] * float64(scale[i/D])
			}
			return y
		},
	}, {
		name: "gelu", shapes: [][]int{{T, D}}, in: [][]float32{randn(r, T*D, 2)},
		build: apply(geluOp{}),
		ref:   func(in [][]float64) []float64 { return gelu64(in[0]) },
	}, {
		name: "layernorm", shapes: [][]int{{T, D}, {D}, {D}}, in: [][]float32{randn(r, T*D, 1), randn(r, D, 1), randn(r, D, 1)},
		build: apply(layerNormOp{eps: 1e-5}),
		ref:   func(in [][]float64) []float64 { return layerNorm64(in[0], in[1], in[2], D, 1e-5) },
	}, {
		name: "rotary", shapes: [][]int{{T, 3 * D}}, in: [][]float32{randn(r, T*3*D, 1)},
		build: apply(rotaryOp{r: newRope(pos, invFreq), H: H, HD: HD, qScale: qScale}),
		ref:   func(in [][]float64) []float64 { return rotary64(in[0], pos, invFreq, H, HD, float64(qScale)) },
	}, {
		name: "varlen attention", shapes: [][]int{{T, 3 * D}}, in: [][]float32{randn(r, T*3*D, 1.5)},
		build: apply(attentionOp{seqlens: seqlens, H: H, HD: HD}),
		ref:   func(in [][]float64) []float64 { return attention64(in[0], seqlens.Cu, H, HD) },
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkOp(t, c) })
	}
}

// The attention op's forward equals the project's plain Go reference
// (attention.Reference) on the varlen shapes that catch real bugs.
func TestAttentionMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, lens := range [][]int{{1}, {37}, {1, 65, 3}, {3, 1, 2, 5, 1, 4}} {
		for _, hd := range []int{4, 16} {
			const H = 3
			D := H * hd
			s, err := attention.NewSeqlens(lens)
			if err != nil {
				t.Fatal(err)
			}
			T := s.Total()
			qkv := randn(r, T*3*D, 1)
			want := make([]float32, T*D)
			if err := attention.Reference(attention.Args{Out: want, LdOut: D, Q: qkv, K: qkv[D:], V: qkv[2*D:], Ld: 3 * D, Seqlens: s, H: H, HD: hd, Scale: 1}); err != nil {
				t.Fatal(err)
			}
			got, err := attentionOp{seqlens: s, H: H, HD: hd}.Do(dense(qkv, T, 3*D))
			if err != nil {
				t.Fatal(err)
			}
			// Both fp32, differing in summation order and exp: ~1e-7;
			// 1e-5 as in esm/cpu's test of the same reference.
			if e := relErr(got.Data().([]float32), want); e > 1e-5 {
				t.Errorf("lens %v hd %d: max|op-reference|/max|reference| = %.3g", lens, hd, e)
			}
		}
	}
}
