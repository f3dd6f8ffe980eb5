//go:build cgo

package monitor

import (
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// fakeDevice is an NVML device answering GetSamples.
type fakeDevice struct {
	nvml.Device // nil: other calls panic
	vt          nvml.ValueType
	samples     []nvml.Sample
	ret         nvml.Return
	typ         nvml.SamplingType
	since       uint64
}

func (d *fakeDevice) GetSamples(typ nvml.SamplingType, since uint64) (nvml.ValueType, []nvml.Sample, nvml.Return) {
	d.typ, d.since = typ, since
	return d.vt, d.samples, d.ret
}

func value(vt nvml.ValueType, v float64) [8]byte {
	var b [8]byte
	e := binary.NativeEndian
	switch vt {
	case nvml.VALUE_TYPE_DOUBLE:
		e.PutUint64(b[:], math.Float64bits(v))
	case nvml.VALUE_TYPE_UNSIGNED_INT, nvml.VALUE_TYPE_SIGNED_INT:
		e.PutUint32(b[:], uint32(int32(v)))
	case nvml.VALUE_TYPE_UNSIGNED_SHORT:
		e.PutUint16(b[:], uint16(v))
	default:
		e.PutUint64(b[:], uint64(int64(v)))
	}
	return b
}

func TestNVMLReaderUtilSamples(t *testing.T) {
	vt := nvml.VALUE_TYPE_UNSIGNED_INT
	dev := &fakeDevice{vt: vt, ret: nvml.SUCCESS, samples: []nvml.Sample{
		{TimeStamp: 30, SampleValue: value(vt, 70)},
		{TimeStamp: 10, SampleValue: value(vt, 50)}, // not after since
		{TimeStamp: 20, SampleValue: value(vt, 60)},
	}}
	r := &nvmlReader{devs: []nvml.Device{dev}}
	got, err := r.UtilSamples(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := []utilSample{{20, 60}, {30, 70}}; !slices.Equal(got, want) {
		t.Errorf("samples %v, want %v", got, want)
	}
	if dev.typ != nvml.GPU_UTILIZATION_SAMPLES || dev.since != 10 {
		t.Errorf("GetSamples(%v, %v)", dev.typ, dev.since)
	}
	dev.ret = nvml.ERROR_NOT_FOUND // no sample since
	if got, err := r.UtilSamples(0, 30); got != nil || err != nil {
		t.Errorf("no sample: %v, %v", got, err)
	}
	dev.ret = nvml.ERROR_NOT_SUPPORTED
	if _, err := r.UtilSamples(0, 30); err == nil || !strings.Contains(err.Error(), "device 0 utilization samples") {
		t.Errorf("unsupported: %v", err)
	}
	dev.ret, dev.vt = nvml.SUCCESS, nvml.VALUE_TYPE_COUNT
	if _, err := r.UtilSamples(0, 0); err == nil {
		t.Error("no error for an unknown value type")
	}
}

func TestSampleValue(t *testing.T) {
	for _, vt := range []nvml.ValueType{nvml.VALUE_TYPE_DOUBLE, nvml.VALUE_TYPE_UNSIGNED_INT, nvml.VALUE_TYPE_SIGNED_INT,
		nvml.VALUE_TYPE_UNSIGNED_LONG, nvml.VALUE_TYPE_UNSIGNED_LONG_LONG, nvml.VALUE_TYPE_SIGNED_LONG_LONG,
		nvml.VALUE_TYPE_UNSIGNED_SHORT} {
		want := 97.0
		if vt == nvml.VALUE_TYPE_DOUBLE {
			want = 97.5
		}
		b := value(vt, want)
		if got, ok := sampleValue(vt, b); !ok || got != want {
			t.Errorf("type %d: %v, %v; want %v", vt, got, ok, want)
		}
	}
	if _, ok := sampleValue(nvml.VALUE_TYPE_COUNT, [8]byte{}); ok {
		t.Error("unknown type decoded")
	}
}
