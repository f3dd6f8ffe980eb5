package monitor

import (
	"fmt"
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
	return append(lines, mem)
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
	for _, g := range r.GPUs {
		line += fmt.Sprintf("  gpu%d %.0f%% %s/%s GiB", g.Index, g.UtilPct, gib(g.MemUsed), gib(g.MemTotal))
	}
	if r.DeviceMemInUse != nil {
		line += fmt.Sprintf("  alloc %s/%s", mib(*r.DeviceMemInUse), mib(*r.DeviceMemReserved))
	}
	if r.IdleCause != "" {
		line += "  IDLE: " + r.IdleCause
	}
	return line
}
