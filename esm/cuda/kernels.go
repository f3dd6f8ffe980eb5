//go:build cgo

package cuda

import (
	_ "embed"
	"fmt"

	"github.com/esm2go/esm2go/internal/cudadrv"
)

// Launchers of kernels.cu: same names and argument order as the kernels,
// sizes checked here, errors returned. The element type of each operand is
// part of the kernel's name (e.g. layernorm_f32_f16); DevicePtr arguments
// hold elements of the type named in the comment.

//go:embed kernels.cu
var kernelSource string

// kernels is the compiled kernels.cu of one context.
type kernels struct {
	ctx       *cudadrv.Context
	mod       *cudadrv.Module
	fns       map[string]*cudadrv.Function
	sms       int
	lutShared bool // gelu_lut's shared-memory limit raised
}

func newKernels(ctx *cudadrv.Context) (*kernels, error) {
	mod, err := ctx.Compile(kernelSource, "esm_kernels.cu")
	if err != nil {
		return nil, err
	}
	return &kernels{ctx: ctx, mod: mod, fns: map[string]*cudadrv.Function{}, sms: max(ctx.Device.SMs, 1)}, nil
}

func (k *kernels) fn(name string) (*cudadrv.Function, error) {
	if f := k.fns[name]; f != nil {
		return f, nil
	}
	f, err := k.mod.Function(name)
	if err != nil {
		return nil, err
	}
	k.fns[name] = f
	return f, nil
}

func (k *kernels) launch(name string, grid, block [3]uint32, args ...any) error {
	f, err := k.fn(name)
	if err != nil {
		return err
	}
	return k.ctx.Launch(f, grid, block, 0, k.ctx.Stream(), args...)
}

// gridFor sizes a grid-stride launch of n elements with 256 threads per block.
func (k *kernels) gridFor(n int) [3]uint32 {
	return [3]uint32{uint32(max(1, min((n+255)/256, 32*k.sms))), 1, 1}
}

var block256 = [3]uint32{256, 1, 1}

func positive(op string, sizes ...int) error {
	for _, s := range sizes {
		if s <= 0 {
			return fmt.Errorf("%s: sizes %v must be positive", op, sizes)
		}
	}
	return nil
}

// embed: x(T,D) xt = table(V,D) f32 [tokens(T) int32] * scales(nseq) f32
// [seqid(T) int32]; rows of token mask zeroed (mask < 0: no mask, no scale).
func (k *kernels) embed(x cudadrv.DevicePtr, xt cudadrv.DataType, table, tokens, seqid, scales cudadrv.DevicePtr, T, D int, mask int32) error {
	if err := positive("embed", T, D); err != nil {
		return err
	}
	return k.launch("embed_"+xt.String(), [3]uint32{uint32(T), 1, 1}, [3]uint32{128, 1, 1},
		x, table, tokens, seqid, scales, int32(T), int32(D), mask)
}

// layernorm: out(T,D) ot = LN(in(T,D) it) with w(D), b(D) f32.
func (k *kernels) layernorm(out cudadrv.DevicePtr, ot cudadrv.DataType, in cudadrv.DevicePtr, it cudadrv.DataType, w, b cudadrv.DevicePtr, T, D int, eps float32) error {
	if err := positive("layernorm", T, D); err != nil {
		return err
	}
	return k.launch(fmt.Sprintf("layernorm_%s_%s", it, ot), [3]uint32{uint32((T + 3) / 4), 1, 1}, [3]uint32{128, 1, 1},
		out, in, w, b, int32(T), int32(D), eps)
}

// lnVecs are the float4-per-lane instantiations of layernorm_vec (kernels.cu);
// lnVecMaxD is the largest D they hold in registers (a warp's 32 lanes).
var lnVecs = []int{4, 8, 12, 16, 24}

const lnVecMaxD = 24 * 4 * 32

// layernormVec: out(T,D) ot = LN(in(T,D) f32), D % 4 == 0, D <= lnVecMaxD,
// with the smallest instantiation whose registers hold a row.
func (k *kernels) layernormVec(out cudadrv.DevicePtr, ot cudadrv.DataType, in, w, b cudadrv.DevicePtr, T, D int, eps float32) error {
	if err := positive("layernorm", T, D); err != nil {
		return err
	}
	if D%4 != 0 || D > lnVecMaxD {
		return fmt.Errorf("layernorm_vec: D=%d not a multiple of 4 up to %d", D, lnVecMaxD)
	}
	v := lnVecs[len(lnVecs)-1]
	for _, c := range lnVecs {
		if 128*c >= D {
			v = c
			break
		}
	}
	return k.launch(fmt.Sprintf("layernorm_vec%d_f32_%s", v, ot), [3]uint32{uint32((T + 3) / 4), 1, 1}, [3]uint32{128, 1, 1},
		out, in, w, b, int32(T), int32(D), eps)
}

// ropeTable: cs(P, half) float2 = (cos, sin)(p * invFreq(half) f32).
func (k *kernels) ropeTable(cs, invFreq cudadrv.DevicePtr, P, half int) error {
	if err := positive("rope_table", P, half); err != nil {
		return err
	}
	return k.launch("rope_table", k.gridFor(P*half), block256, cs, invFreq, int32(P), int32(half))
}

// rotaryTab: rotary with cs from ropeTable (covering every pos); HD/2 % 4 == 0.
// rotary_wide where it is the faster kernel and the pointers allow it, else
// rotary_tab.
func (k *kernels) rotaryTab(qkv cudadrv.DevicePtr, et cudadrv.DataType, pos, cs cudadrv.DevicePtr, T, H, HD int, qScale float32) error {
	if err := positive("rotary", T, H, HD); err != nil {
		return err
	}
	if HD%8 != 0 {
		return fmt.Errorf("rotary_tab: head dim %d not a multiple of 8", HD)
	}
	if int64(T)*int64(H)*int64(HD)/4 >= 1<<31 {
		return fmt.Errorf("rotary_tab: %d tokens × %d heads × %d dims exceed its 32-bit indexing", T, H, HD)
	}
	// rotary_wide's 16-byte accesses need qkv and cs 16-byte aligned (every
	// buffer of the backend's allocator is; rotary_tab needs 8 bytes).
	if per, ok := rotaryWideThreads(et, HD); ok && qkv%16 == 0 && cs%16 == 0 {
		return k.launch(fmt.Sprintf("rotary_wide_%s_hd%d", et, HD), k.gridFor(T*2*H*per), block256, qkv, pos, cs, int32(T), int32(H), qScale)
	}
	return k.launch("rotary_tab_"+et.String(), k.gridFor(T*H*HD/4), block256, qkv, pos, cs, int32(T), int32(H), int32(HD), qScale)
}

// rotaryWideThreads says whether kernels.cu has a rotary_wide kernel for
// et and HD (16-bit elements at the head dims where it is the faster one:
// 35M's 24, 650M's and 3B's 64), and how many threads it gives each head:
// one per 8 pairs, one per head at HD 24.
func rotaryWideThreads(et cudadrv.DataType, HD int) (int, bool) {
	if et != cudadrv.F16 && et != cudadrv.BF16 {
		return 0, false
	}
	switch HD {
	case 64:
		return HD / 16, true
	case 24:
		return 1, true
	}
	return 0, false
}

// rotary: qkv(T,3D) et in place; pos(T) int32, invFreq(HD/2) f32.
func (k *kernels) rotary(qkv cudadrv.DevicePtr, et cudadrv.DataType, pos, invFreq cudadrv.DevicePtr, T, H, HD int, qScale float32) error {
	if err := positive("rotary", T, H, HD); err != nil {
		return err
	}
	if HD%2 != 0 {
		return fmt.Errorf("rotary: odd head dim %d", HD)
	}
	return k.launch("rotary_"+et.String(), k.gridFor(T*H*HD), block256, qkv, pos, invFreq, int32(T), int32(H), int32(HD), qScale)
}

// gelu: x(n) et in place.
func (k *kernels) gelu(x cudadrv.DevicePtr, et cudadrv.DataType, n int) error {
	if err := positive("gelu", n); err != nil {
		return err
	}
	return k.launch("gelu_"+et.String(), k.gridFor(n), block256, x, int64(n))
}

// geluLUTShared is gelu_lut's dynamic shared memory: the whole table of
// 65,536 16-bit outputs.
const geluLUTShared = 65536 * 2

// geluLUTOK says whether the device gives a block the table's shared memory
// (sm_90: 227 KiB; some smaller cards: 99 KiB, where gelu is used).
func (k *kernels) geluLUTOK() bool { return k.ctx.Device.SharedPerBlockOptin >= geluLUTShared }

// geluTable: tab(65536) u16 = the bits of gelu(h) for every bit pattern h
// of et (f16 or bf16).
func (k *kernels) geluTable(tab cudadrv.DevicePtr, et cudadrv.DataType) error {
	if et != cudadrv.F16 && et != cudadrv.BF16 {
		return fmt.Errorf("gelu_table: %v has no 16-bit table", et)
	}
	return k.launch("gelu_table_"+et.String(), [3]uint32{256, 1, 1}, block256, tab)
}

// geluLUT: x(n) (16-bit elements) = tab[x] in place, tab from geluTable: gelu
// with the same bits. One 1,024-thread block per SM at most (each holds
// the table in shared memory).
func (k *kernels) geluLUT(x cudadrv.DevicePtr, n int, tab cudadrv.DevicePtr) error {
	if err := positive("gelu_lut", n); err != nil {
		return err
	}
	f, err := k.fn("gelu_lut")
	if err != nil {
		return err
	}
	if !k.lutShared {
		if err := f.SetMaxDynamicSharedMemory(geluLUTShared); err != nil {
			return err
		}
		k.lutShared = true
	}
	grid := [3]uint32{uint32(max(1, min(k.sms, (n+8*1024-1)/(8*1024)))), 1, 1}
	return k.ctx.Launch(f, grid, [3]uint32{1024, 1, 1}, geluLUTShared, k.ctx.Stream(), x, int64(n), tab)
}

// biasAdd: out(T,N) ot += b(N) f32.
func (k *kernels) biasAdd(out cudadrv.DevicePtr, ot cudadrv.DataType, b cudadrv.DevicePtr, T, N int) error {
	if err := positive("bias_add", T, N); err != nil {
		return err
	}
	return k.launch("bias_add_"+ot.String(), k.gridFor(T*N), block256, out, b, int64(T*N), int32(N))
}

// poolRows is pool_mean's POOL_ROWS (kernels.cu): threads per column.
const poolRows = 8

// poolMean: dst(nseq,D) f32 = residue mean of x(T,D) xt; cu(nseq+1) int32.
func (k *kernels) poolMean(dst, x cudadrv.DevicePtr, xt cudadrv.DataType, cu cudadrv.DevicePtr, nseq, D int) error {
	if err := positive("pool_mean", nseq, D); err != nil {
		return err
	}
	return k.launch("pool_mean_"+xt.String(), [3]uint32{uint32(nseq), uint32((D + 127) / 128), 1}, [3]uint32{128, poolRows, 1},
		dst, x, cu, int32(D))
}

// poolBOS: dst(nseq,D) f32 = BOS rows of x(T,D) xt; cu(nseq+1) int32.
func (k *kernels) poolBOS(dst, x cudadrv.DevicePtr, xt cudadrv.DataType, cu cudadrv.DevicePtr, nseq, D int) error {
	if err := positive("pool_bos", nseq, D); err != nil {
		return err
	}
	return k.launch("pool_bos_"+xt.String(), [3]uint32{uint32(nseq), uint32((D + 127) / 128), 1}, [3]uint32{128, 1, 1},
		dst, x, cu, int32(D))
}

// convert: dst(n) dt = src(n) st.
func (k *kernels) convert(dst cudadrv.DevicePtr, dt cudadrv.DataType, src cudadrv.DevicePtr, st cudadrv.DataType, n int) error {
	if err := positive("convert", n); err != nil {
		return err
	}
	return k.launch(fmt.Sprintf("convert_%s_%s", st, dt), k.gridFor(n), block256, dst, src, int64(n))
}
