//go:build cgo

package monitor

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/esm2go/esm2go/internal/nvml"
)

// This file is the NVML reader of the cgo build: internal/nvml dlopens
// libnvidia-ml.so.1 through cgo. nvml_nocgo.go stands in for it when cgo is
// off.

// nvmlDevice is what the reader calls on an NVML device; tests replace it.
type nvmlDevice interface {
	Samples(typ nvml.SamplingType, since uint64) (nvml.ValueType, []nvml.Sample, error)
	UtilizationRates() (nvml.Utilization, error)
	MemoryInfo() (nvml.Memory, error)
}

// nvmlReader reads NVML through internal/nvml, which dlopens
// libnvidia-ml.so.1: where it is missing Init returns an error and no GPU
// figure is reported.
type nvmlReader struct {
	devs []nvmlDevice
}

func nvmlErr(op string, err error) error {
	return fmt.Errorf("nvml %s: %w", op, err)
}

func (n *nvmlReader) Init() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("nvml init panicked: %v", r)
		}
	}()
	if err := nvml.Init(); err != nil {
		switch nvml.Code(err) {
		case nvml.ErrorLibraryNotFound:
			return fmt.Errorf("nvml: libnvidia-ml.so.1 not found (%w)", err)
		case nvml.ErrorDriverNotLoaded:
			return fmt.Errorf("nvml: no NVIDIA driver loaded (%w)", err)
		}
		return nvmlErr("init", err)
	}
	return nil
}

func (n *nvmlReader) Count() (int, error) {
	c, err := nvml.DeviceCount()
	if err != nil {
		return 0, nvmlErr("device count", err)
	}
	n.devs = make([]nvmlDevice, c)
	for i := range n.devs {
		d, err := nvml.DeviceByIndex(i)
		if err != nil {
			return 0, nvmlErr(fmt.Sprintf("device %d", i), err)
		}
		n.devs[i] = d
	}
	return c, nil
}

func (n *nvmlReader) UtilSamples(i int, since uint64) ([]utilSample, error) {
	vt, raw, err := n.devs[i].Samples(nvml.GPUUtilizationSamples, since)
	switch nvml.Code(err) {
	case nvml.Success:
	case nvml.ErrorNotFound: // no sample after since
		return nil, nil
	default:
		return nil, nvmlErr(fmt.Sprintf("device %d utilization samples", i), err)
	}
	out := make([]utilSample, 0, len(raw))
	for _, s := range raw {
		if s.TimeStamp <= since {
			continue
		}
		v, ok := sampleValue(vt, s.Value)
		if !ok {
			return nil, fmt.Errorf("nvml device %d utilization samples: unknown value type %d", i, vt)
		}
		out = append(out, utilSample{ts: s.TimeStamp, pct: v})
	}
	slices.SortFunc(out, func(a, b utilSample) int { return cmp.Compare(a.ts, b.ts) })
	return out, nil
}

// sampleValue decodes an nvmlValue_t union (host byte order) of type vt.
func sampleValue(vt nvml.ValueType, b [8]byte) (float64, bool) {
	e := binary.NativeEndian
	switch vt {
	case nvml.ValueDouble:
		return math.Float64frombits(e.Uint64(b[:])), true
	case nvml.ValueUnsignedInt:
		return float64(e.Uint32(b[:4])), true
	case nvml.ValueSignedInt:
		return float64(int32(e.Uint32(b[:4]))), true
	case nvml.ValueUnsignedLong, nvml.ValueUnsignedLongLong:
		return float64(e.Uint64(b[:])), true
	case nvml.ValueSignedLongLong:
		return float64(int64(e.Uint64(b[:]))), true
	case nvml.ValueUnsignedShort:
		return float64(e.Uint16(b[:2])), true
	}
	return 0, false
}

func (n *nvmlReader) Util(i int) (float64, error) {
	u, err := n.devs[i].UtilizationRates()
	if err != nil {
		return 0, nvmlErr(fmt.Sprintf("device %d utilization", i), err)
	}
	return float64(u.GPU), nil
}

func (n *nvmlReader) Memory(i int) (uint64, uint64, error) {
	m, err := n.devs[i].MemoryInfo()
	if err != nil {
		return 0, 0, nvmlErr(fmt.Sprintf("device %d memory", i), err)
	}
	return m.Used, m.Total, nil
}

func (n *nvmlReader) Shutdown() { _ = nvml.Shutdown() }
