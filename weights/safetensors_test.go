package weights

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// refF16 decodes binary16 bits in float64 arithmetic (an independent reference).
func refF16(h uint16) float32 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	switch {
	case exp == 0x1f && mant == 0:
		return float32(math.Inf(int(sign)))
	case exp == 0x1f:
		return float32(math.NaN())
	case exp == 0:
		return float32(sign * math.Ldexp(mant, -24))
	}
	return float32(sign * math.Ldexp(1024+mant, exp-25))
}

func TestF16AllValuesExact(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		got := math.Float32frombits(f16ToF32Bits(uint16(h)))
		want := refF16(uint16(h))
		if math.IsNaN(float64(want)) {
			if !math.IsNaN(float64(got)) {
				t.Fatalf("f16 %#04x: got %v, want NaN", h, got)
			}
			continue
		}
		if math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("f16 %#04x: got %v (%#08x), want %v", h, got, math.Float32bits(got), want)
		}
	}
}

func TestOpenSafetensorsDTypes(t *testing.T) {
	f16 := []uint16{0x0000, 0x8000, 0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x7e00, 0x3555}
	f16Want := []float32{0, float32(math.Copysign(0, -1)), 1, -2, 65504, float32(math.Ldexp(1, -24)), float32(math.Ldexp(1023, -24)),
		float32(math.Ldexp(1, -14)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 0.333251953125}
	bf16 := []uint16{0x3f80, 0xbf80, 0x0001, 0x7f80, 0xff80, 0x7fc0, 0x4049, 0x0000}
	bf16Want := []float32{1, -1, float32(math.Ldexp(1, -133)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 3.140625, 0}
	f32 := []float32{1.5, -0, float32(math.Ldexp(1, -149)), math.MaxFloat32, float32(math.Inf(1)), float32(math.NaN())}
	i64 := make([]byte, 16)
	binary.LittleEndian.PutUint64(i64, uint64(7))
	binary.LittleEndian.PutUint64(i64[8:], uint64(1<<63|5)) // negative, out of int32 range
	i32 := make([]byte, 8)
	binary.LittleEndian.PutUint32(i32, 3)
	binary.LittleEndian.PutUint32(i32[4:], uint32(0xffffffff))
	path := filepath.Join(t.TempDir(), "x.safetensors")
	writeFile(t, path, buildSafetensors([]stSpec{
		{"h", F16, []int{3, 4}, u16Bytes(f16...)},
		{"b", BF16, []int{8}, u16Bytes(bf16...)},
		{"f", F32, []int{2, 3}, f32Bytes(f32...)},
		{"scalar", F32, []int{}, f32Bytes(42)},
		{"empty", F32, []int{0, 5}, nil},
		{"i32", I32, []int{2}, i32},
		{"i64", I64, []int{2}, i64},
	}, map[string]string{"version": "3", "generator": "test"}))
	f, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Metadata["version"] != "3" {
		t.Errorf("metadata = %v", f.Metadata)
	}
	check := func(name string, want []float32, shape []int) {
		t.Helper()
		tn := f.Tensors[name]
		if tn == nil {
			t.Fatalf("tensor %q missing", name)
		}
		if !shapeEqual(tn.Shape, shape) {
			t.Errorf("%s shape %v, want %v", name, tn.Shape, shape)
		}
		got, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
		}
		for i := range want {
			if math.IsNaN(float64(want[i])) {
				if !math.IsNaN(float64(got[i])) {
					t.Errorf("%s[%d] = %v, want NaN", name, i, got[i])
				}
			} else if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Errorf("%s[%d] = %v, want %v", name, i, got[i], want[i])
			}
		}
	}
	check("h", f16Want, []int{3, 4})
	check("b", bf16Want, []int{8})
	check("f", f32, []int{2, 3})
	check("scalar", []float32{42}, []int{})
	check("empty", []float32{}, []int{0, 5})
	if n := f.Tensors["scalar"].NumElements(); n != 1 {
		t.Errorf("scalar NumElements = %d", n)
	}
	ids, err := f.Tensors["i32"].Int32()
	if err != nil || ids[0] != 3 || ids[1] != -1 {
		t.Errorf("i32 = %v, %v", ids, err)
	}
	if _, err := f.Tensors["i64"].Int32(); err == nil || !strings.Contains(err.Error(), "int32") {
		t.Errorf("i64 out of range: err = %v", err)
	}
	if _, err := f.Tensors["i32"].Float32(); err == nil {
		t.Error("Float32 of I32 should fail")
	}
	if _, err := f.Tensors["f"].Int32(); err == nil {
		t.Error("Int32 of F32 should fail")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenSafetensorsBad(t *testing.T) {
	good := buildSafetensors([]stSpec{{"w", F32, []int{2, 2}, f32Bytes(1, 2, 3, 4)}}, nil)
	hdr := func(h string) []byte {
		b := make([]byte, 8, 8+len(h)+16)
		binary.LittleEndian.PutUint64(b, uint64(len(h)))
		b = append(b, h...)
		return append(b, make([]byte, 16)...)
	}
	withLen := func(n uint64) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint64(b, n)
		return b
	}
	cases := []struct {
		name, want string
		data       []byte
	}{
		{"empty", "at least 8", nil},
		{"short", "at least 8", []byte{1, 2, 3}},
		{"truncated data", "outside", good[:len(good)-1]},
		{"truncated header", "truncated", good[:20]},
		{"huge header length", "limit", withLen(1 << 62)},
		{"header 100MiB", "limit", withLen(100 << 20)},
		{"header beyond file", "truncated", withLen(uint64(len(good)))},
		{"not json", "JSON object", hdr("hello")},
		{"bad json", "header", hdr(`{"w": `)},
		{"array", "JSON object", hdr(`[1,2]`)},
		{"bad dtype", "unsupported dtype", hdr(`{"w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}`)},
		{"negative shape", "invalid shape", hdr(`{"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}}`)},
		{"overflow shape", "invalid shape", hdr(`{"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,16]}}`)},
		{"float shape", "bad header entry", hdr(`{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,16]}}`)},
		{"missing shape", "missing shape", hdr(`{"w":{"dtype":"F32","data_offsets":[0,16]}}`)},
		{"offsets beyond", "outside", hdr(`{"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}`)},
		{"offsets reversed", "outside", hdr(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}`)},
		{"negative offset", "outside", hdr(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`)},
		{"size mismatch", "needs 12", hdr(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}`)},
		{"three offsets", "2 entries", hdr(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`)},
		{"unknown field", "bad header entry", hdr(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`)},
		{"bad metadata", "__metadata__", hdr(`{"__metadata__":{"a":1}}`)},
	}
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, "bad"+string(rune('a'+i))+".safetensors")
			writeFile(t, path, c.data)
			f, err := OpenSafetensors(path)
			if err == nil {
				f.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q should name the file and contain %q", err, c.want)
			}
		})
	}
	if _, err := OpenSafetensors(filepath.Join(dir, "nope.safetensors")); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("missing file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func FuzzOpenSafetensors(f *testing.F) {
	f.Add(buildSafetensors([]stSpec{
		{"w", F32, []int{2, 2}, f32Bytes(1, 2, 3, 4)},
		{"h", F16, []int{3}, u16Bytes(1, 2, 3)},
		{"b", BF16, []int{1}, u16Bytes(0x3f80)},
	}, map[string]string{"version": "1"}))
	f.Add(buildSafetensors(nil, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := parseSafetensors("fuzz.safetensors", data)
		if err != nil {
			return
		}
		for _, tn := range sf.Tensors {
			if len(tn.data) != tn.NumElements()*tn.DType.Size() {
				t.Fatalf("tensor %q: %d bytes for shape %v", tn.Name, len(tn.data), tn.Shape)
			}
			switch tn.DType {
			case I32, I64:
				tn.Int32()
			default:
				if _, err := tn.Float32(); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
