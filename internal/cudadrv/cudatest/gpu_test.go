package cudatest

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// recorder is a testing.TB whose Skipf and Fatalf record the message and end
// the calling goroutine, as the real ones do.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls start on a recorder in a goroutine of its own (Skipf and Fatalf
// end it) and reports what happened.
func run(present func() (bool, string), open func() (int, error)) (r *recorder, got int, opened bool) {
	r = &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = start(r, "backend", present, func() (int, error) { opened = true; return open() })
	}()
	<-done
	return r, got, opened
}

// The policy of every GPU test: no GPU, skip without trying; a GPU, a
// backend that does not start fails the test with its error.
func TestStartPolicy(t *testing.T) {
	noGPU := func() (bool, string) { return false, "no /dev/nvidia<N>; no CUDA driver" }
	gpu := func() (bool, string) { return true, "device node /dev/nvidia0" }
	broken := errors.New("CUDA headers (cuda_fp16.h) not found")

	r, _, opened := run(noGPU, func() (int, error) { return 0, broken })
	if r.failed != "" || !strings.Contains(r.skipped, "no NVIDIA GPU here") || !strings.Contains(r.skipped, "no CUDA driver") || opened {
		t.Errorf("no GPU: skipped %q, failed %q, opened %v; want a skip that says why, without opening", r.skipped, r.failed, opened)
	}
	r, _, _ = run(gpu, func() (int, error) { return 0, broken })
	if r.skipped != "" || !strings.Contains(r.failed, broken.Error()) || !strings.Contains(r.failed, "/dev/nvidia0") {
		t.Errorf("GPU, backend fails: skipped %q, failed %q; want a failure with the error and the evidence", r.skipped, r.failed)
	}
	r, got, _ := run(gpu, func() (int, error) { return 7, nil })
	if r.skipped != "" || r.failed != "" || got != 7 {
		t.Errorf("GPU, backend starts: skipped %q, failed %q, got %d; want 7", r.skipped, r.failed, got)
	}
}

// GPUPresent agrees with the device nodes: where /dev/nvidia<N> exists it
// reports a GPU, and either way it says why.
func TestGPUPresentSaysWhy(t *testing.T) {
	ok, why := GPUPresent()
	if why == "" {
		t.Fatal("GPUPresent gave no reason")
	}
	if nodes, _ := filepath.Glob("/dev/nvidia[0-9]*"); len(nodes) > 0 && !ok {
		t.Errorf("GPUPresent = false (%s) with %v present", why, nodes)
	}
	t.Logf("GPU present: %v (%s)", ok, why)
}
