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
	Sequences int64   `json:"sequences"` // embedded
	Skipped   int64   `json:"skipped"`
	Residues  int64   `json:"residues"`
	Tokens    int64   `json:"tokens"`
	ElapsedS  float64 `json:"elapsed_s"`

	// This window.
	WindowS         float64 `json:"window_s"`
	WindowBatches   int64   `json:"window_batches"`
	WindowSequences int64   `json:"window_sequences"`
	WindowTokens    int64   `json:"window_tokens"`

	// Throughput: this window and since the start. Sequences are rows
	// written, in input order, so they lag the compute stage by the writer's
	// reordering; tokens are counted as computed.
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
	// average time after the monitor's start count (see readGPU): absent
	// when the window has none, as early in a run without NVML samples.
	GPUUtilPct  *float64  `json:"gpu_util_pct,omitempty"`
	GPUIdleFrac *float64  `json:"gpu_idle_frac,omitempty"`
	GPUMemUsed  *uint64   `json:"gpu_mem_used_bytes,omitempty"`
	GPUMemTotal *uint64   `json:"gpu_mem_total_bytes,omitempty"`
	GPUs        []GPUStat `json:"gpus,omitempty"`

	// DroppedSamples counts windows merged into later ones because the
	// monitor lagged (the pipeline never waits for it).
	DroppedSamples int64 `json:"dropped_samples"`
	// IdleCause is set when the device was idle more than IdleThreshold of
	// the window.
	IdleCause string   `json:"idle_cause,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
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
// truncating an existing regular file (never a device, FIFO or directory).
func createJSON(path string, overwrite bool) (*os.File, error) {
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
