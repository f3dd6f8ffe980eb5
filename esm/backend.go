package esm

import (
	"errors"
	"fmt"
	"strings"
)

// ErrOutOfMemory is matched (errors.Is) by backend errors that mean the
// device ran out of memory: the caller may retry with a smaller batch.
var ErrOutOfMemory = errors.New("out of device memory")

// ErrNoDeviceMemory is matched (errors.Is) by the MemInfo error of a backend
// that has no device memory of its own (the CPU): the free memory is unknown
// and callers use their host defaults.
var ErrNoDeviceMemory = errors.New("no device memory")

// Precision is the compute type of a backend's narrow activations and GEMM
// weights. It is parsed once (ParsePrecision) and carried as this type.
type Precision string

// The precisions a backend may compute in.
const (
	FP16 Precision = "fp16"
	BF16 Precision = "bf16"
	FP32 Precision = "fp32"
)

// ParsePrecision reads fp16, bf16 or fp32 (any case, surrounding spaces
// ignored).
func ParsePrecision(s string) (Precision, error) {
	switch p := Precision(strings.ToLower(strings.TrimSpace(s))); p {
	case FP16, BF16, FP32:
		return p, nil
	}
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return "", fmt.Errorf("unknown precision %q (want fp16, bf16 or fp32)", s)
}

// ElementBytes is the size of one element in p: 2 for fp16/bf16, else 4.
func (p Precision) ElementBytes() int {
	if p == FP16 || p == BF16 {
		return 2
	}
	return 4
}

// Tensor is backend-owned storage for Len elements in the backend's compute
// precision (float32 on the CPU; fp16, bf16 or fp32 on a GPU).
type Tensor interface {
	Len() int
}

// Backend executes the operations of the ESM2 forward pass. The model calls
// them in a flat list (see Model.Forward); a backend may run them
// asynchronously, and must finish all earlier work before Read returns.
//
// Legend: T = tokens of the current batch, D = model dim, F = FFN dim,
// H = heads, HD = head dim, V = vocab, nseq = sequences of the batch. All
// matrices are row-major.
type Backend interface {
	// Name says what runs the model, e.g. "cpu (openblas, 2 threads)".
	Name() string
	// Precision is the compute type of narrow tensors (Alloc with wide
	// false, GEMM weights): FP32 on the CPU.
	Precision() Precision
	// Upload copies a parameter to the backend, converted to its precision.
	// wide says the model also reads the parameter at fp32 outside GEMMs
	// (the embedding table, LayerNorm weights, biases): the backend must
	// then keep an fp32 copy as well. GEMM weights pass false. name is for
	// error messages only; the backend never decides anything from it.
	Upload(name string, data []float32, wide bool) (Tensor, error)
	// Alloc returns activation storage for n elements (contents undefined).
	// wide asks for at least fp32 storage: the model uses it for the residual
	// stream and for outputs; other activations (GEMM inputs) may be kept in
	// the backend's compute precision (fp16/bf16 on a GPU).
	Alloc(n int, wide bool) (Tensor, error)
	// Free releases a tensor from Upload or Alloc.
	Free(t Tensor)
	// SetBatch makes b the batch the following ops work on (tokens,
	// cu_seqlens, per-sequence scales; positions restart per sequence).
	SetBatch(b *Batch) error

	// Embed: x(T,D) = table(V,D)[tokens]; when maskToken >= 0, rows of that
	// token are zeroed and every row is multiplied by its sequence's scale.
	Embed(x, table Tensor, D int, maskToken int32) error
	// LayerNorm: out(T,D) = (in-mean)/sqrt(var+eps)*w + b, statistics in fp32.
	// out may be in.
	LayerNorm(out, in, w, b Tensor, D int, eps float32) error
	// Linear: out(T,N) = in(T,K)·w(N,K)^T + b(N), or out += that when
	// accumulate (the residual add).
	Linear(out, in, w, b Tensor, K, N int, accumulate bool) error
	// SetRotary sets the rotary inverse frequencies (HD/2), called once
	// before the first batch. Checkpoints store them (ESM2's were trained in
	// fp16, so the stored values are fp16-rounded and differ from the
	// formula 1/10000^(2i/HD)); the model passes the stored ones when present.
	SetRotary(invFreq []float32) error
	// RotaryQK works in place on the packed qkv(T,3D) = [q | k | v]: q is
	// multiplied by qScale, then q and k get rotary embeddings
	// (non-interleaved rotate_half over the head dim, position = token index
	// within its sequence, angle = float32(pos)*invFreq[i] and cos/sin in fp32).
	RotaryQK(qkv Tensor, H, HD int, qScale float32) error
	// Attention: out(T,D) = softmax(q·k^T)·v per sequence and head over the
	// packed qkv(T,3D), with no attention across sequences.
	Attention(out, qkv Tensor, H, HD int) error
	// AttentionProbs materializes what Attention applies to v, for one
	// sequence and a range of heads: probs(nh, n, n) = softmax(q·k^T) of
	// heads h0..h0+nh-1 of sequence seq of the current batch (n = its
	// token count, BOS and EOS included), over the packed qkv(T,3D) after
	// RotaryQK (q pre-scaled), with fp32 scores and softmax. probs must be
	// wide. Used for contact maps (Model.Contacts); the forward pass never
	// calls it.
	AttentionProbs(probs, qkv Tensor, H, HD, seq, h0, nh int) error
	// GELU applies the exact erf GELU to the first n elements of x in place.
	GELU(x Tensor, n int) error
	// PoolMean: dst(nseq,D) = mean of x(T,D) over each sequence's residue
	// tokens (BOS and EOS excluded).
	PoolMean(dst, x Tensor, D int) error
	// PoolBOS: dst(nseq,D) = x's BOS row of each sequence.
	PoolBOS(dst, x Tensor, D int) error
	// Read copies the first len(dst) elements of src to the host as float32,
	// after all work queued before it.
	Read(dst []float32, src Tensor) error

	// Reads that queue a copy and return at once, so the host can prepare
	// the next batch while a device works. A synchronous backend (the CPU)
	// copies at once and hands out fences that are already complete.
	// Model.Launch uses them; callers normally use Model. These methods,
	// and those of the Fence and HostMemory they return, must be called
	// from the goroutine that may call the backend (for a GPU, the
	// goroutine that owns the device).
	//
	// ReadAsync queues a copy of the first len(dst) elements of src to dst as
	// float32, after all work queued before it (a later op that overwrites
	// src does not change what is copied). dst must lie in memory from
	// HostAlloc of this backend; its contents are undefined until a Fence
	// taken after this call has been waited for.
	ReadAsync(dst []float32, src Tensor) error
	// Fence returns a fence that completes after everything queued so far.
	Fence() (Fence, error)
	// HostAlloc returns host memory for n float32s suited to ReadAsync
	// (page-locked on a GPU). The caller frees it; Backend.Close frees what
	// is left.
	HostAlloc(n int) (HostMemory, error)

	// MemInfo reports the device's free and total memory; a backend with
	// no device memory of its own returns an error matching
	// ErrNoDeviceMemory. Callers treat any error as "unknown".
	MemInfo() (free, total uint64, err error)
	// DeviceMemory reports the backend allocator's bytes in use and
	// reserved; ok is false where there is no such allocator (the CPU).
	DeviceMemory() (inUse, reserved int64, ok bool)

	// Close releases the backend's resources.
	Close() error
}

// Fence marks a point in a backend's queue of work.
type Fence interface {
	// Wait blocks until the work queued before the fence has finished and
	// returns the first error of that work. Later calls return the same
	// result at once. Call it from the goroutine that may call the backend.
	Wait() error
}

// HostMemory is host memory from Backend.HostAlloc.
type HostMemory interface {
	// Floats is the memory as float32s (len n); invalid after Free.
	Floats() []float32
	// Free waits for copies still queued into the memory, then releases it.
	Free() error
}

// Done is the Fence of a backend that has already finished its work.
var Done Fence = done{}

type done struct{}

func (done) Wait() error { return nil }

// GoMemory is HostMemory in ordinary Go memory: what a synchronous backend's
// HostAlloc returns.
type GoMemory []float32

// Floats implements HostMemory.
func (g GoMemory) Floats() []float32 { return g }

// Free implements HostMemory: the garbage collector reclaims the memory.
func (GoMemory) Free() error { return nil }
