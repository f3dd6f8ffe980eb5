package data

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esm2go/esm2go/internal/memcap"
	"github.com/klauspost/compress/gzip"
)

// memLimit is the address-space cap of the hostile-input tests: far below
// what the inputs would take if a record, a line or a header were kept
// whole (200 MB to 1 GiB), with room for the runtime, the queue of blocks
// and the test's own bookkeeping.
const memLimit = 256 << 20

// seg is a part of a synthetic input: pat repeated to n bytes.
type seg struct {
	pat []byte
	n   int64
}

func lit(s string) seg            { return seg{[]byte(s), int64(len(s))} }
func rep(pat string, n int64) seg { return seg{[]byte(pat), n} }
func segsSize(segs []seg) (n int64) {
	for _, s := range segs {
		n += s.n
	}
	return n
}

// synthFile is a large input described by segments and never held in
// memory. It has ReadAt and Stat, so the reader cuts it into byte ranges.
type synthFile struct {
	segs []seg
	size int64
	off  int64 // for Read
}

func newSynthFile(segs ...seg) *synthFile {
	// Patterns repeated to at least 64 KiB (whole periods), so that ReadAt
	// copies in large pieces.
	out := make([]seg, len(segs))
	for i, s := range segs {
		out[i] = seg{bytes.Repeat(s.pat, (64<<10)/len(s.pat)+1), s.n}
	}
	return &synthFile{segs: out, size: segsSize(segs)}
}

func (f *synthFile) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	base := int64(0)
	for _, s := range f.segs {
		if n == len(p) {
			break
		}
		if off+int64(n) >= base+s.n {
			base += s.n
			continue
		}
		at := off + int64(n) - base // offset inside the segment
		for n < len(p) && at < s.n {
			k := copy(p[n:min(int64(len(p)), int64(n)+s.n-at)], s.pat[at%int64(len(s.pat)):])
			n += k
			at += int64(k)
		}
		base += s.n
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *synthFile) Read(p []byte) (int, error) {
	if f.off >= f.size {
		return 0, io.EOF
	}
	n, err := f.ReadAt(p[:min(int64(len(p)), f.size-f.off)], f.off)
	f.off += int64(n)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}

func (f *synthFile) Stat() (fs.FileInfo, error) { return fakeInfo(f.size), nil }
func (f *synthFile) Close() error               { return nil }

// streamOnly hides ReadAt, so the reader reads sequentially.
type streamOnly struct{ io.Reader }

func (streamOnly) Close() error { return nil }

func TestSynthFile(t *testing.T) {
	f := newSynthFile(lit(">a\n"), rep("ACGTX", 23), lit("\n>b"), rep(" ", 7))
	want := ">a\n" + strings.Repeat("ACGTX", 5)[:23] + "\n>b" + strings.Repeat(" ", 7)
	got, err := io.ReadAll(f)
	if err != nil || string(got) != want {
		t.Fatalf("Read: %q, %v; want %q", got, err, want)
	}
	for off := 0; off <= len(want); off++ {
		for n := 0; off+n <= len(want)+2; n++ {
			p := make([]byte, n)
			k, err := f.ReadAt(p, int64(off))
			end := min(off+n, len(want))
			if k != end-off || string(p[:k]) != want[off:end] || (k < n) != errors.Is(err, io.EOF) {
				t.Fatalf("ReadAt(%d, %d) = %d %q %v", n, off, k, p[:k], err)
			}
		}
	}
}

// readPath reads every record of the synthetic input through one path:
// "ranges" (a file with ReadAt, cut into byte ranges) or "stream".
func readPath(t *testing.T, path string, segs []seg, opts Options) []Record {
	t.Helper()
	opts.Open = func(string) (io.ReadCloser, error) {
		f := newSynthFile(segs...)
		if path == "stream" {
			return streamOnly{f}, nil
		}
		return f, nil
	}
	recs, err := readAll(t, []string{"big.fasta"}, opts)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return recs
}

// checkRecs compares records with what they must be, Seq by length and
// prefix only (the inputs are too large to spell out).
func checkRecs(t *testing.T, what string, got []Record, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d: %v", what, len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Line != w.Line || g.ID != w.ID || len(g.Header) != len(w.Header) || !strings.HasPrefix(g.Header, w.Header[:min(len(w.Header), 16)]) ||
			!bytes.Equal(g.Seq, w.Seq) || g.Total != w.Total || g.HeaderCut != w.HeaderCut || g.Problem != w.Problem {
			t.Fatalf("%s: record %d:\n got line=%d id=%.20q header=%.20q(%d) seq=%.20q(%d) total=%d headercut=%d problem=%q\nwant line=%d id=%.20q header=%.20q(%d) seq=%.20q(%d) total=%d headercut=%d problem=%q",
				what, i, g.Line, g.ID, g.Header, len(g.Header), g.Seq, len(g.Seq), g.Total, g.HeaderCut, g.Problem,
				w.Line, w.ID, w.Header, len(w.Header), w.Seq, len(w.Seq), w.Total, w.HeaderCut, w.Problem)
		}
	}
}

// TestHugeLines reads inputs whose one line, header or preamble is far
// larger than the memory cap, through byte ranges (4 workers) and as a
// stream: each record is kept cut, with the right counts, and the records
// after it are intact.
func TestHugeLines(t *testing.T) {
	t.Parallel()
	memcap.Run(t, memLimit, func(t *testing.T) {
		checkGoroutines(t)
		const big = 200 << 20
		const maxRes = 1022
		opts := Options{MaxResidues: maxRes, Workers: 4}
		cases := []struct {
			name  string
			paths []string
			segs  []seg
			want  []Record
		}{{
			name:  "200MB sequence line",
			paths: []string{"ranges", "stream"},
			segs:  []seg{lit(">long one\n"), rep("ACDEFGHIKLMNPQRSTVWY", big), lit("\n>next\nMKV\n")},
			want: []Record{
				{Line: 1, ID: "long", Header: "long one", Seq: bytes.Repeat([]byte("ACDEFGHIKLMNPQRSTVWY"), 52)[:maxRes], Total: big},
				{Line: 3, ID: "next", Header: "next", Seq: []byte("MKV"), Total: 3},
			},
		}, {
			name:  "200MB header line",
			paths: []string{"ranges", "stream"},
			segs:  []seg{lit(">"), rep("h", big), lit("\nMKV\n>next\nAC\n")},
			want: []Record{
				{Line: 1, ID: strings.Repeat("h", MaxHeaderBytes), Header: strings.Repeat("h", MaxHeaderBytes), HeaderCut: big - MaxHeaderBytes, Seq: []byte("MKV"), Total: 3},
				{Line: 3, ID: "next", Header: "next", Seq: []byte("AC"), Total: 2},
			},
		}, {
			name:  "64MB sequence in 60-column CRLF lines",
			paths: []string{"ranges", "stream"},
			segs:  []seg{lit(">wrapped\r\n"), rep(strings.Repeat("A", 60)+"\r\n", 64<<20/62*62), lit(">next\r\nMKV\r\n")},
			want: []Record{
				{Line: 1, ID: "wrapped", Header: "wrapped", Seq: bytes.Repeat([]byte("A"), maxRes), Total: 64 << 20 / 62 * 60},
				{Line: 2 + 64<<20/62, ID: "next", Header: "next", Seq: []byte("MKV"), Total: 3},
			},
		}, {
			name:  "200MB before the first header",
			paths: []string{"ranges"},
			segs:  []seg{lit("\n\n"), rep("stray text\n", big/11*11), lit(">first\nMKV\n")},
			want: []Record{
				{Line: 3, Seq: bytes.Repeat([]byte("straytext"), 114)[:MaxPreambleBytes], Total: big / 11 * 9, Problem: ProblemBeforeHeader},
				{Line: 3 + big/11, ID: "first", Header: "first", Seq: []byte("MKV"), Total: 3},
			},
		}, {
			// A header line whose line start lies in one byte range and its
			// '>' 200 MB of blanks later: the range of the line start owns
			// it, and the blanks are skipped, not stored.
			name:  "200MB of blanks before a '>'",
			paths: []string{"ranges"},
			segs:  []seg{lit(">a\nMKV\n"), rep(" \t", big), lit(">b x\nAC\n"), rep(" ", 1<<20), lit("\nGG\n")},
			want: []Record{
				{Line: 1, ID: "a", Header: "a", Seq: []byte("MKV"), Total: 3},
				{Line: 3, ID: "b", Header: "b x", Seq: []byte("ACGG"), Total: 4},
			},
		}}
		for _, c := range cases {
			for _, path := range c.paths {
				checkRecs(t, c.name+" via "+path, readPath(t, path, c.segs, opts), c.want)
			}
		}
	})
}

// TestGzipBomb reads a gzip file of ~1 MB that expands to over 1 GiB of one
// record. It is built from one compressed member of 1 MiB of residues,
// written 1100 times (concatenated members are one stream).
func TestGzipBomb(t *testing.T) {
	t.Parallel()
	memcap.Run(t, memLimit, func(t *testing.T) {
		checkGoroutines(t)
		const members = 1100
		path := filepath.Join(t.TempDir(), "bomb.fa.gz")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		member := func(data []byte) []byte {
			var b bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
			zw.Write(data)
			if err := zw.Close(); err != nil {
				t.Fatal(err)
			}
			return b.Bytes()
		}
		residues := bytes.Repeat([]byte("MKVLAAGIVG"), 1<<20/10+1)[:1<<20]
		if _, err := f.Write(member([]byte(">bomb one record\n"))); err != nil {
			t.Fatal(err)
		}
		body := member(residues)
		for range members {
			if _, err := f.Write(body); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.Write(member([]byte("\n>after\nAC\n"))); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 8<<20 {
			t.Fatalf("bomb file of %d bytes, want a few MB", fi.Size())
		}
		got, err := readAll(t, []string{path}, Options{MaxResidues: 1022})
		if err != nil {
			t.Fatal(err)
		}
		checkRecs(t, "bomb", got, []Record{
			{Line: 1, ID: "bomb", Header: "bomb one record", Seq: residues[:1022], Total: members << 20},
			{Line: 3, ID: "after", Header: "after", Seq: []byte("AC"), Total: 2},
		})
	})
}

// endless yields ">endless\n" then residues forever; after limit bytes it
// calls stop (once) and goes on.
type endless struct {
	n     atomic.Int64
	limit int64
	stop  func()
	head  bool
}

var endlessLine = bytes.Repeat([]byte("ACDEFGHIKLMNPQRSTVWY"), 4096)

func (e *endless) Read(p []byte) (int, error) {
	var n int
	if !e.head {
		e.head = true
		n = copy(p, ">endless\n")
	} else {
		n = copy(p, endlessLine)
	}
	if e.n.Add(int64(n)) >= e.limit && e.stop != nil {
		e.stop()
		e.stop = nil
	}
	return n, nil
}

func (e *endless) Close() error { return nil }

// countingFile counts what is read from an os.File and calls stop once
// limit bytes were read.
type countingFile struct {
	*os.File
	n     int64
	limit int64
	stop  func()
}

func (c *countingFile) Read(p []byte) (int, error) {
	n, err := c.File.Read(p)
	c.n += int64(n)
	if c.n >= c.limit && c.stop != nil {
		c.stop()
		c.stop = nil
	}
	return n, err
}

// TestEndless reads inputs that never end, one record long: a reader through
// Options.Open, and /dev/zero (NUL bytes: text before any header). The run
// is cancelled once 512 MiB were read; Next must then return the cancellation,
// memory staying under the cap all along.
func TestEndless(t *testing.T) {
	t.Parallel()
	memcap.Run(t, memLimit, func(t *testing.T) {
		checkGoroutines(t)
		const limit = 512 << 20 // twice the cap
		run := func(name string, open func(stop func()) (io.ReadCloser, error), read func() int64) {
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			opts := Options{MaxResidues: 1022, Open: func(string) (io.ReadCloser, error) { return open(stop) }}
			recs, err := readAllCtx(ctx, t, []string{name}, opts)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s: got %d records, %v; want the cancellation", name, len(recs), err)
			}
			if n := read(); n < limit {
				t.Fatalf("%s: cancelled after %d bytes, want >= %d", name, n, limit)
			}
		}
		e := &endless{limit: limit}
		run("endless", func(stop func()) (io.ReadCloser, error) {
			e.stop = stop
			return e, nil
		}, e.n.Load)
		if _, err := os.Stat("/dev/zero"); err != nil {
			t.Logf("no /dev/zero: %v", err)
			return
		}
		var c *countingFile
		run("/dev/zero", func(stop func()) (io.ReadCloser, error) {
			f, err := os.Open("/dev/zero")
			c = &countingFile{File: f, limit: limit, stop: stop}
			return c, err
		}, func() int64 { return c.n })

		// The default Open on the real path: cancelled by a deadline.
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := readAllCtx(ctx, t, []string{"/dev/zero"}, Options{MaxResidues: 1022})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("/dev/zero by path: %v, want the deadline", err)
		}
	})
}

// TestManyEmptyRecords reads 4 million records of two bytes (">\n") with
// the default options and a consumer that lets the queue fill first. A
// Record costs ~120 bytes, so blocks cut by input bytes alone would hold
// 60 MB each (480 MB for the file); blocks are cut by record count too.
func TestManyEmptyRecords(t *testing.T) {
	t.Parallel()
	memcap.Run(t, memLimit, func(t *testing.T) {
		checkGoroutines(t)
		const n = 4_000_000
		for _, path := range []string{"ranges"} { // the stream path cuts its blocks the same way (TestBlockRecords)
			opts := Options{MaxResidues: 1022, Open: func(string) (io.ReadCloser, error) {
				f := newSynthFile(rep(">\n", 2*n))
				if path == "stream" {
					return streamOnly{f}, nil
				}
				return f, nil
			}}
			r, err := Open(context.Background(), []string{"empty.fasta"}, opts)
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for r.QueueDepth() < 4 {
				if time.Now().After(deadline) {
					t.Fatalf("%s: queue depth %d after 30 s", path, r.QueueDepth())
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // let the workers fill what they hold
			count := 0
			var last Record
			for {
				b, err := r.Next(context.Background())
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(b.Records) > blockRecords(defaultBlockBytes) {
					t.Fatalf("%s: block of %d records, want at most %d", path, len(b.Records), blockRecords(defaultBlockBytes))
				}
				count += len(b.Records)
				last = b.Records[len(b.Records)-1]
			}
			r.Close()
			if count != n || last.Line != n || last.Index != n-1 || last.Total != 0 {
				t.Fatalf("%s: %d records, last %s; want %d, the last at line %d", path, count, fmtRecord(last), n, n)
			}
		}
	})
}

// readAllCtx is readAll with a context for the run and for Next.
func readAllCtx(ctx context.Context, t testing.TB, inputs []string, opts Options) ([]Record, error) {
	t.Helper()
	r, err := Open(ctx, inputs, opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var recs []Record
	for {
		b, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return recs, err
		}
		for _, rec := range b.Records {
			rec.Seq = bytes.Clone(rec.Seq)
			recs = append(recs, rec)
		}
	}
}

// TestCaps compares the reader with the reference, both applying small
// caps, on random inputs and on the tricky file, through every path and
// with blocks small enough to cut anywhere.
func TestCaps(t *testing.T) {
	checkGoroutines(t)
	rng := rand.New(rand.NewPCG(3, 4))
	toks := []string{">", "\n", "\r", " ", "A", "CDE", "\t", "\r\n", ">x y\n", "> long header text\n", "\x00", "\xff", "\xc3\xa9", "\v"}
	dir := t.TempDir()
	inputs := [][]byte{trickyFASTA(300)}
	for range 150 {
		var b bytes.Buffer
		for range rng.IntN(300) {
			b.WriteString(toks[rng.IntN(len(toks))])
		}
		inputs = append(inputs, b.Bytes())
	}
	for it, data := range inputs {
		path := writeFile(t, filepath.Join(dir, fmt.Sprintf("c%d.fasta", it)), data)
		o := Options{MaxResidues: 1 + rng.IntN(12), BlockBytes: 1 + rng.IntN(80), maxHeader: 1 + rng.IntN(10), maxPreamble: 1 + rng.IntN(6)}
		if it == 0 {
			o.MaxResidues = 1022 // the tricky file's long record: cut, the others whole
		}
		want := refParseOpts(path, data, 0, o)
		for _, w := range []int{1, 3} {
			o.Workers = w
			got, err := readAll(t, []string{path}, o)
			if err != nil {
				t.Fatal(err)
			}
			diffRecords(t, fmt.Sprintf("%s input %q", fmtCaps(o), data), got, want)
		}
		// Reads of a few bytes put chunk boundaries everywhere.
		short := 1 + rng.IntN(7)
		o.Stdin = &shortReader{r: bytes.NewReader(data), n: short}
		got, err := readAll(t, []string{"-"}, o)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			want[i].Source = "-"
		}
		diffRecords(t, fmt.Sprintf("stdin (reads of %d bytes) %s input %q", short, fmtCaps(o), data), got, want)
	}
}

// TestBlockRecords checks that blocks of small records are cut by count
// (ranges give several blocks) and that nothing else changes.
func TestBlockRecords(t *testing.T) {
	checkGoroutines(t)
	var b bytes.Buffer
	for i := range 20000 {
		fmt.Fprintf(&b, ">p%d\nMK\n", i)
	}
	data := b.Bytes()
	path := writeFile(t, filepath.Join(t.TempDir(), "peptides.fasta"), data)
	want := refParse(path, data, 0)
	for _, w := range []int{1, 3, 0} {
		opts := Options{Workers: w, BlockBytes: 64 << 10}
		in := path
		if w == 0 { // the stream path
			opts.Stdin, in = bytes.NewReader(data), "-"
		}
		r, err := Open(context.Background(), []string{in}, opts)
		if err != nil {
			t.Fatal(err)
		}
		var got []Record
		blocks := 0
		for {
			blk, err := r.Next(context.Background())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(blk.Records) > blockRecords(opts.BlockBytes) {
				t.Fatalf("block of %d records, want at most %d", len(blk.Records), blockRecords(opts.BlockBytes))
			}
			blocks++
			got = append(got, blk.Records...)
		}
		r.Close()
		for i := range want {
			want[i].Source = in
		}
		diffRecords(t, fmt.Sprintf("Workers=%d input %s", w, in), got, want)
		if minBlocks := len(want) / blockRecords(opts.BlockBytes); blocks < minBlocks {
			t.Fatalf("%d blocks, want at least %d", blocks, minBlocks)
		}
	}
}

func fmtCaps(o Options) string {
	return fmt.Sprintf("Workers=%d BlockBytes=%d MaxResidues=%d maxHeader=%d maxPreamble=%d", o.Workers, o.BlockBytes, o.MaxResidues, o.maxHeader, o.maxPreamble)
}
