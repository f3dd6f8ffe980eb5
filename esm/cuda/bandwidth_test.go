//go:build cgo

package cuda

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/esm2go/esm2go/internal/cudadrv"
)

// BenchmarkPassBandwidth: the forward's memory-bound passes at a full
// batch (65,536 tokens; the 8M, 35M, 150M, 650M and 15B widths, head dims
// 16, 24, 32, 64 and 128) against a device-to-device
// copy of as many bytes, the streaming rate the card gives: gelu_lut in
// place on the FFN activations (fp16, read and written once), the LayerNorm
// from the fp32 residual to fp16 (layernorm_vec, layernorm past its widths), the rotary pass on q and k of the packed
// qkv (the kernel rotaryTab picks, and rotary_tab's 8-byte accesses).
// The tensors are larger than the L2 (50 MB on an H200), filled with
// random values (N(0,1)-like bits, so the GELU table's lookups spread over
// its banks as in a forward). Event-timed, median of 20 launches, two
// rounds; GB/s counts each byte read or written once.
func BenchmarkPassBandwidth(b *testing.B) {
	g := newGPU(b, "fp16")
	b.Cleanup(func() { g.Close() }) // after the buffers', the table's and the events' cleanups
	ctx := g.ctx
	tab := geluTableF16(b, g)
	tm := newStreamTimer(b, ctx)
	r := rand.New(rand.NewPCG(3, 4))
	// A 16 MiB block of random bytes, copied over a buffer until it is full.
	const chunk = 16 << 20
	fill := func(p cudadrv.DevicePtr, bytes int, f32 bool) {
		src := make([]byte, chunk)
		if f32 {
			copy(src, f32bytes(randn(r, chunk/4, 1)))
		} else {
			copy(src, u16bytes(toHalf(randn(r, chunk/2, 1), cudadrv.F16)))
		}
		for off := 0; off < bytes; off += chunk {
			if err := ctx.CopyHtoD(p.Add(off), src[:min(chunk, bytes-off)]); err != nil {
				b.Fatal(err)
			}
		}
	}
	alloc := func(bytes int) cudadrv.DevicePtr { return devBuffer(b, ctx, bytes, nil) }
	timed := func(run func() error) float64 {
		var ts []float64
		for i := range 21 {
			ms := tm.ms(run)
			if i > 0 { // the first loads the module and raises the shared-memory limit
				ts = append(ts, ms)
			}
		}
		slices.Sort(ts)
		return ts[len(ts)/2]
	}
	const T = 65536
	for _, sh := range []struct {
		name     string
		D, H, HD int
	}{{"8M", 320, 20, 16}, {"35M", 480, 20, 24}, {"150M", 640, 20, 32}, {"650M", 1280, 20, 64}, {"15B", 5120, 40, 128}} {
		D, F := sh.D, 4*sh.D
		ff, ff2 := alloc(2*T*F), alloc(2*T*F)
		x, x2, h := alloc(4*T*D), alloc(4*T*D), alloc(2*T*D)
		qkv := alloc(2 * T * 3 * D)
		w, bias := alloc(4*D), alloc(4*D)
		fill(ff, 2*T*F, false)
		fill(x, 4*T*D, true)
		fill(qkv, 2*T*3*D, false)
		fill(w, 4*D, true)
		fill(bias, 4*D, true)
		const P = 1026
		cs := ropeTableFor(b, g, sh.HD, P)
		ps := make([]int32, T)
		for i := range ps {
			ps[i] = int32(i % P)
		}
		pos := devBuffer(b, ctx, 4*T, i32bytes(ps))
		passes := []struct {
			name  string
			bytes int
			run   func() error
		}{
			{"copy fp16 (GELU's bytes)", 4 * T * F, func() error { return ctx.CopyDtoDAsync(ff2, ff, 2*T*F, ctx.Stream()) }},
			{"gelu_lut", 4 * T * F, func() error { return g.k.geluLUT(ff, T*F, tab) }},
			{"copy fp32 residual", 8 * T * D, func() error { return ctx.CopyDtoDAsync(x2, x, 4*T*D, ctx.Stream()) }},
			{"layernorm f32->f16", 6 * T * D, func() error {
				if D > lnVecMaxD { // as Backend.LayerNorm picks
					return g.k.layernorm(h, cudadrv.F16, x, cudadrv.F32, w, bias, T, D, 1e-5)
				}
				return g.k.layernormVec(h, cudadrv.F16, x, w, bias, T, D, 1e-5)
			}},
			{"rotary (rotaryTab) q,k", 8 * T * D, func() error {
				return g.k.rotaryTab(qkv, cudadrv.F16, pos, cs, T, sh.H, sh.HD, 1)
			}},
			{"rotary_tab (8-byte) q,k", 8 * T * D, func() error {
				return g.k.launch("rotary_tab_f16", g.k.gridFor(T*sh.H*sh.HD/4), block256, qkv, pos, cs,
					int32(T), int32(sh.H), int32(sh.HD), float32(1))
			}},
		}
		for round := range 2 {
			for _, p := range passes {
				ms := timed(p.run)
				b.Logf("%s round %d %-26s %8.1f us %7.0f GB/s", sh.name, round, p.name, ms*1e3, float64(p.bytes)/(ms/1e3)/1e9)
			}
		}
	}
}
