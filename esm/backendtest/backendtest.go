// Package backendtest is the conformance suite every esm.Backend runs:
// RunAll checks each op, and a whole forward pass, against plain Go
// references (attention.Reference and straightforward loops) with per-op
// tolerances from one table (For). esm/cpu runs it in CI; esm/cuda runs it
// on a GPU.
package backendtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/esm2go/esm2go/attention"
	"github.com/esm2go/esm2go/esm"
)

// Tolerances bound, per op, max|got-want| / max|want| over the op's output.
type Tolerances map[string]float64

// The ops RunAll checks (keys of Tolerances).
const (
	OpEmbed     = "embed"
	OpLayerNorm = "layernorm"
	OpLinear    = "linear"
	OpRotary    = "rotary"
	OpAttention = "attention"
	OpProbs     = "attention_probs"
	OpGELU      = "gelu"
	OpPool      = "pool"
	OpRead      = "read"
	OpForward   = "forward"
)

// tolerances is the one table, per op and precision. How they were chosen:
// every op's inputs are read back from the backend before the reference
// runs, so input rounding does not count; what is left is the op's own
// arithmetic and the rounding of its output.
//   - fp32: the references accumulate in float64 (LayerNorm, pooling) or
//     float32 in another order (GEMMs, attention), so backends differ by
//     summation order only, ~1e-6 relative; 1e-5 leaves a 10x margin. The
//     forward pass compounds 3 layers and the LM head: 1e-4. (Measured on
//     the CPU backend: at most 2.1e-6 over all checks.)
//   - fp16 (unit roundoff u = 2^-11 ≈ 4.9e-4) and bf16 (u = 2^-8 ≈ 3.9e-3):
//     a narrow output is rounded once (≤ u/2 of the element, ≤ u of the
//     largest one); 4u covers that plus fp32 accumulation. Attention rounds
//     q·k inputs and P·V output: 8u. Embed and pooling write fp32 from fp32
//     inputs: as fp32. The forward pass keeps the residual stream in fp32
//     but rounds every GEMM input: 40u (fp16 2e-2, bf16 1.6e-1; the GPU
//     parity tests in tests/ hold the tighter bounds against PyTorch).
//   - attention probabilities: fp32 scores from the read-back (already
//     rounded) q and k, fp32 softmax and output, so only summation order
//     differs: 1e-5 as fp32; fp16/bf16 GEMMs accumulate on tensor cores,
//     in fp32 but in another order and alignment: 1e-4.
//   - read: copies are exact in every precision (0).
var tolerances = map[string]map[esm.Precision]float64{
	OpEmbed:     {esm.FP32: 1e-6, esm.FP16: 1e-6, esm.BF16: 1e-6},
	OpLayerNorm: {esm.FP32: 1e-5, esm.FP16: 2e-3, esm.BF16: 1.6e-2},
	OpLinear:    {esm.FP32: 1e-5, esm.FP16: 2e-3, esm.BF16: 1.6e-2},
	OpRotary:    {esm.FP32: 1e-5, esm.FP16: 2e-3, esm.BF16: 1.6e-2},
	OpAttention: {esm.FP32: 1e-5, esm.FP16: 4e-3, esm.BF16: 3.2e-2},
	OpProbs:     {esm.FP32: 1e-5, esm.FP16: 1e-4, esm.BF16: 1e-4},
	OpGELU:      {esm.FP32: 1e-5, esm.FP16: 2e-3, esm.BF16: 1.6e-2},
	OpPool:      {esm.FP32: 1e-5, esm.FP16: 1e-5, esm.BF16: 1e-5},
	OpRead:      {esm.FP32: 0, esm.FP16: 0, esm.BF16: 0},
	OpForward:   {esm.FP32: 1e-4, esm.FP16: 2e-2, esm.BF16: 1.6e-1},
}

// For returns the table's tolerances for precision p.
func For(p esm.Precision) Tolerances {
	t := Tolerances{}
	for op, m := range tolerances {
		v, ok := m[p]
		if !ok {
			v = m[esm.FP32]
		}
		t[op] = v
	}
	return t
}

// attnCases are the varlen shapes that catch real bugs. SetBatch takes
// sequences with BOS, at least one residue and EOS, so the shortest is 3
// tokens (attention over 1 token is in the backends' own kernel tests).
var attnCases = []struct {
	name string
	lens []int
}{
	{"one-residue", []int{3}},
	{"single", []int{37}},
	{"not-multiple-of-64", []int{3, 65, 67, 129, 131}},
	{"many-short", []int{3, 4, 5, 3, 7, 3, 6, 4, 3, 5, 3, 9, 3, 4, 3, 8, 5, 3, 3, 4}},
	{"1024-tokens", []int{1024}},
	{"1024-and-short", []int{1024, 5}},
}

// RunAll runs every check as a subtest on a fresh backend from newBackend
// (which may skip the test, e.g. without a GPU), closed when it ends.
func RunAll(t *testing.T, newBackend func(t *testing.T) esm.Backend, tol Tolerances) {
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			be := newBackend(t)
			t.Cleanup(func() {
				if err := be.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			bound, ok := tol[c.op]
			if !ok {
				t.Fatalf("no tolerance for %s", c.op)
			}
			c.run(&env{t: t, be: be, r: rand.New(rand.NewPCG(11, uint64(len(c.name)))), tol: bound, op: c.name})
		})
	}
}

// env is one check's backend, random source and bound.
type env struct {
	t   *testing.T
	be  esm.Backend
	r   *rand.Rand
	tol float64
	op  string
}

func (e *env) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("%s: %v", e.op, err)
	}
}

func (e *env) randn(n int, std float64) []float32 {
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(std * e.r.NormFloat64())
	}
	return d
}

// batch packs sequences of the given token counts (BOS, residues, EOS);
// with masks, about one residue in ten is <mask>.
func (e *env) batch(lens []int, masks bool) *esm.Batch {
	var b esm.Batch
	b.Reset()
	for _, n := range lens {
		toks := make([]int32, n)
		toks[0], toks[n-1] = esm.TokCLS, esm.TokEOS
		m := 0
		for i := 1; i < n-1; i++ {
			toks[i] = int32(4 + e.r.IntN(20))
			if masks && e.r.IntN(10) == 0 {
				toks[i] = esm.TokMask
				m++
			}
		}
		b.Append(toks, m)
	}
	e.must(e.be.SetBatch(&b))
	return &b
}

func (e *env) upload(d []float32, wide bool) esm.Tensor {
	t, err := e.be.Upload("test", d, wide)
	e.must(err)
	return t
}

func (e *env) alloc(n int, wide bool) esm.Tensor {
	t, err := e.be.Alloc(n, wide)
	e.must(err)
	return t
}

func (e *env) read(src esm.Tensor, n int) []float32 {
	d := make([]float32, n)
	e.must(e.be.Read(d, src))
	return d
}

// wideAct returns a wide (fp32) activation (T, N) holding d as the backend
// rounds it: Linear with an identity weight and a zero bias (the only way
// the Backend interface writes arbitrary values into an activation).
func (e *env) wideAct(d []float32, T, N int) esm.Tensor {
	eye := make([]float32, N*N)
	for i := 0; i < N; i++ {
		eye[i*N+i] = 1
	}
	x := e.alloc(T*N, true)
	e.must(e.be.Linear(x, e.upload(d, false), e.upload(eye, false), e.upload(make([]float32, N), true), N, N, false))
	return x
}

// compare fails when max|got-want| / max|want| exceeds the bound (NaN and
// length mismatches always fail).
func (e *env) compare(what string, got, want []float32) {
	e.t.Helper()
	if len(got) != len(want) {
		e.t.Fatalf("%s %s: %d values, want %d", e.op, what, len(got), len(want))
	}
	var diff, ref float64
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(g) != math.IsNaN(w) || math.IsInf(g, 0) {
			e.t.Fatalf("%s %s[%d] = %g, want %g", e.op, what, i, g, w)
		}
		diff = max(diff, math.Abs(g-w))
		ref = max(ref, math.Abs(w))
	}
	if ref == 0 {
		ref = 1
	}
	if rel := diff / ref; rel > e.tol || (e.tol == 0 && diff != 0) {
		e.t.Errorf("%s %s: max|diff|/max|ref| = %.3g > %.3g (on %s)", e.op, what, rel, e.tol, e.be.Name())
	} else {
		e.t.Logf("%s %s: max|diff|/max|ref| = %.3g (bound %.3g)", e.op, what, rel, e.tol)
	}
}

type check struct {
	name, op string
	run      func(e *env)
}

var checks []check

func init() {
	checks = append(checks,
		check{"embed", OpEmbed, checkEmbed},
		check{"layernorm", OpLayerNorm, checkLayerNorm},
		check{"linear", OpLinear, checkLinear},
		check{"rotary", OpRotary, checkRotary},
		check{"gelu", OpGELU, checkGELU},
		check{"pool", OpPool, checkPool},
		check{"read", OpRead, checkRead},
		check{"forward", OpForward, checkForward},
	)
	for _, c := range attnCases {
		for _, hd := range []int{16, 64} {
			lens := c.lens
			checks = append(checks, check{fmt.Sprintf("attention/%s/hd%d", c.name, hd), OpAttention,
				func(e *env) { checkAttention(e, lens, hd) }})
			if hd == 16 || slices.Max(lens) < 1024 { // the float64 reference at 1024 tokens, hd 64 takes seconds
				checks = append(checks, check{fmt.Sprintf("attention_probs/%s/hd%d", c.name, hd), OpProbs,
					func(e *env) { checkAttentionProbs(e, lens, hd) }})
			}
		}
	}
}

func checkEmbed(e *env) {
	const D = 64
	table := e.randn(esm.VocabSize*D, 1)
	for _, masks := range []bool{false, true} {
		b := e.batch([]int{3, 7, 64, 5, 130}, masks)
		T := len(b.Tokens)
		x := e.alloc(T*D, true)
		mask := int32(-1)
		if masks {
			mask = esm.TokMask
		}
		e.must(e.be.Embed(x, e.upload(table, true), D, mask))
		// A wide upload keeps the exact fp32 values for ops that need them
		// (the GPU also keeps a narrow copy, which Read returns): the
		// reference uses the values as given.
		tab := table
		want := make([]float32, T*D)
		for s := 0; s < b.NumSeqs(); s++ {
			for t := b.Seqlens.Start(s); t < b.Seqlens.Start(s)+b.Seqlens.Len(s); t++ {
				if masks && b.Tokens[t] == esm.TokMask {
					continue
				}
				scale := float32(1)
				if masks {
					scale = b.Scales[s]
				}
				for i := 0; i < D; i++ {
					want[t*D+i] = tab[int(b.Tokens[t])*D+i] * scale
				}
			}
		}
		e.compare(fmt.Sprintf("masks=%v", masks), e.read(x, T*D), want)
	}
}

func refLayerNorm(x, w, b []float32, D int, eps float32) []float32 {
	out := make([]float32, len(x))
	for t := 0; t < len(x)/D; t++ {
		row := x[t*D : (t+1)*D]
		var sum, sq float64
		for _, v := range row {
			sum += float64(v)
		}
		mean := sum / float64(D)
		for _, v := range row {
			sq += (float64(v) - mean) * (float64(v) - mean)
		}
		rstd := 1 / math.Sqrt(sq/float64(D)+float64(eps))
		for i, v := range row {
			out[t*D+i] = float32((float64(v)-mean)*rstd*float64(w[i]) + float64(b[i]))
		}
	}
	return out
}

func checkLayerNorm(e *env) {
	const D = 320 // ESM2 8M's width: not a power of two
	b := e.batch([]int{3, 70, 9}, false)
	T := len(b.Tokens)
	wd, bd := e.randn(D, 0.1), e.randn(D, 0.02)
	for i := range wd {
		wd[i]++
	}
	w, bias := e.upload(wd, true), e.upload(bd, true)
	wr, br := e.read(w, D), e.read(bias, D)
	data := e.randn(T*D, 2)
	for i := range data {
		data[i] += 0.5 // a nonzero mean
	}
	// wide in, narrow out (LN1, LN2); wide in place (the final LayerNorm);
	// narrow in place (the LM head).
	for _, v := range []struct {
		name    string
		inWide  bool
		inPlace bool
	}{{"wide-to-narrow", true, false}, {"wide-in-place", true, true}, {"narrow-in-place", false, true}} {
		var in esm.Tensor
		if v.inWide {
			in = e.wideAct(data, T, D)
		} else {
			in = e.upload(data, false)
		}
		x := e.read(in, T*D)
		out := in
		if !v.inPlace {
			out = e.alloc(T*D, false)
		}
		e.must(e.be.LayerNorm(out, in, w, bias, D, 1e-5))
		e.compare(v.name, e.read(out, T*D), refLayerNorm(x, wr, br, D, 1e-5))
	}
}

func refLinear(x, w, b []float32, T, K, N int) []float32 {
	out := make([]float32, T*N)
	for t := 0; t < T; t++ {
		for n := 0; n < N; n++ {
			var s float64
			for k := 0; k < K; k++ {
				s += float64(x[t*K+k]) * float64(w[n*K+k])
			}
			out[t*N+n] = float32(s + float64(b[n]))
		}
	}
	return out
}

func checkLinear(e *env) {
	const K, N = 64, 96
	b := e.batch([]int{3, 61, 40}, false)
	T := len(b.Tokens)
	wt := e.upload(e.randn(N*K, 0.1), false)
	bias := e.upload(e.randn(N, 0.1), true)
	wr, br := e.read(wt, N*K), e.read(bias, N)
	xd := e.randn(T*K, 1)
	// narrow in, narrow out (qkv, fc1); wide in, narrow out (the LM head's
	// dense); narrow in, wide out (logits); narrow in, wide out += (residual).
	for _, v := range []struct {
		name            string
		inWide, outWide bool
		acc             bool
	}{{"narrow-to-narrow", false, false, false}, {"wide-to-narrow", true, false, false},
		{"narrow-to-wide", false, true, false}, {"residual-add", false, true, true}} {
		var in esm.Tensor
		if v.inWide {
			in = e.wideAct(xd, T, K)
		} else {
			in = e.upload(xd, false)
		}
		x := e.read(in, T*K)
		var out esm.Tensor
		var prev []float32
		if v.acc {
			out = e.wideAct(e.randn(T*N, 1), T, N)
			prev = e.read(out, T*N)
		} else {
			out = e.alloc(T*N, v.outWide)
		}
		e.must(e.be.Linear(out, in, wt, bias, K, N, v.acc))
		want := refLinear(x, wr, br, T, K, N)
		for i := range prev {
			want[i] += prev[i]
		}
		e.compare(v.name, e.read(out, T*N), want)
	}
}

func refRotary(x []float32, b *esm.Batch, invFreq []float32, H, HD int, qScale float32) {
	D, half := H*HD, HD/2
	for s := 0; s < b.NumSeqs(); s++ {
		for p := 0; p < b.Seqlens.Len(s); p++ {
			row := x[(b.Seqlens.Start(s)+p)*3*D:][:3*D]
			for i := range row[:D] {
				row[i] *= qScale
			}
			for h := 0; h < 2*H; h++ {
				v := row[h*HD : (h+1)*HD]
				for i := 0; i < half; i++ {
					a := float32(p) * invFreq[i]
					c, sn := float32(math.Cos(float64(a))), float32(math.Sin(float64(a)))
					x1, x2 := v[i], v[i+half]
					v[i], v[i+half] = x1*c-x2*sn, x2*c+x1*sn
				}
			}
		}
	}
}

func checkRotary(e *env) {
	for _, hd := range []int{16, 24, 64} { // 24: HD/2 not a multiple of 4
		const H = 4
		b := e.batch([]int{3, 200, 1030}, false) // positions past 1026
		T, D := len(b.Tokens), H*hd
		inv := esm.DefaultInvFreq(hd)
		e.must(e.be.SetRotary(inv))
		qkv := e.upload(e.randn(T*3*D, 1), false)
		want := e.read(qkv, T*3*D)
		qs := float32(1 / math.Sqrt(float64(hd)))
		e.must(e.be.RotaryQK(qkv, H, hd, qs))
		refRotary(want, b, inv, H, hd, qs)
		e.compare(fmt.Sprintf("hd=%d", hd), e.read(qkv, T*3*D), want)
	}
}

func checkAttention(e *env, lens []int, HD int) {
	const H = 2
	b := e.batch(lens, false)
	T, D := len(b.Tokens), H*HD
	// Scores of a few units, as after LayerNorm, projections and the q scale.
	qkv := e.upload(e.randn(T*3*D, 1/math.Sqrt(math.Sqrt(float64(HD)))), false)
	x := e.read(qkv, T*3*D)
	out := e.alloc(T*D, false)
	e.must(e.be.Attention(out, qkv, H, HD))
	want := make([]float32, T*D)
	e.must(attention.Reference(attention.Args{Out: want, LdOut: D, Q: x, K: x[D:], V: x[2*D:], Ld: 3 * D,
		Seqlens: b.Seqlens, H: H, HD: HD, Scale: 1}))
	e.compare("out", e.read(out, T*D), want)
}

func refGELU(v float32) float32 {
	return float32(0.5 * float64(v) * (1 + math.Erf(float64(v)/math.Sqrt2)))
}

func checkGELU(e *env) {
	b := e.batch([]int{3, 100}, false)
	n := len(b.Tokens) * 256
	x := e.upload(e.randn(n, 3), false)
	in := e.read(x, n)
	m := n - 5 // the last 5 elements must stay as they are
	e.must(e.be.GELU(x, m))
	want := make([]float32, n)
	for i, v := range in {
		want[i] = v
		if i < m {
			want[i] = refGELU(v)
		}
	}
	e.compare("x", e.read(x, n), want)
}

func checkPool(e *env) {
	const D = 64
	b := e.batch([]int{3, 4, 65, 1024, 7}, false)
	T, nseq := len(b.Tokens), b.NumSeqs()
	x := e.wideAct(e.randn(T*D, 1), T, D)
	xr := e.read(x, T*D)
	mean, bos := make([]float32, nseq*D), make([]float32, nseq*D)
	for s := 0; s < nseq; s++ {
		st, n := b.Seqlens.Start(s), b.Seqlens.Len(s)
		copy(bos[s*D:(s+1)*D], xr[st*D:(st+1)*D])
		for i := 0; i < D; i++ {
			var acc float64
			for t := st + 1; t < st+n-1; t++ {
				acc += float64(xr[t*D+i])
			}
			mean[s*D+i] = float32(acc / float64(n-2))
		}
	}
	dst := e.alloc(nseq*D, true)
	e.must(e.be.PoolMean(dst, x, D))
	e.compare("mean", e.read(dst, nseq*D), mean)
	e.must(e.be.PoolBOS(dst, x, D))
	e.compare("bos", e.read(dst, nseq*D), bos)
}

// checkRead: ReadAsync into HostAlloc memory, after its fence, equals Read,
// for narrow and wide tensors, and takes the value src has when queued.
func checkRead(e *env) {
	b := e.batch([]int{50}, false)
	n := len(b.Tokens) * 8
	d := e.randn(n, 1)
	for _, wide := range []bool{false, true} {
		var src esm.Tensor
		if wide {
			src = e.wideAct(d, len(b.Tokens), 8)
		} else {
			src = e.upload(d, false)
		}
		want := e.read(src, n)
		mem, err := e.be.HostAlloc(n)
		e.must(err)
		e.must(e.be.ReadAsync(mem.Floats()[:n], src))
		// Overwritten after the copy was queued: the copy keeps the old values.
		e.must(e.be.GELU(src, n))
		f, err := e.be.Fence()
		e.must(err)
		e.must(f.Wait())
		e.compare(fmt.Sprintf("wide=%v", wide), mem.Floats()[:n], want)
		e.must(mem.Free())
	}
}
