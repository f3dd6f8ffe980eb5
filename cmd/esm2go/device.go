package main

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/esm2go/esm2go/embed"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	esmcuda "github.com/esm2go/esm2go/esm/cuda"
)

// deviceSpec is a parsed --device value.
type deviceSpec struct {
	raw  string // as given
	kind string // "auto", "cpu" or "cuda"
	ords []int  // CUDA device ordinals (kind "cuda"); empty with all
	all  bool   // cuda:all
}

// parseDevice accepts auto, cpu, cuda (= cuda:0), cuda:N, cuda:N,M,...
// and cuda:all. An ordinal may repeat (cuda:0,0 runs two workers on one
// GPU, to test the multi-device pipeline on a one-GPU machine).
func parseDevice(s string) (deviceSpec, error) {
	raw := s
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "auto", "cpu":
		return deviceSpec{raw: raw, kind: s}, nil
	case "cuda":
		return deviceSpec{raw: raw, kind: "cuda", ords: []int{0}}, nil
	case "cuda:all":
		return deviceSpec{raw: raw, kind: "cuda", all: true}, nil
	}
	rest, ok := strings.CutPrefix(s, "cuda:")
	if !ok {
		return deviceSpec{}, fmt.Errorf("invalid --device %q (want auto, cpu, cuda, cuda:N, cuda:N,M,... or cuda:all)", s)
	}
	spec := deviceSpec{raw: raw, kind: "cuda"}
	for _, f := range strings.Split(rest, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return deviceSpec{}, fmt.Errorf("invalid --device %q: %q is not a device number (want cuda:N, cuda:N,M,... or cuda:all)", s, f)
		}
		spec.ords = append(spec.ords, n)
	}
	return spec, nil
}

func (d deviceSpec) String() string {
	switch {
	case d.kind != "cuda":
		return d.kind
	case d.all:
		return "cuda:all"
	}
	s := make([]string, len(d.ords))
	for i, o := range d.ords {
		s[i] = strconv.Itoa(o)
	}
	return "cuda:" + strings.Join(s, ",")
}

// parsePrecision reads --precision (esm.ParsePrecision) and names the flag
// in its error.
func parsePrecision(s string) (esm.Precision, error) {
	p, err := esm.ParsePrecision(s)
	if err != nil {
		return "", fmt.Errorf("invalid --precision %q: %w", oneLine(cutFlag(s)), err)
	}
	return p, nil
}

// cutFlag shortens a flag value quoted in an error to about 200 bytes.
func cutFlag(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// resolveDevices turns the spec into what runs: the CUDA ordinals (none
// for the CPU) and the precision the run computes in (fp32 on the CPU).
// auto uses GPU 0 when the CUDA backend can start there, else the CPU
// (saying why through noGPU); cuda fails with the reason. Deciding here,
// before anything loads, lets the precision go into the run's identity
// (resume).
func resolveDevices(spec deviceSpec, precision esm.Precision, precisionSet bool, note func(string), noGPU func(error)) (ords []int, prec esm.Precision, err error) {
	if spec.kind == "cuda" || spec.kind == "auto" {
		n, perr := esmcuda.Probe()
		switch {
		case perr == nil && spec.all:
			for i := 0; i < n; i++ {
				ords = append(ords, i)
			}
			return ords, precision, nil
		case perr == nil && spec.kind == "auto":
			return []int{0}, precision, nil
		case perr == nil:
			for _, o := range spec.ords {
				if o >= n {
					return nil, "", fmt.Errorf("--device %s: CUDA device %d not found (%d devices)", spec.raw, o, n)
				}
			}
			return spec.ords, precision, nil
		case spec.kind == "cuda":
			return nil, "", fmt.Errorf("--device %s: %w", spec.raw, perr)
		}
		noGPU(perr)
	}
	if precisionSet && precision != esm.FP32 {
		note(fmt.Sprintf("--precision %s applies to the GPU only; the CPU computes in fp32", precision))
	}
	return nil, esm.FP32, nil
}

// oneDevice is resolveDevices for the commands that run on one device
// (contacts, score): of several GPUs (cuda:all, cuda:N,M,...) the first is
// used, and note says so; no GPU under auto is said in noGPUNote's words.
func oneDevice(spec deviceSpec, precision esm.Precision, precisionSet bool, threads int, note func(string)) ([]int, esm.Precision, error) {
	ords, prec, err := resolveDevices(spec, precision, precisionSet, note, func(perr error) {
		msg, _ := noGPUNote(perr, threads)
		note(msg)
	})
	if err == nil && len(ords) > 1 {
		note(fmt.Sprintf("runs on one device: cuda:%d of --device %s", ords[0], spec.raw))
		ords = ords[:1]
	}
	return ords, prec, err
}

// onDevice opens the model (an embed.Device's open and close) and runs fn
// on one goroutine locked to its OS thread, the only one that touches the
// backend.
func onDevice[T any](open func() (*esm.Model, error), closeDev func() error, fn func(*esm.Model) (T, error)) (res T, err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer func() {
			if closeDev != nil {
				err = errors.Join(err, closeDev())
			}
		}()
		m, oerr := open()
		if oerr != nil {
			err = oerr
			return
		}
		defer func() { err = errors.Join(err, m.Close()) }()
		res, err = fn(m)
	}()
	<-done
	return res, err
}

// devices builds the run's devices: one per CUDA ordinal, or the CPU. Each
// opens its backend and the model on its own worker goroutine (embed owns
// those goroutines), so the CUDA backend belongs to the goroutine that uses
// it; src supplies the weights to all of them.
func devices(cfg esm.Config, src esm.Source, ords []int, precision esm.Precision, threads int, loaded func(name, backend string)) []embed.Device {
	if len(ords) == 0 {
		var be esm.Backend
		return []embed.Device{{
			Name: "cpu",
			Open: func() (*esm.Model, error) {
				be = cpu.New(cpu.Options{Threads: threads})
				return openOn(cfg, src, be, "cpu", loaded)
			},
			Close: func() error { return closeIf(be) },
		}}
	}
	devs := make([]embed.Device, len(ords))
	for i, ord := range ords {
		name := fmt.Sprintf("cuda:%d", ord)
		var be *esmcuda.Backend
		devs[i] = embed.Device{
			Name: name,
			Open: func() (m *esm.Model, err error) {
				defer func() {
					// A backend must never take the process down with it.
					if r := recover(); r != nil {
						m, err = nil, fmt.Errorf("starting the CUDA backend panicked: %v", r)
					}
				}()
				b, err := esmcuda.New(esmcuda.Options{Device: ord, Precision: precision})
				if err != nil {
					return nil, fmt.Errorf("starting the CUDA backend: %w", err) // embed names the device
				}
				be = b
				return openOn(cfg, src, b, name, loaded)
			},
			Close: func() error {
				if be == nil {
					return nil
				}
				return be.Close()
			},
		}
	}
	return devs
}

func openOn(cfg esm.Config, src esm.Source, be esm.Backend, name string, loaded func(name, backend string)) (*esm.Model, error) {
	m, err := esm.NewModel(cfg, src, be)
	if err != nil {
		return nil, fmt.Errorf("loading the model on %s: %w", be.Name(), err)
	}
	if loaded != nil {
		loaded(name, be.Name())
	}
	return m, nil
}

func closeIf(be esm.Backend) error {
	if be == nil {
		return nil
	}
	return be.Close()
}
