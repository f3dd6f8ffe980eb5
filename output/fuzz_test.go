package output

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
)

// fuzzRows reads at most 1000 rows of path and checks what Next returns.
func fuzzRows(t *testing.T, path string) {
	r, err := Open(path)
	if err != nil {
		return
	}
	defer r.Close()
	s := r.Schema()
	if r.Len() < 0 {
		t.Fatalf("Len %d", r.Len())
	}
	var row Row
	for n := int64(0); n < 1000; n++ {
		err := r.Next(&row)
		if err == io.EOF {
			if n != r.Len() {
				t.Fatalf("io.EOF after %d rows, Len %d", n, r.Len())
			}
			return
		}
		if err != nil {
			if err2 := r.Next(&row); err2 == nil || err2 == io.EOF {
				t.Fatalf("Next after an error returned %v", err2)
			}
			return
		}
		if n >= r.Len() {
			t.Fatalf("row %d of %d", n, r.Len())
		}
		for i, c := range s.Columns {
			want := c.Dim
			if c.Kind == Matrix {
				want *= row.Length
			}
			if len(row.Values[i]) != want || firstNonFinite(row.Values[i]) >= 0 {
				t.Fatalf("row %d column %s: %d values, want %d, or non-finite", n, c.Name, len(row.Values[i]), want)
			}
		}
	}
}

func FuzzOpenParquet(f *testing.F) {
	dir := f.TempDir()
	add := func(name string, s Schema, rows []Row) []byte {
		p := filepath.Join(dir, name)
		writeAll(f, p, Parquet, s, rows)
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		return b
	}
	full := add("full", testSchema, testRows(testSchema))
	add("empty", testSchema, nil)
	add("float16", withDType(testSchema, Float16), dtypeRows())
	add("bfloat16", withDType(testSchema, BFloat16), dtypeRows()[:3])
	add("small", Schema{Columns: []Column{{Name: "m", Kind: Matrix, Dim: 1}}}, []Row{{ID: "a", Length: 2, Values: [][]float32{{1, 2}}}})
	f.Add(full[:len(full)/2])
	f.Add(append(append([]byte{}, full[:len(full)-9]...), 0, 0, 0, 0, 'P', 'A', 'R', '1'))
	fb := []byte{0x15, 0x02, 0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00}
	bomb := binary.LittleEndian.AppendUint32(append([]byte("PAR1"), fb...), uint32(len(fb)))
	f.Add(append(bomb, "PAR1"...))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "x.parquet")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		fuzzRows(t, p)
	})
}

func FuzzOpenNPY(f *testing.F) {
	base := filepath.Join(f.TempDir(), "emb")
	writeAll(f, base, NPY, testSchema, testRows(testSchema))
	names := []string{"metadata.json", "records.tsv", "mean_33.npy", "per_tok_33.npy", "per_tok_33.offsets.npy"}
	var orig [][]byte
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(base, n))
		if err != nil {
			f.Fatal(err)
		}
		orig = append(orig, b)
	}
	f.Add(orig[0], orig[1], orig[2], orig[3], orig[4])
	f.Add(orig[0], orig[1][:40], orig[2], orig[3][:200], orig[4])
	f.Add([]byte(`{"layout_version":1,"format":"npy","records":0,"columns":[]}`), []byte("index\tid\tlength\ttruncated\n"), orig[2], orig[3], orig[4])
	// A float16 output's files (its bos_33.npy is not given: the float32
	// one below stands in, so these seeds reach the dtype checks).
	base16 := filepath.Join(f.TempDir(), "emb16")
	writeAll(f, base16, NPY, withDType(testSchema, Float16), dtypeRows())
	var f16 [][]byte
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(base16, n))
		if err != nil {
			f.Fatal(err)
		}
		f16 = append(f16, b)
	}
	f.Add(f16[0], f16[1], f16[2], f16[3], f16[4])
	bos, err := os.ReadFile(filepath.Join(base, "bos_33.npy"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, meta, rec, mean, tok, off []byte) {
		dir := filepath.Join(t.TempDir(), "emb")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, b := range [][]byte{meta, rec, mean, tok, off} {
			if err := os.WriteFile(filepath.Join(dir, names[i]), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "bos_33.npy"), bos, 0o644); err != nil {
			t.Fatal(err)
		}
		fuzzRows(t, dir)
	})
}

// FuzzThriftWalk: whatever thriftWalk accepts, parquet-go's decoder can
// decode without a panic or a huge allocation.
func FuzzThriftWalk(f *testing.F) {
	p := filepath.Join(f.TempDir(), "x.parquet")
	writeAll(f, p, Parquet, testSchema, testRows(testSchema))
	b, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	n := int(binary.LittleEndian.Uint32(b[len(b)-8:]))
	f.Add(b[len(b)-8-n : len(b)-8])
	h := format.PageHeader{Type: format.DataPageV2, UncompressedPageSize: 100, CompressedPageSize: 90}
	h.DataPageHeaderV2.Valid = true
	hb, err := thrift.Marshal(new(thrift.CompactProtocol), &h)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(hb)
	f.Add([]byte{0x15, 0x02, 0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p pageFields
		n, err := thriftWalk(b, p.set)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with length %d", err, n)
			}
			return
		}
		if n < 1 || n > len(b) {
			t.Fatalf("length %d of %d bytes", n, len(b))
		}
		var md format.FileMetaData
		thrift.Unmarshal(new(thrift.CompactProtocol), b[:n], &md)
		var ph format.PageHeader
		thrift.Unmarshal(new(thrift.CompactProtocol), b[:n], &ph)
	})
}

// FuzzFloat16: for any float32 bits, the float16 and bfloat16 conversions
// round to a nearest value (within half a unit in the last place of the
// result), keep the sign, map NaN to NaN, and turn only the values
// firstOutOfRange refuses into Inf.
func FuzzFloat16(f *testing.F) {
	for _, x := range []float32{0, 1, -1, 65504, 65520, 0x1p-25, 0x1p-24, 0x1p-14, 3.14159, 1e38, 3.4e38} {
		f.Add(math.Float32bits(x))
	}
	f.Add(uint32(0x7fc00000)) // NaN
	f.Add(uint32(0x00000001)) // smallest float32 subnormal
	f.Add(uint32(0x7f7f8000)) // bfloat16's tie with Inf
	f.Fuzz(func(t *testing.T, bits uint32) {
		x := math.Float32frombits(bits)
		for _, d := range []DType{Float16, BFloat16} {
			q := quantize(x, d)
			switch {
			case math.IsNaN(float64(x)):
				if !math.IsNaN(float64(q)) {
					t.Fatalf("%s: NaN became %v", d, q)
				}
				continue
			case math.IsInf(float64(x), 0):
				if q != x {
					t.Fatalf("%s: %v became %v", d, x, q)
				}
				continue
			}
			refused := d.firstOutOfRange([]float32{x}) == 0
			if math.IsInf(float64(q), 0) != refused {
				t.Fatalf("%s: %v became %v, refused %v", d, x, q, refused)
			}
			if refused {
				continue
			}
			if math.Signbit(float64(q)) != math.Signbit(float64(x)) {
				t.Fatalf("%s: %v became %v (sign)", d, x, q)
			}
			// Half a unit in the last place of q: float16 has 10 stored
			// bits and a smallest step of 2^-24; bfloat16 7 bits and
			// float32's smallest normal exponent.
			mant, minExp := 10, -24
			if d == BFloat16 {
				mant, minExp = 7, -133
			}
			_, e := math.Frexp(math.Max(math.Abs(float64(q)), math.Abs(float64(x))))
			ulp := math.Ldexp(1, max(e-1-mant, minExp))
			if diff := math.Abs(float64(x) - float64(q)); diff > ulp/2 {
				t.Fatalf("%s: %v became %v, off by %g > half ulp %g", d, x, q, diff, ulp/2)
			}
		}
	})
}

// FuzzParquetWrite: records of fuzzed columns (kinds, dims, dtype),
// lengths and values, written in fuzzed row groups, give the bytes
// parquet-go's row-based Writer gives (parquet_columns.go), and read back
// as written.
func FuzzParquetWrite(f *testing.F) {
	f.Add([]byte{0, 3, 0x12, 2, 1, 0, 5, 9, 200, 7})
	f.Add([]byte{1, 1, 0x21, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	f.Add([]byte{2, 7, 0x33, 3, 40, 1, 0, 2, 250, 128, 127, 1})
	f.Add([]byte{0, 0, 0x00, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		next := func() byte {
			if len(b) == 0 {
				return 0
			}
			v := b[0]
			b = b[1:]
			return v
		}
		s := Schema{DType: dtypes[int(next())%len(dtypes)]}
		groupRows := 1 + int(next())%8
		spec := next()
		for i := range 1 + int(spec>>4)%3 {
			kind := Vector
			if spec>>i&1 == 1 {
				kind = Matrix
			}
			s.Columns = append(s.Columns, Column{Name: "c" + string(rune('a'+i)), Kind: kind, Dim: 1 + int(next())%9})
		}
		nrows := int(next()) % 24
		rows := make([]Row, nrows)
		for i := range rows {
			r := Row{ID: "r", Index: int64(i), Length: int(next()) % 12}
			for _, c := range s.Columns {
				n := c.Dim
				if c.Kind == Matrix {
					n *= r.Length
				}
				v := make([]float32, n)
				for j := range v {
					// Finite and within every dtype's range.
					v[j] = float32(int8(next())) / 8
				}
				r.Values = append(r.Values, v)
			}
			rows[i] = r
		}
		dir := t.TempDir()
		got := filepath.Join(dir, "columns.parquet")
		writeAllTuned(t, got, Parquet, s, rows, func(w Writer) {
			w.(*parquetWriter).maxGroupRows = groupRows
		})
		want := filepath.Join(dir, "rows.parquet")
		writeByRows(t, want, s, rows, groupRows)
		a, errA := os.ReadFile(got)
		c, errC := os.ReadFile(want)
		if errA != nil || errC != nil {
			t.Fatal(errA, errC)
		}
		if !bytes.Equal(a, c) {
			t.Fatalf("%d bytes, the row-based Writer's %d", len(a), len(c))
		}
		_, back := readOutput(t, got)
		if len(back) != len(rows) {
			t.Fatalf("read %d rows, wrote %d", len(back), len(rows))
		}
		for i := range rows {
			for k, v := range rows[i].Values {
				if len(back[i].Values[k]) != len(v) {
					t.Fatalf("row %d column %d: %d values, wrote %d", i, k, len(back[i].Values[k]), len(v))
				}
				for j, x := range v {
					if q := quantize(x, s.DType); back[i].Values[k][j] != q {
						t.Fatalf("row %d column %d value %d: %v, want %v", i, k, j, back[i].Values[k][j], q)
					}
				}
			}
		}
	})
}
