package monitor

import (
	"bytes"
	"os"
	"runtime/metrics"
	"strconv"
)

var pageSize = int64(os.Getpagesize())

// readRSS returns the process's resident set size from /proc/self/statm
// (Linux); ok is false elsewhere.
func readRSS() (int64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * pageSize, true
}

// readPeakRSS returns VmHWM from /proc/self/status: the highest RSS of the
// process, including between samples.
func readPeakRSS() (int64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("VmHWM:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) < 1 {
			return 0, false
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, false
		}
		return kb << 10, true
	}
	return 0, false
}

// goMem reads the Go heap through runtime/metrics (no stop-the-world).
type goMem struct {
	s [2]metrics.Sample
}

func newGoMem() *goMem {
	g := &goMem{}
	g.s[0].Name = "/memory/classes/heap/objects:bytes"
	g.s[1].Name = "/memory/classes/total:bytes"
	return g
}

// read returns the bytes of live and not yet swept heap objects, and all
// memory the Go runtime has mapped.
func (g *goMem) read() (heap, total int64) {
	metrics.Read(g.s[:])
	v := func(s metrics.Sample) int64 {
		if s.Value.Kind() == metrics.KindUint64 {
			return int64(s.Value.Uint64())
		}
		return 0
	}
	return v(g.s[0]), v(g.s[1])
}
