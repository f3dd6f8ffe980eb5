package output

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// checkRows reads the output at out and compares it with rows[:n].
func checkRows(t *testing.T, out string, f Format, rows []Row, n int) {
	t.Helper()
	got := readAll(t, out, f)
	if len(got) != n {
		t.Fatalf("%d rows, want %d", len(got), n)
	}
	for i := range got {
		if !rowsEqual(&got[i], &rows[i]) {
			t.Fatalf("row %d: %+v, want %+v", i, got[i], rows[i])
		}
	}
}

// TestPartsUseAfterClose: a Parts used after Finish or Close answers with
// an error, not a panic (its shared files are closed).
func TestPartsUseAfterClose(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			rows := indexed(4)
			p, err := OpenParts(filepath.Join(dir, "a"), f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			writeParts(t, p, rows, 0, 2, 100)
			if err := p.Finish(2, nil); err != nil {
				t.Fatal(err)
			}
			if err := p.Write(&rows[2]); err == nil {
				t.Error("Write after Finish succeeded")
			}
			if err := p.Commit(3, 3); err == nil {
				t.Error("Commit after Finish succeeded")
			}
			if err := p.Finish(3, nil); err == nil {
				t.Error("a second Finish succeeded")
			}

			p, err = OpenParts(filepath.Join(dir, "b"), f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			writeParts(t, p, rows, 0, 2, 2)
			p.Close()
			if err := p.Write(&rows[2]); err == nil {
				t.Error("Write after Close succeeded")
			}
			if err := p.Commit(3, 3); err == nil {
				t.Error("Commit after Close succeeded")
			}
			if err := p.Finish(3, nil); err == nil {
				t.Error("Finish after Close succeeded")
			}
			// What was committed before Close is still there to resume.
			p, err = OpenParts(filepath.Join(dir, "b"), f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.Next() != 2 {
				t.Fatalf("resume at %d, want 2", p.Next())
			}
		})
	}
}

// TestPartsUnreadableKept: a shared file that cannot be read when a run
// resumes (here a directory in its place; in life EIO, EACCES for another
// user, too many open files) is no proof of damage: the run is refused
// and the manifest left as it is, so that once the file is back the next
// run resumes after every committed chunk.
func TestPartsUnreadableKept(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "emb")
			rows := indexed(6)
			p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			writeParts(t, p, rows, 0, 6, 3)
			seg := p.man.Chunks[0].Data[0]
			p.Close()
			path := filepath.Join(out+PartsSuffix, seg.File)
			away := filepath.Join(filepath.Dir(out), "away")
			if err := os.Rename(path, away); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
			if p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity}); err == nil {
				p.Close()
				t.Fatal("resumed with an unreadable shared file")
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(away, path); err != nil {
				t.Fatal(err)
			}
			p, err = OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			if p.Next() != 6 {
				p.Close()
				t.Fatalf("resume at %d once the file is back, want 6", p.Next())
			}
			if err := p.Finish(6, nil); err != nil {
				t.Fatal(err)
			}
			checkRows(t, out, f, rows, 6)
		})
	}
}

// TestPartsFinishTwice: a run killed after Finish completed the output in
// the parts directory (parquet: the footer appended; npy: headers, offsets,
// records.tsv, metadata.json written) but before it was published is
// resumed from its manifest; the footer and the joined files are cut off
// or removed, more chunks may follow, and the second Finish makes a
// correct output.
func TestPartsFinishTwice(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "emb")
			rows := indexed(9)
			p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			writeParts(t, p, rows, 0, 5, 3)
			if err := p.Commit(5, 5); err != nil {
				t.Fatal(err)
			}
			// Finish up to the publish, then a kill.
			finish := p.finishParquet
			if f == NPY {
				finish = p.finishNPY
			}
			if err := finish(map[string]string{"k": "v"}); err != nil {
				t.Fatal(err)
			}
			p.Close()

			p, err = OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			if p.Next() != 5 {
				t.Fatalf("resume at %d, want 5", p.Next())
			}
			writeParts(t, p, rows, 5, 9, 100)
			if err := p.Finish(9, nil); err != nil {
				t.Fatal(err)
			}
			checkRows(t, out, f, rows, 9)

			// Killed after the footer once more, with nothing left to write.
			out2 := filepath.Join(t.TempDir(), "emb")
			p, err = OpenParts(out2, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			writeParts(t, p, rows, 0, 4, 4)
			finish = p.finishParquet
			if f == NPY {
				finish = p.finishNPY
			}
			if err := finish(nil); err != nil {
				t.Fatal(err)
			}
			p.Close()
			p, err = OpenParts(out2, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Finish(4, nil); err != nil {
				t.Fatal(err)
			}
			checkRows(t, out2, f, rows, 4)
		})
	}
}

// TestPartsNPYHeaderRoom: an npy run resumed with no committed bytes in its
// arrays (no chunk, or only chunks of skipped records) gets its header
// room back whatever the killed run left in the files.
func TestPartsNPYHeaderRoom(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "emb")
	rows := indexed(5)
	p, err := OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	writeParts(t, p, rows, 0, 3, 100) // uncommitted
	crash(p)
	// A file cut inside its header room, another longer than it.
	col0 := filepath.Join(out+PartsSuffix, dataNPY, testSchema.Columns[0].Name+".npy")
	if err := os.Truncate(col0, 50); err != nil {
		t.Fatal(err)
	}
	p, err = OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	if p.Next() != 0 {
		t.Fatalf("resume at %d", p.Next())
	}
	if err := p.Commit(2, 2); err != nil { // records 0, 1 skipped: a chunk of no rows
		t.Fatal(err)
	}
	p.Close()
	p, err = OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	if p.Next() != 2 {
		t.Fatalf("resume at %d, want 2", p.Next())
	}
	for _, d := range p.data {
		if info, err := d.f.Stat(); err != nil || info.Size() != npyHeaderLen {
			t.Fatalf("%s: %v bytes (%v), want the header room", d.rel, info.Size(), err)
		}
	}
	writeParts(t, p, rows, 2, 5, 100)
	if err := p.Finish(5, nil); err != nil {
		t.Fatal(err)
	}
	checkRows(t, out, NPY, rows[2:], 3)
}

// TestPartsParquetFooter checks the completed footer against what parquet
// readers rely on: row groups numbered 0, 1, ... in file order, each row
// group's file_offset at its first page, column chunks inside the file
// before the page index, the page index (column indexes, then offset
// indexes) between the last chunk and the footer, and the key-value
// metadata: the layout key once, then the run's keys in order, each once.
func TestPartsParquetFooter(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "emb.parquet")
	rows := indexed(14)
	p, err := OpenParts(out, Parquet, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		if err := p.Write(&rows[i]); err != nil {
			t.Fatal(err)
		}
		if w, ok := p.cur.(*parquetWriter); ok {
			w.maxGroupRows = 2 // several row groups a chunk
		}
		if (i+1)%5 == 0 {
			if err := p.Commit(int64(i+1), int64(i+1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	p.Commit(14, 14)
	p.Close()
	p, err = OpenParts(out, Parquet, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Finish(14, map[string]string{"b": "2", "a": "1"}); err != nil {
		t.Fatal(err)
	}
	checkRows(t, out, Parquet, rows, 14)
	fh, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	info, _ := fh.Stat()
	pf, err := parquet.OpenFile(fh, info.Size())
	if err != nil {
		t.Fatal(err)
	}
	md := pf.Metadata()
	if len(md.RowGroups) < 6 {
		t.Fatalf("%d row groups; want several a chunk", len(md.RowGroups))
	}
	footerLen := int64(len(mustFooter(t, fh, info.Size())))
	footerAt := info.Size() - 8 - footerLen
	var lastChunkEnd, firstCI, lastCIEnd, firstOI, lastOIEnd int64 = 0, -1, 0, -1, 0
	for g, rg := range md.RowGroups {
		if int(rg.Ordinal) != g {
			t.Errorf("row group %d has ordinal %d", g, rg.Ordinal)
		}
		first := int64(-1)
		for k, cc := range rg.Columns {
			m := cc.MetaData
			start := m.DataPageOffset
			if m.DictionaryPageOffset != 0 && m.DictionaryPageOffset < start {
				start = m.DictionaryPageOffset
			}
			if k == 0 {
				first = start
			}
			if start < lastChunkEnd {
				t.Errorf("row group %d column %d starts at %d, before the previous column chunk ends (%d)", g, k, start, lastChunkEnd)
			}
			lastChunkEnd = start + m.TotalCompressedSize
			if cc.ColumnIndexLength > 0 {
				if firstCI < 0 {
					firstCI = cc.ColumnIndexOffset
				}
				if cc.ColumnIndexOffset != max(lastCIEnd, firstCI) {
					t.Errorf("row group %d column %d: column index at %d, want %d (contiguous)", g, k, cc.ColumnIndexOffset, lastCIEnd)
				}
				lastCIEnd = cc.ColumnIndexOffset + int64(cc.ColumnIndexLength)
			}
			if cc.OffsetIndexLength > 0 {
				if firstOI < 0 {
					firstOI = cc.OffsetIndexOffset
				}
				if cc.OffsetIndexOffset != max(lastOIEnd, firstOI) {
					t.Errorf("row group %d column %d: offset index at %d, want %d (contiguous)", g, k, cc.OffsetIndexOffset, lastOIEnd)
				}
				lastOIEnd = cc.OffsetIndexOffset + int64(cc.OffsetIndexLength)
			}
		}
		if rg.FileOffset != first {
			t.Errorf("row group %d: file_offset %d, its first page is at %d", g, rg.FileOffset, first)
		}
	}
	if firstOI < 0 || !(lastChunkEnd <= firstCI || firstCI < 0) || (firstCI >= 0 && lastCIEnd != firstOI) || lastOIEnd != footerAt {
		t.Errorf("layout: chunks end at %d, column indexes [%d, %d), offset indexes [%d, %d), footer at %d", lastChunkEnd, firstCI, lastCIEnd, firstOI, lastOIEnd, footerAt)
	}
	raw, _, _, err := chunkFooter(fh, 0, info.Size())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range raw.KeyValueMetadata {
		keys = append(keys, kv.Key)
	}
	want := []string{metaKey, "a", "b", IdentityKey, RunIDKey}
	sort.Strings(want[1:])
	if !slices.Equal(keys, want) {
		t.Errorf("key-value metadata keys %q, want %q", keys, want)
	}
}

// mustFooter returns the footer bytes of the parquet file f of size n.
func mustFooter(t *testing.T, f *os.File, n int64) []byte {
	t.Helper()
	md, _, _, err := chunkFooter(f, 0, n)
	if err != nil || md == nil {
		t.Fatalf("footer: %v", err)
	}
	var tail [8]byte
	if _, err := f.ReadAt(tail[:], n-8); err != nil {
		t.Fatal(err)
	}
	l := int64(tail[0]) | int64(tail[1])<<8 | int64(tail[2])<<16 | int64(tail[3])<<24
	b := make([]byte, l)
	if _, err := f.ReadAt(b, n-8-l); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPartsV1FullDiskChild opens the parts at ESM2GO_PARTS_OUT (format
// ESM2GO_PARTS_FORMAT) under a file-size limit of 3000 bytes: a file that
// would grow past it fails to (EFBIG; Go ignores SIGXFSZ), as on a full
// disk. It prints where the run would resume, or the error.
func TestPartsV1FullDiskChild(t *testing.T) {
	out, f := os.Getenv("ESM2GO_PARTS_OUT"), Format(os.Getenv("ESM2GO_PARTS_FORMAT"))
	if out == "" {
		t.Skip("only runs as the child of TestPartsV1FullDisk")
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 3000, Max: 3000}); err != nil {
		t.Fatal(err)
	}
	p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		fmt.Println("refused:", err)
		return
	}
	fmt.Println("resumed at", p.Next())
	p.Close()
}

// TestPartsV1FullDisk: converting version-1 parts on a disk too full to
// hold the converted chunks (the disk that stopped the earlier run, say)
// fails without losing a committed chunk: a later run with room resumes
// after all of them. (testdata/parts-v1: the shared file or array would
// grow past 3000 bytes with the second chunk, not with the first.)
func TestPartsV1FullDisk(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("RLIMIT_FSIZE as a full disk: linux")
	}
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "emb")
			if err := os.CopyFS(out+PartsSuffix, os.DirFS(filepath.Join("testdata", "parts-v1", "emb-"+string(f)+".parts"))); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestPartsV1FullDiskChild$", "-test.v")
			cmd.Env = append(os.Environ(), "ESM2GO_PARTS_OUT="+out, "ESM2GO_PARTS_FORMAT="+string(f))
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, b)
			}
			if !strings.Contains(string(b), "refused:") || !strings.Contains(string(b), "file too large") {
				t.Errorf("the conversion on a full disk did not fail with the cause:\n%s", b)
			}
			p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			if p.Next() != 6 {
				p.Close()
				t.Fatalf("resume at %d with room again, want 6", p.Next())
			}
			rows := indexed(8)
			writeParts(t, p, rows, 6, 8, 100)
			if err := p.Finish(8, nil); err != nil {
				t.Fatal(err)
			}
			checkRows(t, out, f, rows, 8)
		})
	}
}

// TestPartsCommitCoversRows: a commit must cover every row written (a
// chunk listed as ending before a row it holds would have that row
// written again by the resumed run: a duplicate), and rows come in
// input order (a row written twice, or out of order, is refused).
func TestPartsCommitCoversRows(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "emb")
			rows := indexed(5)
			p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			writeParts(t, p, rows, 0, 3, 100)
			if err := p.Write(&rows[1]); err == nil {
				t.Error("a row before the last one written was accepted")
			}
			if err := p.Commit(2, 2); err == nil {
				t.Error("a commit up to record 2 after record 2 was written succeeded")
			}
			if err := p.Commit(3, 3); err != nil {
				t.Fatal(err)
			}
			p.Close()
			p, err = OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			if p.Next() != 3 || p.Rows() != 3 {
				t.Fatalf("resume at %d with %d rows, want 3, 3", p.Next(), p.Rows())
			}
			writeParts(t, p, rows, 3, 5, 100)
			if err := p.Finish(5, nil); err != nil {
				t.Fatal(err)
			}
			checkRows(t, out, f, rows, 5)
		})
	}
}

// TestPartsForeignInNPYDir: a file esm2go did not write inside the parts'
// output.npy.d is neither removed when the run resumes nor discarded with
// the parts (as one beside manifest.json is not): the run is refused,
// naming it.
func TestPartsForeignInNPYDir(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "emb")
	rows := indexed(4)
	p, err := OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	writeParts(t, p, rows, 0, 2, 2)
	p.Close()
	notes := filepath.Join(out+PartsSuffix, dataNPY, "notes.txt")
	if err := os.WriteFile(notes, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, overwrite := range []bool{false, true} {
		p, err := OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity, Overwrite: overwrite})
		if err == nil {
			p.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "notes.txt") {
			t.Errorf("overwrite=%v: %v, want an error naming notes.txt", overwrite, err)
		}
		if b, _ := os.ReadFile(notes); string(b) != "mine" {
			t.Fatalf("overwrite=%v: the foreign file was removed", overwrite)
		}
	}
	os.Remove(notes)
	p, err = OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	if p.Next() != 2 {
		t.Fatalf("resume at %d, want 2", p.Next())
	}
	writeParts(t, p, rows, 2, 4, 100)
	if err := p.Finish(4, nil); err != nil {
		t.Fatal(err)
	}
	checkRows(t, out, NPY, rows, 4)
}

// TestPartsManyRowGroups: an output of more than 32768 row groups (about
// 2 TiB of per-token embeddings in 64 MiB groups, or a run of many small
// chunks) has no row group ordinal that fits parquet's int16: the footer
// leaves them all 0 (unset, as a writer that omits them), which readers
// number themselves, instead of wrapping to negative ordinals that
// parquet-go's reader (esm2go's own) refuses. The chunks are copies of one
// chunk of 1100 row groups, listed as consecutive chunks, so the test
// stays fast.
func TestPartsManyRowGroups(t *testing.T) {
	t.Parallel()
	s := Schema{Columns: []Column{{Name: "m", Kind: Vector, Dim: 1}}}
	out := filepath.Join(t.TempDir(), "emb.parquet")
	p, err := OpenParts(out, Parquet, s, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	const rows, copies = 1100, 30 // 33000 row groups
	for i := range rows {
		r := Row{ID: "x", Index: int64(i), Length: 1, Values: [][]float32{{float32(i)}}}
		if err := p.Write(&r); err != nil {
			t.Fatal(err)
		}
		p.cur.(*parquetWriter).maxGroupRows = 1
	}
	if err := p.Commit(rows, rows); err != nil {
		t.Fatal(err)
	}
	man := p.man
	p.Close()
	c0 := man.Chunks[0]
	data := filepath.Join(out+PartsSuffix, dataParquet)
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	whole := slices.Repeat(b, copies)
	if err := os.WriteFile(data, whole, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < copies; i++ {
		c := c0
		c.First, c.Next, c.Boundary = int64(i*rows), int64((i+1)*rows), int64((i+1)*rows)
		c.Data = []segment{{File: dataParquet, Offset: int64(i * len(b)), Bytes: c0.Data[0].Bytes, CRC32C: c0.Data[0].CRC32C}}
		man.Chunks = append(man.Chunks, c)
	}
	js, err := json.Marshal(&man)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out+PartsSuffix, "manifest.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err = OpenParts(out, Parquet, s, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	if p.Next() != rows*copies {
		t.Fatalf("resume at %d, want %d", p.Next(), rows*copies)
	}
	if err := p.Finish(rows*copies, nil); err != nil {
		t.Fatal(err)
	}
	r, err := Open(out)
	if err != nil {
		t.Fatalf("reading an output of %d row groups: %v", rows*copies, err)
	}
	defer r.Close()
	var row Row
	if err := r.Next(&row); err != nil || row.Index != 0 || row.Values[0][0] != 0 {
		t.Fatalf("first row %+v: %v", row, err)
	}
}

// TestPartsManifestRoom: the manifest a long run writes stays readable
// when it resumes. Every commit adds a chunk entry with a segment per
// column; a run of 100 columns (mean, per-token and BOS of 33 layers)
// committing every 2 minutes (the default) for 30 days lists 21,600
// chunks, which must fit maxManifest, or the run could never be resumed.
func TestPartsManifestRoom(t *testing.T) {
	t.Parallel()
	var s Schema
	for i := range 100 {
		s.Columns = append(s.Columns, Column{Name: fmt.Sprintf("per_tok_%d", i), Kind: Matrix, Dim: 1280})
	}
	m := manifest{Version: partsVersion, RunID: "0123456789abcdef01234567", Format: NPY, Columns: columnsMeta(s.Columns, false), Identity: testIdentity}
	size := func() int {
		b, err := marshalManifest(&m)
		if err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	empty := size()
	const n = 10
	for i := range n {
		c := chunkMeta{Name: chunkName(NPY, 100000+i), First: 1 << 40, Next: 1<<40 + 100000, Boundary: 1<<40 + 99999, Rows: 100000, Bytes: 1 << 30, CRC32C: 0xffffffff}
		for _, f := range dataFiles(NPY, s) {
			c.Data = append(c.Data, segment{File: f, Offset: 1 << 44, Bytes: 1 << 34, CRC32C: 0xffffffff})
		}
		m.Chunks = append(m.Chunks, c)
	}
	perChunk := (size() - empty) / n
	const chunks = 30 * 24 * 30
	need := int64(empty) + chunks*int64(perChunk)
	t.Logf("%d bytes a chunk: %d chunks make %d bytes", perChunk, chunks, need)
	if need > maxManifest {
		t.Errorf("%d chunks of %d bytes make a manifest of %d bytes, more than the %d a resume reads", chunks, perChunk, need, maxManifest)
	}
}

// TestPartsParquetChunkUnreadable: a listed parquet chunk whose bytes
// match the manifest but are no parquet file (a writer fault; bytes from
// elsewhere) would make every Finish fail, run after run: resuming checks
// each chunk's footer and page index too, and resumes before such a chunk.
func TestPartsParquetChunkUnreadable(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "emb")
	rows := indexed(9)
	p, err := OpenParts(out, Parquet, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	writeParts(t, p, rows, 0, 6, 3)
	man := p.man
	p.Close()
	// Chunk 1's footer length points past its start; the manifest lists
	// the bytes as they now are.
	seg := &man.Chunks[1].Data[0]
	data := filepath.Join(out+PartsSuffix, dataParquet)
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	end := seg.Offset + seg.Bytes
	b[end-8], b[end-7], b[end-6], b[end-5] = 0xf0, 0xff, 0xff, 0x0f
	if err := os.WriteFile(data, b, 0o644); err != nil {
		t.Fatal(err)
	}
	seg.CRC32C = crc32.Checksum(b[seg.Offset:end], castagnoli)
	js, err := marshalManifest(&man)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out+PartsSuffix, "manifest.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err = OpenParts(out, Parquet, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	if p.Next() != 3 {
		p.Close()
		t.Fatalf("resume at %d, want 3 (before the unreadable chunk)", p.Next())
	}
	writeParts(t, p, rows, 3, 9, 3)
	if err := p.Finish(9, nil); err != nil {
		t.Fatal(err)
	}
	checkRows(t, out, Parquet, rows, 9)
}

// TestPartsNPYChunkInconsistent: an npy chunk whose array segments do not
// hold the rows its listing says (a fault, a hand-edited manifest) would
// make every Finish fail: resuming treats it as damage and resumes
// before it.
func TestPartsNPYChunkInconsistent(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "emb")
	rows := indexed(9)
	p, err := OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	writeParts(t, p, rows, 0, 6, 3)
	man := p.man
	p.Close()
	man.Chunks[1].Rows--
	js, err := marshalManifest(&man)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out+PartsSuffix, "manifest.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err = OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	if p.Next() != 3 {
		p.Close()
		t.Fatalf("resume at %d, want 3 (before the inconsistent chunk)", p.Next())
	}
	writeParts(t, p, rows, 3, 9, 3)
	if err := p.Finish(9, nil); err != nil {
		t.Fatal(err)
	}
	checkRows(t, out, NPY, rows, 9)
}

// crash leaves p as a killed process does: the uncommitted chunk and the
// parts directory stay (Close would remove a directory with no committed
// chunk); the lock goes with the process.
func crash(p *Parts) {
	p.closed = true
	p.closeData()
	p.lock.release()
}
