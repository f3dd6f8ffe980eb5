//go:build cgo

package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/esm2go/esm2go/internal/cudadrv"
)

// BenchmarkMLPChunks asks whether the feed-forward half of a layer gains
// from running over the batch in token chunks small enough that FC1's
// output stays in the L2 cache (50 MB on H100/H200) for the GELU pass and
// FC2 to read: LN2 (fp32 x → fp16 h), FC1 (+bias, fp16), GELU in place
// (gelu_lut, and gelu with erff), FC2 (+bias, added to the fp32 x), each
// over chunk rows at a time, for the ESM2 shapes 35M, 150M, 650M and 3B on
// a 65,536-token batch. Random weights (the timing does not depend on the
// values). Times are events around the whole half-layer, mean of 20 after
// one warm-up, chunk sizes alternated, two rounds.
func BenchmarkMLPChunks(b *testing.B) {
	g := newGPU(b, "fp16")
	b.Cleanup(func() { g.Close() }) // after the table's and the events' cleanups
	ctx := g.ctx
	tab := geluTableF16(b, g)
	tm := newStreamTimer(b, ctx)
	const T = 65536
	r := rand.New(rand.NewPCG(5, 6))
	full := func(n int, v float32) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = v
		}
		return x
	}
	half := func(n int, std float64) []byte { return u16bytes(toHalf(randn(r, n, std), cudadrv.F16)) }
	var bufs []*cudadrv.Buffer
	defer func() {
		for _, bf := range bufs {
			bf.Free()
		}
	}()
	upload := func(p []byte) cudadrv.DevicePtr {
		bf, err := ctx.Alloc(len(p))
		if err != nil {
			b.Fatal(err)
		}
		bufs = append(bufs, bf)
		if err := ctx.CopyHtoD(bf.Ptr, p); err != nil {
			b.Fatal(err)
		}
		return bf.Ptr
	}
	for _, sh := range []struct {
		name string
		D, F int
	}{{"35M", 480, 1920}, {"150M", 640, 2560}, {"650M", 1280, 5120}, {"3B", 2560, 10240}} {
		D, F := sh.D, sh.F
		x := upload(f32bytes(randn(r, T*D, 1)))
		h := upload(make([]byte, 2*T*D))
		ff := upload(make([]byte, 2*T*F))
		lnw := upload(f32bytes(full(D, 1)))
		lnb := upload(f32bytes(full(D, 0)))
		w1 := upload(half(F*D, 0.03))
		b1 := upload(half(F, 0.1))
		w2 := upload(half(D*F, 0.02))
		b2 := upload(f32bytes(full(D, 0.01)))
		run := func(chunk int, erf bool) {
			for t0 := 0; t0 < T; t0 += chunk {
				n := min(chunk, T-t0)
				if err := g.k.layernormVec(h.Add(2*t0*D), cudadrv.F16, x.Add(4*t0*D), lnw, lnb, n, D, 1e-5); err != nil {
					b.Fatal(err)
				}
				if err := ctx.LinearBias(ff.Add(2*t0*F), h.Add(2*t0*D), w1, b1, n, F, D, cudadrv.FP16, cudadrv.EpilogueBias); err != nil {
					b.Fatal(err)
				}
				var err error
				if erf {
					err = g.k.gelu(ff.Add(2*t0*F), cudadrv.F16, n*F)
				} else {
					err = g.k.geluLUT(ff.Add(2*t0*F), n*F, tab)
				}
				if err != nil {
					b.Fatal(err)
				}
				p := cudadrv.Precision{In: cudadrv.F16, Out: cudadrv.F32, Compute: cudadrv.ComputeF32}
				if err := ctx.LinearBias(x.Add(4*t0*D), ff.Add(2*t0*F), w2, b2, n, D, F, p, cudadrv.EpilogueBiasAccumulate); err != nil {
					b.Fatal(err)
				}
			}
		}
		flops := 4 * float64(T) * float64(D) * float64(F)
		for round := range 2 {
			for _, chunk := range []int{T, 16384, 8192, 4096, 2048} {
				for _, erf := range []bool{false, true} {
					run(chunk, erf) // warm-up: plans, compile
					const reps = 20
					ms := tm.ms(func() error {
						for range reps {
							run(chunk, erf)
						}
						return nil
					}) / reps
					kind := "lut"
					if erf {
						kind = "erf"
					}
					b.Logf("%s round %d chunk %5d %s: %7.3f ms %6.1f TFLOP/s", sh.name, round, chunk, kind, ms, flops/(ms/1e3)/1e12)
				}
			}
		}
		for _, bf := range bufs {
			if err := bf.Free(); err != nil {
				b.Fatal(err)
			}
		}
		bufs = bufs[:0]
	}
}
