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
	// MeanGPUUtil is the mean NVML utilization (percent) over the run, of
	// every reading of every device: from the compute start after loading
	// (Monitor.ComputeStarted), like Elapsed, else from New.
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
	// Devices is each of the run's devices' share (embed's order).
	Devices []DeviceTotal
}

// DeviceTotal is one device's share of a run.
type DeviceTotal struct {
	Name                      string
	GPU                       *int // NVML index, nil when unknown
	Batches, Computed, Tokens int64
	TokPerS                   float64
	// MeanUtil is its GPU's mean NVML utilization (percent) over the run,
	// counted from the same start as MeanGPUUtil.
	MeanUtil  float64
	UtilKnown bool
}

// Label names the device: "GPU 1" when its NVML index is known, else its
// name.
func (d *DeviceTotal) Label() string { return deviceLabel(d.GPU, d.Name) }

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
	lastWarn        map[string]warned // by device label
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
		Batches: s.Batches, Records: s.Records, Sequences: s.Embedded, Skipped: s.Skipped, Resumed: s.Resumed,
		Residues: s.Residues, Tokens: s.Tokens, ElapsedS: secs(s.Elapsed), InputBytes: s.InputBytes,
		WindowS: secs(wall), WindowBatches: s.Batches - p.Batches,
		WindowSequences: s.Embedded - p.Embedded, WindowTokens: s.Tokens - p.Tokens,
		ComputeS: secs(comp), LoaderWaitS: secs(lw), WriterWaitS: secs(ww),
		ComputeFrac: frac(comp, wall), LoaderWaitFrac: frac(lw, wall), WriterWaitFrac: frac(ww, wall),
		ComputeSTotal: secs(s.Compute), LoaderWaitSTotal: secs(s.LoaderWait), WriterWaitSTotal: secs(s.WriterWait),
		LoaderWaitFracTotal: frac(s.LoaderWait, s.Elapsed),
		QueueDepth:          s.QueueDepth, ReaderQueue: s.ReaderQueue,
		DroppedSamples: m.dropped.Load(),
	}
	if f, eta, ok := InputProgress(s); ok {
		size, etaS := s.InputSize, eta.Seconds()
		r.InputSizeBytes, r.InputFrac, r.ETAS = &size, &f, &etaS
	}
	computed, prevComputed := Computed(s), Computed(p)
	r.Computed, r.WindowComputed = computed, computed-prevComputed
	r.SeqPerS, r.TokPerS = perS(r.WindowComputed, wall), perS(r.WindowTokens, wall)
	r.SeqPerSTotal, r.TokPerSTotal = perS(computed, s.Elapsed), perS(s.Tokens, s.Elapsed)
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
	r.Devices = m.deviceStats(s, p, wall, r.GPUs)

	m.judge(r, s, p, wall, sm.at, final)
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
	if m.opts.OnWindow != nil {
		m.opts.OnWindow(r)
	}
}

// Computed is the sequences the devices computed (as their batches
// completed), or the rows written where the devices report none (a summary
// without Devices).
func Computed(s *embed.Summary) int64 {
	if len(s.Devices) == 0 {
		return s.Embedded
	}
	var n int64
	for _, d := range s.Devices {
		n += d.Sequences
	}
	return n
}

// InputProgress returns the fraction of the run done and an estimate of
// the time left at the run's mean pace so far; ok is false when the
// input's size is not known (stdin, a named pipe) or nothing was read yet.
// The fraction is the input bytes read, scaled by the share of the records
// in the blocks read that are done (computed, skipped, or committed by an
// earlier run): the reader works ahead of the devices, a block at a time
// (~1 MiB), so bytes alone reach 100% early; and the packer works ahead
// of the devices too, so the records it has taken are not the denominator
// either (an input of one block showed 70% with 8% done).
// A resumed run reads past the committed records quickly, so its first
// estimates of the time left are low.
func InputProgress(s *embed.Summary) (frac float64, eta time.Duration, ok bool) {
	if s.InputSize <= 0 || s.InputBytes <= 0 {
		return 0, 0, false
	}
	frac = min(float64(s.InputBytes)/float64(s.InputSize), 1)
	if read := max(s.RecordsRead, s.Records); read > 0 {
		frac *= min(float64(Computed(s)+s.Skipped+s.Resumed)/float64(read), 1)
	}
	if frac > 0 && frac < 1 && s.Elapsed > 0 {
		eta = time.Duration((1 - frac) / frac * float64(s.Elapsed))
	}
	return frac, eta, true
}

// deviceStats gives each of the run's devices' figures over the window,
// with its GPU's NVML figures where its index is known.
func (m *Monitor) deviceStats(s, p *embed.Summary, wall time.Duration, gs []GPUStat) []DeviceStat {
	if len(s.Devices) == 0 {
		return nil
	}
	out := make([]DeviceStat, len(s.Devices))
	for k, d := range s.Devices {
		var pd embed.DeviceSummary
		if k < len(p.Devices) {
			pd = p.Devices[k]
		}
		ds := DeviceStat{Name: d.Name, Batches: d.Batches, WindowBatches: d.Batches - pd.Batches,
			Computed: d.Sequences, Tokens: d.Tokens,
			SeqPerS: perS(d.Sequences-pd.Sequences, wall), TokPerS: perS(d.Tokens-pd.Tokens, wall),
			ComputeFrac:    frac(d.Compute-pd.Compute, wall),
			LoaderWaitFrac: frac(d.LoaderWait-pd.LoaderWait, wall),
			WriterWaitFrac: frac(d.WriterWait-pd.WriterWait, wall)}
		if d.MemKnown {
			in, res := d.MemInUse, d.MemReserved
			ds.AllocInUse, ds.AllocReserved = &in, &res
		}
		if k < len(m.opts.Devices) {
			idx := m.opts.Devices[k]
			ds.GPU = &idx
			for _, g := range gs {
				if g.Index == idx {
					u, used, total := g.UtilPct, g.MemUsed, g.MemTotal
					ds.UtilPct, ds.MemUsed, ds.MemTotal = &u, &used, &total
				}
			}
		}
		out[k] = ds
	}
	return out
}

// idleUnit is what is judged idle: the whole run, or one device of several.
type idleUnit struct {
	label                 string
	idle                  float64
	loaderFrac, writeFrac float64
	dev                   *DeviceStat // nil: the whole run
}

// judge decides whether the window's device (each device, when the run has
// several) idled, names the likely cause and warns, at most once per
// WarnInterval per device and cause. A window is not judged on the CPU,
// in warm-up (JudgeAfterWindows, JudgeAfter), at the end (the final
// record covers the drain), while the run reads past an
// earlier run's committed records (its devices wait for input that is
// being skipped, not for a slow loader), or without a batch.
func (m *Monitor) judge(r *Record, s, p *embed.Summary, wall time.Duration, at time.Time, final bool) {
	o := &m.opts
	switch {
	case o.NoGPU:
		r.NotJudged = "cpu run"
	case final:
		r.NotJudged = "final" // the drain: devices run out of work one by one
	case r.WindowBatches == 0 || wall <= 0:
		r.NotJudged = "no batch"
	case m.st.windows < o.JudgeAfterWindows || s.Elapsed < o.JudgeAfter:
		r.NotJudged = "warm-up"
	case s.Resumed > p.Resumed:
		r.NotJudged = "resuming"
	}
	if r.NotJudged != "" {
		return
	}
	var units []idleUnit
	if len(r.Devices) > 1 {
		for k := range r.Devices {
			d := &r.Devices[k]
			u := idleUnit{label: d.Label(), loaderFrac: d.LoaderWaitFrac, writeFrac: d.WriterWaitFrac, dev: d}
			switch {
			case d.UtilPct != nil:
				u.idle = 1 - *d.UtilPct/100
			case !m.gpuOn && d.WindowBatches > 0:
				u.idle = 1 - d.ComputeFrac
			default:
				continue // NVML runs but had no reading of it: see below
			}
			units = append(units, u)
		}
	} else {
		// Idle: NVML's figure when known, else the host's estimate — but
		// not when NVML runs and merely had no reading in this window (a
		// short window, or the run's first second without NVML samples):
		// on a GPU the pipeline keeps two batches in flight, so host time
		// outside Launch and Wait (packing, copying rows out, the final
		// drain) overlaps device work and 1 − compute_frac is not the
		// device's idle time.
		u := idleUnit{label: "device", loaderFrac: r.LoaderWaitFrac, writeFrac: r.WriterWaitFrac}
		if len(r.Devices) == 1 {
			u.label = r.Devices[0].Label()
		}
		switch {
		case r.GPUIdleFrac != nil:
			u.idle = *r.GPUIdleFrac
		case !m.gpuOn:
			u.idle = r.IdleFrac
		default:
			return
		}
		units = append(units, u)
	}
	st := &m.st
	if st.lastWarn == nil {
		st.lastWarn = map[string]warned{}
	}
	for _, u := range units {
		if u.idle <= o.IdleThreshold {
			continue
		}
		cause := idleCause(u.loaderFrac, u.writeFrac, u.idle)
		if u.dev != nil {
			u.dev.IdleCause = cause
		}
		if r.IdleCause == "" {
			r.IdleCause = cause
		}
		last := st.lastWarn[u.label]
		if cause == last.cause && at.Sub(last.at) < o.WarnInterval {
			continue
		}
		msg := fmt.Sprintf("%s idle %.0f%% of the last window (%d batches, %s): likely %s",
			u.label, u.idle*100, r.WindowBatches, wall.Round(time.Millisecond), cause)
		advice := o.Advice(cause)
		if advice != "" {
			msg += "; " + advice
		}
		r.Warnings = append(r.Warnings, msg)
		m.log.Warn(msg, "loader_wait", fmt.Sprintf("%.0f%%", u.loaderFrac*100),
			"writer_wait", fmt.Sprintf("%.0f%%", u.writeFrac*100),
			"queue_depth", r.QueueDepth, "reader_queue", r.ReaderQueue)
		st.lastWarn[u.label] = warned{cause: cause, at: at}
	}
}

// warned is the last idle warning given for a device.
type warned struct {
	cause string
	at    time.Time
}

// DefaultAdvice says what to try for an idle cause, without naming the
// command's flags.
func DefaultAdvice(cause string) string {
	switch cause {
	case CauseInput:
		return "more reader goroutines, a faster input disk, or larger batches"
	case CauseWriter:
		return "a faster output disk, or fewer outputs per record"
	case CauseOverhead:
		return "larger batches (more tokens per batch)"
	}
	return ""
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
		rp.PeakGPUMem = m.acc.peakUsed()
	}
	for k, d := range s.Devices {
		dt := DeviceTotal{Name: d.Name, Batches: d.Batches, Computed: d.Sequences, Tokens: d.Tokens, TokPerS: perS(d.Tokens, s.Elapsed)}
		if k < len(m.opts.Devices) {
			idx := m.opts.Devices[k]
			dt.GPU = &idx
			if m.gpuOn {
				dt.MeanUtil, dt.UtilKnown = m.acc.meanUtilOf(idx)
			}
		}
		rp.Devices = append(rp.Devices, dt)
	}
	return rp
}
