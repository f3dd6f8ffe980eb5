//go:build cgo

package cuda

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
	"github.com/esm2go/esm2go/internal/cudadrv"
	"github.com/esm2go/esm2go/internal/cudadrv/cudatest"
)

// newGPU opens the CUDA backend in precision prec, skipping the test where
// the machine has no GPU and failing it where a GPU is present but the
// backend does not start (cudatest.Start).
func newGPU(t testing.TB, prec string) *Backend {
	t.Helper()
	return cudatest.Start(t, "CUDA backend ("+prec+")", func() (*Backend, error) { return New(Options{Precision: esm.Precision(prec)}) })
}

// requireGPU skips the test where the machine has no GPU (for tests that
// prepare CPU references before they open the backend).
func requireGPU(t testing.TB) {
	t.Helper()
	cudatest.RequireGPU(t)
}

// write fills t (any element type) from host fp32 values, as Upload does.
func (b *Backend) write(et esm.Tensor, d []float32) error {
	t := tens(et)
	tmp, err := b.ctx.Alloc(4 * len(d))
	if err != nil {
		return err
	}
	defer tmp.Free()
	if err := b.ctx.CopyHtoD(tmp.Ptr, f32bytes(d)); err != nil {
		return err
	}
	if err := b.k.convert(t.buf.Ptr, t.dt, tmp.Ptr, cudadrv.F32, len(d)); err != nil {
		return err
	}
	return b.Synchronize()
}

func randn(r *rand.Rand, n int, std float64) []float32 {
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(std * r.NormFloat64())
	}
	return d
}

// maxRel is max|got-want| / max|want|; NaN or a length mismatch is +Inf.
func maxRel(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var d, m float64
	for i := range want {
		e := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(e) {
			return math.Inf(1)
		}
		d = max(d, e)
		m = max(m, math.Abs(float64(want[i])))
	}
	if m == 0 {
		return d
	}
	return d / m
}

// Per-op tolerances (max |diff| / max |ref|) by precision. fp32: both sides
// compute in fp32 and differ in summation order (GEMM K ≤ 4·D = 512, warp
// tree vs sequential sums, online vs two-pass softmax) and in cos/sin/erf
// implementations (≤ 2 ulp), all ~1e-6 of the largest value. fp16/bf16:
// the GPU reads the same rounded inputs as the CPU but rounds its output
// once more (fp16 half-ulp 4.9e-4, bf16 3.9e-3), plus GEMM inputs that the
// GPU converts (wide to narrow) and the CPU does not.
var opTol = map[string]float64{"fp32": 1e-5, "fp16": 2e-3, "bf16": 1.6e-2}

// Every op of the CUDA backend against the CPU backend on the same
// (rounded) inputs, in every precision and on the varlen shapes that
// catch bugs: one residue, lengths off the attention tile, many short ones,
// one past 1024 tokens. Linear runs both bias paths: the cuBLASLt epilogue
// (fp32, fp16) and GemmEx + bias_add (bf16).
func TestOpsMatchCPU(t *testing.T) {
	for _, prec := range []string{"fp32", "fp16", "bf16"} {
		t.Run(prec, func(t *testing.T) { testOps(t, prec) })
	}
}

func testOps(t *testing.T, prec string) {
	g := newGPU(t, prec)
	defer g.Close()
	c := cpu.New(cpu.Options{})
	defer c.Close()
	tol := opTol[prec]
	r := rand.New(rand.NewPCG(11, 12))
	lens := []int{3, 66, 4, 130, 5, 3, 7, 1100, 33}
	var batch esm.Batch
	for i, n := range lens {
		toks := make([]int32, n)
		toks[0], toks[n-1] = esm.TokCLS, esm.TokEOS
		masks := 0
		for j := 1; j < n-1; j++ {
			toks[j] = int32(4 + r.IntN(20))
			if i%2 == 0 && j%5 == 1 {
				toks[j], masks = esm.TokMask, masks+1
			}
		}
		batch.Append(toks, masks)
	}
	T := len(batch.Tokens)
	nseq := batch.NumSeqs()
	for _, be := range []esm.Backend{g, c} {
		if err := be.SetBatch(&batch); err != nil {
			t.Fatal(err)
		}
	}
	check := func(op string, got, want []float32, tol float64) {
		t.Helper()
		e := maxRel(got, want)
		if e > tol {
			t.Errorf("%s %s: max rel err %.3g > %.3g", prec, op, e, tol)
		} else {
			t.Logf("%s %s: max rel err %.3g", prec, op, e)
		}
	}
	// pair holds the same values on both backends: the CPU gets what the GPU
	// tensor holds after rounding to its type.
	type pair struct{ g, c esm.Tensor }
	mk := func(n int, wide bool, std float64) pair {
		gt, err := g.Alloc(n, wide)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.write(gt, randn(r, n, std)); err != nil {
			t.Fatal(err)
		}
		host := make([]float32, n)
		if err := g.Read(host, gt); err != nil {
			t.Fatal(err)
		}
		ct, _ := c.Upload("x", host, true)
		return pair{gt, ct}
	}
	param := func(name string, vals []float32) pair {
		gt, err := g.Upload(name, vals, true)
		if err != nil {
			t.Fatal(err)
		}
		ct, _ := c.Upload(name, vals, true)
		return pair{gt, ct}
	}
	read := func(p pair, n int) (got, want []float32) {
		got, want = make([]float32, n), make([]float32, n)
		if err := g.Read(got, p.g); err != nil {
			t.Fatal(err)
		}
		if err := c.Read(want, p.c); err != nil {
			t.Fatal(err)
		}
		return got, want
	}
	run := func(op string, n int, out pair, tol float64, fg, fc func() error) {
		t.Helper()
		if err := fg(); err != nil {
			t.Fatalf("%s gpu: %v", op, err)
		}
		if err := fc(); err != nil {
			t.Fatalf("%s cpu: %v", op, err)
		}
		got, want := read(out, n)
		check(op, got, want, tol)
	}

	D := 128
	// Embed (mask token zeroed, per-sequence scale) into a wide x.
	table := param("embeddings.word_embeddings.weight", randn(r, esm.VocabSize*D, 1))
	x := mk(T*D, true, 1)
	run("embed", T*D, x, tol,
		func() error { return g.Embed(x.g, table.g, D, esm.TokMask) },
		func() error { return c.Embed(x.c, table.c, D, esm.TokMask) })
	// x now holds the same fp32 values on both (the embedding is exact in fp32
	// on both sides; in fp16 mode the GPU reads the table in fp32 too).
	lnw := param("LayerNorm.weight", randn(r, D, 0.1))
	lnb := param("LayerNorm.bias", randn(r, D, 0.1))
	h := mk(T*D, false, 1)
	run("layernorm wide->narrow", T*D, h, tol,
		func() error { return g.LayerNorm(h.g, x.g, lnw.g, lnb.g, D, 1e-5) },
		func() error { return c.LayerNorm(h.c, x.c, lnw.c, lnb.c, D, 1e-5) })
	h2 := mk(T*D, false, 2)
	run("layernorm narrow in place", T*D, h2, tol,
		func() error { return g.LayerNorm(h2.g, h2.g, lnw.g, lnb.g, D, 1e-5) },
		func() error { return c.LayerNorm(h2.c, h2.c, lnw.c, lnb.c, D, 1e-5) })
	x2 := mk(T*D, true, 3)
	run("layernorm wide in place", T*D, x2, tol,
		func() error { return g.LayerNorm(x2.g, x2.g, lnw.g, lnb.g, D, 1e-5) },
		func() error { return c.LayerNorm(x2.c, x2.c, lnw.c, lnb.c, D, 1e-5) })
	// The register-held row (D % 4 == 0, up to lnVecMaxD; every
	// instantiation: 640 -> 8 float4 per lane, 1280 -> 12, 1920 -> 16,
	// 2560 and 3072 -> 24; 128 above -> 4) and the general kernel beyond it
	// (15B's 5120) or off the multiple of 4 (1282).
	for _, d := range []int{640, 1280, 1920, 2560, 3072, 1282, 5120} {
		w, bb := param("LayerNorm.weight", randn(r, d, 0.1)), param("LayerNorm.bias", randn(r, d, 0.1))
		xin, hout := mk(T*d, true, 4), mk(T*d, false, 1)
		run(fmt.Sprintf("layernorm wide->narrow D=%d", d), T*d, hout, tol,
			func() error { return g.LayerNorm(hout.g, xin.g, w.g, bb.g, d, 1e-5) },
			func() error { return c.LayerNorm(hout.c, xin.c, w.c, bb.c, d, 1e-5) })
	}

	// Linear: narrow->narrow, narrow->wide accumulate (the residual), wide
	// input (converted on the GPU: the CPU sees unrounded inputs, so the
	// narrow modes get twice the tolerance there).
	K, N := 4*D, 3*D
	w := param("w", randn(r, N*K, 0.05))
	bias := param("b.bias", randn(r, N, 0.1))
	in := mk(T*K, false, 1)
	out := mk(T*N, false, 1)
	run("linear", T*N, out, tol,
		func() error { return g.Linear(out.g, in.g, w.g, bias.g, K, N, false) },
		func() error { return c.Linear(out.c, in.c, w.c, bias.c, K, N, false) })
	res := mk(T*N, true, 1)
	run("linear accumulate", T*N, res, tol,
		func() error { return g.Linear(res.g, in.g, w.g, bias.g, K, N, true) },
		func() error { return c.Linear(res.c, in.c, w.c, bias.c, K, N, true) })
	inw := mk(T*K, true, 1)
	out2 := mk(T*N, false, 1)
	run("linear wide input", T*N, out2, 2*tol,
		func() error { return g.Linear(out2.g, inw.g, w.g, bias.g, K, N, false) },
		func() error { return c.Linear(out2.c, inw.c, w.c, bias.c, K, N, false) })

	// GELU on a narrow FFN activation; an odd count leaves a tail for the
	// scalar loop after the 16-byte vectors.
	ff := mk(T*K, false, 2)
	run("gelu", T*K, ff, tol,
		func() error { return g.GELU(ff.g, T*K) },
		func() error { return c.GELU(ff.c, T*K) })
	run("gelu tail", T*K-5, ff, tol,
		func() error { return g.GELU(ff.g, T*K-5) },
		func() error { return c.GELU(ff.c, T*K-5) })

	// Rotary and attention for every head dim of ESM2.
	for _, hd := range varlenHeadDims {
		H := 3
		Dq := H * hd
		inv := esm.DefaultInvFreq(hd)
		if err := g.SetRotary(inv); err != nil {
			t.Fatal(err)
		}
		if err := c.SetRotary(inv); err != nil {
			t.Fatal(err)
		}
		qkv := mk(T*3*Dq, false, 1)
		qs := float32(1 / math.Sqrt(float64(hd)))
		run(fmt.Sprintf("rotary hd=%d", hd), T*3*Dq, qkv, tol,
			func() error { return g.RotaryQK(qkv.g, H, hd, qs) },
			func() error { return c.RotaryQK(qkv.c, H, hd, qs) })
		// Re-sync the inputs of attention (the rotary outputs differ by
		// rounding) so that the comparison is of attention alone.
		host := make([]float32, T*3*Dq)
		if err := g.Read(host, qkv.g); err != nil {
			t.Fatal(err)
		}
		qkv.c, _ = c.Upload("qkv", host, false)
		ao := mk(T*Dq, false, 1)
		run(fmt.Sprintf("attention hd=%d", hd), T*Dq, ao, tol,
			func() error { return g.Attention(ao.g, qkv.g, H, hd) },
			func() error { return c.Attention(ao.c, qkv.c, H, hd) })
	}

	// Pooling of the wide x and of a narrow tensor.
	pool := mk(nseq*D, true, 1)
	for _, src := range []pair{x, h} {
		run("pool mean", nseq*D, pool, tol,
			func() error { return g.PoolMean(pool.g, src.g, D) },
			func() error { return c.PoolMean(pool.c, src.c, D) })
		run("pool bos", nseq*D, pool, tol,
			func() error { return g.PoolBOS(pool.g, src.g, D) },
			func() error { return c.PoolBOS(pool.c, src.c, D) })
	}
}

// testBatch packs sequences of the given residue counts (with a <mask> in
// every third one) with the tokenizer.
func testBatch(t testing.TB, seed uint64, lengths []int) *esm.Batch {
	r := rand.New(rand.NewPCG(seed, 7))
	tok := esm.NewTokenizer(0)
	var b esm.Batch
	b.Reset()
	var buf []int32
	for i, n := range lengths {
		seq := esmtest.Sequence(r, n)
		if i%3 == 1 && n > 2 {
			seq = append(append(append([]byte{}, seq[:n/2]...), "<mask>"...), seq[n/2+1:]...)
		}
		var e esm.Encoded
		var err error
		buf, e, err = tok.Encode(buf[:0], seq)
		if err != nil {
			t.Fatal(err)
		}
		b.Append(buf, e.Masks)
	}
	return &b
}

// Full forward: CUDA against the CPU backend on random models, every layer's
// mean, BOS and per-token outputs and the logits. fp32 must agree within
// 1e-4 of the largest reference value (the brief's bound for PyTorch fp32
// parity: per-op fp32 errors of ~1e-6 through up to 6 layers); fp16 and bf16
// are bounded loosely (each layer's GEMM inputs are rounded to 11 or 8
// mantissa bits) and the actual errors are logged.
func TestForwardMatchesCPU(t *testing.T) {
	requireGPU(t)
	tols := map[string]float64{"fp32": 1e-4, "fp16": 3e-2, "bf16": 1.5e-1}
	lengths := []int{1, 2, 5, 31, 62, 63, 64, 100, 257, 400, 1022, 1100}
	for _, size := range []string{"tiny", "8M"} {
		cfg, err := esmtest.Config(size)
		if err != nil {
			t.Fatal(err)
		}
		src := esmtest.Random(cfg, 42)
		batch := testBatch(t, 3, lengths)
		req := esm.Request{Reprs: esm.Mean | esm.BOS | esm.PerTok, Logits: true}
		for l := 0; l <= cfg.Layers; l++ {
			req.Layers = append(req.Layers, l)
		}
		cb := cpu.New(cpu.Options{})
		cm, err := esm.NewModel(cfg, src, cb)
		if err != nil {
			t.Fatal(err)
		}
		var want esm.Output
		if err := cm.Forward(batch, req, &want); err != nil {
			t.Fatal(err)
		}
		// want lives in the CPU backend's host memory: close the reference
		// only after the comparisons.
		defer cb.Close()
		defer cm.Close()
		for _, prec := range []string{"fp32", "fp16", "bf16"} {
			t.Run(size+"/"+prec, func(t *testing.T) {
				g := newGPU(t, prec)
				defer g.Close()
				m, err := esm.NewModel(cfg, src, g)
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				var got esm.Output
				if err := m.Forward(batch, req, &got); err != nil {
					t.Fatal(err)
				}
				worst := 0.0
				cmp := func(what string, a, b []float32) {
					e := maxRel(a, b)
					worst = max(worst, e)
					if e > tols[prec] {
						t.Errorf("%s %s %s: max rel err %.3g > %.3g", size, prec, what, e, tols[prec])
					}
				}
				for _, l := range req.Layers {
					cmp(fmt.Sprintf("layer %d mean", l), got.Mean[l], want.Mean[l])
					cmp(fmt.Sprintf("layer %d bos", l), got.BOS[l], want.BOS[l])
					cmp(fmt.Sprintf("layer %d per_tok", l), got.PerTok[l], want.PerTok[l])
				}
				cmp("logits", got.Logits, want.Logits)
				t.Logf("%s %s (%s): T=%d, worst max rel err over all outputs %.3g (last layer per_tok %.3g, logits %.3g)",
					size, prec, g.Name(), len(batch.Tokens), worst,
					maxRel(got.PerTok[cfg.Layers], want.PerTok[cfg.Layers]), maxRel(got.Logits, want.Logits))
			})
		}
	}
}

// benchLengths draws lognormal-ish lengths in 30..1022 residues until the
// batch holds about tokens tokens.
func benchLengths(seed uint64, tokens int) []int {
	r := rand.New(rand.NewPCG(seed, 9))
	var ls []int
	total := 0
	for total < tokens {
		n := int(math.Exp(math.Log(300) + 0.7*r.NormFloat64()))
		n = min(max(n, 30), 1022)
		ls = append(ls, n)
		total += n + 2
	}
	return ls
}

// The benchmarks' parameters, as flags of the test binary (e.g.
// bin/esmcuda.test -test.bench ForwardCUDA -bench-sizes 3B).
var (
	benchSizes = flag.String("bench-sizes", "",
		"comma-separated esmtest.Config sizes for BenchmarkForwardCUDA (default 8M,35M,150M,650M) and "+
			"BenchmarkFirstBatch (default 35M,650M); 3B builds ~12 GB of random weights on the host (~1 min)")
	benchPrecision = flag.String("bench-precision", "fp16", "precision of BenchmarkForwardCUDA: fp16, bf16 or fp32")
	seriesTiny     = flag.Bool("series-tiny", false, "BenchmarkBatchSeries: run a forward of 156 tokens before the series")
	benchFA2       = flag.Bool("bench-fa2", false, "BenchmarkForwardCUDA: attention on varlen_fa2 even where varlen_wg runs (sm_90)")
	benchTokens    = flag.Int("bench-tokens", 16384, "BenchmarkForwardCUDA: about how many tokens a batch holds")
)

// sizesOr is -bench-sizes split at commas, or def when the flag is empty.
func sizesOr(def ...string) []string {
	if *benchSizes == "" {
		return def
	}
	return strings.Split(*benchSizes, ",")
}

// BenchmarkForwardCUDA runs whole forwards on packed batches of about
// -bench-tokens tokens, 16k by default (last layer's mean embedding read
// back, which synchronizes) and reports
// tokens/s and useful TFLOP/s (esm.Config.FLOPsPerToken), in the precision
// -bench-precision for the sizes -bench-sizes.
func BenchmarkForwardCUDA(b *testing.B) {
	prec := *benchPrecision
	for _, size := range sizesOr("8M", "35M", "150M", "650M") {
		b.Run(size+"/"+prec, func(b *testing.B) {
			cfg, err := esmtest.Config(size)
			if err != nil {
				b.Fatal(err)
			}
			g := newGPU(b, prec)
			defer g.Close()
			if *benchFA2 {
				g.attn.hopper = false
			}
			m, err := esm.NewModel(cfg, esmtest.Random(cfg, 1), g)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			lens := benchLengths(2, *benchTokens)
			batch := testBatch(b, 4, lens)
			flops := 0.0
			for s := 0; s < batch.Seqlens.N(); s++ {
				n := batch.Seqlens.Len(s)
				flops += float64(n) * cfg.FLOPsPerToken(n)
			}
			req := esm.Request{Layers: []int{cfg.Layers}, Reprs: esm.Mean}
			var out esm.Output
			if err := m.Forward(batch, req, &out); err != nil { // warm-up: compile, allocate
				b.Fatal(err)
			}
			var times []float64
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				if err := m.Forward(batch, req, &out); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(t0).Seconds())
			}
			b.StopTimer()
			sort.Float64s(times)
			med := times[len(times)/2]
			T := float64(len(batch.Tokens))
			b.ReportMetric(T/med, "tokens/s")
			b.ReportMetric(flops/med/1e12, "TFLOP/s")
			b.ReportMetric(T, "tokens/batch")
			b.Logf("%s %s on %s: T=%d nseq=%d median %.2f ms (attention %s)", size, prec, g.ctx.Device.Name, len(batch.Tokens), batch.NumSeqs(), med*1e3,
				g.attn.kernel(g.dt, cfg.HeadDim()).name)
		})
	}
}

// BenchmarkFirstBatch measures what a fresh process pays before its steady
// rate: a new backend and model (random weights), then three forwards of
// ~65k-token packed batches: the first (lazy module and library loading,
// activation allocation, cuBLASLt plans), one with a new token count (plans
// for the new shape only) and the first batch again (steady state). Sizes:
// -bench-sizes (default 35M,650M). Each iteration is one fresh
// backend, so -benchtime 2x shows the first iteration (NVRTC disk cache
// possibly cold) apart from a warm-cache one in the log.
func BenchmarkFirstBatch(b *testing.B) {
	for _, size := range sizesOr("35M", "650M") {
		b.Run(size, func(b *testing.B) {
			cfg, err := esmtest.Config(size)
			if err != nil {
				b.Fatal(err)
			}
			requireGPU(b)
			batchA := testBatch(b, 4, benchLengths(3, 65000))
			batchB := testBatch(b, 5, benchLengths(5, 64000))
			req := esm.Request{Layers: []int{cfg.Layers}, Reprs: esm.Mean}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
			var last [4]float64
			iter := 0
			for b.Loop() {
				t0 := time.Now()
				g := newGPU(b, "fp16")
				m, err := esm.NewModel(cfg, esmtest.Random(cfg, 1), g)
				if err != nil {
					b.Fatal(err)
				}
				load := time.Since(t0)
				var out esm.Output
				var d [3]time.Duration
				for i, batch := range []*esm.Batch{batchA, batchB, batchA} {
					t := time.Now()
					if err := m.Forward(batch, req, &out); err != nil {
						b.Fatal(err)
					}
					d[i] = time.Since(t)
				}
				if err := out.Release(); err != nil {
					b.Fatal(err)
				}
				m.Close()
				g.Close()
				last = [4]float64{ms(load), ms(d[0]), ms(d[1]), ms(d[2])}
				b.Logf("%s iteration %d: backend+model %.1f ms; forward T=%d first %.1f ms, new T=%d %.1f ms, again %.1f ms",
					size, iter, last[0], len(batchA.Tokens), last[1], len(batchB.Tokens), last[2], last[3])
				iter++
			}
			b.ReportMetric(last[1]-last[3], "first-extra-ms")
			b.ReportMetric(last[2]-last[3], "newT-extra-ms")
			b.ReportMetric(last[3], "steady-ms")
		})
	}
}

// BenchmarkBatchSeries runs, on one fresh backend and model per size of
// -bench-sizes (default 35M,650M), eight ~65k-token batches of different
// token counts twice over and logs each forward's time and the allocator's
// cuMemAlloc calls: the first pass holds what a process pays while its
// batches still bring new shapes (cuBLASLt kernels and plans, allocator
// growth), the second pass the steady state. first-pass-extra-ms is the
// first pass's time minus the second's, the first forward excluded.
func BenchmarkBatchSeries(b *testing.B) {
	for _, size := range sizesOr("35M", "650M") {
		b.Run(size, func(b *testing.B) {
			cfg, err := esmtest.Config(size)
			if err != nil {
				b.Fatal(err)
			}
			requireGPU(b)
			batches := make([]*esm.Batch, 8)
			for i := range batches {
				batches[i] = testBatch(b, uint64(20+i), benchLengths(uint64(20+i), 65000-500*i))
			}
			req := esm.Request{Layers: []int{cfg.Layers}, Reprs: esm.Mean}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
			var extra float64
			tiny := testBatch(b, 19, []int{60, 90})
			weights := esmtest.Random(cfg, 1)
			for b.Loop() {
				t0 := time.Now()
				g := newGPU(b, "fp16")
				t1 := time.Now()
				m, err := esm.NewModel(cfg, weights, g)
				if err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				b.Logf("%s: backend %.1f ms, model upload %.1f ms", size, ms(t1.Sub(t0)), ms(t2.Sub(t1)))
				var out esm.Output
				if *seriesTiny {
					if err := m.Forward(tiny, req, &out); err != nil {
						b.Fatal(err)
					}
					b.Logf("%s: forward of %d tokens first: %.1f ms", size, len(tiny.Tokens), ms(time.Since(t2)))
				}
				var pass [2]float64
				for p := range 2 {
					for i, batch := range batches {
						before := g.ctx.Stats().Mallocs
						t := time.Now()
						if err := m.Forward(batch, req, &out); err != nil {
							b.Fatal(err)
						}
						d := ms(time.Since(t))
						if p == 0 && i == 0 {
							b.Logf("%s pass %d batch %d T=%d: %.1f ms (first forward), %d cuMemAlloc", size, p, i, len(batch.Tokens), d, g.ctx.Stats().Mallocs-before)
							continue
						}
						pass[p] += d
						b.Logf("%s pass %d batch %d T=%d: %.1f ms, %d cuMemAlloc", size, p, i, len(batch.Tokens), d, g.ctx.Stats().Mallocs-before)
					}
				}
				if err := out.Release(); err != nil {
					b.Fatal(err)
				}
				m.Close()
				g.Close()
				first := pass[0] / float64(len(batches)-1)
				steady := pass[1] / float64(len(batches))
				extra = first*float64(len(batches)-1) - steady*float64(len(batches)-1)
				b.Logf("%s: batches 2-8 of the first pass %.1f ms each, second pass %.1f ms each", size, first, steady)
			}
			b.ReportMetric(extra, "first-pass-extra-ms")
		})
	}
}

// Prepare runs a first cuBLASLt product and leaves nothing of its own
// allocated but cuBLAS's workspace, which the first GEMM would allocate
// anyway; a second call finds everything set up. Every model load calls it
// (esm.Preparer), so the forward tests run after it.
func TestPrepare(t *testing.T) {
	for _, prec := range []string{"fp16", "bf16", "fp32"} {
		g := newGPU(t, prec)
		before := g.ctx.Stats().InUse
		if err := g.Prepare(); err != nil {
			t.Fatalf("%s: %v", prec, err)
		}
		first := g.ctx.Stats().InUse
		if first-before != cudadrv.BlasWorkspaceBytes {
			t.Errorf("%s: %d bytes in use after Prepare, %d before; want only the %d-byte cuBLAS workspace more", prec, first, before, cudadrv.BlasWorkspaceBytes)
		}
		// The attention module forward will use is loaded, and on an sm_90
		// device it is the varlen_wg one.
		if g.attn.mods[varlenModKey{g.dt, g.attn.kernel(g.dt, 64).wg}] == nil {
			t.Errorf("%s: no attention module after Prepare", prec)
		}
		if d := g.ctx.Device; prec != "fp32" && d.Major == 9 && d.Minor == 0 && !strings.Contains(g.Name(), "wgmma attention") {
			t.Errorf("%s on %s: Name %q; want the wgmma attention kernels (module error: %v)", prec, d.Arch(), g.Name(), g.attn.wgErr)
		}
		if err := g.Prepare(); err != nil {
			t.Fatalf("%s: second Prepare: %v", prec, err)
		}
		if again := g.ctx.Stats().InUse; again != first {
			t.Errorf("%s: %d bytes in use after a second Prepare, %d after the first", prec, again, first)
		}
		g.Close()
	}
}
