package graph

// A float64 ESM2 forward pass written from the equations (ARCHITECTURE.md),
// independent of the graph's ops: the reference of the finite-difference
// tests. Nothing here is fast; sizes are the tiny model's.

import (
	"fmt"
	"math"
)

func to64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

func gelu64(x []float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = 0.5 * v * math.Erfc(-v/math.Sqrt2)
	}
	return y
}

// layerNorm64: x (T, D), w, b (D).
func layerNorm64(x, w, b []float64, D int, eps float64) []float64 {
	y := make([]float64, len(x))
	for t := 0; t < len(x)/D; t++ {
		row := x[t*D : (t+1)*D]
		var mean, vr float64
		for _, v := range row {
			mean += v
		}
		mean /= float64(D)
		for _, v := range row {
			vr += (v - mean) * (v - mean)
		}
		r := 1 / math.Sqrt(vr/float64(D)+eps)
		for i, v := range row {
			y[t*D+i] = (v-mean)*r*w[i] + b[i]
		}
	}
	return y
}

// linear64: x (T, K) · w (N, K)ᵀ + b (N).
func linear64(x, w, b []float64, K, N int) []float64 {
	T := len(x) / K
	y := make([]float64, T*N)
	for t := range T {
		for n := range N {
			s := b[n]
			for k := range K {
				s += x[t*K+k] * w[n*K+k]
			}
			y[t*N+n] = s
		}
	}
	return y
}

// rotary64 on qkv (T, 3D): q *= scale, then q and k rotated (rotate_half)
// by angle pos*invFreq[i], the angle rounded to fp32 as PyTorch does.
func rotary64(qkv []float64, pos []int32, invFreq []float32, H, HD int, scale float64) []float64 {
	D, half := H*HD, HD/2
	y := append([]float64(nil), qkv...)
	for t, p := range pos {
		row := y[t*3*D : (t+1)*3*D]
		for i := range D {
			row[i] *= scale
		}
		for h := range 2 * H {
			v := row[h*HD : (h+1)*HD]
			for i := range half {
				a := float64(float32(p) * invFreq[i])
				c, s := math.Cos(a), math.Sin(a)
				x1, x2 := v[i], v[i+half]
				v[i], v[i+half] = x1*c-x2*s, x2*c+x1*s
			}
		}
	}
	return y
}

// attention64: softmax(q·kᵀ)·v per sequence (cu) and head over qkv (T, 3D).
func attention64(qkv []float64, cu []int32, H, HD int) []float64 {
	D := H * HD
	T := len(qkv) / (3 * D)
	out := make([]float64, T*D)
	for s := 0; s+1 < len(cu); s++ {
		a, b := int(cu[s]), int(cu[s+1])
		for h := range H {
			for i := a; i < b; i++ {
				sc := make([]float64, b-a)
				m := math.Inf(-1)
				for j := a; j < b; j++ {
					var d float64
					for e := range HD {
						d += qkv[i*3*D+h*HD+e] * qkv[j*3*D+D+h*HD+e]
					}
					sc[j-a] = d
					m = math.Max(m, d)
				}
				var z float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - m)
					z += sc[j]
				}
				for j := a; j < b; j++ {
					for e := range HD {
						out[i*D+h*HD+e] += sc[j-a] / z * qkv[j*3*D+2*D+h*HD+e]
					}
				}
			}
		}
	}
	return out
}

// ref64 is a model's parameters in float64, by name.
type ref64 struct {
	m *Model
	p map[string][]float64
}

func newRef64(m *Model) *ref64 {
	r := &ref64{m: m, p: map[string][]float64{}}
	for _, n := range m.names {
		r.p[n] = to64(m.params[n].Data().([]float32))
	}
	return r
}

// forward returns every hidden state (L+1) and the logits of the pass
// over tokens packed by cu, starting from the word-embedding rows emb
// (T, D) before token dropout.
func (r *ref64) forward(emb []float64, tokens, cu []int32) ([][]float64, []float64) {
	c := r.m.Cfg
	D, F, H, HD, V := c.Dim, c.FFN, c.Heads, c.HeadDim(), c.Vocab
	eps := float64(c.LayerNormEps)
	P := func(n string) []float64 {
		v, ok := r.p[n]
		if !ok {
			panic(fmt.Sprintf("ref64: no parameter %s", n))
		}
		return v
	}
	x := append([]float64(nil), emb...)
	pos := make([]int32, len(tokens))
	for s := 0; s+1 < len(cu); s++ {
		a, b := int(cu[s]), int(cu[s+1])
		masks := 0
		for t := a; t < b; t++ {
			pos[t] = int32(t - a)
			if tokens[t] == c.MaskToken {
				masks++
			}
		}
		scale := 0.88 / (1 - float64(masks)/float64(b-a))
		for t := a; t < b; t++ {
			for i := range D {
				if tokens[t] == c.MaskToken {
					x[t*D+i] = 0
				} else {
					x[t*D+i] *= scale
				}
			}
		}
	}
	hs := [][]float64{x}
	for l := range c.Layers {
		pre := fmt.Sprintf("encoder.layer.%d.", l)
		h := layerNorm64(x, P(pre+"attention.LayerNorm.weight"), P(pre+"attention.LayerNorm.bias"), D, eps)
		T := len(tokens)
		qkv := make([]float64, T*3*D)
		for i, part := range []string{"query", "key", "value"} {
			y := linear64(h, P(pre+"attention.self."+part+".weight"), P(pre+"attention.self."+part+".bias"), D, D)
			for t := range T {
				copy(qkv[t*3*D+i*D:t*3*D+(i+1)*D], y[t*D:(t+1)*D])
			}
		}
		qkv = rotary64(qkv, pos, r.m.invFreq, H, HD, 1/math.Sqrt(float64(HD)))
		a := attention64(qkv, cu, H, HD)
		o := linear64(a, P(pre+"attention.output.dense.weight"), P(pre+"attention.output.dense.bias"), D, D)
		x = add64(x, o)
		h = layerNorm64(x, P(pre+"LayerNorm.weight"), P(pre+"LayerNorm.bias"), D, eps)
		f := gelu64(linear64(h, P(pre+"intermediate.dense.weight"), P(pre+"intermediate.dense.bias"), D, F))
		x = add64(x, linear64(f, P(pre+"output.dense.weight"), P(pre+"output.dense.bias"), F, D))
		hs = append(hs, x)
	}
	x = layerNorm64(x, P("encoder.emb_layer_norm_after.weight"), P("encoder.emb_layer_norm_after.bias"), D, eps)
	hs[c.Layers] = x
	h := gelu64(linear64(x, P("lm_head.dense.weight"), P("lm_head.dense.bias"), D, D))
	h = layerNorm64(h, P("lm_head.layer_norm.weight"), P("lm_head.layer_norm.bias"), D, eps)
	return hs, linear64(h, P(r.m.decoder), P("lm_head.bias"), D, V)
}

func add64(a, b []float64) []float64 {
	y := make([]float64, len(a))
	for i := range a {
		y[i] = a[i] + b[i]
	}
	return y
}
