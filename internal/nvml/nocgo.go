//go:build !cgo

package nvml

import "errors"

// ErrNoCgo is why a build without cgo (CGO_ENABLED=0) reads no NVML: it
// has no dlopen.
var ErrNoCgo = errors.New("NVML needs the cgo build: this esm2go was built with CGO_ENABLED=0, so it has no GPU utilization or memory figures; install a C compiler (e.g. gcc) and rebuild with CGO_ENABLED=1")

// Device stands for an NVML device; without cgo there is none.
type Device struct{}

// Init returns ErrNoCgo.
func Init() error { return ErrNoCgo }

// Shutdown returns ErrNoCgo.
func Shutdown() error { return ErrNoCgo }

// DeviceCount returns ErrNoCgo.
func DeviceCount() (int, error) { return 0, ErrNoCgo }

// DeviceByIndex returns ErrNoCgo.
func DeviceByIndex(int) (Device, error) { return Device{}, ErrNoCgo }

// Samples returns ErrNoCgo.
func (Device) Samples(SamplingType, uint64) (ValueType, []Sample, error) { return 0, nil, ErrNoCgo }

// UtilizationRates returns ErrNoCgo.
func (Device) UtilizationRates() (Utilization, error) { return Utilization{}, ErrNoCgo }

// MemoryInfo returns ErrNoCgo.
func (Device) MemoryInfo() (Memory, error) { return Memory{}, ErrNoCgo }
