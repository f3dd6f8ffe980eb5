package output

import (
	"bufio"
	"bytes"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestFastSink: bytes given in pieces of every size (smaller than, equal
// to and larger than a buffer, and straight into its room) reach the file
// in order; the count and CRC-32C after each reset cover exactly the bytes
// given since; close ends the goroutine.
func TestFastSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := newFastSink(f, path, 0)
	rng := rand.New(rand.NewPCG(3, 4))
	var all []byte
	for chunk := range 3 {
		var given []byte
		for _, n := range []int{1, 7, sinkBufferSize - 3, sinkBufferSize, 3*sinkBufferSize + 5, 0, 4096} {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			if chunk == 1 {
				// through room and fill
				for rest := b; len(rest) > 0; {
					k := copy(s.room(), rest)
					s.fill(k)
					rest = rest[k:]
				}
			} else if _, err := s.Write(b); err != nil {
				t.Fatal(err)
			}
			given = append(given, b...)
		}
		n, crc, err := s.sum()
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(len(given)) || crc != crc32.Checksum(given, castagnoli) {
			t.Errorf("chunk %d: %d bytes, CRC %08x; want %d, %08x", chunk, n, crc, len(given), crc32.Checksum(given, castagnoli))
		}
		all = append(all, given...)
		if err := s.reset(); err != nil {
			t.Fatal(err)
		}
	}
	s.close()
	if s.made > sinkBuffers {
		t.Errorf("%d buffers made, at most %d", s.made, sinkBuffers)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, all) {
		t.Errorf("the file holds %d bytes that differ from the %d given", len(got), len(all))
	}
}

// TestFastSinkError: a failed write(2) is sticky and named: later writes
// and the flush return it, with the file's path and the cause.
func TestFastSinkError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path) // read-only: every write fails
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := newFastSink(f, path, 0)
	defer s.close()
	b := make([]byte, 2*sinkBufferSize)
	var werr error
	for range 4 {
		if _, werr = s.Write(b); werr != nil {
			break
		}
	}
	ferr := s.flush()
	if ferr == nil {
		t.Fatal("flush after a failed write returned no error")
	}
	if !strings.Contains(ferr.Error(), path) || !strings.Contains(ferr.Error(), "bad file descriptor") {
		t.Errorf("error %q does not name the file and the cause", ferr)
	}
	if werr == nil {
		t.Error("Write kept accepting bytes after a failed write")
	}
	if _, err := s.Write([]byte{1}); err == nil {
		t.Error("Write after a failed write returned no error")
	}
}

// TestDataFileReadFrom: bytes copied into a dataFile through a
// bufio.Writer (which hands its reads to dataFile.ReadFrom once its
// buffer is empty) arrive whole and in order, and the segment counts and
// checksums exactly them.
func TestDataFileReadFrom(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := &dataFile{rel: "data", f: f, sink: newFastSink(f, path, 0)}
	defer d.sink.close()
	want := make([]byte, 3*sinkBufferSize+77)
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	bw := bufio.NewWriterSize(d, 1000)
	if _, err := bw.Write(want[:10]); err != nil { // a partly full buffer first
		t.Fatal(err)
	}
	if _, err := io.Copy(bw, bytes.NewReader(want[10:])); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	seg, err := d.segment()
	if err != nil {
		t.Fatal(err)
	}
	if seg.Bytes != int64(len(want)) || seg.CRC32C != crc32.Checksum(want, castagnoli) {
		t.Errorf("segment %d bytes, CRC %08x; want %d, %08x", seg.Bytes, seg.CRC32C, len(want), crc32.Checksum(want, castagnoli))
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
		t.Errorf("the file holds %d bytes that differ from the %d copied", len(got), len(want))
	}
}

// TestPartsCloseEndsSinks: a run stopped before its commit (Close, as a
// cancelled or failed run does) ends its sinks' goroutines; what it wrote
// after the last commit is not listed, and the parts resume from there.
func TestPartsCloseEndsSinks(t *testing.T) {
	before := runtime.NumGoroutine()
	col := Column{Name: "per_tok_1", Kind: Matrix, Dim: 64}
	s := Schema{Columns: []Column{col}}
	for _, f := range formats {
		out := filepath.Join(t.TempDir(), "out")
		p, err := OpenParts(out, f, s, PartsOptions{Identity: map[string]string{"k": "v"}})
		if err != nil {
			t.Fatal(err)
		}
		const L = 1000 // 256 KB a row: the sinks fill buffers and start
		r := Row{Length: L, Values: [][]float32{make([]float32, L*col.Dim)}}
		for i := range 20 {
			r.ID, r.Index = "r", int64(i)
			if err := p.Write(&r); err != nil {
				t.Fatal(err)
			}
			if i == 9 {
				if err := p.Commit(10, 10); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		p, err = OpenParts(out, f, s, PartsOptions{Identity: map[string]string{"k": "v"}})
		if err != nil {
			t.Fatal(err)
		}
		if p.Next() != 10 || p.Rows() != 10 {
			t.Errorf("%s: resumed at record %d with %d rows, want 10 and 10", f, p.Next(), p.Rows())
		}
		p.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines before, %d after Close", before, n)
	}
}
