//go:build cgo

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/esm2go/esm2go/attention"
	"github.com/esm2go/esm2go/internal/cudadrv"
	"github.com/esm2go/esm2go/internal/cudadrv/cudatest"
)

// gpuContext opens a context on device 0 for the kernel tests, skipping
// where the machine has no GPU and failing where a GPU is present but CUDA
// does not start (cudatest.Start).
func gpuContext(t testing.TB) *cudadrv.Context {
	t.Helper()
	ctx := cudatest.Start(t, "CUDA context on device 0", func() (*cudadrv.Context, error) {
		if _, err := cudadrv.Load(); err != nil {
			return nil, err
		}
		return cudadrv.NewContext(0)
	})
	t.Cleanup(func() {
		if err := ctx.Close(); err != nil {
			t.Error(err)
		}
	})
	return ctx
}

// The launcher's pick (varlenKernel) and the instantiations in attention.cu
// are the same set: every kernel the launcher can ask for exists, and no
// kernel is compiled that nothing launches. Runs without a GPU.
func TestVarlenKernelsInstantiated(t *testing.T) {
	inst := regexp.MustCompile(`(?m)^(VARLEN_INST|VARLEN_FA2_INST|VARLEN_FA2M2_INST|VARLEN_WG_INST)\((\d+)(?:, (\d+))?\)$`)
	have := map[string]bool{}
	wgs := map[string]string{} // varlen_wg kernel: warpgroups per block
	for _, m := range inst.FindAllStringSubmatch(attentionSource, -1) {
		switch m[1] {
		case "VARLEN_INST":
			have["varlen_fwd_f32_hd"+m[2]] = true
		default:
			kernel := map[string]string{"VARLEN_FA2_INST": "fa2", "VARLEN_FA2M2_INST": "fa2m2", "VARLEN_WG_INST": "wg"}[m[1]]
			for _, dt := range []cudadrv.DataType{cudadrv.F16, cudadrv.BF16} {
				name := fmt.Sprintf("varlen_%s_%s_hd%s", kernel, dt, m[2])
				have[name] = true
				wgs[name] = m[3]
			}
		}
	}
	picked := map[string]bool{}
	for _, dt := range []cudadrv.DataType{cudadrv.F32, cudadrv.F16, cudadrv.BF16} {
		for _, hd := range varlenHeadDims {
			for _, wg := range []bool{false, true} {
				k := varlenKernel(dt, hd, wg)
				picked[k.name] = true
				if !have[k.name] {
					t.Errorf("%v hd=%d wg=%v: the launcher picks %s, which attention.cu does not instantiate", dt, hd, wg, k.name)
				}
				if k.wg && wgs[k.name] != fmt.Sprint(k.threads/128) {
					t.Errorf("%s: the launcher runs %d threads, attention.cu instantiates %s warpgroups", k.name, k.threads, wgs[k.name])
				}
			}
		}
	}
	for name := range have {
		if !picked[name] {
			t.Errorf("attention.cu instantiates %s, which the launcher never picks", name)
		}
	}
	if len(have) == 0 {
		t.Fatal("no instantiations found in attention.cu")
	}
}

// The fp32 kernel must match attention.Reference, its plain Go twin, on the varlen shapes that
// catch real bugs, for every head dim. Both compute in fp32 and differ only
// in summation order (and the online softmax's rescaling), so 1e-5 of the
// largest output is ample (observed: a few 1e-7).
func TestVarlenMatchesReference(t *testing.T) {
	ctx := gpuContext(t)
	v := newVarlen(ctx)
	r := rand.New(rand.NewPCG(5, 6))
	cases := map[string][]int{
		"one-token": {1}, "single": {37}, "not-tile": {1, 65, 3, 129, 31, 33},
		"many-short": {3, 1, 2, 5, 1, 4, 3, 2, 2, 1, 7, 3}, "longest": {1026, 5}, "long-4096": {4096},
	}
	if testing.Short() { // the fp32 kernel is the parity path, not tuned: spare the slow reference
		delete(cases, "long-4096")
	}
	for name, lens := range cases {
		for _, hd := range varlenHeadDims {
			H := 3
			D := H * hd
			s, err := attention.NewSeqlens(lens)
			if err != nil {
				t.Fatal(err)
			}
			T := s.Total()
			qkv := make([]float32, T*3*D)
			for i := range qkv {
				qkv[i] = float32(r.NormFloat64()) * 0.5
			}
			want := make([]float32, T*D)
			if err := attention.Reference(attention.Args{Out: want, LdOut: D, Q: qkv, K: qkv[D:], V: qkv[2*D:], Ld: 3 * D, Seqlens: s, H: H, HD: hd, Scale: 0.7}); err != nil {
				t.Fatal(err)
			}
			dq, _ := ctx.Alloc(4 * len(qkv))
			do, _ := ctx.Alloc(4 * T * D)
			dcu, _ := ctx.Alloc(4 * len(s.Cu))
			if err := ctx.CopyHtoD(dq.Ptr, f32bytes(qkv)); err != nil {
				t.Fatal(err)
			}
			if err := ctx.CopyHtoD(dcu.Ptr, unsafe.Slice((*byte)(unsafe.Pointer(&s.Cu[0])), 4*len(s.Cu))); err != nil {
				t.Fatal(err)
			}
			// Poison the output: every element must be written.
			if err := ctx.MemsetD32Async(do.Ptr, math.Float32bits(float32(math.NaN())), T*D, ctx.Stream()); err != nil {
				t.Fatal(err)
			}
			err = v.forward(varlenArgs{Out: do.Ptr, LdOut: D, Q: dq.Ptr, K: dq.Ptr.Add(4 * D), V: dq.Ptr.Add(8 * D), Ld: 3 * D,
				CuSeqlens: dcu.Ptr, Seqlens: s, H: H, HD: hd, Scale: 0.7, DType: cudadrv.F32})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, T*D)
			if err := ctx.CopyDtoH(f32bytes(got), do.Ptr); err != nil {
				t.Fatal(err)
			}
			var maxDiff, maxRef float64
			for i := range want {
				d := math.Abs(float64(got[i] - want[i]))
				if math.IsNaN(float64(got[i])) {
					d = math.Inf(1)
				}
				maxDiff = math.Max(maxDiff, d)
				maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
			}
			if maxDiff > 1e-5*maxRef {
				t.Errorf("%s hd=%d: max |diff| %.3g (max |ref| %.3g)", name, hd, maxDiff, maxRef)
			} else {
				t.Logf("%s hd=%d T=%d: max rel diff %.3g", name, hd, T, maxDiff/maxRef)
			}
			dq.Free()
			do.Free()
			dcu.Free()
		}
	}
}

// halfCase is one varlen shape of the fp16/bf16 check: inputs exact in both
// fp16 and bf16 (bf16-rounded, no fp16 subnormals), so that one fp32
// reference serves both element types and every kernel.
type halfCase struct {
	name string
	s    attention.Seqlens
	H    int
	hd   int
	qkv  []float32
	want []float32
}

// toHalf converts to the bits of dt (F16 or BF16).
func toHalf(x []float32, dt cudadrv.DataType) []uint16 {
	h := make([]uint16, len(x))
	for i, v := range x {
		if dt == cudadrv.F16 {
			h[i] = cudadrv.HalfBits(v)
		} else {
			h[i] = cudadrv.BF16Bits(v)
		}
	}
	return h
}

func u16bytes(x []uint16) []byte { return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 2*len(x)) }

// runHalf uploads c's inputs as dt, runs the kernel on NaN-poisoned output
// and returns max |got - want| / max |want| (+Inf for NaN: unwritten).
func runHalf(t *testing.T, ctx *cudadrv.Context, v *varlen, c *halfCase, dt cudadrv.DataType) float64 {
	T, D := c.s.Total(), c.H*c.hd
	hq := toHalf(c.qkv, dt)
	dq, err := ctx.Alloc(2 * len(hq))
	if err != nil {
		t.Fatal(err)
	}
	defer dq.Free()
	do, err := ctx.Alloc(2 * T * D)
	if err != nil {
		t.Fatal(err)
	}
	defer do.Free()
	dcu, err := ctx.Alloc(4 * len(c.s.Cu))
	if err != nil {
		t.Fatal(err)
	}
	defer dcu.Free()
	if err := ctx.CopyHtoD(dq.Ptr, u16bytes(hq)); err != nil {
		t.Fatal(err)
	}
	if err := ctx.CopyHtoD(dcu.Ptr, unsafe.Slice((*byte)(unsafe.Pointer(&c.s.Cu[0])), 4*len(c.s.Cu))); err != nil {
		t.Fatal(err)
	}
	if err := ctx.MemsetD8Async(do.Ptr, 0xff, 2*T*D, ctx.Stream()); err != nil { // NaN in fp16 and bf16
		t.Fatal(err)
	}
	err = v.forward(varlenArgs{Out: do.Ptr, LdOut: D, Q: dq.Ptr, K: dq.Ptr.Add(2 * D), V: dq.Ptr.Add(4 * D), Ld: 3 * D,
		CuSeqlens: dcu.Ptr, Seqlens: c.s, H: c.H, HD: c.hd, Scale: 0.7, DType: dt})
	if err != nil {
		t.Errorf("%s %v hd=%d: %v", c.name, dt, c.hd, err)
		return math.Inf(1)
	}
	got := make([]uint16, T*D)
	if err := ctx.CopyDtoH(u16bytes(got), do.Ptr); err != nil {
		t.Fatal(err)
	}
	var maxDiff, maxRef float64
	for i, w := range c.want {
		g := cudadrv.BF16ToFloat32(got[i])
		if dt == cudadrv.F16 {
			g = cudadrv.HalfToFloat32(got[i])
		}
		d := math.Abs(float64(g - w))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		maxDiff = max(maxDiff, d)
		maxRef = max(maxRef, math.Abs(float64(w)))
	}
	return maxDiff / maxRef
}

// The fp16/bf16 kernels (fa2, and fa2m2 at head dim 24) against
// attention.Reference on the same rounded inputs, for every head dim, the
// varlen edge cases, a 4096 long sequence (one head, so the Go reference stays a few seconds; every
// reference is computed once, in parallel) and a mixed batch of 30..1022.
// Tolerances (max |diff| / max |ref|) are esm/cuda's per-op ones: the GPU
// rounds P and the output to the element type.
func TestVarlenHalfMatchesReference(t *testing.T) {
	ctx := gpuContext(t)
	v := newVarlen(ctx)
	tol := map[cudadrv.DataType]float64{cudadrv.F16: 2e-3, cudadrv.BF16: 1.6e-2}
	shapes := []struct {
		name string
		lens []int
		H    int
	}{
		{"one-token", []int{1}, 3}, {"single", []int{37}, 3}, {"not-tile", []int{1, 65, 3, 129, 31, 33}, 3},
		{"many-short", []int{3, 1, 2, 5, 1, 4, 3, 2, 2, 1, 7, 3}, 3}, {"longest", []int{1026, 5}, 3},
		{"tile-edges", []int{63, 64, 65, 127, 128, 129, 191, 192}, 2},
		{"mixed", benchLengths(7, 3000), 2}, {"long-4096", []int{4096}, 1},
	}
	r := rand.New(rand.NewPCG(11, 12))
	var cases []*halfCase
	for _, sh := range shapes {
		s, err := attention.NewSeqlens(sh.lens)
		if err != nil {
			t.Fatal(err)
		}
		for _, hd := range varlenHeadDims {
			c := &halfCase{name: sh.name, s: s, H: sh.H, hd: hd}
			D := sh.H * hd
			c.qkv = make([]float32, s.Total()*3*D)
			for i := range c.qkv {
				x := cudadrv.BF16ToFloat32(cudadrv.BF16Bits(float32(r.NormFloat64()) * 0.5))
				if math.Abs(float64(x)) < 1.0/16384 {
					x = 0
				}
				c.qkv[i] = x
			}
			c.want = make([]float32, s.Total()*D)
			cases = append(cases, c)
		}
	}
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Go(func() {
			D := c.H * c.hd
			errs[i] = attention.Reference(attention.Args{Out: c.want, LdOut: D, Q: c.qkv, K: c.qkv[D:], V: c.qkv[2*D:], Ld: 3 * D,
				Seqlens: c.s, H: c.H, HD: c.hd, Scale: 0.7})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("reference %s hd=%d: %v", cases[i].name, cases[i].hd, err)
		}
	}
	worst := map[string]float64{}
	for _, lv := range launchers(v) {
		for _, c := range cases {
			for _, dt := range []cudadrv.DataType{cudadrv.F16, cudadrv.BF16} {
				e := runHalf(t, ctx, lv, c, dt)
				key := lv.kernel(dt, c.hd).name
				worst[key] = max(worst[key], e)
				if !(e <= tol[dt]) {
					t.Errorf("%s %s T=%d: max rel diff %.3g > %.3g", c.name, key, c.s.Total(), e, tol[dt])
				}
			}
		}
	}
	if v.wgErr != nil {
		t.Errorf("varlen_wg did not compile, so the launcher fell back to varlen_fa2: %v", v.wgErr)
	}
	var keys []string
	for k := range worst {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %-24s worst max rel diff %.3g", k, worst[k])
	}
	t.Logf("fp16/bf16 kernels vs Reference over %d shapes:%s", len(shapes), b.String())
}

// BenchmarkVarlen times the kernel varlenKernel picks on packed batches of
// ~16k tokens in lengths 30..1022 (BenchmarkForwardCUDA's batch) for ESM2's
// head shapes (8M: 20x16, 35M: 20x24, 150M: 20x32, 650M: 20x64; 8x128 for
// the HD 128 kernel), logging two lines per shape (the second shows the
// spread): ms is the mean of 50 launches after a warm-up, the clock stopped
// after a synchronize (all in the benchmark's own goroutine: the context is
// bound to its thread, so no sub-benchmarks). TFLOP/s counts 4·n²·HD per
// sequence and head (Q·Kᵀ and P·V, 2 FLOPs per multiply-add, no causal
// halving), the full n² even though tiles past n do no work.
func BenchmarkVarlen(b *testing.B) {
	ctx := gpuContext(b)
	v := newVarlen(ctx)
	s, err := attention.NewSeqlens(benchLengths(2, 16384))
	if err != nil {
		b.Fatal(err)
	}
	T := s.Total()
	var n2 float64
	for i := 0; i < s.N(); i++ {
		n2 += float64(s.Len(i)) * float64(s.Len(i))
	}
	dcu, err := ctx.Alloc(4 * len(s.Cu))
	if err != nil {
		b.Fatal(err)
	}
	defer dcu.Free()
	if err := ctx.CopyHtoD(dcu.Ptr, unsafe.Slice((*byte)(unsafe.Pointer(&s.Cu[0])), 4*len(s.Cu))); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, sh := range []struct {
		H, hd int
		dt    cudadrv.DataType
	}{{20, 16, cudadrv.F16}, {20, 24, cudadrv.F16}, {20, 32, cudadrv.F16}, {20, 64, cudadrv.F16}, {20, 64, cudadrv.BF16}, {8, 128, cudadrv.F16}} {
		D := sh.H * sh.hd
		x := make([]float32, T*3*D)
		for i := range x {
			x[i] = r.Float32()*2 - 1
		}
		hq := toHalf(x, sh.dt)
		dq, err := ctx.Alloc(2 * len(hq))
		if err != nil {
			b.Fatal(err)
		}
		do, err := ctx.Alloc(2 * T * D)
		if err != nil {
			b.Fatal(err)
		}
		if err := ctx.CopyHtoD(dq.Ptr, u16bytes(hq)); err != nil {
			b.Fatal(err)
		}
		flops := 4 * n2 * float64(sh.H*sh.hd)
		for _, v := range launchers(v) {
			name := fmt.Sprintf("T=%d/H=%d/HD=%d/%s", T, sh.H, sh.hd, v.kernel(sh.dt, sh.hd).name)
			for range 2 {
				run := func() {
					if err := v.forward(varlenArgs{Out: do.Ptr, LdOut: D, Q: dq.Ptr, K: dq.Ptr.Add(2 * D), V: dq.Ptr.Add(4 * D),
						Ld: 3 * D, CuSeqlens: dcu.Ptr, Seqlens: s, H: sh.H, HD: sh.hd, Scale: 0.125, DType: sh.dt}); err != nil {
						b.Fatal(err)
					}
				}
				run() // compile, raise the shared-memory limit
				if err := ctx.Synchronize(); err != nil {
					b.Fatal(err)
				}
				const reps = 50
				t0 := time.Now()
				for i := 0; i < reps; i++ {
					run()
				}
				if err := ctx.Synchronize(); err != nil {
					b.Fatal(err)
				}
				sec := time.Since(t0).Seconds() / reps
				b.Logf("%-48s %8.3f ms %7.1f TFLOP/s", name, sec*1e3, flops/sec/1e12)
			}
		}
		dq.Free()
		do.Free()
	}
}

// TestVarlenNonFinite: a non-finite input reaches every output it feeds and
// nothing else. The hard case is an Inf in k against queries whose matching
// element is negative: every such score is -Inf, which a softmax alone
// weighs 0 (the input would vanish). Sequence 1 of {5, 9, 70} gets it, in
// head 0; sequences 0 and 2, and head 1, must stay finite.
func TestVarlenNonFinite(t *testing.T) {
	ctx := gpuContext(t)
	v := newVarlen(ctx)
	lens := []int{5, 9, 70}
	s, err := attention.NewSeqlens(lens)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(8, 9))
	for _, v := range launchers(v) {
		for _, dt := range []cudadrv.DataType{cudadrv.F32, cudadrv.F16, cudadrv.BF16} {
			for _, hd := range varlenHeadDims {
				for _, bad := range []float32{float32(math.Inf(1)), float32(math.NaN())} {
					H := 2
					D := H * hd
					T := s.Total()
					qkv := make([]float32, T*3*D)
					for i := range qkv {
						qkv[i] = float32(r.NormFloat64()) * 0.5
					}
					for i := s.Start(1); i < s.Start(1)+lens[1]; i++ {
						qkv[i*3*D] = -1 - float32(r.Float64()) // q, head 0, dim 0: negative
					}
					qkv[(s.Start(1)+3)*3*D+D] = bad // k of token 3, head 0, dim 0
					esize := 4
					var up []byte
					if dt == cudadrv.F32 {
						up = f32bytes(qkv)
					} else {
						esize = 2
						up = u16bytes(toHalf(qkv, dt))
					}
					dq, _ := ctx.Alloc(len(up))
					do, _ := ctx.Alloc(esize * T * D)
					dcu, _ := ctx.Alloc(4 * len(s.Cu))
					if err := ctx.CopyHtoD(dq.Ptr, up); err != nil {
						t.Fatal(err)
					}
					if err := ctx.CopyHtoD(dcu.Ptr, unsafe.Slice((*byte)(unsafe.Pointer(&s.Cu[0])), 4*len(s.Cu))); err != nil {
						t.Fatal(err)
					}
					err = v.forward(varlenArgs{Out: do.Ptr, LdOut: D, Q: dq.Ptr, K: dq.Ptr.Add(esize * D), V: dq.Ptr.Add(2 * esize * D), Ld: 3 * D,
						CuSeqlens: dcu.Ptr, Seqlens: s, H: H, HD: hd, Scale: 0.7, DType: dt})
					if err != nil {
						t.Fatal(err)
					}
					got := make([]float32, T*D)
					if dt == cudadrv.F32 {
						err = ctx.CopyDtoH(f32bytes(got), do.Ptr)
					} else {
						h := make([]uint16, T*D)
						err = ctx.CopyDtoH(u16bytes(h), do.Ptr)
						for i, x := range h {
							if dt == cudadrv.F16 {
								got[i] = cudadrv.HalfToFloat32(x)
							} else {
								got[i] = cudadrv.BF16ToFloat32(x)
							}
						}
					}
					if err != nil {
						t.Fatal(err)
					}
					dq.Free()
					do.Free()
					dcu.Free()
					for tok := 0; tok < T; tok++ {
						inSeq1 := tok >= s.Start(1) && tok < s.Start(1)+lens[1]
						for h := 0; h < H; h++ {
							x := got[tok*D+h*hd]
							finite := !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0)
							if want := !(inSeq1 && h == 0); finite != want {
								t.Errorf("%s %v hd=%d %v in k: token %d head %d: %v (want finite: %v)", v.kernel(dt, hd).name, dt, hd, bad, tok, h, x, want)
							}
						}
					}
				}
			}
		}
	}
}

// launchers are the varlen launchers a test runs: v, and where v runs the
// varlen_wg kernels (an sm_90 device) a copy of it on varlen_fa2 alone, so
// both kernels are checked on a Hopper GPU.
func launchers(v *varlen) []*varlen {
	if !v.hopper {
		return []*varlen{v}
	}
	fa2 := newVarlen(v.ctx)
	fa2.hopper = false
	return []*varlen{v, fa2}
}

// TestVarlenWGCompiles: on an sm_90 device the varlen_wg module compiles
// (the launcher would otherwise fall back to varlen_fa2 silently) and runs
// a forward; elsewhere the launcher never asks for it.
func TestVarlenWGCompiles(t *testing.T) {
	ctx := gpuContext(t)
	v := newVarlen(ctx)
	if d := ctx.Device; !(d.Major == 9 && d.Minor == 0) {
		if v.hopper {
			t.Fatalf("%s: the launcher would run varlen_wg on a non-sm_90 device", d.Arch())
		}
		t.Skipf("varlen_wg runs on sm_90 devices only (this one is %s)", d.Arch())
	}
	if !v.hopper {
		t.Fatalf("sm_90 device with %d bytes of shared memory per block: varlen_wg not chosen", ctx.Device.SharedPerBlockOptin)
	}
	for _, dt := range []cudadrv.DataType{cudadrv.F16, cudadrv.BF16} {
		if _, err := v.module(dt, true); err != nil {
			t.Errorf("%v: %v", dt, err)
		}
	}
}
