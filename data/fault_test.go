package data

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFile looks like a regular file (ReadAt and Stat), so the reader splits
// it into ranges; reads touching failAt fail with err, or block until Close
// when err is nil.
type fakeFile struct {
	data   []byte
	failAt int64
	err    error
	once   sync.Once
	closed chan struct{}
}

func newFakeFile(data []byte, failAt int64, err error) *fakeFile {
	return &fakeFile{data: data, failAt: failAt, err: err, closed: make(chan struct{})}
}

func (f *fakeFile) Read(p []byte) (int, error) { return 0, errors.New("fakeFile: sequential read") }

func (f *fakeFile) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.failAt && off < int64(len(f.data)) {
		if f.err != nil {
			return 0, f.err
		}
		<-f.closed
		return 0, fs.ErrClosed
	}
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *fakeFile) Stat() (fs.FileInfo, error) { return fakeInfo(len(f.data)), nil }

func (f *fakeFile) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

type fakeInfo int64

func (i fakeInfo) Name() string       { return "fake" }
func (i fakeInfo) Size() int64        { return int64(i) }
func (i fakeInfo) Mode() fs.FileMode  { return 0o444 }
func (i fakeInfo) ModTime() time.Time { return time.Time{} }
func (i fakeInfo) IsDir() bool        { return false }
func (i fakeInfo) Sys() any           { return nil }

func TestRangeFaults(t *testing.T) {
	checkGoroutines(t)
	var syn bytes.Buffer
	synthFASTA(&syn, 1<<20, 11)
	data := syn.Bytes()

	// Whole file through the range path of a custom Open.
	open := func(name string) (io.ReadCloser, error) { return newFakeFile(data, 1<<62, nil), nil }
	got, err := readAll(t, []string{"fake.fasta"}, Options{Open: open, BlockBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	diffRecords(t, "fake ranges", got, refParse("fake.fasta", data, 0))

	boom := errors.New("bad sector (test)")
	open = func(name string) (io.ReadCloser, error) { return newFakeFile(data, 600<<10, boom), nil }
	_, err = readAll(t, []string{"fake.fasta"}, Options{Open: open, BlockBytes: 4096})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "fake.fasta") || !strings.Contains(err.Error(), "at byte") {
		t.Fatalf("got %v, want an error wrapping %v naming fake.fasta and an offset", err, boom)
	}

	open = func(name string) (io.ReadCloser, error) { return newFakeFile(data, 600<<10, nil), nil }
	_, err = readAll(t, []string{"fake.fasta"}, Options{Open: open, BlockBytes: 4096, StallTimeout: 150 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "fake.fasta") || !strings.Contains(err.Error(), "no progress") {
		t.Fatalf("got %v, want a stall error naming fake.fasta", err)
	}
}
