package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/esm2go/esm2go/internal/cudadrv"
	"github.com/esm2go/esm2go/output"
)

// noModel is a --model that cannot load: a run that fails with anything
// but a model error never got to loading it.
const noModel = "/nonexistent/esm2go-test-model"

func writeTemp(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func gz(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// assertRefused checks a run that must fail with status 1 and one stderr
// line containing want, before the model loads, leaving nothing at out.
func assertRefused(t *testing.T, code int, stderr, want, out string) {
	t.Helper()
	if code != 1 {
		t.Errorf("status %d, want 1; stderr:\n%s", code, stderr)
	}
	if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "esm2go: ") || !strings.Contains(stderr, want) {
		t.Errorf("stderr %q, want one line containing %q", stderr, want)
	}
	for _, p := range []string{out, out + ".parts"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was written", p)
		}
	}
}

// TestInputAndOutputChecks: inputs that are not FASTA files and outputs
// that cannot be written are refused before the model loads.
func TestInputAndOutputChecks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "o.parquet")
	good := writeTemp(t, dir, "good.fa", []byte(">p\nMKTAYIAKQR\n"))
	file := writeTemp(t, dir, "afile", []byte("x"))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"directory input", []string{"--out", out, dir}, "input " + dir + " is a directory (want a FASTA file)"},
		{"missing input", []string{"--out", out, filepath.Join(dir, "nope.fa")}, "input " + filepath.Join(dir, "nope.fa") + ": no such file or directory"},
		{"device input", []string{"--out", out, os.DevNull}, "input /dev/null is not a regular file or a named pipe (a character device)"},
		{"missing out dir", []string{"--out", filepath.Join(dir, "no", "o.parquet"), good}, "directory " + filepath.Join(dir, "no") + " does not exist"},
		{"out dir is a file", []string{"--out", filepath.Join(file, "o.parquet"), good}, file + " is not a directory"},
		{"npy out dir missing", []string{"--out", filepath.Join(dir, "no", "npy") + "/", good}, "directory " + filepath.Join(dir, "no") + " does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, append([]string{"embed", "--model", noModel}, tc.args...)...)
			assertRefused(t, code, stderr, tc.want, out)
		})
	}

	t.Run("unwritable out dir", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root writes into a read-only directory")
		}
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		o := filepath.Join(ro, "o.parquet")
		code, _, stderr := runCLI(t, "embed", "--model", noModel, "--out", o, good)
		assertRefused(t, code, stderr, "cannot write in directory "+ro+": permission denied", o)
		if ents, _ := os.ReadDir(ro); len(ents) != 0 {
			t.Errorf("the probe left %v", ents)
		}
	})

	t.Run("unreadable input", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads an unreadable file")
		}
		p := writeTemp(t, dir, "secret.fa", []byte(">p\nMK\n"))
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := runCLI(t, "embed", "--model", noModel, "--out", out, p)
		assertRefused(t, code, stderr, "input "+p+": permission denied", out)
	})

	// The probe leaves nothing behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".esm2go-probe") {
			t.Errorf("probe file %s left", e.Name())
		}
	}
}

// TestNamedPipeInputNotOpened: a named pipe passes the checks without being
// opened (an open and close would let its writer go on and then lose its
// reader).
func TestNamedPipeInputNotOpened(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "in.fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if err := checkInputs([]string{fifo, "-"}); err != nil {
		t.Fatal(err)
	}
	// With no reader ever opened, a non-blocking open for writing fails
	// with ENXIO.
	if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); !errors.Is(err, syscall.ENXIO) {
		if f != nil {
			f.Close()
		}
		t.Errorf("open for writing: %v, want ENXIO (no reader)", err)
	}
}

// TestNothingToEmbed: inputs that cannot give a single row are refused
// before the model loads, saying why, and nothing is written.
func TestNothingToEmbed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "o.parquet")
	readme := []byte("# esm2go\n\nComputes ESM2 embeddings.\n")
	for _, tc := range []struct {
		name, file string
		data       []byte
		want       string
	}{
		{"empty", "empty.fa", nil, "no records embedded: " + filepath.Join(dir, "empty.fa") + " is empty (no FASTA records)"},
		{"blank lines", "blank.fa", []byte("\n  \n\n"), "blank.fa is empty (no FASTA records)"},
		{"readme", "README.md", readme, `no records embedded: ` + filepath.Join(dir, "README.md") + ` has no FASTA header ('>'); it starts with "# esm2go"`},
		{"gzip readme", "readme.gz", gz(t, readme), `readme.gz has no FASTA header ('>'); it starts with "# esm2go"`},
		{"junk records", "junk.fa", []byte(">a\n12345\n>b\n*X*\n>c\n"), "junk.fa has 3 records and none can be embedded (first: record at line 1 (id \"a\"): invalid character '1' at residue 1)"},
		{"text then junk", "tj.fa", []byte("notes here\n>a\n123\n"), `tj.fa has 2 records and none can be embedded (first: text before the first header, "notes here")`},
		{"only headers", "headers.fa", []byte(">a\n>b\n"), "headers.fa has 2 records and none can be embedded (first: record at line 1 (id \"a\"): no residues)"},
		{"parquet", "x.parquet", append([]byte("PAR1\x15\x04\x15"), make([]byte, 64)...), "input " + filepath.Join(dir, "x.parquet") + " is a Parquet file, not FASTA text"},
		{"npy", "x.npy", []byte("\x93NUMPY\x01\x00v\x00{'descr': '<f4'"), "is a NumPy .npy file, not FASTA text"},
		{"xz", "x.fa.xz", []byte("\xfd7zXZ\x00\x00\x04"), "is xz-compressed (only gzip is read: decompress it first), not FASTA text"},
		{"binary", "x.bin", []byte(">a\nMK\x00\x01\x02V\n"), "is a binary file (it holds NUL bytes), not FASTA text"},
		{"gzip binary", "x.bin.gz", gz(t, []byte("PAR1\x00\x00")), "is a Parquet file, not FASTA text"},
		{"gzip twice", "x.fa.gz.gz", gz(t, gz(t, []byte(">a\nMKV\n"))), "is gzip-compressed twice (decompress it once first), not FASTA text"},
		{"utf-16", "u16.fa", []byte("\xff\xfe>\x00a\x00\n\x00M\x00K\x00\n\x00"), "is UTF-16 text (convert it to UTF-8 first"},
		{"one junk record", "one.fa", []byte(">a\n12\n"), "one.fa has 1 record and none can be embedded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := writeTemp(t, dir, tc.file, tc.data)
			code, _, stderr := runCLI(t, "embed", "--model", noModel, "--out", out, in)
			assertRefused(t, code, stderr, tc.want, out)
		})
	}

	// Several inputs: refused only when none gives a row; a binary one
	// always.
	empty := filepath.Join(dir, "empty.fa")
	code, _, stderr := runCLI(t, "embed", "--model", noModel, "--out", out, empty, filepath.Join(dir, "README.md"))
	assertRefused(t, code, stderr, "no records embedded: "+empty+" is empty (no FASTA records); "+filepath.Join(dir, "README.md")+" has no FASTA header", out)
	code, _, stderr = runCLI(t, "embed", "--model", noModel, "--out", out, fasta, filepath.Join(dir, "x.parquet"))
	assertRefused(t, code, stderr, "x.parquet is a Parquet file", out)

	code, _, stderr = runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--out", out, filepath.Join(dir, "README.md"), fasta)
	if code != 0 {
		t.Fatalf("README and a FASTA file: status %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, `msg="nothing in this input can be embedded: `+filepath.Join(dir, "README.md")+` has no FASTA header`) {
		t.Errorf("no warning for the README:\n%s", stderr)
	}
}

// TestNothingEmbeddedFromPipe: input that cannot be looked at before the
// run (a named pipe) and gives no row fails after it, and the empty output
// is removed.
func TestNothingEmbeddedFromPipe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, out string
	}{{"parquet", "o.parquet"}, {"npy", "npy/"}} {
		t.Run(tc.name, func(t *testing.T) {
			fifo := filepath.Join(dir, tc.name+".fifo")
			if err := syscall.Mkfifo(fifo, 0o644); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
			done := make(chan error, 1)
			go func() {
				f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
				if err != nil {
					done <- err
					return
				}
				_, err = f.WriteString(">a\n123\n>b\nMK1\n")
				done <- errors.Join(err, f.Close())
			}()
			out := filepath.Join(dir, tc.out)
			code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--out", out, fifo)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if code != 1 || !strings.Contains(stderr, "esm2go: no records embedded: none of the 2 records read could be embedded (see the warnings above)\n") {
				t.Errorf("status %d; stderr:\n%s", code, stderr)
			}
			for _, p := range []string{out, strings.TrimSuffix(out, "/") + ".parts"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s is left", p)
				}
			}
		})
	}
}

// TestNucleotideWarning: a file of DNA records gives one warning with the
// count; the records are embedded all the same.
func TestNucleotideWarning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dna := "ACGTTGCAACGTAGCTAGCTAGGATCCAGT"
	var b strings.Builder
	for i := range 3 {
		fmt.Fprintf(&b, ">dna%d\n%s\n", i, dna)
	}
	b.WriteString(">rna\nACGUUGCAACGUAGCUAGCUAGGAUCCAGUNN\n")
	b.WriteString(">short\nACGTACGT\n")                         // under 20 residues: not judged
	b.WriteString(">prot\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n") // a protein
	b.WriteString(">polyA_prot\nMAAAAAAAAAAAAAAAAAAAAK\n")      // 20/22 = 91% A: counted (a low-complexity protein)
	in := writeTemp(t, dir, "dna.fa", []byte(b.String()))
	prot := writeTemp(t, dir, "prot.fa", []byte(">p\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n"))
	out := filepath.Join(dir, "o.parquet")
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--out", out, in, prot)
	if code != 0 {
		t.Fatalf("status %d; stderr:\n%s", code, stderr)
	}
	want := in + ": 5 of its 7 records look like nucleotide sequences (90% or more A/C/G/T/U/N); ESM2 is a protein model (translate them first); embedding them anyway"
	if strings.Count(stderr, "look like nucleotide") != 1 || !strings.Contains(stderr, want) {
		t.Errorf("want one warning %q; stderr:\n%s", want, stderr)
	}
	if !strings.Contains(stderr, "embedded=8 ") && !strings.Contains(stderr, "8 records embedded") {
		t.Errorf("the records were not all embedded:\n%s", stderr)
	}
}

func TestNucleotideLike(t *testing.T) {
	for _, tc := range []struct {
		seq  string
		want bool
	}{
		{"ACGTACGTACGTACGTACGT", true},               // 20 of 20
		{"ACGTACGTACGTACGTACG", false},               // 19 residues: too short to judge
		{"acgtnnnnuuuuacgtacgtacgt", true},           // any case, N and U
		{"ACGTACGTACGTACGTACQQ", true},               // 18 of 20: exactly 90%
		{"ACGTACGTACGTACGTAQQQ", false},              // 17 of 20 = 85%
		{"MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", false}, // a protein
	} {
		if got := nucleotideLike([]byte(tc.seq)); got != tc.want {
			t.Errorf("nucleotideLike(%q) = %v, want %v", tc.seq, got, tc.want)
		}
	}
}

// TestNoGPUNote: the line --device auto gives when it runs on the CPU.
func TestNoGPUNote(t *testing.T) {
	for _, tc := range []struct {
		err  error
		msg  string
		warn bool
	}{
		{fmt.Errorf("CUDA driver or libraries not found: %w", fmt.Errorf("%w: libcuda.so.1 not found (libcuda.so.1: cannot open shared object file)", cudadrv.ErrNoDriver)),
			"no GPU found; running on the CPU (3 threads)", false},
		{fmt.Errorf("CUDA driver or libraries not found: %w", fmt.Errorf("%w: cuInit: CUDA_ERROR_NO_DEVICE", cudadrv.ErrNoDevice)),
			"no GPU found; running on the CPU (3 threads)", false},
		{fmt.Errorf("CUDA driver or libraries not found: %w", fmt.Errorf("%w: NVRTC: libnvrtc.so.13 not found", cudadrv.ErrMissingLibrary)),
			"GPU not usable (the CUDA libraries NVRTC and cuBLAS were not found; install the CUDA toolkit or set CUDA_HOME); running on the CPU (3 threads)", true},
		{fmt.Errorf("no usable CUDA device: %w", errors.New("cuDeviceGetCount: CUDA_ERROR_UNKNOWN")),
			"GPU not usable (no usable CUDA device); running on the CPU (3 threads)", true},
	} {
		msg, warn := noGPUNote(tc.err, 3)
		if msg != tc.msg || warn != tc.warn {
			t.Errorf("noGPUNote(%v) = %q, %v; want %q, %v", tc.err, msg, warn, tc.msg, tc.warn)
		}
	}
	if msg, _ := noGPUNote(cudadrv.ErrNoDriver, 0); !strings.Contains(msg, "threads)") || strings.Contains(msg, "(0 threads)") {
		t.Errorf("threads 0: %q, want the CPU backend's default count", msg)
	}
}

// TestEmptyIDWarning: records whose header has no id are embedded with an
// empty id and one warning; a <MASK> token and a no-break space in a
// header are taken as they should.
func TestEmptyIDWarning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeTemp(t, dir, "in.fa", []byte(">\nMKTAYIAKQR\n>   \nMKV\n>P1\u00a0desc\nMK<MASK>V\n"))
	out := filepath.Join(dir, "o.parquet")
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--out", out, in)
	if code != 0 {
		t.Fatalf("status %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, `msg="2 records have an empty id (a header line of '>' alone); their id is written as \"\" and the index column tells them apart"`) {
		t.Errorf("no empty-id warning:\n%s", stderr)
	}
	if strings.Contains(stderr, "record skipped") {
		t.Errorf("a record was skipped:\n%s", stderr)
	}
	r, err := output.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var ids []string
	for {
		var row output.Row
		if err := r.Next(&row); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, row.ID)
		if row.ID == "P1" && row.Length != 4 {
			t.Errorf("MK<MASK>V: length %d, want 4 (<MASK> is one token)", row.Length)
		}
	}
	if !slices.Equal(ids, []string{"", "", "P1"}) {
		t.Errorf("ids %q, want \"\", \"\", \"P1\"", ids)
	}
}

// TestLooksBinary: a NUL alone does not make a file binary; control bytes
// at 1% of the head with a NUL among them do.
func TestLooksBinary(t *testing.T) {
	text := bytes.Repeat([]byte(">P1 some protein\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n"), 200)[:sniffBytes]
	stray := slices.Clone(text)
	copy(stray[4000:], "\x00\x01\x0e\x19\x1f") // as in a header of PNNL's JunkTest.fasta
	utf16 := make([]byte, 0, 2*len(text))
	for _, c := range text {
		utf16 = append(utf16, c, 0)
	}
	uniform := make([]byte, sniffBytes)
	x := uint32(2463534242)
	for i := range uniform { // xorshift32: bytes spread evenly over 0..255
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		uniform[i] = byte(x >> 24)
	}
	dense := slices.Clone(text)
	for i := 0; i < len(dense)/100+1; i++ {
		dense[i*97] = 0 // 1% of the head, spread out
	}
	for _, tc := range []struct {
		name string
		head []byte
		want bool
	}{
		{"text", text, false},
		{"text with a stray NUL and four controls", stray, false},
		{"control bytes without NUL", bytes.Repeat([]byte("MK\x01\x02"), 100), false},
		{"NUL at 1%", dense, true},
		{"UTF-16", utf16[:sniffBytes], true},
		{"uniform bytes", uniform, true},
		{"short record with NULs", []byte(">a\nMK\x00\x01\x02V\n"), true},
	} {
		if got := looksBinary(tc.head); got != tc.want {
			t.Errorf("%s: looksBinary %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestJunkFileEmbedsGoodRecords: PNNL's deliberately malformed
// JunkTest.fasta (empty headers, tabs and spaces in sequence lines, a NUL and
// other control bytes in a header, a record with no residues) is a FASTA
// file: the record without residues is skipped with a warning naming file and
// line, and the other 29 are embedded, the one with the NUL in its header
// included.
func TestJunkFileEmbedsGoodRecords(t *testing.T) {
	t.Parallel()
	const junk = "../../data/testdata/pnnl_JunkTest.fasta"
	raw, err := os.ReadFile(junk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("\x00")) {
		t.Fatal("the test file lost its NUL byte")
	}
	out := filepath.Join(t.TempDir(), "junk.parquet")
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--out", out, junk)
	if code != 0 {
		t.Fatalf("status %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, `msg="record skipped" file=`+junk+` line=216 id=NCU10044.1 reason="no residues"`) {
		t.Errorf("no warning naming the empty record's file and line:\n%s", stderr)
	}
	if !strings.Contains(stderr, "done: 29 records embedded, 1 skipped (1 no residues) of 30 read") {
		t.Errorf("summary does not count 29 embedded and 1 skipped:\n%s", stderr)
	}
	// JSON logs carry the id as a plain string field.
	code, _, stderr = runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--log-format", "json", "--overwrite", "--out", out, junk)
	if code != 0 || !strings.Contains(stderr, `"line":216,"id":"NCU10044.1","reason":"no residues"`) {
		t.Errorf("json log: status %d, stderr:\n%s", code, stderr)
	}
	ids := readIDs(t, out)
	if len(ids) != 29 || !slices.Contains(ids, "NCU10039.1") || slices.Contains(ids, "NCU10044.1") {
		t.Errorf("%d rows, ids %q: want 29 with NCU10039.1 (NUL in its header) and without NCU10044.1 (no residues)", len(ids), ids)
	}
}

// TestByteOrderMarkFile: a FASTA file saved with a UTF-8 byte order mark and
// CRLF line ends (as Windows editors write it) embeds every record.
func TestByteOrderMarkFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeTemp(t, dir, "bom.fa", []byte("\xef\xbb\xbf>b1 first\r\nMKTAYIAKQR\r\n>b2\r\nMKV\r\n"))
	out := filepath.Join(dir, "o.parquet")
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--out", out, in)
	if code != 0 {
		t.Fatalf("status %d; stderr:\n%s", code, stderr)
	}
	if strings.Contains(stderr, "record skipped") {
		t.Errorf("a record was skipped:\n%s", stderr)
	}
	if ids := readIDs(t, out); !slices.Equal(ids, []string{"b1", "b2"}) {
		t.Errorf("ids %q, want b1, b2", ids)
	}
}

// TestOverwriteHint: a refusal to resume names --overwrite, and says how
// inputs are compared, or that standard input cannot be resumed.
func TestOverwriteHint(t *testing.T) {
	for _, tc := range []struct{ diff, want string }{
		{`input was "stdin (pid 1, x)", this run has "stdin (pid 2, y)"`, "that run read standard input, which cannot be resumed: --overwrite discards its rows"},
		{`input was "xxh64:1", this run has "xxh64:2"`, "compared by the paths, sizes and modification times of their files; --overwrite discards the earlier rows"},
		{`layers was "3", this run has "2"`, "(--overwrite discards the earlier rows)"},
	} {
		err := withOverwriteHint(fmt.Errorf("output: o.parts: %w (%s); rerun ...", output.ErrIncompatible, tc.diff))
		if !errors.Is(err, output.ErrIncompatible) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want it to say %q", tc.diff, err, tc.want)
		}
	}
}

// TestOutputNamesRefused: embed does not write to standard output (--out -
// or --metrics-json - made a file named "-"), and contacts refuses a --png
// directory inside its output directory before the model loads (it failed
// after all the work).
func TestOutputNamesRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"embed", "--model", noModel, "--out", "-", fasta},
		{"embed", "--model", noModel, "--out", filepath.Join(dir, "o.parquet"), "--metrics-json", "-", fasta},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != 1 || !strings.Contains(stderr, "embed does not write to standard output") {
			t.Errorf("%q: status %d, stderr %q", args, code, stderr)
		}
	}
	if _, err := os.Lstat("-"); err == nil {
		t.Error(`a file named "-" was created`)
	}
	out := filepath.Join(dir, "maps")
	for _, png := range []string{out, filepath.Join(out, "png")} {
		code, _, stderr := runCLI(t, "contacts", "--model", noModel, "-o", out, "--png", png, fasta)
		if code != 1 || !strings.Contains(stderr, "write the PNGs beside it") {
			t.Errorf("--png %s: status %d, stderr %q", png, code, stderr)
		}
	}
}
