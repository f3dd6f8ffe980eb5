package output

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/parquet-go/parquet-go"
)

// A flat table as parquet: named columns of strings or float64, one
// required value per row, in the order given (for esm2go score's output).
// Rows are buffered and written in row groups of tableGroupRows, so a
// table of any length is written in bounded memory.

// TableKind is a table column's type.
type TableKind int

const (
	TableString  TableKind = iota // UTF-8 string (BYTE_ARRAY, STRING)
	TableFloat64                  // DOUBLE
)

// TableColumn names one column of a table.
type TableColumn struct {
	Name string
	Kind TableKind
}

// tableGroupRows bounds a row group (and what the writer holds before it
// writes it out).
const tableGroupRows = 1 << 18

// TableWriter writes a parquet table to an io.Writer; the caller owns the
// file (temporary name, fsync, rename).
type TableWriter struct {
	//lint:ignore SA1019 the schema is dynamic (see parquetWriter)
	pw      *parquet.Writer
	strs    []int // column index of each string value of a row, in order
	nums    []int // column index of each float64 value
	rows    []parquet.Row
	pending int
	err     error
}

// NewTableWriter starts a table with columns cols (names unique, valid as
// Schema column names or the fixed names id and mutant) and key-value
// metadata meta.
func NewTableWriter(w io.Writer, cols []TableColumn, meta map[string]string) (*TableWriter, error) {
	if len(cols) == 0 {
		return nil, errors.New("output: a table needs a column")
	}
	g := &orderedGroup{Group: parquet.Group{}}
	t := &TableWriter{}
	for i, c := range cols {
		if _, dup := g.Group[c.Name]; dup || c.Name == "" || !utf8.ValidString(c.Name) {
			return nil, fmt.Errorf("output: table column %d: name %q is empty, repeated or not UTF-8", i, c.Name)
		}
		var n parquet.Node
		switch c.Kind {
		case TableString:
			n = parquet.String()
			t.strs = append(t.strs, i)
		case TableFloat64:
			n = parquet.Leaf(parquet.DoubleType)
			t.nums = append(t.nums, i)
		default:
			return nil, fmt.Errorf("output: table column %q: invalid kind %d", c.Name, c.Kind)
		}
		g.Group[c.Name] = n
		g.fields = append(g.fields, &namedField{Node: n, name: c.Name})
	}
	options := []parquet.WriterOption{
		parquet.NewSchema("esm2go", g),
		parquet.Compression(parquetCodec),
		parquet.MaxRowsPerRowGroup(tableGroupRows),
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		options = append(options, parquet.KeyValueMetadata(k, meta[k]))
	}
	config, err := parquet.NewWriterConfig(options...)
	if err != nil {
		return nil, fmt.Errorf("output: table: %w", err)
	}
	t.pw = parquet.NewWriter(w, config)
	t.rows = make([]parquet.Row, 1024)
	return t, nil
}

// WriteRow appends a row: strs are the string columns' values in column
// order, nums the float64 columns'.
func (t *TableWriter) WriteRow(strs []string, nums []float64) error {
	if t.err != nil {
		return t.err
	}
	if len(strs) != len(t.strs) || len(nums) != len(t.nums) {
		return fmt.Errorf("output: table row of %d strings and %d numbers, want %d and %d", len(strs), len(nums), len(t.strs), len(t.nums))
	}
	r := t.rows[t.pending][:0]
	// Values in column order, as parquet-go expects a row.
	si, ni := 0, 0
	for col := 0; col < len(t.strs)+len(t.nums); col++ {
		if si < len(t.strs) && t.strs[si] == col {
			r = append(r, parquet.ByteArrayValue([]byte(strings.ToValidUTF8(strs[si], "\uFFFD"))).Level(0, 0, col))
			si++
		} else {
			r = append(r, parquet.DoubleValue(nums[ni]).Level(0, 0, col))
			ni++
		}
	}
	t.rows[t.pending] = r
	t.pending++
	if t.pending == len(t.rows) {
		return t.flush()
	}
	return nil
}

func (t *TableWriter) flush() error {
	if t.pending == 0 {
		return nil
	}
	err := guard(func() error { _, err := t.pw.WriteRows(t.rows[:t.pending]); return err })
	t.pending = 0
	if err != nil {
		t.err = fmt.Errorf("output: table: %w", err)
	}
	return t.err
}

// Close writes the remaining rows and the footer.
func (t *TableWriter) Close() error {
	if err := t.flush(); err != nil {
		return err
	}
	if err := guard(t.pw.Close); err != nil {
		t.err = fmt.Errorf("output: table: %w", err)
		return t.err
	}
	t.err = errors.New("output: table: closed")
	return nil
}
