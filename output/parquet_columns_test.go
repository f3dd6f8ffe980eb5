package output

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// columnTestRows are n records of columns cols, of random lengths up to
// maxLength, 0 and 1 included, and values that are exact, subnormal
// or need rounding in the 2-byte dtypes.
func columnTestRows(n, maxLength int, cols ...Column) (Schema, []Row) {
	s := Schema{Columns: cols}
	rng := rand.New(rand.NewPCG(7, 8))
	rows := make([]Row, n)
	for i := range rows {
		length := []int{0, 1, 2, 0, 1}[i%5]
		if i >= 5 {
			length = rng.IntN(maxLength + 1)
		}
		r := Row{ID: "r" + strconv.Itoa(i), Index: int64(i), Length: length, Truncated: i%3 == 1}
		for _, c := range s.Columns {
			size := c.Dim
			if c.Kind == Matrix {
				size *= length
			}
			v := make([]float32, size)
			for j := range v {
				switch j % 4 {
				case 0:
					v[j] = float32(rng.NormFloat64())
				case 1:
					v[j] = float32(j%64) - 7
				case 2:
					v[j] = 3e-6 * float32(rng.NormFloat64()) // float16 subnormal
				default:
					v[j] = float32(rng.NormFloat64()) * 1000
				}
			}
			r.Values = append(r.Values, v)
		}
		rows[i] = r
	}
	return s, rows
}

// TestParquetColumnsRoundTrip: per-token and vector columns of every
// dtype come back as written (rounded to the dtype), whatever the group
// boundaries.
func TestParquetColumnsRoundTrip(t *testing.T) {
	t.Parallel()
	s, rows := columnTestRows(40, 40, smallColumns...)
	for _, d := range dtypes {
		for _, groupRows := range []int{1, 7, 1000} {
			path := filepath.Join(t.TempDir(), "emb.parquet")
			writeAllTuned(t, path, Parquet, withDType(s, d), rows, func(w Writer) {
				w.(*parquetWriter).maxGroupRows = groupRows
			})
			_, got := readOutput(t, path)
			want := make([]Row, len(rows))
			for i := range rows {
				want[i] = cloneRow(&rows[i])
				for _, v := range want[i].Values {
					for j, x := range v {
						v[j] = quantize(x, d)
					}
				}
			}
			compareRows(t, got, want)
		}
	}
}

// TestParquetColumnsSameBytes: the Writer's files are, byte for byte, the
// ones parquet-go's row-based Writer writes from the same rows as
// parquet.Values (encodeRow), so readers see no change.
func TestParquetColumnsSameBytes(t *testing.T) {
	t.Parallel()
	t.Run("small", func(t *testing.T) { testSameBytes(t, 10, smallColumns, 23, 40) })
	// Records of up to 400 KB: several pages per column chunk.
	big := []Column{{Name: "per_tok_33", Kind: Matrix, Dim: 1280}, {Name: "mean_33", Kind: Vector, Dim: 1280}}
	t.Run("pages", func(t *testing.T) { testSameBytes(t, 4, big, 9, 80) })
}

var smallColumns = []Column{
	{Name: "per_tok_3", Kind: Matrix, Dim: 5},
	{Name: "mean_3", Kind: Vector, Dim: 3},
	{Name: "per_tok_1", Kind: Matrix, Dim: 1},
}

func testSameBytes(t *testing.T, groupRows int, cols []Column, n, maxLength int) {
	s, rows := columnTestRows(n, maxLength, cols...)
	for _, d := range dtypes {
		s := withDType(s, d)
		dir := t.TempDir()
		got := filepath.Join(dir, "columns.parquet")
		writeAllTuned(t, got, Parquet, s, rows, func(w Writer) {
			w.(*parquetWriter).maxGroupRows = groupRows
		})

		want := filepath.Join(dir, "rows.parquet")
		writeByRows(t, want, s, rows, groupRows)
		a, err := os.ReadFile(got)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(want)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			n := 0
			for n < min(len(a), len(b)) && a[n] == b[n] {
				n++
			}
			t.Errorf("%s: %d bytes, the row-based Writer's %d; first difference at byte %d", d, len(a), len(b), n)
		}
	}
}

// TestSegmentsReadAt: reads at any offset and length across pieces give
// the bytes of the pieces end to end, and io.EOF past the end.
func TestSegmentsReadAt(t *testing.T) {
	t.Parallel()
	var s segments
	var all []byte
	for i, n := range []int{4, 1, 0, 7, 3, 16} {
		b := bytes.Repeat([]byte{byte(i + 1)}, n)
		for j := range b {
			b[j] += byte(j * 16)
		}
		s.add(b)
		all = append(all, b...)
	}
	if s.size != int64(len(all)) {
		t.Fatalf("size %d, want %d", s.size, len(all))
	}
	for off := 0; off <= len(all)+1; off++ {
		for n := 0; n <= len(all)+1; n++ {
			p := make([]byte, n)
			got, err := s.ReadAt(p, int64(off))
			want := max(0, min(n, len(all)-off))
			if got != want || !bytes.Equal(p[:got], all[min(off, len(all)):min(off, len(all))+want]) {
				t.Fatalf("ReadAt(%d bytes, %d) = %d %q, want %d", n, off, got, p[:got], want)
			}
			// As bytes.Reader: io.EOF for a short read and at or past the end.
			if (err == io.EOF) != (want < n || off >= len(all)) || (err != nil && err != io.EOF) {
				t.Fatalf("ReadAt(%d bytes, %d): error %v", n, off, err)
			}
		}
	}
	if _, err := s.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at -1: no error")
	}
}

// TestPagePool: get hands out the smallest free buffer that fits without
// wasting more than half of it, else a new one; put keeps at most limit
// bytes.
func TestPagePool(t *testing.T) {
	t.Parallel()
	p := pagePool{limit: 100}
	for _, c := range []int{10, 40, 25} {
		p.put(make([]byte, 3, c))
	}
	p.put(make([]byte, 0, 30)) // 105 bytes: over the limit, dropped
	if p.bytes != 75 || len(p.free) != 3 {
		t.Fatalf("pool holds %d bytes in %d buffers, want 75 in 3", p.bytes, len(p.free))
	}
	if b := p.get(20); cap(b) != 25 || len(b) != 0 {
		t.Errorf("get(20): len %d cap %d, want the free buffer of 25, empty", len(b), cap(b))
	}
	if b := p.get(15); cap(b) != 15 {
		t.Errorf("get(15): cap %d, want a new buffer of 15 (40 wastes more than half)", cap(b))
	}
	if b := p.get(21); cap(b) != 40 {
		t.Errorf("get(21): cap %d, want the free buffer of 40", cap(b))
	}
	if p.bytes != 10 || len(p.free) != 1 {
		t.Errorf("pool holds %d bytes in %d buffers, want 10 in 1", p.bytes, len(p.free))
	}
	var nilPool *pagePool
	nilPool.put(make([]byte, 8)) // a no-op
}
