package output

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/internal/testutil"
	"github.com/parquet-go/parquet-go"
)

var testSchema = Schema{
	Columns: []Column{
		{Name: "mean_33", Kind: Vector, Dim: 5},
		{Name: "per_tok_33", Kind: Matrix, Dim: 3},
		{Name: "bos_33", Kind: Vector, Dim: 2},
	},
	Metadata: map[string]string{"model": "esm2_t33_650M_UR50D", "esm2go.version": "test"},
}

// testRows covers the varlen cases: length 0, length 1, odd lengths, ids with
// tabs and newlines, special float values, gaps in Index.
func testRows(s Schema) []Row {
	lengths := []int{7, 1, 0, 13, 2, 300}
	ids := []string{"sp|P1|A", "tab\there", "empty", "new\nline", "x", "long"}
	rows := make([]Row, len(lengths))
	for i, L := range lengths {
		r := Row{ID: ids[i], Index: int64(2 * i), Length: L, Truncated: i%2 == 1}
		for c, col := range s.Columns {
			n := col.Dim
			if col.Kind == Matrix {
				n = L * col.Dim
			}
			v := make([]float32, n)
			for j := range v {
				v[j] = float32(i*1000+c*100+j) * 0.37
			}
			r.Values = append(r.Values, v)
		}
		rows[i] = r
	}
	// Values that must survive bit-exactly.
	rows[0].Values[0][0] = -math.MaxFloat32
	rows[0].Values[0][1] = math.Float32frombits(0x80000000) // -0
	rows[0].Values[0][2] = math.SmallestNonzeroFloat32
	rows[3].Values[1][4] = math.MaxFloat32
	return rows
}

func writeAll(t testing.TB, path string, f Format, s Schema, rows []Row) {
	t.Helper()
	writeAllTuned(t, path, f, s, rows, nil)
}

// writeAllTuned is writeAll with tune, when not nil, called on the writer
// before the first row (to lower its internal bounds).
func writeAllTuned(t testing.TB, path string, f Format, s Schema, rows []Row, tune func(Writer)) {
	t.Helper()
	w, err := Create(path, f, s)
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(w)
	}
	defer w.Abort()
	for i := range rows {
		// Hand the writer a copy and scribble over it afterwards: the
		// writer must not retain the row's slices.
		r := rows[i]
		r.Values = make([][]float32, len(rows[i].Values))
		for c := range r.Values {
			r.Values[c] = append([]float32(nil), rows[i].Values[c]...)
		}
		if err := w.Write(&r); err != nil {
			t.Fatal(err)
		}
		for c := range r.Values {
			for j := range r.Values[c] {
				r.Values[c][j] = -999
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// ---- parquet ----

// readParquet decodes a file written by this package back into rows, using
// the repetition levels to check the list<list<float>> structure.
func readParquet(t *testing.T, path string, s Schema) ([]Row, *parquet.File) {
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
	r := parquet.NewReader(f)
	defer r.Close()
	var out []Row
	buf := make([]parquet.Row, 4)
	for {
		n, err := r.ReadRows(buf)
		for _, pr := range buf[:n] {
			row := Row{Values: make([][]float32, len(s.Columns))}
			residues := make([]int, len(s.Columns))
			for _, v := range pr {
				c := v.Column()
				switch c {
				case colID:
					row.ID = string(v.ByteArray())
				case colIndex:
					row.Index = v.Int64()
				case colLength:
					row.Length = int(v.Int32())
				case colTruncated:
					row.Truncated = v.Boolean()
				default:
					i := c - parquetFixedCols
					if v.IsNull() {
						row.Values[i] = []float32{}
						continue
					}
					if s.Columns[i].Kind == Matrix && v.RepetitionLevel() <= 1 {
						residues[i]++
					}
					row.Values[i] = append(row.Values[i], v.Float())
				}
			}
			for i, col := range s.Columns {
				if col.Kind == Matrix && residues[i] != row.Length {
					t.Errorf("record %q column %s: %d inner lists, want %d", row.ID, col.Name, residues[i], row.Length)
				}
			}
			out = append(out, row)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return out, pf
}

func compareRows(t *testing.T, got, want []Row) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d rows, wrote %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != sanitizeID(w.ID) || g.Index != w.Index || g.Length != w.Length || g.Truncated != w.Truncated {
			t.Errorf("row %d: got (%q %d %d %v), want (%q %d %d %v)", i, g.ID, g.Index, g.Length, g.Truncated, sanitizeID(w.ID), w.Index, w.Length, w.Truncated)
		}
		for c := range w.Values {
			if !sameBits(g.Values[c], w.Values[c]) {
				t.Errorf("row %d (%q) column %d: values differ (len %d vs %d)", i, w.ID, c, len(g.Values[c]), len(w.Values[c]))
			}
		}
	}
}

func TestParquetRoundTrip(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "emb.parquet")
	rows := testRows(testSchema)
	writeAll(t, path, Parquet, testSchema, rows)

	got, pf := readParquet(t, path, testSchema)
	compareRows(t, got, rows)

	var names []string
	for _, f := range pf.Schema().Fields() {
		names = append(names, f.Name())
	}
	wantNames := []string{"id", "index", "length", "truncated", "mean_33", "per_tok_33", "bos_33"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("columns %v, want %v", names, wantNames)
	}
	for k, v := range testSchema.Metadata {
		if got, ok := pf.Lookup(k); !ok || got != v {
			t.Errorf("metadata %q = %q, %v; want %q", k, got, ok, v)
		}
	}
	js, ok := pf.Lookup(metaKey)
	if !ok {
		t.Fatalf("no %s metadata", metaKey)
	}
	var m struct {
		LayoutVersion int          `json:"layout_version"`
		Columns       []columnMeta `json:"columns"`
	}
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatal(err)
	}
	if m.LayoutVersion != layoutVersionOf(Float32) || len(m.Columns) != 3 || m.Columns[1] != (columnMeta{Name: "per_tok_33", Kind: "matrix", Dim: 3}) {
		t.Errorf("layout metadata %s", js)
	}
	t.Logf("schema:\n%s", pf.Schema())
}

// TestParquetRowGroups forces several row groups through the byte bound.
func TestParquetRowGroups(t *testing.T) {
	t.Parallel()
	// The production bounds (10k rows, 64 MiB) are lowered on the writer so
	// that a few MiB cross them; the flush logic is the same.
	s := Schema{Columns: []Column{{Name: "per_tok", Kind: Matrix, Dim: 256}}}
	var rows []Row
	for i := range 40 {
		L := 100 + i
		v := make([]float32, L*256)
		for j := range v {
			v[j] = float32(j ^ i)
		}
		rows = append(rows, Row{ID: strconv.Itoa(i), Index: int64(i), Length: L, Values: [][]float32{v}})
	}
	for _, tc := range []struct {
		name     string
		maxRows  int
		maxBytes int64
	}{
		{"bytes", parquetMaxGroupRows, 1 << 20}, // ~100 KiB a row: a group every ~10 rows
		{"rows", 7, parquetMaxGroupBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "big.parquet")
			writeAllTuned(t, path, Parquet, s, rows, func(w Writer) {
				pw := w.(*parquetWriter)
				pw.maxGroupRows, pw.maxGroupBytes = tc.maxRows, tc.maxBytes
			})
			got, pf := readParquet(t, path, s)
			compareRows(t, got, rows)
			// The writer flushes after the row that reaches a bound; replay
			// that rule to get the group sizes it must have written.
			var want []int64
			var n int64
			var b int64
			for _, r := range rows {
				n++
				b += int64(len(r.ID)+17) + 4*int64(len(r.Values[0]))
				if n >= int64(tc.maxRows) || b >= tc.maxBytes {
					want, n, b = append(want, n), 0, 0
				}
			}
			if n > 0 {
				want = append(want, n)
			}
			var gotGroups []int64
			for _, g := range pf.RowGroups() {
				gotGroups = append(gotGroups, g.NumRows())
			}
			if len(want) < 2 || !slices.Equal(gotGroups, want) {
				t.Errorf("row groups of %v rows, want %v", gotGroups, want)
			}
		})
	}
}

// ---- npy ----

// readNPY and float32sLE are the shared strict NPY reader.
var (
	readNPY    = testutil.ReadNPY
	float32sLE = testutil.Float32sLE
)

func TestNPYRoundTrip(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "emb")
	rows := testRows(testSchema)
	writeAll(t, dir, NPY, testSchema, rows)

	got := make([]Row, len(rows))
	for _, col := range testSchema.Columns {
		descr, shape, data := readNPY(t, filepath.Join(dir, col.Name+".npy"))
		vals := float32sLE(data)
		if descr != "<f4" {
			t.Errorf("%s descr %s", col.Name, descr)
		}
		if col.Kind == Vector {
			if !reflect.DeepEqual(shape, []int{len(rows), col.Dim}) || len(vals) != len(rows)*col.Dim {
				t.Fatalf("%s: shape %v, %d values", col.Name, shape, len(vals))
			}
			for i := range rows {
				got[i].Values = append(got[i].Values, vals[i*col.Dim:(i+1)*col.Dim])
			}
			continue
		}
		odescr, oshape, odata := readNPY(t, filepath.Join(dir, col.Name+".offsets.npy"))
		if odescr != "<i8" || !reflect.DeepEqual(oshape, []int{len(rows) + 1}) || len(odata) != 8*(len(rows)+1) {
			t.Fatalf("%s offsets: %s %v %d bytes", col.Name, odescr, oshape, len(odata))
		}
		total := 0
		for _, r := range rows {
			total += r.Length
		}
		if !reflect.DeepEqual(shape, []int{total, col.Dim}) || len(vals) != total*col.Dim {
			t.Fatalf("%s: shape %v, want (%d, %d)", col.Name, shape, total, col.Dim)
		}
		for i := range rows {
			lo := int(binary.LittleEndian.Uint64(odata[8*i:]))
			hi := int(binary.LittleEndian.Uint64(odata[8*i+8:]))
			got[i].Values = append(got[i].Values, vals[lo*col.Dim:hi*col.Dim])
		}
	}

	f, err := os.Open(filepath.Join(dir, "records.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	if sc.Text() != "index\tid\tlength\ttruncated" {
		t.Errorf("header %q", sc.Text())
	}
	for i := 0; sc.Scan(); i++ {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) != 4 || i >= len(got) {
			t.Fatalf("records.tsv line %d: %q", i+2, sc.Text())
		}
		got[i].Index, _ = strconv.ParseInt(fs[0], 10, 64)
		got[i].ID = fs[1]
		got[i].Length, _ = strconv.Atoi(fs[2])
		got[i].Truncated, _ = strconv.ParseBool(fs[3])
	}
	compareRows(t, got, rows)

	b, err := os.ReadFile(filepath.Join(dir, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		LayoutVersion int               `json:"layout_version"`
		Format        string            `json:"format"`
		Records       int               `json:"records"`
		Columns       []columnMeta      `json:"columns"`
		Metadata      map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.Records != len(rows) || m.Format != "npy" || !reflect.DeepEqual(m.Metadata, testSchema.Metadata) ||
		m.Columns[1] != (columnMeta{Name: "per_tok_33", Kind: "matrix", Dim: 3, File: "per_tok_33.npy", Offsets: "per_tok_33.offsets.npy"}) {
		t.Errorf("metadata.json:\n%s", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 6 {
		t.Errorf("%d files in %s, want 6", len(ents), dir)
	}
}

func TestNPYHeaderFitsLargestShape(t *testing.T) {
	t.Parallel()
	h, err := npyHeader("<f4", math.MaxInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != npyHeaderLen || h[len(h)-1] != '\n' {
		t.Errorf("header %q", h)
	}
}

// ---- both formats ----

var formats = []Format{Parquet, NPY}

func TestEmptyOutput(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "empty")
			writeAll(t, path, f, testSchema, nil)
			if f == Parquet {
				got, _ := readParquet(t, path, testSchema)
				if len(got) != 0 {
					t.Errorf("%d rows", len(got))
				}
				return
			}
			_, shape, data := readNPY(t, filepath.Join(path, "per_tok_33.npy"))
			if !reflect.DeepEqual(shape, []int{0, 3}) || len(data) != 0 {
				t.Errorf("per_tok shape %v, %d bytes", shape, len(data))
			}
			_, shape, data = readNPY(t, filepath.Join(path, "per_tok_33.offsets.npy"))
			if !reflect.DeepEqual(shape, []int{1}) || len(data) != 8 {
				t.Errorf("offsets shape %v, %d bytes", shape, len(data))
			}
			_, shape, _ = readNPY(t, filepath.Join(path, "mean_33.npy"))
			if !reflect.DeepEqual(shape, []int{0, 5}) {
				t.Errorf("mean shape %v", shape)
			}
		})
	}
}

// dirEntries lists names in dir (temporaries included).
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestNothingPublishedBeforeCloseAndAbortCleans(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out")
			w, err := Create(path, f, testSchema)
			if err != nil {
				t.Fatal(err)
			}
			rows := testRows(testSchema)
			for i := range rows {
				if err := w.Write(&rows[i]); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("final path exists before Close: %v", err)
			}
			names := dirEntries(t, dir)
			if len(names) != 2 || names[0] != ".out.lock" || !strings.HasPrefix(names[1], ".out.tmp-") {
				t.Errorf("during write: %v, want the lock and one .out.tmp-*", names)
			}
			if err := w.Abort(); err != nil {
				t.Fatal(err)
			}
			if names := dirEntries(t, dir); len(names) != 0 {
				t.Errorf("after Abort: %v", names)
			}
			if err := w.Write(&rows[0]); err == nil {
				t.Error("Write after Abort succeeded")
			}
			if err := w.Abort(); err != nil {
				t.Errorf("second Abort: %v", err)
			}
		})
	}
}

func TestCloseLeavesOnlyFinal(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out")
			w, err := Create(path, f, testSchema)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if names := dirEntries(t, dir); !reflect.DeepEqual(names, []string{"out"}) {
				t.Errorf("after Close: %v", names)
			}
			want := os.FileMode(0o644)
			if f == NPY {
				want = 0o755 | os.ModeDir
			}
			if st, err := os.Stat(path); err != nil || st.Mode() != want {
				t.Errorf("final mode %v, want %v", st.Mode(), want)
			}
			if err := w.Abort(); err != nil {
				t.Errorf("Abort after Close: %v", err)
			}
			if _, err := os.Lstat(path); err != nil {
				t.Errorf("Abort after Close removed the output: %v", err)
			}
			if err := w.Close(); err == nil {
				t.Error("second Close succeeded")
			}
		})
	}
}

func TestOverwrite(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			for _, existing := range []string{"file", "npy output"} {
				dir := t.TempDir()
				path := filepath.Join(dir, "out")
				if existing == "file" {
					os.WriteFile(path, []byte("old"), 0o644)
				} else {
					writeAll(t, path, NPY, testSchema, testRows(testSchema)[:1])
				}
				if _, err := Create(path, f, testSchema); !errors.Is(err, ErrExists) {
					t.Fatalf("existing %s: Create error %v, want ErrExists", existing, err)
				}
				if names := dirEntries(t, dir); len(names) != 1 {
					t.Errorf("refused Create left %v", names)
				}
				w, err := CreateWithOptions(path, f, testSchema, Options{Overwrite: true})
				if err != nil {
					t.Fatal(err)
				}
				rows := testRows(testSchema)
				w.Write(&rows[0])
				if err := w.Close(); err != nil {
					t.Fatalf("existing %s: %v", existing, err)
				}
				if names := dirEntries(t, dir); !reflect.DeepEqual(names, []string{"out"}) {
					t.Errorf("existing %s: after overwrite %v", existing, names)
				}
				st, err := os.Stat(path)
				if err != nil || st.IsDir() != (f == NPY) {
					t.Errorf("existing %s: final is not a fresh %s output: %v", existing, f, err)
				}
			}
		})
	}
}

// TestPathAppearsBeforeClose: without Overwrite, Close must not clobber an
// output that appeared after Create.
func TestPathAppearsBeforeClose(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out")
			w, err := Create(path, f, testSchema)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(path, []byte("someone else"), 0o644)
			if err := w.Close(); !errors.Is(err, ErrExists) {
				t.Errorf("Close error %v, want ErrExists", err)
			}
			if b, _ := os.ReadFile(path); string(b) != "someone else" {
				t.Errorf("existing file clobbered")
			}
			if names := dirEntries(t, dir); len(names) != 1 {
				t.Errorf("left %v", names)
			}
		})
	}
}

func TestInvalidRows(t *testing.T) {
	t.Parallel()
	good := func() Row { return testRows(testSchema)[0] }
	cases := []struct {
		name   string
		mutate func(r *Row)
		want   string // substring of the error
	}{
		{"short vector", func(r *Row) { r.Values[0] = r.Values[0][:4] }, `column "mean_33"`},
		{"matrix vs length", func(r *Row) { r.Length++ }, `column "per_tok_33"`},
		{"missing column", func(r *Row) { r.Values = r.Values[:2] }, "2 value columns"},
		{"negative length", func(r *Row) { r.Length = -1 }, "negative length"},
		{"negative index", func(r *Row) { r.Index = -1 }, "negative index"},
		{"index not increasing", func(r *Row) { r.Index = 0 }, "not after previous"},
		{"NaN in a vector", func(r *Row) { r.Values[0][3] = float32(math.NaN()) }, "column mean_33: non-finite value: NaN at element 3"},
		{"+Inf in a matrix", func(r *Row) { r.Values[1][1*3+2] = float32(math.Inf(1)) }, "column per_tok_33: non-finite value: +Inf at residue 2, element 2"},
		{"-Inf last", func(r *Row) { v := r.Values[2]; v[len(v)-1] = float32(math.Inf(-1)) }, "non-finite value: -Inf"},
	}
	for _, f := range formats {
		for _, c := range cases {
			t.Run(string(f)+"/"+c.name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "out")
				w, err := Create(path, f, testSchema)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Abort()
				first := good()
				if err := w.Write(&first); err != nil {
					t.Fatal(err)
				}
				bad := good()
				bad.Index = 5
				c.mutate(&bad)
				err = w.Write(&bad)
				if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `"sp|P1|A"`) {
					t.Fatalf("error %v, want one naming the record and %q", err, c.want)
				}
				// A rejected row leaves the writer usable.
				next := good()
				next.Index = 6
				if err := w.Write(&next); err != nil {
					t.Fatalf("write after rejected row: %v", err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestInvalidSchemaAndFormat(t *testing.T) {
	t.Parallel()
	bad := []Schema{
		{Columns: []Column{{Name: "", Kind: Vector, Dim: 1}}},
		{Columns: []Column{{Name: "a/b", Kind: Vector, Dim: 1}}},
		{Columns: []Column{{Name: "id", Kind: Vector, Dim: 1}}},
		{Columns: []Column{{Name: "a", Kind: Vector, Dim: 0}}},
		{Columns: []Column{{Name: "a", Kind: Kind(7), Dim: 1}}},
		{Columns: []Column{{Name: "a", Kind: Vector, Dim: 1}, {Name: "a", Kind: Matrix, Dim: 1}}},
		{Metadata: map[string]string{metaKey: "x"}},
	}
	for i, s := range bad {
		if _, err := Create(filepath.Join(t.TempDir(), "out"), NPY, s); err == nil {
			t.Errorf("schema %d accepted", i)
		}
	}
	if _, err := Create(filepath.Join(t.TempDir(), "out"), Format("csv"), testSchema); err == nil {
		t.Error("format csv accepted")
	}
	for _, s := range []string{"parquet", "NPY", " npy"} {
		if _, err := ParseFormat(s); err != nil {
			t.Errorf("ParseFormat(%q): %v", s, err)
		}
	}
	if _, err := ParseFormat("hdf5"); err == nil {
		t.Error("ParseFormat(hdf5) succeeded")
	}
	if _, err := Create(filepath.Join(t.TempDir(), "no", "such", "dir", "out"), Parquet, testSchema); err == nil {
		t.Error("Create in a missing directory succeeded")
	}
}

// ---- benchmarks ----

// benchWrite writes n rows of each column and reports float payload MB/s.
func benchWrite(b *testing.B, f Format, col Column, n, length int) {
	benchWriteDType(b, f, Float32, col, n, length)
}

// benchWriteDType is benchWrite storing dtype d; MB/s counts the float32
// payload given to Write.
func benchWriteDType(b *testing.B, f Format, d DType, col Column, n, length int) {
	s := Schema{Columns: []Column{col}, DType: d}
	size := col.Dim
	if col.Kind == Matrix {
		size = length * col.Dim
	}
	// A pool of ~32 MiB of distinct Gaussian rows, more than any compressor
	// window, so the file sizes reflect real embeddings rather than repeats.
	rng := rand.New(rand.NewPCG(1, 2))
	pool := make([][]float32, max(1, min(n, (32<<20)/(4*size))))
	for p := range pool {
		pool[p] = make([]float32, size)
		for i := range pool[p] {
			pool[p][i] = float32(rng.NormFloat64())
		}
	}
	dir := b.TempDir()
	var fileBytes int64
	cpu0 := cpuSeconds()
	for b.Loop() {
		path := filepath.Join(dir, "out")
		w, err := CreateWithOptions(path, f, s, Options{Overwrite: true})
		if err != nil {
			b.Fatal(err)
		}
		r := Row{Length: length, Values: [][]float32{nil}}
		for i := range n {
			r.Values[0] = pool[i%len(pool)]
			r.ID = fmt.Sprintf("seq%d", i)
			r.Index = int64(i)
			if err := w.Write(&r); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		fileBytes = diskSize(b, path)
	}
	payload := float64(4 * size * n)
	reportCPU(b, cpu0, payload)
	b.SetBytes(int64(payload))
	b.ReportMetric(float64(fileBytes)/payload, "disk/raw")
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func diskSize(b *testing.B, path string) int64 {
	var total int64
	filepath.Walk(path, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
		return nil
	})
	return total
}

func BenchmarkWrite(b *testing.B) {
	mean := Column{Name: "mean_33", Kind: Vector, Dim: 1280}
	perTok := Column{Name: "per_tok_33", Kind: Matrix, Dim: 320}
	for _, f := range formats {
		b.Run(string(f)+"/mean_33_N10000_D1280", func(b *testing.B) { benchWrite(b, f, mean, 10000, 300) })
		b.Run(string(f)+"/per_tok_N500_L300_D320", func(b *testing.B) { benchWrite(b, f, perTok, 500, 300) })
	}
}

func TestFirstNonFinite(t *testing.T) {
	t.Parallel()
	for n := 0; n < 20; n++ {
		for bad := -1; bad < n; bad++ {
			for _, x := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
				v := make([]float32, n)
				for i := range v {
					v[i] = float32(i) - math.MaxFloat32/2
				}
				if bad >= 0 {
					v[bad] = x
				}
				if got := firstNonFinite(v); got != bad {
					t.Fatalf("n=%d bad=%d x=%v: got %d", n, bad, x, got)
				}
			}
		}
	}
}
