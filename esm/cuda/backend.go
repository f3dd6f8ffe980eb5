//go:build cgo

// Package cuda is esm2go's CUDA backend: esm.Backend on one NVIDIA GPU, with
// GEMMs through cuBLAS, the varlen attention kernels in attention.cu and the
// other ops in kernels.cu (compiled by NVRTC at first use). It links no
// CUDA library at build time (see internal/cudadrv).
//
// Precision. Options.Precision picks the compute type: esm.FP16 (default),
// esm.BF16 or esm.FP32. Tensors carry their own element type:
//   - Alloc(n, wide=true) is fp32 (the residual stream, pooled outputs,
//     logits); Alloc(n, wide=false) is the compute type (GEMM inputs and
//     outputs, qkv, attention output, FFN activations).
//   - Upload stores the compute type (GEMM weights) and, when the model asks
//     for it (wide: LayerNorm weights, every bias and the embedding table,
//     which the kernels read in fp32; esm/params.go decides), also an fp32
//     copy. In fp32 mode the two are one buffer. UploadNarrow takes a GEMM
//     weight already in the compute type from pinned memory (esm.LoadParams
//     converts checkpoints on the host that way: half the bytes of fp32 over
//     PCIe, no float32 copy on the host).
//   - Every kernel computes in fp32 (LayerNorm statistics, rotary cos/sin,
//     softmax, GELU); GEMMs accumulate in fp32 (CUBLAS_COMPUTE_32F). In fp32
//     mode the cuBLAS handle runs CUBLAS_DEFAULT_MATH, so no TF32.
//   - Linear with an fp32 output (the residual add, accumulate=true, or the
//     logits) runs cublasGemmEx with fp16/bf16 A and B and an fp32 C (beta=1
//     for the residual): a combination cuBLAS supports for COMPUTE_32F.
//     A wide (fp32) input to a narrow GEMM is converted first (the LM head's
//     dense layer reads the fp32 final representation).
//
// Threads. New creates the context on the calling goroutine and locks it to
// its OS thread; every method must be called from that goroutine (others get
// internal/cudadrv's ErrWrongGoroutine), and so must the Wait of a Fence and the
// Free of HostMemory that the backend hands out. Kernels,
// GEMMs and the copies of results (Read, ReadAsync) run in order on one
// compute stream; SetBatch copies the batch on a second stream and makes the
// compute stream wait for that copy, so the next batch's copy overlaps the
// current batch's kernels (batch.go). The host waits only in Read, a Fence's
// Wait and HostMemory.Free (and when SetBatch reuses a pinned staging buffer
// whose previous copy has not run yet).
package cuda

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/esm2go/esm2go/attention"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/internal/cudadrv"
	"github.com/esm2go/esm2go/weights"
)

// Options configure the CUDA backend.
type Options struct {
	Device    int           // device ordinal
	Precision esm.Precision // esm.FP16 (the default, also for ""), esm.BF16 or esm.FP32
}

// Backend implements esm.Backend on one GPU.
type Backend struct {
	ctx  *cudadrv.Context
	dt   cudadrv.DataType // compute precision of narrow tensors and GEMM weights
	fuse bool             // bias in the cuBLASLt epilogue (see Linear)
	k    *kernels
	attn *varlen

	// the current batch, on the host (for grids and checks) and the device
	seqlens                        attention.Seqlens
	T, nseq                        int
	topToken                       int32                  // the batch's highest token id (Embed's table check)
	tokens, seqid, pos, cu, scales cudadrv.DevicePtr      // into dp.dev[slot] (batch.go)
	stage                          [2]*cudadrv.HostBuffer // pinned staging of the batch, alternating
	stageEv                        [2]*cudadrv.Event      // recorded after each staging buffer's copy

	invFreq *cudadrv.Buffer // (HD/2) f32, from SetRotary
	half    int
	rope    *cudadrv.Buffer // (ropeP, HD/2) float2 (cos, sin) of position × invFreq
	ropeP   int             // positions rope covers (0: to be built)
	geluTab *cudadrv.Buffer // gelu of every 16-bit pattern of geluDT (kernels.geluTable)
	geluDT  cudadrv.DataType

	readStage   *cudadrv.HostBuffer // pinned fp32 staging for Read
	readScratch *cudadrv.Buffer     // fp32 conversion of narrow tensors for Read
	linScratch  *cudadrv.Buffer     // narrow conversion of wide GEMM inputs
	dp          dataPath            // copy stream, device batch slots and fences (batch.go, async.go)
}

// tensor is device storage of n elements of type dt. wide is an fp32 copy
// (a parameter's; == buf for fp32 tensors), or nil.
type tensor struct {
	buf  *cudadrv.Buffer
	dt   cudadrv.DataType
	n    int
	wide *cudadrv.Buffer
}

func (t *tensor) Len() int { return t.n }

var _ esm.Backend = (*Backend)(nil)

// New opens device opts.Device, compiles the kernels and returns a backend
// owned by the calling goroutine (locked to its OS thread until Close).
func New(opts Options) (*Backend, error) {
	var dt cudadrv.DataType
	switch opts.Precision {
	case "", esm.FP16:
		dt = cudadrv.F16
	case esm.BF16:
		dt = cudadrv.BF16
	case esm.FP32:
		dt = cudadrv.F32
	default:
		return nil, fmt.Errorf("cuda: unknown precision %q (want fp16, bf16 or fp32)", cut(string(opts.Precision)))
	}
	n, err := Probe()
	if err != nil {
		return nil, fmt.Errorf("cuda: %w", err)
	}
	if opts.Device < 0 || opts.Device >= n {
		return nil, fmt.Errorf("cuda: device %d not found (%d CUDA devices)", opts.Device, n)
	}
	ctx, err := cudadrv.NewContext(opts.Device)
	if err != nil {
		return nil, fmt.Errorf("cuda: %w", err)
	}
	b := &Backend{ctx: ctx, dt: dt, fuse: dt != cudadrv.BF16, attn: newVarlen(ctx)}
	fail := func(err error) (*Backend, error) {
		ctx.Close()
		return nil, fmt.Errorf("cuda: %w", err)
	}
	if b.k, err = newKernels(ctx); err != nil {
		return fail(err)
	}
	for i := range b.stageEv {
		if b.stageEv[i], err = ctx.NewEvent(false); err != nil {
			return fail(err)
		}
	}
	return b, nil
}

// Name implements esm.Backend.
func (b *Backend) Name() string {
	return fmt.Sprintf("cuda (%s, %s, %s, %s attention)", b.ctx.Device.Name, b.ctx.Device.Arch(), b.Precision(), b.attn.family(b.dt))
}

// Precision implements esm.Backend.
func (b *Backend) Precision() esm.Precision {
	switch b.dt {
	case cudadrv.F16:
		return esm.FP16
	case cudadrv.BF16:
		return esm.BF16
	}
	return esm.FP32
}

// cut shortens user-supplied text quoted in errors to about 200 bytes.
func cut(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// Context is the backend's CUDA context (for synchronization and timing by
// the owning goroutine).
func (b *Backend) Context() *cudadrv.Context { return b.ctx }

// MemInfo implements esm.Backend: the device's free and total memory.
func (b *Backend) MemInfo() (free, total uint64, err error) { return b.ctx.MemInfo() }

// DeviceMemory implements esm.Backend: the caching allocator's bytes in use
// and reserved. Call it from the goroutine that owns the backend.
func (b *Backend) DeviceMemory() (inUse, reserved int64, ok bool) {
	if b.ctx == nil {
		return 0, 0, false
	}
	st := b.ctx.Stats()
	return int64(st.InUse), int64(st.Reserved), true
}

// Synchronize waits for all queued work.
func (b *Backend) Synchronize() error { return b.ctx.Stream().Synchronize() }

// Close implements esm.Backend: frees everything and releases the context.
func (b *Backend) Close() error {
	if b.ctx == nil {
		return nil
	}
	err := b.ctx.Close()
	b.ctx = nil
	return err
}

// tens is t as this backend's tensor, or nil for a nil or foreign one
// (which need, wideOf and the ops' own checks then turn into errors).
func tens(t esm.Tensor) *tensor {
	p, _ := t.(*tensor)
	return p
}

func f32bytes(d []float32) []byte {
	if len(d) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&d[0])), 4*len(d))
}

// Upload implements esm.Backend (see the package comment for the types): the
// compute type, plus an fp32 copy when wide.
func (b *Backend) Upload(name string, data []float32, wide bool) (esm.Tensor, error) {
	n := len(data)
	if n == 0 {
		return nil, fmt.Errorf("cuda: upload %s: empty tensor", name)
	}
	f32, err := b.ctx.Alloc(4 * n)
	if err != nil {
		return nil, fmt.Errorf("cuda: upload %s (%d elements): %w", name, n, err)
	}
	if err := b.ctx.CopyHtoD(f32.Ptr, f32bytes(data)); err != nil {
		f32.Free()
		return nil, fmt.Errorf("cuda: upload %s: %w", name, err)
	}
	if b.dt == cudadrv.F32 {
		return &tensor{buf: f32, dt: cudadrv.F32, n: n, wide: f32}, nil
	}
	narrow, err := b.ctx.Alloc(2 * n)
	if err == nil {
		err = b.k.convert(narrow.Ptr, b.dt, f32.Ptr, cudadrv.F32, n)
	}
	if err != nil {
		f32.Free()
		narrow.Free()
		return nil, fmt.Errorf("cuda: upload %s (%d elements): %w", name, n, err)
	}
	t := &tensor{buf: narrow, dt: b.dt, n: n}
	if wide {
		t.wide = f32
	} else {
		f32.Free() // stream-ordered reuse: later work on the one stream follows the convert
	}
	return t, nil
}

var _ esm.NarrowUploader = (*Backend)(nil)

// NarrowDType implements esm.NarrowUploader: the compute type.
func (b *Backend) NarrowDType() weights.DType {
	switch b.dt {
	case cudadrv.F16:
		return weights.F16
	case cudadrv.BF16:
		return weights.BF16
	}
	return weights.F32
}

// UploadNarrow implements esm.NarrowUploader: the first n compute-type
// elements of src (pinned memory from HostAlloc) are copied to a new GEMM
// weight tensor, synchronously, so src may be refilled on return.
func (b *Backend) UploadNarrow(name string, src esm.HostMemory, n int) (esm.Tensor, error) {
	h, ok := src.(*hostMem)
	size := b.dt.Size()
	if !ok || h.h == nil || h.h.Bytes == nil {
		return nil, fmt.Errorf("cuda: upload %s: staging memory is not this backend's HostAlloc", name)
	}
	if n <= 0 || n*size > len(h.h.Bytes) {
		return nil, fmt.Errorf("cuda: upload %s: %d elements of %v from %d bytes of staging memory", name, n, b.dt, len(h.h.Bytes))
	}
	buf, err := b.ctx.Alloc(n * size)
	if err != nil {
		return nil, fmt.Errorf("cuda: upload %s (%d elements): %w", name, n, err)
	}
	if err := b.ctx.CopyHtoD(buf.Ptr, h.h.Bytes[:n*size]); err != nil {
		buf.Free()
		return nil, fmt.Errorf("cuda: upload %s: %w", name, err)
	}
	t := &tensor{buf: buf, dt: b.dt, n: n}
	if b.dt == cudadrv.F32 {
		t.wide = buf // as Upload: in fp32 the one buffer serves both
	}
	return t, nil
}

// Alloc implements esm.Backend: fp32 when wide, else the compute type.
func (b *Backend) Alloc(n int, wide bool) (esm.Tensor, error) {
	dt := b.dt
	if wide {
		dt = cudadrv.F32
	}
	buf, err := b.ctx.Alloc(n * dt.Size())
	if err != nil {
		if errors.Is(err, cudadrv.ErrOutOfMemory) {
			err = errors.Join(esm.ErrOutOfMemory, err)
		}
		return nil, fmt.Errorf("cuda: alloc %d x %v: %w", n, dt, err)
	}
	return &tensor{buf: buf, dt: dt, n: n}, nil
}

// Free implements esm.Backend.
func (b *Backend) Free(et esm.Tensor) {
	t, ok := et.(*tensor)
	if !ok || t == nil || b.ctx == nil {
		return
	}
	if t.wide != nil && t.wide != t.buf {
		t.wide.Free()
	}
	t.buf.Free()
	t.buf, t.wide = nil, nil
}

// grow returns buf if it holds bytes, else frees it and allocates anew
// (safe on the one stream: later work is ordered after earlier users).
func (b *Backend) grow(buf **cudadrv.Buffer, bytes int) (*cudadrv.Buffer, error) {
	if *buf != nil && (*buf).Size >= bytes {
		return *buf, nil
	}
	if *buf != nil {
		(*buf).Free()
		*buf = nil
	}
	nb, err := b.ctx.Alloc(bytes)
	if err != nil {
		return nil, err
	}
	*buf = nb
	return nb, nil
}

func (b *Backend) need(op string, t *tensor, n int) error {
	if b.T == 0 {
		return fmt.Errorf("cuda: %s: no batch (SetBatch not called)", op)
	}
	if t == nil || t.buf == nil {
		return fmt.Errorf("cuda: %s: nil, freed or foreign tensor", op)
	}
	if t.n < n {
		return fmt.Errorf("cuda: %s: tensor has %d elements, need %d", op, t.n, n)
	}
	return nil
}

func wideOf(op string, t *tensor, n int) (cudadrv.DevicePtr, error) {
	if t == nil || t.wide == nil {
		return 0, fmt.Errorf("cuda: %s: parameter is nil, foreign or has no fp32 copy (not uploaded wide)", op)
	}
	if t.n < n {
		return 0, fmt.Errorf("cuda: %s: parameter has %d elements, need %d", op, t.n, n)
	}
	return t.wide.Ptr, nil
}

// Embed implements esm.Backend.
func (b *Backend) Embed(x, table esm.Tensor, D int, maskToken int32) error {
	xt := tens(x)
	if err := b.need("embed", xt, b.T*D); err != nil {
		return err
	}
	tab, err := wideOf("embed table", tens(table), (int(b.topToken)+1)*D) // every token's row
	if err != nil {
		return err
	}
	return b.k.embed(xt.buf.Ptr, xt.dt, tab, b.tokens, b.seqid, b.scales, b.T, D, maskToken)
}

// LayerNorm implements esm.Backend.
func (b *Backend) LayerNorm(out, in, w, bias esm.Tensor, D int, eps float32) error {
	o, x := tens(out), tens(in)
	if err := b.need("layernorm out", o, b.T*D); err != nil {
		return err
	}
	if err := b.need("layernorm in", x, b.T*D); err != nil {
		return err
	}
	wp, err := wideOf("layernorm weight", tens(w), D)
	if err != nil {
		return err
	}
	bp, err := wideOf("layernorm bias", tens(bias), D)
	if err != nil {
		return err
	}
	if o.buf == x.buf && o.dt != x.dt {
		return fmt.Errorf("cuda: layernorm in place from %v to %v", x.dt, o.dt)
	}
	if x.dt == cudadrv.F32 && D%4 == 0 && D <= lnVecMaxD {
		return b.k.layernormVec(o.buf.Ptr, o.dt, x.buf.Ptr, wp, bp, b.T, D, eps)
	}
	return b.k.layernorm(o.buf.Ptr, o.dt, x.buf.Ptr, x.dt, wp, bp, b.T, D, eps)
}

// Linear implements esm.Backend: y = x·wᵀ + b with fp32 accumulation, or
// with accumulate y += x·wᵀ + b (the fp32 residual stream). In fp16 and fp32
// the bias goes into a cuBLASLt epilogue (cublasLtMatmul, one pass over y);
// bf16 runs cublasGemmEx (beta = 1 to accumulate) then the bias_add kernel,
// until its epilogue has been checked on a GPU (esm/cuda/NOTES.md).
func (b *Backend) Linear(out, in, w, bias esm.Tensor, K, N int, accumulate bool) error {
	o, x, wt := tens(out), tens(in), tens(w)
	T := b.T
	if err := b.need("linear out", o, T*N); err != nil {
		return err
	}
	if err := b.need("linear in", x, T*K); err != nil {
		return err
	}
	if err := b.need("linear weight", wt, N*K); err != nil {
		return err
	}
	bp, err := wideOf("linear bias", tens(bias), N)
	if err != nil {
		return err
	}
	if wt.dt != cudadrv.F32 && o.dt != cudadrv.F32 && o.dt != wt.dt {
		return fmt.Errorf("cuda: linear: %v output from %v weights", o.dt, wt.dt)
	}
	if wt.dt == cudadrv.F32 && o.dt != cudadrv.F32 {
		return fmt.Errorf("cuda: linear: %v output from fp32 weights", o.dt)
	}
	a := x.buf.Ptr
	if x.dt != wt.dt {
		s, err := b.grow(&b.linScratch, T*K*wt.dt.Size())
		if err != nil {
			return err
		}
		if err := b.k.convert(s.Ptr, wt.dt, a, x.dt, T*K); err != nil {
			return err
		}
		a = s.Ptr
	}
	prec := cudadrv.Precision{In: wt.dt, Out: o.dt, Compute: cudadrv.ComputeF32}
	if b.fuse {
		// The bias in the cuBLASLt epilogue: y = x·wᵀ + b, or for the
		// residual add (accumulate, fp32 y) y += x·wᵀ + b in one pass over y.
		bt := tens(bias) // the epilogue's bias has the output's type
		bb := bt.buf
		if o.dt == cudadrv.F32 {
			bb = bt.wide
		}
		epi := cudadrv.EpilogueBias
		if accumulate {
			epi = cudadrv.EpilogueBiasAccumulate
		}
		if bb != nil && (bt.dt == o.dt || o.dt == cudadrv.F32) && (!accumulate || o.dt == cudadrv.F32) {
			if err := b.ctx.LinearBias(o.buf.Ptr, a, wt.buf.Ptr, bb.Ptr, T, N, K, prec, epi); err != nil {
				return fmt.Errorf("cuda: linear+bias T=%d K=%d N=%d: %w", T, K, N, err)
			}
			return nil
		}
	}
	beta := float32(0)
	if accumulate {
		beta = 1
	}
	err = b.ctx.Gemm(cudadrv.GemmArgs{TransB: true, M: T, N: N, K: K, A: a, B: wt.buf.Ptr, C: o.buf.Ptr,
		Alpha: 1, Beta: beta, Prec: prec})
	if err != nil {
		return fmt.Errorf("cuda: linear T=%d K=%d N=%d: %w", T, K, N, err)
	}
	return b.k.biasAdd(o.buf.Ptr, o.dt, bp, T, N)
}

var _ esm.Preparer = (*Backend)(nil)

// Prepare implements esm.Preparer: cuBLASLt's one-time set-up (its handle,
// and the library loading what it needs on its first product: ~0.1 s on an
// H200, once per process) is done by one small product on zeros here,
// while the model's first weights are read, instead of in the first
// forward pass. The product's plan stays cached beside the model's; its
// buffer is freed before Prepare returns. It also compiles (or reads from
// the kernel cache) the attention kernels' module, settling which kernels
// run (Name reports them).
func (b *Backend) Prepare() error {
	const n = 64 // a product of 64 x 64 by 64
	es := b.dt.Size()
	bytes := 3*n*n*es + n*4 // x, w, y, then the bias (room for fp32)
	buf, err := b.ctx.Alloc(bytes)
	if err != nil {
		return fmt.Errorf("cuda: prepare: %w", err)
	}
	x, w, y, bias := buf.Ptr, buf.Ptr.Add(n*n*es), buf.Ptr.Add(2*n*n*es), buf.Ptr.Add(3*n*n*es)
	err = b.ctx.MemsetD8Async(buf.Ptr, 0, bytes, b.ctx.Stream())
	if err == nil {
		prec := cudadrv.Precision{In: b.dt, Out: b.dt, Compute: cudadrv.ComputeF32}
		if b.fuse {
			err = b.ctx.LinearBias(y, x, w, bias, n, n, n, prec, cudadrv.EpilogueBias)
		} else {
			err = b.ctx.Gemm(cudadrv.GemmArgs{TransB: true, M: n, N: n, K: n, A: x, B: w, C: y, Alpha: 1, Prec: prec})
		}
	}
	if err == nil {
		err = b.Synchronize()
	}
	if ferr := buf.Free(); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return fmt.Errorf("cuda: prepare (a first cuBLASLt product): %w", err)
	}
	// The attention kernels' module: compiled (or read from the kernel
	// cache) here rather than in the first forward.
	if _, err := b.attn.moduleFor(b.dt); err != nil {
		return fmt.Errorf("cuda: prepare (attention kernels): %w", err)
	}
	return nil
}

// SetRotary implements esm.Backend.
func (b *Backend) SetRotary(invFreq []float32) error {
	if len(invFreq) == 0 {
		return fmt.Errorf("cuda: empty rotary frequencies")
	}
	if b.invFreq != nil {
		b.invFreq.Free()
		b.invFreq = nil
	}
	buf, err := b.ctx.Alloc(4 * len(invFreq))
	if err != nil {
		return err
	}
	if err := b.ctx.CopyHtoD(buf.Ptr, f32bytes(invFreq)); err != nil {
		buf.Free()
		return err
	}
	b.invFreq, b.half = buf, len(invFreq)
	b.ropeP = 0 // the cos/sin table is rebuilt from the new frequencies
	return nil
}

// RotaryQK implements esm.Backend.
func (b *Backend) RotaryQK(qkv esm.Tensor, H, HD int, qScale float32) error {
	q := tens(qkv)
	if err := b.need("rotary", q, b.T*3*H*HD); err != nil {
		return err
	}
	if b.half != HD/2 {
		return fmt.Errorf("cuda: rotary has %d frequencies for head dim %d (SetRotary not called?)", b.half, HD)
	}
	if b.half%4 != 0 {
		return b.k.rotary(q.buf.Ptr, q.dt, b.pos, b.invFreq.Ptr, b.T, H, HD, qScale)
	}
	// cos/sin of every (position, frequency) once, for the longest sequence
	// seen, instead of once per layer.
	if P := b.seqlens.MaxLen(); P > b.ropeP {
		P = max(P, 1026) // ESM2's 1022 residues + BOS/EOS: one table for the usual batches
		buf, err := b.grow(&b.rope, 8*P*b.half)
		if err != nil {
			return err
		}
		if err := b.k.ropeTable(buf.Ptr, b.invFreq.Ptr, P, b.half); err != nil {
			return err
		}
		b.ropeP = P
	}
	return b.k.rotaryTab(q.buf.Ptr, q.dt, b.pos, b.rope.Ptr, b.T, H, HD, qScale)
}

// Attention implements esm.Backend with the varlen kernels of attention.cu
// (scale 1: q is pre-scaled by RotaryQK).
func (b *Backend) Attention(out, qkv esm.Tensor, H, HD int) error {
	o, q := tens(out), tens(qkv)
	D := H * HD
	if err := b.need("attention out", o, b.T*D); err != nil {
		return err
	}
	if err := b.need("attention qkv", q, b.T*3*D); err != nil {
		return err
	}
	if o.dt != q.dt {
		return fmt.Errorf("cuda: attention: %v output from %v qkv", o.dt, q.dt)
	}
	es := q.dt.Size()
	return b.attn.forward(varlenArgs{
		Out: o.buf.Ptr, LdOut: D,
		Q: q.buf.Ptr, K: q.buf.Ptr.Add(es * D), V: q.buf.Ptr.Add(2 * es * D), Ld: 3 * D,
		CuSeqlens: b.cu, Seqlens: b.seqlens, H: H, HD: HD, Scale: 1, DType: q.dt,
	})
}

// GELU implements esm.Backend.
func (b *Backend) GELU(x esm.Tensor, n int) error {
	t := tens(x)
	if t == nil || t.buf == nil || t.n < n {
		return fmt.Errorf("cuda: gelu: tensor too small for %d elements", n)
	}
	if t.dt == cudadrv.F32 || !b.k.geluLUTOK() {
		return b.k.gelu(t.buf.Ptr, t.dt, n)
	}
	// fp16/bf16: through the table of every input's output, built once.
	if b.geluTab == nil || b.geluDT != t.dt {
		buf, err := b.grow(&b.geluTab, geluLUTShared)
		if err != nil {
			return fmt.Errorf("cuda: gelu table: %w", err)
		}
		if err := b.k.geluTable(buf.Ptr, t.dt); err != nil {
			return err
		}
		b.geluDT = t.dt
	}
	return b.k.geluLUT(t.buf.Ptr, n, b.geluTab.Ptr)
}

// PoolMean implements esm.Backend (dst must be wide).
func (b *Backend) PoolMean(dst, x esm.Tensor, D int) error {
	return b.pool("pool mean", dst, x, D, b.k.poolMean)
}

// PoolBOS implements esm.Backend (dst must be wide).
func (b *Backend) PoolBOS(dst, x esm.Tensor, D int) error {
	return b.pool("pool bos", dst, x, D, b.k.poolBOS)
}

func (b *Backend) pool(op string, dst, x esm.Tensor, D int,
	k func(dst, x cudadrv.DevicePtr, xt cudadrv.DataType, cu cudadrv.DevicePtr, nseq, D int) error) error {
	d, xt := tens(dst), tens(x)
	if err := b.need(op+" dst", d, b.nseq*D); err != nil {
		return err
	}
	if err := b.need(op+" x", xt, b.T*D); err != nil {
		return err
	}
	if d.dt != cudadrv.F32 {
		return fmt.Errorf("cuda: %s: destination is %v, want a wide (fp32) tensor", op, d.dt)
	}
	return k(d.buf.Ptr, xt.buf.Ptr, xt.dt, b.cu, b.nseq, D)
}
