//go:build cgo

package cudadrv

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
)

// Error is a failed CUDA, NVRTC or cuBLAS call. Its message names the call,
// its arguments and the library's error name and string, e.g.
// "cuMemAlloc_v2(1073741824 bytes): CUDA_ERROR_OUT_OF_MEMORY: out of memory".
type Error struct {
	Call string // entry point, e.g. "cuMemAlloc_v2"
	Args string // short description of the arguments, may be empty
	Code int    // CUresult, nvrtcResult or cublasStatus_t
	Name string // e.g. CUDA_ERROR_OUT_OF_MEMORY
	Msg  string // the library's description
	Log  string // NVRTC compile log, if any
	oom  bool
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s(%s): %s: %s", e.Call, e.Args, e.Name, e.Msg)
	if e.Log != "" {
		s += "\n" + e.Log
	}
	return s
}

// Is reports ErrOutOfMemory for CUDA_ERROR_OUT_OF_MEMORY and
// CUBLAS_STATUS_ALLOC_FAILED.
func (e *Error) Is(target error) bool { return target == ErrOutOfMemory && e.oom }

const (
	cudaErrorOutOfMemory     = 2
	cublasStatusAllocFailed  = 3
	cudaErrorInvalidValueNum = 1
)

func cuErr(call, args string, r C.CUresult) error {
	if r == 0 {
		return nil
	}
	e := &Error{Call: call, Args: args, Code: int(r), oom: r == cudaErrorOutOfMemory}
	var s *C.char
	if C.esm_cuGetErrorName(r, &s) == 0 && s != nil {
		e.Name = C.GoString(s)
	} else {
		e.Name = fmt.Sprintf("CUresult %d", int(r))
	}
	if C.esm_cuGetErrorString(r, &s) == 0 && s != nil {
		e.Msg = C.GoString(s)
	} else {
		e.Msg = "unknown error"
	}
	return e
}

func nvrtcErr(call string, r C.nvrtcResult, log string) error {
	if r == 0 {
		return nil
	}
	msg := C.GoString(C.esm_nvrtcGetErrorString(r))
	return &Error{Call: call, Code: int(r), Name: msg, Msg: fmt.Sprintf("nvrtcResult %d", int(r)), Log: log}
}

func blasErr(call, args string, r C.cublasStatus_t) error {
	if r == 0 {
		return nil
	}
	return &Error{Call: call, Args: args, Code: int(r),
		Name: C.GoString(C.esm_cublasGetStatusName(r)),
		Msg:  C.GoString(C.esm_cublasGetStatusString(r)),
		oom:  r == cublasStatusAllocFailed}
}
