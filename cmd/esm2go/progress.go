package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/esm2go/esm2go/embed"
	"github.com/esm2go/esm2go/monitor"
	"golang.org/x/term"
)

// This file is what the user sees while an embed run goes and at its end.
//
//   - On a terminal (text log, not --quiet): two live lines redrawn in
//     place, the progress (a bar of input bytes read when the input's size
//     is known, records and tokens done, rates, ETA, skipped) and the
//     latest metrics window. A log record (a warning) clears them, prints,
//     and redraws them.
//   - Not on a terminal: one log record per metrics window, the progress
//     and the window's figures merged ("progress"), never two for the same
//     moment.
//   - --log-format json: every line on stderr is a JSON object with typed
//     fields: log records, progress windows, download progress, the final
//     metrics and summary, the final error (run in cli.go).
//   - At the end: a summary read at a glance.

const (
	drawPeriod   = 200 * time.Millisecond // least time between two redraws of the live lines
	defaultWidth = 80                     // terminal columns when the size cannot be read
)

// display owns stderr during an embed run; the run's logger writes through
// it (Write), so that a log record never lands inside a live line.
type display struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool // live lines are drawn
	json  bool
	quiet bool
	width func() int
	now   func() time.Time
	start time.Time
	log   *slog.Logger // set by attach
	skips skipTally

	bar, win string // live lines: progress; the latest metrics window
	shown    int    // live lines on the screen now
	lastDraw time.Time
	done     bool // finish was called: no more live lines
}

// newDisplay returns the display of a run writing to stderr: live lines
// when stderr is a terminal and the log is text and not quiet.
func newDisplay(stderr io.Writer, quiet, json bool) *display {
	d := &display{w: stderr, json: json, quiet: quiet, width: termWidth(stderr), now: time.Now}
	d.tty = isTerminal(stderr) && !quiet && !json
	d.start = d.now()
	return d
}

// termWidth returns a function reading w's terminal width (defaultWidth
// when w is not a terminal or its size cannot be read).
func termWidth(w io.Writer) func() int {
	f, ok := w.(*os.File)
	return func() int {
		if ok {
			if c, _, err := term.GetSize(int(f.Fd())); err == nil && c > 0 {
				return c
			}
		}
		return defaultWidth
	}
}

// Write writes log output: the live lines are cleared first and redrawn
// after.
func (d *display) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clearLocked()
	n, err := d.w.Write(p)
	d.drawLocked()
	return n, err
}

// attach wraps log's handler so that skipped records are counted by reason
// (for the summary) and keeps log for the display's own records.
func (d *display) attach(log *slog.Logger) *slog.Logger {
	d.log = slog.New(&tallyHandler{Handler: log.Handler(), t: &d.skips})
	return d.log
}

// downloadWriter is where the weights download reports progress: stderr
// itself in text (a bar on a terminal, lines elsewhere), a log record per
// line in json.
func (d *display) downloadWriter() io.Writer {
	if d.json {
		return &jsonLines{log: d.log}
	}
	return d.w
}

// watch hooks the display and the monitor to the run: progress after
// every batch, and the compute start after loading, from which the
// monitor counts GPU utilization as the run counts its other figures.
func (d *display) watch(opts *embed.Options, mon *monitor.Monitor) {
	opts.Progress = d.observe(mon)
	opts.Started = mon.ComputeStarted
}

// observe returns the embed.ProgressFunc of the run: the live line, then
// the monitor.
func (d *display) observe(mon *monitor.Monitor) embed.ProgressFunc {
	if !d.tty {
		return mon.Observe
	}
	return func(s *embed.Summary, final bool) {
		d.update(s, final)
		mon.Observe(s, final)
	}
}

// update redraws the progress line, at most every drawPeriod (a device's
// worker goroutine calls it after every batch).
func (d *display) update(s *embed.Summary, final bool) {
	if !d.tty || final {
		return
	}
	now := d.now()
	// A display busy writing (a terminal that does not take output, paused
	// with Ctrl-S) skips this redraw rather than hold up the device.
	if !d.mu.TryLock() {
		return
	}
	defer d.mu.Unlock()
	if d.done || now.Sub(d.lastDraw) < drawPeriod {
		return
	}
	d.lastDraw = now
	d.bar = progressLine(s, d.width()-1)
	d.clearLocked()
	d.drawLocked()
}

// onWindow shows a metrics window: the second live line on a terminal, a
// merged progress record in a log (monitor goroutine). The final record is
// left to the summary.
func (d *display) onWindow(r *monitor.Record) {
	if d.quiet || r.Final {
		return
	}
	if !d.tty {
		d.log.LogAttrs(context.Background(), slog.LevelInfo, "progress", r.LogAttrs()...)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return
	}
	d.win = monitor.WindowLine(r)
	d.clearLocked()
	d.drawLocked()
}

// finish erases the live lines for good.
func (d *display) finish() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clearLocked()
	d.done = true
}

func (d *display) clearLocked() {
	if d.shown == 0 {
		return
	}
	io.WriteString(d.w, "\r\033[K"+strings.Repeat("\033[1A\r\033[K", d.shown-1))
	d.shown = 0
}

// drawLocked draws the live lines, each cut to the terminal's width (a
// wrapped line could not be erased); the cursor stays at the end of the
// last one.
func (d *display) drawLocked() {
	if !d.tty || d.done || d.bar == "" && d.win == "" {
		return
	}
	w := d.width() - 1
	var lines []string
	for _, l := range []string{d.bar, d.win} {
		if l != "" {
			lines = append(lines, cut(l, w))
		}
	}
	io.WriteString(d.w, strings.Join(lines, "\n"))
	d.shown = len(lines)
}

// cut shortens s to at most w runes.
func cut(s string, w int) string {
	if w <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= w {
		return s
	}
	r := []rune(s)
	return string(r[:w])
}

// part is a piece of the progress line; lower keep goes first when the
// line is too wide.
type part struct {
	text string
	keep int
}

// progressLine is the live progress line, at most width runes: a bar and
// the percent of input bytes read when the input's size is known (none for
// stdin or a pipe), records and tokens done, rates, ETA or elapsed time,
// skipped records.
func progressLine(s *embed.Summary, width int) string {
	done := monitor.Computed(s)
	el := s.Elapsed
	frac, eta, known := monitor.InputProgress(s)
	var parts []part
	if known {
		parts = append(parts, part{fmt.Sprintf("%3.0f%%", frac*100), 9},
			part{fmt.Sprintf("%s/%s", humanBytes(s.InputBytes), humanBytes(s.InputSize)), 3})
	} else {
		parts = append(parts, part{humanBytes(s.InputBytes) + " read", 3})
	}
	parts = append(parts,
		part{groupDigits(done) + " records", 8},
		part{siCount(s.Tokens) + " tokens", 2},
		part{fmt.Sprintf("%s records/s", siRate(rate(done, el))), 6},
		part{fmt.Sprintf("%s tokens/s", siRate(rate(s.Tokens, el))), 4})
	if known {
		parts = append(parts, part{"ETA " + shortDur(eta), 7})
	} else {
		parts = append(parts, part{shortDur(el), 5})
	}
	if s.Skipped > 0 {
		parts = append(parts, part{groupDigits(s.Skipped) + " skipped", 7})
	}
	join := func(ps []part) string {
		t := make([]string, len(ps))
		for i, p := range ps {
			t[i] = p.text
		}
		return strings.Join(t, "  ")
	}
	text := join(parts)
	for utf8.RuneCountInString(text) > width && len(parts) > 1 {
		i := 0
		for j, p := range parts {
			if p.keep < parts[i].keep {
				i = j
			}
		}
		parts = slices.Delete(parts, i, i+1)
		text = join(parts)
	}
	if known {
		// The bar takes what is left, 10 to 30 cells.
		if n := min(30, width-utf8.RuneCountInString(text)-3); n >= 10 {
			fill := min(int(frac*float64(n)), n)
			text = "[" + strings.Repeat("#", fill) + strings.Repeat(".", n-fill) + "] " + text
		}
	}
	return cut(text, width)
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// siRate and siCount format compactly: 950, 81.2k, 1.3M.
func siRate(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.1fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.1fk", x/1e3)
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	default:
		return fmt.Sprintf("%.1f", x)
	}
}

func siCount(n int64) string {
	if n < 10_000 {
		return strconv.FormatInt(n, 10)
	}
	return siRate(float64(n))
}

// humanBytes formats a byte count in binary units: 512 B, 1.5 KiB, 12.4 MiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}

// shortDur formats a duration for a person: 45s, 3m12s, 2h05m.
func shortDur(d time.Duration) string {
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// skipTally counts skipped records by reason.
type skipTally struct {
	mu sync.Mutex
	n  map[string]int64
}

// skipReason puts embed's reason for skipping a record into a few kinds.
func skipReason(reason string) string {
	switch {
	case strings.Contains(reason, "longer than"):
		return "too long"
	case strings.HasPrefix(reason, "invalid character"), strings.HasPrefix(reason, "unexpected '<'"):
		return "invalid residues"
	case reason == "no residues":
		return "no residues"
	case reason == "":
		return "other"
	}
	return "FASTA format" // data's problems (text before the first header, ...)
}

func (t *skipTally) add(reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]int64{}
	}
	t.n[skipReason(reason)]++
}

// counts returns the counts, most frequent first.
func (t *skipTally) counts() []skipCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []skipCount
	for k, v := range t.n {
		out = append(out, skipCount{k, v})
	}
	slices.SortFunc(out, func(a, b skipCount) int {
		if a.n != b.n {
			return int(b.n - a.n)
		}
		return strings.Compare(a.reason, b.reason)
	})
	return out
}

type skipCount struct {
	reason string
	n      int64
}

// tallyHandler counts embed's "record skipped" warnings by reason.
type tallyHandler struct {
	slog.Handler
	t *skipTally
}

func (h *tallyHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "record skipped" {
		reason := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "reason" {
				reason = a.Value.String()
				return false
			}
			return true
		})
		h.t.add(reason)
	}
	return h.Handler.Handle(ctx, r)
}

func (h *tallyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &tallyHandler{Handler: h.Handler.WithAttrs(as), t: h.t}
}

func (h *tallyHandler) WithGroup(name string) slog.Handler {
	return &tallyHandler{Handler: h.Handler.WithGroup(name), t: h.t}
}

// jsonLines turns each line written to it into a log record.
type jsonLines struct {
	log *slog.Logger
	buf []byte
}

func (j *jsonLines) Write(p []byte) (int, error) {
	j.buf = append(j.buf, p...)
	for {
		i := strings.IndexAny(string(j.buf), "\r\n")
		if i < 0 {
			break
		}
		if line := strings.TrimSpace(string(j.buf[:i])); line != "" {
			j.log.Info(line, "kind", "download")
		}
		j.buf = j.buf[i+1:]
	}
	return len(p), nil
}

// metrics prints the monitor's end-of-run report: lines in text, one
// record with typed fields in json; nothing when nothing was computed.
func (d *display) metrics(rep monitor.Report) {
	if d.quiet || rep.Batches == 0 {
		return
	}
	if !d.json {
		for _, line := range rep.Lines() {
			fmt.Fprintf(d, "esm2go: %s\n", line)
		}
		return
	}
	a := []any{"batches", rep.Batches, "tokens", rep.Tokens, "elapsed_s", rep.Elapsed.Seconds(),
		"records_per_s", rep.SeqPerS, "tokens_per_s", rep.TokPerS,
		"compute_frac", rep.ComputeFrac, "loader_wait_frac", rep.LoaderWaitFrac, "writer_wait_frac", rep.WriterWaitFrac,
		"windows", rep.Windows, "warnings", rep.Warnings}
	if rep.PeakRSS > 0 {
		a = append(a, "peak_rss_bytes", rep.PeakRSS)
	}
	if rep.GPUKnown {
		a = append(a, "mean_gpu_util_pct", rep.MeanGPUUtil, "peak_gpu_mem_bytes", rep.PeakGPUMem)
	}
	for _, dv := range rep.Devices {
		g := []any{"batches", dv.Batches, "sequences", dv.Computed, "tokens", dv.Tokens, "tokens_per_s", dv.TokPerS}
		if dv.UtilKnown {
			g = append(g, "mean_util_pct", dv.MeanUtil)
		}
		a = append(a, slog.Group(dv.Name, g...))
	}
	d.log.Info("metrics", a...)
}

// summary is the account of a finished run: in text a few lines read at a
// glance, in json one record.
func (d *display) summary(s *embed.Summary, out string) {
	if d.quiet {
		return
	}
	if s.Output != "" {
		out = s.Output
	}
	size, sizeOK := outputSize(out)
	skips := d.skips.counts()
	total := d.now().Sub(d.start)
	if d.json {
		a := []any{"records", s.Records, "embedded", s.Embedded, "skipped", s.Skipped, "truncated", s.Truncated,
			"resumed", s.Resumed, "elapsed_s", s.Elapsed.Seconds(), "total_s", total.Seconds(),
			"records_per_s", rate(s.Embedded, s.Elapsed), "tokens_per_s", rate(s.Tokens, s.Elapsed), "output", out}
		if sizeOK {
			a = append(a, "output_bytes", size)
		}
		if len(skips) > 0 {
			g := make([]any, 0, 2*len(skips))
			for _, c := range skips {
				g = append(g, c.reason, c.n)
			}
			a = append(a, slog.Group("skipped_by", g...))
		}
		d.log.Info("done", a...)
		return
	}
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, "esm2go: "+format+"\n", args...) }
	fresh := s.Records - s.Resumed
	done := fmt.Sprintf("done: %s records embedded", groupDigits(s.Embedded))
	if s.Skipped > 0 {
		var rs []string
		for _, c := range skips {
			rs = append(rs, fmt.Sprintf("%s %s", groupDigits(c.n), c.reason))
		}
		done += fmt.Sprintf(", %s skipped", groupDigits(s.Skipped))
		if len(rs) > 0 {
			done += " (" + strings.Join(rs, ", ") + ")"
		}
	}
	done += fmt.Sprintf(" of %s read", groupDigits(fresh))
	if s.Truncated > 0 {
		done += fmt.Sprintf("; %s truncated", groupDigits(s.Truncated))
	}
	line("%s", done)
	if s.Resumed > 0 {
		line("resumed: the first %s records were committed by an earlier run", groupDigits(s.Resumed))
	}
	line("time: %s (%s with loading), %s records/s, %s tokens/s", shortDur(s.Elapsed), shortDur(total),
		siRate(rate(s.Embedded, s.Elapsed)), siRate(rate(s.Tokens, s.Elapsed)))
	if sizeOK {
		line("output: %s (%s)", out, humanBytes(size))
	} else {
		line("output: %s", out)
	}
	fmt.Fprint(d, b.String())
}

// outputSize is the bytes of a file, or of the regular files under a
// directory (the npy format).
func outputSize(path string) (int64, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	if !fi.IsDir() {
		return fi.Size(), true
	}
	var n int64
	err = filepath.WalkDir(path, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			i, err := e.Info()
			if err != nil {
				return err
			}
			n += i.Size()
		}
		return nil
	})
	return n, err == nil
}

// jsonLogError marks the error of a command run with --log-format json:
// run prints it as one JSON object.
type jsonLogError struct{ error }

func (e jsonLogError) Unwrap() error { return e.error }

// asJSONLog marks err for a JSON error line when json is set.
func asJSONLog(err error, json bool) error {
	if err == nil || !json {
		return err
	}
	return jsonLogError{err}
}

// jsonErrorLine writes err as one JSON log record with the exit status, if
// it comes from a command run with --log-format json; false otherwise.
func jsonErrorLine(w io.Writer, err error, status int) bool {
	var je jsonLogError
	if !errors.As(err, &je) {
		return false
	}
	msg := oneLine(err.Error())
	if status == 130 {
		msg = "interrupted: " + msg
	}
	rec := struct {
		Time   string `json:"time"`
		Level  string `json:"level"`
		Msg    string `json:"msg"`
		Status int    `json:"status"`
		Help   string `json:"help,omitempty"`
	}{time.Now().Format(time.RFC3339Nano), "ERROR", msg, status, ""}
	var ue *usageError
	if errors.As(err, &ue) {
		rec.Help = "esm2go help embed"
	}
	b, _ := json.Marshal(rec) // strings and an int: cannot fail
	w.Write(append(b, '\n'))
	return true
}

// startMonitor starts the run's metrics: a window every --metrics-every
// batches shown by d, --metrics-json lines, the --metrics-addr endpoint,
// NVML figures for the CUDA devices in ords (in the order of the run's
// devices, so that each device's figures are matched to its GPU).
func startMonitor(ctx context.Context, f *embedFlags, ords []int, d *display, log *slog.Logger) (*monitor.Monitor, error) {
	mo := monitor.Options{
		Every:     f.metricsEvery,
		JSONPath:  f.metricsJSON,
		Overwrite: f.overwrite,
		Append:    f.metricsAppend,
		Addr:      f.metricsAddr,
		Log:       log,
		NoGPU:     len(ords) == 0,
		OnWindow:  d.onWindow,
		Advice:    idleAdvice(f),
	}
	if len(ords) > 0 {
		// NVML index = CUDA ordinal: true with CUDA_DEVICE_ORDER=PCI_BUS_ID
		// and no CUDA_VISIBLE_DEVICES remapping.
		mo.Devices = slices.Clone(ords)
	}
	mon, err := monitor.New(ctx, mo)
	if err != nil {
		return nil, fmt.Errorf("--metrics-json/--metrics-addr: %w", err)
	}
	if a := mon.Addr(); a != "" {
		log.Info("serving metrics", "url", "http://"+a+"/metrics")
	}
	return mon, nil
}

// idleAdvice says, for an idle GPU, what to change on this command line.
func idleAdvice(f *embedFlags) func(cause string) string {
	return func(cause string) string {
		switch cause {
		case monitor.CauseInput:
			return fmt.Sprintf("the readers cannot keep up: try more --workers (now %d), a faster input disk, or uncompressed input", f.workers)
		case monitor.CauseWriter:
			return "the output cannot keep up: write --out to a faster (local) disk, or include fewer outputs per record"
		case monitor.CauseOverhead:
			return "batches too small to keep the GPU busy: try a larger --toks-per-batch"
		}
		return ""
	}
}
