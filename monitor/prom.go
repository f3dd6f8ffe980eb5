package monitor

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// promMetrics are the figures in Prometheus form, on a private registry,
// updated at each window by the monitor goroutine.
type promMetrics struct {
	reg *prometheus.Registry

	sequences, records, skipped, tokens, batches prometheus.Counter
	loaderWait, writerWait, compute              prometheus.Counter
	elapsed                                      prometheus.Gauge
	seqRate, tokRate                             *prometheus.GaugeVec // scope="window"|"total"
	frac                                         *prometheus.GaugeVec // what="compute"|"loader_wait"|"writer_wait"|"idle"
	queueDepth, readerQueue                      prometheus.Gauge
	rss, goHeap, goTotal                         prometheus.Gauge
	devInUse, devReserved                        prometheus.Gauge
	gpuUtil, gpuMemUsed, gpuMemTotal             *prometheus.GaugeVec // gpu="N" (NVML index)
	dev                                          *devProm
	warnings                                     prometheus.Counter

	lastRecords, lastSkipped int64
	devRegistered            bool

	page *pageHistory // the live page at / (page.go)
}

func newProm() *promMetrics {
	p := &promMetrics{reg: prometheus.NewRegistry(), page: newPageHistory(PageWindows)}
	c := func(name, help string) prometheus.Counter {
		x := prometheus.NewCounter(prometheus.CounterOpts{Name: "esm2go_" + name, Help: help})
		p.reg.MustRegister(x)
		return x
	}
	g := func(name, help string) prometheus.Gauge {
		x := prometheus.NewGauge(prometheus.GaugeOpts{Name: "esm2go_" + name, Help: help})
		p.reg.MustRegister(x)
		return x
	}
	gv := func(name, help string, label string) *prometheus.GaugeVec {
		x := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "esm2go_" + name, Help: help}, []string{label})
		p.reg.MustRegister(x)
		return x
	}
	p.sequences = c("sequences_total", "Sequences embedded.")
	p.records = c("records_total", "FASTA records read (embedded and skipped).")
	p.skipped = c("skipped_total", "Records that could not be embedded.")
	p.tokens = c("tokens_total", "Tokens computed (residues plus BOS/EOS).")
	p.batches = c("batches_total", "Packed batches computed.")
	p.loaderWait = c("loader_wait_seconds_total", "Time the compute stage waited for its next batch.")
	p.writerWait = c("writer_wait_seconds_total", "Time the compute stage waited for a free output buffer.")
	p.compute = c("compute_seconds_total", "Time spent in the model's forward pass.")
	p.warnings = c("warnings_total", "Idle and leak warnings given.")
	p.elapsed = g("elapsed_seconds", "Wall time since the run started.")
	p.seqRate = gv("sequences_per_second", "Sequences computed per second over the last window or the whole run (counted as batches complete).", "scope")
	p.tokRate = gv("tokens_per_second", "Tokens computed per second over the last window or the whole run.", "scope")
	p.frac = gv("time_fraction", "Fraction of the last window's wall time spent computing, waiting for the loader or the writer, or idle (host estimate).", "what")
	p.queueDepth = g("queue_depth", "Packed batches ready for the compute stage.")
	p.readerQueue = g("reader_queue", "FASTA blocks waiting in the reader queue.")
	p.rss = g("process_rss_bytes", "Resident set size of the process.")
	p.goHeap = g("go_heap_bytes", "Bytes of Go heap objects.")
	p.goTotal = g("go_memory_bytes", "All memory mapped by the Go runtime.")
	p.gpuUtil = gv("gpu_utilization_percent", "NVML GPU utilization, mean over the last window.", "gpu")
	p.gpuMemUsed = gv("gpu_memory_used_bytes", "NVML device memory in use.", "gpu")
	p.gpuMemTotal = gv("gpu_memory_total_bytes", "NVML device memory total.", "gpu")
	p.dev = newDevProm()
	// The allocator gauges are registered on first use: absent, not zero,
	// without a MemoryReporter.
	p.devInUse = prometheus.NewGauge(prometheus.GaugeOpts{Name: "esm2go_device_memory_in_use_bytes", Help: "Device memory handed out by the backend's allocator."})
	p.devReserved = prometheus.NewGauge(prometheus.GaugeOpts{Name: "esm2go_device_memory_reserved_bytes", Help: "Device memory held by the backend's allocator."})
	return p
}

func (p *promMetrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{}))
	p.page.register(mux)
	return mux
}

func (p *promMetrics) update(r *Record) {
	p.page.add(r)
	p.sequences.Add(float64(r.WindowSequences))
	p.tokens.Add(float64(r.WindowTokens))
	p.batches.Add(float64(r.WindowBatches))
	p.loaderWait.Add(r.LoaderWaitS)
	p.writerWait.Add(r.WriterWaitS)
	p.compute.Add(r.ComputeS)
	p.warnings.Add(float64(len(r.Warnings)))
	// Records and skipped are totals without a window figure.
	if r.Records > p.lastRecords {
		p.records.Add(float64(r.Records - p.lastRecords))
		p.lastRecords = r.Records
	}
	if r.Skipped > p.lastSkipped {
		p.skipped.Add(float64(r.Skipped - p.lastSkipped))
		p.lastSkipped = r.Skipped
	}
	p.elapsed.Set(r.ElapsedS)
	p.seqRate.WithLabelValues("window").Set(r.SeqPerS)
	p.seqRate.WithLabelValues("total").Set(r.SeqPerSTotal)
	p.tokRate.WithLabelValues("window").Set(r.TokPerS)
	p.tokRate.WithLabelValues("total").Set(r.TokPerSTotal)
	p.frac.WithLabelValues("compute").Set(r.ComputeFrac)
	p.frac.WithLabelValues("loader_wait").Set(r.LoaderWaitFrac)
	p.frac.WithLabelValues("writer_wait").Set(r.WriterWaitFrac)
	p.frac.WithLabelValues("idle").Set(r.IdleFrac)
	p.queueDepth.Set(float64(r.QueueDepth))
	p.readerQueue.Set(float64(r.ReaderQueue))
	if r.RSSBytes != nil {
		p.rss.Set(float64(*r.RSSBytes))
	}
	p.goHeap.Set(float64(r.GoHeapBytes))
	p.goTotal.Set(float64(r.GoTotalBytes))
	if r.DeviceMemInUse != nil {
		if !p.devRegistered {
			p.reg.MustRegister(p.devInUse, p.devReserved)
			p.devRegistered = true
		}
		p.devInUse.Set(float64(*r.DeviceMemInUse))
		p.devReserved.Set(float64(*r.DeviceMemReserved))
	}
	p.dev.update(p.reg, r)
	for _, g := range r.GPUs {
		d := strconv.Itoa(g.Index)
		p.gpuUtil.WithLabelValues(d).Set(g.UtilPct)
		p.gpuMemUsed.WithLabelValues(d).Set(float64(g.MemUsed))
		p.gpuMemTotal.WithLabelValues(d).Set(float64(g.MemTotal))
	}
}
