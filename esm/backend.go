package esm

import "errors"

// ErrOutOfMemory is matched (errors.Is) by backend errors that mean the
// device ran out of memory: the caller may retry with a smaller batch.
var ErrOutOfMemory = errors.New("out of device memory")

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
	// Upload copies a parameter to the backend (converted to its precision).
	Upload(name string, data []float32) (Tensor, error)
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
	// Close releases the backend's resources.
	Close() error
}

// AsyncReader is an optional Backend capability: reads that queue a copy and
// return at once, so the host can prepare the next batch while the device
// works (the CUDA backend has it; the CPU backend does not and needs none).
// Model.Launch uses it when the backend has it; callers normally use Model
// and never call these methods themselves.
//
// All methods, and the methods of the Fence and HostMemory they return, must
// be called from the goroutine that may call the backend (for a GPU, the
// goroutine that owns the device).
type AsyncReader interface {
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
}

// Fence marks a point in a backend's queue of work.
type Fence interface {
	// Wait blocks until the work queued before the fence has finished and
	// returns the first error of that work. Later calls return the same
	// result at once. Call it from the goroutine that may call the backend.
	Wait() error
}

// HostMemory is host memory from AsyncReader.HostAlloc.
type HostMemory interface {
	// Floats is the memory as float32s (len n); invalid after Free.
	Floats() []float32
	// Free waits for copies still queued into the memory, then releases it.
	Free() error
}

// done is the Fence of a backend that has already finished its work.
type done struct{}

func (done) Wait() error { return nil }
