// Package testutil holds helpers shared by the tests of several packages:
// the committed tiny model, relative error, NPY reading and the digests the
// HF hub puts in its headers. Only _test.go files import it.
package testutil

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
)

// RepoRoot is the module's root directory: found from this file's path when
// that path exists (a test run where it was built), else by walking up from
// the working directory to a folder holding go.mod or tests/testdata (a test
// binary built elsewhere and run from a copy of the repository, as the GPU
// suite does), so it does not depend on the test's working directory.
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if ok {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "tests", "testdata")); err == nil {
			return root
		}
	}
	if dir, err := os.Getwd(); err == nil {
		for d := dir; ; d = filepath.Dir(d) {
			for _, marker := range []string{"go.mod", filepath.Join("tests", "testdata")} {
				if _, err := os.Stat(filepath.Join(d, marker)); err == nil {
					return d
				}
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	panic("testutil: cannot find the repository root (no tests/testdata above the working directory)")
}

// TinyModelDir is the committed tiny HF checkpoint (3 layers, D=64, 4 heads).
func TinyModelDir() string {
	return filepath.Join(RepoRoot(), "tests", "testdata", "models", "tiny")
}

// LoadTiny loads the tiny model on a CPU backend with opts; the model and
// the backend are closed at the end of the test.
func LoadTiny(t testing.TB, opts cpu.Options) *esm.Model {
	t.Helper()
	be := cpu.New(opts)
	m, err := esm.LoadModel(TinyModelDir(), be)
	if err != nil {
		be.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); be.Close() })
	return m
}

// MaxRel is max|got-want| / max|want| (the denominator floored at 1e-30);
// +Inf when got holds a NaN. got must be at least as long as want.
func MaxRel(got, want []float32) float64 {
	var d, r float64
	for i := range want {
		g := float64(got[i])
		if math.IsNaN(g) {
			return math.Inf(1)
		}
		d = math.Max(d, math.Abs(g-float64(want[i])))
		r = math.Max(r, math.Abs(float64(want[i])))
	}
	return d / math.Max(r, 1e-30)
}

var npyDictRe = regexp.MustCompile(`^\{'descr': '([<>|][a-z][0-9])', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \} *\n$`)

// ReadNPY parses an NPY v1.0 file as esm2go writes it (header padded to a
// multiple of 64 bytes, C order) and fails the test on anything else.
func ReadNPY(t testing.TB, path string) (descr string, shape []int, data []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 10 || string(b[:8]) != "\x93NUMPY\x01\x00" {
		t.Fatalf("%s: bad magic", path)
	}
	hl := int(binary.LittleEndian.Uint16(b[8:]))
	if (10+hl)%64 != 0 {
		t.Errorf("%s: header length %d not aligned to 64", path, 10+hl)
	}
	if 10+hl > len(b) {
		t.Fatalf("%s: header length %d past the end of the file (%d bytes)", path, hl, len(b))
	}
	m := npyDictRe.FindStringSubmatch(string(b[10 : 10+hl]))
	if m == nil {
		t.Fatalf("%s: bad header %q", path, b[10:10+hl])
	}
	for _, f := range strings.Split(m[2], ",") {
		if f = strings.TrimSpace(f); f != "" {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s: shape %q: %v", path, m[2], err)
			}
			shape = append(shape, n)
		}
	}
	return m[1], shape, b[10+hl:]
}

// ReadNPYFloat32 reads a little-endian float32 NPY file: its values and
// shape; the data length must match the shape.
func ReadNPYFloat32(t testing.TB, path string) ([]float32, []int) {
	t.Helper()
	descr, shape, data := ReadNPY(t, path)
	if descr != "<f4" {
		t.Fatalf("%s: descr %q, want <f4", path, descr)
	}
	n := 1
	for _, d := range shape {
		n *= d
	}
	if len(data) != 4*n {
		t.Fatalf("%s: %d data bytes for shape %v, want %d", path, len(data), shape, 4*n)
	}
	return Float32sLE(data), shape
}

// Float32sLE decodes little-endian float32s.
func Float32sLE(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// GitBlobSHA1 is the git blob id of b: the ETag the HF hub gives a small
// (non-LFS) file.
func GitBlobSHA1(b []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// SHA256Hex is the hex SHA-256 of b: the X-Linked-Etag of an LFS file.
func SHA256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
