//go:build cgo

package cuda

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/esm2go/esm2go/weights"
)

// A GEMM weight converted on the host (weights.Convert, round to nearest
// even) and uploaded with UploadNarrow holds the same bits as the same
// float32 values uploaded with Upload and converted on the device, in every
// precision: so the staged load path changes no result. The values cover
// ordinary weights, float16 subnormals and values near float16's largest.
func TestUploadNarrowMatchesUpload(t *testing.T) {
	requireGPU(t)
	r := rand.New(rand.NewPCG(11, 12))
	vals := make([]float32, 1<<16+3)
	for i := range vals {
		switch i % 4 {
		case 0:
			vals[i] = float32(r.NormFloat64() * 0.05)
		case 1:
			vals[i] = float32(r.NormFloat64() * 3e-6) // float16 subnormals
		case 2:
			vals[i] = float32((r.Float64()*2 - 1) * 65519) // up to just below the rounding-to-infinity point
		default:
			vals[i] = math.Float32frombits(r.Uint32() & 0x3fffffff)
		}
	}
	src := unsafe.Slice((*byte)(unsafe.Pointer(&vals[0])), 4*len(vals))
	for _, prec := range []string{"fp16", "bf16", "fp32"} {
		t.Run(prec, func(t *testing.T) {
			b := newGPU(t, prec)
			defer b.Close()
			dt := b.NarrowDType()
			h, err := b.HostAlloc((len(vals)*dt.Size() + 3) / 4)
			if err != nil {
				t.Fatal(err)
			}
			stage := unsafe.Slice((*byte)(unsafe.Pointer(&h.Floats()[0])), len(vals)*dt.Size())
			if err := weights.Convert(stage, dt, src, weights.F32); err != nil {
				t.Fatal(err)
			}
			staged, err := b.UploadNarrow("w", h, len(vals))
			if err != nil {
				t.Fatal(err)
			}
			for i := range stage { // the stage may be reused at once
				stage[i] = 0xff
			}
			plain, err := b.Upload("w", vals, false)
			if err != nil {
				t.Fatal(err)
			}
			got, want := make([]float32, len(vals)), make([]float32, len(vals))
			if err := b.Read(got, staged); err != nil {
				t.Fatal(err)
			}
			if err := b.Read(want, plain); err != nil {
				t.Fatal(err)
			}
			diff := 0
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					if diff++; diff <= 5 {
						t.Errorf("element %d (%g): staged %g, device-converted %g", i, vals[i], got[i], want[i])
					}
				}
			}
			if diff > 0 {
				t.Errorf("%d of %d elements differ", diff, len(vals))
			}
			if _, err := b.UploadNarrow("w", h, len(h.Floats())*4/dt.Size()+1); err == nil {
				t.Errorf("UploadNarrow past the staging memory: no error")
			}
			if err := h.Free(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
