package output

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
)

var testIdentity = map[string]string{"model": "abc", "layers": "33"}

// indexed returns n test rows with indices 0..n-1.
func indexed(n int) []Row {
	base := testRows(testSchema)
	rows := make([]Row, n)
	for i := range rows {
		r := base[i%len(base)]
		r.Index = int64(i)
		rows[i] = r
	}
	return rows
}

// writeParts writes rows [from, to) committing every `every` rows.
func writeParts(t *testing.T, p *Parts, rows []Row, from, to int, every int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := p.Write(&rows[i]); err != nil {
			t.Fatal(err)
		}
		if (i+1)%every == 0 {
			if err := p.Commit(int64(i+1), int64(i+1)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func readAll(t *testing.T, path string, f Format) []Row {
	t.Helper()
	if f == Parquet {
		rows, _ := readParquet(t, path, testSchema)
		return rows
	}
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []Row
	for {
		var row Row
		if err := r.Next(&row); err != nil {
			break
		}
		out = append(out, row)
	}
	return out
}

// TestPartsResume: a run that stops after some commits is resumed by the
// next one with the same identity; the final output holds every row once,
// in order, and the parts directory is gone.
func TestPartsResume(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "emb")
			rows := indexed(10)
			p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			writeParts(t, p, rows, 0, 7, 3) // commits 0..2 and 3..5; row 6 uncommitted
			if _, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity}); !errors.Is(err, ErrLocked) {
				t.Fatalf("second run while the first holds the parts: %v", err)
			}
			p.Close() // killed: row 6 is lost, 0..5 are committed

			p, err = OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			if p.Next() != 6 || p.Rows() != 6 {
				t.Fatalf("resume at %d with %d rows, want 6, 6", p.Next(), p.Rows())
			}
			if err := p.Write(&rows[5]); err == nil {
				t.Fatal("a row before the resume point was accepted")
			}
			writeParts(t, p, rows, 6, 10, 100)
			if err := p.Finish(10, testSchema.Metadata); err != nil {
				t.Fatal(err)
			}
			if names := dirEntries(t, dir); !reflect.DeepEqual(names, []string{"emb"}) {
				t.Fatalf("left %v", names)
			}
			got := readAll(t, out, f)
			if len(got) != 10 {
				t.Fatalf("%d rows", len(got))
			}
			for i := range got {
				if got[i].Index != int64(i) || got[i].ID != sanitizeID(rows[i].ID) {
					t.Fatalf("row %d: index %d id %q", i, got[i].Index, got[i].ID)
				}
			}
		})
	}
}

func TestPartsRefuseOtherIdentity(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "emb")
	p, err := OpenParts(out, Parquet, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	writeParts(t, p, indexed(4), 0, 4, 2)
	p.Close()
	other := map[string]string{"model": "def", "layers": "33"}
	_, err = OpenParts(out, Parquet, testSchema, PartsOptions{Identity: other})
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), `model was "abc", this run has "def"`) {
		t.Fatalf("other model: %v", err)
	}
	if _, err := OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity}); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("other format: %v", err)
	}
	// Overwrite starts over.
	p, err = OpenParts(out, Parquet, testSchema, PartsOptions{Identity: other, Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Next() != 0 {
		t.Fatalf("overwrite resumed at %d", p.Next())
	}
	p.Close()
}

// TestPartsDamage: a damaged chunk and everything after it are dropped;
// bytes a killed run appended after its last commit are cut off; a chunk
// directory published but never listed (killed before the manifest
// update) is removed; a foreign file stops a discard.
func TestPartsDamage(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "emb")
			rows := indexed(9)
			p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			writeParts(t, p, rows, 0, 9, 3)
			// A chunk being written when the run was killed.
			for _, r := range rows[:2] {
				r.Index += 100
				if err := p.Write(&r); err != nil {
					t.Fatal(err)
				}
			}
			man := p.man
			p.Close()
			seg := man.Chunks[1].Data[0]
			damage(t, filepath.Join(out+PartsSuffix, seg.File), seg.Offset+seg.Bytes/2)
			os.WriteFile(filepath.Join(out+PartsSuffix, "chunk-000099.npy.d"), []byte("uncommitted"), 0o644)
			var log strings.Builder
			p, err = OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity, Log: testLogger(&log)})
			if err != nil {
				t.Fatal(err)
			}
			if p.Next() != 3 {
				t.Fatalf("resume at %d after damage to chunk 1, want 3", p.Next())
			}
			if !strings.Contains(log.String(), "damaged") || !strings.Contains(log.String(), "uncommitted chunk") {
				t.Errorf("log: %s", log.String())
			}
			if _, err := os.Stat(filepath.Join(out+PartsSuffix, "chunk-000099.npy.d")); !os.IsNotExist(err) {
				t.Error("an unlisted chunk was kept")
			}
			if info, err := os.Stat(filepath.Join(out+PartsSuffix, seg.File)); err != nil || info.Size() != seg.Offset {
				t.Errorf("%s not cut after chunk 0: %v, %v", seg.File, info.Size(), err)
			}
			writeParts(t, p, rows, 3, 9, 3)
			if err := p.Finish(9, nil); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, out, f)
			if len(got) != 9 {
				t.Fatalf("%d rows after repair", len(got))
			}
			for i := range got {
				if !rowsEqual(&got[i], &rows[i]) {
					t.Fatalf("row %d: %+v, want %+v", i, got[i], rows[i])
				}
			}
		})
	}

	// A parts directory holding a file esm2go did not write is never discarded.
	out2 := filepath.Join(t.TempDir(), "emb")
	os.Mkdir(out2+PartsSuffix, 0o755)
	os.WriteFile(filepath.Join(out2+PartsSuffix, "notes.txt"), []byte("mine"), 0o644)
	if _, err := OpenParts(out2, Parquet, testSchema, PartsOptions{Overwrite: true}); !errors.Is(err, ErrNotReplaceable) {
		t.Fatalf("discarding a directory with a foreign file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(out2+PartsSuffix, "notes.txt")); string(b) != "mine" {
		t.Fatal("foreign file touched")
	}
}

// TestPartsSkippedOnly: a commit covering only skipped records still moves
// the resume point.
func TestPartsSkippedOnly(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "emb")
	p, err := OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(4, 2); err != nil {
		t.Fatal(err)
	}
	p.Close()
	p, err = OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Next() != 4 || p.Rows() != 0 || p.Boundary() != 2 {
		t.Fatalf("next %d rows %d", p.Next(), p.Rows())
	}
}

// TestPartsKilledAfterPublish: a run killed after publishing its output but
// before removing its parts is recognised as complete by a run with the
// same settings; a run with other settings is told the output exists.
func TestPartsKilledAfterPublish(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "emb")
	p, err := OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	writeParts(t, p, indexed(3), 0, 3, 100)
	if err := p.Commit(3, 3); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(t.TempDir(), "parts")
	if err := os.CopyFS(keep, os.DirFS(out+PartsSuffix)); err != nil {
		t.Fatal(err)
	}
	if err := p.Finish(3, nil); err != nil {
		t.Fatal(err)
	}
	os.CopyFS(out+PartsSuffix, os.DirFS(keep)) // as if killed before the removal
	if _, err := OpenParts(out, NPY, testSchema, PartsOptions{Identity: map[string]string{"model": "other"}}); !errors.Is(err, ErrExists) {
		t.Fatalf("other settings: %v, want ErrExists", err)
	}
	if _, err := OpenParts(out, NPY, testSchema, PartsOptions{Identity: testIdentity}); !errors.Is(err, ErrComplete) {
		t.Fatalf("same settings: %v, want ErrComplete", err)
	}
	if _, err := os.Stat(out + PartsSuffix); !os.IsNotExist(err) {
		t.Fatal("leftover parts kept")
	}
	if got := readAll(t, out, NPY); len(got) != 3 {
		t.Fatalf("%d rows", len(got))
	}
}

// TestPartsNoRecords: a run that reads no record at all (a shard of a small
// input, an empty stdin) still finishes with an output: its schema and
// metadata, no rows, and no parts directory left behind.
func TestPartsNoRecords(t *testing.T) {
	t.Parallel()
	for _, f := range []Format{Parquet, NPY} {
		out := filepath.Join(t.TempDir(), "emb")
		p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Finish(0, map[string]string{"k": "v"}); err != nil {
			t.Fatalf("%v: finish with no records: %v", f, err)
		}
		if rows := readAll(t, out, f); len(rows) != 0 {
			t.Errorf("%v: %d rows, want 0", f, len(rows))
		}
		r, err := Open(out)
		if err != nil {
			t.Fatalf("%v: %v", f, err)
		}
		if r.Len() != 0 || r.Schema().Metadata["k"] != "v" {
			t.Errorf("%v: %d rows, metadata %v: want 0 rows and k=v", f, r.Len(), r.Schema().Metadata)
		}
		r.Close()
		if _, err := os.Stat(out + ".parts"); !os.IsNotExist(err) {
			t.Errorf("%v: parts directory left behind: %v", f, err)
		}
	}
}

// damage flips the byte at off of path.
func damage(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// rowsEqual compares a row read back with the row written (float32 values
// round-trip exactly).
func rowsEqual(got, want *Row) bool {
	if got.Index != want.Index || got.ID != sanitizeID(want.ID) || got.Length != want.Length ||
		got.Truncated != want.Truncated || len(got.Values) != len(want.Values) {
		return false
	}
	for i := range got.Values {
		if !slices.Equal(got.Values[i], want.Values[i]) { // an empty matrix reads back as nil or []
			return false
		}
	}
	return true
}

// TestPartsFromVersion1: the parts of a run killed under an earlier esm2go
// (manifest version 1, each chunk a complete output; testdata/parts-v1 was
// written by it: rows 0..5 of indexed(10) committed in two chunks) are
// converted and resumed; a damaged chunk and those after it are dropped.
func TestPartsFromVersion1(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		for _, damaged := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/damaged=%v", f, damaged), func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "emb")
				if err := os.CopyFS(out+PartsSuffix, os.DirFS(filepath.Join("testdata", "parts-v1", "emb-"+string(f)+".parts"))); err != nil {
					t.Fatal(err)
				}
				want := int64(6)
				if damaged {
					chunk := filepath.Join(out+PartsSuffix, "chunk-000001.parquet")
					if f == NPY {
						chunk = filepath.Join(out+PartsSuffix, "chunk-000001.npy.d", "per_tok_33.npy")
					}
					info, err := os.Stat(chunk)
					if err != nil {
						t.Fatal(err)
					}
					damage(t, chunk, info.Size()-9)
					want = 3
				}
				var log strings.Builder
				p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity, Log: testLogger(&log)})
				if err != nil {
					t.Fatal(err)
				}
				if p.Next() != want || p.Rows() != want {
					t.Fatalf("resume at %d with %d rows, want %d", p.Next(), p.Rows(), want)
				}
				if !strings.Contains(log.String(), "converted the parts of an earlier esm2go") || damaged != strings.Contains(log.String(), "a committed chunk is damaged") {
					t.Errorf("log: %s", log.String())
				}
				rows := indexed(10)
				writeParts(t, p, rows, int(want), 10, 2)
				if err := p.Finish(10, nil); err != nil {
					t.Fatal(err)
				}
				got := readAll(t, out, f)
				if len(got) != len(rows) {
					t.Fatalf("%d rows, want %d", len(got), len(rows))
				}
				for i := range got {
					if !rowsEqual(&got[i], &rows[i]) {
						t.Fatalf("row %d: %+v, want %+v", i, got[i], rows[i])
					}
				}
			})
		}
	}
}

// TestPartsParquetPageIndex: the footer Finish writes over several chunks
// points at every page where it is: each offset-index entry (shifted by
// its chunk's place in the file) starts a page header whose page, header
// included, has the listed size, and the first row indexes add up; the
// column indexes are found and decoded (parquet-go's reader expects them
// contiguous, then the offset indexes).
func TestPartsParquetPageIndex(t *testing.T) {
	t.Parallel()
	const L, D = 300, 256 // 300 KB of values a row: pages of about 256 KiB
	s := Schema{Columns: []Column{{Name: "mean_6", Kind: Vector, Dim: D}, {Name: "per_tok_6", Kind: Matrix, Dim: D}}}
	rows := make([]Row, 12)
	for i := range rows {
		m := make([]float32, L*D)
		for k := range m {
			m[k] = float32(i*1000 + k%997)
		}
		rows[i] = Row{ID: fmt.Sprint("r", i), Index: int64(i), Length: L, Values: [][]float32{m[:D], m}}
	}
	out := filepath.Join(t.TempDir(), "emb.parquet")
	p, err := OpenParts(out, Parquet, s, PartsOptions{Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	writeParts(t, p, rows, 0, len(rows), 5) // chunks of 5, 5, 2 rows
	if err := p.Finish(int64(len(rows)), nil); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, _ := f.Stat()
	pf, err := parquet.OpenFile(f, info.Size())
	if err != nil {
		t.Fatal(err)
	}
	md := pf.Metadata()
	if len(md.RowGroups) != 3 || md.NumRows != int64(len(rows)) {
		t.Fatalf("%d row groups, %d rows; want 3, %d", len(md.RowGroups), md.NumRows, len(rows))
	}
	oi, ci := pf.OffsetIndexes(), pf.ColumnIndexes()
	ncols := len(md.RowGroups[0].Columns)
	if len(oi) != 3*ncols || len(ci) != 3*ncols {
		t.Fatalf("%d offset indexes, %d column indexes; want %d", len(oi), len(ci), 3*ncols)
	}
	pages := 0
	for g, rg := range md.RowGroups {
		for k := range rg.Columns {
			locs := oi[g*ncols+k].PageLocations
			for j, loc := range locs {
				var hdr format.PageHeader
				b := make([]byte, loc.CompressedPageSize)
				if _, err := f.ReadAt(b, loc.Offset); err != nil {
					t.Fatal(err)
				}
				r := bytes.NewReader(b)
				if err := thrift.NewDecoder(new(thrift.CompactProtocol).NewReader(r)).Decode(&hdr); err != nil {
					t.Fatalf("row group %d column %d page %d at %d: no page header: %v", g, k, j, loc.Offset, err)
				}
				if hsize := int64(len(b)) - int64(r.Len()); hsize+int64(hdr.CompressedPageSize) != int64(loc.CompressedPageSize) {
					t.Errorf("row group %d column %d page %d: header %d + page %d bytes, the index says %d", g, k, j, hsize, hdr.CompressedPageSize, loc.CompressedPageSize)
				}
				pages++
			}
		}
	}
	if pages <= 3*ncols {
		t.Errorf("%d pages: want several pages in some column chunk", pages)
	}
	r, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range rows {
		var row Row
		if err := r.Next(&row); err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		if !rowsEqual(&row, &rows[i]) {
			t.Fatalf("row %d differs", i)
		}
	}
}

// TestPartsResumeCheckCancelled: the read-back of an earlier run's
// committed chunks stops when the context is done, with an error that
// wraps the cancellation, and changes nothing: the next run resumes after
// the same rows.
func TestPartsResumeCheckCancelled(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "emb")
			rows := indexed(6)
			p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			writeParts(t, p, rows, 0, 6, 2)
			p.Close()
			manifest := filepath.Join(out+PartsSuffix, "manifest.json")
			before, err := os.ReadFile(manifest)
			if err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err = OpenPartsContext(ctx, out, f, testSchema, PartsOptions{Identity: testIdentity})
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "nothing was changed") {
				t.Fatalf("cancelled check: %v", err)
			}
			if after, err := os.ReadFile(manifest); err != nil || !bytes.Equal(after, before) {
				t.Fatalf("the manifest changed (%v)", err)
			}

			p, err = OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.Next() != 6 || p.Rows() != 6 {
				t.Fatalf("resume at %d with %d rows after a cancelled check, want 6, 6", p.Next(), p.Rows())
			}
		})
	}
}

// TestPartsCloseRemovesEmptyParts: a run closed before its first commit
// leaves no parts directory (nothing to resume, and it would stand in the
// way of the next run with other settings); one with a committed chunk
// keeps it; Abandon removes it even then; Close after Finish or twice
// changes nothing.
func TestPartsCloseRemovesEmptyParts(t *testing.T) {
	t.Parallel()
	for _, f := range []Format{Parquet, NPY} {
		dir := t.TempDir()
		exists := func(out string) bool {
			_, err := os.Lstat(out + PartsSuffix)
			return err == nil
		}
		out := filepath.Join(dir, "empty")
		p, err := OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
		if err != nil {
			t.Fatal(err)
		}
		writeParts(t, p, indexed(3), 0, 3, 100) // uncommitted
		p.Close()
		p.Close()
		if exists(out) {
			t.Errorf("%s: a parts directory with no committed chunk was left", f)
		}
		other := map[string]string{"model": "other"}
		if p, err = OpenParts(out, f, testSchema, PartsOptions{Identity: other}); err != nil {
			t.Fatalf("%s: a run with other settings after an empty one: %v", f, err)
		}
		p.Close()

		out = filepath.Join(dir, "committed")
		p, err = OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
		if err != nil {
			t.Fatal(err)
		}
		writeParts(t, p, indexed(3), 0, 2, 100)
		if err := p.Commit(2, 2); err != nil {
			t.Fatal(err)
		}
		p.Close()
		if !exists(out) {
			t.Fatalf("%s: Close removed committed rows", f)
		}
		if p, err = OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity}); err != nil || p.Next() != 2 {
			t.Fatalf("%s: resume: next %v, %v", f, p, err)
		}
		p.Abandon()
		if exists(out) {
			t.Errorf("%s: Abandon left the committed rows", f)
		}

		out = filepath.Join(dir, "done")
		p, err = OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
		if err != nil {
			t.Fatal(err)
		}
		writeParts(t, p, indexed(3), 0, 3, 100)
		if err := p.Finish(3, nil); err != nil {
			t.Fatal(err)
		}
		p.Close()
		p.Abandon()
		if _, err := os.Lstat(out); err != nil || exists(out) {
			t.Errorf("%s: after Finish: output %v, parts left %v", f, err, exists(out))
		}
	}
}
