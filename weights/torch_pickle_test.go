package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// realTorchPickles are data.pkl files written by torch.save(torch.tensor([1.2,
// -3.4, 5.6, -7.8], dtype=torch.float16), pickle_protocol=N) for N = 1..5
// (gopickle's pytorch/testdata/tensor_float16_protoN_zip.pt): every protocol's
// opcodes as torch really writes them (INT "00", BINPUT, FRAME, MEMOIZE,
// STACK_GLOBAL, ...).
var realTorchPickles = map[string]string{
	"proto1": "ctorch._utils\n_rebuild_tensor_v2\nq\x00((X\x07\x00\x00\x00storageq\x01ctorch\nHalfStorage\nq\x02X\x01\x00\x00\x000q\x03X\x03\x00\x00\x00cpuq\x04K\x04tq\x05QK\x00(K\x04tq\x06(K\x01tq\x07I00\nccollections\nOrderedDict\nq\x08)Rq\x09tq\x0aRq\x0b.",
	"proto2": "\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00((X\x07\x00\x00\x00storageq\x01ctorch\nHalfStorage\nq\x02X\x01\x00\x00\x000q\x03X\x03\x00\x00\x00cpuq\x04K\x04tq\x05QK\x00K\x04\x85q\x06K\x01\x85q\x07\x89ccollections\nOrderedDict\nq\x08)Rq\x09tq\x0aRq\x0b.",
	"proto4": "\x80\x04\x95\x8a\x00\x00\x00\x00\x00\x00\x00\x8c\x0ctorch._utils\x94\x8c\x12_rebuild_tensor_v2\x94\x93\x94((\x8c\x07storage\x94\x8c\x05torch\x94\x8c\x0bHalfStorage\x94\x93\x94\x8c\x010\x94\x8c\x03cpu\x94K\x04t\x94QK\x00K\x04\x85\x94K\x01\x85\x94\x89\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94t\x94R\x94.",
	"proto5": "\x80\x05\x95\x8a\x00\x00\x00\x00\x00\x00\x00\x8c\x0ctorch._utils\x94\x8c\x12_rebuild_tensor_v2\x94\x93\x94((\x8c\x07storage\x94\x8c\x05torch\x94\x8c\x0bHalfStorage\x94\x93\x94\x8c\x010\x94\x8c\x03cpu\x94K\x04t\x94QK\x00K\x04\x85\x94K\x01\x85\x94\x89\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94t\x94R\x94.",
}

func TestPickleScanAcceptsRealTorchPickles(t *testing.T) {
	t.Parallel()
	for name, p := range realTorchPickles {
		if _, err := ptScanPickle([]byte(p)); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		v, err := ptDecode([]byte(p))
		if err != nil {
			t.Errorf("%s: decode: %v", name, err)
			continue
		}
		pt, ok := v.(*ptTensor)
		if !ok || pt.storage.class != "HalfStorage" || pt.storage.numel != 4 || fmt.Sprint(pt.shape, pt.stride) != "[4] [1]" {
			t.Errorf("%s: decoded %#v", name, v)
		}
	}
}

// le8 is n as 8 little-endian bytes, le4 as 4.
func le8(n uint64) string { return string(binary.LittleEndian.AppendUint64(nil, n)) }
func le4(n uint32) string { return string(binary.LittleEndian.AppendUint32(nil, n)) }

// scanCases are pickles for ptScanPickle and what it must say ("" = accept).
var scanCases = []struct {
	name, pickle, want string
}{
	// Accepted.
	{"empty dict", "\x80\x02}.", ""},
	{"dict items", "\x80\x02}(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bNu.", ""},
	{"namespace", "\x80\x02cargparse\nNamespace\n)\x81}(X\x01\x00\x00\x00aK\x01ub.", ""},
	{"ordereddict state", "\x80\x02ccollections\nOrderedDict\n)R}(X\x09\x00\x00\x00_metadata}ub.", ""},
	{"frame then stream", "\x80\x04\x95\x01" + le8(0)[1:] + "N\x85.", ""},
	{"op at frame end, argument after", "\x80\x04\x95\x01" + le8(0)[1:] + "K\x07.", ""},
	{"shared value", "\x80\x02]q\x00(h\x00h\x00l.", ""},

	// Lengths beyond the bytes that follow.
	{"FRAME huge", "\x80\x04\x95" + le8(1<<62) + "N.", "frame of 4611686018427387904 bytes, but only 2 bytes follow"},
	{"FRAME short", "\x80\x04\x95" + le8(3) + "N.", "frame of 3 bytes"},
	{"FRAME inside frame", "\x80\x04\x95" + le8(12) + "\x95" + le8(1) + "N..", "new frame starts"},
	{"BINBYTES8 huge", "\x80\x04\x8e" + le8(1<<62) + "abc.", "argument of 4611686018427387904 bytes, but only 4 bytes follow"},
	{"BINUNICODE8 huge", "\x80\x04\x8d" + le8(^uint64(0)) + ".", "only 1 bytes follow"},
	{"BYTEARRAY8 huge", "\x80\x05\x96" + le8(1<<40) + ".", "only 1 bytes follow"},
	{"BINBYTES huge", "\x80\x03B" + le4(0xffffffff) + "ab.", "argument of 4294967295 bytes"},
	{"BINUNICODE huge", "\x80\x02X" + le4(0x7fffffff) + ".", "argument of 2147483647 bytes"},
	{"SHORT_BINBYTES", "\x80\x03C\xffab.", "argument of 255 bytes, but only 3"},
	{"SHORT_BINUNICODE", "\x80\x04\x8c\xffab.", "argument of 255 bytes"},
	{"SHORT_BINSTRING", "\x80\x02U\xffab.", "argument of 255 bytes"},
	{"BINSTRING negative", "\x80\x02T" + le4(0xfffffff0) + ".", "negative length"},
	{"LONG1 beyond", "\x80\x02\x8a\x20\x01.", "argument of 32 bytes"},
	{"LONG1 empty", "\x80\x02\x8a\x00.", "integer of 0 bytes"},
	{"LONG4 huge", "\x80\x02\x8b" + le4(0x7ffffff0) + ".", "integer of 2147483632 bytes"},
	{"LONG4 negative", "\x80\x02\x8b" + le4(0xffffffff) + ".", "negative length"},
	{"LONG text too long", "L" + strings.Repeat("9", 200) + "\n.", "more than 128"},
	{"argument across frame end", "\x80\x04\x95\x02" + le8(0)[1:] + "J\x01\x02\x03\x04.", "runs past the end of its frame"},
	{"line across frame end", "\x80\x04\x95\x03" + le8(0)[1:] + "I12\n.", "no newline before the end of the frame"},
	{"no newline", "I12", "no newline before the end of the pickle"},

	// Opcodes.
	{"empty", "", "ends without STOP"},
	{"truncated", "\x80\x02}", "ends without STOP"},
	{"unknown opcode 0xff", "\x80\x02\xff.", "unknown opcode 0xff"},
	{"unknown opcode 0x00", "\x00", "unknown opcode 0x00"},
	{"PROTO 6", "\x80\x06.", "protocol 6"},
	{"PERSID", "P0\n.", "not used by torch.save"},
	{"INST", "(ios\nsystem\n.", "not used by torch.save"},
	{"OBJ", "(}o.", "not used by torch.save"},
	{"EXT1", "\x80\x02\x82\x01.", "not used by torch.save"},
	{"NEXT_BUFFER", "\x80\x05\x97.", "not used by torch.save"},

	// Kinds gopickle or its callers would trip over (most of these panic or
	// print whole objects inside gopickle).
	{"stack underflow", "\x80\x02R.", "stack underflow"},
	{"underflow across MARK", "\x80\x02})(R.", "stack underflow"},
	{"odd SETITEMS", "\x80\x02}(X\x01\x00\x00\x00au.", "odd number (1)"},
	{"odd DICT", "\x80\x02(Nd.", "odd number (1)"},
	{"bytes dict key", "\x80\x03}C\x01aNs.", "dict key is a bytes"},
	{"list dict key", "\x80\x02}]Ns.", "dict key is a list"},
	{"function dict key", "\x80\x02}ctorch._utils\n_rebuild_tensor_v2\nNs.", "dict key is a global"},
	{"bytes set item", "\x80\x04\x8f(C\x01a\x90.", "set item is a bytes"},
	{"APPEND to dict", "\x80\x02}Na.", "appends to a dict"},
	{"SETITEMS on list", "\x80\x02](NNu.", "sets items of a list"},
	{"BUILD on list", "\x80\x02]}b.", "sets the state of a list"},
	{"BUILD tuple state", "\x80\x02cargparse\nNamespace\n)\x81}}\x86b.", "state is a tuple"},
	{"REDUCE list args", "\x80\x02ccollections\nOrderedDict\n]R.", "arguments are a list"},
	{"REDUCE a string", "\x80\x02X\x01\x00\x00\x00a)R.", "calls a str"},
	{"REDUCE a storage class", "\x80\x02ctorch\nFloatStorage\n)R.", "calls a torch storage class"},
	{"OrderedDict with arguments", "\x80\x02ccollections\nOrderedDict\nN\x85R.", "OrderedDict called with 1 arguments"},
	{"NEWOBJ OrderedDict", "\x80\x02ccollections\nOrderedDict\n)\x81.", "instantiates a collections.OrderedDict"},
	{"memo miss", "\x80\x02h\x05.", "memo entry 5 was never stored"},
	{"PUT empty stack", "\x80\x02q\x00.", "stack underflow"},
	{"PUT negative", "Np-1\n.", "bad memo index"},
	{"STACK_GLOBAL non-strings", "\x80\x04NN\x93.", "not strings"},
	{"POP_MARK without MARK", "\x80\x021.", "no MARK"},
	{"BINPERSID string", "\x80\x02X\x01\x00\x00\x00aQ.", "persistent id is a str"},

	// Nesting.
	{"MARKs", "\x80\x02" + strings.Repeat("(", 100000) + ".", "MARKs nested more than 64"},
	{"lists", "\x80\x02" + strings.Repeat("]", 1000) + strings.Repeat("a", 999) + ".", "nested more than 64"},
	{"tuples", "\x80\x02N" + strings.Repeat("\x85", 100000) + ".", "nested more than 64"},
	{"dicts", "\x80\x02}" + strings.Repeat("K\x01}", 1000) + strings.Repeat("s", 1000) + ".", "nested more than 64"},
	{"self append", "\x80\x02]q\x00h\x00a.", "list put inside itself"},
	{"change after nesting", "\x80\x02]q\x00\x85h\x00Na.", "changed after it was put inside"},

	// Globals.
	{"os.system", "\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.", "refusing the Python global os.system"},
	{"builtins.eval", "\x80\x02cbuiltins\neval\n.", "builtins.eval"},
	{"subprocess.Popen", "\x80\x02csubprocess\nPopen\n.", "subprocess.Popen"},
	{"posix.system", "\x80\x02cposix\nsystem\n.", "posix.system"},
	{"__builtin__.object", "\x80\x02c__builtin__\nobject\n.", "__builtin__.object"},
	{"copy_reg._reconstructor", "c copy_reg\n_reconstructor\n.", "_reconstructor"},
	{"torch.load", "\x80\x02ctorch\nload\n.", "torch.load"},
	{"omegaconf", "\x80\x02comegaconf.dictconfig\nDictConfig\n.", "omegaconf.dictconfig.DictConfig"},
	{"STACK_GLOBAL os.system", "\x80\x04\x8c\x02os\x8c\x06system\x93.", "os.system"},
	{"odd name", "\x80\x02cos\nsys\x00tem\n.", `"os.sys\x00tem"`},
	{"long odd name", "\x80\x02c" + strings.Repeat("\xbc", 250) + "\n" + strings.Repeat("\xca", 250) + "\n.", `refusing the Python global "\xbc\xbc`},
	{"overlong name", "\x80\x02c" + strings.Repeat("a", 300) + "\nb\n.", "argument of 300 bytes, more than 256"},
	{"overlong STACK_GLOBAL name", "\x80\x04\x8c\x02os\x8d" + le8(300) + strings.Repeat("a", 300) + "\x93.", "longer than 256 bytes"},

	// Budget: 2000 Namespaces that each get the same 1000 attributes (a
	// 30 KB pickle that gopickle turns into 160 MB).
	{"attribute bomb", attributeBomb(2000), "more than 256 MiB"},
}

func TestPickleScan(t *testing.T) {
	t.Parallel()
	for _, tc := range scanCases {
		_, err := ptScanPickle([]byte(tc.pickle))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		case err != nil && len(err.Error()) > 600:
			t.Errorf("%s: %d-byte error message", tc.name, len(err.Error()))
		}
		var se *ptScanError
		if err != nil && !errors.As(err, &se) {
			t.Errorf("%s: error %T is not a *ptScanError", tc.name, err)
		}
		if tc.want == "" {
			// Whatever the scan accepts, gopickle decodes without a panic
			// (no recover here).
			if _, err := ptDecode([]byte(tc.pickle)); err != nil {
				t.Errorf("%s: decode: %v", tc.name, err)
			}
		}
	}
	if _, err := ptScanPickle(make([]byte, ptMaxPickleBytes+1)); err == nil || !strings.Contains(err.Error(), "64 MiB limit") {
		t.Errorf("oversized pickle: %v", err)
	}
	_, err := ptScanPickle([]byte("\x80\x02cos\nsystem\n."))
	if !errors.Is(err, errPtDisallowedGlobal) {
		t.Errorf("a refused global's error does not wrap errPtDisallowedGlobal: %v", err)
	}
}

// attributeBomb is a pickle of n argparse.Namespace objects, each built
// from one shared dict of 1000 attributes.
func attributeBomb(n int) string {
	var state strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&state, "X\x04\x00\x00\x00%04dN", i)
	}
	return "\x80\x02}q\x01(" + state.String() + "ucargparse\nNamespace\nq\x00" + strings.Repeat("h\x00)\x81h\x01b", n) + "."
}

// costCases repeat one kind of operation many times: the worst cases of
// gopickle's allocation per pickle byte.
func costCases(n int) map[string]string {
	var keys, ints strings.Builder
	for i := range n {
		k := binary.LittleEndian.AppendUint32(nil, uint32(i))
		keys.WriteString("J" + string(k) + "N")
		ints.WriteString("J" + string(k))
	}
	r := strings.Repeat
	const od, ns = "ccollections\nOrderedDict\nq\x00", "cargparse\nNamespace\nq\x00"
	return map[string]string{
		"empty dicts":   "\x80\x02" + r("}", n) + ".",
		"empty lists":   "\x80\x02" + r("]", n) + ".",
		"empty sets":    "\x80\x04" + r("\x8f", n) + ".",
		"empty tuples":  "\x80\x02" + r(")", n) + ".",
		"nones":         "\x80\x02" + r("N", n) + ".",
		"ints":          "\x80\x02" + r("J\x01\x02\x03\x04", n) + ".",
		"floats":        "\x80\x02" + r("G\x01\x02\x03\x04\x01\x02\x03\x04", n) + ".",
		"longs":         "\x80\x02" + r("\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09", n) + ".",
		"mark tuples":   "\x80\x02" + r("(t", n) + ".",
		"tuple1":        "\x80\x02" + r("N\x85", n) + ".",
		"tuple3":        "\x80\x02" + r("NNN\x87", n) + ".",
		"memoize":       "\x80\x04" + r("N\x94", n) + ".",
		"dups":          "\x80\x02N" + r("2", n) + ".",
		"gets":          "\x80\x02Nq\x00" + r("h\x00", n) + ".",
		"strings":       "\x80\x02" + r("X\x05\x00\x00\x00abcde", n) + ".",
		"empty strings": "\x80\x02" + r("\x8c\x00", n) + ".",
		"big string":    "\x80\x02X" + le4(uint32(50*n)) + r("a", 50*n) + ".",
		"empty bytes":   "\x80\x03" + r("C\x00", n) + ".",
		"dict items":    "\x80\x02}(" + keys.String() + "u.",
		"DICT":          "\x80\x02(" + keys.String() + "d.",
		"od items":      "\x80\x02" + od + ")R(" + keys.String() + "u.",
		"list items":    "\x80\x02](" + r("N", n) + "e.",
		"set items":     "\x80\x04\x8f(" + ints.String() + "\x90.",
		"frozenset":     "\x80\x04(" + ints.String() + "\x91.",
		"ordereddicts":  "\x80\x02" + od + r("h\x00)R", n) + ".",
		"namespaces":    "\x80\x02" + ns + r("h\x00)\x81", n) + ".",
		"builds":        attributeBomb(n / 1000),
		"globals":       "\x80\x02" + r(ns, n/10) + ".",
		"storages":      "\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tq\x00" + r("h\x00Q", n) + ".",
		"tensors": "\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x01(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQq\x02(" +
			r("K\x01", 32) + "tq\x03" + r("h\x01(h\x02K\x00h\x03h\x03\x89Ntq\x04R", n/10) + ".",
	}
}

// TestPickleCostEstimate checks that ptScanPickle's estimate bounds what
// gopickle really keeps live after decoding, so that ptMaxDecodeBytes bounds
// memory. The estimate must be at least 1.25 times the measured live heap:
// the constants were set to 1.4 times or more, and the gap covers what the
// measurement cannot see (a stack slice's old array while it grows) and
// noise of a few KB.
func TestPickleCostEstimate(t *testing.T) {
	// Not parallel: it measures the process's live heap.
	cases := costCases(5000)
	for name, p := range realTorchPickles {
		cases["real "+name] = p
	}
	cases["tiny fair-esm"] = string(tinyFairESMPickle(t))
	cases["real tiny_fairesm.pt"] = string(zipEntry(t, readTestdata(t, "torch_tiny_fairesm.pt"), "tiny_fairesm/data.pkl"))
	for name, p := range cases {
		est, err := ptScanPickle([]byte(p))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		v, err := ptDecode([]byte(p))
		runtime.GC()
		runtime.ReadMemStats(&m1)
		runtime.KeepAlive(v)
		if err != nil {
			t.Errorf("%s: decode: %v", name, err)
			continue
		}
		live := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
		if float64(est) < 1.25*float64(live) {
			t.Errorf("%s: estimate %d bytes, decoding kept %d live", name, est, live)
		}
	}
}

// tinyFairESMPickle is the data.pkl of the hand-built tiny checkpoint.
func tinyFairESMPickle(t testing.TB) []byte {
	var zb bytes.Buffer
	buildFairESMPtTo(t, &zb, tinyFairSpecs(), namespaceCfg(tinyL, tinyD, tinyH, true))
	return zipEntry(t, zb.Bytes(), "archive/data.pkl")
}

// BenchmarkPickleScan measures the scan of a real checkpoint's data.pkl (the
// cost it adds to every .pt load).
func BenchmarkPickleScan(b *testing.B) {
	p := tinyFairESMPickle(b)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := ptScanPickle(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPickleDecode is gopickle's decode of the same data.pkl, for scale.
func BenchmarkPickleDecode(b *testing.B) {
	p := tinyFairESMPickle(b)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := ptDecode(p); err != nil {
			b.Fatal(err)
		}
	}
}
