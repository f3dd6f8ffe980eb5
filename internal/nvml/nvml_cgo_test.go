//go:build cgo

package nvml

import (
	"errors"
	"strings"
	"testing"
)

// TestDevice0 reads device 0 through the real libnvidia-ml.so.1. Where
// the library is missing (no NVIDIA driver) it checks that Init says so
// and skips; where the library is installed without a loaded driver (a
// CUDA toolkit's packages on a machine with no GPU) Init's error says that
// and it skips too; on a GPU host (make gpu-build: bin/nvml.test) it checks
// the figures NVML returns and logs them.
func TestDevice0(t *testing.T) {
	err := Init()
	if Code(err) == ErrorLibraryNotFound {
		var e *Error
		if !errors.As(err, &e) || e.Call != "dlopen" || !strings.Contains(err.Error(), soname) {
			t.Fatalf("Init without the library: %v, want a dlopen error naming %s", err, soname)
		}
		// Every later call reports the same missing library.
		if _, err := DeviceCount(); Code(err) != ErrorLibraryNotFound {
			t.Errorf("DeviceCount without the library: %v", err)
		}
		t.Skipf("no NVIDIA driver on this machine (%v); run bin/nvml.test on a GPU host", err)
	}
	if Code(err) == ErrorDriverNotLoaded {
		if _, err := DeviceCount(); err == nil {
			t.Errorf("DeviceCount after Init failed with the driver not loaded: no error")
		}
		t.Skipf("libnvidia-ml is installed but no NVIDIA driver is loaded (%v); run bin/nvml.test on a GPU host", err)
	}
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	defer func() {
		if err := Shutdown(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	n, err := DeviceCount()
	if err != nil {
		t.Fatalf("DeviceCount: %v", err)
	}
	if n < 1 {
		t.Fatalf("DeviceCount = %d: NVML sees no device", n)
	}
	if _, err := DeviceByIndex(n); Code(err) != ErrorInvalidArgument {
		t.Errorf("DeviceByIndex(%d) of %d devices: %v, want NVML_ERROR_INVALID_ARGUMENT", n, n, err)
	}
	d, err := DeviceByIndex(0)
	if err != nil {
		t.Fatalf("DeviceByIndex(0): %v", err)
	}
	u, err := d.UtilizationRates()
	if err != nil {
		t.Fatalf("UtilizationRates: %v", err)
	}
	if u.GPU > 100 || u.Memory > 100 {
		t.Errorf("utilization %+v: a percent above 100 (struct layout?)", u)
	}
	m, err := d.MemoryInfo()
	if err != nil {
		t.Fatalf("MemoryInfo: %v", err)
	}
	// Total is at least 1 GiB on any device esm2go runs on; used and free
	// each fit in it (NVML's v1 struct counts reserved memory as used, so
	// used+free is total up to rounding and is not asserted exactly).
	if m.Total < 1<<30 || m.Used > m.Total || m.Free > m.Total {
		t.Errorf("memory %+v: implausible (struct layout?)", m)
	}
	vt, ss, err := d.Samples(GPUUtilizationSamples, 0)
	switch c := Code(err); {
	case err == nil:
		if len(ss) > 0 && (vt < 0 || vt >= ValueTypeCount) {
			t.Errorf("samples of value type %d", vt)
		}
		for _, s := range ss {
			if s.TimeStamp == 0 {
				t.Errorf("sample %+v without a timestamp", s)
			}
		}
	case c == ErrorNotFound, c == ErrorNotSupported:
		t.Logf("no utilization samples: %v", err)
	default:
		t.Errorf("Samples: %v", err)
	}
	t.Logf("%d device(s); device 0: utilization gpu %d%% memory %d%%; memory used %d of %d bytes (free %d); %d utilization samples (value type %d)",
		n, u.GPU, u.Memory, m.Used, m.Total, m.Free, len(ss), vt)
}
