package output

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"

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

// parquetWriteBuffer is the size of the file's write buffer.
const parquetWriteBuffer = 1 << 20

// parquetCodec compresses the fixed columns (ids, indices, lengths);
// embedding values are stored uncompressed (parquetSchema, doc.go).
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
	// needs a Go type per schema; output columns are only known at run
	// time, so row groups, encoded column by column (parquet_columns.go),
	// go into the untyped Writer through WriteRowGroup, as merge's copies
	// do.
	//lint:ignore SA1019 the schema is dynamic, see above
	pw    *parquet.Writer
	check rowChecker

	// templates[i] is the footer of an empty one-column file of
	// embedding column i (columnTemplate).
	templates []*format.FileMetaData
	pool      *pagePool

	// The row group being filled, and those being encoded, waiting to be
	// committed or being committed, oldest first (see submit).
	cur        *pqGroup
	inflight   []*pqGroup
	jobs       chan *pqGroup  // to the encoders; nil until the first group is full
	commits    chan *pqGroup  // to the committer, in order
	encoders   sync.WaitGroup // the encoders and the committer
	aborting   atomic.Bool    // the committer writes nothing more
	groupRows  int            // rows in cur
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
		add(c.Name, embeddingNode(c, d, readBack))
	}
	return parquet.NewSchema("esm2go", g)
}

// embeddingNode is the schema node of embedding column c stored as d.
func embeddingNode(c Column, d DType, readBack bool) parquet.Node {
	// Embedding values are stored uncompressed: snappy does not shrink
	// them (BenchmarkWrite measured 1.002 bytes on disk per raw byte)
	// and cost CPU at the writer's pace.
	elem := parquet.Compressed(parquet.Leaf(parquetLeaf(d, readBack)), &parquet.Uncompressed)
	if c.Kind == Matrix {
		return parquet.List(parquet.List(elem)) // list<list<float32>>, (L, D)
	}
	return parquet.List(elem) // list<float32>, (D,)
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
	w, err := newParquetStream(own, f, schema, nil)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	w.tmp, w.file = f.Name(), f
	return w, nil
}

// newParquetStream writes a complete parquet file to dst, whose Close
// writes the footer and nothing else: no temporary, no fsync, no publish
// (a resumable run's chunks, appended to one file, parts.go). Page
// buffers come from pool (one writer at a time may use it), or a new one
// if nil.
func newParquetStream(own owner, dst io.Writer, schema Schema, pool *pagePool) (*parquetWriter, error) {
	if pool == nil {
		pool = newPagePool()
	}
	final := own.final
	meta, err := json.Marshal(struct {
		LayoutVersion int          `json:"layout_version"`
		Columns       []columnMeta `json:"columns"`
		DType         DType        `json:"dtype,omitempty"`
	}{layoutVersionOf(schema.DType), columnsMeta(schema.Columns, false), dtypeMeta(schema.DType)})
	if err != nil {
		return nil, err
	}
	options := []parquet.WriterOption{
		parquetSchema(schema.Columns, schema.DType, false),
		parquet.Compression(parquetCodec),
		parquet.KeyValueMetadata(metaKey, string(meta)),
		// Column chunks are copied into the file through this buffer
		// (parquet_columns.go): 1 MiB writes, as npy's, where the
		// default 32 KiB measured a quarter more CPU in write calls.
		parquet.WriteBufferSize(parquetWriteBuffer),
	}
	// No statistics on embedding values: no query filters on an
	// embedding's min or max, computing them costs several percent of the
	// writer's time, and for 2-byte dtypes parquet-go would order them as
	// unsigned bytes, which is not the order of little-endian halves.
	for _, c := range schema.Columns {
		options = append(options, parquet.SkipPageStatistics(leafPath(c)...), parquet.SkipPageBounds(leafPath(c)...))
	}
	for k, v := range schema.Metadata {
		options = append(options, parquet.KeyValueMetadata(k, v))
	}
	config, err := parquet.NewWriterConfig(options...)
	if err != nil {
		return nil, fmt.Errorf("output: %s: parquet config: %w", final, err)
	}
	templates := make([]*format.FileMetaData, len(schema.Columns))
	for i, c := range schema.Columns {
		if templates[i], err = columnTemplate(c, schema.DType); err != nil {
			return nil, fmt.Errorf("output: %s: column %s: %w", final, c.Name, err)
		}
	}
	return &parquetWriter{
		owner: own,
		pw:    parquet.NewWriter(dst, config),
		check: rowChecker{cols: schema.Columns, dtype: schema.DType.orDefault()},

		templates: templates,
		pool:      pool,

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
	if w.cur == nil {
		w.cur = newPQGroup(w.check.cols, w.check.dtype, w.pool)
	}
	nbytes := w.cur.add(r)
	w.check.accept(r)
	w.groupRows++
	w.groupBytes += nbytes
	if w.groupRows >= w.maxGroupRows || w.groupBytes >= w.maxGroupBytes {
		if err := w.submit(); err != nil {
			return err
		}
	}
	return nil
}

// Row groups are written column by column (parquet_columns.go): Write
// puts each row's values into the pages of the group being filled; a full
// group goes to one of up to parquetEncoders goroutines, which finishes
// its column chunks (the fixed columns, page indexes, footers), and a
// committer goroutine writes the encoded groups into the file in order.
// Filling the next group thus overlaps writing the last one (on one
// goroutine, the file's writes stopped while a group was filled and rows
// stopped while one was written). At most parquetEncoders groups are in
// flight besides the one being filled, so memory stays bounded: per
// group, its pages (about parquetMaxGroupBytes plus one row for float32,
// half for 2-byte dtypes).
const maxParquetEncoders = 4

// parquetEncoders is how many row groups are encoded at once: one fewer
// than the CPUs (the caller produces rows on one), at least 1, at most
// maxParquetEncoders.
func parquetEncoders() int {
	return max(1, min(runtime.GOMAXPROCS(0)-1, maxParquetEncoders))
}

// pqGroup is one row group: its records' fixed fields and the pages of
// each embedding column, written as rows come, then its column chunks.
type pqGroup struct {
	fixed []pqFixed
	cols  []*chunkWriter // one per embedding column
	// The encoded group: the fixed columns' row group and every column
	// chunk, in output order (encodeColumns).
	first     *parquet.FileRowGroup
	chunks    []parquet.ColumnChunk
	bufs      [][]byte   // the pages' values buffers, for the pool once committed
	done      chan error // the encoder's result
	committed chan error // the committer's result
}

func newPQGroup(cols []Column, dtype DType, pool *pagePool) *pqGroup {
	g := &pqGroup{done: make(chan error, 1), committed: make(chan error, 1), cols: make([]*chunkWriter, len(cols))}
	for i, c := range cols {
		g.cols[i] = newChunkWriter(c, dtype, pool)
	}
	return g
}

// add writes r into g's pages and returns the bytes it counts toward the
// group's bound (float32 payload plus the id and fixed fields).
func (g *pqGroup) add(r *Row) int64 {
	g.fixed = append(g.fixed, pqFixed{ID: sanitizeID(r.ID), Index: r.Index, Length: int32(r.Length), Truncated: r.Truncated})
	n := 0
	for i, v := range r.Values {
		g.cols[i].add(v)
		n += len(v)
	}
	return int64(len(r.ID)+17) + 4*int64(n)
}

// encode finishes g's column chunks (run by an encoder).
func (g *pqGroup) encode(dtype DType, templates []*format.FileMetaData) error {
	var err error
	g.first, g.chunks, err = encodeColumns(g.fixed, g.cols, dtype, templates)
	if err != nil {
		err = fmt.Errorf("records %d to %d: %w", g.fixed[0].Index, g.fixed[len(g.fixed)-1].Index, err)
	}
	for _, c := range g.cols {
		g.bufs = append(g.bufs, c.bufs...)
	}
	g.fixed, g.cols = nil, nil
	return err
}

// submit sends the group being filled to an encoder and the committer,
// first waiting for the oldest group in flight to be committed if there
// are as many as encoders.
func (w *parquetWriter) submit() error {
	g := w.cur
	w.cur = nil
	w.groupRows, w.groupBytes = 0, 0
	if g == nil || len(g.fixed) == 0 {
		return nil
	}
	if w.jobs == nil {
		n := parquetEncoders()
		w.jobs = make(chan *pqGroup, n)
		w.commits = make(chan *pqGroup, n)
		for range n {
			w.encoders.Go(func() {
				for g := range w.jobs {
					g.done <- guard(func() error { return g.encode(w.check.dtype, w.templates) })
				}
			})
		}
		w.encoders.Go(w.commit)
	}
	for len(w.inflight) >= cap(w.jobs) {
		if err := w.waitOldest(); err != nil {
			return err
		}
	}
	// Both sends find room: each channel holds at most the groups in flight.
	w.inflight = append(w.inflight, g)
	w.jobs <- g
	w.commits <- g
	return nil
}

// commit is the committer: it writes each group, once encoded, into the
// file, in order, and gives its page buffers back to the pool. After a
// failure, or once aborting, it writes nothing more and answers every
// later group with that error.
func (w *parquetWriter) commit() {
	var failed error
	for g := range w.commits {
		err := <-g.done // always wait: the encoder owns g until then
		if failed != nil {
			err = failed
		} else if err == nil && w.aborting.Load() {
			err = errAborted
		}
		if err == nil {
			src := &splicedGroup{FileRowGroup: g.first, schema: w.pw.Schema(), chunks: g.chunks}
			err = guard(func() error { _, err := w.pw.WriteRowGroup(src); return err })
		}
		if err == nil {
			// The group's pages are in the file: their buffers can serve
			// new pages.
			for _, b := range g.bufs {
				w.pool.put(b)
			}
		} else if failed == nil {
			failed = err
		}
		g.committed <- err
	}
}

// errAborted answers the groups left when the writer is aborted.
var errAborted = errors.New("writer aborted")

// waitOldest waits for the oldest group in flight to be committed.
func (w *parquetWriter) waitOldest() error {
	g := w.inflight[0]
	w.inflight = w.inflight[1:]
	if err := <-g.committed; err != nil {
		w.err = fmt.Errorf("output: %s: row group: %w", w.final, err)
		return w.err
	}
	return nil
}

// flushGroups submits the group being filled and commits every group in
// flight, so that everything written is in the file's row groups (merge
// calls it before it copies a row group in).
func (w *parquetWriter) flushGroups() error {
	if w.err != nil {
		return w.err
	}
	if err := w.submit(); err != nil {
		return err
	}
	for len(w.inflight) > 0 {
		if err := w.waitOldest(); err != nil {
			return err
		}
	}
	return nil
}

// stopEncoders ends the encoder and committer goroutines, waiting for any
// group they are encoding or writing; groups still in flight are not
// written (after a flush there are none).
func (w *parquetWriter) stopEncoders() {
	if w.jobs != nil {
		w.aborting.Store(true)
		close(w.jobs)
		close(w.commits)
		w.encoders.Wait()
		w.jobs, w.commits = nil, nil
	}
	w.inflight, w.cur = nil, nil
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
	if err := w.flushGroups(); err != nil {
		w.Abort()
		return err
	}
	w.stopEncoders()
	defer w.done()
	err := guard(w.pw.Close)
	if w.file == nil { // a stream (newParquetStream): the footer is all
		w.closed = true
		if err != nil {
			return fmt.Errorf("output: %s: %w", w.final, err)
		}
		return nil
	}
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
	w.stopEncoders()
	if w.file == nil {
		return nil
	}
	w.file.Close()
	if err := os.Remove(w.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("output: %s: remove temporary: %w", w.final, err)
	}
	return nil
}
