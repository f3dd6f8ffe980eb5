package monitor

import (
	"fmt"
	"time"

	"github.com/esm2go/esm2go/embed"
)

// This file turns the cumulative embed.Summary of each window into a
// Record (differences, fractions, rates, idle cause) and, at the end, a
// Report.

// Report is the end-of-run account.
type Report struct {
	Records, Sequences, Skipped, Tokens, Batches int64
	Elapsed                                      time.Duration
	SeqPerS, TokPerS                             float64
	LoaderWaitFrac, WriterWaitFrac, ComputeFrac  float64
	// MeanGPUUtil is the mean NVML utilization (percent) over the run.
	MeanGPUUtil float64
	GPUKnown    bool
	PeakRSS     int64 // bytes; 0 when unknown
	// PeakGPUMem is the highest NVML memory in use of a device (bytes).
	PeakGPUMem uint64
	// PeakDeviceInUse and PeakDeviceReserved are the allocator's peaks.
	PeakDeviceInUse, PeakDeviceReserved int64
	DeviceMemKnown                      bool
	Windows                             int
	Warnings                            int
}

// Cause names used in idle warnings.
const (
	CauseInput    = "input bound (readers/packer)"
	CauseWriter   = "writer bound (output ring full)"
	CauseOverhead = "launch or host overhead"
)

// sample is what Observe hands to the monitor goroutine.
type sample struct {
	s                     embed.Summary
	at                    time.Time
	devInUse, devReserved int64
	devOK                 bool
}

type state struct {
	prev            embed.Summary
	windows         int
	peakRSS         int64
	peakIn, peakRes int64
	devKnown        bool
	leak            leakDetector
	lastCause       string
	lastWarn        time.Time
	warnings        int
	heap            *goMem
	lastRecord      *Record
}

// window turns a sample into a record and reports it (monitor goroutine, or
// Close after it ended).
func (m *Monitor) window(sm *sample, final bool) {
	st := &m.st
	s, p := &sm.s, &st.prev
	wall := s.Elapsed - p.Elapsed
	comp, lw, ww := s.Compute-p.Compute, s.LoaderWait-p.LoaderWait, s.WriterWait-p.WriterWait
	st.windows++
	r := &Record{
		Time: sm.at.Format(time.RFC3339Nano), Window: st.windows, Final: final,
		Batches: s.Batches, Records: s.Records, Sequences: s.Embedded, Skipped: s.Skipped,
		Residues: s.Residues, Tokens: s.Tokens, ElapsedS: secs(s.Elapsed),
		WindowS: secs(wall), WindowBatches: s.Batches - p.Batches,
		WindowSequences: s.Embedded - p.Embedded, WindowTokens: s.Tokens - p.Tokens,
		ComputeS: secs(comp), LoaderWaitS: secs(lw), WriterWaitS: secs(ww),
		ComputeFrac: frac(comp, wall), LoaderWaitFrac: frac(lw, wall), WriterWaitFrac: frac(ww, wall),
		ComputeSTotal: secs(s.Compute), LoaderWaitSTotal: secs(s.LoaderWait), WriterWaitSTotal: secs(s.WriterWait),
		LoaderWaitFracTotal: frac(s.LoaderWait, s.Elapsed),
		QueueDepth:          s.QueueDepth, ReaderQueue: s.ReaderQueue,
		DroppedSamples: m.dropped.Load(),
	}
	r.SeqPerS, r.TokPerS = perS(r.WindowSequences, wall), perS(r.WindowTokens, wall)
	r.SeqPerSTotal, r.TokPerSTotal = perS(s.Embedded, s.Elapsed), perS(s.Tokens, s.Elapsed)
	if wall > 0 {
		r.IdleFrac = 1 - r.ComputeFrac
	}
	if rss, ok := readRSS(); ok {
		r.RSSBytes = &rss
		st.peakRSS = max(st.peakRSS, rss)
	}
	r.GoHeapBytes, r.GoTotalBytes = st.heap.read()
	if sm.devOK {
		in, res := sm.devInUse, sm.devReserved
		r.DeviceMemInUse, r.DeviceMemReserved = &in, &res
		st.peakIn, st.peakRes, st.devKnown = max(st.peakIn, in), max(st.peakRes, res), true
	}
	if m.gpuOn {
		if gs, ok := m.gpuWindow(); ok {
			var util float64
			var used, total uint64
			for _, g := range gs {
				util += g.UtilPct
				used += g.MemUsed
				total += g.MemTotal
			}
			util /= float64(len(gs))
			idle := 1 - util/100
			r.GPUUtilPct, r.GPUIdleFrac, r.GPUMemUsed, r.GPUMemTotal, r.GPUs = &util, &idle, &used, &total, gs
		}
	}

	// Idle: NVML's figure when known, else the host's estimate — but not
	// when NVML runs and merely had no reading in this window (a short
	// window, or the run's first second without NVML samples): on a
	// GPU the pipeline keeps two batches in flight, so host time outside
	// Launch and Wait (packing, copying rows out, the final drain) overlaps
	// device work and 1 − compute_frac is not the device's idle time.
	idle, known := r.IdleFrac, !m.gpuOn
	if r.GPUIdleFrac != nil {
		idle, known = *r.GPUIdleFrac, true
	}
	if known && r.WindowBatches > 0 && wall > 0 && idle > m.opts.IdleThreshold {
		r.IdleCause = idleCause(r.LoaderWaitFrac, r.WriterWaitFrac, idle)
		now := sm.at
		if r.IdleCause != st.lastCause || now.Sub(st.lastWarn) >= m.opts.WarnInterval {
			msg := fmt.Sprintf("device idle %.0f%% of the last %d batches: likely %s", idle*100, r.WindowBatches, r.IdleCause)
			r.Warnings = append(r.Warnings, msg)
			m.log.Warn(msg, "loader_wait", fmt.Sprintf("%.0f%%", r.LoaderWaitFrac*100),
				"writer_wait", fmt.Sprintf("%.0f%%", r.WriterWaitFrac*100),
				"queue_depth", r.QueueDepth, "reader_queue", r.ReaderQueue)
			st.lastCause, st.lastWarn = r.IdleCause, now
		}
	}
	if r.RSSBytes != nil && !final {
		if fire, growth := st.leak.observe(*r.RSSBytes, s.QueueDepth, s.ReaderQueue); fire {
			msg := fmt.Sprintf("possible memory leak: RSS grew %s over the last %d windows while the queues stayed bounded",
				mib(growth), st.leak.windows)
			r.Warnings = append(r.Warnings, msg)
			m.log.Warn(msg, "rss", mib(*r.RSSBytes), "go_heap", mib(r.GoHeapBytes))
		}
	}
	st.warnings += len(r.Warnings)
	st.prev = *s
	st.lastRecord = r

	if m.opts.Human != nil {
		fmt.Fprintln(m.opts.Human, humanLine(r))
	}
	m.writeJSON(r)
	m.prom.update(r)
}

func secs(d time.Duration) float64 { return d.Seconds() }

func frac(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	f := float64(a) / float64(b)
	return min(max(f, 0), 1)
}

func perS(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// idleCause names why the device waited from the window's fractions.
func idleCause(loaderFrac, writerFrac, idle float64) string {
	switch {
	case loaderFrac >= writerFrac && loaderFrac >= idle/2:
		return CauseInput
	case writerFrac > loaderFrac && writerFrac >= idle/2:
		return CauseWriter
	default:
		return CauseOverhead
	}
}

func (m *Monitor) buildReport() Report {
	st := &m.st
	s := &st.prev
	rp := Report{
		Records: s.Records, Sequences: s.Embedded, Skipped: s.Skipped, Tokens: s.Tokens, Batches: s.Batches,
		Elapsed: s.Elapsed, SeqPerS: perS(s.Embedded, s.Elapsed), TokPerS: perS(s.Tokens, s.Elapsed),
		LoaderWaitFrac: frac(s.LoaderWait, s.Elapsed), WriterWaitFrac: frac(s.WriterWait, s.Elapsed),
		ComputeFrac: frac(s.Compute, s.Elapsed),
		PeakRSS:     st.peakRSS, PeakDeviceInUse: st.peakIn, PeakDeviceReserved: st.peakRes,
		DeviceMemKnown: st.devKnown, Windows: st.windows, Warnings: st.warnings,
	}
	if hwm, ok := readPeakRSS(); ok {
		rp.PeakRSS = max(rp.PeakRSS, hwm)
	}
	if m.gpuOn {
		rp.MeanGPUUtil, rp.GPUKnown = m.acc.meanUtil()
		rp.PeakGPUMem, _ = m.acc.peakUsed()
	}
	return rp
}
