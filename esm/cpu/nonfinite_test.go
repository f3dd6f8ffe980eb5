package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/esmtest"
)

// Non-finite values must never turn into finite outputs: every kernel is
// given a NaN, a +Inf and a -Inf and must answer non-finite exactly where
// the math says the bad value reaches, and finite everywhere else.

var badValues = map[string]float32{
	"NaN":  float32(math.NaN()),
	"+Inf": float32(math.Inf(1)),
	"-Inf": float32(math.Inf(-1)),
}

func finite(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }

// checkReach fails unless got[i] is non-finite exactly where reached(i).
func checkReach(t *testing.T, what string, got []float32, reached func(i int) bool) {
	t.Helper()
	bad := 0
	for i, v := range got {
		if reached(i) == finite(v) {
			if bad++; bad <= 5 {
				t.Errorf("%s: element %d = %g, want %s", what, i, v, map[bool]string{true: "non-finite", false: "finite"}[reached(i)])
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d wrong elements in all", what, bad)
	}
}

func randn(r *rand.Rand, n int, std float64) []float32 {
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(std * r.NormFloat64())
	}
	return d
}

// setBatch gives be a batch of sequences of the given lengths (>= 3 each).
func setBatch(t *testing.T, be *Backend, lens ...int) {
	t.Helper()
	var b esm.Batch
	b.Reset()
	for _, n := range lens {
		toks := make([]int32, n)
		for i := range toks {
			toks[i] = int32(4 + i%20)
		}
		toks[0], toks[n-1] = esm.TokCLS, esm.TokEOS
		b.Append(toks, 0)
	}
	if err := be.SetBatch(&b); err != nil {
		t.Fatal(err)
	}
}

func TestExpfNonFinite(t *testing.T) {
	if v := expf(float32(math.NaN())); !math.IsNaN(float64(v)) {
		t.Errorf("expf(NaN) = %g", v)
	}
	if v := expf(float32(math.Inf(1))); !math.IsInf(float64(v), 1) {
		t.Errorf("expf(+Inf) = %g", v)
	}
	// exp(-Inf) = 0 exactly: the one non-finite input with a finite answer.
	if v := expf(float32(math.Inf(-1))); v != 0 {
		t.Errorf("expf(-Inf) = %g", v)
	}
	r := []float32{-1, float32(math.NaN()), -2, -3}
	if sum := expSub(r, 0); !math.IsNaN(float64(sum)) || !math.IsNaN(float64(r[1])) || !finite(r[0]) || !finite(r[2]) {
		t.Errorf("expSub with a NaN: sum %g, r %v", sum, r)
	}
	r = []float32{-1, -2}
	if sum := expSub(r, float32(math.NaN())); !math.IsNaN(float64(sum)) {
		t.Errorf("expSub with a NaN max: sum %g, r %v", sum, r)
	}
}

// A bad value anywhere in a softmax row makes the whole row NaN (see
// softmaxRow for why -Inf too); the other rows stay finite and sum to 1.
// Every position of short rows is tried, so each of the 8 lanes of the
// vectorized max and the scalar tail see the bad value.
func TestSoftmaxNonFinite(t *testing.T) {
	twins := map[string]func(s []float32, rows, n int){
		"c": vmath{}.softmaxRows,
		"go": func(s []float32, rows, n int) {
			for r := 0; r < rows; r++ {
				softmaxRow(s[r*n : (r+1)*n])
			}
		},
	}
	r := rand.New(rand.NewPCG(11, 12))
	for name, softmax := range twins {
		for _, n := range []int{1, 2, 7, 8, 9, 17, 33, 300} {
			for bname, bad := range badValues {
				for pos := 0; pos < n; pos++ {
					if n > 33 && pos%37 != 0 && pos != n-1 {
						continue
					}
					const rows = 3
					s := randn(r, rows*n, 4)
					s[n+pos] = bad
					softmax(s, rows, n)
					what := fmt.Sprintf("%s n=%d %s at %d", name, n, bname, pos)
					checkReach(t, what, s, func(i int) bool { return i/n == 1 })
					for _, row := range []int{0, 2} {
						var sum float64
						for _, v := range s[row*n : (row+1)*n] {
							sum += float64(v)
						}
						// n fp32 roundings of terms <= 1: n * 6e-8 < 2e-5.
						if math.Abs(sum-1) > 2e-5 {
							t.Errorf("%s: row %d sums to %g", what, row, sum)
						}
					}
				}
			}
		}
	}
}

// GELU is elementwise: a bad input gives a non-finite output (+Inf for
// +Inf; NaN for -Inf, which is x*Phi(x) = -Inf*0 in IEEE arithmetic, as in
// PyTorch) and leaves its neighbours alone.
func TestGELUNonFinite(t *testing.T) {
	twins := map[string]func(x []float32){
		"c":          newVMath().gelu,
		"c portable": newVMath().portable().gelu,
		"go": func(x []float32) {
			for i, v := range x {
				x[i] = gelu(v)
			}
		},
	}
	r := rand.New(rand.NewPCG(13, 14))
	for name, g := range twins {
		for bname, bad := range badValues {
			for _, pos := range []int{0, 3, 7, 8, 20, 36} { // vector lanes and the tail of 37
				x := randn(r, 37, 3)
				x[pos] = bad
				g(x)
				checkReach(t, fmt.Sprintf("%s %s at %d", name, bname, pos), x, func(i int) bool { return i == pos })
				if bname == "+Inf" && !math.IsInf(float64(x[pos]), 1) {
					t.Errorf("%s: gelu(+Inf) = %g", name, x[pos])
				}
			}
		}
	}
}

func TestLayerNormNonFinite(t *testing.T) {
	const T, D = 4, 40
	be := New(Options{})
	defer be.Close()
	setBatch(t, be, T)
	r := rand.New(rand.NewPCG(15, 16))
	for bname, bad := range badValues {
		// A bad input element poisons its row's mean and variance: the
		// whole row; other rows are independent.
		x, w, b := randn(r, T*D, 1), randn(r, D, 1), randn(r, D, 1)
		x[2*D+5] = bad
		out := &tensor{d: make([]float32, T*D)}
		if err := be.LayerNorm(out, &tensor{d: x}, &tensor{d: w}, &tensor{d: b}, D, 1e-5); err != nil {
			t.Fatal(err)
		}
		checkReach(t, "input "+bname, out.d, func(i int) bool { return i/D == 2 })
		// A bad weight reaches its column only.
		x, w = randn(r, T*D, 1), randn(r, D, 1)
		w[7] = bad
		if err := be.LayerNorm(out, &tensor{d: x}, &tensor{d: w}, &tensor{d: b}, D, 1e-5); err != nil {
			t.Fatal(err)
		}
		checkReach(t, "weight "+bname, out.d, func(i int) bool { return i%D == 7 })
	}
}

func TestLinearNonFinite(t *testing.T) {
	const T, K, N = 5, 24, 40
	r := rand.New(rand.NewPCG(17, 18))
	for bename, be := range backends(t) {
		setBatch(t, be, T)
		run := func(what string, in, w, b, out []float32, acc bool, reached func(i int) bool) {
			t.Helper()
			o := &tensor{d: out}
			if err := be.Linear(o, &tensor{d: in}, &tensor{d: w}, &tensor{d: b}, K, N, acc); err != nil {
				t.Fatal(err)
			}
			checkReach(t, bename+" "+what, o.d, reached)
		}
		for bname, bad := range badValues {
			in := randn(r, T*K, 1)
			in[2*K+7] = bad
			run("input "+bname, in, randn(r, N*K, 1), randn(r, N, 1), make([]float32, T*N), false, func(i int) bool { return i/N == 2 })
			w := randn(r, N*K, 1)
			w[9*K+3] = bad
			run("weight "+bname, randn(r, T*K, 1), w, randn(r, N, 1), make([]float32, T*N), false, func(i int) bool { return i%N == 9 })
			b := randn(r, N, 1)
			b[11] = bad
			run("bias "+bname, randn(r, T*K, 1), randn(r, N*K, 1), b, make([]float32, T*N), false, func(i int) bool { return i%N == 11 })
			res := randn(r, T*N, 1)
			res[N+4] = bad
			run("residual "+bname, randn(r, T*K, 1), randn(r, N*K, 1), randn(r, N, 1), res, true, func(i int) bool { return i == N+4 })
		}
	}
}

// Rotary mixes dims i and i+HD/2 of one head of one token, nothing else.
func TestRotaryNonFinite(t *testing.T) {
	const H, HD = 2, 16
	D, half := H*HD, HD/2
	be := New(Options{})
	defer be.Close()
	setBatch(t, be, 4, 6)
	invFreq := make([]float32, half)
	for i := range invFreq {
		invFreq[i] = float32(1 / math.Pow(10000, float64(2*i)/HD))
	}
	if err := be.SetRotary(invFreq); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(19, 20))
	T := be.T()
	for bname, bad := range badValues {
		// token 0 is position 0 (cos 1, sin 0), token 6 is position 2;
		// column: q head 1, k head 0 (second half), v.
		for _, tok := range []int{0, 6} {
			for _, col := range []int{HD + 3, D + half + 2, 2*D + 5} {
				qkv := randn(r, T*3*D, 1)
				qkv[tok*3*D+col] = bad
				if err := be.RotaryQK(&tensor{d: qkv}, H, HD, 0.25); err != nil {
					t.Fatal(err)
				}
				pair := col
				if col < 2*D { // q or k: the rotary partner
					if col%HD < half {
						pair += half
					} else {
						pair -= half
					}
				}
				checkReach(t, fmt.Sprintf("%s at token %d col %d", bname, tok, col), qkv, func(i int) bool {
					return i/(3*D) == tok && (i%(3*D) == col || i%(3*D) == pair)
				})
			}
		}
	}
}

// Attention over a packed batch: a bad q element poisons its own query row
// (that head); a bad k element every query row of its sequence (that head);
// a bad v element its column in every query row of its sequence (every
// softmax weight is > 0). Other heads and other sequences stay finite.
func TestAttentionNonFinite(t *testing.T) {
	const H, HD = 2, 24
	D := H * HD
	lens := []int{5, 9, 70} // 70 > attnBlock: two query blocks
	r := rand.New(rand.NewPCG(21, 22))
	for bename, be := range backends(t) {
		setBatch(t, be, lens...)
		T := be.T()
		start, n := be.seqlens.Start(1), be.seqlens.Len(1)
		inSeq := func(row int) bool { return row >= start && row < start+n }
		const tok, h, d = 3, 1, 5 // token 3 of sequence 1, head 1, dim 5
		for bname, bad := range badValues {
			for part, reached := range map[int]func(row, col int) bool{
				0: func(row, col int) bool { return row == start+tok && col/HD == h },
				1: func(row, col int) bool { return inSeq(row) && col/HD == h },
				2: func(row, col int) bool { return inSeq(row) && col == h*HD+d },
			} {
				qkv := randn(r, T*3*D, 1)
				qkv[(start+tok)*3*D+part*D+h*HD+d] = bad
				out := &tensor{d: make([]float32, T*D)}
				if err := be.Attention(out, &tensor{d: qkv}, H, HD); err != nil {
					t.Fatal(err)
				}
				what := fmt.Sprintf("%s %s in %c", bename, bname, "qkv"[part])
				checkReach(t, what, out.d, func(i int) bool { return reached(i/D, i%D) })
			}
		}
	}
}

// A weight that underflows to 0 in fp32 is still a weight: a NaN in the
// value of a key that a query all but ignores must reach that query. (A
// matmul that skips zero factors, as gonum's does, would hide it if the
// softmax flushed tiny weights to 0.)
func TestAttentionTinyWeightNaN(t *testing.T) {
	const H, HD = 1, 16
	for bename, be := range backends(t) {
		setBatch(t, be, 3)
		qkv := make([]float32, 3*3*HD)
		row := func(tok, part int) []float32 { return qkv[tok*3*HD+part*HD:][:HD] }
		row(0, 0)[0] = 100 // q of token 0
		row(0, 1)[0] = 1   // k of token 0: score 100
		row(1, 1)[0] = -1  // k of token 1: score -100, weight e^-200
		row(2, 1)[0] = -1  // k of token 2: the same
		row(1, 2)[0] = float32(math.NaN())
		row(0, 2)[1] = 1
		out := &tensor{d: make([]float32, 3*HD)}
		if err := be.Attention(out, &tensor{d: qkv}, H, HD); err != nil {
			t.Fatal(err)
		}
		// Column 0 of every query row sees v's NaN; the other columns are
		// finite (weights times finite values).
		checkReach(t, bename, out.d, func(i int) bool { return i%HD == 0 })
	}
}

// Mean pooling: a bad value reaches its sequence's column, unless it sits
// in the BOS or EOS row, which the mean excludes by definition.
func TestPoolNonFinite(t *testing.T) {
	const D = 8
	be := New(Options{})
	defer be.Close()
	setBatch(t, be, 4, 5, 3)
	T, nseq := be.T(), 3
	r := rand.New(rand.NewPCG(23, 24))
	for bname, bad := range badValues {
		for _, tok := range []int{4, 5, 6, 8} { // BOS, residue, residue, EOS of sequence 1
			x := randn(r, T*D, 1)
			x[tok*D+3] = bad
			mean, bos := &tensor{d: make([]float32, nseq*D)}, &tensor{d: make([]float32, nseq*D)}
			if err := be.PoolMean(mean, &tensor{d: x}, D); err != nil {
				t.Fatal(err)
			}
			if err := be.PoolBOS(bos, &tensor{d: x}, D); err != nil {
				t.Fatal(err)
			}
			residue := tok > 4 && tok < 8
			checkReach(t, fmt.Sprintf("mean %s at %d", bname, tok), mean.d, func(i int) bool { return residue && i == D+3 })
			checkReach(t, fmt.Sprintf("bos %s at %d", bname, tok), bos.d, func(i int) bool { return tok == 4 && i == D+3 })
		}
	}
}

// Model level: a NaN in one element of layer 0's query projection reaches
// every output after layer 0 of every sequence (the head's scores are all
// NaN, the output projection mixes heads); representation 0 (the
// embeddings) stays finite.
func TestForwardNaNQueryWeight(t *testing.T) {
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src := esmtest.Random(cfg, 7)
	src["encoder.layer.0.attention.self.query.weight"][5*cfg.Dim+9] = float32(math.NaN())
	out := forwardNonFinite(t, cfg, src, "MKTAYIAKQR", "GSHMW", "LLVVAAGG")
	for _, l := range []int{0, 1, cfg.Layers} {
		reached := func(int) bool { return l > 0 }
		checkReach(t, fmt.Sprintf("layer %d mean", l), out.Mean[l], reached)
		checkReach(t, fmt.Sprintf("layer %d bos", l), out.BOS[l], reached)
		checkReach(t, fmt.Sprintf("layer %d per token", l), out.PerTok[l], reached)
	}
	checkReach(t, "logits", out.Logits, func(int) bool { return true })
}

// Model level: a +Inf in one element of W's embedding row reaches, at
// layer 0, only that element of W's rows (and its sequence's mean); from
// layer 1 on every output of every sequence holding a W (LayerNorm turns
// the row into NaN, attention spreads it over the sequence) and nothing of
// the other sequences, except W's logit.
func TestForwardInfEmbedding(t *testing.T) {
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	tok := esm.NewTokenizer(esm.DefaultMaxResidues)
	w, _, err := tok.Encode(nil, []byte("W"))
	if err != nil {
		t.Fatal(err)
	}
	const col = 9
	D := cfg.Dim
	src := esmtest.Random(cfg, 7)
	src["embeddings.word_embeddings.weight"][int(w[1])*D+col] = float32(math.Inf(1))
	seqs := []string{"MKTAYIAKQR", "GSHWMA", "LLVVAAGG"} // only sequence 1 has a W (token 4)
	out := forwardNonFinite(t, cfg, src, seqs...)
	starts := []int{0, 12, 20, 30}
	seqOf := func(row int) int {
		s := 0
		for row >= starts[s+1] {
			s++
		}
		return s
	}
	checkReach(t, "layer 0 per token", out.PerTok[0], func(i int) bool { return i/D == starts[1]+4 && i%D == col })
	checkReach(t, "layer 0 mean", out.Mean[0], func(i int) bool { return i == D+col })
	checkReach(t, "layer 0 bos", out.BOS[0], func(int) bool { return false })
	for _, l := range []int{1, cfg.Layers} {
		checkReach(t, fmt.Sprintf("layer %d per token", l), out.PerTok[l], func(i int) bool { return seqOf(i/D) == 1 })
		checkReach(t, fmt.Sprintf("layer %d mean", l), out.Mean[l], func(i int) bool { return i/D == 1 })
		checkReach(t, fmt.Sprintf("layer %d bos", l), out.BOS[l], func(i int) bool { return i/D == 1 })
	}
	// The LM decoder is tied to the embeddings: W's logit is non-finite
	// for every token.
	V := cfg.Vocab
	checkReach(t, "logits", out.Logits, func(i int) bool { return seqOf(i/V) == 1 || i%V == int(w[1]) })
}

// forwardNonFinite runs one packed batch of seqs through a CPU model of src
// and returns layers 0, 1 and the last (mean, BOS, per token) and logits.
func forwardNonFinite(t *testing.T, cfg esm.Config, src esmtest.Source, seqs ...string) *esm.Output {
	t.Helper()
	be := New(Options{})
	t.Cleanup(func() { be.Close() })
	m, err := esm.NewModel(cfg, src, be)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	tok := esm.NewTokenizer(esm.DefaultMaxResidues)
	var b esm.Batch
	b.Reset()
	for _, s := range seqs {
		toks, e, err := tok.Encode(nil, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		b.Append(toks, e.Masks)
	}
	var out esm.Output
	req := esm.Request{Layers: []int{0, 1, cfg.Layers}, Reprs: esm.Mean | esm.BOS | esm.PerTok, Logits: true}
	if err := m.Forward(&b, req, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}
