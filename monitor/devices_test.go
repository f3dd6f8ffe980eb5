package monitor

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esm2go/esm2go/embed"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/internal/testutil"
)

// cpuDevice is a run device computing on a one-thread CPU backend of its
// own (what a GPU is to embed.RunDevices).
func cpuDevice(name string) embed.Device {
	var be esm.Backend
	return embed.Device{
		Name: name,
		Open: func() (*esm.Model, error) {
			be = cpu.New(cpu.Options{Threads: 1})
			return esm.LoadModel(testutil.TinyModelDir(), be)
		},
		Close: func() error {
			if be == nil {
				return nil
			}
			return be.Close()
		},
	}
}

// A run on two devices (CPU backends standing in for GPUs 0 and 1, NVML
// faked): every window has each device's figures matched to its GPU, they
// add up to the run's, and Prometheus labels them by GPU.
func TestTwoDevicePipeline(t *testing.T) {
	cfg := loadTiny(t).Cfg
	var js syncBuf
	mon, err := New(context.Background(), Options{Every: 4, JSON: &js, Addr: "127.0.0.1:0", Devices: []int{0, 1},
		gpu: &fakeNVML{util: 80, utilByDev: []float64{80, 60}, noBuffer: true}, GPUPeriod: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	text := fasta(200)
	sum, err := embed.RunDevices(context.Background(), cfg, []embed.Device{cpuDevice("cuda:0"), cpuDevice("cuda:1")}, embed.Options{
		Inputs: []string{"x.fasta"}, Out: filepath.Join(t.TempDir(), "out.parquet"),
		MaxResidues: 60, ToksPerBatch: 128, Window: 1024, Workers: 1,
		Open:     func(string) (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(text)), nil },
		Progress: mon.Observe,
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + mon.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rep, err := mon.Close()
	if err != nil {
		t.Fatal(err)
	}
	recs := decode(t, []byte(js.String()))
	last := recs[len(recs)-1]
	devs := last["devices"].([]any)
	if len(devs) != 2 {
		t.Fatalf("devices %v", last["devices"])
	}
	var batches, computed float64
	for k, d := range devs {
		d := d.(map[string]any)
		if d["gpu"] != float64(k) || d["name"] != []string{"cuda:0", "cuda:1"}[k] {
			t.Errorf("device %d: %v", k, d)
		}
		batches += d["batches"].(float64)
		computed += d["computed"].(float64)
	}
	if batches != float64(sum.Batches) || computed != 200 || last["computed"] != 200.0 {
		t.Errorf("devices: %v batches, %v sequences; run: %d batches, computed %v", batches, computed, sum.Batches, last["computed"])
	}
	for _, want := range []string{`esm2go_device_batches{gpu="0"}`, `esm2go_device_batches{gpu="1"}`,
		`esm2go_device_tokens_per_second{gpu="1",scope="window"}`, `esm2go_device_time_fraction{gpu="0",what="compute"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("no %s in the Prometheus text", want)
		}
	}
	if len(rep.Devices) != 2 || rep.Devices[0].Batches+rep.Devices[1].Batches != sum.Batches {
		t.Errorf("report devices %+v", rep.Devices)
	}
}
