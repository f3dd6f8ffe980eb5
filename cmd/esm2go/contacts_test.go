package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/internal/cudadrv"
	"github.com/esm2go/esm2go/output"
)

// readNPY1 reads a 1-D .npy file of descr <f4, <f2 or <i8 as float64s.
func readNPY1(t *testing.T, path, descr string) []float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 10 || string(b[:6]) != "\x93NUMPY" {
		t.Fatalf("%s: not an npy file", path)
	}
	hl := int(binary.LittleEndian.Uint16(b[8:]))
	hdr := string(b[10 : 10+hl])
	if !strings.Contains(hdr, "'descr': '"+descr+"'") {
		t.Fatalf("%s: header %q, want descr %s", path, hdr, descr)
	}
	i := strings.Index(hdr, "'shape': (")
	j := strings.Index(hdr[i:], ",)")
	n, err := strconv.Atoi(hdr[i+len("'shape': (") : i+j])
	if err != nil {
		t.Fatalf("%s: shape in %q: %v", path, hdr, err)
	}
	body := b[10+hl:]
	size := map[string]int{"<f4": 4, "<f2": 2, "<i8": 8}[descr]
	if len(body) != n*size {
		t.Fatalf("%s: %d data bytes for shape (%d,) of %s", path, len(body), n, descr)
	}
	out := make([]float64, n)
	for k := range out {
		switch descr {
		case "<f4":
			out[k] = float64(math.Float32frombits(binary.LittleEndian.Uint32(body[4*k:])))
		case "<f2":
			out[k] = float64(cudadrv.HalfToFloat32(binary.LittleEndian.Uint16(body[2*k:])))
		case "<i8":
			out[k] = float64(int64(binary.LittleEndian.Uint64(body[8*k:])))
		}
	}
	return out
}

func writeFASTA(t *testing.T, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "in.fasta")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// contactsFASTA: a record longer than the --truncation-seq-length 40 the
// test passes, a 3-residue one with an id that is no file name, and one
// with a <mask>.
const contactsFASTA = ">long first record\n" +
	"MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQV\n" +
	">x/y|z\nMKV\n" +
	">masked\nMKT<mask>YIAKQ\n"

func TestContactsCLI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeFASTA(t, dir, contactsFASTA)
	out, pngs := filepath.Join(dir, "out"), filepath.Join(dir, "png")
	code, _, errs := runCLI(t, "contacts", "--model", tinyModel, "--device", "cpu", "--truncation-seq-length", "40",
		"--png", pngs, "-o", out, in)
	if code != 0 {
		t.Fatalf("status %d, stderr:\n%s", code, errs)
	}
	vals := readNPY1(t, filepath.Join(out, contactsValues), "<f4")
	offs := readNPY1(t, filepath.Join(out, contactsOffsets), "<i8")
	recs, err := os.ReadFile(filepath.Join(out, contactsRecords))
	if err != nil {
		t.Fatal(err)
	}
	wantRecs := "index\tid\tresidues\tlength\ttruncated\n" +
		"0\tlong\t57\t40\ttrue\n1\tx/y|z\t3\t3\tfalse\n2\tmasked\t9\t9\tfalse\n"
	if string(recs) != wantRecs {
		t.Errorf("records.tsv:\n%s\nwant:\n%s", recs, wantRecs)
	}
	lens := []int{40, 3, 9}
	if len(offs) != len(lens)+1 || offs[0] != 0 || int(offs[len(lens)]) != len(vals) {
		t.Fatalf("offsets %v for %d values", offs, len(vals))
	}
	var meta map[string]any
	mb, err := os.ReadFile(filepath.Join(out, contactsMeta))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(mb, &meta); err != nil {
		t.Fatal(err)
	}
	if meta["records"] != 3.0 || meta["dtype"] != "float32" || meta["format"] != "esm2go-contacts" || meta["values"] != float64(len(vals)) {
		t.Errorf("metadata: %s", mb)
	}

	// The same maps as the library gives for the same tokens.
	be := cpu.New(cpu.Options{})
	defer be.Close()
	m, err := esm.LoadModel(tinyModel, be)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok := esm.NewTokenizer(40)
	for i, seq := range []string{
		"MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQV", "MKV", "MKT<mask>YIAKQ",
	} {
		ids, e, err := tok.Encode(nil, []byte(seq))
		if err != nil {
			t.Fatal(err)
		}
		var b esm.Batch
		b.Reset()
		b.Append(ids, e.Masks)
		maps, err := m.Contacts(context.Background(), &b)
		if err != nil {
			t.Fatal(err)
		}
		L := lens[i]
		got := vals[int(offs[i]):int(offs[i+1])]
		if len(got) != L*L || len(maps[0]) != L*L {
			t.Fatalf("record %d: %d values, library %d, want %d", i, len(got), len(maps[0]), L*L)
		}
		for k, v := range maps[0] {
			if got[k] != float64(v) {
				t.Fatalf("record %d value %d: file %g, library %g", i, k, got[k], v)
			}
		}

		// Its PNG decodes, at max(1, 512/L) pixels per residue pair, dark
		// where the contact probability is high.
		name := filepath.Join(pngs, pngName(i, []string{"long", "x/y|z", "masked"}[i]))
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		side := L * max(1, 512/L)
		if r := img.Bounds(); r.Dx() != side || r.Dy() != side {
			t.Fatalf("%s: %v, want %dx%d", name, r, side, side)
		}
		s := side / L
		for _, k := range []int{0, L*L - 1, L + 1} {
			y, _, _, _ := img.At((k%L)*s, (k/L)*s).RGBA()
			want := math.Round(255 * (1 - float64(maps[0][k])))
			if float64(y>>8) != want {
				t.Fatalf("%s pixel of pair %d: gray %d, want %g", name, k, y>>8, want)
			}
		}
	}
	if n := filepath.Base(filepath.Join(pngs, pngName(1, "x/y|z"))); n != "1_x_y_z.png" {
		t.Errorf("png name %q", n)
	}

	// float16: the same values rounded to half precision (≤ 2^-12 of 1).
	out16 := filepath.Join(dir, "out16")
	if code, _, errs := runCLI(t, "contacts", "--model", tinyModel, "--device", "cpu", "--truncation-seq-length", "40",
		"--dtype", "float16", "-q", "-o", out16, in); code != 0 {
		t.Fatalf("float16: status %d, stderr:\n%s", code, errs)
	}
	v16 := readNPY1(t, filepath.Join(out16, contactsValues), "<f2")
	if len(v16) != len(vals) {
		t.Fatalf("float16: %d values, float32 %d", len(v16), len(vals))
	}
	for k := range vals {
		if math.Abs(v16[k]-vals[k]) > 1.0/4096 {
			t.Fatalf("float16 value %d = %g, float32 %g", k, v16[k], vals[k])
		}
	}

	// An existing output is kept unless --overwrite; with it, replaced.
	code, _, errs = runCLI(t, "contacts", "--model", tinyModel, "--device", "cpu", "-q", "-o", out, in)
	if code != 1 || !strings.Contains(errs, "exists (use --overwrite") {
		t.Fatalf("existing --out: status %d, stderr:\n%s", code, errs)
	}
	code, _, errs = runCLI(t, "contacts", "--model", tinyModel, "--device", "cpu", "-q", "--overwrite", "-o", out, in)
	if code != 0 {
		t.Fatalf("--overwrite: status %d, stderr:\n%s", code, errs)
	}
	if recs2, _ := os.ReadFile(filepath.Join(out, contactsRecords)); !strings.Contains(string(recs2), "0\tlong\t57\t57\tfalse") {
		t.Errorf("--overwrite did not replace the output (default truncation 1022):\n%s", recs2)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".out*")); len(left) != 0 {
		t.Errorf("temporary directories left: %v", left)
	}
	// A contacts output that also holds a file of the user's is not replaced.
	mine := filepath.Join(out, "notes.txt")
	if err := os.WriteFile(mine, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs = runCLI(t, "contacts", "--model", tinyModel, "--device", "cpu", "-q", "--overwrite", "-o", out, in)
	if code != 1 || !strings.Contains(errs, "which contacts did not write") {
		t.Errorf("--overwrite of an output holding a user's file: status %d, stderr:\n%s", code, errs)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Errorf("the user's file is gone: %v", err)
	}
}

func TestContactsCLIErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeFASTA(t, dir, ">a\nMKV\n")
	badIn := filepath.Join(dir, "bad.fasta")
	if err := os.WriteFile(badIn, []byte(">ok\nMKV\n>broken\nMK1V\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	notOut := filepath.Join(dir, "notcontacts")
	if err := os.Mkdir(notOut, 0o755); err != nil {
		t.Fatal(err)
	}
	// The tiny model with its contact head renamed away (same-length names,
	// so the safetensors header keeps its size).
	noHead := filepath.Join(dir, "nohead")
	if err := os.Mkdir(noHead, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config.json", "model.safetensors"} {
		b, err := os.ReadFile(filepath.Join(tinyModel, f))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("contact_head."), []byte("contact_hxad."))
		if err := os.WriteFile(filepath.Join(noHead, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{"contacts", "--model", tinyModel, "--device", "cpu", "-q"}
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no out", []string{in}, 2, "--out is required"},
		{"no input", []string{"-o", filepath.Join(dir, "o1")}, 2, "no FASTA input"},
		{"bf16 dtype", []string{"--dtype", "bfloat16", "-o", filepath.Join(dir, "o2"), in}, 2, `invalid --dtype "bfloat16"`},
		{"bad dtype", []string{"--dtype", "int8", "-o", filepath.Join(dir, "o2"), in}, 2, `invalid --dtype "int8"`},
		{"zero truncation", []string{"--truncation-seq-length", "0", "-o", filepath.Join(dir, "o3"), in}, 2, "invalid --truncation-seq-length 0"},
		{"huge truncation", []string{"--truncation-seq-length", "50000", "-o", filepath.Join(dir, "o3"), in}, 2, "at most 20000 residues"},
		{"two devices", []string{"--device", "cuda:0,1", "-o", filepath.Join(dir, "o4"), in}, 2, "one device"},
		{"unknown flag", []string{"--pngs", dir, "-o", filepath.Join(dir, "o5"), in}, 2, "--pngs"},
		{"bad record", []string{"-o", filepath.Join(dir, "o6"), badIn}, 1, "bad.fasta:3: record \"broken\": invalid character '1' at residue 3"},
		{"missing input", []string{"-o", filepath.Join(dir, "o7"), filepath.Join(dir, "nope.fasta")}, 1, "nope.fasta"},
		{"overwrite a foreign directory", []string{"--overwrite", "-o", notOut, in}, 1, "not a contacts output"},
		{"out in a missing directory", []string{"-o", filepath.Join(dir, "no", "such", "o8"), in}, 1, "--out"},
	} {
		code, _, errs := runCLI(t, append(append([]string{}, base...), c.args...)...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("%s: status %d, stderr:\n%s\nwant status %d and %q", c.name, code, errs, c.code, c.msg)
		}
		if c.code == 1 && strings.Contains(errs, "panic") {
			t.Errorf("%s: panicked", c.name)
		}
	}
	// A failed run leaves no output and no temporary directory behind.
	if _, err := os.Stat(filepath.Join(dir, "o6")); !os.IsNotExist(err) {
		t.Errorf("a failed run left its output: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".o*")); len(left) != 0 {
		t.Errorf("temporary directories left: %v", left)
	}

	code, _, errs := runCLI(t, "contacts", "--model", noHead, "--device", "cpu", "-q", "-o", filepath.Join(dir, "o9"), in)
	if code != 1 || !strings.Contains(errs, "has no contact head") {
		t.Errorf("model without a contact head: status %d, stderr:\n%s", code, errs)
	}
	code, out, _ := runCLI(t, "help", "contacts")
	if code != 0 || !strings.Contains(out, "--png") || !strings.Contains(out, "--truncation-seq-length") {
		t.Errorf("help contacts: status %d:\n%s", code, out)
	}
	if code, out, _ := runCLI(t, "help"); code != 0 || !strings.Contains(out, "esm2go contacts") {
		t.Errorf("help: status %d, no contacts line:\n%s", code, out)
	}
}

// TestContactsWriterRefusesNonFinite: a contact map holding NaN or ±Inf
// (non-finite attention: a damaged checkpoint, an fp16 overflow) stops the
// run naming the record and the residue pair; nothing is published.
func TestContactsWriterRefusesNonFinite(t *testing.T) {
	t.Parallel()
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1))} {
		dir := filepath.Join(t.TempDir(), "maps")
		w, err := newContactsWriter(dir, output.Float32)
		if err != nil {
			t.Fatal(err)
		}
		c := make([]float32, 9)
		if err := w.add(0, "good", 3, 3, false, c); err != nil {
			t.Fatal(err)
		}
		c[5] = bad // residues 2, 3
		err = w.add(1, "sp|P1|X", 3, 3, false, c)
		w.abort()
		if err == nil || !strings.Contains(err.Error(), `record 1 ("sp|P1|X")`) || !strings.Contains(err.Error(), "residues 2, 3") {
			t.Fatalf("%v: got %v", bad, err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%v: %s exists after the failure: %v", bad, dir, err)
		}
	}
}
