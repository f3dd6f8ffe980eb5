package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unicode/utf8"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/embed"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/internal/cudadrv"
	"golang.org/x/sys/unix"
)

// This file holds the embed command's checks that need no model: inputs
// and the output's directory (before anything loads), a look at the start
// of each input file (is it FASTA at all, is it nucleotides), and the
// refusal of a run that embedded nothing.

// checkInputs checks that every input is "-" (stdin), or a readable regular
// file or named pipe. A named pipe is not opened (that would let its writer
// go on and then find no reader): its permission is checked instead.
func checkInputs(inputs []string) error {
	for _, in := range inputs {
		if in == "-" {
			continue
		}
		fi, err := os.Stat(in)
		if err != nil {
			return fmt.Errorf("input %s: %w", in, unwrapPath(err))
		}
		switch mode := fi.Mode(); {
		case mode.IsDir():
			return fmt.Errorf("input %s is a directory (want a FASTA file)", in)
		case mode.IsRegular():
			f, err := os.Open(in)
			if err != nil {
				return fmt.Errorf("input %s: %w", in, unwrapPath(err))
			}
			f.Close()
		case mode&fs.ModeNamedPipe != 0:
			if err := unix.Access(in, unix.R_OK); err != nil {
				return fmt.Errorf("input %s: named pipe not readable: %w", in, err)
			}
		default:
			return fmt.Errorf("input %s is not a regular file or a named pipe (%s)", in, describeMode(mode))
		}
	}
	return nil
}

// unwrapPath drops the *fs.PathError's op and path (the caller names the
// file): "no such file or directory", not "stat x: no such file...".
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func describeMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "mode " + m.String()
}

// checkOutputDir checks that the directory --out goes into exists and
// can be written, by creating and removing a probe file there (permission
// bits do not tell: ACLs, read-only mounts, root squash).
func checkOutputDir(out string) error {
	dir := filepath.Dir(filepath.Clean(out))
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--out %s: directory %s does not exist", out, dir)
	case err != nil:
		return fmt.Errorf("--out %s: %w", out, err)
	case !fi.IsDir():
		return fmt.Errorf("--out %s: %s is not a directory", out, dir)
	}
	if err := probeDir(dir); err != nil {
		return fmt.Errorf("--out %s: %w", out, err)
	}
	return nil
}

// probeDir creates a file in dir and removes it. Where the file system can
// make an unnamed file (O_TMPFILE, Linux), that is the probe: a run killed
// meanwhile leaves nothing in the user's folder; elsewhere a named
// ".esm2go-probe-*" file is created and removed.
func probeDir(dir string) error {
	if fd, err := openUnnamed(dir); err == nil {
		unix.Close(fd)
		return nil
	}
	f, err := os.CreateTemp(dir, ".esm2go-probe-*")
	if err != nil {
		return fmt.Errorf("cannot write in directory %s: %w", dir, unwrapPath(err))
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("cannot remove probe file %s: %w", name, err)
	}
	return nil
}

// Input scan limits. A file's records are looked at until one that can be
// embedded is found and scanSample bytes were seen (the nucleotide
// sample), or scanMax bytes without an embeddable record (then the scan
// says nothing and the run decides).
const (
	scanSample = 256 << 10
	scanMax    = 64 << 20
	sniffBytes = 8 << 10 // bytes a binary check looks at
)

// Nucleotide heuristic: a record with at least nucMinResidues residues of
// which at least nucFrac are A, C, G, T, U or N (any case). In proteins
// those six letters are about a quarter of all residues (UniProt: A 8.3%,
// G 7.1%, T 5.5%, N 4.1%, C 1.4%, U ~0), so 18 or more of 20 happen by
// chance with probability ~1e-8 (binomial); only low-complexity runs such
// as poly-alanine reach it. DNA and RNA are all of it, up to a few IUPAC
// ambiguity codes.
const (
	nucMinResidues = 20
	nucFrac        = 0.9
)

// inputScan is what a look at one input file found.
type inputScan struct {
	path       string
	complete   bool   // every record was seen
	records    int    // records seen
	embeddable int    // of them, those the tokenizer accepts
	nucleotide int    // of them, those that look like DNA/RNA
	reason     string // why none can be embedded (embeddable == 0 and complete)
}

// scanInputs looks at the start of every regular input file, before the
// model loads. It fails on a binary file (not FASTA whatever else the run
// holds) and when no input can give a single row: every input was read
// whole and holds nothing embeddable. Stdin and named pipes cannot be read
// twice and are not looked at (the run's own check covers them). It warns
// once per file of nucleotide records and of files that give nothing.
func scanInputs(ctx context.Context, inputs []string, maxResidues int, log *slog.Logger) error {
	var scans []inputScan
	unseen := false // an input not looked at, or not to its end
	for _, in := range inputs {
		fi, err := os.Stat(in)
		if in == "-" || err != nil || !fi.Mode().IsRegular() {
			unseen = true
			continue
		}
		sc, err := scanInput(ctx, in, maxResidues)
		if err != nil {
			return err
		}
		scans = append(scans, sc)
		if sc.embeddable == 0 && !sc.complete {
			unseen = true
		}
	}
	for _, sc := range scans {
		if sc.nucleotide > 0 {
			of := fmt.Sprintf("of its %d records", sc.records)
			if !sc.complete {
				of = fmt.Sprintf("of the first %d records", sc.records)
			}
			log.Warn(fmt.Sprintf("%s: %d %s look like nucleotide sequences (%.0f%% or more A/C/G/T/U/N); ESM2 is a protein model (translate them first); embedding them anyway",
				sc.path, sc.nucleotide, of, nucFrac*100))
		}
	}
	var empty []string
	some := unseen // some input may give a row
	for _, sc := range scans {
		if sc.embeddable > 0 {
			some = true
		} else if sc.complete {
			empty = append(empty, sc.path+" "+sc.reason)
		}
	}
	if !some {
		return fmt.Errorf("no records embedded: %s", capList(empty, 5))
	}
	for _, e := range empty {
		log.Warn("nothing in this input can be embedded: " + e)
	}
	return nil
}

// capList joins at most n entries, then "... and N more".
func capList(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, "; ")
	}
	return strings.Join(s[:n], "; ") + fmt.Sprintf("; ... and %d more", len(s)-n)
}

// scanInput looks at one regular file: a binary check of its first bytes
// (gzip decompressed), then its records through the FASTA reader the run
// uses, judged by the run's tokenizer.
func scanInput(ctx context.Context, path string, maxResidues int) (inputScan, error) {
	sc := inputScan{path: path}
	if what, err := sniffBinary(path); err != nil {
		return sc, err
	} else if what != "" {
		return sc, fmt.Errorf("input %s is %s, not FASTA text", path, what)
	}
	// The reader keeps at most limit residue bytes of a record (room for
	// <mask> tokens, as the run); a cut record is judged by what it kept.
	limit := 6*maxResidues + 6
	if maxResidues <= 0 {
		limit = 1 << 20
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rd, err := data.Open(ctx, []string{path}, data.Options{Workers: 1, Prefetch: 1, BlockBytes: scanSample, MaxResidues: limit})
	if err != nil {
		return sc, fmt.Errorf("input %s: %w", path, err)
	}
	defer rd.Close()
	tok := esm.NewTokenizer(maxResidues)
	var toks []int32
	var seen int64
	preamble := false   // the file starts with text before any header
	var firstBad string // the first record that cannot be embedded, and why
	for {
		blk, err := rd.Next(ctx)
		if errors.Is(err, io.EOF) {
			sc.complete = true
			break
		}
		if err != nil {
			return sc, err // names the file
		}
		for i := range blk.Records {
			r := &blk.Records[i]
			sc.records++
			seen += int64(len(r.Header)) + r.Total + 2
			if r.Problem != "" {
				switch {
				case r.Problem == data.ProblemBeforeHeader && sc.records == 1:
					preamble = true
				case firstBad == "":
					firstBad = fmt.Sprintf("line %d: %s", r.Line, r.Problem)
				}
				continue
			}
			seq := r.Seq
			if r.Truncated() {
				seq = cutPartialToken(seq)
			}
			var e esm.Encoded
			var terr error
			toks, e, terr = tok.Encode(toks[:0], seq)
			if terr != nil {
				if firstBad == "" {
					firstBad = fmt.Sprintf("record at line %d (id %s): %v", r.Line, data.Quote(r.ID), terr)
				}
				continue
			}
			sc.embeddable++
			if e.Residues >= nucMinResidues && nucleotideLike(seq) {
				sc.nucleotide++
			}
		}
		if (sc.embeddable > 0 && seen >= scanSample) || seen >= scanMax {
			break
		}
	}
	switch {
	case sc.embeddable > 0 || !sc.complete:
	case sc.records == 0:
		sc.reason = "is empty (no FASTA records)"
	case sc.records == 1 && preamble:
		sc.reason = "has no FASTA header ('>'); it starts with " + firstLine(path)
	case preamble:
		sc.reason = fmt.Sprintf("has %s and none can be embedded (first: text before the first header, %s)", plural(sc.records, "record"), firstLine(path))
	default:
		sc.reason = fmt.Sprintf("has %s and none can be embedded (first: %s)", plural(sc.records, "record"), firstBad)
	}
	return sc, nil
}

// cutPartialToken drops a "<mask>"-like token cut by the reader's limit.
func cutPartialToken(seq []byte) []byte {
	if i := bytes.LastIndexByte(seq, '<'); i >= 0 && bytes.IndexByte(seq[i:], '>') < 0 {
		return seq[:i]
	}
	return seq
}

// nucleotideLike reports whether at least nucFrac of seq's letters are
// A, C, G, T, U or N (any case).
func nucleotideLike(seq []byte) bool {
	var nuc, letters int
	for _, c := range seq {
		c |= 0x20 // lower case; non-letters are not counted below
		if c < 'a' || c > 'z' {
			continue
		}
		letters++
		switch c {
		case 'a', 'c', 'g', 't', 'u', 'n':
			nuc++
		}
	}
	return letters >= nucMinResidues && float64(nuc) >= nucFrac*float64(letters)
}

// sniffBinary reports what a file that is not text looks like ("a Parquet
// file", "xz-compressed", "a binary file"), or "" for text. It looks at the
// first sniffBytes, decompressed when gzip: known magic numbers, then NUL and
// other control bytes (looksBinary).
func sniffBinary(path string) (string, error) {
	head, err := readHead(path, sniffBytes)
	if err != nil {
		return "", fmt.Errorf("input %s: %w", path, err)
	}
	for _, m := range []struct{ magic, what string }{
		{"PAR1", "a Parquet file"},
		{"\x93NUMPY", "a NumPy .npy file"},
		{"PK\x03\x04", "a zip archive"},
		{"\x89HDF\r\n\x1a\n", "an HDF5 file"},
		{"SQLite format 3\x00", "an SQLite database"},
		{"%PDF-", "a PDF document"},
		{"\x7fELF", "an executable"},
		{"BZh", "bzip2-compressed (only gzip is read: decompress it first)"},
		{"\xfd7zXZ\x00", "xz-compressed (only gzip is read: decompress it first)"},
		{"\x28\xb5\x2f\xfd", "zstd-compressed (only gzip is read: decompress it first)"},
		{"BAM\x01", "a BAM file"},
		{"\x1f\x8b", "gzip-compressed twice (decompress it once first)"}, // head is decompressed already
		{"\xff\xfe", "UTF-16 text (convert it to UTF-8 first, e.g. iconv -f UTF-16 -t UTF-8)"},
		{"\xfe\xff", "UTF-16 text (convert it to UTF-8 first, e.g. iconv -f UTF-16 -t UTF-8)"},
	} {
		if bytes.HasPrefix(head, []byte(m.magic)) {
			return m.what, nil
		}
	}
	if looksBinary(head) {
		return "a binary file (it holds NUL bytes)", nil
	}
	return "", nil
}

// looksBinary: head holds a NUL byte and control bytes (C0 other than tab,
// LF, VT, FF and CR, and DEL) are at least 1% of it. Binary data has them at
// ~12% (uniform bytes) or far more (zero padding, UTF-16 text); a FASTA file
// with a stray control byte in one header (a copy-paste or a broken
// converter) stays text, and its records are judged one by one as the run
// judges them.
func looksBinary(head []byte) bool {
	if bytes.IndexByte(head, 0) < 0 {
		return false
	}
	n := 0
	for _, c := range head {
		if (c < 0x20 && c != '\t' && c != '\n' && c != '\v' && c != '\f' && c != '\r') || c == 0x7f {
			n++
		}
	}
	return n*100 >= len(head)
}

// readHead returns up to n bytes of path's start, decompressing gzip (a
// corrupt gzip start is left for the reader to report).
func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, n)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil
		}
		defer zr.Close()
		r = zr
	}
	head := make([]byte, n)
	k, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && r == io.Reader(br) {
		return nil, err // a read error of the file itself; gzip errors are the reader's to report
	}
	return head[:k], nil
}

// firstLine quotes the first non-blank line of path (at most 60 bytes),
// for a message about a file that is not FASTA.
func firstLine(path string) string {
	head, err := readHead(path, 4<<10)
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(head), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			if len(line) > 60 {
				cut := 60
				for cut > 0 && !utf8.RuneStart(line[cut]) {
					cut--
				}
				line = line[:cut] + "..."
			}
			return fmt.Sprintf("%q", line)
		}
	}
	return "blank lines"
}

// checkEmbedded refuses a finished run that embedded nothing (stdin, a
// named pipe, or a file whose junk the scan did not reach): the output it
// published holds no rows and is removed when the run created it. A
// resumed, already complete or sharded run is not judged (a shard of a
// small input may rightly hold no record).
//
// It also warns of records with an empty id (a header of '>' alone): their
// id is written as "", and the index column (records.tsv for npy) tells
// them apart.
func checkEmbedded(sum *embed.Summary, out string, existed, sharded bool, log *slog.Logger) error {
	if sum != nil && sum.EmptyIDs > 0 {
		log.Warn(fmt.Sprintf("%d records have an empty id (a header line of '>' alone); their id is written as \"\" and the index column tells them apart", sum.EmptyIDs))
	}
	if sum == nil || sum.Complete || sum.Resumed > 0 || sharded || sum.Embedded > 0 {
		return nil
	}
	why := "the input holds no FASTA records"
	if sum.Records > 0 {
		why = fmt.Sprintf("none of the %d records read could be embedded (see the warnings above)", sum.Records)
	}
	kept := ""
	if existed {
		kept = fmt.Sprintf(" (%s was replaced by an empty output)", out)
	} else if err := removeEmpty(out); err != nil {
		kept = fmt.Sprintf(" (an empty output is left at %s: %v)", out, err)
	}
	return fmt.Errorf("no records embedded: %s%s", why, kept)
}

// removeEmpty removes the empty output a run published: a parquet file,
// or an npy directory holding only the files esm2go writes.
func removeEmpty(out string) error {
	fi, err := os.Lstat(out)
	if err != nil {
		return nil
	}
	if !fi.IsDir() {
		return os.Remove(out)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	for _, e := range ents {
		ext := filepath.Ext(e.Name())
		if !e.Type().IsRegular() || (ext != ".npy" && ext != ".tsv" && ext != ".json") {
			return fmt.Errorf("%s holds %s, not written by esm2go", out, e.Name())
		}
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(out, e.Name())); err != nil {
			return err
		}
	}
	return os.Remove(out)
}

// noGPUNote is the one line --device auto gives when it falls back to the
// CPU: an info line when there is no GPU at all (no driver, no device), a
// warning naming the first cause when a GPU is there but cannot be used.
func noGPUNote(perr error, threads int) (msg string, warn bool) {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0) // the CPU backend's default
	}
	cpu := fmt.Sprintf("running on the CPU (%d threads)", threads)
	switch {
	case errors.Is(perr, cudadrv.ErrNoDriver) || errors.Is(perr, cudadrv.ErrNoDevice):
		return "no GPU found; " + cpu, false
	case errors.Is(perr, cudadrv.ErrNoCgo):
		// A pure-Go build is a choice (or a machine without a C compiler),
		// not a fault: an info line, like a machine without a GPU.
		return "no GPU support in this build (CGO_ENABLED=0: CUDA needs the cgo build); " + cpu, false
	case errors.Is(perr, cudadrv.ErrMissingLibrary):
		return "GPU not usable (the CUDA libraries NVRTC and cuBLAS were not found; install the CUDA toolkit or set CUDA_HOME); " + cpu, true
	}
	return fmt.Sprintf("GPU not usable (%s); %s", cutFlag(oneLine(firstCause(perr))), cpu), true
}

// firstCause is the outermost part of a wrapped error's message: the text
// before the first ": " (the rest repeats the inner errors).
func firstCause(err error) string {
	s := err.Error()
	if i := strings.Index(s, ": "); i > 0 {
		return s[:i]
	}
	return s
}

// stdinFile is the regular file standard input reads (a shell's "< file"),
// or nil when it is a pipe, a terminal or unknown: the checks that must
// never replace an input compare outputs with it.
func stdinFile() fs.FileInfo {
	fi, err := os.Stdin.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	return fi
}

// sameAsStdin reports whether path is the regular file in (stdinFile's).
func sameAsStdin(path string, in fs.FileInfo) bool {
	if in == nil {
		return false
	}
	pi, err := os.Stat(path)
	return err == nil && os.SameFile(pi, in)
}

// within reports whether path is dir or lies inside it, by their absolute
// cleaned names (before either exists; links are not followed).
func within(path, dir string) bool {
	p, err1 := filepath.Abs(path)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	return p == d || strings.HasPrefix(p, d+string(filepath.Separator))
}

// plural is "1 record", "2 records".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
