//go:build cgo

package cuda

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/esm2go/esm2go/internal/cudadrv"
)

// TestRotaryWideMatchesTab: rotary_wide (16-byte accesses) gives exactly the
// bits of rotary_tab (8-byte ones), which TestOpsMatchCPU checks against
// the CPU backend, for fp16 and bf16 at every head dim it is built for
// (24 and 64; rotaryTab must pick it there):
// q scaled and rotated, k rotated, v untouched, over tokens whose
// positions run up to 1,025 (the rope table's rows). Exact: per element
// both evaluate the same expression.
func TestRotaryWideMatchesTab(t *testing.T) {
	for _, prec := range []string{"fp16", "bf16"} {
		t.Run(prec, func(t *testing.T) {
			g := newGPU(t, prec)
			defer g.Close()
			ctx := g.ctx
			dt := cudadrv.F16
			if prec == "bf16" {
				dt = cudadrv.BF16
			}
			r := rand.New(rand.NewPCG(5, 6))
			const T, H, P = 1537, 3, 1026
			ps := make([]int32, T)
			for i := range ps {
				ps[i] = int32((i * 7) % P)
			}
			pos := devBuffer(t, ctx, 4*T, i32bytes(ps))
			var tested []int
			for _, HD := range varlenHeadDims {
				if _, ok := rotaryWideThreads(dt, HD); !ok {
					continue // rotaryTab runs rotary_tab itself
				}
				tested = append(tested, HD)
				cs := ropeTableFor(t, g, HD, P)
				n := T * 3 * H * HD
				data := u16bytes(toHalf(randn(r, n, 2), dt))
				a, b := devBuffer(t, ctx, 2*n, data), devBuffer(t, ctx, 2*n, data)
				qs := float32(1 / math.Sqrt(float64(HD)))
				// a: rotary_tab, launched by name; b: what rotaryTab picks.
				if err := g.k.launch("rotary_tab_"+dt.String(), g.k.gridFor(T*H*HD/4), block256, a, pos, cs,
					int32(T), int32(H), int32(HD), qs); err != nil {
					t.Fatal(err)
				}
				if err := g.k.rotaryTab(b, dt, pos, cs, T, H, HD, qs); err != nil {
					t.Fatal(err)
				}
				ga, gb := make([]byte, 2*n), make([]byte, 2*n)
				if err := ctx.CopyDtoH(ga, a); err != nil {
					t.Fatal(err)
				}
				if err := ctx.CopyDtoH(gb, b); err != nil {
					t.Fatal(err)
				}
				diff, moved := 0, 0
				for i := 0; i < n; i++ {
					if ga[2*i] != gb[2*i] || ga[2*i+1] != gb[2*i+1] {
						diff++
					}
					if ga[2*i] != data[2*i] || ga[2*i+1] != data[2*i+1] {
						moved++
					}
				}
				// v (the last D columns of every row) must be untouched.
				D := H * HD
				vdiff := 0
				for tk := 0; tk < T; tk++ {
					o := 2 * (tk*3*D + 2*D)
					if !bytes.Equal(gb[o:o+2*D], data[o:o+2*D]) {
						vdiff++
					}
				}
				msg := fmt.Sprintf("%s HD %d: %d of %d elements differ from rotary_tab (%d changed by the rotation), %d rows of v changed",
					prec, HD, diff, n, moved, vdiff)
				if diff != 0 || vdiff != 0 || moved == 0 {
					t.Error(msg)
				} else {
					t.Log(msg)
				}
			}
			if !slices.Equal(tested, []int{24, 64}) {
				t.Errorf("rotary_wide runs at head dims %v, want 24 and 64", tested)
			}
		})
	}
}

// devBuffer allocates n bytes on ctx, freed when tb ends, and copies data
// (when not nil) to their start.
func devBuffer(tb testing.TB, ctx *cudadrv.Context, n int, data []byte) cudadrv.DevicePtr {
	tb.Helper()
	buf, err := ctx.Alloc(n)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { buf.Free() })
	if data != nil {
		if err := ctx.CopyHtoD(buf.Ptr, data); err != nil {
			tb.Fatal(err)
		}
	}
	return buf.Ptr
}

// ropeTableFor is rope_table's (cos, sin) for P positions at head dim HD,
// with ESM2's frequencies 1/10000^(2i/HD), in a buffer freed when tb ends.
func ropeTableFor(tb testing.TB, g *Backend, HD, P int) cudadrv.DevicePtr {
	tb.Helper()
	half := HD / 2
	inv := make([]float32, half)
	for i := range inv {
		inv[i] = float32(1 / math.Pow(10000, float64(2*i)/float64(HD)))
	}
	invd, cs := devBuffer(tb, g.ctx, 4*half, f32bytes(inv)), devBuffer(tb, g.ctx, 8*P*half, nil)
	if err := g.k.ropeTable(cs, invd, P, half); err != nil {
		tb.Fatal(err)
	}
	return cs
}

func i32bytes(x []int32) []byte { return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x)) }
