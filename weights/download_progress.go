package weights

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress reports one file's download: a bar on a terminal, else a plain line
// at each tenth of the file and at least every interval while bytes arrive.
// It lives across the retries of the file.
type progress struct {
	bar      *progressbar.ProgressBar
	w        io.Writer
	name     string
	total    int64 // -1 when unknown
	done     int64
	interval time.Duration

	since     time.Time // rate reference: time and byte count
	sinceN    int64
	last      time.Time // last plain line
	lastTenth int64
}

func newProgress(w io.Writer, name string, total, start int64, interval time.Duration) *progress {
	now := time.Now()
	p := &progress{w: w, name: name, total: total, done: start, interval: interval, since: now, sinceN: start, last: now, lastTenth: -1}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(name),
			progressbar.OptionShowBytes(true), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))
		p.bar.Set64(start)
		return p
	}
	p.lastTenth = p.tenth()
	fmt.Fprintf(w, "downloading %s: %s\n", name, p.amount())
	return p
}

func (p *progress) tenth() int64 {
	if p.total <= 0 {
		return -1
	}
	return p.done * 10 / p.total
}

func (p *progress) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.bar != nil {
		p.bar.Add(len(b))
		return len(b), nil
	}
	if t := p.tenth(); t > p.lastTenth || time.Since(p.last) >= p.interval {
		p.lastTenth, p.last = t, time.Now()
		fmt.Fprintf(p.w, "downloading %s: %s\n", p.name, p.amount())
	}
	return len(b), nil
}

// set moves the count to n (a restart from zero when the server ignored a
// range request).
func (p *progress) set(n int64) {
	p.done, p.sinceN, p.since = n, n, time.Now()
	p.lastTenth = p.tenth()
	if p.bar != nil {
		p.bar.Set64(n)
	}
}

// interrupt makes room for a log line: it clears a terminal bar, which the
// next update redraws.
func (p *progress) interrupt() {
	if p.bar != nil {
		p.bar.Clear()
	}
}

func (p *progress) amount() string {
	s := byteSize(p.done)
	if p.total > 0 {
		s = fmt.Sprintf("%s of %s (%d%%)", s, byteSize(p.total), p.done*100/p.total)
	}
	if el := time.Since(p.since); el >= time.Second && p.done > p.sinceN {
		rate := float64(p.done-p.sinceN) / el.Seconds()
		s += fmt.Sprintf(", %s/s", byteSize(int64(rate)))
		if p.total > p.done {
			left := time.Duration(float64(p.total-p.done) / rate * float64(time.Second))
			s += fmt.Sprintf(", about %s left", left.Round(time.Second))
		}
	}
	return s
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
		return
	}
	fmt.Fprintf(p.w, "downloaded %s: %s\n", p.name, byteSize(p.done))
}

// byteSize formats n bytes in binary units.
func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
