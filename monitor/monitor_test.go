package monitor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esm2go/esm2go/embed"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/internal/testutil"
)

// syncBuf is a bytes.Buffer safe for the log handler and the test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func logger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// noNVML is a gpuReader for a machine without the NVIDIA driver.
type noNVML struct{}

func (noNVML) Init() error                                   { return errors.New("nvml: libnvidia-ml.so.1 not found") }
func (noNVML) Count() (int, error)                           { return 0, errors.New("unreachable") }
func (noNVML) UtilSamples(int, uint64) ([]utilSample, error) { return nil, errors.New("unreachable") }
func (noNVML) Util(int) (float64, error)                     { return 0, errors.New("unreachable") }
func (noNVML) Memory(int) (uint64, uint64, error)            { return 0, 0, errors.New("unreachable") }
func (noNVML) Shutdown()                                     {}

// fakeNVML is NVML with two devices. util is the utilization rate
// (GetUtilizationRates: NVML's mean over its last sample period). Unless
// scripted, every UtilSamples call first adds a sample of util to the
// device's buffer (a device NVML samples all the time); scripted, the
// buffer holds what push added. With noBuffer, UtilSamples fails (a device
// without the sample buffer). failAfter > 0 makes Memory fail after that
// many calls.
type fakeNVML struct {
	mu        sync.Mutex
	util      float64
	scripted  bool
	noBuffer  bool
	buf       [2][]utilSample
	ts        uint64 // NVML's clock, µs
	calls     int
	failAfter int
	shutdowns int
	utilByDev []float64 // when set, Util(i) is utilByDev[i]
}

// push adds n samples of pct to each device's buffer, 1/6 s apart.
func (f *fakeNVML) push(pct float64, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ; n > 0; n-- {
		f.pushLocked(pct)
	}
}

func (f *fakeNVML) pushLocked(pct float64) {
	f.ts += 166_667
	for i := range f.buf {
		f.buf[i] = append(f.buf[i], utilSample{ts: f.ts, pct: pct})
	}
}

func (f *fakeNVML) setUtil(u float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.util = u
}

func (f *fakeNVML) Init() error         { return nil }
func (f *fakeNVML) Count() (int, error) { return 2, nil }
func (f *fakeNVML) UtilSamples(i int, since uint64) ([]utilSample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noBuffer {
		return nil, errors.New("nvml device utilization samples: Not Supported")
	}
	if !f.scripted && i == 0 {
		f.pushLocked(f.util)
	}
	var out []utilSample
	for _, s := range f.buf[i] {
		if s.ts > since {
			out = append(out, s)
		}
	}
	return out, nil
}
func (f *fakeNVML) Util(i int) (float64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.utilByDev != nil {
		return f.utilByDev[i], nil
	}
	return f.util, nil
}
func (f *fakeNVML) Memory(int) (uint64, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failAfter > 0 && f.calls > f.failAfter {
		return 0, 0, errors.New("nvml: GPU is lost")
	}
	return 3 << 30, 80 << 30, nil
}
func (f *fakeNVML) Shutdown() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shutdowns++
}

// fakeClock is a clock the test moves.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }

// withMem gives every summary one device whose allocator reports inUse and
// reserved bytes (what embed records after each batch on a GPU).
func withMem(ss []embed.Summary, inUse, reserved int64) []embed.Summary {
	for i := range ss {
		s := &ss[i]
		s.Devices = []embed.DeviceSummary{{Name: "cuda:0", Batches: s.Batches, Sequences: s.Embedded, Tokens: s.Tokens,
			Compute: s.Compute, LoaderWait: s.LoaderWait, WriterWait: s.WriterWait,
			MemInUse: inUse, MemReserved: reserved, MemKnown: true}}
	}
	return ss
}

// judgeAll judges every window, however short the run (the tests' runs
// last a second or less).
func judgeAll(o Options) Options {
	o.JudgeAfterWindows, o.JudgeAfter = -1, -1
	return o
}

// summaries is a synthetic run: n batches of 100 ms, computing for
// computeFrac of each, waiting for the loader the rest.
func summaries(n int, computeFrac float64) []embed.Summary {
	return summariesFrom(embed.Summary{}, n, 100*time.Millisecond, computeFrac)
}

// summariesFrom goes on from s with n batches of length batch.
func summariesFrom(s embed.Summary, n int, batch time.Duration, computeFrac float64) []embed.Summary {
	var out []embed.Summary
	for i := 0; i < n; i++ {
		s.Batches++
		s.Records += 8
		s.Embedded += 8
		s.Residues += 800
		s.Tokens += 816
		s.Elapsed += batch
		s.Compute += time.Duration(computeFrac * float64(batch))
		s.LoaderWait += time.Duration((1 - computeFrac) * float64(batch))
		s.QueueDepth, s.ReaderQueue = 2, 3
		out = append(out, s)
	}
	return out
}

// feed observes every summary, giving the monitor goroutine time to keep
// up, then the final one.
func feed(m *Monitor, ss []embed.Summary) {
	for i := range ss {
		m.Observe(&ss[i], false)
		time.Sleep(200 * time.Microsecond)
	}
	m.Observe(&ss[len(ss)-1], true)
}

func decode(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var recs []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	if len(recs) == 0 {
		t.Fatal("no JSON lines")
	}
	return recs
}

var (
	alwaysFields = []string{"time", "window", "final", "batches", "records", "sequences", "skipped", "residues", "tokens",
		"elapsed_s", "window_s", "window_batches", "window_sequences", "window_tokens",
		"seq_per_s", "tok_per_s", "seq_per_s_total", "tok_per_s_total",
		"compute_s", "loader_wait_s", "writer_wait_s", "compute_frac", "loader_wait_frac", "writer_wait_frac",
		"compute_s_total", "loader_wait_s_total", "writer_wait_s_total", "loader_wait_frac_total",
		"idle_frac", "queue_depth", "reader_queue", "rss_bytes", "go_heap_bytes", "go_total_bytes", "dropped_samples"}
	gpuFields   = []string{"gpu_util_pct", "gpu_idle_frac", "gpu_mem_used_bytes", "gpu_mem_total_bytes", "gpus"}
	allocFields = []string{"device_mem_in_use_bytes", "device_mem_reserved_bytes"}
)

func TestJSONWithoutGPU(t *testing.T) {
	var js bytes.Buffer
	var human syncBuf
	m, err := New(context.Background(), Options{Every: 5, JSON: &js, Human: &human, gpu: noNVML{}, Clock: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	feed(m, summaries(23, 1))
	rep, err := m.Close()
	if err != nil {
		t.Fatal(err)
	}
	recs := decode(t, js.Bytes())
	for _, r := range recs {
		for _, f := range alwaysFields {
			if _, ok := r[f]; !ok {
				t.Errorf("window %v: no %q", r["window"], f)
			}
		}
		for _, f := range append(gpuFields, allocFields...) {
			if _, ok := r[f]; ok {
				t.Errorf("window %v: %q present without a GPU", r["window"], f)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, r["time"].(string)); err != nil {
			t.Error(err)
		}
	}
	last := recs[len(recs)-1]
	if last["final"] != true || last["batches"].(float64) != 23 || last["sequences"].(float64) != 184 {
		t.Errorf("last record %v", last)
	}
	if got := last["tok_per_s_total"].(float64); got < 8159 || got > 8161 {
		t.Errorf("tok_per_s_total = %v, want 8160", got)
	}
	if rep.Batches != 23 || rep.GPUKnown || rep.PeakRSS <= 0 || rep.ComputeFrac != 1 {
		t.Errorf("report %+v", rep)
	}
	if !strings.Contains(human.String(), "metrics: batch 5 ") || strings.Contains(human.String(), "gpu") {
		t.Errorf("human lines:\n%s", human.String())
	}
	for _, l := range rep.Lines() {
		if !strings.HasPrefix(l, "metrics: ") {
			t.Errorf("summary line %q", l)
		}
	}
}

// The real NVML reader must fail cleanly where there is no driver.
func TestRealNVMLWithoutDriver(t *testing.T) {
	r := &nvmlReader{}
	if err := r.Init(); err == nil {
		r.Shutdown()
		t.Skip("NVML is present on this machine")
	}
	var js bytes.Buffer
	var log syncBuf
	m, err := New(context.Background(), Options{Every: 1, JSON: &js, Log: logger(&log)})
	if err != nil {
		t.Fatal(err)
	}
	if m.GPU() {
		t.Fatal("GPU sampling on without NVML")
	}
	feed(m, summaries(3, 1))
	m.Close()
	for _, r := range decode(t, js.Bytes()) {
		for _, f := range gpuFields {
			if _, ok := r[f]; ok {
				t.Errorf("%q present", f)
			}
		}
	}
	if strings.Contains(log.String(), "WARN") {
		t.Errorf("warning without a GPU asked for:\n%s", log.String())
	}
}

func TestGPUFieldsAndGPUIdle(t *testing.T) {
	var js bytes.Buffer
	var log syncBuf
	fake := &fakeNVML{util: 40}
	m, err := New(context.Background(), judgeAll(Options{Every: 5, JSON: &js, Log: logger(&log), gpu: fake,
		GPUPeriod: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)                // some NVML samples
	feed(m, withMem(summaries(10, 1), 1<<30, 2<<30)) // the host computes all the time...
	rep, _ := m.Close()
	recs := decode(t, js.Bytes())
	for _, r := range recs {
		for _, f := range append(gpuFields, allocFields...) {
			if _, ok := r[f]; !ok && r["final"] != true {
				t.Errorf("window %v: no %q", r["window"], f)
			}
		}
	}
	r := recs[0]
	if r["gpu_util_pct"].(float64) != 40 || r["gpu_mem_used_bytes"].(float64) != 6<<30 || len(r["gpus"].([]any)) != 2 {
		t.Errorf("gpu figures %v", r)
	}
	// ...but the GPU is busy 40% of the time: launch or host overhead.
	if r["idle_cause"] != CauseOverhead || !strings.Contains(log.String(), CauseOverhead) {
		t.Errorf("idle cause %v; log:\n%s", r["idle_cause"], log.String())
	}
	if !rep.GPUKnown || rep.MeanGPUUtil != 40 || rep.PeakGPUMem != 3<<30 || !rep.DeviceMemKnown || rep.PeakDeviceReserved != 2<<30 {
		t.Errorf("report %+v", rep)
	}
	if !strings.Contains(strings.Join(rep.Lines(), "\n"), "mean GPU utilization 40%") {
		t.Errorf("summary %q", rep.Lines())
	}
}

// A window with no NVML reading (NVML took no sample in it and the run is
// younger than NVML's rate period, or the pipeline's last batch after
// sampling ended) gives no idle warning from the host's estimate while NVML
// runs: with batches in flight the host's time outside compute overlaps
// device work.
func TestNoIdleWarningWithoutNVMLSample(t *testing.T) {
	var js bytes.Buffer
	var log syncBuf
	clk := newFakeClock() // never moves: every window is in the run's first second
	m, err := New(context.Background(), Options{Every: 1, JSON: &js, Log: logger(&log),
		gpu: &fakeNVML{util: 100, scripted: true}, GPUPeriod: time.Hour, Clock: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	feed(m, summaries(3, 0)) // the host saw no compute time at all
	m.Close()
	recs := decode(t, js.Bytes())
	if len(recs) == 0 {
		t.Fatal("no records")
	}
	for _, r := range recs {
		if r["idle_cause"] != nil {
			t.Errorf("window %v: idle cause %v without an NVML sample", r["window"], r["idle_cause"])
		}
		if r["gpu_util_pct"] != nil {
			t.Errorf("window %v: gpu_util_pct %v without an NVML reading", r["window"], r["gpu_util_pct"])
		}
		if r["final"] != true && r["idle_frac"].(float64) < 0.99 {
			t.Errorf("window %v: host idle estimate %v, want ~1 (still reported)", r["window"], r["idle_frac"])
		}
	}
	if strings.Contains(log.String(), "device idle") {
		t.Errorf("idle warning without an NVML sample:\n%s", log.String())
	}
}

func TestNVMLFailureWarnsOnce(t *testing.T) {
	var log syncBuf
	fake := &fakeNVML{util: 90, failAfter: 4}
	m, err := New(context.Background(), Options{Every: 1, Log: logger(&log), gpu: fake, GPUPeriod: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	feed(m, summaries(5, 1))
	if _, err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "GPU monitoring stopped"); n != 1 {
		t.Errorf("%d warnings:\n%s", n, log.String())
	}
	if fake.shutdowns != 1 {
		t.Errorf("NVML shut down %d times", fake.shutdowns)
	}
}

// observeWindow observes one window's batches and waits for the monitor to
// write that window's JSON line, the want-th, so that the test can change
// what NVML reports before the next window.
func observeWindow(t *testing.T, m *Monitor, js *syncBuf, ss []embed.Summary, want int) {
	t.Helper()
	for i := range ss {
		m.Observe(&ss[i], false)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(js.String(), "\n") < want {
		if time.Now().After(deadline) {
			t.Fatalf("no JSON line for window %d:\n%s", want, js.String())
		}
		time.Sleep(time.Millisecond)
	}
}

// The first window of a run on a busy device must not count the idle time
// before the run (model loading) as its own. NVML's utilization rate is a
// mean over its last sample period, up to a second, which at the start of
// a run is mostly that time: on an H100 the first window of 10 batches in
// 0.40 s read 3% and warned "device idle 97% of the last 10 batches:
// likely launch or host overhead" while the device was busy. Here NVML's
// rate reads 3% through the first window and its samples from before the
// run are idle; the device is busy during the run.
func TestFirstWindowNotIdleFromBeforeRun(t *testing.T) {
	for _, c := range []struct {
		name     string
		noBuffer bool    // no sample buffer: rates only
		during   int     // busy samples NVML takes during the first window
		want1    float64 // window 1's gpu_util_pct; 0: absent
		wantMean float64
	}{
		// The first sample after the start is passed over (its period
		// began before it), the two others count.
		{"samples", false, 3, 100, (2*100 + 5*98) / 7.0},
		{"one sample", false, 1, 0, 98},
		// The rate read 0.4 s after the start is not counted.
		{"rates only", true, 0, 0, 98},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := newFakeClock()
			fake := &fakeNVML{scripted: true, noBuffer: c.noBuffer, util: 3}
			fake.push(0, 12) // model loading: the device idle
			fake.push(4, 1)
			var js, log syncBuf
			m, err := New(context.Background(), Options{Every: 10, JSON: &js, Log: logger(&log), gpu: fake,
				GPUPeriod: time.Hour, Clock: clk.now})
			if err != nil {
				t.Fatal(err)
			}
			// Window 1: 10 batches in 0.40 s, the host computing 97% of
			// the time (loader wait 3%), the device busy.
			fake.push(100, c.during)
			clk.add(400 * time.Millisecond)
			w1 := summariesFrom(embed.Summary{}, 10, 40*time.Millisecond, 0.97)
			observeWindow(t, m, &js, w1, 1)
			// Window 2, 0.8 s later: NVML's rate now averages the run.
			fake.setUtil(98)
			fake.push(98, 5)
			clk.add(800 * time.Millisecond)
			w2 := summariesFrom(w1[9], 10, 80*time.Millisecond, 0.97)
			observeWindow(t, m, &js, w2, 2)
			m.Observe(&w2[9], true)
			rep, err := m.Close()
			if err != nil {
				t.Fatal(err)
			}
			recs := decode(t, []byte(js.String()))
			if len(recs) != 3 {
				t.Fatalf("%d records, want 2 windows and the final one", len(recs))
			}
			u1, ok := recs[0]["gpu_util_pct"].(float64)
			switch {
			case c.want1 == 0 && ok:
				t.Errorf("window 1: gpu_util_pct %v, want none (no reading within the run)", u1)
			case c.want1 != 0 && u1 != c.want1:
				t.Errorf("window 1: gpu_util_pct %v, want %v", recs[0]["gpu_util_pct"], c.want1)
			}
			if u2 := recs[1]["gpu_util_pct"]; u2 != 98.0 {
				t.Errorf("window 2: gpu_util_pct %v, want 98", u2)
			}
			for _, r := range recs {
				if r["idle_cause"] != nil || r["warnings"] != nil {
					t.Errorf("window %v: idle cause %v, warnings %v", r["window"], r["idle_cause"], r["warnings"])
				}
			}
			if strings.Contains(log.String(), "device idle") {
				t.Errorf("idle warning for a busy device:\n%s", log.String())
			}
			if !rep.GPUKnown || math.Abs(rep.MeanGPUUtil-c.wantMean) > 1e-9 {
				t.Errorf("mean GPU utilization %v (known %v), want %v", rep.MeanGPUUtil, rep.GPUKnown, c.wantMean)
			}
		})
	}
}

// A window in which the device idles still warns, whichever NVML figure
// tells it.
func TestIdleWindowWarns(t *testing.T) {
	for _, c := range []struct {
		name     string
		noBuffer bool
		after    time.Duration // the window's end, after the start
		samples  int           // samples of 5% NVML takes in the window
		want     float64
	}{
		// The first of the four samples is passed over.
		{"samples", false, 400 * time.Millisecond, 4, 5},
		// NVML takes no sample while the device idles: its rate, read
		// more than its period after the start.
		{"no sample", false, 1500 * time.Millisecond, 0, 2},
		{"rates only", true, 1500 * time.Millisecond, 0, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := newFakeClock()
			fake := &fakeNVML{scripted: true, noBuffer: c.noBuffer, util: 2}
			fake.push(100, 6) // before the run: busy
			var js, log syncBuf
			m, err := New(context.Background(), judgeAll(Options{Every: 10, JSON: &js, Log: logger(&log), gpu: fake,
				GPUPeriod: time.Hour, Clock: clk.now}))
			if err != nil {
				t.Fatal(err)
			}
			fake.push(5, c.samples)
			clk.add(c.after)
			// The host computes all the time: launch or host overhead.
			w := summariesFrom(embed.Summary{}, 10, c.after/10, 1)
			observeWindow(t, m, &js, w, 1)
			if _, err := m.Close(); err != nil {
				t.Fatal(err)
			}
			r := decode(t, []byte(js.String()))[0]
			if r["gpu_util_pct"] != c.want {
				t.Errorf("gpu_util_pct %v, want %v", r["gpu_util_pct"], c.want)
			}
			msg := fmt.Sprintf("device idle %.0f%% of the last window (10 batches, %s): likely %s; %s",
				100-c.want, c.after, CauseOverhead, DefaultAdvice(CauseOverhead))
			if r["idle_cause"] != CauseOverhead || fmt.Sprint(r["warnings"]) != "["+msg+"]" {
				t.Errorf("idle cause %v, warnings %v; want %q", r["idle_cause"], r["warnings"], msg)
			}
			if !strings.Contains(log.String(), msg) {
				t.Errorf("no warning %q in the log:\n%s", msg, log.String())
			}
		})
	}
}

func TestIdleCause(t *testing.T) {
	for _, c := range []struct {
		lf, wf, idle float64
		want         string
	}{
		{0.5, 0.0, 0.5, CauseInput},
		{0.05, 0.4, 0.45, CauseWriter},
		{0.02, 0.03, 0.4, CauseOverhead},
	} {
		if got := idleCause(c.lf, c.wf, c.idle); got != c.want {
			t.Errorf("idleCause(%v, %v, %v) = %q, want %q", c.lf, c.wf, c.idle, got, c.want)
		}
	}
}

func TestLeakHeuristic(t *testing.T) {
	const mb = 1 << 20
	run := func(rss []int64, queues [][2]int) int {
		l := leakDetector{windows: 3, bytes: 16 * mb}
		fired := 0
		for i, r := range rss {
			q := [2]int{2, 4}
			if queues != nil {
				q = queues[i]
			}
			if f, _ := l.observe(r, q[0], q[1]); f {
				fired++
			}
		}
		return fired
	}
	growing := []int64{500 * mb, 540 * mb, 580 * mb, 620 * mb, 660 * mb}
	if n := run(growing, nil); n != 1 {
		t.Errorf("growing RSS: fired %d times, want 1", n)
	}
	flat := []int64{500 * mb, 502 * mb, 499 * mb, 503 * mb, 501 * mb, 500 * mb}
	if n := run(flat, nil); n != 0 {
		t.Errorf("flat RSS: fired %d times", n)
	}
	twoSteps := []int64{500 * mb, 540 * mb, 580 * mb, 580 * mb, 620 * mb, 660 * mb}
	if n := run(twoSteps, nil); n != 0 {
		t.Errorf("interrupted growth: fired %d times", n)
	}
	// Growth while a queue fills (new high-water marks) is buffering.
	filling := [][2]int{{0, 0}, {1, 2}, {2, 4}, {3, 8}, {4, 16}}
	if n := run(growing, filling); n != 0 {
		t.Errorf("filling queues: fired %d times", n)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk full")
}

func TestJSONWriteErrorWarnsOnce(t *testing.T) {
	var log syncBuf
	fw := &failWriter{}
	m, err := New(context.Background(), Options{Every: 1, JSON: fw, Log: logger(&log), gpu: noNVML{}})
	if err != nil {
		t.Fatal(err)
	}
	feed(m, summaries(20, 1))
	if _, err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "cannot write the metrics file"); n != 1 || fw.n != 1 {
		t.Errorf("%d warnings, %d writes:\n%s", n, fw.n, log.String())
	}
}

func TestJSONPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.jsonl")
	m, err := New(context.Background(), Options{Every: 2, JSONPath: path, gpu: noNVML{}})
	if err != nil {
		t.Fatal(err)
	}
	feed(m, summaries(4, 1))
	if _, err := m.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	decode(t, b)
	if _, err := New(context.Background(), Options{JSONPath: filepath.Join(path, "x")}); err == nil {
		t.Error("no error for a metrics file that cannot be created")
	}
}

func TestPrometheus(t *testing.T) {
	m, err := New(context.Background(), Options{Every: 1, Addr: "127.0.0.1:0", gpu: &fakeNVML{util: 75}, GPUPeriod: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + m.Addr() + "/metrics"
	time.Sleep(10 * time.Millisecond)
	feed(m, withMem(summaries(3, 0.5), 1, 2))
	var body string
	for i := 0; i < 100 && !strings.Contains(body, "esm2go_sequences_total 24"); i++ {
		time.Sleep(5 * time.Millisecond)
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
	}
	for _, name := range []string{"esm2go_sequences_total", "esm2go_tokens_total", "esm2go_batches_total",
		"esm2go_records_total", "esm2go_loader_wait_seconds_total", "esm2go_writer_wait_seconds_total",
		"esm2go_compute_seconds_total", `esm2go_sequences_per_second{scope="window"}`, `esm2go_tokens_per_second{scope="total"}`,
		`esm2go_time_fraction{what="loader_wait"}`, `esm2go_time_fraction{what="idle"}`, "esm2go_queue_depth", "esm2go_reader_queue",
		"esm2go_process_rss_bytes", "esm2go_go_heap_bytes", `esm2go_gpu_utilization_percent{gpu="0"} 75`,
		`esm2go_gpu_memory_used_bytes{gpu="1"}`, `esm2go_device_batches{gpu="cuda:0"} 3`,
		`esm2go_device_tokens_per_second{gpu="cuda:0",scope="window"}`, "esm2go_device_memory_in_use_bytes 1", "esm2go_warnings_total"} {
		if !strings.Contains(body, name) {
			t.Errorf("no %s in\n%s", name, body)
		}
	}
	m.Close()
	if _, err := http.Get(url); err == nil {
		t.Error("the endpoint still answers after Close")
	}
}

func TestPrometheusNoGPUMetrics(t *testing.T) {
	p := newProm()
	ss := summaries(1, 1)
	rec := &Record{Sequences: ss[0].Embedded}
	p.update(rec)
	var b strings.Builder
	mfs, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		fmt.Fprintln(&b, mf.GetName())
	}
	if strings.Contains(b.String(), "gpu") || strings.Contains(b.String(), "device_memory") {
		t.Errorf("GPU metrics without a GPU:\n%s", b.String())
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for i := 0; i < 3; i++ {
		m, err := New(context.Background(), Options{Every: 1, Addr: "127.0.0.1:0", gpu: &fakeNVML{util: 50}, GPUPeriod: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + m.Addr() + "/metrics")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		feed(m, summaries(3, 1))
		m.Close()
		m.Close() // idempotent
	}
	http.DefaultClient.CloseIdleConnections()
	var after int
	for i := 0; i < 100; i++ {
		if after = runtime.NumGoroutine(); after <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Errorf("%d goroutines before, %d after Close:\n%s", before, after, buf[:runtime.Stack(buf, true)])
}

func TestContextCancelStops(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	m, err := New(ctx, Options{Every: 1, gpu: &fakeNVML{util: 50}, GPUPeriod: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("goroutines still running after cancel")
	}
	ss := summaries(2, 1)
	m.Observe(&ss[0], false) // never blocks after cancel
	m.Observe(&ss[1], false)
	m.Observe(&ss[1], true)
	if rep, _ := m.Close(); rep.Batches != 2 {
		t.Errorf("report after cancel: %+v", rep)
	}
	for i := 0; i < 100 && runtime.NumGoroutine() > before; i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// --- a real run of the pipeline on the tiny model ---

func loadTiny(t testing.TB) *esm.Model { return testutil.LoadTiny(t, cpu.Options{Threads: 1}) }

// slowReader hands out at most chunk bytes per Read, sleeping before each.
type slowReader struct {
	r     io.Reader
	chunk int
	delay time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.delay)
	if len(p) > s.chunk {
		p = p[:s.chunk]
	}
	return s.r.Read(p)
}
func (s *slowReader) Close() error { return nil }

func fasta(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, ">p%d\n%s\n", i, strings.Repeat("MKTAYIAKQR"[i%7:], 4))
	}
	return b.String()
}

func runSlow(t *testing.T, mo Options, delay time.Duration) (*embed.Summary, Report, error) {
	t.Helper()
	model := loadTiny(t)
	mon, err := New(context.Background(), mo)
	if err != nil {
		t.Fatal(err)
	}
	text := fasta(200)
	sum, err := embed.Run(context.Background(), model, embed.Options{
		Inputs: []string{"slow.fasta"}, Out: filepath.Join(t.TempDir(), "out.parquet"),
		MaxResidues: 60, ToksPerBatch: 128, Window: 128, Workers: 1,
		Open: func(string) (io.ReadCloser, error) {
			return &slowReader{r: strings.NewReader(text), chunk: 64, delay: delay}, nil
		},
		Progress: mon.Observe,
	})
	rep, cerr := mon.Close()
	if cerr != nil {
		t.Fatal(cerr)
	}
	return sum, rep, err
}

func TestSlowReaderIsInputBound(t *testing.T) {
	var log syncBuf
	var js bytes.Buffer
	// A GPU run without NVML: the host's estimate judges it.
	sum, rep, err := runSlow(t, judgeAll(Options{Every: 3, JSON: &js, Log: logger(&log), gpu: noNVML{}}), 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "likely "+CauseInput) {
		t.Errorf("no input-bound warning:\n%s", log.String())
	}
	recs := decode(t, js.Bytes())
	if len(recs) < 3 {
		t.Errorf("%d windows for %d batches", len(recs), sum.Batches)
	}
	if rep.Sequences != 200 || rep.Batches != sum.Batches || rep.LoaderWaitFrac <= 0 {
		t.Errorf("report %+v (summary %+v)", rep, sum)
	}
}

func TestFailingMetricsFileRunSucceeds(t *testing.T) {
	var log syncBuf
	fw := &failWriter{}
	sum, _, err := runSlow(t, Options{Every: 1, JSON: fw, Log: logger(&log), NoGPU: true}, 0)
	if err != nil {
		t.Fatalf("run failed: %v", err)
	}
	if sum.Embedded != 200 {
		t.Errorf("embedded %d", sum.Embedded)
	}
	if n := strings.Count(log.String(), "cannot write the metrics file"); n != 1 {
		t.Errorf("%d warnings:\n%s", n, log.String())
	}
}

// BenchmarkObserve is the cost the compute goroutine pays per batch with
// the default window (10 batches).
func BenchmarkObserve(b *testing.B) {
	benchObserve(b, 10)
}

// BenchmarkObserveEveryBatch is the worst case: a window every batch (a
// copy and a channel send each time).
func BenchmarkObserveEveryBatch(b *testing.B) {
	benchObserve(b, 1)
}

func benchObserve(b *testing.B, every int) {
	m, err := New(context.Background(), Options{Every: every, JSON: io.Discard, Human: io.Discard, NoGPU: true})
	if err != nil {
		b.Fatal(err)
	}
	s := withMem(summaries(1, 1), 1, 2)[0]
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Batches++
		m.Observe(&s, false)
	}
	b.StopTimer()
	m.Close()
}

// BenchmarkPipeline runs the tiny model over 200 records with and without a
// monitor (window every batch, JSON and human lines to io.Discard): the
// difference is the monitor's cost on a whole run.
func BenchmarkPipeline(b *testing.B) {
	model := loadTiny(b)
	text := fasta(200)
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				var mon *Monitor
				o := embed.Options{
					Inputs: []string{"x.fasta"}, Out: filepath.Join(b.TempDir(), "out.parquet"),
					MaxResidues: 60, ToksPerBatch: 128, Window: 1024, Workers: 1,
					Open: func(string) (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(text)), nil },
				}
				if on {
					var err error
					mon, err = New(context.Background(), Options{Every: 1, JSON: io.Discard, Human: io.Discard, NoGPU: true})
					if err != nil {
						b.Fatal(err)
					}
					o.Progress = mon.Observe
				}
				if _, err := embed.Run(context.Background(), model, o); err != nil {
					b.Fatal(err)
				}
				if mon != nil {
					mon.Close()
				}
			}
		})
	}
}
