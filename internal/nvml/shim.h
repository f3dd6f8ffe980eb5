// shim.h declares the few NVML types and entry points that package nvml
// calls. No NVIDIA header is included: the types are declared here as NVML
// lays them out (nvml.h; the ABI of these structs has not changed since
// NVML's first releases), enums as int, and a device handle
// (nvmlDevice_t, an opaque pointer) travels as uintptr_t so that Go never
// holds a C pointer. Every esmnvml_* function calls through a pointer that
// esmnvml_load resolved with dlsym (shim.c). The esmnvml_ prefix keeps
// these C symbols apart from internal/cudadrv's esm_ ones in one binary.
#ifndef ESM2GO_NVML_SHIM_H
#define ESM2GO_NVML_SHIM_H

#include <stddef.h>
#include <stdint.h>

typedef int esmnvml_return_t; // nvmlReturn_t

// nvmlUtilization_t
typedef struct {
	unsigned int gpu;
	unsigned int memory;
} esmnvml_utilization_t;

// nvmlMemory_t (the v1 struct of nvmlDeviceGetMemoryInfo)
typedef struct {
	unsigned long long total;
	unsigned long long free;
	unsigned long long used;
} esmnvml_memory_t;

// nvmlValue_t
typedef union {
	double dVal;
	int siVal;
	unsigned int uiVal;
	unsigned long ulVal;
	unsigned long long ullVal;
	signed long long sllVal;
	unsigned short usVal;
} esmnvml_value_t;

// nvmlSample_t
typedef struct {
	unsigned long long timeStamp;
	esmnvml_value_t sampleValue;
} esmnvml_sample_t;

// esmnvml_load dlopens path and resolves the entry points below. It returns
// 0 on success, 1 when dlopen failed and 2 when a symbol is missing; then
// it writes a message to err.
int esmnvml_load(const char* path, char* err, size_t errlen);

esmnvml_return_t esmnvml_init(void);     // nvmlInit_v2
esmnvml_return_t esmnvml_shutdown(void); // nvmlShutdown
const char* esmnvml_error_string(esmnvml_return_t r); // nvmlErrorString
esmnvml_return_t esmnvml_device_count(unsigned int* n); // nvmlDeviceGetCount_v2
esmnvml_return_t esmnvml_device_by_index(unsigned int i, uintptr_t* dev); // nvmlDeviceGetHandleByIndex_v2
// nvmlDeviceGetSamples; samples NULL asks for the count.
esmnvml_return_t esmnvml_samples(uintptr_t dev, int type, unsigned long long since,
	int* valueType, unsigned int* count, esmnvml_sample_t* samples);
esmnvml_return_t esmnvml_utilization(uintptr_t dev, esmnvml_utilization_t* u); // nvmlDeviceGetUtilizationRates
esmnvml_return_t esmnvml_memory(uintptr_t dev, esmnvml_memory_t* m); // nvmlDeviceGetMemoryInfo

#endif
