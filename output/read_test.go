package output

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/internal/memcap"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
)

func cloneRow(r *Row) Row {
	c := *r
	c.Values = make([][]float32, len(r.Values))
	for i, v := range r.Values {
		c.Values[i] = append([]float32{}, v...)
	}
	return c
}

// readOutput opens path and returns its schema and rows (copied out of the
// reused Row), failing the test on any error.
func readOutput(t testing.TB, path string) (Schema, []Row) {
	t.Helper()
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []Row
	var row Row
	for {
		err := r.Next(&row)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cloneRow(&row))
	}
	if int64(len(out)) != r.Len() {
		t.Errorf("%d rows read, Len %d", len(out), r.Len())
	}
	if err := r.Next(&row); err != io.EOF {
		t.Errorf("Next after the end: %v, want io.EOF", err)
	}
	return r.Schema(), out
}

// readErr opens path and reads it to the end, returning the first error.
func readErr(path string) error {
	r, err := Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	var row Row
	for {
		if err := r.Next(&row); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func TestOpenRoundTrip(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "emb")
			rows := testRows(testSchema)
			writeAll(t, path, f, testSchema, rows)
			r, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if r.Format() != f || r.Len() != int64(len(rows)) {
				t.Errorf("format %s, len %d; want %s, %d", r.Format(), r.Len(), f, len(rows))
			}
			r.Close()
			s, got := readOutput(t, path)
			compareRows(t, got, rows)
			if want := withDType(testSchema, Float32); !reflect.DeepEqual(s, want) {
				t.Errorf("schema %+v, want %+v", s, want)
			}
		})
	}
}

func TestOpenEmptyAndManyRowGroups(t *testing.T) {
	t.Parallel()
	s := Schema{Columns: []Column{{Name: "m", Kind: Matrix, Dim: 2}, {Name: "v", Kind: Vector, Dim: 1}}}
	var rows []Row
	for i := range parquetMaxGroupRows*2 + 7 { // three row groups
		L := i % 3
		m := make([]float32, 2*L)
		for j := range m {
			m[j] = float32(i + j)
		}
		rows = append(rows, Row{ID: strconv.Itoa(i), Index: int64(i), Length: L, Values: [][]float32{m, {float32(-i)}}})
	}
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeAll(t, filepath.Join(dir, "empty"), f, s, nil)
			if _, got := readOutput(t, filepath.Join(dir, "empty")); len(got) != 0 {
				t.Errorf("empty output: %d rows", len(got))
			}
			writeAll(t, filepath.Join(dir, "many"), f, s, rows)
			_, got := readOutput(t, filepath.Join(dir, "many"))
			compareRows(t, got, rows)
		})
	}
}

// corruptNPY writes a valid npy output, lets edit change it, and returns the
// error of reading it.
func corruptNPY(t *testing.T, edit func(dir string)) error {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "emb")
	writeAll(t, dir, NPY, testSchema, testRows(testSchema))
	edit(dir)
	return readErr(dir)
}

func rewrite(t *testing.T, path string, f func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesCorruptNPY(t *testing.T) {
	t.Parallel()
	perTok := func(dir string) string { return filepath.Join(dir, "per_tok_33.npy") }
	offsets := func(dir string) string { return filepath.Join(dir, "per_tok_33.offsets.npy") }
	records := func(dir string) string { return filepath.Join(dir, "records.tsv") }
	meta := func(dir string) string { return filepath.Join(dir, "metadata.json") }
	setOffset := func(t *testing.T, dir string, i int, v int64) {
		rewrite(t, offsets(dir), func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[npyHeaderLen+8*i:], uint64(v))
			return b
		})
	}
	replace := func(old, new string) func([]byte) []byte {
		return func(b []byte) []byte {
			if !bytes.Contains(b, []byte(old)) {
				t.Fatalf("%q not found", old)
			}
			return bytes.Replace(b, []byte(old), []byte(new), 1)
		}
	}
	cases := []struct {
		name string
		edit func(t *testing.T, dir string)
		want string
	}{
		{"truncated array", func(t *testing.T, dir string) {
			rewrite(t, perTok(dir), func(b []byte) []byte { return b[:len(b)-5] })
		}, "per_tok_33.npy: shape [323 3] needs 3876 data bytes but the file holds 3871 (truncated or corrupt)"},
		{"bad magic", func(t *testing.T, dir string) {
			rewrite(t, perTok(dir), func(b []byte) []byte { b[0] = 'x'; return b })
		}, "per_tok_33.npy: not an NPY file"},
		{"huge shape", func(t *testing.T, dir string) {
			rewrite(t, perTok(dir), replace("(323, 3)", "(3074457345618258602, 3)"))
		}, "is too large"},
		{"huge header length", func(t *testing.T, dir string) {
			rewrite(t, perTok(dir), func(b []byte) []byte { b[6] = 2; return b[:12] })
		}, "NPY header of"},
		{"wrong dtype", func(t *testing.T, dir string) {
			rewrite(t, perTok(dir), replace("<f4", "<f8"))
		}, "dtype \"<f8\", want <f4"},
		{"fortran", func(t *testing.T, dir string) {
			rewrite(t, perTok(dir), replace("False", "True "))
		}, "Fortran order"},
		{"wrong dim", func(t *testing.T, dir string) {
			rewrite(t, filepath.Join(dir, "mean_33.npy"), replace("(6, 5)", "(5, 6)"))
		}, "want (rows, 5)"},
		{"first offset", func(t *testing.T, dir string) { setOffset(t, dir, 0, 1) }, "first offset 1, want 0"},
		{"last offset", func(t *testing.T, dir string) { setOffset(t, dir, 6, 322) }, "last offset 322"},
		{"decreasing offset", func(t *testing.T, dir string) { setOffset(t, dir, 2, 3) }, "offset 3 after 7"},
		{"offset beyond the array", func(t *testing.T, dir string) { setOffset(t, dir, 3, 1<<40) }, "is outside [8, 323]"},
		{"length disagrees with offsets", func(t *testing.T, dir string) {
			rewrite(t, records(dir), replace("\t13\t", "\t12\t"))
		}, "has 13 residues, records.tsv line 5 says length 12"},
		{"missing record", func(t *testing.T, dir string) {
			rewrite(t, records(dir), func(b []byte) []byte {
				i := bytes.LastIndexByte(b[:len(b)-1], '\n')
				return b[:i+1]
			})
		}, "records.tsv: 5 records, metadata.json says 6"},
		{"extra record", func(t *testing.T, dir string) {
			rewrite(t, records(dir), func(b []byte) []byte { return append(b, "99\tx\t0\tfalse\n"...) })
		}, "more than the 6 records"},
		{"no final newline", func(t *testing.T, dir string) {
			rewrite(t, records(dir), func(b []byte) []byte { return b[:len(b)-1] })
		}, "no final newline"},
		{"long line", func(t *testing.T, dir string) {
			rewrite(t, records(dir), replace("\tx\t", "\t"+strings.Repeat("x", maxRecordLine)+"\t"))
		}, "longer than 262144 bytes"},
		{"bad truncated field", func(t *testing.T, dir string) {
			rewrite(t, records(dir), replace("\tfalse\n", "\t0\n"))
		}, "truncated \"0\" is not true or false"},
		{"unsorted index", func(t *testing.T, dir string) {
			rewrite(t, records(dir), replace("\n4\t", "\n1\t"))
		}, "index 1 not after previous index 2"},
		{"header", func(t *testing.T, dir string) {
			rewrite(t, records(dir), replace("index\tid", "idx\tid"))
		}, "records.tsv: header"},
		{"NaN", func(t *testing.T, dir string) {
			rewrite(t, perTok(dir), func(b []byte) []byte {
				binary.LittleEndian.PutUint32(b[npyHeaderLen+4*(3*9+1):], math.Float32bits(float32(math.NaN())))
				return b
			})
		}, "record 6 (\"new line\") column per_tok_33: non-finite value: NaN at residue 2, element 1"},
		{"path in metadata", func(t *testing.T, dir string) {
			rewrite(t, meta(dir), replace(`"file": "mean_33.npy"`, `"file": "../mean_33.npy"`))
		}, "are not the layout's"},
		{"record count", func(t *testing.T, dir string) {
			rewrite(t, meta(dir), replace(`"records": 6`, `"records": 7`))
		}, "mean_33.npy: 6 rows, metadata.json says 7 records"},
		{"metadata too large", func(t *testing.T, dir string) {
			rewrite(t, meta(dir), func(b []byte) []byte { return append(b, bytes.Repeat([]byte(" "), maxMetadataJSON)...) })
		}, "larger than 1048576 bytes"},
		{"layout version", func(t *testing.T, dir string) {
			rewrite(t, meta(dir), replace(`"layout_version": 1`, `"layout_version": 3`))
		}, "layout_version 3"},
		{"missing array", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "bos_33.npy"))
		}, "bos_33.npy: no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := corruptNPY(t, func(dir string) { c.edit(t, dir) })
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "output: ") || !strings.Contains(err.Error(), "emb") {
				t.Errorf("error %q does not name the output", err)
			}
		})
	}
}

func TestOpenNPYNonFiniteIsErrNonFinite(t *testing.T) {
	t.Parallel()
	err := corruptNPY(t, func(dir string) {
		rewrite(t, filepath.Join(dir, "bos_33.npy"), func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[npyHeaderLen+4:], math.Float32bits(float32(math.Inf(-1))))
			return b
		})
	})
	if !errors.Is(err, ErrNonFinite) {
		t.Fatalf("error %v, want ErrNonFinite", err)
	}
}

func TestParseNPYDict(t *testing.T) {
	t.Parallel()
	good := []struct {
		h     string
		shape []int64
	}{
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }   \n", []int64{3, 4}},
		{"{\"descr\":'<f4','fortran_order':False,'shape':(7,)}\n", []int64{7}},
		{"{'shape': (), 'fortran_order': False, 'descr': '<f4'}", nil},
	}
	for _, g := range good {
		d, f, s, err := parseNPYDict(g.h)
		if err != nil || d != "<f4" || f || !reflect.DeepEqual(s, g.shape) {
			t.Errorf("%q: %q %v %v %v", g.h, d, f, s, err)
		}
	}
	bad := []string{
		"", "{", "{'descr': '<f4'}", "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
		"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
		"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
		"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
		"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x",
		"{'descr': '<f4\\'', 'fortran_order': False, 'shape': (1,)}",
		"{'descr': '<f4', 'fortran_order': Nope, 'shape': (1,)}",
		"{'descr': '<f4', 'fortran_order': False, 'shape': (" + strings.Repeat("1,", 40) + ")}",
	}
	for _, h := range bad {
		if _, _, _, err := parseNPYDict(h); err == nil {
			t.Errorf("%q: no error", h)
		}
	}
}

// ---- parquet ----

func writeTestParquet(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "emb.parquet")
	writeAll(t, path, Parquet, testSchema, testRows(testSchema))
	return path
}

// parquetFooter decodes the footer of the parquet file b.
func parquetFooter(t *testing.T, b []byte) (format.FileMetaData, int) {
	t.Helper()
	n := int(binary.LittleEndian.Uint32(b[len(b)-8:]))
	var md format.FileMetaData
	if err := thrift.Unmarshal(new(thrift.CompactProtocol), b[len(b)-8-n:len(b)-8], &md); err != nil {
		t.Fatal(err)
	}
	return md, len(b) - 8 - n
}

// withFooter returns b's data (up to its footer) plus extra, then footer md.
func withFooter(t *testing.T, b []byte, extra []byte, md *format.FileMetaData) []byte {
	t.Helper()
	_, start := parquetFooter(t, b)
	out := append(append([]byte{}, b[:start]...), extra...)
	f, err := thrift.Marshal(new(thrift.CompactProtocol), md)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, f...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(f)))
	return append(out, "PAR1"...)
}

// hostilePage makes a parquet file whose per_tok_33 chunk in row group 0
// is a single page with header h and body, appended after the real data.
func hostilePage(t *testing.T, h format.PageHeader, body []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(writeTestParquet(t))
	if err != nil {
		t.Fatal(err)
	}
	md, start := parquetFooter(t, b)
	hb, err := thrift.Marshal(new(thrift.CompactProtocol), &h)
	if err != nil {
		t.Fatal(err)
	}
	page := append(hb, body...)
	cc := &md.RowGroups[0].Columns[parquetFixedCols+1].MetaData
	cc.DataPageOffset = int64(start)
	cc.DictionaryPageOffset = 0
	cc.TotalCompressedSize = int64(len(page))
	cc.Codec = format.Snappy // embedding values are written uncompressed; these pages test the snappy bounds
	return withFooter(t, b, page, &md)
}

func writeBytes(t *testing.T, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.parquet")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpenRefusesCorruptParquet(t *testing.T) {
	t.Parallel()
	orig, err := os.ReadFile(writeTestParquet(t))
	if err != nil {
		t.Fatal(err)
	}
	md, start := parquetFooter(t, orig)
	dataPage := func(n int32, unc, comp int32) format.PageHeader {
		h := format.PageHeader{Type: format.DataPageV2, UncompressedPageSize: unc, CompressedPageSize: comp}
		h.DataPageHeaderV2.Valid = true
		h.DataPageHeaderV2.V = format.DataPageHeaderV2{NumValues: n, NumRows: 1}
		return h
	}
	cases := []struct {
		name string
		file func(t *testing.T) []byte
		want string
	}{
		{"truncated", func(t *testing.T) []byte { return orig[:len(orig)/2] }, "bad magic"},
		{"tiny", func(t *testing.T) []byte { return []byte("PAR1") }, "too short"},
		{"footer length", func(t *testing.T) []byte {
			b := append([]byte{}, orig...)
			binary.LittleEndian.PutUint32(b[len(b)-8:], 1<<31)
			return b
		}, "parquet footer of 2147483648 bytes"},
		{"footer list bomb", func(t *testing.T) []byte {
			// FileMetaData field 2 (schema): a list of 2^31-1 structs in a
			// few bytes; decoding it would allocate ~1 TiB.
			f := []byte{0x15, 0x02, 0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00}
			b := append([]byte("PAR1"), f...)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
			return append(b, "PAR1"...)
		}, "list of 2147483647 elements in 1 bytes"},
		{"chunk outside the file", func(t *testing.T) []byte {
			m := md
			m.RowGroups = append([]format.RowGroup{}, md.RowGroups...)
			m.RowGroups[0].Columns = append([]format.ColumnChunk{}, md.RowGroups[0].Columns...)
			m.RowGroups[0].Columns[5].MetaData.TotalCompressedSize = 1 << 40
			return withFooter(t, orig, nil, &m)
		}, "row group 0 column 5: chunk at"},
		{"page larger than the chunk", func(t *testing.T) []byte {
			return hostilePage(t, dataPage(10, 1<<30, 1<<30), make([]byte, 16))
		}, "compressed size 1073741824, 16 bytes left in the chunk"},
		{"uncompressed size bomb", func(t *testing.T) []byte {
			return hostilePage(t, dataPage(10, 1<<30, 16), make([]byte, 16))
		}, "uncompressed size 1073741824 impossible for 16 compressed bytes"},
		{"value count bomb", func(t *testing.T) []byte {
			return hostilePage(t, dataPage(1<<30, 300, 16), make([]byte, 16))
		}, "1073741824 values in 300 bytes"},
		{"snappy length bomb", func(t *testing.T) []byte {
			body := binary.AppendUvarint(nil, 1<<31)
			body = append(body, make([]byte, 16)...)
			return hostilePage(t, dataPage(10, 300, int32(len(body))), body)
		}, "snappy block declares 2147483648 bytes, the page 300"},
		{"page type", func(t *testing.T) []byte {
			h := dataPage(1, 16, 16)
			h.Type = format.IndexPage
			return hostilePage(t, h, make([]byte, 16))
		}, "page type 1 not supported"},
		{"garbage page", func(t *testing.T) []byte {
			return hostilePage(t, dataPage(60, 200, 16), bytes.Repeat([]byte{0xff}, 16))
		}, "row group 0"},
		{"negative child count", func(t *testing.T) []byte {
			// parquet-go v0.32 panics on this; the reader returns an error.
			m := md
			m.Schema = append([]format.SchemaElement{}, md.Schema...)
			for i := range m.Schema {
				if m.Schema[i].Name == "per_tok_33" {
					m.Schema[i].NumChildren.V = -1
				}
			}
			return withFooter(t, orig, nil, &m)
		}, "malformed parquet file (the parquet library failed: runtime error: slice bounds out of range"},
		{"no layout metadata", func(t *testing.T) []byte {
			m := md
			m.KeyValueMetadata = nil
			return withFooter(t, orig, nil, &m)
		}, `no "esm2go.output" metadata`},
		{"layout disagrees with schema", func(t *testing.T) []byte {
			m := md
			m.KeyValueMetadata = append([]format.KeyValue{}, md.KeyValueMetadata...)
			for i, kv := range m.KeyValueMetadata {
				if kv.Key == metaKey {
					m.KeyValueMetadata[i].Value = strings.Replace(kv.Value, `"dim":5`, `"dim":4`, 1)
				}
			}
			return withFooter(t, orig, nil, &m)
		}, "record 0: row group 0 row 0: column mean_33: 5 values, want 4"},
		{"row count", func(t *testing.T) []byte {
			m := md
			m.RowGroups = append([]format.RowGroup{}, md.RowGroups...)
			m.RowGroups[0].NumRows++
			m.NumRows++
			return withFooter(t, orig, nil, &m)
		}, "row group 0: 6 rows, it declares 7"},
	}
	_ = start
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := writeBytes(t, c.file(t))
			err := readErr(path)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "output: ") || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

// TestOpenHostileUnderMemoryCap reads the bombs under a 256 MiB address-space
// cap: each would make parquet-go (or a naive npy reader) allocate GiBs.
func TestOpenHostileUnderMemoryCap(t *testing.T) {
	t.Parallel()
	memcap.Run(t, 256<<20, func(t *testing.T) {
		dataPage := func(n int32, unc, comp int32) format.PageHeader {
			h := format.PageHeader{Type: format.DataPageV2, UncompressedPageSize: unc, CompressedPageSize: comp}
			h.DataPageHeaderV2.Valid = true
			h.DataPageHeaderV2.V = format.DataPageHeaderV2{NumValues: n, NumRows: 1}
			return h
		}
		body := binary.AppendUvarint(nil, 1<<31)
		body = append(body, make([]byte, 16)...)
		files := [][]byte{
			hostilePage(t, dataPage(10, 1<<30, 16), make([]byte, 16)),
			hostilePage(t, dataPage(1<<30, 300, 16), make([]byte, 16)),
			hostilePage(t, dataPage(10, 300, int32(len(body))), body),
		}
		f := []byte{0x15, 0x02, 0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00}
		bomb := append([]byte("PAR1"), f...)
		bomb = binary.LittleEndian.AppendUint32(bomb, uint32(len(f)))
		files = append(files, append(bomb, "PAR1"...))
		for i, b := range files {
			if err := readErr(writeBytes(t, b)); err == nil {
				t.Errorf("file %d: no error", i)
			}
		}
		dir := filepath.Join(t.TempDir(), "emb")
		writeAll(t, dir, NPY, testSchema, testRows(testSchema))
		rewrite(t, filepath.Join(dir, "per_tok_33.offsets.npy"), func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[npyHeaderLen+8:], 1<<40)
			return b
		})
		if err := readErr(dir); err == nil {
			t.Error("npy offsets bomb: no error")
		}
	})
}

func TestOpenParquetNonFinite(t *testing.T) {
	t.Parallel()
	// The Writer refuses NaN, so write the row past its checks.
	path := filepath.Join(t.TempDir(), "nan.parquet")
	s := Schema{Columns: []Column{{Name: "v", Kind: Vector, Dim: 2}}}
	w, err := Create(path, Parquet, s)
	if err != nil {
		t.Fatal(err)
	}
	pw := w.(*parquetWriter)
	row := parquet.Row{
		parquet.ByteArrayValue([]byte("a")).Level(0, 0, colID),
		parquet.Int64Value(3).Level(0, 0, colIndex),
		parquet.Int32Value(0).Level(0, 0, colLength),
		parquet.BooleanValue(false).Level(0, 0, colTruncated),
		parquet.FloatValue(1).Level(0, 1, 4),
		parquet.FloatValue(float32(math.NaN())).Level(1, 1, 4),
	}
	if _, err := pw.pw.WriteRows([]parquet.Row{row}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	err = readErr(path)
	if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), `record 3 ("a") column v: non-finite value: NaN at element 1`) {
		t.Fatalf("error %v, want ErrNonFinite naming the record", err)
	}
}

func TestThriftWalk(t *testing.T) {
	t.Parallel()
	md, _ := parquetFooter(t, mustRead(t, writeTestParquet(t)))
	b, err := thrift.Marshal(new(thrift.CompactProtocol), &md)
	if err != nil {
		t.Fatal(err)
	}
	n, err := thriftWalk(b, nil)
	if err != nil || n != len(b) {
		t.Fatalf("walk of a real footer: %d of %d bytes, %v", n, len(b), err)
	}
	for cut := range len(b) {
		if _, err := thriftWalk(b[:cut], nil); !errors.Is(err, errThriftShort) {
			t.Fatalf("footer cut to %d bytes: %v, want errThriftShort", cut, err)
		}
	}
	// Every field a page check reads arrives with its path.
	h := format.PageHeader{Type: format.DataPageV2, UncompressedPageSize: 1000, CompressedPageSize: 900}
	h.DataPageHeaderV2.Valid = true
	h.DataPageHeaderV2.V = format.DataPageHeaderV2{NumValues: 70, NumNulls: 3, NumRows: 5, DefinitionLevelsByteLength: 7, RepetitionLevelsByteLength: 9}
	h.DataPageHeaderV2.V.IsCompressed.Valid, h.DataPageHeaderV2.V.IsCompressed.V = true, false
	hb, err := thrift.Marshal(new(thrift.CompactProtocol), &h)
	if err != nil {
		t.Fatal(err)
	}
	p := pageFields{numRows: -1, isCompressed: -1}
	if n, err := thriftWalk(append(hb, 1, 2, 3), p.set); err != nil || n != len(hb) {
		t.Fatalf("page header: %d of %d bytes, %v", n, len(hb), err)
	}
	want := pageFields{typ: 3, uncompressed: 1000, compressed: 900, numValues: 70, numNulls: 3, numRows: 5, repLen: 9, defLen: 7, isCompressed: 0, nValueFields: 1}
	if p != want {
		t.Errorf("page fields %+v, want %+v", p, want)
	}
	// Many empty structs: each byte could cost a 640-byte struct.
	structs := func(n int) []byte {
		b := binary.AppendUvarint([]byte{0x19, 0xfc}, uint64(n))
		return append(append(b, make([]byte, n)...), 0)
	}
	if _, err := thriftWalk(structs(1000), nil); err != nil {
		t.Errorf("1000 empty structs: %v", err)
	}
	if _, err := thriftWalk(structs(1<<20), nil); err == nil || !strings.Contains(err.Error(), "would take about 641 MiB to decode (at most 304)") {
		t.Errorf("1 Mi empty structs: %v", err)
	}
	// Deep nesting is refused, not recursed into.
	deep := bytes.Repeat([]byte{0x1c}, 10000) // field +1, type struct
	if _, err := thriftWalk(deep, nil); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
		t.Errorf("deep nesting: %v", err)
	}
}

// TestThriftStructSize keeps thriftStructSize an upper bound of the Go size
// of every struct type the footer, page header and page index decode into.
func TestThriftStructSize(t *testing.T) {
	t.Parallel()
	seen := map[reflect.Type]bool{}
	stack := []reflect.Type{reflect.TypeFor[format.FileMetaData](), reflect.TypeFor[format.PageHeader](),
		reflect.TypeFor[format.ColumnIndex](), reflect.TypeFor[format.OffsetIndex]()}
	var largest reflect.Type
	for len(stack) > 0 {
		ty := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[ty] {
			continue
		}
		seen[ty] = true
		switch ty.Kind() {
		case reflect.Struct:
			if largest == nil || ty.Size() > largest.Size() {
				largest = ty
			}
			for i := range ty.NumField() {
				stack = append(stack, ty.Field(i).Type)
			}
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
			stack = append(stack, ty.Elem())
		}
	}
	if largest.Size() > thriftStructSize {
		t.Errorf("%s is %d bytes, more than thriftStructSize %d", largest, largest.Size(), thriftStructSize)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
