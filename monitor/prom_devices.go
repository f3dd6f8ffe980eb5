package monitor

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// devProm are the per-device Prometheus figures, labelled gpu="N" (the
// device's NVML index) or, where that is unknown, gpu="<embed's name>"
// (cpu, cuda:1). They are registered at the first window with devices:
// absent, not zero, before.
type devProm struct {
	batches, sequences, tokens *prometheus.GaugeVec // totals per device (gauges: set from the run's totals)
	tokRate, seqRate           *prometheus.GaugeVec // gpu, scope="window"|"total"
	frac                       *prometheus.GaugeVec // gpu, what="compute"|"loader_wait"|"writer_wait"
	registered                 bool
}

func newDevProm() *devProm {
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "esm2go_device_" + name, Help: help}, append([]string{"gpu"}, labels...))
	}
	return &devProm{
		batches:   g("batches", "Batches this device computed."),
		sequences: g("sequences", "Sequences this device computed."),
		tokens:    g("tokens", "Tokens this device computed."),
		tokRate:   g("tokens_per_second", "Tokens this device computed per second over the last window or the whole run.", "scope"),
		seqRate:   g("sequences_per_second", "Sequences this device computed per second over the last window or the whole run.", "scope"),
		frac:      g("time_fraction", "Fraction of the last window this device's worker spent computing or waiting for the loader or the writer.", "what"),
	}
}

// deviceLabelValue is a device's gpu label value.
func deviceLabelValue(d *DeviceStat) string {
	if d.GPU != nil {
		return strconv.Itoa(*d.GPU)
	}
	return d.Name
}

func (p *devProm) update(reg *prometheus.Registry, r *Record) {
	if len(r.Devices) == 0 {
		return
	}
	if !p.registered {
		reg.MustRegister(p.batches, p.sequences, p.tokens, p.tokRate, p.seqRate, p.frac)
		p.registered = true
	}
	for k := range r.Devices {
		d := &r.Devices[k]
		l := deviceLabelValue(d)
		p.batches.WithLabelValues(l).Set(float64(d.Batches))
		p.sequences.WithLabelValues(l).Set(float64(d.Computed))
		p.tokens.WithLabelValues(l).Set(float64(d.Tokens))
		p.tokRate.WithLabelValues(l, "window").Set(d.TokPerS)
		p.seqRate.WithLabelValues(l, "window").Set(d.SeqPerS)
		if r.ElapsedS > 0 {
			p.tokRate.WithLabelValues(l, "total").Set(float64(d.Tokens) / r.ElapsedS)
			p.seqRate.WithLabelValues(l, "total").Set(float64(d.Computed) / r.ElapsedS)
		}
		p.frac.WithLabelValues(l, "compute").Set(d.ComputeFrac)
		p.frac.WithLabelValues(l, "loader_wait").Set(d.LoaderWaitFrac)
		p.frac.WithLabelValues(l, "writer_wait").Set(d.WriterWaitFrac)
	}
}
