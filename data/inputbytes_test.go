package data

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// drainBytes reads r to the end and returns the records seen.
func drainBytes(t *testing.T, r *Reader) int {
	t.Helper()
	n := 0
	for {
		blk, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		n += len(blk.Records)
	}
}

// InputSize is known up front for files (a gzip file's compressed size, a
// shard's part) and InputBytes reaches it when the input is read; stdin
// has no size but its bytes are counted.
func TestInputBytes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var plain bytes.Buffer
	for i := range 3000 {
		plain.WriteString(">r" + strings.Repeat("x", i%7) + "\n" + strings.Repeat("ACDEFGHIK", 1+i%30) + "\n")
	}
	pf := filepath.Join(dir, "a.fasta")
	if err := os.WriteFile(pf, plain.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain.Bytes())
	zw.Close()
	gf := filepath.Join(dir, "b.fasta.gz")
	if err := os.WriteFile(gf, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	want := int64(plain.Len() + gz.Len())
	// Small blocks, so that the input spans many of them.
	r, err := Open(context.Background(), []string{pf, gf}, Options{BlockBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	size, ok := r.InputSize()
	if !ok || size != want {
		t.Errorf("InputSize %d, %v; want %d, true", size, ok, want)
	}
	if got := r.InputBytes(); got != 0 {
		t.Errorf("InputBytes %d before the first block", got)
	}
	if n := drainBytes(t, r); n != 6000 {
		t.Errorf("%d records, want 6000", n)
	}
	if got := r.InputBytes(); got != want {
		t.Errorf("InputBytes %d after the end, want %d", got, want)
	}

	// Shards: each knows its part, and the parts add up to the whole.
	var sum int64
	for k := range 3 {
		r, err := Open(context.Background(), []string{pf, gf}, Options{BlockBytes: 4 << 10, Shard: Shard{Index: k, Count: 3}})
		if err != nil {
			t.Fatal(err)
		}
		size, ok := r.InputSize()
		drainBytes(t, r)
		if got := r.InputBytes(); !ok || got != size {
			t.Errorf("shard %d: InputBytes %d, InputSize %d, %v", k, got, size, ok)
		}
		sum += size
		r.Close()
	}
	if sum != want {
		t.Errorf("shards hold %d bytes in all, want %d", sum, want)
	}

	// Standard input: no size, bytes still counted.
	r, err = Open(context.Background(), []string{"-"}, Options{Stdin: bytes.NewReader(plain.Bytes()), BlockBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, ok := r.InputSize(); ok {
		t.Error("stdin has a size")
	}
	drainBytes(t, r)
	if got := r.InputBytes(); got != int64(plain.Len()) {
		t.Errorf("stdin: InputBytes %d, want %d", got, plain.Len())
	}
}
