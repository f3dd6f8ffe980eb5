package monitor

import (
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"
)

// Lines is the end-of-run summary, a few human lines.
func (r Report) Lines() []string {
	lines := []string{
		fmt.Sprintf("metrics: %d sequences (%d records, %d skipped), %d tokens in %d batches, %s: %.1f seq/s, %s tok/s",
			r.Sequences, r.Records, r.Skipped, r.Tokens, r.Batches, r.Elapsed.Round(time.Millisecond), r.SeqPerS, si(r.TokPerS)),
		fmt.Sprintf("metrics: compute %.0f%%, loader wait %.0f%%, writer wait %.0f%% of wall time",
			r.ComputeFrac*100, r.LoaderWaitFrac*100, r.WriterWaitFrac*100),
	}
	mem := "metrics: peak RSS " + mib(r.PeakRSS)
	if r.PeakRSS == 0 {
		mem = "metrics: peak RSS unknown"
	}
	if r.GPUKnown {
		mem += fmt.Sprintf(", mean GPU utilization %.0f%%, peak GPU memory %s", r.MeanGPUUtil, mib(int64(r.PeakGPUMem)))
	}
	if r.DeviceMemKnown {
		mem += fmt.Sprintf(", allocator peak %s in use / %s reserved", mib(r.PeakDeviceInUse), mib(r.PeakDeviceReserved))
	}
	lines = append(lines, mem)
	if len(r.Devices) > 1 {
		for _, d := range r.Devices {
			line := fmt.Sprintf("metrics: %s: %d batches, %d sequences, %s tok/s", d.Label(), d.Batches, d.Computed, si(d.TokPerS))
			if d.UtilKnown {
				line += fmt.Sprintf(", mean utilization %.0f%%", d.MeanUtil)
			}
			lines = append(lines, line)
		}
	}
	return lines
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func gib(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<30)) }

// si formats a rate compactly: 950, 81.2k, 1.3M.
func si(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.1fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.1fk", x/1e3)
	default:
		return fmt.Sprintf("%.0f", x)
	}
}

func humanLine(r *Record) string {
	line := fmt.Sprintf("metrics: batch %d  %.1f seq/s (%.1f avg)  %s tok/s (%s avg)  compute %.0f%%  loader wait %.0f%%  writer wait %.0f%%  queue %d ready/%d blocks",
		r.Batches, r.SeqPerS, r.SeqPerSTotal, si(r.TokPerS), si(r.TokPerSTotal),
		r.ComputeFrac*100, r.LoaderWaitFrac*100, r.WriterWaitFrac*100, r.QueueDepth, r.ReaderQueue)
	if r.RSSBytes != nil {
		line += "  rss " + mib(*r.RSSBytes)
	}
	line += "  heap " + mib(r.GoHeapBytes)
	line += gpuParts(r)
	if r.DeviceMemInUse != nil {
		line += fmt.Sprintf("  alloc %s/%s", mib(*r.DeviceMemInUse), mib(*r.DeviceMemReserved))
	}
	if r.IdleCause != "" {
		line += "  IDLE: " + r.IdleCause
	}
	return line
}

// gpuParts is each GPU's utilization and memory and, with several devices,
// each device's share of the window.
func gpuParts(r *Record) string {
	var b strings.Builder
	for _, g := range r.GPUs {
		fmt.Fprintf(&b, "  gpu%d %.0f%% %s/%s GiB", g.Index, g.UtilPct, gib(g.MemUsed), gib(g.MemTotal))
	}
	if len(r.Devices) > 1 {
		for _, d := range r.Devices {
			fmt.Fprintf(&b, "  %s %d batches %s tok/s", d.Name, d.WindowBatches, si(d.TokPerS))
		}
	}
	return b.String()
}

// WindowLine is a window's figures on one short line, for a live display:
// rates, where the time went, queues, memory, each GPU.
func WindowLine(r *Record) string {
	line := fmt.Sprintf("window %d: %s records/s  %s tokens/s  compute %.0f%%  loader wait %.0f%%  writer wait %.0f%%  queue %d/%d",
		r.Window, si(r.SeqPerS), si(r.TokPerS), r.ComputeFrac*100, r.LoaderWaitFrac*100, r.WriterWaitFrac*100,
		r.QueueDepth, r.ReaderQueue)
	if r.RSSBytes != nil {
		line += "  rss " + mib(*r.RSSBytes)
	}
	line += gpuParts(r)
	if r.IdleCause != "" {
		line += "  IDLE: " + r.IdleCause
	}
	return line
}

// LogAttrs are a window's figures as typed log attributes: one log record
// per window, the same fields in text and JSON logs (fractions 0..1, rates
// per second, bytes).
func (r *Record) LogAttrs() []slog.Attr {
	a := []slog.Attr{
		slog.Int("window", r.Window),
		slog.Int64("records", r.Records), slog.Int64("embedded", r.Sequences), slog.Int64("skipped", r.Skipped),
		slog.Int64("batches", r.Batches), slog.Int64("tokens", r.Tokens), slog.Int64("input_bytes", r.InputBytes),
	}
	if r.InputSizeBytes != nil {
		a = append(a, slog.Int64("input_size_bytes", *r.InputSizeBytes), slog.Float64("percent", round(*r.InputFrac*100, 1)),
			slog.Int64("eta_s", int64(math.Round(*r.ETAS))))
	}
	if r.Resumed > 0 {
		a = append(a, slog.Int64("resumed", r.Resumed))
	}
	a = append(a,
		slog.Float64("elapsed_s", round(r.ElapsedS, 3)),
		slog.Float64("records_per_s", round(r.SeqPerS, 1)), slog.Int64("tokens_per_s", int64(math.Round(r.TokPerS))),
		slog.Float64("records_per_s_total", round(r.SeqPerSTotal, 1)), slog.Int64("tokens_per_s_total", int64(math.Round(r.TokPerSTotal))),
		slog.Float64("compute_frac", round(r.ComputeFrac, 3)), slog.Float64("loader_wait_frac", round(r.LoaderWaitFrac, 3)),
		slog.Float64("writer_wait_frac", round(r.WriterWaitFrac, 3)),
		slog.Int("queue_depth", r.QueueDepth), slog.Int("reader_queue", r.ReaderQueue),
	)
	if r.RSSBytes != nil {
		a = append(a, slog.Int64("rss_bytes", *r.RSSBytes))
	}
	if r.GPUUtilPct != nil {
		a = append(a, slog.Float64("gpu_util_pct", round(*r.GPUUtilPct, 1)), slog.Uint64("gpu_mem_used_bytes", *r.GPUMemUsed))
	}
	for _, g := range r.GPUs {
		a = append(a, slog.Group(fmt.Sprintf("gpu%d", g.Index), slog.Float64("util_pct", round(g.UtilPct, 1)),
			slog.Uint64("mem_used_bytes", g.MemUsed), slog.Uint64("mem_total_bytes", g.MemTotal)))
	}
	if len(r.Devices) > 1 {
		for _, d := range r.Devices {
			a = append(a, slog.Group(d.Name, slog.Int64("window_batches", d.WindowBatches),
				slog.Int64("tokens_per_s", int64(math.Round(d.TokPerS))), slog.Float64("compute_frac", round(d.ComputeFrac, 3))))
		}
	}
	if r.IdleCause != "" {
		a = append(a, slog.String("idle_cause", r.IdleCause))
	}
	return a
}

// round keeps d decimals (a log line need not carry float noise).
func round(x float64, d int) float64 {
	p := math.Pow(10, float64(d))
	return math.Round(x*p) / p
}
