package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"runtime/trace"
)

// Profiling a run: ESM2GO_CPUPROFILE=FILE writes a CPU profile of the
// whole process (read it with `go tool pprof esm2go FILE`), and
// ESM2GO_TRACE=FILE an execution trace (`go tool trace FILE`), which
// shows what each goroutine of the pipeline waited for. They are for
// finding where a slow run spends its time; leave them unset otherwise.
const (
	envCPUProfile = "ESM2GO_CPUPROFILE"
	envTrace      = "ESM2GO_TRACE"
)

// startProfiles starts what getenv asks for; stop ends it and closes the
// files. A file that cannot be created is an error before anything runs.
func startProfiles(getenv func(string) string) (stop func() error, err error) {
	var stops []func() error
	stop = func() error {
		var errs []error
		for i := len(stops) - 1; i >= 0; i-- {
			errs = append(errs, stops[i]())
		}
		stops = nil
		return errors.Join(errs...)
	}
	if path := getenv(envCPUProfile); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", envCPUProfile, err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", envCPUProfile, err)
		}
		stops = append(stops, func() error {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				return fmt.Errorf("%s: %w", envCPUProfile, err)
			}
			return nil
		})
	}
	if path := getenv(envTrace); path != "" {
		f, err := os.Create(path)
		if err == nil {
			if err = trace.Start(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			return nil, errors.Join(fmt.Errorf("%s: %w", envTrace, err), stop())
		}
		stops = append(stops, func() error {
			trace.Stop()
			if err := f.Close(); err != nil {
				return fmt.Errorf("%s: %w", envTrace, err)
			}
			return nil
		})
	}
	return stop, nil
}
