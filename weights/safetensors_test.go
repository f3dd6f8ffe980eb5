package weights

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
	t.Parallel()
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
	t.Parallel()
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
		got, _, err := tn.float32() // exact decoding, NaN and Inf included
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
	if v, err := f.Tensors["empty"].Float32(); err != nil || len(v) != 0 {
		t.Errorf("Float32(empty) = %v, %v", v, err)
	}
	// Float32 refuses the non-finite values, naming the first one.
	for name, first := range map[string]string{"h": "element 8 [2 0] is +Inf", "b": "element 3 [3] is +Inf", "f": "element 4 [1 1] is +Inf"} {
		_, err := f.Tensors[name].Float32()
		var nf *NonFiniteError
		if !errors.As(err, &nf) || !strings.Contains(err.Error(), first) || !strings.Contains(err.Error(), path) || nf.Tensor != name {
			t.Errorf("Float32(%s): %v, want a NonFiniteError with %q", name, err, first)
		}
	}
	if v, err := f.Tensors["scalar"].Float32(); err != nil || len(v) != 1 || v[0] != 42 {
		t.Errorf("Float32(scalar) = %v, %v", v, err)
	}
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
	t.Parallel()
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
		{"33 dims", "more than 32 dimensions", hdr(`{"w":{"dtype":"F32","shape":[` + strings.Repeat("1,", 32) + `1],"data_offsets":[0,4]}}`)},
		{"shape not an array", "where an array of integers was expected", hdr(`{"w":{"dtype":"F32","shape":{},"data_offsets":[0,4]}}`)},
		{"dim a string", "where an integer was expected", hdr(`{"w":{"dtype":"F32","shape":["4"],"data_offsets":[0,16]}}`)},
		{"metadata over the cap", "__metadata__ must map strings to strings: more than 16384 entries", hdr(`{"__metadata__":{` + manyKeys(16385) + `},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`)},
		{"offsets past the end named", `tensor "late": data_offsets [1000000000000, 1000000000004] outside`, hdr(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"late":{"dtype":"F32","shape":[1],"data_offsets":[1000000000000,1000000000004]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"c":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}`)},
		{"float shape", "dimension 1.5 is not an integer", hdr(`{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,16]}}`)},
		{"missing shape", "missing shape", hdr(`{"w":{"dtype":"F32","data_offsets":[0,16]}}`)},
		{"null shape", "missing shape", hdr(`{"w":{"dtype":"F32","shape":null,"data_offsets":[0,16]}}`)},
		{"missing dtype", "missing dtype", hdr(`{"w":{"shape":[4],"data_offsets":[0,16]}}`)},
		{"missing offsets", "missing data_offsets", hdr(`{"w":{"dtype":"F32","shape":[4]}}`)},
		{"offsets beyond", "outside", hdr(`{"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}`)},
		{"offsets reversed", "not an interval", hdr(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}`)},
		{"negative offset", "not an interval", hdr(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`)},
		{"size mismatch", "needs 12", hdr(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}`)},
		{"three offsets", "2 entries", hdr(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`)},
		{"unknown field", `unknown field "x"`, hdr(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`)},
		{"bad metadata", "__metadata__", hdr(`{"__metadata__":{"a":1}}`)},
		{"entry not object", "JSON object was expected", hdr(`{"w":[1,2]}`)},
		// Rules of the reference loader (the Rust safetensors crate) and stricter.
		{"header starts with space", "must start with '{'", hdr(` {}`)},
		{"header not utf8", "UTF-8", hdr("{\"\xff\":{}}")},
		{"trailing json", "after the JSON object", hdr(`{} {}`)},
		{"duplicate tensor", `duplicate key "w"`, hdr(`{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`)},
		{"duplicate field", `duplicate key "shape"`, hdr(`{"w":{"dtype":"F32","shape":[4],"shape":[2],"data_offsets":[0,16]}}`)},
		{"duplicate metadata key", `duplicate key "a"`, hdr(`{"__metadata__":{"a":"1","a":"2"}}`)},
		{"overlap", `tensor "b": data_offsets [8, 16] overlap those of tensor "a" [0, 16]`,
			hdr(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`)},
		{"same bytes twice", `overlap those of tensor "a"`,
			hdr(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`)},
		{"hole", `tensor "b": data_offsets [12, 16] leave bytes [8, 12]`,
			hdr(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}`)},
		{"hole at start", `leave bytes [0, 4]`, hdr(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[4,16]}}`)},
		{"trailing bytes", `4 trailing bytes belong to no tensor`, hdr(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}`)},
		{"no tensors but data", `16 trailing bytes`, hdr(`{}`)},
		{"numel times size overflows", "invalid shape", hdr(`{"w":{"dtype":"I64","shape":[1152921504606846976,2],"data_offsets":[0,16]}}`)},
		{"dim beyond int64", "dimension 18446744073709551616 is not an integer that fits 64 bits", hdr(`{"w":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,16]}}`)},
		{"long name cut", `... (5000 bytes)`, hdr(`{"` + strings.Repeat("n", 5000) + `":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}`)},
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
			if len(err.Error()) > 1000 {
				t.Errorf("error of %d bytes; quoted names must be cut", len(err.Error()))
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

// Layouts the reference loader accepts must load: tensors listed in any order,
// zero-size tensors at a boundary, null metadata, padding after the JSON.
func TestOpenSafetensorsLayoutOK(t *testing.T) {
	t.Parallel()
	for name, h := range map[string]string{
		"reverse order": `{"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`,
		"empty tensors": `{"e0":{"dtype":"F16","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},` +
			`"e1":{"dtype":"F32","shape":[3,0],"data_offsets":[16,16]}}`,
		"null metadata": `{"__metadata__":null,"a":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}    ` + "\n\t",
	} {
		t.Run(name, func(t *testing.T) {
			b := make([]byte, 8, 8+len(h)+16)
			binary.LittleEndian.PutUint64(b, uint64(len(h)))
			b = append(append(b, h...), f32Bytes(1, 2, 3, 4)...)
			f, err := parseSafetensors("ok.safetensors", b)
			if err != nil {
				t.Fatal(err)
			}
			var total int
			for _, tn := range f.Tensors {
				total += len(tn.Bytes())
			}
			if total != 16 {
				t.Errorf("tensors cover %d bytes, want 16", total)
			}
		})
	}
}

// A 100 MB header is the format's limit: one byte more is refused before the
// header is read (the file here is tiny).
func TestSafetensorsHeaderLimit(t *testing.T) {
	t.Parallel()
	for _, n := range []uint64{maxHeaderLen + 1, math.MaxUint64} {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint64(b, n)
		_, err := parseSafetensors("big.safetensors", b)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d byte limit", maxHeaderLen)) {
			t.Errorf("header length %d: %v", n, err)
		}
	}
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, maxHeaderLen)
	if _, err := parseSafetensors("big.safetensors", b); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("header length at the limit, beyond the file: %v", err)
	}
}

// A header of more than maxTensors entries is refused as soon as the count
// is passed.
func TestSafetensorsTensorLimit(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("{")
	for i := range maxTensors + 1 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`, i)
	}
	b.WriteString("}")
	_, err := parseSafetensors("many.safetensors", stHeader(b.String(), nil))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("more than %d tensors", maxTensors)) || !strings.Contains(err.Error(), "many.safetensors") {
		t.Errorf("error %v", err)
	}
}

// manyKeys is n JSON members "k0":"", "k1":"", ...
func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:\"\"", fmt.Sprintf("k%d", i))
	}
	return b.String()
}

// TestFIFORefusedBeforeOpen: a named pipe as config.json or as the
// safetensors file is refused at once (opening one blocks until a writer
// comes: the run hung).
func TestFIFORefusedBeforeOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("no named pipes here: %v", err)
	}
	for name, open := range map[string]func() error{
		"LoadConfig":      func() error { _, err := LoadConfig(fifo); return err },
		"OpenSafetensors": func() error { _, err := OpenSafetensors(fifo); return err },
	} {
		done := make(chan error, 1)
		go func() { done <- open() }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("%s: error %v, want one saying the pipe is not a regular file", name, err)
			}
		case <-time.After(10 * time.Second):
			// Open a writer so the blocked open returns and the goroutine ends.
			if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
				w.Close()
			}
			<-done
			t.Errorf("%s: blocked on the named pipe", name)
		}
	}
}

// TestFileCutWhileRead: a checkpoint truncated in place while it is mapped
// (cp over it) gives an error naming the file and tensor on every read path
// (Float32, ConvertInto, the content hash), not a SIGBUS that ends the
// process.
func TestFileCutWhileRead(t *testing.T) {
	t.Parallel()
	const n = 4 << 20 // elements: several chunks of parallelChunks, many pages
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := os.WriteFile(path, buildSafetensors([]stSpec{{"w", F32, []int{n}, make([]byte, 4*n)}}, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	w := f.Tensors["w"]
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, errFileChanged) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v; want one saying %s changed while it was read", what, err, path)
		}
	}
	_, err = w.Float32()
	check("Float32", err)
	check("ConvertInto F16", w.ConvertInto(make([]byte, 2*n), F16))
	_, err = hashMapped(context.Background(), f.m.data, 1<<20) // the mapping made before the cut
	check("hash", fmt.Errorf("%s: %w", path, err))
}
