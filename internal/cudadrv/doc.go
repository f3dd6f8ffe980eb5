// Package cudadrv binds the CUDA driver, NVRTC, cuBLAS and cuBLASLt through
// dlopen, so esm2go builds and runs (on the CPU) where no CUDA is installed.
// It is the layer the CUDA backend (esm/cuda) drives the GPU through, named
// apart from that package so that neither has to be renamed on import; it is
// the only cgo package on the CUDA path, and nothing but esm/cuda (and tests)
// may import it.
// It offers what the ESM2 CUDA backend needs and nothing more: a Context owned
// by one goroutine, streams and events, a caching device allocator, pinned
// host memory, NVRTC compilation with an on-disk CUBIN cache, kernel launch,
// and row-major GEMM wrappers over cublasGemmEx and cublasLtMatmul.
//
// Loading. Load dlopens libcuda.so.1, then the first of libnvrtc.so.13/.12,
// libcublasLt.so.13/.12 and libcublas.so.13/.12 (by soname, then under
// $CUDA_HOME/lib64, $CUDA_PATH/lib64 and /usr/local/cuda/lib64). No CUDA header
// or library is needed at build time: shim.h declares the few types used.
// The loaded library is kept in a sync.Once-guarded value (a process can
// dlopen a library only once in any useful sense); that and the dlsym
// function pointers in shim.c are the only package-level state. Nothing
// happens at init time.
//
// Threads. CUDA binds a context to an OS thread. NewContext locks the calling
// goroutine to its thread (runtime.LockOSThread), makes the device's primary
// context current there, and records the thread id; every method of Context,
// Stream, Event, Buffer, HostBuffer and Module checks it and returns
// ErrWrongGoroutine when called from another goroutine. This is the Go form of
// the design rule "reader workers must never touch CUDA": one goroutine owns
// the GPU, others hand it work through channels. Use one Context per owning
// goroutine (one per GPU). Close releases everything and unlocks the thread.
//
// Layouts. The GEMM helpers take row-major matrices, as the model stores
// them, and translate to cuBLAS's column-major convention; see Gemm and
// Linear.
package cudadrv
