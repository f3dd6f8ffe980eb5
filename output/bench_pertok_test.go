package output

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// perTokRecords is the number of records BenchmarkWritePerTok writes per
// iteration (300 residues × 1280 floats = 1.5 MB each); the issue's
// figure is 2,000 (3 GB), too much for a quick run on a small disk.
var perTokRecords = flag.Int("pertok-records", 200, "records per BenchmarkWritePerTok iteration")

// BenchmarkWritePerTok writes per-token embeddings of the 650M model
// (per_tok_33, D = 1280, L = 300) in both formats and every dtype, and
// the same number of bytes with plain os.File writes, fsync included, so
// the writers' MB/s (float32 payload per second) can be read against the
// disk's. Run with TMPDIR=/dev/shm to see CPU cost alone.
func BenchmarkWritePerTok(b *testing.B) {
	const L, D = 300, 1280
	n := *perTokRecords
	perTok := Column{Name: "per_tok_33", Kind: Matrix, Dim: D}
	b.Run("disk", func(b *testing.B) { benchDisk(b, int64(4*L*D*n)) })
	for _, f := range formats {
		for _, d := range dtypes {
			b.Run(string(f)+"/"+string(d), func(b *testing.B) { benchWriteDType(b, f, d, perTok, n, L) })
		}
	}
}

// benchDisk writes size bytes in 1 MiB writes to a new file and fsyncs it.
func benchDisk(b *testing.B, size int64) {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	path := filepath.Join(b.TempDir(), "raw")
	cpu0 := cpuSeconds()
	for b.Loop() {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		for done := int64(0); done < size; done += int64(len(buf)) {
			if _, err := f.Write(buf[:min(int64(len(buf)), size-done)]); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		os.Remove(path)
	}
	reportCPU(b, cpu0, float64(size))
	b.SetBytes(size)
}

// reportCPU reports payload bytes per CPU-second since cpu0, all of the
// process's goroutines counted.
func reportCPU(b *testing.B, cpu0, payload float64) {
	if cpu := cpuSeconds() - cpu0; cpu > 0 {
		b.ReportMetric(payload*float64(b.N)/cpu/1e6, "MB/cpu-s")
	}
}

// TestParquetConcurrentGroups: many small row groups go through the
// encoders and come back complete and in order; Abort with groups in
// flight stops the encoders and publishes nothing.
func TestParquetConcurrentGroups(t *testing.T) {
	t.Parallel()
	base := dtypeRows()
	rows := make([]Row, 60)
	for i := range rows {
		rows[i] = cloneRow(&base[i%len(base)])
		rows[i].Index = int64(i)
	}
	for _, d := range dtypes {
		path := filepath.Join(t.TempDir(), "emb.parquet")
		writeAllTuned(t, path, Parquet, withDType(testSchema, d), rows, func(w Writer) {
			w.(*parquetWriter).maxGroupRows = 2
		})
		_, got := readOutput(t, path)
		want := make([]Row, len(rows))
		for i := range rows {
			want[i] = cloneRow(&rows[i])
			for c := range want[i].Values {
				for j, x := range want[i].Values[c] {
					want[i].Values[c][j] = quantize(x, d)
				}
			}
		}
		compareRows(t, got, want)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		pf, err := parquet.OpenFile(f, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		if n := len(pf.RowGroups()); n != 30 {
			t.Errorf("%s: %d row groups, want 30", d, n)
		}
		f.Close()
	}

	path := filepath.Join(t.TempDir(), "aborted.parquet")
	w, err := Create(path, Parquet, testSchema)
	if err != nil {
		t.Fatal(err)
	}
	pw := w.(*parquetWriter)
	pw.maxGroupRows = 1
	for i := range 5 {
		if err := w.Write(&rows[i]); err != nil {
			t.Fatal(err)
		}
	}
	if pw.jobs == nil {
		t.Fatal("no group was handed to the encoders")
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if pw.jobs != nil || len(pw.inflight) != 0 {
		t.Error("Abort left encoders or groups in flight")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("Abort published %s: %v", path, err)
	}
}
