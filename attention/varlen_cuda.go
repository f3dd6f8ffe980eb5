package attention

import (
	_ "embed"
	"fmt"

	"github.com/esm2go/esm2go/internal/cudadrv"
)

//go:embed varlen.cu
var varlenSource string

// Tile sizes of varlen.cu (VARLEN_BQ, VARLEN_BK).
const (
	varlenBQ = 64
	varlenBK = 32
)

// VarlenHeadDims are the head dims the CUDA kernel is instantiated for.
var VarlenHeadDims = []int{16, 24, 32, 64, 128}

// Varlen launches the CUDA varlen attention kernel (varlen.cu) on one
// Context. It compiles the kernel for an element type on first use (NVRTC,
// through the context's compile cache). Like the Context, it must be used
// from the goroutine that owns the context.
//
// fp32 always runs the plain fp32 kernel varlen_fwd_* (the parity path).
// fp16 and bf16 run a tensor-core kernel, chosen by Kernel: "fa2"
// (FlashAttention-2 on mma.sync/ldmatrix/cp.async, compiled as a module of
// its own), "fa2m2" (the same with two 16-row tiles per warp, 128 queries
// per block; head dims up to 64), "tc2" (WMMA, S and O in registers), "tc"
// (WMMA, S and O in shared memory), or "scalar" (varlen_fwd_*, the
// documented fallback). "" picks DefaultVarlenKernel, or fa2m2 at head dim
// 24; attention/NOTES.md has the measurements.
type Varlen struct {
	Kernel string

	ctx    *cudadrv.Context
	mods   map[cudadrv.DataType]*cudadrv.Module
	fa2    map[cudadrv.DataType]*cudadrv.Module // -DVARLEN_FA2=1 modules
	shared map[*cudadrv.Function]bool           // dynamic shared memory limit raised
}

// NewVarlen returns a launcher bound to ctx.
func NewVarlen(ctx *cudadrv.Context) *Varlen {
	return &Varlen{ctx: ctx, mods: map[cudadrv.DataType]*cudadrv.Module{},
		fa2: map[cudadrv.DataType]*cudadrv.Module{}, shared: map[*cudadrv.Function]bool{}}
}

// VarlenArgs are the device operands of one call, with the shapes the
// launcher checks. Q, K and V point at column blocks of the packed qkv
// (T, Ld) (for ESM2: Q = qkv, K = qkv + D, V = qkv + 2D elements, Ld = 3D);
// Out is (T, LdOut). All of them hold DType elements.
type VarlenArgs struct {
	Out     cudadrv.DevicePtr // (T, LdOut), written
	LdOut   int
	Q, K, V cudadrv.DevicePtr // (T, Ld) each, read
	Ld      int
	// CuSeqlens is the device copy of Seqlens.Cu: (nseq+1) int32.
	CuSeqlens cudadrv.DevicePtr
	// Seqlens is the host copy, for the grid (nseq, longest sequence) and
	// the checks; it must equal the device copy.
	Seqlens Seqlens
	H, HD   int
	Scale   float32 // multiplies q·k (ESM2 pre-scales q and passes 1)
	DType   cudadrv.DataType
	Stream  *cudadrv.Stream // nil: the context's main stream
}

func (a *VarlenArgs) check() error {
	T := a.Seqlens.Total()
	if err := a.Seqlens.Validate(T); err != nil {
		return err
	}
	ok := false
	for _, hd := range VarlenHeadDims {
		ok = ok || hd == a.HD
	}
	if !ok {
		return fmt.Errorf("attention: CUDA kernel has no head dim %d (have %v)", a.HD, VarlenHeadDims)
	}
	D := a.H * a.HD
	if a.H < 1 {
		return fmt.Errorf("attention: %d heads", a.H)
	}
	if a.Ld < D || a.LdOut < D {
		return fmt.Errorf("attention: row strides ld=%d ldo=%d smaller than D=%d", a.Ld, a.LdOut, D)
	}
	if a.Seqlens.N() > 65535 || a.H > 65535 {
		return fmt.Errorf("attention: %d sequences x %d heads exceed the grid's 65535 limit", a.Seqlens.N(), a.H)
	}
	if a.Out == 0 || a.Q == 0 || a.K == 0 || a.V == 0 || a.CuSeqlens == 0 {
		return fmt.Errorf("attention: nil device pointer")
	}
	return nil
}

func (v *Varlen) module(dt cudadrv.DataType, fa2 bool) (*cudadrv.Module, error) {
	mods := v.mods
	if fa2 {
		mods = v.fa2
	}
	if m := mods[dt]; m != nil {
		return m, nil
	}
	elem := map[cudadrv.DataType]string{cudadrv.F32: "float", cudadrv.F16: "__half", cudadrv.BF16: "__nv_bfloat16"}[dt]
	opts := []string{"-DELEM=" + elem, "-DELEM_NAME=" + dt.String()}
	name := "varlen_" + dt.String() + ".cu"
	switch {
	case fa2:
		opts = append(opts, "-DVARLEN_FA2=1")
		name = "varlen_fa2_" + dt.String() + ".cu"
	case dt != cudadrv.F32:
		opts = append(opts, "-DVARLEN_TC=1")
	}
	m, err := v.ctx.Compile(varlenSource, name, opts...)
	if err != nil {
		return nil, fmt.Errorf("attention: %w", err)
	}
	mods[dt] = m
	return m, nil
}

// Forward queues out = softmax(scale·q·kᵀ)·v for every sequence and head.
// Grid: (ceil(maxLen/64), nseq, H); blocks past their sequence's end exit.
func (v *Varlen) Forward(a VarlenArgs) error {
	if err := a.check(); err != nil {
		return err
	}
	s := a.Stream
	if s == nil {
		s = v.ctx.Stream()
	}
	kernel := v.Kernel
	if kernel == "" {
		kernel = DefaultVarlenKernel
		if a.HD == 24 {
			kernel = "fa2m2" // attention/NOTES.md: 7% faster at HD 24 only
		}
	}
	if a.DType == cudadrv.F32 {
		kernel = "scalar"
	}
	tc := kernel != "scalar"
	name := fmt.Sprintf("varlen_fwd_%s_hd%d", a.DType, a.HD)
	fa2 := kernel == "fa2" || kernel == "fa2m2"
	switch {
	case kernel == "tc" || kernel == "tc2" || fa2:
		name = fmt.Sprintf("varlen_%s_%s_hd%d", kernel, a.DType, a.HD)
	case kernel == "scalar":
	default:
		return fmt.Errorf("attention: unknown kernel %q (want fa2, fa2m2, tc2, tc or scalar)", kernel)
	}
	if !varlenKernelHas(kernel, a.HD) {
		return fmt.Errorf("attention: kernel %s has no head dim %d", kernel, a.HD)
	}
	bq, bk := varlenBQ, 64 // query rows per block, keys per shared tile
	if kernel == "fa2m2" {
		bq = 128
		if a.HD >= 64 { // VARLEN_FA2M2_INST in varlen.cu
			bk = 32
		}
	}
	if fa2 {
		// 16-byte cp.async of q/k/v rows, 4-byte stores of output pairs.
		if a.Ld%8 != 0 || a.LdOut%2 != 0 || (a.Q|a.K|a.V)%16 != 0 || a.Out%4 != 0 {
			return fmt.Errorf("attention: fa2 needs ld %% 8 == 0 (%d), even ldo (%d), 16-byte aligned q/k/v and 4-byte aligned out",
				a.Ld, a.LdOut)
		}
	}
	m, err := v.module(a.DType, fa2)
	if err != nil {
		return err
	}
	f, err := m.Function(name)
	if err != nil {
		return err
	}
	shared := 0
	block := [3]uint32{varlenBQ, 1, 1}
	if tc {
		shared = varlenTCShared(a.HD, kernel == "tc2")
		if fa2 {
			shared = varlenFA2Shared(a.HD, bq, bk)
		}
		if !v.shared[f] {
			if err := f.SetMaxDynamicSharedMemory(shared); err != nil {
				return fmt.Errorf("attention: %w", err)
			}
			v.shared[f] = true
		}
		block[0] = 128
	} else if a.HD >= 64 {
		block[0] = uint32(varlenBQ * a.HD / 32)
	}
	tiles := (a.Seqlens.MaxLen() + bq - 1) / bq
	grid := [3]uint32{uint32(tiles), uint32(a.Seqlens.N()), uint32(a.H)}
	if err := v.ctx.Launch(f, grid, block, shared, s, a.Out, int32(a.LdOut), a.Q, a.K, a.V, int32(a.Ld),
		a.CuSeqlens, a.Scale); err != nil {
		return fmt.Errorf("attention: T=%d nseq=%d H=%d HD=%d %v: %w", a.Seqlens.Total(), a.Seqlens.N(), a.H, a.HD, a.DType, err)
	}
	return nil
}

// varlenKernelHas reports whether a kernel is instantiated for a head dim
// (every kernel has VarlenHeadDims except the two-row-tile fa2 variants).
func varlenKernelHas(kernel string, HD int) bool {
	switch kernel {
	case "fa2m2":
		return HD <= 64
	}
	return true
}

// DefaultVarlenKernel is the fp16/bf16 kernel used when Varlen.Kernel is "":
// fa2, 1.7-2.3x faster than tc2 on an H100, except at head dim 24 (35M),
// where fa2m2 (two row tiles per warp) is 7% faster than fa2 and is used
// instead (attention/NOTES.md).
const DefaultVarlenKernel = "fa2"

// varlenTCShared is the dynamic shared memory of varlen_tc (tc2 = false) or
// varlen_tc2 for a head dim (the layouts in varlen.cu: Q, K, V tiles and P
// in the element type with padded rows; S (tc only) and O in fp32), e.g.
// 110 KiB (tc) and 93 KiB (tc2) for HD 128.
func varlenTCShared(HD int, tc2 bool) int {
	hp := (HD + 15) / 16 * 16
	const bq, bk = 64, 64
	if tc2 {
		return (3*bq*(hp+8)+bq*(bk+8))*2 + bq*(hp+4)*4
	}
	return (3*bq*(hp+8)+bq*(bk+8))*2 + (bq*(bk+4)+bq*(hp+4))*4
}

// varlenFA2Shared is the dynamic shared memory of a varlen_fa2 kernel for a
// head dim, bq query rows and bk keys per tile: the Q tile and two K and two
// V tiles in the element type, rows padded to HP+8 elements (HP = HD rounded
// up to 16), e.g. 85 KiB for HD 128 and 45 KiB for HD 64 (bq = bk = 64).
func varlenFA2Shared(HD, bq, bk int) int {
	hp := (HD + 15) / 16 * 16
	return (bq + 4*bk) * (hp + 8) * 2
}
