package monitor

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/esm2go/esm2go/embed"
)

// twoDevices is a synthetic two-GPU run: n windows of 10 batches, each
// batch 1 s; device 0 computes all the time, device 1 waits for the loader
// wait1 of its time. Rows are written in bursts (every other window), as
// the writer restores input order, while sequences are computed steadily.
func twoDevices(n int, wait1 float64) []embed.Summary {
	var out []embed.Summary
	var s embed.Summary
	s.Devices = []embed.DeviceSummary{{Name: "cuda:0"}, {Name: "cuda:1"}}
	for w := 0; w < n; w++ {
		for b := 0; b < 10; b++ {
			s.Devices = append([]embed.DeviceSummary(nil), s.Devices...)
			k := b % 2
			d := &s.Devices[k]
			d.Batches++
			d.Sequences += 8
			d.Tokens += 816
			if k == 0 {
				d.Compute += 2 * time.Second
			} else {
				d.Compute += time.Duration((1 - wait1) * float64(2*time.Second))
				d.LoaderWait += time.Duration(wait1 * float64(2*time.Second))
			}
			s.Batches++
			s.Records += 8
			s.Tokens += 816
			s.Elapsed += time.Second
			s.Compute = s.Devices[0].Compute + s.Devices[1].Compute
			s.LoaderWait = s.Devices[1].LoaderWait
			out = append(out, s)
		}
		if w%2 == 1 {
			out[len(out)-1].Embedded = int64(80 * (w + 1)) // a burst of rows
			s.Embedded = out[len(out)-1].Embedded
		}
	}
	return out
}

// The idle warning names the GPU that idled, with advice that fits the
// cause; per-device figures reach the JSON lines and the report.
func TestMultiGPUIdleNamesGPU(t *testing.T) {
	clk := newFakeClock()
	fake := &fakeNVML{scripted: true, noBuffer: true, utilByDev: []float64{96, 70}}
	var js, log syncBuf
	m, err := New(context.Background(), Options{Every: 10, JSON: &js, Log: logger(&log), gpu: fake,
		GPUPeriod: time.Hour, Clock: clk.now, Devices: []int{0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	ss := twoDevices(4, 0.3)
	for w := 0; w < 4; w++ {
		clk.add(10 * time.Second) // NVML's rates now average the run
		observeWindow(t, m, &js, ss[w*10:(w+1)*10], w+1)
	}
	m.Observe(&ss[len(ss)-1], true)
	rep, err := m.Close()
	if err != nil {
		t.Fatal(err)
	}
	recs := decode(t, []byte(js.String()))
	if len(recs) != 5 {
		t.Fatalf("%d records, want 4 windows and the final one", len(recs))
	}
	// Windows 1 and 2 are warm-up (fewer than 3 windows); 3 and 4 are
	// judged (40 s of run); the final one covers the drain.
	for i, want := range []string{"warm-up", "warm-up", "", "", "final"} {
		if got, _ := recs[i]["not_judged"].(string); got != want {
			t.Errorf("window %d: not_judged %q, want %q", i+1, got, want)
		}
	}
	r := recs[2]
	devs, _ := r["devices"].([]any)
	if len(devs) != 2 {
		t.Fatalf("devices %v", r["devices"])
	}
	d1 := devs[1].(map[string]any)
	if d1["gpu"] != 1.0 || d1["util_pct"] != 70.0 || d1["window_batches"] != 5.0 || d1["idle_cause"] != CauseInput {
		t.Errorf("device 1: %v", d1)
	}
	if d0 := devs[0].(map[string]any); d0["idle_cause"] != nil || d0["util_pct"] != 96.0 {
		t.Errorf("device 0: %v", d0)
	}
	// Per-device throughput over the 10 s window: 5 batches of 816 tokens.
	if got := d1["tok_per_s"].(float64); got != 408 {
		t.Errorf("device 1 tok_per_s %v, want 408", got)
	}
	msg := "GPU 1 idle 30% of the last window (10 batches, 10s): likely " + CauseInput + "; " + DefaultAdvice(CauseInput)
	if n := strings.Count(log.String(), msg); n != 1 {
		t.Errorf("%d warnings %q (want 1: the second within WarnInterval); log:\n%s", n, msg, log.String())
	}
	if strings.Contains(log.String(), "GPU 0 idle") {
		t.Errorf("busy GPU 0 warned:\n%s", log.String())
	}
	if len(rep.Devices) != 2 || !rep.Devices[1].UtilKnown || rep.Devices[1].MeanUtil != 70 || rep.Devices[1].Label() != "GPU 1" ||
		rep.Devices[0].Batches != 20 {
		t.Errorf("report devices %+v", rep.Devices)
	}
	if !strings.Contains(strings.Join(rep.Lines(), "\n"), "metrics: GPU 1: 20 batches, 160 sequences") {
		t.Errorf("report lines %q", rep.Lines())
	}
}

// Records/s counts sequences as batches complete, not rows as the writer
// releases them in input order: steady while rows come in bursts.
func TestRecordsPerSecondCountsComputed(t *testing.T) {
	var js syncBuf
	m, err := New(context.Background(), Options{Every: 10, JSON: &js, gpu: noNVML{}})
	if err != nil {
		t.Fatal(err)
	}
	ss := twoDevices(4, 0)
	for w := 0; w < 4; w++ {
		observeWindow(t, m, &js, ss[w*10:(w+1)*10], w+1)
	}
	m.Close()
	for _, r := range decode(t, []byte(js.String()))[:4] {
		// 10 batches of 8 sequences in 10 s, whatever the writer did.
		if r["seq_per_s"] != 8.0 || r["window_computed"] != 80.0 {
			t.Errorf("window %v: seq_per_s %v, window_computed %v (rows written %v); want 8 and 80",
				r["window"], r["seq_per_s"], r["window_computed"], r["window_sequences"])
		}
	}
}

// When a window is judged: never on the CPU, not before the third window
// or 10 s of run, not while the run reads past an earlier run's committed
// records.
func TestIdleRules(t *testing.T) {
	// windows of 10 batches of 1 s, the host computing half the time (the
	// loader the rest): idle 50% when judged.
	run := func(t *testing.T, o Options, windows int, batch time.Duration, resumed func(w int) int64) ([]map[string]any, string) {
		var js, log syncBuf
		o.Every, o.JSON, o.Log = 10, &js, logger(&log)
		if !o.NoGPU {
			o.gpu = noNVML{} // a GPU run without NVML: the host's estimate
		}
		m, err := New(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		var prev embed.Summary
		for w := 0; w < windows; w++ {
			ss := summariesFrom(prev, 10, batch, 0.5)
			for i := range ss {
				ss[i].Resumed = resumed(w)
			}
			observeWindow(t, m, &js, ss, w+1)
			prev = ss[len(ss)-1]
		}
		m.Close()
		return decode(t, []byte(js.String())), log.String()
	}
	none := func(int) int64 { return 0 }
	t.Run("cpu", func(t *testing.T) {
		recs, log := run(t, Options{NoGPU: true}, 4, time.Second, none)
		for _, r := range recs {
			if r["not_judged"] != "cpu run" || r["idle_cause"] != nil {
				t.Errorf("window %v: not_judged %v, idle_cause %v", r["window"], r["not_judged"], r["idle_cause"])
			}
		}
		if strings.Contains(log, "idle") {
			t.Errorf("idle warning on the CPU:\n%s", log)
		}
	})
	t.Run("short", func(t *testing.T) {
		// Five windows, but 5 s in all: shorter than 10 s.
		recs, log := run(t, Options{}, 5, 100*time.Millisecond, none)
		for _, r := range recs[:5] {
			if r["not_judged"] != "warm-up" {
				t.Errorf("window %v: not_judged %v", r["window"], r["not_judged"])
			}
		}
		if strings.Contains(log, "idle") {
			t.Errorf("idle warning on a short run:\n%s", log)
		}
	})
	t.Run("long", func(t *testing.T) {
		recs, log := run(t, Options{}, 4, time.Second, none)
		if recs[1]["not_judged"] != "warm-up" || recs[2]["not_judged"] != nil || recs[2]["idle_cause"] != CauseInput {
			t.Errorf("windows 2, 3: %v / %v, %v", recs[1]["not_judged"], recs[2]["not_judged"], recs[2]["idle_cause"])
		}
		if !strings.Contains(log, "device idle 50% of the last window (10 batches, 10s): likely "+CauseInput) {
			t.Errorf("no idle warning:\n%s", log)
		}
	})
	t.Run("resuming", func(t *testing.T) {
		// The run reads past committed records through window 4.
		recs, log := run(t, Options{}, 5, time.Second, func(w int) int64 { return int64(min(w, 3) * 1000) })
		for i, want := range []any{"warm-up", "warm-up", "resuming", "resuming", nil} {
			if recs[i]["not_judged"] != want {
				t.Errorf("window %d: not_judged %v, want %v", i+1, recs[i]["not_judged"], want)
			}
		}
		if n := strings.Count(log, "device idle"); n != 1 {
			t.Errorf("%d idle warnings, want 1 (window 5):\n%s", n, log)
		}
	})
}

func TestInputProgress(t *testing.T) {
	s := embed.Summary{InputBytes: 250, Elapsed: 10 * time.Second}
	if _, _, ok := InputProgress(&s); ok {
		t.Error("progress without a size (stdin)")
	}
	s.InputSize = 1000
	f, eta, ok := InputProgress(&s)
	// 250 bytes in 10 s: 750 bytes left take 30 s at that rate.
	if !ok || f != 0.25 || eta != 30*time.Second {
		t.Errorf("%v, %v, %v; want 0.25, 30s", f, eta, ok)
	}
	// All bytes read, but only half of the records read are done (the
	// reader works ahead of the devices): half the run.
	h := embed.Summary{InputBytes: 1000, InputSize: 1000, Records: 100, Skipped: 10, Elapsed: 10 * time.Second,
		Devices: []embed.DeviceSummary{{Sequences: 25}, {Sequences: 15}}}
	if f, eta, _ := InputProgress(&h); f != 0.5 || eta != 10*time.Second {
		t.Errorf("reader ahead: %v, %v; want 0.5, 10s", f, eta)
	}
	// One block holds the whole input: the packer has taken 177 of its
	// 1,500 records and 116 are done: 7.7%, not 116/177.
	one := embed.Summary{InputBytes: 1000, InputSize: 1000, Records: 177, RecordsRead: 1500, Embedded: 116, Elapsed: 10 * time.Second}
	if f, _, _ := InputProgress(&one); math.Abs(f-116.0/1500) > 1e-12 {
		t.Errorf("one block: %v, want %v", f, 116.0/1500)
	}
	s.InputBytes = 1100 // the file grew while read
	if f, eta, _ := InputProgress(&s); f != 1 || eta != 0 {
		t.Errorf("past the size: %v, %v", f, eta)
	}
	var js syncBuf
	m, err := New(context.Background(), Options{Every: 1, JSON: &js, NoGPU: true})
	if err != nil {
		t.Fatal(err)
	}
	ss := summaries(2, 1)
	ss[0].InputBytes, ss[0].InputSize = 100, 400
	ss[1].InputBytes = 200 // stdin: no size
	feed(m, ss)
	m.Close()
	recs := decode(t, []byte(js.String()))
	if recs[0]["input_frac"] != 0.25 || math.Abs(recs[0]["eta_s"].(float64)-0.3) > 1e-9 || recs[0]["input_size_bytes"] != 400.0 {
		t.Errorf("window 1: %v", recs[0])
	}
	if _, ok := recs[1]["input_frac"]; ok || recs[1]["input_bytes"] != 200.0 {
		t.Errorf("window 2 (no size): %v", recs[1])
	}
}
