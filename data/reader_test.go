package data

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

const sharedData = "/work/shared/data" // optional extra inputs, used only when present

func TestGoldenJunk(t *testing.T) {
	checkGoroutines(t)
	for _, name := range []string{"pnnl_JunkTest.fasta", "fairesm_some_proteins.fasta"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", name)
			recs, err := readAll(t, []string{path}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			for _, r := range recs {
				r.Source = name
				fmt.Fprintln(&b, fmtRecord(r))
			}
			golden := filepath.Join("testdata", strings.TrimSuffix(name, ".fasta")+".golden")
			if *update {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("records of %s differ from %s (run go test -update if the change is meant):\n%s", name, golden, b.Bytes())
			}
		})
	}
}

// inputSet writes the equivalence inputs to dir and returns their paths with
// their contents.
func inputSet(t *testing.T, dir string) ([]string, [][]byte) {
	t.Helper()
	var paths []string
	var datas [][]byte
	add := func(path string) {
		d, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
		datas = append(datas, d)
	}
	add(filepath.Join("testdata", "pnnl_JunkTest.fasta"))
	add(writeFile(t, filepath.Join(dir, "tricky.fasta"), trickyFASTA(25000)))
	add(filepath.Join("testdata", "fairesm_some_proteins.fasta"))
	add(writeFile(t, filepath.Join(dir, "empty.fasta"), nil))
	add(writeFile(t, filepath.Join(dir, "preamble-only.fasta"), []byte("no header here\nAT ALL\r")))
	var syn bytes.Buffer
	if _, err := synthFASTA(&syn, 300<<10, 7); err != nil {
		t.Fatal(err)
	}
	add(writeFile(t, filepath.Join(dir, "synthetic.fasta"), syn.Bytes()))
	return paths, datas
}

func wantAll(paths []string, datas [][]byte) []Record {
	var want []Record
	for i, p := range paths {
		want = append(want, refParse(p, datas[i], int64(len(want)))...)
	}
	return want
}

// TestEquivalence checks that the records are the same whatever Workers and
// BlockBytes are, and equal to the line-by-line reference.
func TestEquivalence(t *testing.T) {
	checkGoroutines(t)
	paths, datas := inputSet(t, t.TempDir())
	for _, name := range []string{"prokka_viruses_sprot.fasta", "fairesm_P62593.fasta"} {
		p := filepath.Join(sharedData, name)
		if d, err := os.ReadFile(p); err == nil {
			paths, datas = append(paths, p), append(datas, d)
		}
	}
	want := wantAll(paths, datas)
	for _, w := range []int{1, 2, 4, 7} {
		for _, bb := range []int{64, 4096, 1 << 20} {
			got, err := readAll(t, paths, Options{Workers: w, BlockBytes: bb, Prefetch: 2})
			if err != nil {
				t.Fatal(err)
			}
			diffRecords(t, fmt.Sprintf("Workers=%d BlockBytes=%d", w, bb), got, want)
		}
	}
	// Every file on its own, so line numbers and problem records restart.
	for i, p := range paths {
		got, err := readAll(t, []string{p}, Options{Workers: 3, BlockBytes: 100})
		if err != nil {
			t.Fatal(err)
		}
		diffRecords(t, p, got, refParse(p, datas[i], 0))
	}
}

func gzipBytes(t testing.TB, data []byte, members int) []byte {
	t.Helper()
	var b bytes.Buffer
	for m := range members {
		part := data[m*len(data)/members : (m+1)*len(data)/members]
		zw := gzip.NewWriter(&b)
		if _, err := zw.Write(part); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func TestGzipEqualsPlain(t *testing.T) {
	checkGoroutines(t)
	dir := t.TempDir()
	paths, datas := inputSet(t, dir)
	var gz []string
	for i := range paths {
		// A name without .gz: detection is by magic bytes. Odd files get
		// several gzip members (as bgzip writes).
		gz = append(gz, writeFile(t, filepath.Join(dir, fmt.Sprintf("z%d.fa", i)), gzipBytes(t, datas[i], 1+i%2*2)))
	}
	want := wantAll(gz, datas)
	for _, bb := range []int{64, 1 << 20} {
		got, err := readAll(t, gz, Options{Workers: 2, BlockBytes: bb})
		if err != nil {
			t.Fatal(err)
		}
		diffRecords(t, fmt.Sprintf("gzip BlockBytes=%d", bb), got, want)
	}
	// Mixed plain and gzip keep the global order.
	mixed := []string{paths[0], gz[1], paths[2], gz[5]}
	mixedData := [][]byte{datas[0], datas[1], datas[2], datas[5]}
	got, err := readAll(t, mixed, Options{Workers: 3, BlockBytes: 512})
	if err != nil {
		t.Fatal(err)
	}
	diffRecords(t, "mixed", got, wantAll(mixed, mixedData))
}

func TestStdin(t *testing.T) {
	checkGoroutines(t)
	data := trickyFASTA(25000)
	want := refParse("-", data, 0)
	for _, in := range [][]byte{data, gzipBytes(t, data, 2)} {
		for _, bb := range []int{16, 1 << 20} {
			got, err := readAll(t, []string{"-"}, Options{Stdin: bytes.NewReader(in), BlockBytes: bb})
			if err != nil {
				t.Fatal(err)
			}
			diffRecords(t, fmt.Sprintf("stdin BlockBytes=%d", bb), got, want)
		}
	}
}

// TestCustomOpenStream reads through Options.Open with readers that have no
// ReadAt (sequential path) and return few bytes per Read.
func TestCustomOpenStream(t *testing.T) {
	checkGoroutines(t)
	paths, datas := inputSet(t, t.TempDir())
	want := wantAll(paths, datas)
	open := func(name string) (io.ReadCloser, error) {
		d, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(&shortReader{r: bytes.NewReader(d), n: 37}), nil
	}
	got, err := readAll(t, paths, Options{Open: open, Workers: 2, BlockBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	diffRecords(t, "custom Open", got, want)
}

type shortReader struct {
	r io.Reader
	n int
}

func (s *shortReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), s.n)]) }

func TestMissingFile(t *testing.T) {
	checkGoroutines(t)
	_, err := Open(context.Background(), []string{"testdata/pnnl_JunkTest.fasta", "testdata/nope.fasta"}, Options{})
	if err == nil || !strings.Contains(err.Error(), "testdata/nope.fasta") {
		t.Fatalf("Open: %v, want an error naming testdata/nope.fasta", err)
	}
	_, err = Open(context.Background(), []string{"testdata"}, Options{})
	if err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("Open(dir): %v", err)
	}
}

func TestOpenFails(t *testing.T) {
	checkGoroutines(t)
	boom := errors.New("permission denied (test)")
	open := func(name string) (io.ReadCloser, error) {
		if name == "bad.fasta" {
			return nil, boom
		}
		return io.NopCloser(strings.NewReader(">a\nACD\n")), nil
	}
	_, err := readAll(t, []string{"ok.fasta", "bad.fasta", "ok2.fasta"}, Options{Open: open})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "bad.fasta") {
		t.Fatalf("got %v, want an error wrapping %v naming bad.fasta", err, boom)
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestReadErrorMidFile(t *testing.T) {
	checkGoroutines(t)
	boom := errors.New("disk on fire (test)")
	var syn bytes.Buffer
	synthFASTA(&syn, 1<<20, 3)
	open := func(name string) (io.ReadCloser, error) {
		return io.NopCloser(&failingReader{data: syn.Bytes()[:700<<10], err: boom}), nil
	}
	for _, w := range []int{1, 4} {
		_, err := readAll(t, []string{"big.fasta"}, Options{Open: open, Workers: w, BlockBytes: 64 << 10})
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "big.fasta") || !strings.Contains(err.Error(), "line") {
			t.Fatalf("got %v, want an error wrapping %v naming big.fasta and a line", err, boom)
		}
	}
}

func TestTruncatedGzip(t *testing.T) {
	checkGoroutines(t)
	var syn bytes.Buffer
	synthFASTA(&syn, 200<<10, 5)
	gz := gzipBytes(t, syn.Bytes(), 1)
	path := writeFile(t, filepath.Join(t.TempDir(), "cut.fasta.gz"), gz[:len(gz)/2])
	_, err := readAll(t, []string{path}, Options{})
	if err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want an unexpected-EOF error naming %s", err, path)
	}
}

// blockingReader blocks in Read until it is closed.
type blockingReader struct {
	once   sync.Once
	closed chan struct{}
}

func newBlockingReader() *blockingReader { return &blockingReader{closed: make(chan struct{})} }

func (b *blockingReader) Read([]byte) (int, error) {
	<-b.closed
	return 0, os.ErrClosed
}

func (b *blockingReader) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

func TestStall(t *testing.T) {
	checkGoroutines(t)
	open := func(name string) (io.ReadCloser, error) {
		if name == "stuck.fasta" {
			return newBlockingReader(), nil
		}
		return io.NopCloser(strings.NewReader(">a\nACD\n")), nil
	}
	start := time.Now()
	_, err := readAll(t, []string{"ok.fasta", "stuck.fasta"}, Options{Open: open, StallTimeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "stuck.fasta") || !strings.Contains(err.Error(), "no progress") {
		t.Fatalf("got %v, want a stall error naming stuck.fasta", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("stall detected after %v", d)
	}
}

func TestCancel(t *testing.T) {
	checkGoroutines(t)
	open := func(string) (io.ReadCloser, error) { return newBlockingReader(), nil }

	// Next's own ctx.
	r, err := Open(context.Background(), []string{"x"}, Options{Open: open, StallTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = r.Next(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next: %v", err)
	}
	r.Close()
	if _, err := r.Next(context.Background()); err == nil {
		t.Fatal("Next after Close: no error")
	}
	r.Close() // idempotent

	// The run's ctx.
	runCtx, stop := context.WithCancel(context.Background())
	r, err = Open(runCtx, []string{"x"}, Options{Open: open, StallTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, stop)
	start := time.Now()
	_, err = r.Next(context.Background())
	if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Fatalf("Next: %v after %v", err, time.Since(start))
	}
	r.Close()
}

// TestCloseUndrained closes a reader whose queue is full, without draining.
func TestCloseUndrained(t *testing.T) {
	checkGoroutines(t)
	var syn bytes.Buffer
	synthFASTA(&syn, 2<<20, 9)
	dir := t.TempDir()
	plain := writeFile(t, filepath.Join(dir, "a.fasta"), syn.Bytes())
	gz := writeFile(t, filepath.Join(dir, "b.fasta.gz"), gzipBytes(t, syn.Bytes(), 1))
	for _, in := range [][]string{{plain, gz}, {gz, plain}} {
		opts := Options{Workers: 2, Prefetch: 2, BlockBytes: 4096}
		r, err := Open(context.Background(), in, opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Next(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if d := r.QueueDepth(); d > opts.Workers*opts.Prefetch {
			t.Errorf("QueueDepth %d > %d", d, opts.Workers*opts.Prefetch)
		}
		r.Close()
	}
}

// TestByteOrderMark: a UTF-8 byte order mark at a file's start is skipped
// (plain files in ranges of any size, gzip, stdin read a byte at a time);
// the first line stays a header and line numbers are unchanged. Elsewhere
// the mark is text: at the start of a later line it makes that line
// sequence text, as any byte but a blank before '>' does.
func TestByteOrderMark(t *testing.T) {
	checkGoroutines(t)
	dir := t.TempDir()
	const bom = "\xef\xbb\xbf"
	data := []byte(bom + ">b1 first\nMKTAYIAKQR\r\n>b2\r\n\r\nMKV\n>b3 last\nMK\n")
	type rec struct {
		id, seq string
		line    int
	}
	want := []rec{{"b1", "MKTAYIAKQR", 1}, {"b2", "MKV", 3}, {"b3", "MK", 6}}
	check := func(what string, got []Record, want []rec) {
		t.Helper()
		var g []rec
		for _, r := range got {
			if r.Problem != "" {
				t.Errorf("%s: record %d at line %d: problem %q", what, r.Index, r.Line, r.Problem)
			}
			g = append(g, rec{r.ID, string(r.Seq), r.Line})
		}
		if fmt.Sprint(g) != fmt.Sprint(want) {
			t.Errorf("%s: records %+v, want %+v", what, g, want)
		}
	}
	plain := writeFile(t, filepath.Join(dir, "bom.fa"), data)
	for _, bb := range []int{1, 2, 3, 4, 16, 1 << 20} {
		got, err := readAll(t, []string{plain}, Options{Workers: 2, BlockBytes: bb})
		if err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("plain BlockBytes=%d", bb), got, want)
		r, err := Open(context.Background(), []string{plain}, Options{BlockBytes: bb})
		if err != nil {
			t.Fatal(err)
		}
		drainBytes(t, r)
		if n := r.InputBytes(); n != int64(len(data)) {
			t.Errorf("plain BlockBytes=%d: InputBytes %d, want %d (the mark's bytes count)", bb, n, len(data))
		}
		r.Close()
	}
	for _, bb := range []int{1, 2, 4, 16} {
		var ids []string
		for k := range 4 {
			got, err := readAll(t, []string{plain}, Options{BlockBytes: bb, Shard: Shard{Index: k, Count: 4}})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range got {
				ids = append(ids, r.ID)
			}
		}
		if fmt.Sprint(ids) != "[b1 b2 b3]" {
			t.Errorf("4 shards, BlockBytes=%d: ids %q, want b1 b2 b3", bb, ids)
		}
	}
	gz := writeFile(t, filepath.Join(dir, "bom.fa.gz"), gzipBytes(t, data, 2))
	got, err := readAll(t, []string{gz}, Options{BlockBytes: 16})
	if err != nil {
		t.Fatal(err)
	}
	check("gzip", got, want)
	got, err = readAll(t, []string{"-"}, Options{Stdin: &shortReader{r: bytes.NewReader(data), n: 1}, BlockBytes: 16})
	if err != nil {
		t.Fatal(err)
	}
	check("stdin, a byte a read", got, want)
	diffRecords(t, "against refParse", got, refParse("-", data, 0))

	only := writeFile(t, filepath.Join(dir, "only.fa"), []byte(bom))
	if got, err := readAll(t, []string{only}, Options{}); err != nil || len(got) != 0 {
		t.Errorf("a file of a byte order mark alone: %d records, %v; want none", len(got), err)
	}

	mid := writeFile(t, filepath.Join(dir, "mid.fa"), []byte(">a\nMK\n"+bom+">b\nMV\n"))
	got, err = readAll(t, []string{mid}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != "a" || string(got[0].Seq) != "MK"+bom+">bMV" {
		t.Errorf("a mark inside the file: %d records, first %q %q; want one, a, its text in the sequence", len(got), got[0].ID, got[0].Seq)
	}
}
