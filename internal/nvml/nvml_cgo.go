//go:build cgo

package nvml

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// soname is the NVML library the NVIDIA driver installs.
const soname = "libnvidia-ml.so.1"

var (
	loadOnce sync.Once
	loadErr  error
)

// load dlopens libnvidia-ml.so.1 and resolves its entry points; the first
// call does the work, later calls return the same result. Its error has
// Code ErrorLibraryNotFound (no NVIDIA driver) or ErrorFunctionMissing (a
// driver without an entry point this package calls).
func load() error {
	loadOnce.Do(func() {
		const n = 512
		errbuf := (*C.char)(C.malloc(n))
		defer C.free(unsafe.Pointer(errbuf))
		cpath := C.CString(soname)
		defer C.free(unsafe.Pointer(cpath))
		switch C.esmnvml_load(cpath, errbuf, n) {
		case 0:
		case 1:
			loadErr = &Error{Call: "dlopen", Code: ErrorLibraryNotFound, Msg: C.GoString(errbuf)}
		default:
			loadErr = &Error{Call: "dlsym", Code: ErrorFunctionMissing, Msg: C.GoString(errbuf)}
		}
	})
	return loadErr
}

// check turns an nvmlReturn_t into an *Error (nil for NVML_SUCCESS).
func check(call string, r C.esmnvml_return_t) error {
	if r == 0 {
		return nil
	}
	msg := "unknown error"
	if s := C.esmnvml_error_string(r); s != nil {
		msg = C.GoString(s)
	}
	return &Error{Call: call, Code: Return(r), Msg: msg}
}

// Init loads libnvidia-ml.so.1 and calls nvmlInit_v2. Each successful Init
// is paired with a Shutdown (NVML counts them). Where the library is
// missing, the error's Code is ErrorLibraryNotFound.
func Init() error {
	if err := load(); err != nil {
		return err
	}
	return check("nvmlInit_v2", C.esmnvml_init())
}

// Shutdown calls nvmlShutdown. The library stays loaded for the process's
// life, so that a later Init is cheap.
func Shutdown() error {
	if err := load(); err != nil {
		return err
	}
	return check("nvmlShutdown", C.esmnvml_shutdown())
}

// DeviceCount returns the number of devices NVML sees (nvmlDeviceGetCount_v2).
func DeviceCount() (int, error) {
	if err := load(); err != nil {
		return 0, err
	}
	var n C.uint
	if err := check("nvmlDeviceGetCount_v2", C.esmnvml_device_count(&n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

// Device is an NVML device handle, valid between Init and Shutdown.
type Device struct {
	h C.uintptr_t // nvmlDevice_t
}

// DeviceByIndex returns device i, in NVML's order
// (nvmlDeviceGetHandleByIndex_v2).
func DeviceByIndex(i int) (Device, error) {
	if err := load(); err != nil {
		return Device{}, err
	}
	if i < 0 || i > 1<<16 {
		return Device{}, &Error{Call: "nvmlDeviceGetHandleByIndex_v2", Code: ErrorInvalidArgument, Msg: fmt.Sprintf("device index %d out of range", i)}
	}
	var d Device
	if err := check("nvmlDeviceGetHandleByIndex_v2", C.esmnvml_device_by_index(C.uint(i), &d.h)); err != nil {
		return Device{}, err
	}
	return d, nil
}

// Samples returns the samples of type typ that NVML holds with a timestamp
// after since (nvmlDeviceGetSamples), in NVML's order, and how their
// values are encoded. With none it returns an error of Code ErrorNotFound
// or an empty slice, as NVML answers.
func (d Device) Samples(typ SamplingType, since uint64) (ValueType, []Sample, error) {
	const call = "nvmlDeviceGetSamples"
	if err := load(); err != nil {
		return 0, nil, err
	}
	var vt C.int
	var n C.uint
	if err := check(call, C.esmnvml_samples(d.h, C.int(typ), C.ulonglong(since), &vt, &n, nil)); err != nil {
		return ValueType(vt), nil, err
	}
	if n == 0 {
		return ValueType(vt), []Sample{}, nil
	}
	if n > maxSamples {
		return ValueType(vt), nil, &Error{Call: call, Code: ErrorUnknown,
			Msg: fmt.Sprintf("NVML reports %d samples, more than the %d expected", uint(n), maxSamples)}
	}
	buf := make([]C.esmnvml_sample_t, n)
	if err := check(call, C.esmnvml_samples(d.h, C.int(typ), C.ulonglong(since), &vt, &n, &buf[0])); err != nil {
		return ValueType(vt), nil, err
	}
	out := make([]Sample, min(int(n), len(buf)))
	for i := range out {
		out[i] = Sample{TimeStamp: uint64(buf[i].timeStamp), Value: buf[i].sampleValue}
	}
	return ValueType(vt), out, nil
}

// UtilizationRates returns the device's utilization over NVML's last
// sample period (nvmlDeviceGetUtilizationRates).
func (d Device) UtilizationRates() (Utilization, error) {
	if err := load(); err != nil {
		return Utilization{}, err
	}
	var u C.esmnvml_utilization_t
	if err := check("nvmlDeviceGetUtilizationRates", C.esmnvml_utilization(d.h, &u)); err != nil {
		return Utilization{}, err
	}
	return Utilization{GPU: uint32(u.gpu), Memory: uint32(u.memory)}, nil
}

// MemoryInfo returns the device's memory, total, free and in use
// (nvmlDeviceGetMemoryInfo).
func (d Device) MemoryInfo() (Memory, error) {
	if err := load(); err != nil {
		return Memory{}, err
	}
	var m C.esmnvml_memory_t
	if err := check("nvmlDeviceGetMemoryInfo", C.esmnvml_memory(d.h, &m)); err != nil {
		return Memory{}, err
	}
	return Memory{Total: uint64(m.total), Free: uint64(m.free), Used: uint64(m.used)}, nil
}
