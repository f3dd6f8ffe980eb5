//go:build cgo

package cuda

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/esm2go/esm2go/esm"
)

// batchOf is a batch of exactly T tokens (sequences of up to 1,000).
func batchOf(T int) *esm.Batch {
	var b esm.Batch
	for T > 0 {
		n := min(T, 1000)
		if T-n == 1 { // no 1-token remainder: split the last two sequences evenly
			n--
		}
		toks := make([]int32, n)
		for i := range toks {
			toks[i] = int32(4 + i%20)
		}
		toks[0], toks[n-1] = esm.TokCLS, esm.TokEOS
		b.Append(toks, 0)
		T -= n
	}
	return &b
}

// TestLinearGELUMatchesUnfused: gemm.cu's fused FC1 (wgmma, bias and GELU in
// the epilogue) against Linear (cuBLASLt) then GELU on the same device and
// inputs, at shapes with partial tiles in every dimension (T not a multiple
// of 128, N of 256, K of 64; K below one k-tile) and the models' own. The
// output is poisoned with NaN first, so an element left unwritten fails.
// Tolerance: the two sum the same fp32 products, possibly in another order,
// so the fp16-rounded pre-activation may differ by one fp16 ulp (2^-11 of
// it) and GELU's slope is at most 1.13: 2e-3 of the largest output covers
// that with room, while a wrong tile, bias or GELU is off by far more.
func TestLinearGELUMatchesUnfused(t *testing.T) {
	g := newGPU(t, "fp16")
	defer g.Close()
	if d := g.ctx.Device; d.Major != 9 || d.Minor != 0 {
		t.Skipf("gemm.cu's wgmma kernels need an sm_90 device; this is %s (%s)", d.Name, d.Arch())
	}
	r := rand.New(rand.NewPCG(21, 22))
	first := true
	for _, sh := range []struct{ T, K, N int }{
		{7, 64, 256}, {129, 40, 264}, {1000, 480, 1920}, {300, 1280, 5120}, {4099, 320, 1280}, {2053, 2560, 10240},
	} {
		if err := g.SetBatch(batchOf(sh.T)); err != nil {
			t.Fatal(err)
		}
		T, K, N := sh.T, sh.K, sh.N
		x, err := g.Alloc(T*K, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.write(x, randn(r, T*K, 1)); err != nil {
			t.Fatal(err)
		}
		w, err := g.Upload("w", randn(r, N*K, 1/math.Sqrt(float64(K))), false)
		if err != nil {
			t.Fatal(err)
		}
		bias, err := g.Upload("b", randn(r, N, 0.5), true)
		if err != nil {
			t.Fatal(err)
		}
		fused, err := g.Alloc(T*N, false)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := g.Alloc(T*N, false)
		if err != nil {
			t.Fatal(err)
		}
		nan := make([]float32, T*N)
		for i := range nan {
			nan[i] = float32(math.NaN())
		}
		if err := g.write(fused, nan); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		ok, err := g.LinearGELU(fused, x, w, bias, K, N)
		if first {
			// The first call compiles gemm.cu (NVRTC) unless the kernel cache has it.
			t.Logf("first LinearGELU (compile or cache load included): %v", time.Since(t0))
			first = false
		}
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatalf("T=%d K=%d N=%d: LinearGELU did not run (wgmma gemm error: %v)", T, K, N, g.GemmError())
		}
		if err := g.Linear(ref, x, w, bias, K, N, false); err != nil {
			t.Fatal(err)
		}
		if err := g.GELU(ref, T*N); err != nil {
			t.Fatal(err)
		}
		got, want := make([]float32, T*N), make([]float32, T*N)
		if err := g.Read(got, fused); err != nil {
			t.Fatal(err)
		}
		if err := g.Read(want, ref); err != nil {
			t.Fatal(err)
		}
		differ := 0
		for i := range got {
			if got[i] != want[i] {
				differ++
			}
		}
		e := maxRel(got, want)
		if e > 2e-3 {
			t.Errorf("T=%d K=%d N=%d: max rel err %.3g > 2e-3 (%d of %d elements differ)", T, K, N, e, differ, len(got))
		} else {
			t.Logf("T=%d K=%d N=%d: max rel err %.3g, %d of %d elements differ", T, K, N, e, differ, len(got))
		}
		for _, tt := range []esm.Tensor{x, w, bias, fused, ref} {
			g.Free(tt)
		}
	}
}
