//go:build cgo

package nvml

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeEnv names, in the child process of TestFakeLibrary, which fake
// libnvidia-ml.so.1 (testdata/fakenvml.c) LD_LIBRARY_PATH leads to.
const fakeEnv = "ESM2GO_NVML_FAKE"

// TestFakeLibrary runs the package against testdata/fakenvml.c, built as
// libnvidia-ml.so.1, in a child process (the dynamic loader reads
// LD_LIBRARY_PATH at start): every call through the shim, the two-call
// sample protocol, NVML's error strings, and a driver without an entry
// point. It needs a C compiler, which a cgo build has.
func TestFakeLibrary(t *testing.T) {
	switch os.Getenv(fakeEnv) {
	case "full":
		checkFake(t)
		return
	case "old":
		checkOldDriver(t)
		return
	}
	src := filepath.Join("testdata", "fakenvml.c")
	if _, err := os.Stat(src); err != nil {
		t.Skipf("%v (a test binary run outside internal/nvml)", err)
	}
	cc := strings.Fields(os.Getenv("CC"))
	if len(cc) == 0 {
		out, err := exec.Command("go", "env", "CC").Output()
		if err != nil {
			t.Skipf("no C compiler found (go env CC: %v)", err)
		}
		cc = strings.Fields(string(out))
	}
	if len(cc) == 0 {
		t.Skip("no C compiler found")
	}
	if _, err := exec.LookPath(cc[0]); err != nil {
		t.Skipf("no C compiler found: %v", err)
	}
	for _, kind := range []string{"full", "old"} {
		dir := filepath.Join(t.TempDir(), kind)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		args := append(append([]string{}, cc[1:]...), "-shared", "-fPIC", "-o", filepath.Join(dir, soname), src)
		if kind == "old" {
			args = append(args, "-DOLD_DRIVER")
		}
		if out, err := exec.Command(cc[0], args...).CombinedOutput(); err != nil {
			t.Fatalf("building the fake %s: %v\n%s", soname, err, out)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestFakeLibrary$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), fakeEnv+"="+kind, "LD_LIBRARY_PATH="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestFakeLibrary") {
			t.Errorf("%s fake library: %v\n%s", kind, err, out)
		}
	}
}

// checkFake runs in the child process with the full fake library.
func checkFake(t *testing.T) {
	if err := Init(); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if n, err := DeviceCount(); err != nil || n != 2 {
		t.Fatalf("DeviceCount = %d, %v; want the fake's 2", n, err)
	}
	if _, err := DeviceByIndex(2); Code(err) != ErrorInvalidArgument || err.Error() != "nvmlDeviceGetHandleByIndex_v2: Invalid Argument" {
		t.Errorf("DeviceByIndex(2): %v", err)
	}
	if _, err := DeviceByIndex(-1); Code(err) != ErrorInvalidArgument {
		t.Errorf("DeviceByIndex(-1): %v", err)
	}
	d0, err := DeviceByIndex(0)
	if err != nil {
		t.Fatal(err)
	}
	d1, err := DeviceByIndex(1)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := d1.UtilizationRates(); err != nil || u != (Utilization{GPU: 43, Memory: 17}) {
		t.Errorf("device 1 utilization %+v, %v", u, err)
	}
	if m, err := d1.MemoryInfo(); err != nil || m != (Memory{Total: 80 << 30, Free: 30 << 30, Used: 50<<30 + 1}) {
		t.Errorf("device 1 memory %+v, %v", m, err)
	}
	vt, ss, err := d0.Samples(GPUUtilizationSamples, 10)
	if err != nil || vt != ValueUnsignedInt || len(ss) != 2 {
		t.Fatalf("device 0 samples after 10: type %d, %+v, %v", vt, ss, err)
	}
	for i, s := range ss {
		wantTS, wantPct := uint64(20+10*i), uint32(80+10*i)
		if s.TimeStamp != wantTS || binary.NativeEndian.Uint32(s.Value[:4]) != wantPct {
			t.Errorf("sample %d: %+v, want timestamp %d value %d", i, s, wantTS, wantPct)
		}
	}
	if _, _, err := d0.Samples(GPUUtilizationSamples, 30); Code(err) != ErrorNotFound {
		t.Errorf("no sample after 30: %v, want NVML_ERROR_NOT_FOUND", err)
	}
	if _, _, err := d1.Samples(GPUUtilizationSamples, 0); Code(err) != ErrorNotSupported || err.Error() != "nvmlDeviceGetSamples: Not Supported" {
		t.Errorf("device 1 samples: %v", err)
	}
	if err := Shutdown(); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// checkOldDriver runs in the child process with a library that lacks
// nvmlDeviceGetSamples: Init fails and names the missing entry point.
func checkOldDriver(t *testing.T) {
	err := Init()
	if Code(err) != ErrorFunctionMissing || !strings.Contains(err.Error(), "nvmlDeviceGetSamples") {
		t.Fatalf("Init with an old driver: %v, want a dlsym error naming nvmlDeviceGetSamples", err)
	}
	if _, err := DeviceCount(); Code(err) != ErrorFunctionMissing {
		t.Errorf("DeviceCount with an old driver: %v", err)
	}
}
