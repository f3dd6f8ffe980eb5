package graph

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// rope holds the rotary tables of one pass: each token's position within
// its sequence (BOS = 0, restarting for every packed sequence) and, per
// position, cos and sin of float32(pos)*invFreq[i] computed in fp32 as
// PyTorch (and esm/cpu) does.
type rope struct {
	pos      []int32   // (T)
	cos, sin []float32 // (maxPos, HD/2)
	half     int       // HD/2
}

func newRope(pos []int32, invFreq []float32) *rope {
	maxPos := int32(0)
	for _, p := range pos {
		maxPos = max(maxPos, p+1)
	}
	half := len(invFreq)
	r := &rope{pos: pos, half: half, cos: make([]float32, int(maxPos)*half), sin: make([]float32, int(maxPos)*half)}
	for p := range int(maxPos) {
		for i, f := range invFreq {
			a := float32(p) * f
			r.cos[p*half+i] = float32(math.Cos(float64(a)))
			r.sin[p*half+i] = float32(math.Sin(float64(a)))
		}
	}
	return r
}

// rotaryOp works on the packed qkv (T, 3D) = [q | k | v]: q is multiplied
// by qScale (head_dim^-0.5), then every head of q and k is rotated
// (non-interleaved rotate_half: element i pairs with i+HD/2); v passes
// through. The map is linear and orthogonal per pair, so its adjoint, the
// backward, is the same op with the angle negated (inverse).
type rotaryOp struct {
	plain
	r       *rope
	H, HD   int
	qScale  float32
	inverse bool // the adjoint: rotate by -angle (then scale q)
}

func (op rotaryOp) Arity() int    { return 1 }
func (op rotaryOp) Type() hm.Type { return hm.NewFnType(tt(2), tt(2)) }
func (op rotaryOp) String() string {
	return fmt.Sprintf("Rotary{H=%d HD=%d qscale=%g inverse=%v %p}", op.H, op.HD, op.qScale, op.inverse, op.r)
}
func (op rotaryOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op rotaryOp) Hashcode() uint32      { return hashString(op.String()) }
func (op rotaryOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}

func (op rotaryOp) Do(in ...G.Value) (G.Value, error) {
	D := op.H * op.HD
	T, _, x, err := matrix("rotary", in[0], 3*D)
	if err != nil {
		return nil, err
	}
	if T != len(op.r.pos) || op.HD != 2*op.r.half {
		return nil, fmt.Errorf("graph: rotary: %d rows and head dim %d, the pass has %d tokens and %d frequencies", T, op.HD, len(op.r.pos), op.r.half)
	}
	y := make([]float32, len(x))
	copy(y, x)
	half := op.HD / 2
	sign := float32(1)
	if op.inverse {
		sign = -1
	}
	parallelRows(T, 16, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			p := int(op.r.pos[t])
			cs, sn := op.r.cos[p*half:][:half], op.r.sin[p*half:][:half]
			row := y[t*3*D : (t+1)*3*D]
			if !op.inverse {
				for i := range row[:D] {
					row[i] *= op.qScale
				}
			}
			for h := range 2 * op.H { // H query heads then H key heads
				v := row[h*op.HD : (h+1)*op.HD]
				for i := range half {
					x1, x2, s := v[i], v[i+half], sign*sn[i]
					v[i] = x1*cs[i] - x2*s
					v[i+half] = x2*cs[i] + x1*s
				}
			}
			if op.inverse {
				for i := range row[:D] {
					row[i] *= op.qScale
				}
			}
		}
	})
	return dense(y, T, 3*D), nil
}

func (op rotaryOp) DiffWRT(int) []bool { return []bool{true} }
func (op rotaryOp) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	adj := op
	adj.inverse = !op.inverse
	dx, err := G.ApplyOp(adj, grad)
	return G.Nodes{dx}, err
}
