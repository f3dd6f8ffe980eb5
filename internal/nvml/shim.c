//go:build cgo

// shim.c resolves the NVML entry points declared in shim.h with
// dlopen/dlsym and forwards calls to them. The function pointers below are
// the only global state; esmnvml_load writes them once (guarded by a
// sync.Once on the Go side) and they are read-only afterwards.
#include <dlfcn.h>
#include <stdio.h>
#include "shim.h"

_Static_assert(sizeof(esmnvml_utilization_t) == 8, "nvmlUtilization_t is two unsigned ints");
_Static_assert(sizeof(esmnvml_memory_t) == 24, "nvmlMemory_t is three unsigned long longs");
_Static_assert(sizeof(esmnvml_value_t) == 8, "nvmlValue_t is 8 bytes");
_Static_assert(sizeof(esmnvml_sample_t) == 16 && offsetof(esmnvml_sample_t, sampleValue) == 8,
	"nvmlSample_t is a timestamp and an nvmlValue_t");

typedef void* esmnvml_dev_t; // nvmlDevice_t

static esmnvml_return_t (*p_init)(void);
static esmnvml_return_t (*p_shutdown)(void);
static const char* (*p_error_string)(esmnvml_return_t);
static esmnvml_return_t (*p_device_count)(unsigned int*);
static esmnvml_return_t (*p_device_by_index)(unsigned int, esmnvml_dev_t*);
static esmnvml_return_t (*p_samples)(esmnvml_dev_t, int, unsigned long long, int*, unsigned int*, esmnvml_sample_t*);
static esmnvml_return_t (*p_utilization)(esmnvml_dev_t, esmnvml_utilization_t*);
static esmnvml_return_t (*p_memory)(esmnvml_dev_t, esmnvml_memory_t*);

// The _v2 entry points where NVML has one (drivers since 2011 export
// them), the original name otherwise.
static const struct {
	const char* sym;
	const char* alt;
	void** slot;
} symbols[] = {
	{ "nvmlInit_v2", "nvmlInit", (void**)&p_init },
	{ "nvmlShutdown", NULL, (void**)&p_shutdown },
	{ "nvmlErrorString", NULL, (void**)&p_error_string },
	{ "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount", (void**)&p_device_count },
	{ "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex", (void**)&p_device_by_index },
	{ "nvmlDeviceGetSamples", NULL, (void**)&p_samples },
	{ "nvmlDeviceGetUtilizationRates", NULL, (void**)&p_utilization },
	{ "nvmlDeviceGetMemoryInfo", NULL, (void**)&p_memory },
};

int esmnvml_load(const char* path, char* err, size_t errlen) {
	void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char* e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
		return 1;
	}
	for (size_t i = 0; i < sizeof(symbols) / sizeof(symbols[0]); i++) {
		void* f = dlsym(h, symbols[i].sym);
		if (!f && symbols[i].alt) f = dlsym(h, symbols[i].alt);
		if (!f) {
			snprintf(err, errlen, "%s has no %s (an NVIDIA driver older than esm2go supports)", path, symbols[i].sym);
			for (size_t j = 0; j < i; j++) *symbols[j].slot = NULL;
			dlclose(h);
			return 2;
		}
		*symbols[i].slot = f;
	}
	return 0;
}

esmnvml_return_t esmnvml_init(void) { return p_init(); }
esmnvml_return_t esmnvml_shutdown(void) { return p_shutdown(); }
const char* esmnvml_error_string(esmnvml_return_t r) { return p_error_string(r); }
esmnvml_return_t esmnvml_device_count(unsigned int* n) { return p_device_count(n); }

esmnvml_return_t esmnvml_device_by_index(unsigned int i, uintptr_t* dev) {
	esmnvml_dev_t d = NULL;
	esmnvml_return_t r = p_device_by_index(i, &d);
	*dev = (uintptr_t)d;
	return r;
}

esmnvml_return_t esmnvml_samples(uintptr_t dev, int type, unsigned long long since,
	int* valueType, unsigned int* count, esmnvml_sample_t* samples) {
	return p_samples((esmnvml_dev_t)dev, type, since, valueType, count, samples);
}

esmnvml_return_t esmnvml_utilization(uintptr_t dev, esmnvml_utilization_t* u) {
	return p_utilization((esmnvml_dev_t)dev, u);
}

esmnvml_return_t esmnvml_memory(uintptr_t dev, esmnvml_memory_t* m) {
	return p_memory((esmnvml_dev_t)dev, m);
}
