package weights

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/internal/memcap"
)

// Hostile .pt files, one test per class of attack. Each builds its files by
// hand (zip entries with chosen headers, pickle opcodes as bytes) and runs
// under memcap where the failure would be memory: before the hardening,
// these died of "fatal error: runtime: out of memory", a stack overflow or a
// panic, or loaded a file that names os.system.

// hostileCap is the address-space cap of the memory tests: far below what
// the attacks used to allocate (gigabytes), far above what a clean rejection
// needs (the largest buffer here is the 8 MiB data.pkl of the bomb test).
const hostileCap = 256 << 20

// ptRawEntry is one entry of a hand-made zip, written as is: data is the
// stored (for Deflate: compressed) bytes; the sizes and CRC are what the
// headers claim, the true ones when zero.
type ptRawEntry struct {
	name         string
	data         []byte
	method       uint16
	csize, usize uint64
	crc          uint32
}

// ptZip builds a zip of stored entries (name, data pairs).
func ptZip(t testing.TB, nameData ...any) []byte {
	t.Helper()
	var es []ptRawEntry
	for i := 0; i+1 < len(nameData); i += 2 {
		var d []byte
		switch v := nameData[i+1].(type) {
		case string:
			d = []byte(v)
		case []byte:
			d = v
		}
		es = append(es, ptRawEntry{name: nameData[i].(string), data: d})
	}
	return ptZipRaw(t, es...)
}

func ptZipRaw(t testing.TB, entries ...ptRawEntry) []byte {
	t.Helper()
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: e.method, CompressedSize64: e.csize, UncompressedSize64: e.usize, CRC32: e.crc}
		if h.CompressedSize64 == 0 {
			h.CompressedSize64 = uint64(len(e.data))
		}
		if e.method == zip.Store {
			if h.UncompressedSize64 == 0 {
				h.UncompressedSize64 = uint64(len(e.data))
			}
			if h.CRC32 == 0 {
				h.CRC32 = crc32.ChecksumIEEE(e.data)
			}
		}
		w, err := zw.CreateRaw(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return zb.Bytes()
}

// deflate compresses b.
func deflate(t testing.TB, b []byte) []byte {
	var out bytes.Buffer
	w, _ := flate.NewWriter(&out, flate.BestSpeed)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// deflateZeros is a deflate stream of n MiB of zeros, made without
// compressing them: a fresh compressor's flushed output never refers to data
// before it, so the compressed MiB can be repeated.
func deflateZeros(n int) []byte {
	var mib bytes.Buffer
	w, _ := flate.NewWriter(&mib, flate.BestSpeed)
	w.Write(make([]byte, 1<<20))
	w.Flush()
	out := bytes.Repeat(mib.Bytes(), n)
	return append(out, 0x03, 0x00) // a final, empty block
}

// openPt writes data as a .pt file and opens it; it returns the path
// (which every error must name) and the error. A successful open is closed.
func openPt(t testing.TB, data []byte) (string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hostile.pt")
	writeFile(t, path, data)
	c, err := Open(path)
	if err == nil {
		c.Close()
	}
	return path, err
}

// wantOpenError checks that opening data fails with an error that names the
// file, contains want, and quotes no more than a short message's worth.
func wantOpenError(t *testing.T, name string, data []byte, want string) {
	t.Helper()
	path, err := openPt(t, data)
	switch {
	case err == nil:
		t.Errorf("%s: opened without error", name)
	case !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want):
		t.Errorf("%s: %v\nwant the path and %q", name, err, want)
	case len(err.Error()) > 1000:
		t.Errorf("%s: %d-byte error message", name, len(err.Error()))
	}
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// zipEntry returns the contents of one entry of a zip.
func zipEntry(t testing.TB, z []byte, name string) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := zr.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Class 1: length fields beyond the bytes that follow. gopickle allocated
// each length before reading it.
func TestTorchHostileLengths(t *testing.T) {
	t.Parallel()
	memcap.Run(t, hostileCap, func(t *testing.T) {
		for _, tc := range []struct{ name, pickle string }{
			{"FRAME", "\x80\x04\x95" + le8(1<<62) + "N."},
			{"BINBYTES8", "\x80\x04\x8e" + le8(1<<62) + "."},
			{"BINUNICODE8", "\x80\x04\x8d" + le8(1<<40) + "."},
			{"BYTEARRAY8", "\x80\x05\x96" + le8(1<<40) + "."},
			{"BINBYTES", "\x80\x03B" + le4(0xffffffff) + "."},
			{"BINUNICODE", "\x80\x02X" + le4(0xffffffff) + "."},
			{"BINSTRING", "\x80\x02T" + le4(0x7fffffff) + "."},
			{"SHORT_BINBYTES", "\x80\x03C\xff."},
			{"SHORT_BINUNICODE", "\x80\x04\x8c\xff."},
			{"LONG1", "\x80\x02\x8a\xff."},
			{"LONG4", "\x80\x02\x8b" + le4(0x7fffffff) + "."},
		} {
			z := ptZip(t, "archive/data.pkl", tc.pickle, "archive/version", "3\n")
			wantOpenError(t, tc.name, z, "data.pkl: byte 2 ("+tc.name+")")
		}
		// A 4-byte length right after a frame that ends early.
		z := ptZip(t, "archive/data.pkl", "\x80\x04\x95\x02"+le8(0)[1:]+"X\xff\xff\xff\x7f"+strings.Repeat("a", 100)+".")
		wantOpenError(t, "frame straddle", z, "past the end of its frame")
	})
}

// Class 2: data.pkl bombs. The zip header's uncompressed size is the
// attacker's; data.pkl is read under ptMaxPickleBytes whatever it says.
func TestTorchHostilePickleBomb(t *testing.T) {
	t.Parallel()
	memcap.Run(t, hostileCap, func(t *testing.T) {
		bomb := deflateZeros(1024) // 1 GiB of zeros in ~1 MB
		// The header says 1 KB; the stream goes on for 1 GiB.
		z := ptZipRaw(t, ptRawEntry{name: "archive/data.pkl", data: bomb, method: zip.Deflate, usize: 1024})
		wantOpenError(t, "small claim", z, "does not match its stated size")
		// The header says 8 MiB, under the cap: that much is read, no more.
		z = ptZipRaw(t, ptRawEntry{name: "archive/data.pkl", data: bomb, method: zip.Deflate, usize: 8 << 20})
		wantOpenError(t, "claim under the cap", z, "does not match its stated size")
		// The header tells the truth: 1 GiB.
		z = ptZipRaw(t, ptRawEntry{name: "archive/data.pkl", data: bomb, method: zip.Deflate, usize: 1 << 30})
		wantOpenError(t, "true claim", z, "more than the 67108864")
		// A claim deflate cannot produce from that few bytes.
		z = ptZipRaw(t, ptRawEntry{name: "archive/data.pkl", data: deflate(t, []byte("}.")), method: zip.Deflate, usize: 60 << 20})
		wantOpenError(t, "impossible ratio", z, "more than deflate can produce")
		// A stored data.pkl whose sizes disagree.
		z = ptZipRaw(t, ptRawEntry{name: "archive/data.pkl", data: []byte("}."), csize: 2, usize: 60 << 20})
		wantOpenError(t, "stored size mismatch", z, "corrupt zip")
		// A valid 30 KB pickle that gopickle would turn into 800 MB of
		// attribute maps (10000 Namespaces sharing one 1000-entry state).
		p := []byte(attributeBomb(10000))
		z = ptZipRaw(t, ptRawEntry{name: "archive/data.pkl", data: deflate(t, p), method: zip.Deflate, usize: uint64(len(p))})
		wantOpenError(t, "object bomb", z, "decoding would allocate more than 256 MiB")
	})
}

// Class 3: storages and views larger than the bytes behind them.
func TestTorchHostileStorages(t *testing.T) {
	t.Parallel()
	memcap.Run(t, hostileCap, func(t *testing.T) {
		one := func(spec ptTensorSpec) []byte {
			specs := append(tinyFairSpecs(), spec)
			var zb bytes.Buffer
			buildFairESMPtTo(t, &zb, specs, namespaceCfg(tinyL, tinyD, tinyH, true))
			return zb.Bytes()
		}
		reg := func(mod func(*ptTensorSpec)) []byte {
			s := ptTensorSpec{name: "contact_head.regression.bias", class: "FloatStorage", key: "r", numel: 1, shape: []int{1}, storage: f32Bytes(1)}
			mod(&s)
			return one(s)
		}
		wantOpenError(t, "numel beyond entry", reg(func(s *ptTensorSpec) { s.numel = 1 << 40; s.shape = []int{1 << 40} }), "need more than its 4 bytes")
		wantOpenError(t, "numel overflowing bytes", reg(func(s *ptTensorSpec) { s.numel = 1<<62 + 1; s.shape = []int{1} }), "need more than its 4 bytes")
		wantOpenError(t, "offset beyond", reg(func(s *ptTensorSpec) { s.offset = 1 }), "beyond its storage")
		wantOpenError(t, "huge offset", reg(func(s *ptTensorSpec) { s.offset = 1<<63 - 1 }), "beyond its storage")
		wantOpenError(t, "shape product overflow", reg(func(s *ptTensorSpec) { s.shape = []int{1 << 40, 1 << 40}; s.stride = []int{0, 0} }), "too many elements")
		wantOpenError(t, "stride overflow", reg(func(s *ptTensorSpec) { s.numel = 1; s.shape = []int{2, 2}; s.stride = []int{1 << 62, 1 << 62} }), "beyond its storage")
		wantOpenError(t, "too many dimensions", reg(func(s *ptTensorSpec) { s.shape = make([]int, 40); s.stride = make([]int, 40) }), "40 dimensions")
		wantOpenError(t, "negative numel", reg(func(s *ptTensorSpec) { s.numel = -5 }), "negative size")
		wantOpenError(t, "odd storage key", reg(func(s *ptTensorSpec) { s.key = "../data.pkl" }), "not a simple name")
		// The same storage key with two sizes.
		specs := tinyFairSpecs()
		specs = append(specs,
			ptTensorSpec{name: "contact_head.regression.weight", class: "FloatStorage", key: "r", numel: 4, shape: []int{1, 4}, storage: f32Bytes(1, 2, 3, 4)},
			ptTensorSpec{name: "contact_head.regression.bias", class: "FloatStorage", key: "r", numel: 400, shape: []int{1}, storage: f32Bytes(1, 2, 3, 4)})
		var zb bytes.Buffer
		buildFairESMPtTo(t, &zb, specs, nil)
		wantOpenError(t, "one key, two sizes", zb.Bytes(), `storage "r" is 400 elements`)

		// Storage entries whose zip headers lie or compress.
		pickle := zipEntry(t, reg(func(*ptTensorSpec) {}), "archive/data.pkl")
		base := []ptRawEntry{{name: "archive/data.pkl", data: pickle}}
		for _, s := range tinyFairSpecs() {
			if s.name != "encoder.lm_head.weight" {
				base = append(base, ptRawEntry{name: "archive/data/" + s.key, data: s.storage})
			}
		}
		with := func(e ptRawEntry) []byte { return ptZipRaw(t, append(append([]ptRawEntry{}, base...), e)...) }
		wantOpenError(t, "stored size beyond file", with(ptRawEntry{name: "archive/data/r", data: f32Bytes(1), csize: 1 << 40, usize: 1 << 40}), "beyond the end of the file")
		wantOpenError(t, "stored sizes differ", with(ptRawEntry{name: "archive/data/r", data: f32Bytes(1), usize: 1 << 40}), "corrupt zip")
		wantOpenError(t, "compressed storage", with(ptRawEntry{name: "archive/data/r", data: deflateZeros(1024), method: zip.Deflate, usize: 4}), "compressed")

		// Strided views of one storage, each gathered into a new buffer: in all
		// they may not copy more than the file holds.
		big := make([]byte, 64<<10)
		specs = tinyFairSpecs()
		for i := range 200 {
			specs = append(specs, ptTensorSpec{name: fmt.Sprintf("layers.%d.fc1.weight", 100+i), class: "FloatStorage", key: "big",
				numel: 16384, shape: []int{128, 128}, stride: []int{1, 128}, storage: big})
		}
		zb.Reset()
		buildFairESMPtTo(t, &zb, specs, nil)
		wantOpenError(t, "copy amplification", zb.Bytes(), "strided views would copy more bytes than the file holds")
	})
}

// Class 4: nesting. gopickle itself is iterative, but every MARK costs a
// stack segment, and recursive walks over the decoded values overflowed.
func TestTorchHostileNesting(t *testing.T) {
	t.Parallel()
	memcap.Run(t, hostileCap, func(t *testing.T) {
		const n = 1 << 20
		for _, tc := range []struct{ name, pickle, want string }{
			{"MARKs", "\x80\x02" + strings.Repeat("(", n) + ".", "MARKs nested more than 64"},
			{"lists", "\x80\x02" + strings.Repeat("]", 4096) + strings.Repeat("a", 4095) + ".", "nested more than 64"},
			{"tuples", "\x80\x02N" + strings.Repeat("\x85", n) + ".", "nested more than 64"},
			// A Namespace state of nested (state, slots) pairs: PySetState recursed.
			{"Namespace state pairs", "\x80\x02cargparse\nNamespace\n)\x81}" + strings.Repeat("N\x86", n) + "b.", "nested more than 64"},
			{"cycle", "\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.", "dict put inside itself"},
		} {
			z := ptZip(t, "archive/data.pkl", tc.pickle)
			wantOpenError(t, tc.name, z, tc.want)
		}
	})
}

// Class 5: globals outside the allow-list are refused, naming module.name.
func TestTorchHostileGlobals(t *testing.T) {
	t.Parallel()
	reduce := func(module, name string) string {
		return "\x80\x02}(X\x05\x00\x00\x00modelc" + module + "\n" + name + "\nX\x02\x00\x00\x00id\x85Ru."
	}
	for _, tc := range []struct{ name, pickle, want string }{
		{"os.system", reduce("os", "system"), "os.system"},
		{"posix.system", reduce("posix", "system"), "posix.system"},
		{"builtins.eval", reduce("builtins", "eval"), "builtins.eval"},
		{"builtins.exec", reduce("builtins", "exec"), "builtins.exec"},
		{"subprocess.check_output", reduce("subprocess", "check_output"), "subprocess.check_output"},
		{"torch.load", reduce("torch", "load"), "torch.load"},
		{"STACK_GLOBAL", "\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x8c\x02id\x85R.", "os.system"},
		{"reconstructor", "ccopy_reg\n_reconstructor\n(cos\nsystem\nc__builtin__\nobject\nNtR.", "copy_reg._reconstructor"},
	} {
		z := ptZip(t, "archive/data.pkl", tc.pickle)
		wantOpenError(t, tc.name, z, "refusing the Python global "+tc.want)
	}
	// What a fair-esm checkpoint uses loads: the state dict as a
	// collections.OrderedDict of _rebuild_parameter(_rebuild_tensor_v2(...))
	// and the cfg as an argparse.Namespace.
	path := filepath.Join(t.TempDir(), "ok.pt")
	specs := tinyFairSpecs()
	buildFairESMPt(t, path, specs, namespaceCfg(tinyL, tinyD, tinyH, true))
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	p := zipEntry(t, readFileT(t, path), "archive/data.pkl")
	// Wrap every tensor in torch._utils._rebuild_parameter(tensor, False, OrderedDict()).
	wrapped := bytes.ReplaceAll(p, []byte("ctorch._utils\n_rebuild_tensor_v2\n"), []byte("ctorch._utils\n_rebuild_parameter\nctorch._utils\n_rebuild_tensor_v2\n"))
	wrapped = bytes.ReplaceAll(wrapped, []byte("tR"), []byte("tR\x89ccollections\nOrderedDict\n)R\x87R"))
	if _, err := ptScanPickle(wrapped); err != nil {
		t.Fatalf("parameters: %v", err)
	}
	v, err := ptDecode(wrapped)
	if err != nil {
		t.Fatalf("parameters: %v", err)
	}
	sd, _ := pyGet(v, "model")
	if _, vals, _ := pyItems(sd); len(vals) != len(specs) {
		t.Errorf("parameters: %d state dict entries, want %d", len(vals), len(specs))
	} else if _, ok := vals[0].(*ptTensor); !ok {
		t.Errorf("parameters: entry is a %T", vals[0])
	}
}

func readFileT(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Class 6: files that are not torch.save zip archives say what they are.
func TestTorchNotAZip(t *testing.T) {
	t.Parallel()
	legacy2 := "\x80\x02\x8a\x0a" + string(ptLegacyMagic) + ".\x80\x02M\xe9\x03."
	legacy4 := "\x80\x04\x95" + le8(13) + "\x8a\x0a" + string(ptLegacyMagic) + "."
	for _, tc := range []struct{ name, data, want string }{
		{"legacy protocol 1", "L119547037146038801333356L\n.M\xe9\x03.", "legacy torch.save format"},
		{"legacy protocol 2", legacy2, "legacy torch.save format"},
		{"legacy protocol 4", legacy4, "legacy torch.save format"},
		{"empty", "", "the file is empty"},
		{"HTML", "\n<!DOCTYPE html>\n<html><body>Access denied</body></html>\n", `HTML or XML page ("<!DOCTYPE html>")`},
		{"Git LFS pointer", "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "Git LFS pointer"},
		{"JSON", `{"error": "not found"}`, "JSON"},
		{"bare pickle", "\x80\x02}.", "bare pickle"},
		{"gzip", "\x1f\x8b\x08\x00", "gzip"},
		{"binary", "\x00\x01\x02\x03\xff\xfe\xfd", "starts with bytes 00 01 02"},
		{"truncated zip", string(ptZip(t, "archive/data.pkl", "}.")[:30]), "not a torch.save zip archive"},
	} {
		wantOpenError(t, tc.name, []byte(tc.data), tc.want)
	}
}

// The zip directory: archive/zip preallocates the entry count the end record
// claims and builds an entry per directory record; both are bounded.
func TestTorchHostileZipDirectory(t *testing.T) {
	t.Parallel()
	memcap.Run(t, hostileCap, func(t *testing.T) {
		good := ptZip(t, "archive/data.pkl", "}.")
		// A zip64 end record claiming 2^40 entries.
		z := append([]byte{}, good[:len(good)-22]...)
		z64 := len(z)
		z = append(z, "PK\x06\x06"...)
		z = binary.LittleEndian.AppendUint64(z, 44)
		z = append(z, 45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0)
		z = binary.LittleEndian.AppendUint64(z, 1<<40)
		z = binary.LittleEndian.AppendUint64(z, 1<<40)
		z = binary.LittleEndian.AppendUint64(z, 100)
		z = binary.LittleEndian.AppendUint64(z, 0)
		z = append(z, "PK\x06\x07"...)
		z = append(z, 0, 0, 0, 0)
		z = binary.LittleEndian.AppendUint64(z, uint64(z64))
		z = append(z, 1, 0, 0, 0)
		z = append(z, "PK\x05\x06\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00"...)
		wantOpenError(t, "zip64 entry count", z, "claims 1099511627776 entries")

		// An end record claiming 65520 entries (what a 16-bit count can say).
		z = append([]byte{}, good...)
		binary.LittleEndian.PutUint16(z[len(z)-22+8:], 0xfff0)
		binary.LittleEndian.PutUint16(z[len(z)-22+10:], 0xfff0)
		wantOpenError(t, "entry count", z, "claims 65520 entries, more than the 16384")

		// A directory of long names, beyond what archive/zip may read.
		var zb bytes.Buffer
		zw := zip.NewWriter(&zb)
		long := strings.Repeat("x", 60000)
		for i := range 40 {
			zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("a/%d%s", i, long), Method: zip.Store})
		}
		zw.Close()
		wantOpenError(t, "large directory", zb.Bytes(), "zip directory is larger than 2 MiB")

		wantOpenError(t, "duplicate entries", ptZip(t, "archive/data.pkl", "}.", "archive/data.pkl", "N."), "appears twice")
		wantOpenError(t, "big-endian", ptZip(t, "archive/data.pkl", "}.", "archive/byteorder", "big"), `byteorder "big"`)
		wantOpenError(t, "long byteorder", ptZip(t, "archive/data.pkl", "}.", "archive/byteorder", strings.Repeat("little", 100)), "more than the 64")
	})
}

// The real tiny checkpoint written by torch.save (tests/gen_fixtures.py)
// loads, with its config read from its argparse.Namespace.
func TestTorchRealCheckpoint(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tiny_fairesm.pt")
	writeFile(t, path, readTestdata(t, "torch_tiny_fairesm.pt"))
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Config.NumHiddenLayers != 3 || c.Config.HiddenSize != 64 || c.Config.NumAttentionHeads != 4 || !c.Config.TokenDropout {
		t.Errorf("config %+v", c.Config)
	}
	w, err := c.Tensor("encoder.layer.2.intermediate.dense.weight", 256, 64)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := w.Float32(); err != nil || len(v) != 256*64 {
		t.Errorf("fc1 weight: %d values, %v", len(v), err)
	}
}
