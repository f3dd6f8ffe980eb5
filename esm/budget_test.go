package esm

import (
	"fmt"
	"testing"
)

type fakeGPU struct {
	Backend
	free uint64
	prec Precision
}

func (f fakeGPU) MemInfo() (uint64, uint64, error) { return f.free, 80 << 30, nil }
func (f fakeGPU) Precision() Precision             { return f.prec }

// fakeCPU reports what the CPU backend does: no device memory, fp32.
type fakeCPU struct{ Backend }

func (fakeCPU) MemInfo() (uint64, uint64, error) {
	return 0, 0, fmt.Errorf("cpu: %w", ErrNoDeviceMemory)
}
func (fakeCPU) Precision() Precision { return FP32 }

func TestAutoTokensPerBatch(t *testing.T) {
	cfg := Config{Layers: 33, Dim: 1280, Heads: 20, FFN: 5120, Vocab: 33}
	on := func(be Backend) *Model { return &Model{Cfg: cfg, be: be} }
	if n := on(fakeCPU{}).AutoTokensPerBatch(1022); n != DefaultCPUTokensPerBatch {
		t.Errorf("CPU: %d, want %d", n, DefaultCPUTokensPerBatch)
	}
	// 650M fp16 on a card with 75 GB free: capped.
	if n := on(fakeGPU{free: 75 << 30, prec: FP16}).AutoTokensPerBatch(1022); n != MaxAutoTokensPerBatch {
		t.Errorf("large card: %d, want %d", n, MaxAutoTokensPerBatch)
	}
	// 1 GB free: 0.5 GB / (4*1280 + 4*33 + 2*9*1280 bytes) = 18,556 tokens.
	if n := on(fakeGPU{free: 1 << 30, prec: FP16}).AutoTokensPerBatch(1022); n != (1<<29)/(4*1280+4*33+2*9*1280) {
		t.Errorf("1 GB free: %d", n)
	}
	// Almost nothing free: still one truncated sequence (fp32 activations).
	if n := on(fakeGPU{free: 1 << 20, prec: FP32}).AutoTokensPerBatch(1022); n != 1024 {
		t.Errorf("tiny free memory: %d, want 1024", n)
	}
	if n := on(fakeGPU{free: 1 << 20, prec: FP16}).AutoTokensPerBatch(3000); n != 3002 {
		t.Errorf("longer truncation: %d, want 3002", n)
	}
	if n := on(fakeCPU{}).MaxSequenceTokens(); n != MaxCPUSequenceTokens {
		t.Errorf("CPU longest sequence: %d, want %d", n, MaxCPUSequenceTokens)
	}
}

func TestParsePrecision(t *testing.T) {
	for in, want := range map[string]Precision{"fp16": FP16, " BF16 ": BF16, "Fp32": FP32} {
		if got, err := ParsePrecision(in); err != nil || got != want {
			t.Errorf("ParsePrecision(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "int8", "half", "float32"} {
		if got, err := ParsePrecision(in); err == nil {
			t.Errorf("ParsePrecision(%q) = %q, want an error", in, got)
		}
	}
	if FP16.ElementBytes() != 2 || BF16.ElementBytes() != 2 || FP32.ElementBytes() != 4 {
		t.Error("ElementBytes: want 2, 2, 4")
	}
}
