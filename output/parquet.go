package output

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// Row groups are flushed when either bound is reached, so the writer's memory
// stays flat whatever the number of records: parquet-go keeps one row group's
// pages in memory until Flush.
const (
	parquetMaxGroupRows  = 10_000
	parquetMaxGroupBytes = 64 << 20 // raw float bytes + ids
)

// parquetCodec compresses every column. Embeddings compress little (see
// doc.go); snappy costs almost nothing and still shrinks ids and levels.
var parquetCodec = &parquet.Snappy

// Fixed leading columns; embedding columns follow at parquetFixedCols+i.
const (
	colID = iota
	colIndex
	colLength
	colTruncated
	parquetFixedCols
)

type parquetWriter struct {
	owner
	tmp  string
	file *os.File
	// parquet.Writer is deprecated in favour of GenericWriter[T], which
	// needs a Go type per schema; output columns are only known at run time,
	// so rows go through the untyped Writer (its WriteRows and
	// WriteRowGroup are what merge needs).
	//lint:ignore SA1019 the schema is dynamic, see above
	pw    *parquet.Writer
	check rowChecker

	row        parquet.Row // reused row buffer, (4 + sum of values) Values
	half       []byte      // float16/bfloat16: the row's values as 2-byte items, which row points into
	groupRows  int
	groupBytes int64
	// maxGroupRows and maxGroupBytes are the flush bounds:
	// parquetMaxGroupRows and parquetMaxGroupBytes, lowered by tests that
	// need several row groups without writing tens of MiB.
	maxGroupRows  int
	maxGroupBytes int64

	err    error // sticky I/O error
	closed bool
}

// orderedGroup is a parquet group whose fields keep the order given, unlike
// parquet.Group which sorts by name. It keeps id, index, length, truncated
// first and the embedding columns in schema order.
type orderedGroup struct {
	parquet.Group // supplies Type, Required, Leaf, ...
	fields        []parquet.Field
}

func (g *orderedGroup) Fields() []parquet.Field { return g.fields }

type namedField struct {
	parquet.Node
	name string
}

func (f *namedField) Name() string { return f.name }

// Value is only used when mapping Go structs, which this package never does.
func (f *namedField) Value(base reflect.Value) reflect.Value {
	if base.Kind() == reflect.Map {
		return base.MapIndex(reflect.ValueOf(f.name))
	}
	return reflect.Value{}
}

// float16Type is FIXED_LEN_BYTE_ARRAY(2) annotated with parquet's FLOAT16
// logical type, which parquet-go v0.32 can store but has no Type for.
type float16Type struct{ parquet.Type }

func (float16Type) LogicalType() *format.LogicalType {
	return &format.LogicalType{Value: &format.Float16Type{}}
}

// parquetLeaf is the leaf type of an embedding column stored as d: FLOAT,
// FLOAT16, or (bfloat16) bare FIXED_LEN_BYTE_ARRAY(2). readBack gives the
// type parquet-go assigns when it reads the file back: it drops the FLOAT16
// annotation, which the reader checks in the footer itself.
func parquetLeaf(d DType, readBack bool) parquet.Type {
	switch d.orDefault() {
	case Float16:
		if readBack {
			return parquet.FixedLenByteArrayType(2)
		}
		return float16Type{parquet.FixedLenByteArrayType(2)}
	case BFloat16:
		return parquet.FixedLenByteArrayType(2)
	}
	return parquet.FloatType
}

// leafPath is the column path of an embedding column's values.
func leafPath(c Column) []string {
	if c.Kind == Matrix {
		return []string{c.Name, "list", "element", "list", "element"}
	}
	return []string{c.Name, "list", "element"}
}

func parquetSchema(cols []Column, d DType, readBack bool) *parquet.Schema {
	g := &orderedGroup{Group: parquet.Group{}}
	add := func(name string, n parquet.Node) {
		g.Group[name] = n
		g.fields = append(g.fields, &namedField{Node: n, name: name})
	}
	add("id", parquet.String())
	add("index", parquet.Leaf(parquet.Int64Type))
	add("length", parquet.Leaf(parquet.Int32Type))
	add("truncated", parquet.Leaf(parquet.BooleanType))
	for _, c := range cols {
		elem := parquet.Leaf(parquetLeaf(d, readBack))
		switch c.Kind {
		case Vector:
			add(c.Name, parquet.List(elem)) // list<float32>, (D,)
		case Matrix:
			add(c.Name, parquet.List(parquet.List(elem))) // list<list<float32>>, (L, D)
		}
	}
	return parquet.NewSchema("esm2go", g)
}

func newParquetWriter(own owner, schema Schema) (*parquetWriter, error) {
	final := own.final
	dir, pattern := tempPattern(final)
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, fmt.Errorf("output: create temporary for %s: %w", final, err)
	}
	// CreateTemp makes 0600; the published file should be as readable as any
	// other output.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("output: %s: %w", final, err)
	}
	meta, err := json.Marshal(struct {
		LayoutVersion int          `json:"layout_version"`
		Columns       []columnMeta `json:"columns"`
		DType         DType        `json:"dtype,omitempty"`
	}{layoutVersionOf(schema.DType), columnsMeta(schema.Columns, false), dtypeMeta(schema.DType)})
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	options := []parquet.WriterOption{
		parquetSchema(schema.Columns, schema.DType, false),
		parquet.Compression(parquetCodec),
		parquet.KeyValueMetadata(metaKey, string(meta)),
	}
	if schema.DType.orDefault() != Float32 {
		// parquet-go orders FIXED_LEN_BYTE_ARRAY bounds as unsigned bytes,
		// which is not the order of little-endian halves: no statistics
		// rather than wrong ones.
		for _, c := range schema.Columns {
			options = append(options, parquet.SkipPageStatistics(leafPath(c)...), parquet.SkipPageBounds(leafPath(c)...))
		}
	}
	for k, v := range schema.Metadata {
		options = append(options, parquet.KeyValueMetadata(k, v))
	}
	config, err := parquet.NewWriterConfig(options...)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("output: %s: parquet config: %w", final, err)
	}
	return &parquetWriter{
		owner: own,
		tmp:   f.Name(),
		file:  f,
		pw:    parquet.NewWriter(f, config),
		check: rowChecker{cols: schema.Columns, dtype: schema.DType.orDefault()},

		maxGroupRows:  parquetMaxGroupRows,
		maxGroupBytes: parquetMaxGroupBytes,
	}, nil
}

func (w *parquetWriter) Write(r *Row) error {
	if w.closed {
		return fmt.Errorf("output: %s: write after Close or Abort", w.final)
	}
	if w.err != nil {
		return w.err
	}
	if err := w.check.check(r); err != nil {
		return err
	}

	// Levels: a list<float32> leaf has max repetition 1 and max definition 1;
	// list<list<float32>> has 2 and 2. The first value of a record repeats at
	// level 0, the first of an inner list at 1, the rest at the list's depth.
	// An empty outer list (Length 0) is one null at definition level 0.
	row := w.row[:0]
	row = append(row,
		parquet.ByteArrayValue([]byte(sanitizeID(r.ID))).Level(0, 0, colID),
		parquet.Int64Value(r.Index).Level(0, 0, colIndex),
		parquet.Int32Value(int32(r.Length)).Level(0, 0, colLength),
		parquet.BooleanValue(r.Truncated).Level(0, 0, colTruncated),
	)
	nbytes := int64(len(r.ID) + 17)
	dtype := w.check.dtype
	if dtype != Float32 {
		n := 0
		for _, v := range r.Values {
			n += len(v)
		}
		if cap(w.half) < 2*n {
			w.half = make([]byte, 2*n)
		}
	}
	half := w.half[:0]
	for i, col := range w.check.cols {
		ci := parquetFixedCols + i
		vals := r.Values[i]
		nbytes += int64(dtype.size() * len(vals))
		var enc []byte // vals as 2-byte items
		if dtype != Float32 {
			enc = half[len(half) : len(half)+2*len(vals)]
			half = half[:len(half)+2*len(vals)]
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
	w.row = row

	if _, err := w.pw.WriteRows([]parquet.Row{row}); err != nil {
		w.err = fmt.Errorf("output: %s: record %q: %w", w.final, r.ID, err)
		return w.err
	}
	w.check.accept(r)
	w.groupRows++
	w.groupBytes += nbytes
	if w.groupRows >= w.maxGroupRows || w.groupBytes >= w.maxGroupBytes {
		if err := w.pw.Flush(); err != nil {
			w.err = fmt.Errorf("output: %s: flush row group: %w", w.final, err)
			return w.err
		}
		w.groupRows, w.groupBytes = 0, 0
	}
	return nil
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

// dtypeMeta is the layout metadata's "dtype": absent for float32, so
// float32 outputs keep their version-1 metadata.
func dtypeMeta(d DType) DType {
	if d.orDefault() == Float32 {
		return ""
	}
	return d
}

func (w *parquetWriter) Close() error {
	if w.closed {
		return fmt.Errorf("output: %s: already closed", w.final)
	}
	if w.err != nil {
		err := w.err
		w.Abort()
		return err
	}
	defer w.done()
	err := w.pw.Close()
	if err == nil {
		err = w.file.Sync()
	}
	if cerr := w.file.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = w.owner.publish(w.tmp)
	}
	w.closed = true
	w.row = nil
	if err != nil {
		os.Remove(w.tmp)
		return fmt.Errorf("output: %s: %w", w.final, err)
	}
	return nil
}

func (w *parquetWriter) Abort() error {
	if w.closed {
		return nil
	}
	defer w.done()
	w.closed = true
	w.row = nil
	w.file.Close()
	if err := os.Remove(w.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("output: %s: remove temporary: %w", w.final, err)
	}
	return nil
}
