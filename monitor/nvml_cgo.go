//go:build cgo

package monitor

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// This file is the NVML reader of the cgo build: go-nvml dlopens
// libnvidia-ml.so.1 through cgo. nvml_nocgo.go stands in for it when cgo is
// off.

// nvmlReader reads NVML through go-nvml, which dlopens libnvidia-ml.so.1:
// where it is missing Init returns an error and no GPU figure is reported.
type nvmlReader struct {
	devs []nvml.Device
}

func nvmlErr(op string, r nvml.Return) error {
	return fmt.Errorf("nvml %s: %s", op, nvml.ErrorString(r))
}

func (n *nvmlReader) Init() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("nvml init panicked: %v", r)
		}
	}()
	if r := nvml.Init(); r != nvml.SUCCESS {
		if r == nvml.ERROR_LIBRARY_NOT_FOUND {
			return fmt.Errorf("nvml: libnvidia-ml.so.1 not found")
		}
		return nvmlErr("init", r)
	}
	return nil
}

func (n *nvmlReader) Count() (int, error) {
	c, r := nvml.DeviceGetCount()
	if r != nvml.SUCCESS {
		return 0, nvmlErr("device count", r)
	}
	n.devs = make([]nvml.Device, c)
	for i := range n.devs {
		d, r := nvml.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			return 0, nvmlErr(fmt.Sprintf("device %d", i), r)
		}
		n.devs[i] = d
	}
	return c, nil
}

func (n *nvmlReader) UtilSamples(i int, since uint64) ([]utilSample, error) {
	vt, raw, r := n.devs[i].GetSamples(nvml.GPU_UTILIZATION_SAMPLES, since)
	switch r {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_FOUND: // no sample after since
		return nil, nil
	default:
		return nil, nvmlErr(fmt.Sprintf("device %d utilization samples", i), r)
	}
	out := make([]utilSample, 0, len(raw))
	for _, s := range raw {
		if s.TimeStamp <= since {
			continue
		}
		v, ok := sampleValue(vt, s.SampleValue)
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
	case nvml.VALUE_TYPE_DOUBLE:
		return math.Float64frombits(e.Uint64(b[:])), true
	case nvml.VALUE_TYPE_UNSIGNED_INT:
		return float64(e.Uint32(b[:4])), true
	case nvml.VALUE_TYPE_SIGNED_INT:
		return float64(int32(e.Uint32(b[:4]))), true
	case nvml.VALUE_TYPE_UNSIGNED_LONG, nvml.VALUE_TYPE_UNSIGNED_LONG_LONG:
		return float64(e.Uint64(b[:])), true
	case nvml.VALUE_TYPE_SIGNED_LONG_LONG:
		return float64(int64(e.Uint64(b[:]))), true
	case nvml.VALUE_TYPE_UNSIGNED_SHORT:
		return float64(e.Uint16(b[:2])), true
	}
	return 0, false
}

func (n *nvmlReader) Util(i int) (float64, error) {
	u, r := n.devs[i].GetUtilizationRates()
	if r != nvml.SUCCESS {
		return 0, nvmlErr(fmt.Sprintf("device %d utilization", i), r)
	}
	return float64(u.Gpu), nil
}

func (n *nvmlReader) Memory(i int) (uint64, uint64, error) {
	m, r := n.devs[i].GetMemoryInfo()
	if r != nvml.SUCCESS {
		return 0, 0, nvmlErr(fmt.Sprintf("device %d memory", i), r)
	}
	return m.Used, m.Total, nil
}

func (n *nvmlReader) Shutdown() { nvml.Shutdown() }
