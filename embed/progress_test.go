package embed

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/output"
)

// The figures a progress display needs: input bytes read of the input's
// size, and sequences counted per device as batches complete (rows are
// written in input order, later).
func TestProgressFigures(t *testing.T) {
	t.Parallel()
	fi, err := os.Stat(someFASTA)
	if err != nil {
		t.Fatal(err)
	}
	var opened atomic.Int64
	devs := []Device{cpuDevice("a", -1, &opened, nil, nil), cpuDevice("b", -1, &opened, nil, nil)}
	var calls, lastSeqs int64
	var monotone = true
	opts := Options{Inputs: []string{someFASTA}, Out: filepath.Join(t.TempDir(), "e"), Format: output.NPY,
		Include: esm.Mean, ToksPerBatch: 300, Window: 900,
		Progress: func(s *Summary, final bool) {
			calls++
			var seqs int64
			for _, d := range s.Devices {
				seqs += d.Sequences
			}
			if seqs < lastSeqs || s.InputBytes > s.InputSize || s.InputSize != fi.Size() {
				monotone = false
			}
			lastSeqs = seqs
		}}
	sum, err := RunDevices(context.Background(), loadTiny(t).Cfg, devs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !monotone || calls < 3 {
		t.Errorf("%d progress calls; sequences or input bytes went backwards or past the size", calls)
	}
	var seqs int64
	for _, d := range sum.Devices {
		seqs += d.Sequences
	}
	if seqs != sum.Embedded || sum.Embedded != 15 {
		t.Errorf("devices computed %d sequences, %d embedded; want 15", seqs, sum.Embedded)
	}
	if sum.InputSize != fi.Size() || sum.InputBytes != fi.Size() {
		t.Errorf("input %d of %d bytes, want %d of %d", sum.InputBytes, sum.InputSize, fi.Size(), fi.Size())
	}
}

// Started is called once, after every device has opened (loading is over)
// and before the first batch, on Run's goroutine; the run's clock starts
// after it.
func TestStartedAfterLoading(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		run  func(opts Options, opened *atomic.Int64) (*Summary, error)
	}{
		{"RunDevices", func(opts Options, opened *atomic.Int64) (*Summary, error) {
			devs := []Device{cpuDevice("a", -1, opened, nil, nil), cpuDevice("b", -1, opened, nil, nil)}
			return RunDevices(context.Background(), loadTiny(t).Cfg, devs, opts)
		}},
		{"Run", func(opts Options, opened *atomic.Int64) (*Summary, error) {
			opened.Add(2) // the model is open before Run: only the call count and order are checked here
			return Run(context.Background(), loadTiny(t), opts)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var opened atomic.Int64
			var started, progress, openAtStart, progressAtStart int64
			var at time.Time
			opts := Options{Inputs: []string{someFASTA}, Out: filepath.Join(t.TempDir(), "e"), Format: output.NPY,
				Include: esm.Mean, ToksPerBatch: 300, Window: 900,
				Started: func() {
					started++
					openAtStart, progressAtStart = opened.Load(), progress
					// A hook that takes a while: had the clock started
					// before it, Elapsed would hold these 50 ms and exceed
					// the time since its end, measured after the run.
					time.Sleep(50 * time.Millisecond)
					at = time.Now()
				},
				Progress: func(*Summary, bool) { progress++ }}
			sum, err := c.run(opts, &opened)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case started != 1:
				t.Errorf("Started called %d times, want once", started)
			case openAtStart != 2 || progressAtStart != 0:
				t.Errorf("at Started: %d devices open, %d progress calls; want 2 and 0", openAtStart, progressAtStart)
			case sum.Elapsed > time.Since(at):
				t.Errorf("elapsed %v counts from before Started (%v ago)", sum.Elapsed, time.Since(at))
			}
		})
	}
}
