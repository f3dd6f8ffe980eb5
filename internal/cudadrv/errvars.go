package cudadrv

import "errors"

// Errors that callers test with errors.Is.
var (
	// ErrNoDriver: libcuda.so.1 could not be loaded (no NVIDIA driver).
	ErrNoDriver = errors.New("no CUDA driver")
	// ErrNoDevice: the driver loaded but reports no usable GPU.
	ErrNoDevice = errors.New("no CUDA device")
	// ErrMissingLibrary: NVRTC, cuBLAS or cuBLASLt could not be loaded.
	ErrMissingLibrary = errors.New("CUDA library missing")
	// ErrOutOfMemory: a device allocation (or cuBLAS's) failed for lack of
	// memory, even after the allocator released its cache. The caller may
	// split the batch and retry.
	ErrOutOfMemory = errors.New("CUDA out of memory")
	// ErrWrongGoroutine: a method was called from a goroutine (OS thread)
	// other than the one that created the Context.
	ErrWrongGoroutine = errors.New("CUDA call from a goroutine that does not own the context")
	// ErrClosed: the Context (or the object) was already closed or freed.
	ErrClosed = errors.New("CUDA object already closed")
	// ErrNoCgo: this binary was built with CGO_ENABLED=0, so it has no
	// CUDA (only a cgo build can dlopen the libraries).
	ErrNoCgo = errors.New("CUDA needs the cgo build: this esm2go was built with CGO_ENABLED=0; install a C compiler (e.g. gcc) and rebuild with CGO_ENABLED=1")
)
