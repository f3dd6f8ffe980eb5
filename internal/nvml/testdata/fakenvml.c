// fakenvml.c is a stand-in libnvidia-ml.so.1 for fake_test.go: two devices
// with fixed figures, laid out as nvml.h declares them (written from
// nvml.h, not from shim.h). Built with -DOLD_DRIVER it lacks
// nvmlDeviceGetSamples, as a driver too old for package nvml would.
#include <stddef.h>
#include <string.h>

typedef enum { OK = 0, INVALID_ARGUMENT = 2, NOT_SUPPORTED = 3, NOT_FOUND = 6, INSUFFICIENT_SIZE = 7 } nvmlReturn_t;
typedef struct nvmlDevice_st { int index; } *nvmlDevice_t;
typedef struct { unsigned int gpu; unsigned int memory; } nvmlUtilization_t;
typedef struct { unsigned long long total; unsigned long long free; unsigned long long used; } nvmlMemory_t;
typedef union {
	double dVal; int siVal; unsigned int uiVal; unsigned long ulVal;
	unsigned long long ullVal; signed long long sllVal; unsigned short usVal;
} nvmlValue_t;
typedef struct { unsigned long long timeStamp; nvmlValue_t sampleValue; } nvmlSample_t;
typedef enum { NVML_VALUE_TYPE_UNSIGNED_INT = 1 } nvmlValueType_t;
typedef enum { NVML_GPU_UTILIZATION_SAMPLES = 1 } nvmlSamplingType_t;

static struct nvmlDevice_st devices[2] = { { 0 }, { 1 } };
static int inits;

nvmlReturn_t nvmlInit_v2(void) { inits++; return OK; }
nvmlReturn_t nvmlShutdown(void) { return inits-- > 0 ? OK : 1; }

const char* nvmlErrorString(nvmlReturn_t r) {
	switch (r) {
	case OK: return "Success";
	case INVALID_ARGUMENT: return "Invalid Argument";
	case NOT_SUPPORTED: return "Not Supported";
	case NOT_FOUND: return "Not Found";
	case INSUFFICIENT_SIZE: return "Insufficient Size";
	default: return "Unknown Error";
	}
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* n) { *n = 2; return OK; }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t* d) {
	if (i >= 2 || !d) return INVALID_ARGUMENT;
	*d = &devices[i];
	return OK;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t* u) {
	if (!d) return INVALID_ARGUMENT;
	u->gpu = 42 + d->index;
	u->memory = 17;
	return OK;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t* m) {
	if (!d) return INVALID_ARGUMENT;
	m->total = 80ULL << 30;
	m->free = 30ULL << 30;
	m->used = (50ULL << 30) + (unsigned long long)d->index;
	return OK;
}

#ifndef OLD_DRIVER
// Device 0 holds samples at 10, 20 and 30 µs (70%, 80%, 90%); device 1
// has no sample buffer.
nvmlReturn_t nvmlDeviceGetSamples(nvmlDevice_t d, nvmlSamplingType_t t, unsigned long long since,
	nvmlValueType_t* vt, unsigned int* count, nvmlSample_t* out) {
	if (!d || t != NVML_GPU_UTILIZATION_SAMPLES || !vt || !count) return INVALID_ARGUMENT;
	if (d->index == 1) return NOT_SUPPORTED;
	unsigned int n = 0;
	nvmlSample_t s[3];
	for (unsigned int i = 0; i < 3; i++) {
		unsigned long long ts = 10 * (i + 1);
		if (ts <= since) continue;
		memset(&s[n], 0, sizeof s[n]);
		s[n].timeStamp = ts;
		s[n].sampleValue.uiVal = 70 + 10 * i;
		n++;
	}
	*vt = NVML_VALUE_TYPE_UNSIGNED_INT;
	if (n == 0) return NOT_FOUND;
	if (!out) { *count = n; return OK; }
	if (*count < n) return INSUFFICIENT_SIZE;
	memcpy(out, s, n * sizeof s[0]);
	*count = n;
	return OK;
}
#endif
