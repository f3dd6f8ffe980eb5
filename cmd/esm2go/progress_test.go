package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/esm2go/esm2go/embed"
	"github.com/esm2go/esm2go/monitor"
)

// screen is a terminal for the tests: it interprets what the display
// writes (\r, \n, erase to end of line, cursor up) into rows of text.
type screen struct {
	rows     []string
	row, col int
}

func (s *screen) Write(p []byte) (int, error) {
	str := string(p)
	for len(str) > 0 {
		switch {
		case strings.HasPrefix(str, "\033[K"):
			s.pad()
			s.rows[s.row] = string([]rune(s.rows[s.row])[:s.col])
			str = str[3:]
		case strings.HasPrefix(str, "\033[1A"):
			if s.row > 0 {
				s.row--
			}
			str = str[4:]
		case str[0] == '\033':
			panic("unknown escape in " + str)
		case str[0] == '\r':
			s.col = 0
			str = str[1:]
		case str[0] == '\n':
			s.row++
			s.col = 0
			str = str[1:]
		default:
			r, n := utf8.DecodeRuneInString(str)
			s.pad()
			line := []rune(s.rows[s.row])
			for len(line) <= s.col {
				line = append(line, ' ')
			}
			line[s.col] = r
			s.rows[s.row] = string(line)
			s.col++
			str = str[n:]
		}
	}
	return len(p), nil
}

func (s *screen) pad() {
	for len(s.rows) <= s.row {
		s.rows = append(s.rows, "")
	}
}

// text is the screen's non-empty rows.
func (s *screen) text() []string {
	var out []string
	for _, r := range s.rows {
		if strings.TrimSpace(r) != "" {
			out = append(out, r)
		}
	}
	return out
}

// testDisplay is a live display on a fake terminal of the given width with
// a clock the test moves.
func testDisplay(width int) (*display, *screen, *time.Time) {
	scr := &screen{}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d := &display{w: scr, tty: true, width: func() int { return width }, now: func() time.Time { return now }}
	d.start = now
	d.attach(slog.New(slog.NewTextHandler(d, nil)))
	return d, scr, &now
}

// sum is a run 10 s in: 400 of 1000 input bytes read, records 90 of the
// 100 read computed.
func sum(size int64) *embed.Summary {
	return &embed.Summary{Records: 100, Skipped: 3, Tokens: 123_456, Batches: 12, Elapsed: 10 * time.Second,
		InputBytes: 400, InputSize: size,
		Devices: []embed.DeviceSummary{{Name: "cuda:0", Sequences: 60}, {Name: "cuda:1", Sequences: 27}}}
}

func TestProgressLine(t *testing.T) {
	for _, width := range []int{30, 60, 79, 120, 200} {
		for _, size := range []int64{1000, 0} {
			line := progressLine(sum(size), width)
			if n := utf8.RuneCountInString(line); n > width {
				t.Errorf("width %d: %d runes: %q", width, n, line)
			}
			// The percent and the ETA only with a known size: (87 + 3
			// skipped) of 100 records done, 40% of the bytes read: 36%.
			hasPct := strings.Contains(line, "%")
			if hasPct != (size > 0) {
				t.Errorf("width %d, size %d: percent shown %v: %q", width, size, hasPct, line)
			}
			if size > 0 && !strings.Contains(line, " 36%") {
				t.Errorf("width %d: %q, want 36%%", width, line)
			}
			if size == 0 && (strings.Contains(line, "ETA") || strings.Contains(line, "[")) {
				t.Errorf("width %d: ETA or bar without a size: %q", width, line)
			}
			// The records done count as computed (87), not as written (0).
			if width >= 60 && !strings.Contains(line, "87 records") {
				t.Errorf("width %d: %q lacks the records computed", width, line)
			}
		}
	}
	wide := progressLine(sum(1000), 200)
	for _, want := range []string{"[#########", "400 B/1000 B", "123.5k tokens", "8.7 records/s", "12.3k tokens/s", "ETA 18s", "3 skipped"} {
		if !strings.Contains(wide, want) {
			t.Errorf("no %q in %q", want, wide)
		}
	}
	if got := progressLine(sum(0), 200); !strings.Contains(got, "400 B read") || !strings.Contains(got, "10s") {
		t.Errorf("without a size: %q", got)
	}
}

// The live lines are redrawn in place; a log record clears them, prints
// and redraws them; finish leaves only what was logged.
func TestLiveDisplay(t *testing.T) {
	d, scr, now := testDisplay(70)
	d.update(sum(1000), false)
	if rows := scr.text(); len(rows) != 1 || !strings.Contains(rows[0], "36%") {
		t.Fatalf("after the first update: %q", rows)
	}
	rec := &monitor.Record{Window: 4, SeqPerS: 440, TokPerS: 81200, ComputeFrac: 0.93}
	d.onWindow(rec)
	rows := scr.text()
	if len(rows) != 2 || !strings.HasPrefix(rows[1], "window 4: 440 records/s  81.2k tokens/s  compute 93%") {
		t.Fatalf("after a window: %q", rows)
	}
	d.log.Warn("GPU 1 idle 23% of the last window")
	*now = now.Add(time.Second)
	s := sum(1000)
	s.InputBytes, s.Devices[0].Sequences = 1000, 73
	d.update(s, false)
	rows = scr.text()
	if len(rows) != 3 || !strings.Contains(rows[0], "GPU 1 idle 23%") || !strings.Contains(rows[1], "100 records") ||
		!strings.HasPrefix(rows[2], "window 4:") {
		t.Fatalf("after a warning and an update: %q", rows)
	}
	for _, r := range rows[1:] {
		if utf8.RuneCountInString(r) >= 70 {
			t.Errorf("row wider than the terminal: %q", r)
		}
	}
	// Updates within drawPeriod are not drawn.
	s.Devices[1].Sequences = 0
	d.update(s, false)
	if got := scr.text()[1]; !strings.Contains(got, "100 records") {
		t.Errorf("redrawn within %v: %q", drawPeriod, got)
	}
	d.finish()
	d.update(s, false)
	d.onWindow(rec)
	if rows := scr.text(); len(rows) != 1 || !strings.Contains(rows[0], "GPU 1 idle") {
		t.Errorf("after finish: %q", rows)
	}
}

// Without a terminal: one record per window, progress and metrics merged.
func TestLogModeOneLinePerWindow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, mj := filepath.Join(dir, "emb.parquet"), filepath.Join(dir, "m.jsonl")
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--toks-per-batch", "1100",
		"--metrics-every", "1", "--metrics-json", mj, "--out", out, fasta)
	if code != 0 {
		t.Fatalf("status %d; stderr:\n%s", code, stderr)
	}
	b, err := os.ReadFile(mj)
	if err != nil {
		t.Fatal(err)
	}
	windows := strings.Count(string(b), `"final":false`)
	if windows < 2 {
		t.Fatalf("%d windows", windows)
	}
	var progress int
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "metrics: batch") || strings.Contains(line, "\r") {
			t.Errorf("a line besides the merged one: %q", line)
		}
		if !strings.Contains(line, "msg=progress ") {
			continue
		}
		progress++
		for _, want := range []string{"window=", "records=15 ", "embedded=", "percent=", "eta_s=", "records_per_s=", "tokens_per_s=", "compute_frac=", "loader_wait_frac="} {
			if !strings.Contains(line, want) {
				t.Errorf("no %s in %q", want, line)
			}
		}
	}
	if progress != windows {
		t.Errorf("%d progress lines for %d windows:\n%s", progress, windows, stderr)
	}
}

// --log-format json: every line on stderr is a JSON object, the progress,
// the metrics, the summary and a final error too.
func TestJSONLogFormat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "emb.parquet")
	lines := func(stderr string) []map[string]any {
		t.Helper()
		var recs []map[string]any
		sc := bufio.NewScanner(strings.NewReader(stderr))
		for sc.Scan() {
			var r map[string]any
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Errorf("not JSON: %q (%v)", sc.Text(), err)
				continue
			}
			if r["level"] == nil || r["msg"] == nil || r["time"] == nil {
				t.Errorf("no level, msg or time: %q", sc.Text())
			}
			recs = append(recs, r)
		}
		return recs
	}
	code, _, stderr := runCLI(t, "embed", "--log-format", "json", "--model", tinyModel, "--device", "cpu",
		"--toks-per-batch", "1100", "--metrics-every", "2", "--out", out, fasta)
	if code != 0 {
		t.Fatalf("status %d; stderr:\n%s", code, stderr)
	}
	byMsg := map[string]map[string]any{}
	for _, r := range lines(stderr) {
		byMsg[r["msg"].(string)] = r
	}
	if p := byMsg["progress"]; p == nil || p["percent"] == nil || p["tokens_per_s"] == nil || p["window"] == nil {
		t.Errorf("progress record %v", p)
	}
	if m := byMsg["metrics"]; m == nil || m["batches"].(float64) < 2 || m["compute_frac"] == nil {
		t.Errorf("metrics record %v", m)
	}
	done := byMsg["done"]
	if done == nil || done["records"] != 15.0 || done["embedded"] != 15.0 || done["output"] != out || done["output_bytes"].(float64) <= 0 {
		t.Errorf("done record %v", done)
	}

	// Errors: one JSON line with the exit status.
	for _, c := range []struct {
		args   []string
		status int
		want   string
	}{
		// Another run (other layers) onto the output: refused.
		{[]string{"--model", tinyModel, "--device", "cpu", "--repr-layers", "0", "--out", out, fasta}, 1, "exists"},
		{[]string{"--workers", "0", "--out", out, fasta}, 2, "invalid --workers 0"},
	} {
		code, _, stderr := runCLI(t, append([]string{"embed", "--log-format", "json"}, c.args...)...)
		recs := lines(stderr)
		if code != c.status || len(recs) != 1 || recs[0]["level"] != "ERROR" || recs[0]["status"] != float64(c.status) ||
			!strings.Contains(recs[0]["msg"].(string), c.want) {
			t.Errorf("%v: status %d, stderr %q", c.args, code, stderr)
		}
	}
}

// Skipped records are counted by reason in the summary.
func TestSummarySkipReasons(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.fasta")
	text := "stray text\n>ok1\nMKTAYIAKQR\n>bad1\nMKT@AYIAK\n>bad2\nMK1TAY\n>empty\n\n>ok2\nMKTAYIAKQRQISF\n"
	if err := os.WriteFile(in, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "emb.parquet")
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--out", out, in)
	if code != 0 {
		t.Fatalf("status %d; stderr:\n%s", code, stderr)
	}
	want := "esm2go: done: 2 records embedded, 4 skipped (2 invalid residues, 1 FASTA format, 1 no residues) of 6 read\n"
	if !strings.Contains(stderr, want) {
		t.Errorf("no %q in stderr:\n%s", want, stderr)
	}
}

func TestSkipReason(t *testing.T) {
	for reason, want := range map[string]string{
		"invalid character '@' at residue 4":                               "invalid residues",
		"unexpected '<' at residue 2 (only <mask> and <unk> are accepted)": "invalid residues",
		"no residues": "no residues",
		"1500 residues, longer than the 1024 the device can embed whole (truncation is off)": "too long",
		"sequence text before the first header":                                              "FASTA format",
	} {
		if got := skipReason(reason); got != want {
			t.Errorf("skipReason(%q) = %q, want %q", reason, got, want)
		}
	}
}

// The summary says what a resumed run did, with the output's size.
func TestSummaryResumed(t *testing.T) {
	var b bytes.Buffer
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d := &display{w: &b, width: func() int { return 80 }, now: func() time.Time { return now }, start: now.Add(-90 * time.Second)}
	d.attach(slog.New(slog.NewTextHandler(&b, nil)))
	out := filepath.Join(t.TempDir(), "emb.parquet")
	if err := os.WriteFile(out, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	d.summary(&embed.Summary{Records: 5000, Resumed: 2000, Embedded: 2990, Skipped: 10, Truncated: 7,
		Elapsed: 75 * time.Second, Tokens: 3_000_000, Output: out}, "ignored")
	for _, want := range []string{
		"esm2go: done: 2,990 records embedded, 10 skipped of 3,000 read; 7 truncated\n",
		"esm2go: resumed: the first 2,000 records were committed by an earlier run\n",
		"esm2go: time: 1m15s (1m30s with loading), 39.9 records/s, 40.0k tokens/s\n",
		"esm2go: output: " + out + " (3.0 MiB)\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in\n%s", want, b.String())
		}
	}
}

// In json, the download's progress lines (plain text from the weights
// package, \n or \r ended) become log records.
func TestJSONDownloadLines(t *testing.T) {
	var b bytes.Buffer
	d := &display{w: &b, json: true}
	d.attach(slog.New(slog.NewJSONHandler(&b, nil)))
	w := d.downloadWriter()
	io.WriteString(w, "downloading model.safetensors: 10%\r")
	io.WriteString(w, "downloading model.safe")
	io.WriteString(w, "tensors: 100%\n\n")
	var msgs []string
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		msgs = append(msgs, r["msg"].(string))
	}
	if want := []string{"downloading model.safetensors: 10%", "downloading model.safetensors: 100%"}; !slices.Equal(msgs, want) {
		t.Errorf("records %q, want %q", msgs, want)
	}
}

// The embed command hooks the monitor to the run's compute start
// (embed.Options.Started), from which GPU utilization counts, and to its
// progress: a wiring check (the CLI cannot give the monitor a fake NVML;
// monitor's tests check what ComputeStarted does). On the CPU (no NVML)
// the start is a no-op and the run goes on.
func TestWatchHooksMonitor(t *testing.T) {
	t.Parallel()
	mon, err := monitor.New(context.Background(), monitor.Options{NoGPU: true})
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	var opts embed.Options
	newDisplay(io.Discard, false, false).watch(&opts, mon)
	if opts.Progress == nil || opts.Started == nil {
		t.Fatalf("Progress set %v, Started set %v", opts.Progress != nil, opts.Started != nil)
	}
	opts.Started()
	opts.Started()
	s := embed.Summary{Batches: 1}
	opts.Progress(&s, true)
	if rep, err := mon.Close(); err != nil || rep.Batches != 1 || rep.GPUKnown {
		t.Errorf("report %+v, %v", rep, err)
	}
}
