package embed

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/output"
)

// failingBackend fails the batch numbered failAt (0-based) and every later
// one, closing failed the first time.
type failingBackend struct {
	esm.Backend
	batches *atomic.Int64
	failAt  int64
	failed  chan struct{}
}

var errDeviceLost = errors.New("device lost")

func (b failingBackend) SetBatch(x *esm.Batch) error {
	n := b.batches.Add(1) - 1
	if n == b.failAt {
		close(b.failed)
	}
	if n >= b.failAt {
		return errDeviceLost
	}
	return b.Backend.SetBatch(x)
}

// gatedBackend starts its first batch only once gate is closed.
type gatedBackend struct {
	esm.Backend
	gate chan struct{}
}

func (b gatedBackend) SetBatch(x *esm.Batch) error {
	select {
	case <-b.gate:
	case <-time.After(time.Minute):
		return errors.New("test gate never opened")
	}
	return b.Backend.SetBatch(x)
}

// cpuDevice opens the tiny model on a CPU backend of its own (one thread, as
// the reference run: results are then bit-identical whichever device runs a
// batch). With failAt >= 0 it fails from its batch failAt on and closes
// failed then; with gate non-nil it computes only once gate is closed.
func cpuDevice(name string, failAt int64, opened *atomic.Int64, failed, gate chan struct{}) Device {
	var be esm.Backend
	return Device{
		Name: name,
		Open: func() (*esm.Model, error) {
			opened.Add(1)
			be = cpu.New(cpu.Options{Threads: 1})
			switch {
			case failAt >= 0:
				be = failingBackend{Backend: be, batches: new(atomic.Int64), failAt: failAt, failed: failed}
			case gate != nil:
				be = gatedBackend{Backend: be, gate: gate}
			}
			return esm.LoadModel(tinyModel, be)
		},
		Close: func() error {
			if be == nil {
				return nil
			}
			return be.Close()
		},
	}
}

func readNPYDir(t *testing.T, dir string, D int) ([]record, []float32, []float32) {
	t.Helper()
	recs := readRecords(t, dir)
	mean, shape := readNPY(t, filepath.Join(dir, "mean_3.npy"))
	tok, tshape := readNPY(t, filepath.Join(dir, "per_tok_3.npy"))
	if shape[0] != len(recs) || shape[1] != D || tshape[1] != D {
		t.Fatalf("%s: shapes %v %v for %d records", dir, shape, tshape, len(recs))
	}
	return recs, mean, tok
}

// TestRunDevicesEqualsOneDevice: three device workers sharing one packer
// write the same rows, in the same order, with the same values as one.
func TestRunDevicesEqualsOneDevice(t *testing.T) {
	t.Parallel()
	be := cpu.New(cpu.Options{Threads: 1})
	defer be.Close()
	m, err := esm.LoadModel(tinyModel, be)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	opts := func(out string) Options {
		return Options{Inputs: []string{someFASTA}, Out: out, Format: output.NPY,
			Include: esm.Mean | esm.PerTok, ToksPerBatch: 300, Window: 900}
	}
	ref := filepath.Join(t.TempDir(), "one")
	if _, err := Run(context.Background(), m, opts(ref)); err != nil {
		t.Fatal(err)
	}
	var opened atomic.Int64
	devs := []Device{cpuDevice("a", -1, &opened, nil, nil), cpuDevice("b", -1, &opened, nil, nil), cpuDevice("c", -1, &opened, nil, nil)}
	out := filepath.Join(t.TempDir(), "three")
	sum, err := RunDevices(context.Background(), m.Cfg, devs, opts(out))
	if err != nil {
		t.Fatal(err)
	}
	if opened.Load() != 3 {
		t.Fatalf("%d devices opened, want 3", opened.Load())
	}
	r1, m1, t1 := readNPYDir(t, ref, m.Cfg.Dim)
	r3, m3, t3 := readNPYDir(t, out, m.Cfg.Dim)
	if !reflect.DeepEqual(r1, r3) || len(r3) != 15 {
		t.Fatalf("records differ:\n%v\n%v", r1, r3)
	}
	if !reflect.DeepEqual(m1, m3) || !reflect.DeepEqual(t1, t3) {
		t.Fatal("values differ from the one-device run (same batches on identical one-thread CPU backends must be bit-identical)")
	}
	if len(sum.Devices) != 3 {
		t.Fatalf("summary has %d devices", len(sum.Devices))
	}
	var batches, tokens int64
	for _, d := range sum.Devices {
		batches += d.Batches
		tokens += d.Tokens
	}
	if batches != sum.Batches || tokens != sum.Tokens || sum.Batches < 3 {
		t.Fatalf("per-device batches %d tokens %d, totals %d %d: %+v", batches, tokens, sum.Batches, sum.Tokens, sum.Devices)
	}
}

// TestRunDevicesOneFails: a device that fails mid-run stops the run; the
// partial output holds an exact prefix of the input, every row equal to a
// clean run's, none twice. The whole input is one bucketing window, so the
// healthy devices, held back until the failure, cannot stall the packer.
func TestRunDevicesOneFails(t *testing.T) {
	t.Parallel()
	ref := filepath.Join(t.TempDir(), "ref")
	var opened atomic.Int64
	cfgModel := loadTiny(t)
	opts := func(out string) Options {
		return Options{Inputs: []string{someFASTA}, Out: out, Format: output.NPY,
			Include: esm.Mean | esm.PerTok, ToksPerBatch: 300, Window: 1 << 20}
	}
	if _, err := RunDevices(context.Background(), cfgModel.Cfg, []Device{cpuDevice("ref", -1, &opened, nil, nil)}, opts(ref)); err != nil {
		t.Fatal(err)
	}

	for _, failAt := range []int64{0, 1, 2} {
		t.Run(fmt.Sprint("fail at batch ", failAt), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "emb")
			// The healthy devices compute once the bad one has failed: it
			// runs the first failAt batches alone, then fails on the next,
			// while the others start.
			failed := make(chan struct{})
			devs := []Device{cpuDevice("ok1", -1, &opened, nil, failed), cpuDevice("bad", failAt, &opened, failed, nil), cpuDevice("ok2", -1, &opened, nil, failed)}
			_, err := RunDevices(context.Background(), cfgModel.Cfg, devs, opts(out))
			if !errors.Is(err, errDeviceLost) || !strings.Contains(err.Error(), "device bad") {
				t.Fatalf("error %v, want the lost device named", err)
			}
			if !errors.Is(err, ErrResumable) {
				// Possible only when the failure came before the first
				// record's row reached the writer.
				t.Log("failed before any row was committed")
			}
			// Resume with healthy devices: the result equals a clean run's,
			// bit for bit (same batches on identical one-thread backends).
			devs = []Device{cpuDevice("ok1", -1, &opened, nil, nil), cpuDevice("ok2", -1, &opened, nil, nil)}
			sum, err := RunDevices(context.Background(), cfgModel.Cfg, devs, opts(out))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("resumed after %d records", sum.Resumed)
			sameOutput(t, ref, out, cfgModel.Cfg.Layers)
		})
	}
}

// TestOpenErrorSaidOnce: a device that fails to open is reported once (the
// error reached the caller twice, once from the open report and once from
// the worker's return).
func TestOpenErrorSaidOnce(t *testing.T) {
	t.Parallel()
	var opened atomic.Int64
	bad := Device{Name: "bad", Open: func() (*esm.Model, error) { return nil, errors.New("weights are NaN") }}
	devs := []Device{cpuDevice("ok", -1, &opened, nil, nil), bad}
	cfg := loadTiny(t).Cfg
	out := filepath.Join(t.TempDir(), "o")
	_, err := RunDevices(context.Background(), cfg, devs, Options{Inputs: []string{someFASTA}, Out: out, Format: output.NPY, Include: esm.Mean})
	if err == nil || strings.Count(err.Error(), "weights are NaN") != 1 {
		t.Fatalf("error %v: want the open failure said once", err)
	}
}
