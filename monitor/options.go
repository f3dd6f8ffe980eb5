package monitor

import (
	"io"
	"log/slog"
	"time"
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
	// Append, without Overwrite, appends to an existing regular JSONPath
	// (a resumed run continues its metrics file) instead of refusing it.
	Append bool
	// Human receives one line per window ("metrics: ..."); nil = none.
	Human io.Writer
	// OnWindow, when set, receives each window's record (and the final
	// one) on the monitor goroutine, after the JSON line: a display shows
	// it. It must return quickly and must not change r.
	OnWindow func(r *Record)
	// Log receives warnings; default discards.
	Log *slog.Logger
	// Addr, when set, serves the figures in Prometheus text format at
	// http://Addr/metrics ("127.0.0.1:9100"; a non-loopback host such as
	// ":9100" exposes the figures to the network).
	Addr string

	// NoGPU says the run computes on the CPU: no NVML, and no idle
	// warnings (the host's waits are not a device's idle time there).
	NoGPU bool
	// Devices are the NVML indices of the run's devices, in the order of
	// embed's (Summary.Devices[k] runs on NVML device Devices[k]; a repeat
	// is sampled once); nil = sample every device, unmatched to embed's.
	Devices []int
	// GPUPeriod is the NVML sampling period; default 500 ms.
	GPUPeriod time.Duration

	// IdleThreshold is the idle fraction of a window above which a warning
	// is given; default 0.10.
	IdleThreshold float64
	// JudgeAfterWindows and JudgeAfter: no window is judged idle before
	// the run's JudgeAfterWindows-th window and before JudgeAfter of run
	// time (the first windows hold warm-up: kernel compilation, the
	// packer's first fill, a short run's drain); defaults 3 and 10 s;
	// negative = from the first window.
	JudgeAfterWindows int
	JudgeAfter        time.Duration
	// Advice, when set, turns an idle cause (CauseInput, CauseWriter,
	// CauseOverhead) into what to try, appended to the warning; default
	// DefaultAdvice.
	Advice func(cause string) string
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

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
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
	if o.JudgeAfterWindows == 0 {
		o.JudgeAfterWindows = 3
	}
	if o.JudgeAfter == 0 {
		o.JudgeAfter = 10 * time.Second
	}
	if o.Advice == nil {
		o.Advice = DefaultAdvice
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
	return o
}
