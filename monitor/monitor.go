// Package monitor watches an embedding run and tells, window by window,
// whether the device is fed: throughput, loader and writer wait, queue
// depths, process and GPU memory, GPU utilization (NVML, when the NVIDIA
// driver library is present). Each window gives a human line, a JSON object
// per line and Prometheus gauges; a device idle for more than a tenth of a
// window gives a warning naming the likely cause, and steady RSS growth with
// bounded queues gives a leak warning.
//
// Cost on the pipeline: Observe is the embed.ProgressFunc and runs on the
// compute goroutine. Between windows it is one comparison; at a window it
// copies the Summary and makes a non-blocking send to the monitor goroutine
// (a window is skipped, not waited for, when that goroutine lags). Everything
// else (reading /proc, runtime/metrics, NVML, encoding, writing, HTTP) runs on
// the monitor's own goroutines. A failing NVML or metrics file gives one
// warning and the run goes on.
package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/esm2go/esm2go/embed"
)

// Options configure a Monitor. Zero values take the defaults noted.
type Options struct {
	// Every is the window length in batches; default 10.
	Every int
	// JSON receives one JSON object (a Record) per line per window.
	JSON io.Writer
	// JSONPath, when JSON is nil, names a file New creates for the JSON
	// lines; Close closes it. An existing file is an error unless Overwrite,
	// and even then only a regular file is truncated.
	JSONPath  string
	Overwrite bool
	// Human receives one line per window ("metrics: ..."); nil = none.
	Human io.Writer
	// Log receives warnings; default discards.
	Log *slog.Logger
	// Addr, when set, serves the figures in Prometheus text format at
	// http://Addr/metrics ("127.0.0.1:9100"; a non-loopback host such as
	// ":9100" exposes the figures to the network).
	Addr string

	// NoGPU turns NVML off (a CPU run).
	NoGPU bool
	// Devices are the NVML device indices to sample; nil = all.
	Devices []int
	// GPUPeriod is the NVML sampling period; default 500 ms.
	GPUPeriod time.Duration

	// IdleThreshold is the idle fraction of a window above which a warning
	// is given; default 0.10.
	IdleThreshold float64
	// WarnInterval is the least time between two idle warnings with the
	// same cause; default 30 s. Every window's record names the cause.
	WarnInterval time.Duration
	// LeakWindows and LeakBytes: warn when RSS grows by more than LeakBytes
	// in each of LeakWindows consecutive windows while the queues stay
	// bounded; defaults 3 and 16 MiB.
	LeakWindows int
	LeakBytes   int64

	// Clock gives record timestamps and times NVML's readings (so that
	// none averaging time before the start is counted); default time.Now.
	// It is called from several goroutines.
	Clock func() time.Time

	gpu gpuReader // tests inject a fake NVML
}

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

// Monitor watches one run. Observe is safe to call from one goroutine at a
// time (the compute goroutine, as embed does); Close from any.
type Monitor struct {
	opts  Options
	log   *slog.Logger
	clock func() time.Time
	ctx   context.Context
	every int64

	// Observe's state (the caller's goroutine).
	next int64

	ch      chan sample
	dropped atomic.Int64
	finalMu sync.Mutex
	final   *sample

	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	report    Report
	closeErr  error

	gpu       gpuReader
	gpuOn     bool
	acc       gpuAcc
	gpuWarned atomic.Bool

	jsonW      io.Writer
	jsonFile   *os.File
	jsonFailed bool
	jsonWarned atomic.Bool

	srv   *http.Server
	ln    net.Listener
	srvWG sync.WaitGroup
	prom  *promMetrics

	// Monitor goroutine state (then Close's, after the goroutine ends).
	st state
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

// New starts a monitor: the monitor goroutine, NVML sampling when the
// library loads, and the HTTP server when Addr is set. It fails only on a
// metrics file that cannot be created or an address that cannot be bound.
// Cancelling ctx stops the goroutines (Close is still needed).
func New(ctx context.Context, opts Options) (*Monitor, error) {
	o := opts
	if o.Every <= 0 {
		o.Every = 10
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.GPUPeriod <= 0 {
		o.GPUPeriod = 500 * time.Millisecond
	}
	if o.IdleThreshold <= 0 {
		o.IdleThreshold = 0.10
	}
	if o.WarnInterval <= 0 {
		o.WarnInterval = 30 * time.Second
	}
	if o.LeakWindows <= 0 {
		o.LeakWindows = 3
	}
	if o.LeakBytes <= 0 {
		o.LeakBytes = 16 << 20
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if ctx == nil {
		ctx = context.Background()
	}
	m := &Monitor{opts: o, log: o.Log, clock: o.Clock, ctx: ctx, every: int64(o.Every),
		next: int64(o.Every), ch: make(chan sample, 4), stop: make(chan struct{})}
	m.st.heap = newGoMem()
	m.st.leak = leakDetector{windows: o.LeakWindows, bytes: o.LeakBytes}
	m.jsonW = o.JSON
	if m.jsonW == nil && o.JSONPath != "" {
		f, err := createJSON(o.JSONPath, o.Overwrite)
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		m.jsonFile, m.jsonW = f, f
	}
	m.prom = newProm()
	if o.Addr != "" {
		ln, err := net.Listen("tcp", o.Addr)
		if err != nil {
			if m.jsonFile != nil {
				m.jsonFile.Close()
			}
			return nil, fmt.Errorf("metrics: %w", err)
		}
		m.ln = ln
		m.srv = &http.Server{Handler: m.prom.handler(), ReadHeaderTimeout: 5 * time.Second}
		m.srvWG.Add(1)
		go func() {
			defer m.srvWG.Done()
			if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				m.log.Warn("metrics server stopped (the run goes on)", "err", err)
			}
		}()
	}
	if !o.NoGPU {
		m.gpu = o.gpu
		if m.gpu == nil {
			m.gpu = &nvmlReader{}
		}
		ok, err := m.startGPU()
		switch {
		case ok:
			m.gpuOn = true
			m.wg.Add(1)
			go m.sampleGPU(o.GPUPeriod)
		case o.Devices != nil:
			// GPU figures were asked for: say once why there are none.
			m.warnOnce(&m.gpuWarned, "no GPU utilization or memory figures", "err", err)
		default:
			m.log.Debug("no GPU figures", "err", err)
		}
	}
	m.wg.Add(1)
	go m.loop()
	return m, nil
}

// Addr returns the address the Prometheus endpoint listens on ("" when
// none): with Addr ":0" the port chosen.
func (m *Monitor) Addr() string {
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// GPU reports whether NVML sampling is running.
func (m *Monitor) GPU() bool { return m.gpuOn }

// Observe is the embed.ProgressFunc: cheap, never blocks. Between windows
// it is one comparison; at a window boundary it copies s and hands it to
// the monitor goroutine (skipping the window when that goroutine lags).
// The final call is kept for Close.
func (m *Monitor) Observe(s *embed.Summary, final bool) {
	if s == nil {
		return
	}
	if !final && s.Batches < m.next {
		return
	}
	if final {
		sm := &sample{s: *s, at: m.clock()}
		sm.s.Devices = slices.Clone(s.Devices)
		m.deviceMemory(sm)
		m.finalMu.Lock()
		m.final = sm
		m.finalMu.Unlock()
		return
	}
	// The window ends here whether or not the monitor takes it: a lagging
	// monitor merges it into the next one instead of costing every batch.
	m.next = s.Batches + m.every
	var sm sample
	sm.s, sm.at = *s, m.clock()
	sm.s.Devices = slices.Clone(s.Devices) // s is reused by the caller
	m.deviceMemory(&sm)
	select {
	case m.ch <- sm:
	default:
		m.dropped.Add(1)
	}
}

// deviceMemory sums the devices' allocator figures (embed reports them per
// device after each batch).
func (m *Monitor) deviceMemory(sm *sample) {
	for _, d := range sm.s.Devices {
		if d.MemKnown {
			sm.devInUse += d.MemInUse
			sm.devReserved += d.MemReserved
			sm.devOK = true
		}
	}
}

func (m *Monitor) loop() {
	defer m.wg.Done()
	for {
		select {
		case sm := <-m.ch:
			m.window(&sm, false)
		case <-m.stop:
			for {
				select {
				case sm := <-m.ch:
					m.window(&sm, false)
				default:
					return
				}
			}
		case <-m.ctx.Done():
			return
		}
	}
}

// Close stops sampling and serving, writes the final record (from the
// Observe call with final=true, else the last window) and returns the
// end-of-run report. Its error is the metrics file's close error; write
// errors were already given as a warning. Close is idempotent.
func (m *Monitor) Close() (Report, error) {
	m.closeOnce.Do(func() {
		close(m.stop)
		m.wg.Wait()
		m.finalMu.Lock()
		f := m.final
		m.finalMu.Unlock()
		if f != nil && f.s.Batches >= m.st.prev.Batches {
			m.window(f, true)
		}
		if m.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := m.srv.Shutdown(ctx); err != nil {
				m.srv.Close()
			}
			cancel()
			m.srvWG.Wait()
		}
		if m.jsonFile != nil {
			if err := m.jsonFile.Close(); err != nil && !m.jsonFailed {
				m.closeErr = fmt.Errorf("metrics: %w", err)
			}
		}
		m.report = m.buildReport()
	})
	return m.report, m.closeErr
}

func (m *Monitor) warnOnce(flag *atomic.Bool, msg string, args ...any) {
	if flag.CompareAndSwap(false, true) {
		m.log.Warn(msg, args...)
	}
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

// leakDetector fires when RSS grows by more than bytes in each of windows
// consecutive windows while neither queue reaches a new high-water mark
// (growth a filling queue explains is not a leak). It fires once per
// streak.
type leakDetector struct {
	windows int
	bytes   int64

	have       bool
	prev       int64
	hwQ, hwR   int
	streak     int
	streakBase int64
	fired      bool
}

func (l *leakDetector) observe(rss int64, queue, readerQueue int) (fire bool, growth int64) {
	if !l.have {
		l.have, l.prev, l.hwQ, l.hwR = true, rss, queue, readerQueue
		return false, 0
	}
	bounded := queue <= l.hwQ && readerQueue <= l.hwR
	l.hwQ, l.hwR = max(l.hwQ, queue), max(l.hwR, readerQueue)
	if rss-l.prev > l.bytes && bounded {
		if l.streak == 0 {
			l.streakBase = l.prev
		}
		l.streak++
	} else {
		l.streak, l.fired = 0, false
	}
	l.prev = rss
	if l.streak >= l.windows && !l.fired {
		l.fired = true
		return true, rss - l.streakBase
	}
	return false, 0
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
