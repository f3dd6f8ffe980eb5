package output

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// chunkSchema is testSchema with a per-source metadata key.
func chunkSchema(chunk int) Schema {
	s := Schema{Columns: testSchema.Columns, Metadata: map[string]string{"chunk": strconv.Itoa(chunk)}}
	for k, v := range testSchema.Metadata {
		s.Metadata[k] = v
	}
	return s
}

// writeChunks writes rows split at cuts as outputs chunk0, chunk1, ... in
// dir and returns their paths.
func writeChunks(t testing.TB, dir string, f Format, rows []Row, cuts ...int) []string {
	t.Helper()
	var paths []string
	lo := 0
	for i, hi := range append(cuts, len(rows)) {
		p := filepath.Join(dir, fmt.Sprintf("chunk%d", i))
		writeAll(t, p, f, chunkSchema(i), rows[lo:hi])
		paths = append(paths, p)
		lo = hi
	}
	return paths
}

func TestMergeRoundTrip(t *testing.T) {
	t.Parallel()
	rows := testRows(testSchema)
	for _, f := range formats {
		for _, rowPath := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/rowPath=%v", f, rowPath), func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				// Four sources, one of them empty.
				srcs := writeChunks(t, dir, f, rows, 2, 2, 3)
				dst := filepath.Join(dir, "merged")
				sum, err := merge(context.Background(), dst, srcs, MergeOptions{DropMeta: []string{"chunk"}}, rowPath)
				if err != nil {
					t.Fatal(err)
				}
				s, got := readOutput(t, dst)
				compareRows(t, got, rows)
				if want := withDType(testSchema, Float32); !reflect.DeepEqual(s, want) {
					t.Errorf("schema %+v, want %+v (the sources' without the dropped key)", s, want)
				}
				var payload int64
				for _, r := range rows {
					for _, v := range r.Values {
						payload += 4 * int64(len(v))
					}
				}
				want := MergeSummary{Path: dst, Format: f, Sources: 4, Rows: int64(len(rows)), Bytes: payload}
				if f == NPY && !rowPath {
					want.CopiedRows = want.Rows
				}
				if sum != want {
					t.Errorf("summary %+v, want %+v", sum, want)
				}
				if ents := dirEntries(t, dir); len(ents) != 5 {
					t.Errorf("directory holds %v, want the 4 sources and the merged output", ents)
				}
			})
		}
	}
}

// TestMergeNPYCopyMatchesRowPath: the byte-level copy writes exactly what
// decoding every row and writing it through the Writer writes.
func TestMergeNPYCopyMatchesRowPath(t *testing.T) {
	t.Parallel()
	for _, renumber := range []bool{false, true} {
		dir := t.TempDir()
		srcs := writeChunks(t, dir, NPY, testRows(testSchema), 1, 4)
		opts := MergeOptions{DropMeta: []string{"chunk"}, Renumber: renumber}
		a, b := filepath.Join(dir, "copy"), filepath.Join(dir, "rows")
		if _, err := merge(context.Background(), a, srcs, opts, false); err != nil {
			t.Fatal(err)
		}
		if _, err := merge(context.Background(), b, srcs, opts, true); err != nil {
			t.Fatal(err)
		}
		for _, name := range dirEntries(t, a) {
			x, y := mustRead(t, filepath.Join(a, name)), mustRead(t, filepath.Join(b, name))
			if !bytes.Equal(x, y) {
				t.Errorf("renumber=%v: %s differs between the copy and the row path", renumber, name)
			}
		}
	}
}

func TestMergeRenumber(t *testing.T) {
	t.Parallel()
	rows := testRows(testSchema)
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			// Two shards, each numbered from 0.
			var srcs []string
			var want []Row
			for i := range 2 {
				shard := make([]Row, len(rows))
				for j := range rows {
					shard[j] = rows[j]
					shard[j].Index = int64(j)
					r := rows[j]
					r.Index = int64(i*len(rows) + j)
					want = append(want, r)
				}
				p := filepath.Join(dir, fmt.Sprintf("shard%d", i))
				writeAll(t, p, f, testSchema, shard)
				srcs = append(srcs, p)
			}
			dst := filepath.Join(dir, "merged")
			_, err := Merge(dst, srcs, MergeOptions{})
			if err == nil || !strings.Contains(err.Error(), "index 0 is not after 5") || !strings.Contains(err.Error(), "source 1 ("+srcs[1]+")") {
				t.Fatalf("shards without Renumber: %v", err)
			}
			if _, err := os.Lstat(dst); !os.IsNotExist(err) {
				t.Errorf("a failed merge left %s: %v", dst, err)
			}
			if _, err := Merge(dst, srcs, MergeOptions{Renumber: true}); err != nil {
				t.Fatal(err)
			}
			_, got := readOutput(t, dst)
			compareRows(t, got, want)
		})
	}
}

func TestMergeRefusesOutOfOrderIndices(t *testing.T) {
	t.Parallel()
	rows := testRows(testSchema) // indices 0, 2, ..., 10
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			for _, c := range []struct {
				name  string
				order []int
				cuts  []int
				want  string
			}{
				{"unsorted", []int{1, 0}, []int{3}, `record 0 ("sp|P1|A"): index 0 is not after 10`},
				{"overlapping", []int{0, 1}, []int{4}, `record 0 ("x"): index 8 is not after 8`},
			} {
				dir := t.TempDir()
				srcs := writeChunks(t, dir, f, rows, c.cuts...)
				if c.name == "overlapping" {
					// chunk1 starts with a row chunk0 already holds.
					os.RemoveAll(srcs[1])
					writeAll(t, srcs[1], f, chunkSchema(1), rows[c.cuts[0]:])
					os.RemoveAll(srcs[0])
					writeAll(t, srcs[0], f, chunkSchema(0), rows[:c.cuts[0]+1])
				}
				ordered := []string{srcs[c.order[0]], srcs[c.order[1]]}
				dst := filepath.Join(dir, "merged")
				_, err := Merge(dst, ordered, MergeOptions{DropMeta: []string{"chunk"}})
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("%s: error %v, want %q", c.name, err, c.want)
				}
				if ents := dirEntries(t, dir); len(ents) != 2 {
					t.Errorf("%s: a failed merge left %v", c.name, ents)
				}
			}
		})
	}
}

func TestMergeRefusesMismatches(t *testing.T) {
	t.Parallel()
	rows := testRows(testSchema)
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	writeAll(t, base, NPY, testSchema, rows[:2])
	other := func(name string, f Format, s Schema) string {
		p := filepath.Join(dir, name)
		var rs []Row
		if reflect.DeepEqual(s.Columns, testSchema.Columns) {
			rs = rows[2:]
		}
		writeAll(t, p, f, s, rs)
		return p
	}
	wider := Schema{Columns: append([]Column{}, testSchema.Columns...), Metadata: testSchema.Metadata}
	wider.Columns[0].Dim = 6
	renamed := Schema{Columns: append([]Column{}, testSchema.Columns...), Metadata: testSchema.Metadata}
	renamed.Columns[2].Name = "bos_32"
	model := Schema{Columns: testSchema.Columns, Metadata: map[string]string{"model": "esm2_t6_8M_UR50D", "esm2go.version": "test"}}
	cases := []struct {
		src  string
		want string
	}{
		{other("parquet", Parquet, testSchema), "format parquet, want npy"},
		{other("wider", NPY, wider), `columns ["mean_33" vector 6, "per_tok_33" matrix 3, "bos_33" vector 2], want ["mean_33" vector 5,`},
		{other("renamed", NPY, renamed), `"bos_32" vector 2]`},
		{other("model", NPY, model), `the sources' metadata differ: "model" = "esm2_t6_8M_UR50D", source 0: "esm2_t33_650M_UR50D"`},
	}
	for _, c := range cases {
		dst := filepath.Join(t.TempDir(), "merged")
		_, err := Merge(dst, []string{base, c.src}, MergeOptions{})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "source 1 ("+c.src+") does not match source 0") {
			t.Errorf("%s: error %v\nwant it to contain %q", filepath.Base(c.src), err, c.want)
		}
	}
	// Keys named in DropMeta may differ, and are left out; Metadata
	// replaces the merged metadata.
	dst := filepath.Join(dir, "dropped")
	if _, err := Merge(dst, []string{base, cases[3].src}, MergeOptions{DropMeta: []string{"model"}}); err != nil {
		t.Fatal(err)
	}
	if s, _ := readOutput(t, dst); !reflect.DeepEqual(s.Metadata, map[string]string{"esm2go.version": "test"}) {
		t.Errorf("metadata %v", s.Metadata)
	}
	dst = filepath.Join(dir, "given")
	given := map[string]string{"model": "mixed"}
	if _, err := Merge(dst, []string{base, cases[3].src}, MergeOptions{DropMeta: []string{"model"}, Metadata: given}); err != nil {
		t.Fatal(err)
	}
	if s, _ := readOutput(t, dst); !reflect.DeepEqual(s.Metadata, given) {
		t.Errorf("metadata %v, want %v", s.Metadata, given)
	}
	if _, err := Merge(filepath.Join(dir, "none"), nil, MergeOptions{}); err == nil || !strings.Contains(err.Error(), "no sources") {
		t.Errorf("no sources: %v", err)
	}
}

func TestMergeRefusesCorruptSources(t *testing.T) {
	t.Parallel()
	rows := testRows(testSchema)
	cases := []struct {
		name string
		f    Format
		edit func(t *testing.T, src string)
		want string
	}{
		{"truncated npy array", NPY, func(t *testing.T, src string) {
			rewrite(t, filepath.Join(src, "per_tok_33.npy"), func(b []byte) []byte { return b[:len(b)-4] })
		}, "per_tok_33.npy: shape [315 3] needs 3780 data bytes but the file holds 3776 (truncated or corrupt)"},
		{"NaN in npy", NPY, func(t *testing.T, src string) {
			rewrite(t, filepath.Join(src, "per_tok_33.npy"), func(b []byte) []byte {
				copy(b[npyHeaderLen+4*(3*13+2):], []byte{0, 0, 0x80, 0x7f}) // +Inf
				return b
			})
		}, `record 8 ("x") column per_tok_33: non-finite value: +Inf at residue 1, element 2`},
		{"corrupt parquet", Parquet, func(t *testing.T, src string) {
			rewrite(t, src, func(b []byte) []byte {
				md, _ := parquetFooter(t, b)
				cc := md.RowGroups[0].Columns[parquetFixedCols+1].MetaData
				for i := cc.DataPageOffset + 40; i < cc.DataPageOffset+60; i++ {
					b[i] ^= 0x5a
				}
				return b
			})
		}, "row group 0"},
		{"truncated parquet", Parquet, func(t *testing.T, src string) {
			rewrite(t, src, func(b []byte) []byte { return b[:len(b)-3] })
		}, "not a parquet file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			srcs := writeChunks(t, dir, c.f, rows, 3)
			c.edit(t, srcs[1])
			dst := filepath.Join(dir, "merged")
			_, err := Merge(dst, srcs, MergeOptions{DropMeta: []string{"chunk"}})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), srcs[1]) {
				t.Fatalf("error %v\nwant it to name %s and contain %q", err, srcs[1], c.want)
			}
			if c.name == "NaN in npy" && !errors.Is(err, ErrNonFinite) {
				t.Errorf("error %v is not ErrNonFinite", err)
			}
			if ents := dirEntries(t, dir); len(ents) != 2 {
				t.Errorf("a failed merge left %v", ents)
			}
		})
	}
}

func TestMergeDestination(t *testing.T) {
	t.Parallel()
	rows := testRows(testSchema)
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			srcs := writeChunks(t, dir, f, rows, 3)
			opts := MergeOptions{DropMeta: []string{"chunk"}}
			dst := filepath.Join(dir, "merged")
			writeAll(t, dst, f, testSchema, rows[:1])
			if _, err := Merge(dst, srcs, opts); !errors.Is(err, ErrExists) {
				t.Fatalf("existing destination: %v, want ErrExists", err)
			}
			opts.Overwrite = true
			if _, err := Merge(dst, srcs, opts); err != nil {
				t.Fatal(err)
			}
			_, got := readOutput(t, dst)
			compareRows(t, got, rows)
			if _, err := Merge(srcs[0], srcs, opts); err == nil || !strings.Contains(err.Error(), "source 0 ("+srcs[0]+") is the destination") {
				t.Errorf("merging into a source: %v", err)
			}
			if f == Parquet {
				opts.Keep = []string{dst}
				if _, err := Merge(dst, srcs, opts); !errors.Is(err, ErrNotReplaceable) {
					t.Errorf("destination in Keep: %v, want ErrNotReplaceable", err)
				}
			}
			compareRows(t, got, rows) // still the earlier merge
		})
	}
}

func TestMergeCancel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srcs := writeChunks(t, dir, NPY, testRows(testSchema), 3)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := MergeContext(ctx, filepath.Join(dir, "merged"), srcs, MergeOptions{DropMeta: []string{"chunk"}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if ents := dirEntries(t, dir); len(ents) != 2 {
		t.Errorf("a cancelled merge left %v", ents)
	}
}

// bigRows makes n rows of a Vector column of dim d and a short Matrix
// column, indices starting at from.
func bigRows(n, d int, from int64, rng *rand.Rand) []Row {
	rows := make([]Row, n)
	for i := range rows {
		v := make([]float32, d)
		for j := range v {
			v[j] = float32(rng.NormFloat64())
		}
		L := i % 4
		m := make([]float32, 2*L)
		for j := range m {
			m[j] = float32(rng.NormFloat64())
		}
		rows[i] = Row{ID: "s" + strconv.Itoa(int(from)+i), Index: from + int64(i), Length: L, Values: [][]float32{v, m}}
	}
	return rows
}

var bigSchema = Schema{Columns: []Column{{Name: "mean", Kind: Vector, Dim: 8}, {Name: "tok", Kind: Matrix, Dim: 2}}}

// TestMergeParquetCopiesRowGroups: large row groups reach the output as
// the source's bytes; small ones are packed into one row group; Renumber
// re-encodes everything.
func TestMergeParquetCopiesRowGroups(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	small1, small2 := filepath.Join(dir, "small1"), filepath.Join(dir, "small2")
	bigR := bigRows(mergeCopyRows, 8, 0, rng)
	s1 := bigRows(10, 8, mergeCopyRows, rng)
	s2 := bigRows(10, 8, mergeCopyRows+10, rng)
	writeAll(t, big, Parquet, bigSchema, bigR)
	writeAll(t, small1, Parquet, bigSchema, s1)
	writeAll(t, small2, Parquet, bigSchema, s2)
	all := append(append(append([]Row{}, bigR...), s1...), s2...)

	dst := filepath.Join(dir, "merged")
	sum, err := Merge(dst, []string{big, small1, small2}, MergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.CopiedRows != int64(len(bigR)) || sum.Rows != int64(len(all)) {
		t.Errorf("summary %+v, want %d rows copied of %d", sum, len(bigR), len(all))
	}
	_, got := readOutput(t, dst)
	compareRows(t, got, all)

	src, out := openParquet(t, big), openParquet(t, dst)
	if n := len(out.RowGroups()); n != 2 {
		t.Errorf("%d row groups, want 2 (the copied one, then the small sources packed)", n)
	}
	for c := range src.Metadata().RowGroups[0].Columns {
		a := chunkBytes(t, big, src, 0, c)
		b := chunkBytes(t, dst, out, 0, c)
		if !bytes.Equal(a, b) {
			t.Errorf("column %d: the merged chunk (%d bytes) is not the source's (%d bytes)", c, len(b), len(a))
		}
	}

	// Renumber: a group is copied only when its indices are already the
	// new ones.
	for _, c := range []struct {
		srcs   []string
		rows   []Row
		copied int64
	}{
		{[]string{small1, big}, append(append([]Row{}, s1...), bigR...), 0},
		{[]string{big, small1}, append(append([]Row{}, bigR...), s1...), int64(len(bigR))},
	} {
		p := filepath.Join(t.TempDir(), "renumbered")
		sum, err := Merge(p, c.srcs, MergeOptions{Renumber: true})
		if err != nil || sum.CopiedRows != c.copied {
			t.Errorf("Renumber %v: %+v, %v; want %d rows copied", c.srcs, sum, err, c.copied)
		}
		for i := range c.rows {
			c.rows[i].Index = int64(i)
		}
		_, got := readOutput(t, p)
		compareRows(t, got, c.rows)
	}
}

func openParquet(t *testing.T, path string) *parquet.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return pf
}

func chunkBytes(t *testing.T, path string, pf *parquet.File, g, c int) []byte {
	t.Helper()
	start, end := chunkRange(&pf.Metadata().RowGroups[g].Columns[c])
	return mustRead(t, path)[start:end]
}

// TestMergeParquetCopyRefusesBadRows: a row group that qualifies for the
// verbatim copy is still checked row by row.
func TestMergeParquetCopyRefusesBadRows(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	s := Schema{Columns: []Column{{Name: "v", Kind: Vector, Dim: 1}}}
	w, err := Create(src, Parquet, s)
	if err != nil {
		t.Fatal(err)
	}
	pw := w.(*parquetWriter)
	for i := range mergeCopyRows {
		x := float32(i)
		if i == mergeCopyRows-3 {
			x = float32(math.Inf(1))
		}
		row := parquet.Row{
			parquet.ByteArrayValue([]byte("r"+strconv.Itoa(i))).Level(0, 0, colID),
			parquet.Int64Value(int64(i)).Level(0, 0, colIndex),
			parquet.Int32Value(0).Level(0, 0, colLength),
			parquet.BooleanValue(false).Level(0, 0, colTruncated),
			parquet.FloatValue(x).Level(0, 1, 4),
		}
		if _, err := pw.pw.WriteRows([]parquet.Row{row}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Merge(filepath.Join(dir, "merged"), []string{src}, MergeOptions{})
	if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), `record 2497 ("r2497") column v: non-finite value: +Inf at element 0`) {
		t.Fatalf("error %v, want ErrNonFinite naming the record", err)
	}
}

func TestFirstNonFiniteLE(t *testing.T) {
	t.Parallel()
	for n := 0; n < 20; n++ {
		for bad := -1; bad < n; bad++ {
			for _, x := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
				b := make([]byte, 4*n)
				for i := range n {
					v := float32(i) - math.MaxFloat32/2
					if i == bad {
						v = x
					}
					binaryPutFloat(b[4*i:], v)
				}
				if got := firstNonFiniteLE(b); got != bad {
					t.Fatalf("n=%d bad=%d x=%v: got %d", n, bad, x, got)
				}
			}
		}
	}
}

func binaryPutFloat(b []byte, v float32) {
	u := math.Float32bits(v)
	b[0], b[1], b[2], b[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
}

// BenchmarkMerge merges 4 sources of mean_33-like rows (N=2500 each, enough for a verbatim row-group copy,
// D=1280) with the copying paths and with every row decoded and written
// through the Writer, reporting MB/s of embedding payload.
func BenchmarkMerge(b *testing.B) {
	const sources, n, d = 4, mergeCopyRows, 1280
	s := Schema{Columns: []Column{{Name: "mean_33", Kind: Vector, Dim: d}}}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, f := range formats {
		dir := b.TempDir()
		var srcs []string
		for i := range sources {
			rows := make([]Row, n)
			for j := range rows {
				v := make([]float32, d)
				for k := range v {
					v[k] = float32(rng.NormFloat64())
				}
				rows[j] = Row{ID: "s" + strconv.Itoa(i*n+j), Index: int64(i*n + j), Values: [][]float32{v}}
			}
			p := filepath.Join(dir, fmt.Sprintf("src%d", i))
			writeAll(b, p, f, s, rows)
			srcs = append(srcs, p)
		}
		for _, rowPath := range []bool{false, true} {
			name := string(f) + "/copy"
			if rowPath {
				name = string(f) + "/rows"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(4 * sources * n * d)
				for b.Loop() {
					if _, err := merge(context.Background(), filepath.Join(dir, "merged"), srcs, MergeOptions{Overwrite: true}, rowPath); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// rawParquet writes rows past the Writer's checks, to make bad files.
func rawParquet(t *testing.T, s Schema, rows []parquet.Row) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raw.parquet")
	w, err := Create(path, Parquet, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.(*parquetWriter).pw.WriteRows(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// rawRow builds a row of bigSchema's layout: vec is the Vector column's
// values, res the Matrix column's residues (nil: an empty list).
func rawRow(index int64, length int32, vec []float32, res [][]float32) parquet.Row {
	row := parquet.Row{
		parquet.ByteArrayValue([]byte("r")).Level(0, 0, colID),
		parquet.Int64Value(index).Level(0, 0, colIndex),
		parquet.Int32Value(length).Level(0, 0, colLength),
		parquet.BooleanValue(false).Level(0, 0, colTruncated),
	}
	row = appendFloats(row, vec, 0, 1, 1, 4)
	if len(res) == 0 {
		return append(row, parquet.Value{}.Level(0, 0, 5))
	}
	for i, r := range res {
		first := 1
		if i == 0 {
			first = 0
		}
		if len(r) == 0 { // an empty inner list
			row = append(row, parquet.Value{}.Level(first, 1, 5))
			continue
		}
		row = appendFloats(row, r, first, 2, 2, 5)
	}
	return row
}

// TestCheckGroupColumns: the column-wise check that guards the verbatim
// copy refuses every defect the row path refuses.
func TestCheckGroupColumns(t *testing.T) {
	t.Parallel()
	v8 := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	good := []parquet.Row{
		rawRow(3, 2, v8, [][]float32{{1, 2}, {3, 4}}),
		rawRow(5, 0, v8, nil),
		rawRow(9, 1, v8, [][]float32{{5, 6}}),
	}
	path := rawParquet(t, bigSchema, good)
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.pq.checkGroupPages(nil); err != nil {
		t.Fatal(err)
	}
	gc, err := r.pq.checkGroupColumns(0)
	r.Close()
	if err != nil || gc != (groupCheck{first: 3, last: 9, bytes: 4 * (3*8 + 6)}) {
		t.Fatalf("good rows: %+v, %v", gc, err)
	}
	inf := float32(math.Inf(1))
	bad := map[string]parquet.Row{
		"non-finite vector":     rawRow(10, 0, []float32{1, 2, 3, inf, 5, 6, 7, 8}, nil),
		"non-finite matrix":     rawRow(10, 1, v8, [][]float32{{1, float32(math.NaN())}}),
		"long vector":           rawRow(10, 0, append(v8, 9), nil),
		"short vector":          rawRow(10, 0, v8[:7], nil),
		"more residues":         rawRow(10, 1, v8, [][]float32{{1, 2}, {3, 4}}),
		"fewer residues":        rawRow(10, 3, v8, [][]float32{{1, 2}, {3, 4}}),
		"short residue":         rawRow(10, 2, v8, [][]float32{{1, 2}, {3}}),
		"empty residue":         rawRow(10, 2, v8, [][]float32{{1, 2}, {}}),
		"empty list, length 1":  rawRow(10, 1, v8, nil),
		"index not increasing":  rawRow(9, 0, v8, nil),
		"negative length":       rawRow(10, -1, v8, nil),
		"residues for length 0": rawRow(10, 0, v8, [][]float32{{1, 2}}),
	}
	for name, row := range bad {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := rawParquet(t, bigSchema, append(append([]parquet.Row{}, good...), row))
			r, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if err := r.pq.checkGroupPages(nil); err != nil {
				t.Fatal(err)
			}
			if _, err := r.pq.checkGroupColumns(0); err == nil {
				t.Error("the column check passed it")
			}
			if err := readErr(path); err == nil {
				t.Error("the row path passed it")
			}
		})
	}
}

// TestMergeParquetUntrustedPageIndexIsNotCopied: a row group whose offset
// index does not describe its pages is rewritten, not copied.
func TestMergeParquetUntrustedPageIndexIsNotCopied(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	rows := bigRows(mergeCopyRows, 8, 0, rand.New(rand.NewPCG(9, 10)))
	writeAll(t, src, Parquet, bigSchema, rows)
	rewrite(t, src, func(b []byte) []byte {
		md, _ := parquetFooter(t, b)
		cols := md.RowGroups[0].Columns
		a, c := &cols[parquetFixedCols], &cols[parquetFixedCols+1]
		a.OffsetIndexOffset, c.OffsetIndexOffset = c.OffsetIndexOffset, a.OffsetIndexOffset
		a.OffsetIndexLength, c.OffsetIndexLength = c.OffsetIndexLength, a.OffsetIndexLength
		return withFooter(t, b, nil, &md)
	})
	var log strings.Builder
	dst := filepath.Join(dir, "merged")
	sum, err := Merge(dst, []string{src}, MergeOptions{Log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if sum.CopiedRows != 0 || !strings.Contains(log.String(), "does not match the page") {
		t.Errorf("summary %+v, log %q: want the group rewritten because of its offset index", sum, log.String())
	}
	_, got := readOutput(t, dst)
	compareRows(t, got, rows)
}
