//go:build !cgo

package monitor

import "errors"

// errNoCgo is why a pure-Go build has no GPU figures: internal/nvml reaches
// libnvidia-ml.so.1 through cgo.
var errNoCgo = errors.New("nvml: NVML needs the cgo build (this binary was built with CGO_ENABLED=0); no GPU utilization or memory figures")

// nvmlReader is the NVML reader of a build without cgo: Init reports why
// there are no figures, and the monitor goes on without them.
type nvmlReader struct{}

func (*nvmlReader) Init() error                                   { return errNoCgo }
func (*nvmlReader) Count() (int, error)                           { return 0, errNoCgo }
func (*nvmlReader) UtilSamples(int, uint64) ([]utilSample, error) { return nil, errNoCgo }
func (*nvmlReader) Util(int) (float64, error)                     { return 0, errNoCgo }
func (*nvmlReader) Memory(int) (uint64, uint64, error)            { return 0, 0, errNoCgo }
func (*nvmlReader) Shutdown()                                     {}
