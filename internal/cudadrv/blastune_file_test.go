//go:build cgo

package cudadrv

import (
	"os"
	"path/filepath"
	"testing"
)

// TestTuneFile: a tuning written by one process is read by the next one
// on the same device kind and cuBLASLt version (merged with the file's
// other entries), and ignored for another device, another version or a
// file that is not a tuning file. No GPU needed.
func TestTuneFile(t *testing.T) {
	dir := t.TempDir()
	dev := DeviceInfo{Name: "NVIDIA H200", Major: 9, SMs: 132}
	c := &Context{Device: dev, KernelCacheDir: dir}
	const ver = 130200
	b := &blasState{tuned: map[ltTuneKey]*ltTuned{}}
	c.fillTunings(b, ver)
	if len(b.tuned) != 0 || b.tunePath == "" {
		t.Fatalf("empty cache: %d tunings, path %q", len(b.tuned), b.tunePath)
	}
	mk := func(T, N int, acc bool, better bool, word uint64) *ltTuned {
		tt := &ltTuned{better: better, rec: GemmTuning{T: T, N: N, K: 480, Prec: FP16, Accumulate: acc, Candidates: 8, Chosen: 3, First: 0.2, Best: 0.15}}
		if acc {
			tt.rec.Prec = Precision{In: F16, Out: F32, Compute: ComputeF32}
		}
		tt.algo = algoFrom([8]uint64{42, 0, 0, 0, 0, 0, 0, word})
		return tt
	}
	c.saveTuning(b, mk(65000, 1920, false, true, 7))
	c.saveTuning(b, mk(16596, 480, true, false, 9))
	c.saveTuning(b, mk(65536, 1920, false, true, 11)) // same class as the first: replaces it
	skipped := mk(100, 64, false, false, 1)
	skipped.rec.Skipped = "one candidate"
	c.saveTuning(b, skipped) // not written

	b2 := &blasState{tuned: map[ltTuneKey]*ltTuned{}}
	c.fillTunings(b2, ver)
	if len(b2.tuned) != 2 {
		t.Fatalf("read %d tunings, want 2", len(b2.tuned))
	}
	got := b2.tuned[tuneKeyOf(ltKey{60000, 1920, 480, FP16, EpilogueBias})]
	if got == nil || !got.better || algoWords(got.algo) != [8]uint64{42, 0, 0, 0, 0, 0, 0, 11} || !got.rec.FromFile || got.rec.Chosen != 3 {
		t.Fatalf("fc1-shaped tuning read back as %+v", got)
	}
	acc := b2.tuned[tuneKeyOf(ltKey{17000, 480, 480, Precision{In: F16, Out: F32, Compute: ComputeF32}, EpilogueBiasAccumulate})]
	if acc == nil || acc.better || algoWords(acc.algo)[7] != 9 {
		t.Fatalf("accumulate tuning read back as %+v", acc)
	}

	for name, other := range map[string]*Context{
		"another card": {Device: DeviceInfo{Name: "NVIDIA H100 80GB HBM3", Major: 9, SMs: 132}, KernelCacheDir: dir},
		"another SMs":  {Device: DeviceInfo{Name: "NVIDIA H200", Major: 9, SMs: 114}, KernelCacheDir: dir},
	} {
		b3 := &blasState{tuned: map[ltTuneKey]*ltTuned{}}
		other.fillTunings(b3, ver)
		if len(b3.tuned) != 0 {
			t.Errorf("%s: read %d tunings of another device", name, len(b3.tuned))
		}
	}
	b4 := &blasState{tuned: map[ltTuneKey]*ltTuned{}}
	c.fillTunings(b4, ver+1)
	if len(b4.tuned) != 0 {
		t.Errorf("another cuBLASLt version: read %d tunings", len(b4.tuned))
	}
	// A file of the same name that is not (or no longer) a tuning file, or
	// that names this device but holds nonsense, is ignored, not an error.
	for _, junk := range []string{"not json", `{"device":"NVIDIA H200","arch":"sm_90","sms":132,"cublaslt_version":130200,"entries":[{"T":-1,"N":5,"K":5,"In":9}]}`} {
		if err := os.WriteFile(b.tunePath, []byte(junk), 0o644); err != nil {
			t.Fatal(err)
		}
		b5 := &blasState{tuned: map[ltTuneKey]*ltTuned{}}
		c.fillTunings(b5, ver)
		if len(b5.tuned) != 0 {
			t.Errorf("%q: read %d tunings", junk, len(b5.tuned))
		}
	}
	// No kernel cache, no file.
	nc := &Context{Device: dev}
	b6 := &blasState{tuned: map[ltTuneKey]*ltTuned{}}
	nc.fillTunings(b6, ver)
	nc.saveTuning(b6, mk(65000, 1920, false, true, 7))
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 || b6.tunePath != "" {
		t.Errorf("temporary files left %v, path %q", left, b6.tunePath)
	}
}
