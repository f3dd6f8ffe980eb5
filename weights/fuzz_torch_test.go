package weights

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// FuzzTorch opens arbitrary bytes as a fair-esm .pt file through Open. The
// invariants: no panic and no runaway allocation (a crash of the fuzz
// worker); an error names the file and stays short; a checkpoint that opens
// has a valid config and tensors whose bytes match their shapes.
func FuzzTorch(f *testing.F) {
	f.Add(readTestdata(f, "torch_tiny_fairesm.pt")) // written by torch.save
	var zb bytes.Buffer
	buildFairESMPtTo(f, &zb, tinyFairSpecs(), namespaceCfg(tinyL, tinyD, tinyH, true))
	tiny := zb.Bytes()
	f.Add(tiny)
	f.Add([]byte{})
	f.Add([]byte("<!DOCTYPE html><html></html>"))
	f.Add([]byte("\x80\x02\x8a\x0a" + string(ptLegacyMagic) + "."))
	for _, p := range []string{
		"\x80\x04\x95" + le8(1<<62) + "N.",
		"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.",
		"\x80\x02" + strings.Repeat("(", 100) + ".",
		attributeBomb(20),
		realTorchPickles["proto4"],
	} {
		f.Add(ptZip(f, "archive/data.pkl", p, "archive/data/0", make([]byte, 8)))
	}
	f.Add(ptZip(f, "archive/data.pkl", tinyFairESMPickle(f), "archive/byteorder", "little"))
	path := filepath.Join(f.TempDir(), "f.pt") // reused: calls run one at a time
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Open(path)
		if err != nil {
			if msg := err.Error(); !strings.Contains(msg, path) || len(msg) > 2000 {
				t.Errorf("error without the path, or %d bytes long: %.2000s", len(msg), msg)
			}
			return
		}
		defer c.Close()
		if err := c.Config.Validate(); err != nil {
			t.Errorf("opened with an invalid config: %v", err)
		}
		for name, tn := range c.Tensors {
			n := 1
			for _, d := range tn.Shape {
				if d < 0 {
					t.Fatalf("%s: shape %v", name, tn.Shape)
				}
				n *= d
			}
			if len(tn.Bytes()) != n*tn.DType.Size() {
				t.Errorf("%s: %d bytes for shape %v of %s", name, len(tn.Bytes()), tn.Shape, tn.DType)
			}
		}
	})
}

// FuzzTorchPickle feeds arbitrary bytes to the data.pkl scan and, when the
// scan accepts them, to gopickle without the recover that load keeps: any
// panic there is a gap in the scan. Decoding must also stay within the
// allocation the scan estimated (TotalAlloc, garbage included, is at most
// 2.4 times the estimate in TestPickleCostEstimate's cases; 4 times plus
// 1 MiB leaves room for the fuzzer's own allocations).
func FuzzTorchPickle(f *testing.F) {
	f.Add(zipEntry(f, readTestdata(f, "torch_tiny_fairesm.pt"), "tiny_fairesm/data.pkl"))
	f.Add(tinyFairESMPickle(f))
	for _, p := range realTorchPickles {
		f.Add([]byte(p))
	}
	for _, tc := range scanCases {
		if len(tc.pickle) < 4096 {
			f.Add([]byte(tc.pickle))
		}
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		est, err := ptScanPickle(p)
		if err != nil {
			if len(err.Error()) > 1000 {
				t.Errorf("%d-byte error: %.1000s", len(err.Error()), err)
			}
			return
		}
		if est > ptMaxDecodeBytes {
			t.Fatalf("accepted with an estimate of %d bytes", est)
		}
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		_, err = ptDecode(p)
		runtime.ReadMemStats(&m1)
		if err != nil && len(err.Error()) > 1000 {
			t.Errorf("%d-byte error: %.1000s", len(err.Error()), err)
		}
		if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > uint64(4*est+1<<20) {
			t.Errorf("decoding allocated %d bytes, the scan estimated %d", alloc, est)
		}
	})
}
