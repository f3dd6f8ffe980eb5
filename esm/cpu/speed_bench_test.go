//go:build unix

package cpu

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/esmtest"
)

// Speed benchmarks for issue #16 (docs/CPU.md): the forward pass and the
// attention alone, in useful GFLOP/s, next to the rate the same BLAS reaches
// on the model's own linear layers, measured in the same run so that the
// share does not depend on how busy the machine was.
//
//	go test -run '^$' -bench 'Speed|LayerGemm' -benchtime 3x ./esm/cpu
//
// The machine these run on may be shared, so besides wall-clock rates
// (GFLOP/s, sgemm-GFLOP/s, tokens/s) each benchmark reports rates per
// CPU time of the process (cpu-GFLOP/s: FLOPs over CPU seconds divided by
// the worker count), which time spent descheduled does not dilute; their
// ratio is "share". CPU time does not see workers idling at the end of a
// parallel op, so on an idle machine the wall-clock rates are the ones a
// user gets.
//
// Useful FLOPs of a sequence of n tokens through L layers of width d:
// n*(24*L*d^2 + 4*L*n*d) (the four linear layers, Q·K^T and P·V).

// timer sums the wall-clock and process CPU time of the calls it times.
type timer struct{ wall, cpu time.Duration }

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (t *timer) time(fn func()) {
	w, c := time.Now(), cpuNow()
	fn()
	t.cpu += cpuNow() - c
	t.wall += time.Since(w)
}

// rates returns flops (per call) times calls over the wall-clock and over
// the CPU time per worker, in GFLOP/s.
func (t *timer) rates(flops float64, calls, workers int) (wall, cpu float64) {
	f := flops * float64(calls) / 1e9
	return f / t.wall.Seconds(), f / (t.cpu.Seconds() / float64(workers))
}

// speedSizes are the ESM2 shapes measured; speedLens the residues per
// sequence; every batch packs as many sequences as fit in speedTokens.
var (
	speedSizes  = []string{"8M", "35M", "150M"}
	speedLens   = []int{100, 300, 1000}
	speedTokens = 4096
)

// usefulFlops counts the FLOPs of the forward pass over sequences of the
// given token counts (BOS and EOS included).
func usefulFlops(cfg esm.Config, lens []int) float64 {
	L, d := float64(cfg.Layers), float64(cfg.Dim)
	var f float64
	for _, n := range lens {
		fn := float64(n)
		f += fn * (24*L*d*d + 4*L*fn*d)
	}
	return f
}

// attnFlops counts the FLOPs of one attention call (Q·K^T and P·V).
func attnFlops(d int, lens []int) float64 {
	var f float64
	for _, n := range lens {
		f += 4 * float64(n) * float64(n) * float64(d)
	}
	return f
}

// layerGemm runs one layer's four linear products (QKV, output, FFN up,
// FFN down) over T tokens the way Backend.Linear does (rows split across
// the workers, one single-threaded BLAS call each), without the bias adds:
// the BLAS rate the forward pass is compared with.
type layerGemm struct {
	be                 *Backend
	T, d               int
	x, w, y, hid, hidW []float32
}

func newLayerGemm(be *Backend, T, d int) *layerGemm {
	r := rand.New(rand.NewPCG(9, 9))
	return &layerGemm{be: be, T: T, d: d,
		x: randn(r, T*d, 1), w: randn(r, 4*d*d, 0.02), y: make([]float32, T*4*d),
		hid: randn(r, T*4*d, 1), hidW: randn(r, 4*d*d, 0.02)}
}

func (g *layerGemm) flops() float64 { return 24 * float64(g.T) * float64(g.d) * float64(g.d) }

func (g *layerGemm) run() {
	d := g.d
	for _, s := range [][2]int{{d, 3 * d}, {d, d}, {d, 4 * d}, {4 * d, d}} {
		K, N := s[0], s[1]
		x, w := g.x, g.w
		if K == 4*d {
			x, w = g.hid, g.hidW
		}
		g.be.parallel(g.T, 32, func(lo, hi int) {
			g.be.mm.Sgemm(true, hi-lo, N, K, 1, x[lo*K:], K, w, K, 0, g.y[lo*N:], N)
		})
	}
}

// speedBatch packs sequences of n residues (n+2 tokens) up to speedTokens.
func speedBatch(n int) (*esm.Batch, []int) {
	tok := esm.NewTokenizer(esm.DefaultMaxResidues)
	r := rand.New(rand.NewPCG(1, uint64(n)))
	var batch esm.Batch
	batch.Reset()
	var lens []int
	for len(batch.Tokens)+n+2 <= speedTokens || len(lens) == 0 {
		toks, _, err := tok.Encode(nil, esmtest.Sequence(r, n))
		if err != nil {
			panic(err)
		}
		batch.Append(toks, 0)
		lens = append(lens, len(toks))
	}
	return &batch, lens
}

// BenchmarkLayerGemm reports the BLAS rate on one layer's linear products
// at T = 4096 tokens for each ESM2 width.
func BenchmarkLayerGemm(b *testing.B) {
	be := New(Options{})
	defer be.Close()
	for _, size := range speedSizes {
		cfg, _ := esmtest.Config(size)
		b.Run(size, func(b *testing.B) {
			g := newLayerGemm(be, speedTokens, cfg.Dim)
			for b.Loop() {
				g.run()
			}
			b.ReportMetric(g.flops()*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkSpeed runs the forward pass (last layer's mean requested) and,
// alternating with it, the layer GEMMs of the same width: GFLOP/s is the
// forward pass's useful rate, sgemm-GFLOP/s the BLAS rate, share their
// ratio, tokens/s the forward pass's throughput.
func BenchmarkSpeed(b *testing.B) {
	be := New(Options{})
	defer be.Close()
	b.Logf("%s", be.Name())
	for _, size := range speedSizes {
		cfg, _ := esmtest.Config(size)
		m, err := esm.NewModel(cfg, esmtest.Random(cfg, 7), be)
		if err != nil {
			b.Fatal(err)
		}
		g := newLayerGemm(be, speedTokens, cfg.Dim)
		for _, n := range speedLens {
			b.Run(fmt.Sprintf("%s/n=%d", size, n), func(b *testing.B) {
				batch, lens := speedBatch(n)
				req := esm.Request{Layers: []int{cfg.Layers}, Reprs: esm.Mean}
				var out esm.Output
				if err := m.Forward(batch, req, &out); err != nil { // warm-up: buffers, rotary tables
					b.Fatal(err)
				}
				var fwd, ref timer
				var err error
				for b.Loop() {
					ref.time(g.run)
					fwd.time(func() { err = m.Forward(batch, req, &out) })
					if err != nil {
						b.Fatal(err)
					}
				}
				report(b, &fwd, &ref, usefulFlops(cfg, lens), g.flops(), be.threads)
				b.ReportMetric(float64(len(batch.Tokens))*float64(b.N)/fwd.wall.Seconds(), "tokens/s")
				b.ReportMetric(float64(len(batch.Tokens))*float64(b.N)/(fwd.cpu.Seconds()/float64(be.threads)), "cpu-tokens/s")
			})
		}
		m.Close()
	}
}

// BenchmarkAttention runs Backend.Attention alone on random q, k, v of the
// ESM2 head shapes (20 heads), alternating with the layer GEMMs.
func BenchmarkAttention(b *testing.B) {
	be := New(Options{})
	defer be.Close()
	for _, size := range speedSizes {
		cfg, _ := esmtest.Config(size)
		D, H := cfg.Dim, cfg.Heads
		g := newLayerGemm(be, speedTokens, D)
		for _, n := range speedLens {
			b.Run(fmt.Sprintf("%s/n=%d", size, n), func(b *testing.B) {
				batch, lens := speedBatch(n)
				if err := be.SetBatch(batch); err != nil {
					b.Fatal(err)
				}
				T := len(batch.Tokens)
				r := rand.New(rand.NewPCG(2, 2))
				// q carries qScale = HD^-0.5 as RotaryQK leaves it.
				qkv := &tensor{d: randn(r, T*3*D, 1)}
				for t := 0; t < T; t++ {
					for i := 0; i < D; i++ {
						qkv.d[t*3*D+i] *= 0.25
					}
				}
				out := &tensor{d: make([]float32, T*D)}
				var att, ref timer
				var err error
				for b.Loop() {
					ref.time(g.run)
					att.time(func() { err = be.Attention(out, qkv, H, D/H) })
					if err != nil {
						b.Fatal(err)
					}
				}
				report(b, &att, &ref, attnFlops(D, lens), g.flops(), be.threads)
			})
		}
	}
}

// report reports op's and the reference's rates and their ratio.
func report(b *testing.B, op, ref *timer, flops, refFlops float64, workers int) {
	w, c := op.rates(flops, b.N, workers)
	rw, rc := ref.rates(refFlops, b.N, workers)
	b.ReportMetric(w, "GFLOP/s")
	b.ReportMetric(c, "cpu-GFLOP/s")
	b.ReportMetric(rw, "sgemm-GFLOP/s")
	b.ReportMetric(rc, "sgemm-cpu-GFLOP/s")
	b.ReportMetric(c/rc, "share")
	b.ReportMetric(0, "ns/op") // the loop also times the GEMM reference
}
