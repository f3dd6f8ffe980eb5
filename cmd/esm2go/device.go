package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	esmcuda "github.com/esm2go/esm2go/esm/cuda"
)

// gpuBackend is what the CLI needs from a GPU backend.
type gpuBackend interface {
	esm.Backend
	Close() error
}

// deviceSpec is a parsed --device value.
type deviceSpec struct {
	kind string // "auto", "cpu" or "cuda"
	ord  int    // CUDA device ordinal
}

func parseDevice(s string) (deviceSpec, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "auto", "cpu", "cuda":
		return deviceSpec{kind: s}, nil
	}
	if rest, ok := strings.CutPrefix(s, "cuda:"); ok {
		n, err := strconv.Atoi(rest)
		if err == nil && n >= 0 {
			return deviceSpec{kind: "cuda", ord: n}, nil
		}
	}
	return deviceSpec{}, fmt.Errorf("invalid --device %q (want auto, cpu, cuda or cuda:N)", s)
}

func parsePrecision(s string) (string, error) {
	switch p := strings.ToLower(strings.TrimSpace(s)); p {
	case "fp16", "bf16", "fp32":
		return p, nil
	}
	return "", fmt.Errorf("invalid --precision %q (want fp16, bf16 or fp32)", s)
}

// startBackend picks the backend for dev: CUDA when asked (an error when it
// cannot start), CUDA-then-CPU for auto (saying why on note), else the CPU.
// precisionSet says whether --precision was given explicitly.
func startBackend(dev deviceSpec, precision string, precisionSet bool, threads int, note func(string)) (esm.Backend, error) {
	if dev.kind == "cuda" || dev.kind == "auto" {
		be, err := tryGPU(dev.ord, precision)
		if err == nil {
			return be, nil
		}
		if dev.kind == "cuda" {
			return nil, err
		}
		note(fmt.Sprintf("no usable GPU (%s); running on the CPU", strings.TrimPrefix(oneLine(err.Error()), "--device cuda: ")))
	}
	if precisionSet && precision != "fp32" {
		note(fmt.Sprintf("--precision %s applies to the GPU only; the CPU computes in fp32", precision))
	}
	return cpu.New(cpu.Options{Threads: threads}), nil
}

// tryGPU starts the CUDA backend on device ordinal ord with the given
// precision (fp16, bf16, fp32). It links no CUDA library at build time
// (dlopen), so it is always compiled in; without a GPU New returns the
// reason. The backend belongs to the calling goroutine.
func tryGPU(ord int, precision string) (be gpuBackend, err error) {
	defer func() {
		// A backend must never take the CPU fallback down with it.
		if r := recover(); r != nil {
			be, err = nil, fmt.Errorf("--device cuda: starting the CUDA backend panicked: %v", r)
		}
	}()
	b, err := esmcuda.New(esmcuda.Options{Device: ord, Precision: precision})
	if err != nil {
		if !strings.HasPrefix(err.Error(), "--device cuda") {
			err = fmt.Errorf("--device cuda: %w", err)
		}
		return nil, err // not a typed nil in the interface
	}
	return b, nil
}

// closeBackend releases be when it has a Close method.
func closeBackend(be esm.Backend) {
	if c, ok := be.(interface{ Close() error }); ok {
		c.Close()
	}
}

// memInfo is implemented by GPU backends that can report free device memory.
type memInfo interface {
	MemInfo() (free, total uint64, err error)
}

// autoTokensPerBatch picks the token budget: 4096 on the CPU (fair-esm's
// default; larger batches do not run faster there); on a GPU as many tokens
// as half the free memory (after the weights) holds, at most 65536 (past
// that the GEMMs are already large and batches only add latency), and at
// least one truncated sequence. Activation bytes per token: the fp32
// residual stream (4D) and logits (4V), plus D (LayerNorm out) + D
// (attention out) + 3D (qkv) + 4D (FFN) in the compute precision.
func autoTokensPerBatch(be esm.Backend, cfg esm.Config, truncation int) int {
	minToks := esm.DefaultMaxResidues + 2
	if truncation > 0 {
		minToks = truncation + 2
	}
	mi, ok := be.(memInfo)
	if !ok {
		return max(4096, minToks)
	}
	free, _, err := mi.MemInfo()
	if err != nil {
		return max(4096, minToks)
	}
	perToken := uint64(4*cfg.Dim + 4*cfg.Vocab + 2*(cfg.Dim+cfg.Dim+3*cfg.Dim+max(cfg.FFN, cfg.Dim)))
	if p, ok := be.(interface{ Precision() string }); ok && p.Precision() == "fp32" {
		perToken = uint64(4*cfg.Dim + 4*cfg.Vocab + 4*(cfg.Dim+cfg.Dim+3*cfg.Dim+max(cfg.FFN, cfg.Dim)))
	}
	n := int(min(free/2/perToken, 65536))
	return max(n, minToks)
}
