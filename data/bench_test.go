package data

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkReader reads a synthetic ~100 MB FASTA file (lognormal lengths,
// median 300, 60-column lines), its gzip copy, and prokka's viral Swiss-Prot
// subset when /work/shared/data holds it, reporting residues/s.
func BenchmarkReader(b *testing.B) {
	dir := b.TempDir()
	plain := filepath.Join(dir, "synthetic.fasta")
	f, err := os.Create(plain)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := synthFASTA(w, 100<<20, 42); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	for _, workers := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("synthetic100MB/workers=%d", workers), func(b *testing.B) {
			benchRead(b, []string{plain}, Options{Workers: workers})
		})
	}
	b.Run("synthetic100MB/gzip", func(b *testing.B) {
		data, err := os.ReadFile(plain)
		if err != nil {
			b.Fatal(err)
		}
		gz := writeFile(b, filepath.Join(dir, "synthetic.fasta.gz"), gzipBytes(b, data, 1))
		b.ResetTimer()
		benchRead(b, []string{gz}, Options{})
	})
	b.Run("prokka_viruses_sprot", func(b *testing.B) {
		data, err := os.ReadFile(filepath.Join(sharedData, "prokka_viruses_sprot.fasta"))
		if err != nil {
			b.Skipf("no real file: %v", err)
		}
		path := writeFile(b, filepath.Join(dir, "prokka.fasta"), data)
		b.ResetTimer()
		benchRead(b, []string{path}, Options{})
	})
}

func benchRead(b *testing.B, inputs []string, opts Options) {
	var residues, bytesRead int64
	for _, in := range inputs {
		fi, err := os.Stat(in)
		if err != nil {
			b.Fatal(err)
		}
		bytesRead += fi.Size()
	}
	b.SetBytes(bytesRead)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		r, err := Open(context.Background(), inputs, opts)
		if err != nil {
			b.Fatal(err)
		}
		for {
			blk, err := r.Next(context.Background())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			for i := range blk.Records {
				residues += int64(len(blk.Records[i].Seq))
			}
		}
		r.Close()
		n++
	}
	b.ReportMetric(float64(residues)/b.Elapsed().Seconds(), "residues/s")
}
