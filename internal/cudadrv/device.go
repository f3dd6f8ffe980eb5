//go:build cgo

package cudadrv

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// CUdevice_attribute values used here (cuda.h).
const (
	attrMaxThreadsPerBlock           = 1
	attrMaxSharedMemoryPerBlock      = 8
	attrMultiprocessorCount          = 16
	attrL2CacheSize                  = 38
	attrComputeCapabilityMajor       = 75
	attrComputeCapabilityMinor       = 76
	attrMaxSharedMemoryPerBlockOptin = 97
)

// DeviceInfo describes one GPU. Free memory needs a context: see
// Context.MemInfo.
type DeviceInfo struct {
	Ordinal             int
	Name                string // e.g. "NVIDIA H100 80GB HBM3"
	Major, Minor        int    // compute capability, e.g. 9, 0
	SMs                 int    // multiprocessor count
	TotalMem            uint64 // bytes
	SharedPerBlock      int    // bytes a block gets without opting in (48 KiB)
	SharedPerBlockOptin int    // bytes a block may get after SetMaxDynamicSharedMemory
	L2Bytes             int    //
	MaxThreadsPerBlock  int    //
}

// Arch is the NVRTC architecture name, e.g. "sm_90".
func (d DeviceInfo) Arch() string { return fmt.Sprintf("sm_%d%d", d.Major, d.Minor) }

// DeviceCount returns the number of CUDA devices.
func (l *Lib) DeviceCount() (int, error) {
	var n C.int
	if r := C.esm_cuDeviceGetCount(&n); r != 0 {
		return 0, cuErr("cuDeviceGetCount", "", r)
	}
	return int(n), nil
}

// Device returns the properties of device ordinal.
func (l *Lib) Device(ordinal int) (DeviceInfo, error) {
	info := DeviceInfo{Ordinal: ordinal}
	var d C.CUdevice
	if r := C.esm_cuDeviceGet(&d, C.int(ordinal)); r != 0 {
		return info, cuErr("cuDeviceGet", fmt.Sprint(ordinal), r)
	}
	var name [256]C.char
	if r := C.esm_cuDeviceGetName(&name[0], 256, d); r != 0 {
		return info, cuErr("cuDeviceGetName", fmt.Sprint(ordinal), r)
	}
	info.Name = C.GoString((*C.char)(unsafe.Pointer(&name[0])))
	var total C.size_t
	if r := C.esm_cuDeviceTotalMem(&total, d); r != 0 {
		return info, cuErr("cuDeviceTotalMem_v2", fmt.Sprint(ordinal), r)
	}
	info.TotalMem = uint64(total)
	for _, a := range []struct {
		attr int
		dst  *int
	}{
		{attrComputeCapabilityMajor, &info.Major},
		{attrComputeCapabilityMinor, &info.Minor},
		{attrMultiprocessorCount, &info.SMs},
		{attrMaxSharedMemoryPerBlock, &info.SharedPerBlock},
		{attrMaxSharedMemoryPerBlockOptin, &info.SharedPerBlockOptin},
		{attrL2CacheSize, &info.L2Bytes},
		{attrMaxThreadsPerBlock, &info.MaxThreadsPerBlock},
	} {
		var v C.int
		if r := C.esm_cuDeviceGetAttribute(&v, C.int(a.attr), d); r != 0 {
			return info, cuErr("cuDeviceGetAttribute", fmt.Sprintf("attr %d, device %d", a.attr, ordinal), r)
		}
		*a.dst = int(v)
	}
	return info, nil
}
