package monitor

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esm2go/esm2go/embed"
	"github.com/esm2go/esm2go/esm"
)

// GPU utilization counts from the compute start (ComputeStarted), as the
// run's other figures do, not from New: the model's loading, when the
// device idles, must dilute neither the first window nor the run's mean.
// On an H200 the first window read 12% and the run's mean 96.5% against
// 91-100% in every later window. Here NVML reads 0% through a 5 s load,
// during which the sampler takes readings, and 100% once the run computes;
// the reading whose period spans the start (30%) is not counted either.
func TestGPUUtilCountsFromComputeStart(t *testing.T) {
	for _, c := range []struct {
		name     string
		noBuffer bool // no sample buffer: utilization rates only
	}{
		{"samples", false},
		{"rates", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := newFakeClock()
			fake := &fakeNVML{scripted: true, noBuffer: c.noBuffer, util: 0}
			fake.push(0, 3) // before the monitor: passed over in any case
			var js, log syncBuf
			m, err := New(context.Background(), Options{Every: 10, JSON: &js, Log: logger(&log), gpu: fake,
				Devices: []int{0}, GPUPeriod: time.Hour, Clock: clk.now})
			if err != nil {
				t.Fatal(err)
			}
			// The model loads for 5 s, the device idle; the sampler
			// reads it (a rate more than maxUtilPeriod after New).
			for i := 0; i < 5; i++ {
				fake.push(0, 6)
				clk.add(time.Second)
				if !m.pollGPU() {
					t.Fatal("sampling ended")
				}
			}
			m.ComputeStarted()
			// The first sample's period, and NVML's rate read 0.5 s in,
			// span the start: part load, part run.
			fake.setUtil(30)
			fake.push(30, 1)
			clk.add(500 * time.Millisecond)
			if !m.pollGPU() {
				t.Fatal("sampling ended")
			}
			// The rest of window 1 (1.5 s in all) and window 2: busy.
			fake.setUtil(100)
			fake.push(100, 6)
			clk.add(time.Second)
			w1 := withMem(summariesFrom(embed.Summary{}, 10, 150*time.Millisecond, 1), 1, 2)
			observeWindow(t, m, &js, w1, 1)
			fake.push(100, 6)
			clk.add(time.Second)
			w2 := withMem(summariesFrom(w1[9], 10, 100*time.Millisecond, 1), 1, 2)
			observeWindow(t, m, &js, w2, 2)
			// Only the first call counts: a second one would drop the
			// run's readings so far (and pass over these samples, and
			// this rate read within maxUtilPeriod of it).
			m.acc.mu.Lock()
			before := m.acc.runN[0]
			m.acc.mu.Unlock()
			m.ComputeStarted()
			m.acc.mu.Lock()
			after := m.acc.runN[0]
			m.acc.mu.Unlock()
			if before == 0 || after < before {
				t.Errorf("readings counted over the run: %d before a second ComputeStarted, %d after (want kept)", before, after)
			}
			fake.push(100, 2)
			clk.add(300 * time.Millisecond)
			w3 := withMem(summariesFrom(w2[9], 3, 100*time.Millisecond, 1), 1, 2)
			m.Observe(&w3[2], true)
			rep, err := m.Close()
			if err != nil {
				t.Fatal(err)
			}
			recs := decode(t, []byte(js.String()))
			if len(recs) != 3 {
				t.Fatalf("%d records, want 2 windows and the final one", len(recs))
			}
			for i, r := range recs {
				if u, ok := r["gpu_util_pct"]; (ok || i < 2) && u != 100.0 {
					t.Errorf("window %v: gpu_util_pct %v, want 100 (nothing from the load)", r["window"], u)
				}
			}
			if !rep.GPUKnown || rep.MeanGPUUtil != 100 {
				t.Errorf("run's mean GPU utilization %v (known %v), want 100", rep.MeanGPUUtil, rep.GPUKnown)
			}
			if len(rep.Devices) != 1 || !rep.Devices[0].UtilKnown || rep.Devices[0].MeanUtil != 100 {
				t.Errorf("report devices %+v, want GPU 0 at 100%%", rep.Devices)
			}
			if rep.PeakGPUMem != 3<<30 {
				t.Errorf("peak GPU memory %d, want %d", rep.PeakGPUMem, 3<<30)
			}
			if strings.Contains(log.String(), "WARN") {
				t.Errorf("warnings:\n%s", log.String())
			}
		})
	}
}

// slowDevice is a run device whose model takes load to open, NVML reading
// its GPU idle meanwhile and busy (fake.util 100) once it is open.
func slowDevice(name string, load time.Duration, fake *fakeNVML) embed.Device {
	d := cpuDevice(name)
	open := d.Open
	d.Open = func() (*esm.Model, error) {
		time.Sleep(load)
		m, err := open()
		fake.setUtil(100)
		return m, err
	}
	return d
}

// embed calls ComputeStarted (embed.Options.Started) once loading is over:
// a run on two devices that load for 200 ms while NVML samples them idle
// (every millisecond, NVML taking a sample at each reading) reads 100% in
// every window, on each device and over the run.
func TestGPUUtilFromEmbedStart(t *testing.T) {
	cfg := loadTiny(t).Cfg
	fake := &fakeNVML{util: 0}
	var js syncBuf
	mon, err := New(context.Background(), Options{Every: 2, JSON: &js, Devices: []int{0, 1},
		gpu: fake, GPUPeriod: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	text := fasta(200)
	_, err = embed.RunDevices(context.Background(), cfg,
		[]embed.Device{slowDevice("cuda:0", 200*time.Millisecond, fake), slowDevice("cuda:1", 100*time.Millisecond, fake)},
		embed.Options{
			Inputs: []string{"x.fasta"}, Out: filepath.Join(t.TempDir(), "out.parquet"),
			MaxResidues: 60, ToksPerBatch: 128, Window: 1024, Workers: 1,
			Open:     func(string) (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(text)), nil },
			Progress: mon.Observe,
			Started:  mon.ComputeStarted,
		})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := mon.Close()
	if err != nil {
		t.Fatal(err)
	}
	var known int
	for _, r := range decode(t, []byte(js.String())) {
		if u, ok := r["gpu_util_pct"]; ok {
			known++
			if u != 100.0 {
				t.Errorf("window %v: gpu_util_pct %v, want 100", r["window"], u)
			}
		}
	}
	if known == 0 {
		t.Error("no window with a GPU figure")
	}
	if !rep.GPUKnown || rep.MeanGPUUtil != 100 {
		t.Errorf("run's mean GPU utilization %v (known %v), want 100", rep.MeanGPUUtil, rep.GPUKnown)
	}
	if len(rep.Devices) != 2 {
		t.Fatalf("report devices %+v", rep.Devices)
	}
	for _, d := range rep.Devices {
		if !d.UtilKnown || d.MeanUtil != 100 {
			t.Errorf("%s: mean utilization %v (known %v), want 100", d.Label(), d.MeanUtil, d.UtilKnown)
		}
	}
}
