//go:build cgo

package cudadrv

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unsafe"
)

// Module is a loaded CUBIN. Kernels must be declared extern "C" so that
// Function finds them by their source name.
type Module struct {
	Name     string // the name given to Compile
	Key      string // compile-cache key (hex sha256)
	CacheHit bool   // the CUBIN came from the disk cache, NVRTC did not run
	mod      C.CUmodule
	c        *Context
	fns      map[string]*Function
}

// Function is a kernel of a Module.
type Function struct {
	Name string
	f    C.CUfunction
	c    *Context
}

// CUDAIncludeDir returns the first directory holding cuda_fp16.h among
// $CUDA_HOME/include, $CUDA_PATH/include, /usr/local/cuda/include,
// /usr/local/cuda-13*/include and /usr/local/cuda-12*/include, or "".
func CUDAIncludeDir() string {
	var dirs []string
	for _, env := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if v := os.Getenv(env); v != "" {
			dirs = append(dirs, filepath.Join(v, "include"))
		}
	}
	dirs = append(dirs, "/usr/local/cuda/include")
	for _, pat := range []string{"/usr/local/cuda-13*/include", "/usr/local/cuda-12*/include"} {
		m, _ := filepath.Glob(pat)
		for i := len(m) - 1; i >= 0; i-- { // newest first
			dirs = append(dirs, m[i])
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "cuda_fp16.h")); err == nil {
			return d
		}
	}
	return ""
}

func defaultKernelCacheDir() string {
	if v := os.Getenv("ESM2GO_KERNEL_CACHE"); v != "" {
		return v
	}
	if d, err := os.UserCacheDir(); err == nil { // $XDG_CACHE_HOME or ~/.cache
		return filepath.Join(d, "esm2go", "kernels")
	}
	return ""
}

// Compile compiles CUDA C++ source with NVRTC for this device's exact
// architecture and loads it. name is the program name used in NVRTC
// messages (e.g. "layernorm.cu"). The options are always
// --gpu-architecture=sm_XX (unless opts names another), -I<CUDA include dir>
// when found (CUDAIncludeDir), -std=c++17 and -default-device, followed by
// opts; --use_fast_math is not set, since ESM needs the exact erf.
//
// The CUBIN is cached in memory per Context and on disk in KernelCacheDir,
// keyed by sha256 of (source, name, options, arch, NVRTC version). On a
// compile error the returned *Error carries the NVRTC log.
func (c *Context) Compile(src, name string, opts ...string) (*Module, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	arch := c.Device.Arch()
	inc := CUDAIncludeDir()
	var all []string
	hasArch := false
	for _, o := range opts {
		if strings.HasPrefix(o, "--gpu-architecture") || strings.HasPrefix(o, "-arch") {
			hasArch = true
		}
	}
	if !hasArch {
		all = append(all, "--gpu-architecture="+arch)
	}
	if inc != "" {
		all = append(all, "-I"+inc)
	}
	all = append(all, "-std=c++17", "-default-device")
	all = append(all, opts...)

	h := sha256.New()
	for _, part := range append([]string{src, name, arch, fmt.Sprintf("nvrtc %d.%d", c.lib.NVRTCMajor, c.lib.NVRTCMinor)}, all...) {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write([]byte(part))
	}
	key := hex.EncodeToString(h.Sum(nil))
	if m := c.mods[key]; m != nil {
		return m, nil
	}

	var path string
	if c.KernelCacheDir != "" {
		path = filepath.Join(c.KernelCacheDir, key+".cubin")
		if cubin, err := os.ReadFile(path); err == nil && len(cubin) > 0 {
			if m, err := c.loadModule(cubin, name, key); err == nil {
				m.CacheHit = true
				return m, nil
			}
			// A stale or corrupt file: compile again and overwrite it.
		}
	}
	cubin, err := nvrtcCompile(src, name, all)
	if err != nil {
		if inc == "" {
			err = fmt.Errorf("%w\n(no CUDA include directory with cuda_fp16.h was found under $CUDA_HOME/include, "+
				"$CUDA_PATH/include, /usr/local/cuda/include, /usr/local/cuda-13*/include or /usr/local/cuda-12*/include; "+
				"set CUDA_HOME to the CUDA toolkit root)", err)
		}
		return nil, fmt.Errorf("cuda: compile %s for %s: %w", name, arch, err)
	}
	if path != "" {
		// The disk cache is an optimisation: failing to write it is not an error.
		if os.MkdirAll(c.KernelCacheDir, 0o755) == nil {
			tmp, err := os.CreateTemp(c.KernelCacheDir, key+".*.tmp")
			if err == nil {
				_, werr := tmp.Write(cubin)
				cerr := tmp.Close()
				if werr == nil && cerr == nil {
					os.Rename(tmp.Name(), path)
				} else {
					os.Remove(tmp.Name())
				}
			}
		}
	}
	return c.loadModule(cubin, name, key)
}

func nvrtcCompile(src, name string, opts []string) ([]byte, error) {
	csrc, cname := C.CString(src), C.CString(name)
	defer C.free(unsafe.Pointer(csrc))
	defer C.free(unsafe.Pointer(cname))
	var prog C.nvrtcProgram
	if r := C.esm_nvrtcCreateProgram(&prog, csrc, cname, 0, nil, nil); r != 0 {
		return nil, nvrtcErr("nvrtcCreateProgram", r, "")
	}
	defer C.esm_nvrtcDestroyProgram(&prog)
	// The option array lives in C memory (it holds pointers).
	copts := unsafe.Slice((**C.char)(C.malloc(C.size_t(len(opts)+1)*C.size_t(unsafe.Sizeof(uintptr(0))))), len(opts)+1)
	for i, o := range opts {
		copts[i] = C.CString(o)
	}
	defer func() {
		for i := range opts {
			C.free(unsafe.Pointer(copts[i]))
		}
		C.free(unsafe.Pointer(&copts[0]))
	}()
	r := C.esm_nvrtcCompileProgram(prog, C.int(len(opts)), &copts[0])
	log := ""
	var n C.size_t
	if C.esm_nvrtcGetProgramLogSize(prog, &n) == 0 && n > 1 {
		buf := (*C.char)(C.malloc(n))
		if C.esm_nvrtcGetProgramLog(prog, buf) == 0 {
			log = strings.TrimSpace(C.GoString(buf))
		}
		C.free(unsafe.Pointer(buf))
	}
	if r != 0 {
		return nil, nvrtcErr("nvrtcCompileProgram", r, log)
	}
	if r := C.esm_nvrtcGetCUBINSize(prog, &n); r != 0 {
		return nil, nvrtcErr("nvrtcGetCUBINSize", r, "")
	}
	if n == 0 {
		return nil, fmt.Errorf("nvrtcGetCUBINSize: empty CUBIN (was a virtual compute_XX architecture given?)")
	}
	buf := C.malloc(n)
	defer C.free(buf)
	if r := C.esm_nvrtcGetCUBIN(prog, (*C.char)(buf)); r != 0 {
		return nil, nvrtcErr("nvrtcGetCUBIN", r, "")
	}
	return C.GoBytes(buf, C.int(n)), nil
}

func (c *Context) loadModule(cubin []byte, name, key string) (*Module, error) {
	img := C.CBytes(cubin)
	defer C.free(img)
	m := &Module{Name: name, Key: key, c: c, fns: map[string]*Function{}}
	if r := C.esm_cuModuleLoadData(&m.mod, img); r != 0 {
		return nil, cuErr("cuModuleLoadData", name, r)
	}
	c.mods[key] = m
	return m, nil
}

// Function returns the kernel called name (an extern "C" name).
func (m *Module) Function(name string) (*Function, error) {
	if err := m.c.check(); err != nil {
		return nil, err
	}
	if f := m.fns[name]; f != nil {
		return f, nil
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	f := &Function{Name: name, c: m.c}
	if r := C.esm_cuModuleGetFunction(&f.f, m.mod, cname); r != 0 {
		return nil, cuErr("cuModuleGetFunction", m.Name+": "+name, r)
	}
	m.fns[name] = f
	return f, nil
}

// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
const funcAttrMaxDynamicShared = 8

// SetMaxDynamicSharedMemory lets launches of f use up to bytes of dynamic
// shared memory (needed above 48 KiB). It fails with a clear message when
// bytes exceeds the device's opt-in limit.
func (f *Function) SetMaxDynamicSharedMemory(bytes int) error {
	if err := f.c.check(); err != nil {
		return err
	}
	if lim := f.c.Device.SharedPerBlockOptin; bytes > lim {
		return fmt.Errorf("cuda: %s: %d bytes of dynamic shared memory exceed the device limit of %d", f.Name, bytes, lim)
	}
	r := C.esm_cuFuncSetAttribute(f.f, funcAttrMaxDynamicShared, C.int(bytes))
	return cuErr("cuFuncSetAttribute", fmt.Sprintf("%s, MAX_DYNAMIC_SHARED_SIZE_BYTES=%d", f.Name, bytes), r)
}

// Launch queues f on s with the given grid and block dimensions and dynamic
// shared memory. Each argument must be a DevicePtr, *Buffer (its Ptr),
// int32, uint32, float32, int64 or uint64, in the kernel's parameter order
// (Go int is refused: say int32 or int64). The values are packed into 8-byte
// slots in memory without Go pointers and cuLaunchKernel copies them, so
// nothing is retained after the call.
func (c *Context) Launch(f *Function, grid, block [3]uint32, sharedBytes int, s *Stream, args ...any) error {
	if err := c.check(); err != nil {
		return err
	}
	if len(args) > 64 {
		return fmt.Errorf("cuda: launch %s: %d arguments, at most 64", f.Name, len(args))
	}
	buf := make([]byte, 8*max(len(args), 1))
	for i, a := range args {
		slot := buf[8*i : 8*i+8]
		switch v := a.(type) {
		case DevicePtr:
			binary.LittleEndian.PutUint64(slot, uint64(v))
		case *Buffer:
			binary.LittleEndian.PutUint64(slot, uint64(v.Ptr))
		case int32:
			binary.LittleEndian.PutUint32(slot, uint32(v))
		case uint32:
			binary.LittleEndian.PutUint32(slot, v)
		case float32:
			binary.LittleEndian.PutUint32(slot, math.Float32bits(v))
		case int64:
			binary.LittleEndian.PutUint64(slot, uint64(v))
		case uint64:
			binary.LittleEndian.PutUint64(slot, v)
		default:
			return fmt.Errorf("cuda: launch %s: argument %d has type %T (want DevicePtr, *Buffer, int32, uint32, float32, int64 or uint64)", f.Name, i, a)
		}
	}
	r := C.esm_launch(f.f, C.uint(grid[0]), C.uint(grid[1]), C.uint(grid[2]),
		C.uint(block[0]), C.uint(block[1]), C.uint(block[2]), C.uint(sharedBytes), s.handle(),
		unsafe.Pointer(&buf[0]), C.int(len(args)))
	return cuErr("cuLaunchKernel", fmt.Sprintf("%s, grid %v, block %v, shared %d", f.Name, grid, block, sharedBytes), r)
}
