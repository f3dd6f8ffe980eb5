package output

import (
	"testing"

	"github.com/parquet-go/parquet-go"
)

// The row-based encoding the Writer used before it wrote columns through
// parquet-go's typed writer (parquet_columns.go): every value a
// parquet.Value. TestParquetColumnsSameBytes checks the two give the same
// bytes; tests use it to write rows past the Writer's checks.

// encodeRow appends r's values to row as parquet values, the embedding
// columns stored as dtype (half holds their 2-byte encoding, which the
// values point into), and returns row and half for reuse.
//
// Levels: a list<float32> leaf has max repetition 1 and max definition 1;
// list<list<float32>> has 2 and 2. The first value of a record repeats at
// level 0, the first of an inner list at 1, the rest at the list's depth.
// An empty outer list (Length 0) is one null at definition level 0.
func encodeRow(row parquet.Row, half []byte, r *Row, cols []Column, dtype DType) (parquet.Row, []byte) {
	row = append(row,
		parquet.ByteArrayValue([]byte(sanitizeID(r.ID))).Level(0, 0, colID),
		parquet.Int64Value(r.Index).Level(0, 0, colIndex),
		parquet.Int32Value(int32(r.Length)).Level(0, 0, colLength),
		parquet.BooleanValue(r.Truncated).Level(0, 0, colTruncated),
	)
	if dtype != Float32 {
		n := 0
		for _, v := range r.Values {
			n += len(v)
		}
		if cap(half) < 2*n {
			half = make([]byte, 2*n)
		}
	}
	used := half[:0]
	for i, col := range cols {
		ci := parquetFixedCols + i
		vals := r.Values[i]
		var enc []byte // vals as 2-byte items
		if dtype != Float32 {
			enc = used[len(used) : len(used)+2*len(vals)]
			used = used[:len(used)+2*len(vals)]
			dtype.encode16(enc, vals)
		}
		add := func(row parquet.Row, j, n, first, rep, def int) parquet.Row {
			if enc != nil {
				return appendHalves(row, enc[2*j:2*(j+n)], first, rep, def, ci)
			}
			return appendFloats(row, vals[j:j+n], first, rep, def, ci)
		}
		switch {
		case col.Kind == Vector:
			row = add(row, 0, len(vals), 0, 1, 1)
		case len(vals) == 0: // Matrix with Length 0
			row = append(row, parquet.Value{}.Level(0, 0, ci))
		default: // Matrix, (L, D)
			for j := 0; j < len(vals); j += col.Dim {
				first := 1 // a new residue
				if j == 0 {
					first = 0 // a new record
				}
				row = add(row, j, col.Dim, first, 2, 2)
			}
		}
	}
	return row, half
}

// appendFloats appends one innermost list of a leaf column: the first value
// repeats at level first, the others at rep, all defined at def. The pointer
// setters inline where Value.Level does not; this is the parquet hot path.
func appendFloats(row parquet.Row, vals []float32, first, rep, def, col int) parquet.Row {
	for j, x := range vals {
		v := parquet.FloatValue(x)
		if j == 0 {
			v.SetRepetitionLevel(first)
		} else {
			v.SetRepetitionLevel(rep)
		}
		v.SetDefinitionLevel(def)
		v.SetColumnIndex(col)
		row = append(row, v)
	}
	return row
}

// appendHalves is appendFloats for 2-byte items (float16, bfloat16): b holds
// the list's values, 2 bytes each; the Values point into b.
func appendHalves(row parquet.Row, b []byte, first, rep, def, col int) parquet.Row {
	for j := 0; j < len(b); j += 2 {
		v := parquet.FixedLenByteArrayValue(b[j : j+2 : j+2])
		if j == 0 {
			v.SetRepetitionLevel(first)
		} else {
			v.SetRepetitionLevel(rep)
		}
		v.SetDefinitionLevel(def)
		v.SetColumnIndex(col)
		row = append(row, v)
	}
	return row
}

// writeByRows writes rows to path through parquet-go's row writer (one
// parquet.Value per item, encodeRow), a row group every groupRows rows: the
// reference the column-by-column writer must equal byte for byte.
func writeByRows(t *testing.T, path string, s Schema, rows []Row, groupRows int) {
	t.Helper()
	w, err := Create(path, Parquet, s)
	if err != nil {
		t.Fatal(err)
	}
	pw := w.(*parquetWriter).pw
	var row parquet.Row
	var half []byte
	for i := range rows {
		row, half = encodeRow(row[:0], half, &rows[i], s.Columns, s.DType)
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
}
