package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	// embed only for embed.Summary, the cumulative figures Observe (an
	// embed.ProgressFunc) receives. embed never imports monitor, so the
	// dependency points one way; a copy of the type here would have to track
	// embed's fields one by one.
	"github.com/esm2go/esm2go/embed"
)

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

// New starts a monitor: the monitor goroutine, NVML sampling when the
// library loads, and the HTTP server when Addr is set. It fails only on a
// metrics file that cannot be created or an address that cannot be bound.
// Cancelling ctx stops the goroutines (Close is still needed).
func New(ctx context.Context, opts Options) (*Monitor, error) {
	o := opts.withDefaults()
	if ctx == nil {
		ctx = context.Background()
	}
	m := &Monitor{opts: o, log: o.Log, clock: o.Clock, ctx: ctx, every: int64(o.Every),
		next: int64(o.Every), ch: make(chan sample, 4), stop: make(chan struct{})}
	m.st.heap = newGoMem()
	m.st.leak = leakDetector{windows: o.LeakWindows, bytes: o.LeakBytes}
	m.jsonW = o.JSON
	if m.jsonW == nil && o.JSONPath != "" {
		f, err := createJSON(o.JSONPath, o.Overwrite, o.Append)
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
