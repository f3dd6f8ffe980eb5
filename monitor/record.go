package monitor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// This file holds the JSON-lines schema (one Record per window) and its
// writing.

// Record is one window's figures, as written to the JSON lines. Fields that
// cannot be known on this machine (GPU figures without NVML, RSS off Linux,
// allocator figures without a MemoryReporter) are absent, not zero.
type Record struct {
	Time   string `json:"time"` // RFC 3339 with nanoseconds
	Window int    `json:"window"`
	Final  bool   `json:"final"`

	// Totals.
	Batches   int64   `json:"batches"`
	Records   int64   `json:"records"`
	Sequences int64   `json:"sequences"` // embedded: rows written
	Computed  int64   `json:"computed"`  // sequences computed (as batches complete)
	Skipped   int64   `json:"skipped"`
	Resumed   int64   `json:"resumed"` // records an earlier run committed
	Residues  int64   `json:"residues"`
	Tokens    int64   `json:"tokens"`
	ElapsedS  float64 `json:"elapsed_s"`

	// Input read: bytes (compressed for gzip) of the input's size, the
	// fraction and the estimated time left at the run's mean byte rate;
	// the size and what follows from it are absent when the size is not
	// known up front (stdin, a named pipe).
	InputBytes     int64    `json:"input_bytes"`
	InputSizeBytes *int64   `json:"input_size_bytes,omitempty"`
	InputFrac      *float64 `json:"input_frac,omitempty"`
	ETAS           *float64 `json:"eta_s,omitempty"`

	// This window.
	WindowS         float64 `json:"window_s"`
	WindowBatches   int64   `json:"window_batches"`
	WindowSequences int64   `json:"window_sequences"`
	WindowComputed  int64   `json:"window_computed"`
	WindowTokens    int64   `json:"window_tokens"`

	// Throughput: this window and since the start, counted as batches
	// complete: sequences computed (not rows written, which leave in input
	// order and come in bursts) and tokens.
	SeqPerS      float64 `json:"seq_per_s"`
	TokPerS      float64 `json:"tok_per_s"`
	SeqPerSTotal float64 `json:"seq_per_s_total"`
	TokPerSTotal float64 `json:"tok_per_s_total"`

	// Where the compute goroutine's time went in this window (seconds and
	// fraction of the window's wall time) and since the start.
	ComputeS            float64 `json:"compute_s"`
	LoaderWaitS         float64 `json:"loader_wait_s"`
	WriterWaitS         float64 `json:"writer_wait_s"`
	ComputeFrac         float64 `json:"compute_frac"`
	LoaderWaitFrac      float64 `json:"loader_wait_frac"`
	WriterWaitFrac      float64 `json:"writer_wait_frac"`
	ComputeSTotal       float64 `json:"compute_s_total"`
	LoaderWaitSTotal    float64 `json:"loader_wait_s_total"`
	WriterWaitSTotal    float64 `json:"writer_wait_s_total"`
	LoaderWaitFracTotal float64 `json:"loader_wait_frac_total"`
	// IdleFrac is 1 − compute_frac: the host's estimate of device idle time.
	IdleFrac float64 `json:"idle_frac"`

	// Queues at the window's last batch.
	QueueDepth  int `json:"queue_depth"`  // packed batches ready
	ReaderQueue int `json:"reader_queue"` // FASTA blocks waiting

	// Memory.
	RSSBytes          *int64 `json:"rss_bytes,omitempty"`
	GoHeapBytes       int64  `json:"go_heap_bytes"`
	GoTotalBytes      int64  `json:"go_total_bytes"`
	DeviceMemInUse    *int64 `json:"device_mem_in_use_bytes,omitempty"`   // allocator
	DeviceMemReserved *int64 `json:"device_mem_reserved_bytes,omitempty"` // allocator

	// NVML: mean utilization over the window's readings and the devices,
	// memory summed over the devices, and each device. Only readings that
	// average time after the compute start count (ComputeStarted, else the
	// monitor's; see readGPU): absent when the window has none, as early
	// in a run without NVML samples.
	GPUUtilPct  *float64  `json:"gpu_util_pct,omitempty"`
	GPUIdleFrac *float64  `json:"gpu_idle_frac,omitempty"`
	GPUMemUsed  *uint64   `json:"gpu_mem_used_bytes,omitempty"`
	GPUMemTotal *uint64   `json:"gpu_mem_total_bytes,omitempty"`
	GPUs        []GPUStat `json:"gpus,omitempty"`

	// Devices is each of the run's devices (embed's order) over the
	// window; absent when the run reported none.
	Devices []DeviceStat `json:"devices,omitempty"`

	// DroppedSamples counts windows merged into later ones because the
	// monitor lagged (the pipeline never waits for it).
	DroppedSamples int64 `json:"dropped_samples"`
	// IdleCause is set when the device was idle more than IdleThreshold of
	// the window.
	IdleCause string `json:"idle_cause,omitempty"`
	// NotJudged says why the window was not judged for idle time:
	// "cpu run", "final" (the drain), "warm-up" (before Options.JudgeAfterWindows and
	// JudgeAfter), "resuming" (reading past an earlier run's committed
	// records), "no batch".
	NotJudged string   `json:"not_judged,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
}

// DeviceStat is one of the run's devices over a window.
type DeviceStat struct {
	Name string `json:"name"` // embed's name: cpu, cuda:1
	// GPU is its NVML index (Options.Devices), absent when unknown.
	GPU            *int    `json:"gpu,omitempty"`
	Batches        int64   `json:"batches"`
	WindowBatches  int64   `json:"window_batches"`
	Computed       int64   `json:"computed"` // sequences
	Tokens         int64   `json:"tokens"`
	SeqPerS        float64 `json:"seq_per_s"`
	TokPerS        float64 `json:"tok_per_s"`
	ComputeFrac    float64 `json:"compute_frac"`
	LoaderWaitFrac float64 `json:"loader_wait_frac"`
	WriterWaitFrac float64 `json:"writer_wait_frac"`
	// NVML figures of its GPU (absent without a reading in the window).
	UtilPct  *float64 `json:"util_pct,omitempty"`
	MemUsed  *uint64  `json:"mem_used_bytes,omitempty"`
	MemTotal *uint64  `json:"mem_total_bytes,omitempty"`
	// The backend allocator's figures (absent where it reports none).
	AllocInUse    *int64 `json:"alloc_in_use_bytes,omitempty"`
	AllocReserved *int64 `json:"alloc_reserved_bytes,omitempty"`
	IdleCause     string `json:"idle_cause,omitempty"`
}

// Label names the device in a warning: "GPU 1" when its NVML index is
// known, else its name.
func (d *DeviceStat) Label() string { return deviceLabel(d.GPU, d.Name) }

func deviceLabel(gpu *int, name string) string {
	if gpu != nil {
		return fmt.Sprintf("GPU %d", *gpu)
	}
	if name == "" {
		return "device"
	}
	return name
}

func (m *Monitor) writeJSON(r *Record) {
	if m.jsonW == nil || m.jsonFailed {
		return
	}
	b, err := json.Marshal(r)
	if err == nil {
		b = append(b, '\n')
		_, err = m.jsonW.Write(b)
	}
	if err != nil {
		m.jsonFailed = true
		m.warnOnce(&m.jsonWarned, "cannot write the metrics file; no more metrics lines (the run goes on)", "err", err)
	}
}

// createJSON creates the metrics file: exclusively, or with overwrite by
// truncating an existing regular file, or with appendTo by appending to one
// (never a device, FIFO or directory).
func createJSON(path string, overwrite, appendTo bool) (*os.File, error) {
	if appendTo && !overwrite {
		if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file; refusing to append to it", path)
		}
		return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	}
	if !overwrite {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%s exists; refusing to truncate it without Overwrite", path)
		}
		return f, err
	}
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file; refusing to truncate it", path)
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
}
