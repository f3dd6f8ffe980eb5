//go:build cgo

package cudadrv

/*
#include "shim.h"
*/
import "C"

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Tunings are kept on disk beside the kernel cache, one file per device
// kind and cuBLASLt version, so a machine times its GEMM candidates once:
// later processes (and the other workers of a run) read the choices. The
// file is only advice: every algorithm read from it is checked against
// the exact shape before it runs (ltTune), and a missing, unreadable or
// foreign file is ignored.

type tuneFile struct {
	Device   string      `json:"device"`
	Arch     string      `json:"arch"`
	SMs      int         `json:"sms"`
	CublasLt uint64      `json:"cublaslt_version"`
	Entries  []tuneEntry `json:"entries"`
}

type tuneEntry struct {
	T, N, K     int
	In, Out     DataType
	Compute     Compute
	Accumulate  bool
	Algo        [8]uint64 // cublasLtMatmulAlgo_t
	Better      bool
	Candidates  int
	Chosen      int
	First, Best float64
}

// tuneFilePath is "" when the context keeps no kernel cache.
func (c *Context) tuneFilePath(ver uint64) string {
	if c.KernelCacheDir == "" {
		return ""
	}
	h := sha256.Sum256([]byte(fmt.Sprintf("%s|%s|%d|%d", c.Device.Name, c.Device.Arch(), c.Device.SMs, ver)))
	return filepath.Join(c.KernelCacheDir, "gemm-tuning-"+hex.EncodeToString(h[:8])+".json")
}

func (c *Context) tuneHeader(ver uint64) tuneFile {
	return tuneFile{Device: c.Device.Name, Arch: c.Device.Arch(), SMs: c.Device.SMs, CublasLt: ver}
}

// readTuneFile returns the file's entries for this device and cuBLASLt
// version, or none.
func (c *Context) readTuneFile(path string, ver uint64) []tuneEntry {
	if path == "" {
		return nil
	}
	raw, err := os.ReadFile(path)
	if err != nil || len(raw) > 1<<20 {
		return nil
	}
	var f tuneFile
	if json.Unmarshal(raw, &f) != nil {
		return nil
	}
	h := c.tuneHeader(ver)
	if f.Device != h.Device || f.Arch != h.Arch || f.SMs != h.SMs || f.CublasLt != h.CublasLt {
		return nil
	}
	return f.Entries
}

// loadTunings fills b.tuned from the tuning file, once per handle.
func (c *Context) loadTunings(b *blasState) {
	c.fillTunings(b, uint64(C.esm_cublasLtGetVersion()))
}

// fillTunings is loadTunings for cuBLASLt version ver.
func (c *Context) fillTunings(b *blasState, ver uint64) {
	b.ltVersion = ver
	b.tunePath = c.tuneFilePath(ver)
	for _, e := range c.readTuneFile(b.tunePath, ver) {
		if e.In > BF16 || e.Out > BF16 || e.T <= 0 || e.N <= 0 || e.K <= 0 || e.Chosen < 0 {
			continue
		}
		ep := EpilogueBias
		if e.Accumulate {
			ep = EpilogueBiasAccumulate
		}
		p := Precision{In: e.In, Out: e.Out, Compute: e.Compute}
		t := &ltTuned{better: e.Better, rec: GemmTuning{T: e.T, N: e.N, K: e.K, Prec: p, Accumulate: e.Accumulate,
			Candidates: e.Candidates, Chosen: e.Chosen, First: e.First, Best: e.Best, FromFile: true}}
		t.algo = algoFrom(e.Algo)
		b.tuned[tuneKeyOf(ltKey{e.T, e.N, e.K, p, ep})] = t
	}
}

// saveTuning adds t to the tuning file (merged with what other processes
// wrote since; written to a temporary file and renamed). Failing to write
// it is not an error: the next process tunes again.
func (c *Context) saveTuning(b *blasState, t *ltTuned) {
	if b.tunePath == "" || t.rec.Skipped != "" {
		return
	}
	r := t.rec
	e := tuneEntry{T: r.T, N: r.N, K: r.K, In: r.Prec.In, Out: r.Prec.Out, Compute: r.Prec.Compute, Accumulate: r.Accumulate,
		Better: t.better, Candidates: r.Candidates, Chosen: r.Chosen, First: r.First, Best: r.Best}
	e.Algo = algoWords(t.algo)
	f := c.tuneHeader(b.ltVersion)
	key := func(e tuneEntry) ltTuneKey {
		ep := EpilogueBias
		if e.Accumulate {
			ep = EpilogueBiasAccumulate
		}
		return tuneKeyOf(ltKey{e.T, e.N, e.K, Precision{In: e.In, Out: e.Out, Compute: e.Compute}, ep})
	}
	mine := key(e)
	for _, old := range c.readTuneFile(b.tunePath, b.ltVersion) {
		if key(old) != mine {
			f.Entries = append(f.Entries, old)
		}
	}
	f.Entries = append(f.Entries, e)
	raw, err := json.MarshalIndent(f, "", " ")
	if err != nil || os.MkdirAll(c.KernelCacheDir, 0o755) != nil {
		return
	}
	tmp, err := os.CreateTemp(c.KernelCacheDir, "gemm-tuning-*.tmp")
	if err != nil {
		return
	}
	_, werr := tmp.Write(raw)
	if cerr := tmp.Close(); werr == nil && cerr == nil {
		if os.Rename(tmp.Name(), b.tunePath) == nil {
			return
		}
	}
	os.Remove(tmp.Name())
}

func algoWords(a C.cublasLtMatmulAlgo_t) (w [8]uint64) {
	for i, v := range a.data {
		w[i] = uint64(v)
	}
	return w
}

func algoFrom(w [8]uint64) (a C.cublasLtMatmulAlgo_t) {
	for i, v := range w {
		a.data[i] = C.uint64_t(v)
	}
	return a
}
