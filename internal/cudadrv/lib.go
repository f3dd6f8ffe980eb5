//go:build cgo

package cudadrv

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"
)

// Lib is the loaded set of CUDA libraries. It is immutable and safe to share.
type Lib struct {
	DriverVersion int    // e.g. 13000 for CUDA 13.0
	NVRTCMajor    int    // NVRTC version, e.g. 13
	NVRTCMinor    int    //
	CUDAPath      string // path of libcuda that was loaded
	NVRTCPath     string // soname or path of NVRTC that was loaded
	CublasPath    string // soname or path of cuBLAS that was loaded
	CublasLtPath  string // soname or path of cuBLASLt that was loaded
}

var (
	loadOnce sync.Once
	loadLib  *Lib
	loadErr  error
)

// Load dlopens the CUDA driver, NVRTC, cuBLASLt and cuBLAS and calls cuInit.
// The first call does the work; later calls return the same result. Errors
// wrap ErrNoDriver (libcuda.so.1 missing), ErrNoDevice (cuInit failed or no
// GPU), or ErrMissingLibrary (naming every soname and path that was tried).
func Load() (*Lib, error) {
	loadOnce.Do(func() { loadLib, loadErr = load() })
	return loadLib, loadErr
}

func libDirs() []string {
	var dirs []string
	for _, env := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if v := os.Getenv(env); v != "" {
			dirs = append(dirs, filepath.Join(v, "lib64"), filepath.Join(v, "lib"))
		}
	}
	dirs = append(dirs, "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
		"/usr/local/cuda/targets/sbsa-linux/lib")
	return dirs
}

// openFirst tries each soname through the dynamic loader's search path and
// then under each CUDA library directory; it returns what was loaded.
func openFirst(slot C.int, what string, sonames ...string) (string, error) {
	var tried []string
	errbuf := (*C.char)(C.malloc(512))
	defer C.free(unsafe.Pointer(errbuf))
	try := func(path string) bool {
		cpath := C.CString(path)
		defer C.free(unsafe.Pointer(cpath))
		if C.esm_load(slot, cpath, errbuf, 512) == 0 {
			return true
		}
		tried = append(tried, C.GoString(errbuf))
		return false
	}
	for _, so := range sonames {
		if try(so) {
			return so, nil
		}
	}
	for _, dir := range libDirs() {
		for _, so := range sonames {
			p := filepath.Join(dir, so)
			if _, err := os.Stat(p); err != nil {
				continue
			}
			if try(p) {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%s not loaded (tried %s; set CUDA_HOME or LD_LIBRARY_PATH): %w",
		what, strings.Join(sonames, ", "), errors.New(strings.Join(tried, "; ")))
}

func load() (*Lib, error) {
	l := &Lib{}
	var err error
	if l.CUDAPath, err = openFirst(C.ESM_LIB_CUDA, "CUDA driver", "libcuda.so.1"); err != nil {
		return nil, fmt.Errorf("%w: libcuda.so.1 not found (%v)", ErrNoDriver, errors.Unwrap(err))
	}
	if r := C.esm_cuInit(0); r != 0 {
		return nil, fmt.Errorf("%w: %v", ErrNoDevice, cuErr("cuInit", "", r))
	}
	var v C.int
	if r := C.esm_cuDriverGetVersion(&v); r != 0 {
		return nil, cuErr("cuDriverGetVersion", "", r)
	}
	l.DriverVersion = int(v)
	var n C.int
	if r := C.esm_cuDeviceGetCount(&n); r != 0 || n == 0 {
		return nil, fmt.Errorf("%w: cuDeviceGetCount returned %d devices (%v)", ErrNoDevice, int(n), cuErr("cuDeviceGetCount", "", r))
	}
	if l.NVRTCPath, err = openFirst(C.ESM_LIB_NVRTC, "NVRTC", "libnvrtc.so.13", "libnvrtc.so.12"); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMissingLibrary, err)
	}
	var maj, min C.int
	if r := C.esm_nvrtcVersion(&maj, &min); r != 0 {
		return nil, nvrtcErr("nvrtcVersion", r, "")
	}
	l.NVRTCMajor, l.NVRTCMinor = int(maj), int(min)
	// cuBLASLt first: libcublas needs it, and an already loaded library
	// satisfies that dependency by soname even when found by full path.
	if l.CublasLtPath, err = openFirst(C.ESM_LIB_CUBLASLT, "cuBLASLt", "libcublasLt.so.13", "libcublasLt.so.12"); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMissingLibrary, err)
	}
	if l.CublasPath, err = openFirst(C.ESM_LIB_CUBLAS, "cuBLAS", "libcublas.so.13", "libcublas.so.12"); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMissingLibrary, err)
	}
	return l, nil
}
