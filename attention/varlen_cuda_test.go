package attention

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/esm2go/esm2go/internal/cuda"
)

func gpuContext(t testing.TB) *cuda.Context {
	t.Helper()
	lib, err := cuda.Load()
	if err != nil {
		t.Skipf("no CUDA device: %v", err)
	}
	if n, err := lib.DeviceCount(); err != nil || n == 0 {
		t.Skipf("no CUDA device: count %d, %v", n, err)
	}
	ctx, err := cuda.NewContext(0)
	if err != nil {
		t.Skipf("no CUDA device: %v", err)
	}
	t.Cleanup(func() { ctx.Close() })
	return ctx
}

func f32bytes(x []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x))
}

// The fp32 kernel must match the plain Go reference on the varlen shapes that
// catch real bugs, for every head dim. Both compute in fp32 and differ only
// in summation order (and the online softmax's rescaling), so 1e-5 of the
// largest output is ample (observed: a few 1e-7).
func TestVarlenCUDAMatchesReference(t *testing.T) {
	ctx := gpuContext(t)
	v := NewVarlen(ctx)
	r := rand.New(rand.NewPCG(5, 6))
	cases := map[string][]int{
		"one-token": {1}, "single": {37}, "not-tile": {1, 65, 3, 129, 31, 33},
		"many-short": {3, 1, 2, 5, 1, 4, 3, 2, 2, 1, 7, 3}, "longest": {1026, 5}, "long-4096": {4096},
	}
	for name, lens := range cases {
		for _, hd := range VarlenHeadDims {
			H := 3
			D := H * hd
			s, err := NewSeqlens(lens)
			if err != nil {
				t.Fatal(err)
			}
			T := s.Total()
			qkv := make([]float32, T*3*D)
			for i := range qkv {
				qkv[i] = float32(r.NormFloat64()) * 0.5
			}
			want := make([]float32, T*D)
			if err := Reference(Args{Out: want, LdOut: D, Q: qkv, K: qkv[D:], V: qkv[2*D:], Ld: 3 * D, Seqlens: s, H: H, HD: hd, Scale: 0.7}); err != nil {
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
			err = v.Forward(VarlenArgs{Out: do.Ptr, LdOut: D, Q: dq.Ptr, K: dq.Ptr.Add(4 * D), V: dq.Ptr.Add(8 * D), Ld: 3 * D,
				CuSeqlens: dcu.Ptr, Seqlens: s, H: H, HD: hd, Scale: 0.7, DType: cuda.F32})
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
