//go:build cgo

package cuda

import (
	_ "embed"
	"fmt"

	"github.com/esm2go/esm2go/internal/cudadrv"
)

//go:embed gemm.cu
var gemmSource string

// The wgmma GEMM's configuration (gemm.cu's macros, passed with -D so the
// launcher and the kernel agree): 128×256 tiles, BK 64, the ring's depth,
// CTA pairs sharing B by multicast, seven epilogue warps, registers moved
// to the consumers (setmaxnreg), one wgmma group kept in flight.
const (
	gemmBM, gemmBN, gemmBK = 128, 256, 64
	gemmStages             = 3
	gemmCluster            = 1
	gemmEpiWG              = 0
	gemmThreads            = 384 + 128*gemmEpiWG
	gemmSrow               = gemmBN + 8
	// 1 KiB for aligning the rings to the 128-byte swizzle's 1,024-byte atoms.
	gemmShared = 1024 + gemmStages*(gemmBM+gemmBN)*gemmBK*2 + gemmBM*gemmSrow*2 + (2*gemmStages+2)*8
)

// hopperGemm runs gemm.cu's kernels on an sm_90 device: Linear's fp16
// products with the bias, and FC1's with bias and GELU in one pass (no
// separate GELU pass over the activations). Compiled on first use.
type hopperGemm struct {
	ctx  *cudadrv.Context
	mod  *cudadrv.Module
	fns  map[string]*cudadrv.Function
	err  error // the compile's error, kept: no retry on every layer
	done bool
}

func newHopperGemm(ctx *cudadrv.Context) *hopperGemm {
	return &hopperGemm{ctx: ctx, fns: map[string]*cudadrv.Function{}}
}

// usable says whether the kernels can run this product: an sm_90 device
// (wgmma and setmaxnreg are sm_90a instructions), fp16, and rows of K and N
// elements that keep every row 16-byte aligned (TMA, 16-byte stores).
func (g *hopperGemm) usable(dt cudadrv.DataType, K, N int) bool {
	d := g.ctx.Device
	return d.Major == 9 && d.Minor == 0 && d.SharedPerBlockOptin >= gemmShared &&
		dt == cudadrv.F16 && K%8 == 0 && N%8 == 0 && K > 0 && N > 0
}

// ready compiles the kernels on first use and says whether they compiled.
func (g *hopperGemm) ready() bool {
	_, err := g.fn("gemm_bias_gelu_f16")
	return err == nil
}

func (g *hopperGemm) fn(name string) (*cudadrv.Function, error) {
	if !g.done {
		g.done = true
		g.mod, g.err = g.ctx.Compile(gemmSource, "gemm_sm90a.cu", "--gpu-architecture=sm_90a",
			fmt.Sprintf("-DSTAGES=%d", gemmStages), fmt.Sprintf("-DCLUSTER=%d", gemmCluster),
			fmt.Sprintf("-DEPIWG=%d", gemmEpiWG), "-DREGS=1", "-DWAIT1=1")
		if g.err != nil {
			g.err = fmt.Errorf("cuda: wgmma gemm: %w", g.err)
		}
	}
	if g.err != nil {
		return nil, g.err
	}
	if f := g.fns[name]; f != nil {
		return f, nil
	}
	f, err := g.mod.Function(name)
	if err != nil {
		return nil, err
	}
	if err := f.SetMaxDynamicSharedMemory(gemmShared); err != nil {
		return nil, err
	}
	g.fns[name] = f
	return f, nil
}

// linear queues y(M,N) = x(M,K)·w(N,K)ᵀ + bias(N), or with gelu its exact
// erf GELU (of the fp16-rounded sum, as Linear then GELU), all fp16. The
// caller checks usable first.
func (g *hopperGemm) linear(y, x, w, bias cudadrv.DevicePtr, M, N, K int, gelu bool) error {
	if M <= 0 {
		return fmt.Errorf("cuda: wgmma gemm: %d rows", M)
	}
	if M >= 1<<31/gemmBM || N >= 1<<31/gemmBN || int64(M)*int64(N) >= 1<<40 {
		return fmt.Errorf("cuda: wgmma gemm: %d×%d output is too large", M, N)
	}
	for _, p := range []cudadrv.DevicePtr{y, x, w} {
		if p%16 != 0 {
			return fmt.Errorf("cuda: wgmma gemm: operand at %#x is not 16-byte aligned", uint64(p))
		}
	}
	name := "gemm_bias_f16"
	if gelu {
		name = "gemm_bias_gelu_f16"
	}
	f, err := g.fn(name)
	if err != nil {
		return err
	}
	mx, err := g.ctx.TensorMap2D(x, cudadrv.F16, M, K, K*2, gemmBM, gemmBK, cudadrv.Swizzle128B)
	if err != nil {
		return fmt.Errorf("cuda: wgmma gemm: x: %w", err)
	}
	mw, err := g.ctx.TensorMap2D(w, cudadrv.F16, N, K, K*2, gemmBN/gemmCluster, gemmBK, cudadrv.Swizzle128B)
	if err != nil {
		return fmt.Errorf("cuda: wgmma gemm: w: %w", err)
	}
	// Persistent: one CTA per multiprocessor at most (the kernel takes
	// ~211 KiB of shared memory), a whole number of clusters.
	mt, nt := (M+gemmBM-1)/gemmBM, (N+gemmBN-1)/gemmBN
	work := (mt + gemmCluster - 1) / gemmCluster * nt * gemmCluster
	grid := min(work, g.ctx.Device.SMs/gemmCluster*gemmCluster)
	if grid < gemmCluster {
		return fmt.Errorf("cuda: wgmma gemm: %d multiprocessors", g.ctx.Device.SMs)
	}
	return g.ctx.Launch(f, [3]uint32{uint32(grid), 1, 1}, [3]uint32{gemmThreads, 1, 1}, gemmShared, g.ctx.Stream(),
		mx, mw, bias, y, int32(M), int32(N), int32(K))
}
