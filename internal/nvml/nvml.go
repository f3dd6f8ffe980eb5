package nvml

import (
	"errors"
	"fmt"
)

// Return is an nvmlReturn_t (nvml.h).
type Return int32

// The nvmlReturn_t values this package and its callers tell apart.
const (
	Success              Return = 0  // NVML_SUCCESS
	ErrorUninitialized   Return = 1  // NVML_ERROR_UNINITIALIZED
	ErrorInvalidArgument Return = 2  // NVML_ERROR_INVALID_ARGUMENT
	ErrorNotSupported    Return = 3  // NVML_ERROR_NOT_SUPPORTED
	ErrorNotFound        Return = 6  // NVML_ERROR_NOT_FOUND
	ErrorInsufficient    Return = 7  // NVML_ERROR_INSUFFICIENT_SIZE
	ErrorDriverNotLoaded Return = 9  // NVML_ERROR_DRIVER_NOT_LOADED
	ErrorLibraryNotFound Return = 12 // NVML_ERROR_LIBRARY_NOT_FOUND
	ErrorFunctionMissing Return = 13 // NVML_ERROR_FUNCTION_NOT_FOUND
	ErrorGPUIsLost       Return = 15 // NVML_ERROR_GPU_IS_LOST
	ErrorUnknown         Return = 999
)

// SamplingType is an nvmlSamplingType_t.
type SamplingType int32

// GPUUtilizationSamples is NVML_GPU_UTILIZATION_SAMPLES: the percent of
// each sample period in which a kernel ran.
const GPUUtilizationSamples SamplingType = 1

// ValueType is an nvmlValueType_t: how a Sample's Value is encoded.
type ValueType int32

// The nvmlValueType_t values.
const (
	ValueDouble           ValueType = 0 // NVML_VALUE_TYPE_DOUBLE
	ValueUnsignedInt      ValueType = 1 // NVML_VALUE_TYPE_UNSIGNED_INT
	ValueUnsignedLong     ValueType = 2 // NVML_VALUE_TYPE_UNSIGNED_LONG
	ValueUnsignedLongLong ValueType = 3 // NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
	ValueSignedLongLong   ValueType = 4 // NVML_VALUE_TYPE_SIGNED_LONG_LONG
	ValueSignedInt        ValueType = 5 // NVML_VALUE_TYPE_SIGNED_INT
	ValueUnsignedShort    ValueType = 6 // NVML_VALUE_TYPE_UNSIGNED_SHORT
	ValueTypeCount        ValueType = 7 // NVML_VALUE_TYPE_COUNT: no type has this value or above
)

// Sample is an nvmlSample_t: NVML's timestamp (µs) and an nvmlValue_t
// union in host byte order, decoded by the sample's ValueType.
type Sample struct {
	TimeStamp uint64
	Value     [8]byte
}

// Utilization is an nvmlUtilization_t: percent of the last sample period
// in which a kernel ran (GPU) and device memory was read or written.
type Utilization struct {
	GPU    uint32
	Memory uint32
}

// Memory is an nvmlMemory_t, in bytes.
type Memory struct {
	Total uint64
	Free  uint64
	Used  uint64
}

// Error is a failed NVML call: the entry point, its nvmlReturn_t and NVML's
// description of it (nvmlErrorString), e.g.
// "nvmlDeviceGetSamples: Not Supported".
type Error struct {
	Call string
	Code Return
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Call, e.Msg) }

// Code returns the nvmlReturn_t of a failed call: Success for nil,
// ErrorUnknown for an error that is not an *Error.
func Code(err error) Return {
	if err == nil {
		return Success
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ErrorUnknown
}

// maxSamples caps the samples one Device.Samples call takes: NVML's sample
// buffer holds far fewer (a few seconds of samples at its sampling rate).
const maxSamples = 1 << 16
