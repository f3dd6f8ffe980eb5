//go:build cgo

package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/esm2go/esm2go/internal/cudadrv"
)

// TestGeluLUTMatchesGelu: gelu_lut (the table path Backend.GELU takes for
// fp16/bf16) gives exactly the bits of gelu (erff per element) for every one
// of the 65,536 inputs of each type, NaN and infinities included, through
// the vector loop, its tail, and an unaligned start (scalar loop only).
// Exact, no tolerance: the table is gelu_f's own output for each input.
func TestGeluLUTMatchesGelu(t *testing.T) {
	for _, prec := range []string{"fp16", "bf16"} {
		t.Run(prec, func(t *testing.T) {
			g := newGPU(t, prec)
			defer g.Close()
			if !g.k.geluLUTOK() {
				t.Skipf("%s gives a block %d bytes of shared memory, the table needs %d: gelu is used",
					g.ctx.Device.Name, g.ctx.Device.SharedPerBlockOptin, geluLUTShared)
			}
			ctx, dt := g.ctx, g.dt
			all := make([]uint16, 65536+8)
			for i := range all {
				all[i] = uint16(i * 40503) // a permutation of the 65,536 patterns (40503 is odd), then 8 more
			}
			tab, err := ctx.Alloc(geluLUTShared)
			if err != nil {
				t.Fatal(err)
			}
			defer tab.Free()
			if err := g.k.geluTable(tab.Ptr, dt); err != nil {
				t.Fatal(err)
			}
			bufA, err := ctx.Alloc(2 * len(all))
			if err != nil {
				t.Fatal(err)
			}
			defer bufA.Free()
			bufB, err := ctx.Alloc(2 * len(all))
			if err != nil {
				t.Fatal(err)
			}
			defer bufB.Free()
			for _, c := range []struct {
				name   string
				off, n int
			}{{"aligned", 0, 65536}, {"tail", 0, 65536 + 5}, {"unaligned", 1, 65536}, {"short", 0, 13}} {
				for _, buf := range []*cudadrv.Buffer{bufA, bufB} {
					if err := ctx.CopyHtoD(buf.Ptr, u16bytes(all)); err != nil {
						t.Fatal(err)
					}
				}
				if err := g.k.gelu(bufA.Ptr.Add(2*c.off), dt, c.n); err != nil {
					t.Fatal(err)
				}
				if err := g.k.geluLUT(bufB.Ptr.Add(2*c.off), c.n, tab.Ptr); err != nil {
					t.Fatal(err)
				}
				want, got := make([]uint16, len(all)), make([]uint16, len(all))
				if err := ctx.CopyDtoH(u16bytes(want), bufA.Ptr); err != nil {
					t.Fatal(err)
				}
				if err := ctx.CopyDtoH(u16bytes(got), bufB.Ptr); err != nil {
					t.Fatal(err)
				}
				bad := 0
				for i := range want {
					if got[i] != want[i] {
						if bad < 5 {
							t.Errorf("%s: element %d (input %#04x): gelu_lut %#04x, gelu %#04x", c.name, i, all[i], got[i], want[i])
						}
						bad++
					}
				}
				if bad > 0 {
					t.Errorf("%s: %d of %d elements differ", c.name, bad, len(all))
				}
				// Not vacuous: elements in range changed (gelu(1) = 0.8413),
				// the ones outside it did not.
				one := toHalf([]float32{1}, dt)[0]
				for i := c.off; i < c.off+c.n; i++ {
					if all[i] == one {
						if w := toHalf([]float32{0.8413447}, dt)[0]; got[i] != w {
							t.Errorf("%s: gelu(1) = %#04x, want %#04x", c.name, got[i], w)
						}
					}
				}
				for i := range all {
					if (i < c.off || i >= c.off+c.n) && got[i] != all[i] {
						t.Fatalf("%s: element %d outside [%d, %d) changed", c.name, i, c.off, c.off+c.n)
					}
				}
			}
		})
	}
}

// BenchmarkGELU: the GELU pass on the 35M and 650M FFN activations of
// BenchmarkForwardCUDA's batch (16,596 tokens × 4·D fp16, values N(0, 1)),
// gelu (erff per element) against gelu_lut. Each launch gets the same
// input (restored by a device copy outside the timed span) and is timed by
// events around it alone; mean of 50, twice each, alternating. GB/s counts
// the tensor read and written once.
func BenchmarkGELU(b *testing.B) {
	g := newGPU(b, "fp16")
	b.Cleanup(func() { g.Close() }) // after the table's and the events' cleanups
	ctx := g.ctx
	tab := geluTableF16(b, g)
	tm := newStreamTimer(b, ctx)
	r := rand.New(rand.NewPCG(1, 2))
	for _, sh := range []struct {
		name string
		n    int
	}{{"35M", 16596 * 1920}, {"650M", 16596 * 5120}} {
		vals := make([]uint16, sh.n)
		for i := range vals {
			vals[i] = cudadrv.HalfBits(float32(r.NormFloat64()))
		}
		src, err := ctx.Alloc(2 * sh.n)
		if err != nil {
			b.Fatal(err)
		}
		x, err := ctx.Alloc(2 * sh.n)
		if err != nil {
			b.Fatal(err)
		}
		if err := ctx.CopyHtoD(src.Ptr, u16bytes(vals)); err != nil {
			b.Fatal(err)
		}
		kinds := []struct {
			name string
			run  func() error
		}{
			{"gelu", func() error { return g.k.gelu(x.Ptr, cudadrv.F16, sh.n) }},
			{"gelu_lut", func() error { return g.k.geluLUT(x.Ptr, sh.n, tab) }},
		}
		for range 2 {
			for _, k := range kinds {
				const reps = 50
				var ms float64
				for i := range reps + 1 {
					if err := ctx.CopyDtoDAsync(x.Ptr, src.Ptr, 2*sh.n, ctx.Stream()); err != nil {
						b.Fatal(err)
					}
					el := tm.ms(k.run)
					if i > 0 { // the first compiles and raises the shared-memory limit
						ms += el / reps
					}
				}
				b.Logf("%-5s n=%d %-9s %8.1f us %7.0f GB/s", sh.name, sh.n, k.name, ms*1e3, 4*float64(sh.n)/(ms/1e3)/1e9)
			}
		}
		if err := x.Free(); err != nil {
			b.Fatal(err)
		}
		if err := src.Free(); err != nil {
			b.Fatal(err)
		}
	}
}

// geluTableF16 returns gelu_lut's fp16 table on g's device, freed when tb
// ends.
func geluTableF16(tb testing.TB, g *Backend) cudadrv.DevicePtr {
	tb.Helper()
	tab, err := g.ctx.Alloc(geluLUTShared)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tab.Free() })
	if err := g.k.geluTable(tab.Ptr, cudadrv.F16); err != nil {
		tb.Fatal(err)
	}
	return tab.Ptr
}

// streamTimer times spans of work queued on its context's stream between
// two events, which are destroyed when the test ends.
type streamTimer struct {
	tb       testing.TB
	ctx      *cudadrv.Context
	ev0, ev1 *cudadrv.Event
}

func newStreamTimer(tb testing.TB, ctx *cudadrv.Context) streamTimer {
	tb.Helper()
	var ev [2]*cudadrv.Event
	for i := range ev {
		e, err := ctx.NewEvent(true)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { e.Destroy() })
		ev[i] = e
	}
	return streamTimer{tb: tb, ctx: ctx, ev0: ev[0], ev1: ev[1]}
}

// ms queues run between the two events, waits for the second and returns
// the span in milliseconds; an error of run fails the test.
func (st streamTimer) ms(run func() error) float64 {
	st.tb.Helper()
	if err := st.ev0.Record(st.ctx.Stream()); err != nil {
		st.tb.Fatal(err)
	}
	if err := run(); err != nil {
		st.tb.Fatal(err)
	}
	if err := st.ev1.Record(st.ctx.Stream()); err != nil {
		st.tb.Fatal(err)
	}
	if err := st.ev1.Synchronize(); err != nil {
		st.tb.Fatal(err)
	}
	el, err := cudadrv.ElapsedMs(st.ev0, st.ev1)
	if err != nil {
		st.tb.Fatal(err)
	}
	return float64(el)
}
