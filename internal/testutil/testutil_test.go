package testutil

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestMaxRel(t *testing.T) {
	if got := MaxRel([]float32{1, 2.5}, []float32{1, 2}); got != 0.25 {
		t.Errorf("MaxRel = %v, want 0.25", got)
	}
	if got := MaxRel([]float32{float32(math.NaN())}, []float32{1}); !math.IsInf(got, 1) {
		t.Errorf("MaxRel with a NaN = %v, want +Inf", got)
	}
}

func TestReadNPYFloat32(t *testing.T) {
	header := "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
	header += strings.Repeat(" ", 128-10-len(header)-1) + "\n"
	b := append([]byte("\x93NUMPY\x01\x00"), byte(len(header)), 0)
	b = append(b, header...)
	want := []float32{1, -2, 3.5, 0, 7, 1e-3}
	for _, v := range want {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	path := filepath.Join(t.TempDir(), "a.npy")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, shape := ReadNPYFloat32(t, path)
	if !slices.Equal(got, want) || !slices.Equal(shape, []int{2, 3}) {
		t.Errorf("got %v %v, want %v [2 3]", got, shape, want)
	}
}

func TestTinyModelDir(t *testing.T) {
	if _, err := os.Stat(filepath.Join(TinyModelDir(), "config.json")); err != nil {
		t.Fatal(err)
	}
}
