// Package cpu is esm2go's CPU backend: float32 everywhere, matrix products
// through OpenBLAS when it is installed (found at run time with dlopen) or
// gonum's pure-Go kernel otherwise, other ops parallel across cores.
//
// NaN and Inf are never hidden: a non-finite input or weight gives
// non-finite outputs wherever the math says it reaches (LayerNorm: its
// whole row; attention: see softmaxRow; GELU(-Inf) is NaN, as in PyTorch),
// and finite outputs elsewhere (other sequences of a packed batch stay
// finite). The one deliberate exception is the model's own: embedding rows
// of the mask token are set to zero whatever the table holds.
package cpu

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/esm2go/esm2go/attention"
	"github.com/esm2go/esm2go/esm"
)

// Options configure the CPU backend.
type Options struct {
	Threads int  // goroutines for elementwise ops and BLAS threads; 0 = GOMAXPROCS
	NoBLAS  bool // use the pure-Go matmul even where OpenBLAS is installed
}

// Backend implements esm.Backend on the CPU.
type Backend struct {
	threads int
	mm      sgemm
	vm      vmath
	closed  bool // Close unloaded the BLAS library: the products refuse (errClosed)

	// the current batch
	tokens   []int32 // (T)
	topToken int32   // the batch's highest token id (Embed's table check)
	seqlens  attention.Seqlens
	scales   []float32 // (nseq)
	pos      []int32   // (T) position of each token within its sequence

	// rotary: inverse frequencies (HD/2) and tables grown on demand, (maxPos, HD/2) each
	invFreq  []float32
	cos, sin []float32

	scratch   [][]float32 // per worker attention scores, (attnBlock, maxLen)
	attnItems []attnItem  // the attention work list, reused
	packed    []float32   // Q, K^T and V of every (sequence, head), packed for the attention kernels
	packUnits []packUnit  // the packing work list, reused
	// packAllMax is the most tokens a batch may have for Attention to pack
	// every head in one pass (b.packed, as large as qkv); longer batches
	// pack head by head into each worker's scratch.
	packAllMax int
}

type tensor struct{ d []float32 }

func (t *tensor) Len() int { return len(t.d) }

var _ esm.Backend = (*Backend)(nil)

// New creates a CPU backend.
func New(opts Options) *Backend {
	n := opts.Threads
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	b := &Backend{threads: n, mm: gonumBLAS{}, vm: newVMath(), packAllMax: packAllMaxTokens}
	if !opts.NoBLAS {
		// OpenBLAS runs single-threaded inside each call: the backend splits
		// work across cores itself, so BLAS threads never compete with it.
		if o := openOpenBLAS(1); o != nil {
			b.mm = o
		}
	}
	return b
}

// Name implements esm.Backend.
func (b *Backend) Name() string {
	return fmt.Sprintf("cpu (%s, %d threads)", b.mm.Name(), b.threads)
}

// Close implements esm.Backend.
func (b *Backend) Close() error {
	if !b.closed {
		b.closed = true
		b.mm.Close()
	}
	return nil
}

// errClosed is what the products return after Close: the BLAS library is
// unloaded, and calling into it would end the process.
var errClosed = errors.New("cpu: the backend is closed")

func data(t esm.Tensor) []float32 { return t.(*tensor).d }

// Precision implements esm.Backend: the CPU computes in fp32.
func (b *Backend) Precision() esm.Precision { return esm.FP32 }

// MemInfo implements esm.Backend: the CPU has no device memory (the error
// matches esm.ErrNoDeviceMemory; callers use their host defaults).
func (b *Backend) MemInfo() (free, total uint64, err error) {
	return 0, 0, fmt.Errorf("cpu: %w", esm.ErrNoDeviceMemory)
}

// DeviceMemory implements esm.Backend: no device allocator (ok is false).
func (b *Backend) DeviceMemory() (inUse, reserved int64, ok bool) { return 0, 0, false }

// Upload implements esm.Backend: every tensor is fp32, wide or not.
func (b *Backend) Upload(name string, d []float32, wide bool) (esm.Tensor, error) {
	return &tensor{d: append([]float32(nil), d...)}, nil
}

// Alloc implements esm.Backend.
func (b *Backend) Alloc(n int, wide bool) (esm.Tensor, error) {
	return &tensor{d: make([]float32, n)}, nil
}

// Free implements esm.Backend.
func (b *Backend) Free(t esm.Tensor) {}

// SetBatch implements esm.Backend.
func (b *Backend) SetBatch(batch *esm.Batch) error {
	// esm.Model checks every batch before its ops; the backend checks again
	// on purpose: the kernels index memory with cu_seqlens, and backends are
	// also driven directly (esm/backendtest), so a bad batch must not reach
	// them from any caller.
	if err := batch.Check(); err != nil {
		return err
	}
	b.tokens, b.seqlens, b.scales = batch.Tokens, batch.Seqlens, batch.Scales
	b.topToken = batch.MaxToken()
	b.pos = b.pos[:0]
	for s := 0; s < b.seqlens.N(); s++ {
		for p := 0; p < b.seqlens.Len(s); p++ {
			b.pos = append(b.pos, int32(p))
		}
	}
	return nil
}

func (b *Backend) T() int { return len(b.tokens) }

// parallel runs fn over [0,n) split into at most b.threads contiguous ranges.
func (b *Backend) parallel(n, minPerThread int, fn func(lo, hi int)) {
	workers := min(b.threads, max(1, n/max(minPerThread, 1)))
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}

// eachWorker runs fn once on every worker goroutine, with the worker's
// number (for per-worker scratch), and waits for all of them.
func (b *Backend) eachWorker(fn func(worker int)) {
	var wg sync.WaitGroup
	for w := 0; w < b.threads; w++ {
		wg.Go(func() { fn(w) })
	}
	wg.Wait()
}

// checkLen checks that t is this backend's tensor (not nil, not another
// backend's) and holds at least n elements. Every op checks each tensor it
// reads or writes with it before calling data.
func checkLen(op string, t esm.Tensor, n int) error {
	c, ok := t.(*tensor)
	if !ok || c == nil {
		return fmt.Errorf("cpu: %s: nil or foreign tensor (%T)", op, t)
	}
	if len(c.d) < n {
		return fmt.Errorf("cpu: %s: tensor has %d elements, need %d", op, len(c.d), n)
	}
	return nil
}

// Embed implements esm.Backend.
func (b *Backend) Embed(x, table esm.Tensor, D int, maskToken int32) error {
	T := b.T()
	if err := checkLen("embed", x, T*D); err != nil {
		return err
	}
	if err := checkLen("embed table", table, (int(b.topToken)+1)*D); err != nil { // every token's row
		return err
	}
	xd, tab := data(x), data(table)
	for s := 0; s < b.seqlens.N(); s++ {
		scale := float32(1)
		if maskToken >= 0 {
			scale = b.scales[s]
		}
		for t := b.seqlens.Start(s); t < b.seqlens.Start(s)+b.seqlens.Len(s); t++ {
			row := xd[t*D : (t+1)*D]
			tok := b.tokens[t]
			if tok == maskToken {
				clear(row)
				continue
			}
			src := tab[int(tok)*D:][:D]
			for i, v := range src {
				row[i] = v * scale
			}
		}
	}
	return nil
}

// LayerNorm implements esm.Backend: rows split over the workers, each
// row normalized by vmath's C kernel (layerNormGo's math: the mean, then
// the variance about it, in one read of the row from memory).
func (b *Backend) LayerNorm(out, in, w, bias esm.Tensor, D int, eps float32) error {
	T := b.T()
	if err := checkLen("layernorm out", out, T*D); err != nil {
		return err
	}
	if err := checkLen("layernorm in", in, T*D); err != nil {
		return err
	}
	if err := checkLen("layernorm weight", w, D); err != nil {
		return err
	}
	if err := checkLen("layernorm bias", bias, D); err != nil {
		return err
	}
	o, x, wd, bd := data(out), data(in), data(w)[:D], data(bias)[:D]
	b.parallel(T, 16, func(lo, hi int) {
		b.vm.layerNorm(o[lo*D:hi*D], x[lo*D:hi*D], wd, bd, D, eps)
	})
	return nil
}

// Linear implements esm.Backend.
func (b *Backend) Linear(out, in, w, bias esm.Tensor, K, N int, accumulate bool) error {
	if b.closed {
		return errClosed
	}
	T := b.T()
	if err := checkLen("linear out", out, T*N); err != nil {
		return err
	}
	if err := checkLen("linear in", in, T*K); err != nil {
		return err
	}
	if err := checkLen("linear weight", w, N*K); err != nil {
		return err
	}
	if err := checkLen("linear bias", bias, N); err != nil {
		return err
	}
	o, bd := data(out), data(bias)[:N]
	x, wd := data(in), data(w)
	// The bias goes in before the product, and sgemm adds to out (beta 1):
	// without accumulate each row starts as a copy of the bias (which
	// replaces the pass with which BLAS would zero out for beta 0); with
	// it, the bias is added to the residual first.
	b.parallel(T, 32, func(lo, hi int) {
		if accumulate {
			b.vm.addRows(o[lo*N:hi*N], bd, N)
		} else {
			for t := lo; t < hi; t++ {
				copy(o[t*N:(t+1)*N], bd)
			}
		}
		b.mm.Sgemm(true, hi-lo, N, K, 1, x[lo*K:], K, wd, K, 1, o[lo*N:], N)
	})
	return nil
}

// SetRotary implements esm.Backend.
func (b *Backend) SetRotary(invFreq []float32) error {
	if len(invFreq) == 0 {
		return fmt.Errorf("cpu: empty rotary frequencies")
	}
	b.invFreq = append([]float32(nil), invFreq...)
	b.cos, b.sin = nil, nil
	return nil
}

// rope grows the cos/sin tables to cover positions < n, computed as PyTorch
// does in fp32: angle = float32(pos)*inv_freq[i].
func (b *Backend) rope(n int) {
	half := len(b.invFreq)
	if len(b.cos) >= n*half {
		return
	}
	n = max(n, 1024)
	b.cos, b.sin = make([]float32, n*half), make([]float32, n*half)
	for p := 0; p < n; p++ {
		for i, f := range b.invFreq {
			a := float32(p) * f
			b.cos[p*half+i] = float32(math.Cos(float64(a)))
			b.sin[p*half+i] = float32(math.Sin(float64(a)))
		}
	}
}

// RotaryQK implements esm.Backend.
func (b *Backend) RotaryQK(qkv esm.Tensor, H, HD int, qScale float32) error {
	T, D := b.T(), H*HD
	if err := checkLen("rotary", qkv, T*3*D); err != nil {
		return err
	}
	half := HD / 2
	if len(b.invFreq) != half {
		return fmt.Errorf("cpu: rotary has %d frequencies for head dim %d (SetRotary not called?)", len(b.invFreq), HD)
	}
	b.rope(b.seqlens.MaxLen())
	x := data(qkv)
	b.parallel(T, 16, func(lo, hi int) {
		b.vm.rotary(x[lo*3*D:hi*3*D], 3*D, b.pos[lo:hi], b.cos, b.sin, H, HD, qScale)
	})
	return nil
}

// GELU implements esm.Backend (exact erf form).
func (b *Backend) GELU(x esm.Tensor, n int) error {
	if err := checkLen("gelu", x, n); err != nil {
		return err
	}
	d := data(x)[:n]
	b.parallel(n, 4096, func(lo, hi int) { b.vm.gelu(d[lo:hi]) })
	return nil
}

// PoolMean implements esm.Backend.
func (b *Backend) PoolMean(dst, x esm.Tensor, D int) error {
	nseq := b.seqlens.N()
	if err := checkLen("pool mean", dst, nseq*D); err != nil {
		return err
	}
	if err := checkLen("pool mean x", x, b.T()*D); err != nil {
		return err
	}
	o, xd := data(dst), data(x)
	acc := make([]float64, D)
	for s := 0; s < nseq; s++ {
		clear(acc)
		start, n := b.seqlens.Start(s), b.seqlens.Len(s)
		for t := start + 1; t < start+n-1; t++ {
			for i, v := range xd[t*D : (t+1)*D] {
				acc[i] += float64(v)
			}
		}
		inv := 1 / float64(n-2)
		for i := range acc {
			o[s*D+i] = float32(acc[i] * inv)
		}
	}
	return nil
}

// PoolBOS implements esm.Backend.
func (b *Backend) PoolBOS(dst, x esm.Tensor, D int) error {
	nseq := b.seqlens.N()
	if err := checkLen("pool bos", dst, nseq*D); err != nil {
		return err
	}
	if err := checkLen("pool bos x", x, b.T()*D); err != nil {
		return err
	}
	o, xd := data(dst), data(x)
	for s := 0; s < nseq; s++ {
		start := b.seqlens.Start(s)
		copy(o[s*D:(s+1)*D], xd[start*D:(start+1)*D])
	}
	return nil
}

// Read implements esm.Backend.
func (b *Backend) Read(dst []float32, src esm.Tensor) error {
	if err := checkLen("read", src, len(dst)); err != nil {
		return err
	}
	copy(dst, data(src))
	return nil
}

// ReadAsync implements esm.Backend: the CPU's work is already done, so the
// copy happens at once (dst may be any memory).
func (b *Backend) ReadAsync(dst []float32, src esm.Tensor) error { return b.Read(dst, src) }

// Fence implements esm.Backend: a fence that is already complete.
func (b *Backend) Fence() (esm.Fence, error) { return esm.Done, nil }

// HostAlloc implements esm.Backend: ordinary Go memory.
func (b *Backend) HostAlloc(n int) (esm.HostMemory, error) {
	if n <= 0 {
		return nil, fmt.Errorf("cpu: host memory for %d floats", n)
	}
	return make(esm.GoMemory, n), nil
}
