//go:build cgo

package monitor

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/internal/nvml"
)

// fakeDevice is an NVML device answering Samples.
type fakeDevice struct {
	nvmlDevice // nil: other calls panic
	vt         nvml.ValueType
	samples    []nvml.Sample
	ret        nvml.Return
	typ        nvml.SamplingType
	since      uint64
}

func (d *fakeDevice) Samples(typ nvml.SamplingType, since uint64) (nvml.ValueType, []nvml.Sample, error) {
	d.typ, d.since = typ, since
	if d.ret != nvml.Success {
		return d.vt, nil, &nvml.Error{Call: "nvmlDeviceGetSamples", Code: d.ret, Msg: fmt.Sprintf("NVML error %d", d.ret)}
	}
	return d.vt, d.samples, nil
}

func value(vt nvml.ValueType, v float64) [8]byte {
	var b [8]byte
	e := binary.NativeEndian
	switch vt {
	case nvml.ValueDouble:
		e.PutUint64(b[:], math.Float64bits(v))
	case nvml.ValueUnsignedInt, nvml.ValueSignedInt:
		e.PutUint32(b[:], uint32(int32(v)))
	case nvml.ValueUnsignedShort:
		e.PutUint16(b[:], uint16(v))
	default:
		e.PutUint64(b[:], uint64(int64(v)))
	}
	return b
}

func TestNVMLReaderUtilSamples(t *testing.T) {
	vt := nvml.ValueUnsignedInt
	dev := &fakeDevice{vt: vt, ret: nvml.Success, samples: []nvml.Sample{
		{TimeStamp: 30, Value: value(vt, 70)},
		{TimeStamp: 10, Value: value(vt, 50)}, // not after since
		{TimeStamp: 20, Value: value(vt, 60)},
	}}
	r := &nvmlReader{devs: []nvmlDevice{dev}}
	got, err := r.UtilSamples(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := []utilSample{{20, 60}, {30, 70}}; !slices.Equal(got, want) {
		t.Errorf("samples %v, want %v", got, want)
	}
	if dev.typ != nvml.GPUUtilizationSamples || dev.since != 10 {
		t.Errorf("GetSamples(%v, %v)", dev.typ, dev.since)
	}
	dev.ret = nvml.ErrorNotFound // no sample since
	if got, err := r.UtilSamples(0, 30); got != nil || err != nil {
		t.Errorf("no sample: %v, %v", got, err)
	}
	dev.ret = nvml.ErrorNotSupported
	if _, err := r.UtilSamples(0, 30); err == nil || !strings.Contains(err.Error(), "device 0 utilization samples") {
		t.Errorf("unsupported: %v", err)
	}
	dev.ret, dev.vt = nvml.Success, nvml.ValueTypeCount
	if _, err := r.UtilSamples(0, 0); err == nil {
		t.Error("no error for an unknown value type")
	}
}

func TestSampleValue(t *testing.T) {
	for _, vt := range []nvml.ValueType{nvml.ValueDouble, nvml.ValueUnsignedInt, nvml.ValueSignedInt,
		nvml.ValueUnsignedLong, nvml.ValueUnsignedLongLong, nvml.ValueSignedLongLong,
		nvml.ValueUnsignedShort} {
		want := 97.0
		if vt == nvml.ValueDouble {
			want = 97.5
		}
		b := value(vt, want)
		if got, ok := sampleValue(vt, b); !ok || got != want {
			t.Errorf("type %d: %v, %v; want %v", vt, got, ok, want)
		}
	}
	if _, ok := sampleValue(nvml.ValueTypeCount, [8]byte{}); ok {
		t.Error("unknown type decoded")
	}
}
