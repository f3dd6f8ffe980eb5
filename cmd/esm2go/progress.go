package main

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/esm2go/esm2go/embed"
)

// progress reports a run: a live line on a terminal, else a log line every
// logEvery batches; a summary line at the end.
type progress struct {
	w     io.Writer
	tty   bool
	log   *slog.Logger
	start time.Time

	lastBatch int64     // batches at the last log line
	lastDraw  time.Time // last live line
	drawn     bool
}

const (
	logEvery   = 10 // batches between log lines when stderr is not a terminal
	drawPeriod = 200 * time.Millisecond
)

func (p *progress) elapsed(s *embed.Summary) time.Duration {
	if s.Elapsed > 0 {
		return s.Elapsed
	}
	return time.Since(p.start)
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// update is the embed.ProgressFunc.
func (p *progress) update(s *embed.Summary, final bool) {
	el := p.elapsed(s)
	if p.tty {
		now := time.Now()
		if final || now.Sub(p.lastDraw) < drawPeriod {
			return
		}
		p.lastDraw, p.drawn = now, true
		fmt.Fprintf(p.w, "\r\033[K%d embedded of %d read  %d skipped  %.0f records/s  %.0f tokens/s  %s",
			s.Embedded, s.Records, s.Skipped, rate(s.Embedded, el), rate(s.Tokens, el), el.Round(time.Second))
		return
	}
	if final || s.Batches-p.lastBatch < logEvery {
		return
	}
	p.lastBatch = s.Batches
	p.log.Info("progress",
		"records", s.Records, "embedded", s.Embedded, "skipped", s.Skipped, "batches", s.Batches,
		"records_per_s", round1(rate(s.Embedded, el)), "tokens_per_s", round1(rate(s.Tokens, el)),
		"loader_wait", dur(s.LoaderWait), "writer_wait", dur(s.WriterWait),
		"queue_depth", s.QueueDepth, "reader_queue", s.ReaderQueue)
}

// clear erases the live line.
func (p *progress) clear() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

// summary logs the final account of a run.
func (p *progress) summary(s *embed.Summary, out string) {
	el := p.elapsed(s)
	if s.Output != "" {
		out = s.Output
	}
	p.log.Info("done",
		"records", s.Records, "embedded", s.Embedded, "skipped", s.Skipped, "truncated", s.Truncated,
		"time", dur(el), "records_per_s", round1(rate(s.Embedded, el)),
		"tokens_per_s", round1(rate(s.Tokens, el)), "output", out)
}

func round1(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }

// dur formats a duration the same way in text and json logs ("1.234s").
func dur(d time.Duration) string { return d.Round(time.Millisecond).String() }
