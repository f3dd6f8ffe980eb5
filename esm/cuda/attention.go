//go:build cgo

package cuda

import (
	_ "embed"
	"fmt"

	"github.com/esm2go/esm2go/attention"
	"github.com/esm2go/esm2go/internal/cudadrv"
)

// The launcher of attention.cu: the varlen (unpadded) attention kernels,
// checked against attention.Reference, their plain Go twin.

//go:embed attention.cu
var attentionSource string

// varlenHeadDims are the head dims the kernels are instantiated for.
var varlenHeadDims = []int{16, 24, 32, 64, 128}

// varlen launches the varlen attention kernels on one Context. It compiles
// a kernel module for an element type on first use (NVRTC, through the
// context's compile cache). Like the Context, it must be used from the
// goroutine that owns the context.
//
// The kernel follows from the element type and the head dim: fp32 runs the
// scalar fp32 kernel varlen_fwd_f32_* (the parity path); fp16 and bf16 run
// FlashAttention-2 on mma.sync/ldmatrix/cp.async (varlen_fa2_*, 64 queries
// per block), except at head dim 24, where the variant with two 16-row tiles
// per warp (varlen_fa2m2_*, 128 queries per block) is the faster one
// (esm/cuda/NOTES.md). On sm_90 devices every head dim runs the same
// algorithm on warpgroup MMA (varlen_wg_*, a module compiled for sm_90a);
// should that module not compile, the launcher keeps to varlen_fa2.
type varlen struct {
	ctx    *cudadrv.Context
	mods   map[varlenModKey]*cudadrv.Module
	shared map[*cudadrv.Function]bool // dynamic shared memory limit raised
	// hopper: use the varlen_wg kernels (sm_90 devices); cleared when their
	// module fails to compile, the error kept in wgErr.
	hopper bool
	wgErr  error
}

// varlenModKey names one compiled module: the element type, and whether it
// is the varlen_wg one.
type varlenModKey struct {
	dt cudadrv.DataType
	wg bool
}

// newVarlen returns a launcher bound to ctx.
func newVarlen(ctx *cudadrv.Context) *varlen {
	d := ctx.Device
	return &varlen{ctx: ctx, mods: map[varlenModKey]*cudadrv.Module{}, shared: map[*cudadrv.Function]bool{},
		hopper: d.Major == 9 && d.Minor == 0 && d.SharedPerBlockOptin >= varlenWGShared(128)}
}

// varlenArgs are the device operands of one call, with the shapes the
// launcher checks. Q, K and V point at column blocks of the packed qkv
// (T, Ld) (for ESM2: Q = qkv, K = qkv + D, V = qkv + 2D elements, Ld = 3D);
// Out is (T, LdOut). All of them hold DType elements.
type varlenArgs struct {
	Out     cudadrv.DevicePtr // (T, LdOut), written
	LdOut   int
	Q, K, V cudadrv.DevicePtr // (T, Ld) each, read
	Ld      int
	// CuSeqlens is the device copy of Seqlens.Cu: (nseq+1) int32.
	CuSeqlens cudadrv.DevicePtr
	// Seqlens is the host copy, for the grid (nseq, longest sequence) and
	// the checks; it must equal the device copy.
	Seqlens attention.Seqlens
	H, HD   int
	Scale   float32 // multiplies q·k (ESM2 pre-scales q and passes 1)
	DType   cudadrv.DataType
	Stream  *cudadrv.Stream // nil: the context's main stream
}

func (a *varlenArgs) check() error {
	T := a.Seqlens.Total()
	if err := a.Seqlens.Validate(T); err != nil {
		return err
	}
	ok := false
	for _, hd := range varlenHeadDims {
		ok = ok || hd == a.HD
	}
	if !ok {
		return fmt.Errorf("cuda: attention: CUDA kernel has no head dim %d (have %v)", a.HD, varlenHeadDims)
	}
	D := a.H * a.HD
	if a.H < 1 {
		return fmt.Errorf("cuda: attention: %d heads", a.H)
	}
	if a.Ld < D || a.LdOut < D {
		return fmt.Errorf("cuda: attention: row strides ld=%d ldo=%d smaller than D=%d", a.Ld, a.LdOut, D)
	}
	if a.Seqlens.N() > 65535 || a.H > 65535 {
		return fmt.Errorf("cuda: attention: %d sequences x %d heads exceed the grid's 65535 limit", a.Seqlens.N(), a.H)
	}
	if a.Out == 0 || a.Q == 0 || a.K == 0 || a.V == 0 || a.CuSeqlens == 0 {
		return fmt.Errorf("cuda: attention: nil device pointer")
	}
	if a.DType != cudadrv.F32 {
		// fa2: 16-byte cp.async of q/k/v rows, 4-byte stores of output pairs.
		if a.Ld%8 != 0 || a.LdOut%2 != 0 || (a.Q|a.K|a.V)%16 != 0 || a.Out%4 != 0 {
			return fmt.Errorf("cuda: attention: %v needs ld %% 8 == 0 (%d), even ldo (%d), 16-byte aligned q/k/v and 4-byte aligned out",
				a.DType, a.Ld, a.LdOut)
		}
	}
	return nil
}

func (v *varlen) module(dt cudadrv.DataType, wg bool) (*cudadrv.Module, error) {
	key := varlenModKey{dt, wg}
	if m := v.mods[key]; m != nil {
		return m, nil
	}
	var opts []string
	name := "varlen_f32.cu"
	switch dt {
	case cudadrv.F32:
	case cudadrv.F16, cudadrv.BF16:
		elem := map[cudadrv.DataType]string{cudadrv.F16: "__half", cudadrv.BF16: "__nv_bfloat16"}[dt]
		opts = []string{"-DVARLEN_FA2=1", "-DELEM=" + elem, "-DELEM_NAME=" + dt.String()}
		name = "varlen_fa2_" + dt.String() + ".cu"
		if wg {
			// wgmma is an sm_90a instruction.
			opts = append(opts, "--gpu-architecture=sm_90a", "-DVARLEN_WG=1")
			name = "varlen_wg_" + dt.String() + ".cu"
		}
	default:
		return nil, fmt.Errorf("cuda: attention: no CUDA kernel for element type %v", dt)
	}
	m, err := v.ctx.Compile(attentionSource, name, opts...)
	if err != nil {
		return nil, fmt.Errorf("cuda: attention: %w", err)
	}
	v.mods[key] = m
	return m, nil
}

// varlenLaunch is the kernel for an element type and head dim, with its
// shape: bq query rows per block (the grid's tile), threads per block and
// dynamic shared memory in bytes; wg for a varlen_wg kernel.
type varlenLaunch struct {
	name    string
	bq      int
	threads int
	shared  int
	wg      bool
}

// varlenKernel picks the kernel of attention.cu for dt and HD (see varlen);
// wg asks for the varlen_wg kernel (fp16 and bf16).
func varlenKernel(dt cudadrv.DataType, HD int, wg bool) varlenLaunch {
	if dt == cudadrv.F32 {
		// VARLEN_BQ queries per block; HD/32 threads per query from HD 64 on.
		threads := 64
		if HD >= 64 {
			threads = 64 * HD / 32
		}
		return varlenLaunch{name: fmt.Sprintf("varlen_fwd_f32_hd%d", HD), bq: 64, threads: threads}
	}
	if wg {
		wgs := varlenWGWarpgroups(HD)
		return varlenLaunch{name: fmt.Sprintf("varlen_wg_%s_hd%d", dt, HD), bq: 64 * wgs, threads: 128 * wgs,
			shared: varlenWGShared(HD), wg: true}
	}
	kernel, bq := "fa2", 64
	if HD == 24 {
		kernel, bq = "fa2m2", 128
	}
	return varlenLaunch{name: fmt.Sprintf("varlen_%s_%s_hd%d", kernel, dt, HD), bq: bq, threads: 128,
		shared: varlenFA2Shared(HD, bq, 64)}
}

// varlenWGWarpgroups is varlen_wg's warpgroups per block (64 queries each)
// at head dim HD, as attention.cu's VARLEN_WG_INST instantiates it: two at
// HD 24, where they were faster, one elsewhere (esm/cuda/NOTES.md).
func varlenWGWarpgroups(HD int) int {
	if HD == 24 {
		return 2
	}
	return 1
}

// kernel is the kernel forward launches for dt and HD.
func (v *varlen) kernel(dt cudadrv.DataType, HD int) varlenLaunch {
	return varlenKernel(dt, HD, v.hopper)
}

// moduleFor compiles (or finds) the module forward launches from for dt.
// Should the varlen_wg module not compile (an NVRTC without sm_90a), the
// launcher keeps to varlen_fa2 from then on and the error stays in wgErr.
// The backend calls it while the model loads (Backend.Prepare), so the
// compile overlaps reading the checkpoint and Name reports the kernel that
// runs.
func (v *varlen) moduleFor(dt cudadrv.DataType) (*cudadrv.Module, error) {
	wg := v.hopper && dt != cudadrv.F32 // as varlenKernel picks
	m, err := v.module(dt, wg)
	if err != nil && wg {
		v.hopper, v.wgErr = false, err
		m, err = v.module(dt, false)
	}
	return m, err
}

// family names the attention kernels forward runs for dt, for Backend.Name.
func (v *varlen) family(dt cudadrv.DataType) string {
	switch {
	case dt == cudadrv.F32:
		return "fp32"
	case v.hopper:
		return "wgmma"
	default:
		return "mma.sync"
	}
}

// forward queues out = softmax(scale·q·kᵀ)·v for every sequence and head.
// Grid: (ceil(maxLen/bq), nseq, H); blocks past their sequence's end exit.
func (v *varlen) forward(a varlenArgs) error {
	if err := a.check(); err != nil {
		return err
	}
	s := a.Stream
	if s == nil {
		s = v.ctx.Stream()
	}
	m, err := v.moduleFor(a.DType)
	if err != nil {
		return err
	}
	k := v.kernel(a.DType, a.HD)
	f, err := m.Function(k.name)
	if err != nil {
		return err
	}
	if k.shared > 0 && !v.shared[f] {
		if err := f.SetMaxDynamicSharedMemory(k.shared); err != nil {
			return fmt.Errorf("cuda: attention: %w", err)
		}
		v.shared[f] = true
	}
	tiles := (a.Seqlens.MaxLen() + k.bq - 1) / k.bq
	grid := [3]uint32{uint32(tiles), uint32(a.Seqlens.N()), uint32(a.H)}
	block := [3]uint32{uint32(k.threads), 1, 1}
	if err := v.ctx.Launch(f, grid, block, k.shared, s, a.Out, int32(a.LdOut), a.Q, a.K, a.V, int32(a.Ld),
		a.CuSeqlens, a.Scale); err != nil {
		return fmt.Errorf("cuda: attention: %s T=%d nseq=%d H=%d HD=%d: %w", k.name, a.Seqlens.Total(), a.Seqlens.N(), a.H, a.HD, err)
	}
	return nil
}

// varlenFA2Shared is the dynamic shared memory of a varlen_fa2 kernel for a
// head dim, bq query rows and bk keys per tile: the Q tile and two K and two
// V tiles in the element type, rows padded to HP+8 elements (HP = HD rounded
// up to 16), e.g. 85 KiB for HD 128 and 45 KiB for HD 64 (bq = bk = 64).
func varlenFA2Shared(HD, bq, bk int) int {
	hp := (HD + 15) / 16 * 16
	return (bq + 4*bk) * (hp + 8) * 2
}

// varlenWGShared is the dynamic shared memory of a varlen_wg kernel: 1 KiB
// to align the tiles to the swizzle's atoms, a 64-row Q tile per warpgroup
// and two K and two V tiles of 64 keys, rows of the head dim padded as
// attention.cu's WgGeo pads it (16, 32, 64, 128), e.g. 41 KiB at HD 64,
// 81 KiB at HD 128.
func varlenWGShared(HD int) int {
	hp := 16
	for hp < HD {
		hp *= 2
	}
	return 1024 + (64*varlenWGWarpgroups(HD)+4*64)*hp*2
}
