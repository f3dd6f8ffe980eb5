package output

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// TestTableWriter: columns in the order given with their types, rows in
// order across several row groups, invalid UTF-8 made valid, metadata
// kept; a row of the wrong shape is an error.
func TestTableWriter(t *testing.T) {
	t.Parallel()
	cols := []TableColumn{{"id", TableString}, {"mutant", TableString}, {"masked_marginals", TableFloat64}, {"note", TableString}, {"pll", TableFloat64}}
	var buf bytes.Buffer
	w, err := NewTableWriter(&buf, cols, map[string]string{"model": "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	n := tableGroupRows + 1000 // two row groups
	for i := range n {
		id := fmt.Sprint("P", i%7)
		if i == 3 {
			id = "bad\xff"
		}
		if err := w.WriteRow([]string{id, fmt.Sprint("A", i, "G"), fmt.Sprint(i % 3)}, []float64{float64(i) / 8, -float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteRow([]string{"x"}, []float64{1, 2}); err == nil {
		t.Error("a row of one string was accepted")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := parquet.OpenFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Lookup("model"); v != "tiny" {
		t.Errorf("metadata model = %q", v)
	}
	fields := f.Schema().Fields()
	for i, c := range cols {
		if fields[i].Name() != c.Name {
			t.Fatalf("column %d is %s, want %s", i, fields[i].Name(), c.Name)
		}
	}
	if len(f.RowGroups()) != 2 || f.NumRows() != int64(n) {
		t.Fatalf("%d row groups, %d rows", len(f.RowGroups()), f.NumRows())
	}
	r := parquet.NewReader(f)
	rows := make([]parquet.Row, 100)
	i := 0
	for {
		k, err := r.ReadRows(rows)
		for _, row := range rows[:k] {
			wantID := fmt.Sprint("P", i%7)
			if i == 3 {
				wantID = "bad\uFFFD"
			}
			if row[0].String() != wantID || row[1].String() != fmt.Sprint("A", i, "G") || row[2].Double() != float64(i)/8 ||
				row[3].String() != fmt.Sprint(i%3) || row[4].Double() != -float64(i) {
				t.Fatalf("row %d: %v", i, row)
			}
			i++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if i != n {
		t.Fatalf("%d rows read, want %d", i, n)
	}
}

// TestTableWriterRefusesBadNames: empty, repeated and invalid UTF-8
// column names are errors, before anything is written.
func TestTableWriterRefusesBadNames(t *testing.T) {
	t.Parallel()
	for _, cols := range [][]TableColumn{
		{{"id", TableString}, {"", TableString}},
		{{"id", TableString}, {"id", TableFloat64}},
		{{"id\xff", TableString}},
		{{"x", TableKind(9)}},
		nil,
	} {
		var buf bytes.Buffer
		if _, err := NewTableWriter(&buf, cols, nil); err == nil || buf.Len() != 0 {
			t.Errorf("%v: %v, %d bytes written", cols, err, buf.Len())
		}
	}
}
