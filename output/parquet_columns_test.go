package output

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/parquet-go/parquet-go"
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
		w, err := Create(want, Parquet, s)
		if err != nil {
			t.Fatal(err)
		}
		pw := w.(*parquetWriter).pw
		var row parquet.Row
		var half []byte
		for i := range rows {
			row, half = encodeRow(row[:0], half, &rows[i], s.Columns, d)
			if _, err := pw.WriteRows([]parquet.Row{row}); err != nil {
				t.Fatal(err)
			}
			if (i+1)%groupRows == 0 {
				if err := pw.Flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
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
