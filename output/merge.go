package output

// Merging outputs.
//
// Merge joins complete esm2go outputs ("sources") of one format into one
// output, the sources' rows in the order the sources are given. It is how a
// run that commits its rows in pieces ends, and how shards of a large input
// become one file.
//
// What the sources must agree on: the format; the columns (names, kinds and
// dims, in order); and the metadata, every key compared except those named
// in MergeOptions.DropMeta (per-source keys such as a chunk number or a
// timing). The merged output's metadata is MergeOptions.Metadata if set,
// otherwise the first source's without the DropMeta keys. A disagreement is
// an error naming the source and the first differences.
//
// Indices: by default the sources' indices are kept, and must be strictly
// increasing across all sources (each source's rows are input positions of
// the same input, the sources in input order). With Renumber, rows are
// numbered 0..N-1 in merge order, for shards each numbered from 0.
//
// Every row is checked as the Writer checks it (shapes, no NaN or Inf),
// every source is read as hostile input (see read.go), and the destination
// is written through CreateWithOptions: the same lock, the same Overwrite
// and Keep rules (the sources are added to Keep), the same atomic publish at
// Close; on any error nothing is published. A source may not be the
// destination.
//
// How the rows travel:
//
//   - npy: byte-level. Each record's float32 bytes are streamed from the
//     source arrays into the destination's (scanned for NaN/Inf on the way,
//     never decoded), offsets are rebased by the residues before them, and
//     records.tsv lines are rewritten with the kept or new index.
//   - parquet: a source row group of at least mergeCopyRows rows or
//     mergeCopyBytes bytes is checked column by column, without assembling
//     rows (its page headers against its offset index, list levels against
//     the lengths, indices, NaN/Inf), then copied verbatim (compressed
//     pages, statistics, page index) by parquet-go's Writer.WriteRowGroup.
//     Smaller row groups, groups whose check fails (then the row path
//     names the bad record), and, under Renumber, groups whose indices are
//     not already the new ones are read row by row and written through the
//     Writer, so many small sources do not make an output of many small
//     row groups. The copied statistics and column index are the source's;
//     they are not recomputed.
//
// Cancellation is checked every 1024 rows and between row groups.
//
// BenchmarkMerge compares these paths with decoding every row and writing
// it through the Writer (4 sources, N=10,000, D=1280, 51 MB of floats; a
// shared 2-core dev box). CPU time, on tmpfs: npy ~570 MB/s copied vs ~265
// row by row; parquet ~445 MB/s vs ~42. Wall time on its disk, fsync
// included: npy ~190 vs ~130 MB/s; parquet ~130 vs ~20.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Parquet row groups at least this large are copied verbatim (a quarter of
// the Writer's row-group bounds); smaller ones are re-encoded and packed.
const (
	mergeCopyRows  = parquetMaxGroupRows / 4
	mergeCopyBytes = parquetMaxGroupBytes / 4
)

// MergeOptions adjust Merge.
type MergeOptions struct {
	// Overwrite, Keep and Log are as in Options, for the destination. The
	// sources are always kept.
	Overwrite bool
	Keep      []string
	Log       *slog.Logger

	// Renumber rewrites the index as 0..N-1 in merge order. Without it the
	// sources' indices are kept and must be strictly increasing across the
	// sources.
	Renumber bool

	// Metadata is the merged output's metadata; nil means the first
	// source's, without the DropMeta keys.
	Metadata map[string]string
	// DropMeta names metadata keys that may differ between sources; they
	// are not compared, and not carried into the merged output.
	DropMeta []string
}

// MergeSummary says what Merge wrote.
type MergeSummary struct {
	Path    string // the published output
	Format  Format
	Sources int
	Rows    int64
	Bytes   int64 // embedding payload, 4 bytes per float
	// CopiedRows were moved without being decoded and re-encoded: the npy
	// byte copy, or parquet row groups copied verbatim (still each checked).
	CopiedRows int64
}

// Merge is MergeContext without cancellation.
func Merge(dst string, srcs []string, opts MergeOptions) (MergeSummary, error) {
	return MergeContext(context.Background(), dst, srcs, opts)
}

// MergeContext writes the rows of srcs, complete esm2go outputs of one
// format and schema, in that order, to a new output at dst (see the top of
// merge.go). Cancelling ctx stops the merge with ctx's error and publishes
// nothing.
func MergeContext(ctx context.Context, dst string, srcs []string, opts MergeOptions) (MergeSummary, error) {
	return merge(ctx, dst, srcs, opts, false)
}

// merger carries one merge's state.
type merger struct {
	ctx   context.Context
	dst   string
	opts  MergeOptions
	sum   MergeSummary
	next  int64 // Renumber: the next index
	last  int64 // the index of the last row written
	row   Row
	i     int    // current source
	src   string // its path
	start int64  // rows written before the current source
}

// merge is MergeContext; rowPath sends every row through Reader.Next and
// Writer.Write (tests and benchmarks compare it with the copying paths).
func merge(ctx context.Context, dst string, srcs []string, opts MergeOptions, rowPath bool) (_ MergeSummary, err error) {
	m := &merger{ctx: ctx, dst: dst, opts: opts}
	fail := func(err error) error { return fmt.Errorf("output: merge into %s: %w", dst, err) }
	if len(srcs) == 0 {
		return m.sum, fail(errors.New("no sources"))
	}
	if err := ctx.Err(); err != nil {
		return m.sum, fail(err)
	}
	schema, f, err := m.checkSources(srcs)
	if err != nil {
		return m.sum, fail(err)
	}
	keep := append(slices.Clip(opts.Keep), srcs...)
	w, err := CreateWithOptions(dst, f, schema, Options{Overwrite: opts.Overwrite, Keep: keep, Log: opts.Log})
	if err != nil {
		return m.sum, err
	}
	defer func() {
		if err != nil {
			w.Abort()
		}
	}()
	m.sum.Format, m.sum.Sources = f, len(srcs)
	for i, src := range srcs {
		m.i, m.src, m.start = i, src, m.sum.Rows
		if err := m.source(w, schema, rowPath); err != nil {
			return MergeSummary{}, fail(err)
		}
	}
	if err := w.Close(); err != nil {
		return MergeSummary{}, err
	}
	m.sum.Path = filepath.Clean(dst)
	return m.sum, nil
}

// checkSources opens every source once, before anything is created, and
// returns the merged schema and format.
func (m *merger) checkSources(srcs []string) (Schema, Format, error) {
	drop := make(map[string]bool, len(m.opts.DropMeta))
	for _, k := range m.opts.DropMeta {
		drop[k] = true
	}
	dstInfo, dstErr := os.Stat(m.dst)
	var first Schema
	var f Format
	for i, src := range srcs {
		if filepath.Clean(src) == filepath.Clean(m.dst) {
			return Schema{}, "", fmt.Errorf("source %d (%s) is the destination", i, src)
		}
		if dstErr == nil {
			if si, err := os.Stat(src); err == nil && os.SameFile(si, dstInfo) {
				return Schema{}, "", fmt.Errorf("source %d (%s) is the destination", i, src)
			}
		}
		r, err := Open(src)
		if err != nil {
			return Schema{}, "", nest(fmt.Sprintf("source %d", i), err)
		}
		s := r.Schema()
		rf := r.Format()
		r.Close()
		if i == 0 {
			first, f = s, rf
			continue
		}
		if err := sameSchema(first, s, rf, f, drop); err != nil {
			return Schema{}, "", fmt.Errorf("source %d (%s) does not match source 0 (%s): %w", i, src, srcs[0], err)
		}
	}
	meta := m.opts.Metadata
	if meta == nil {
		meta = make(map[string]string, len(first.Metadata))
		for k, v := range first.Metadata {
			if !drop[k] {
				meta[k] = v
			}
		}
	}
	return Schema{Columns: first.Columns, Metadata: meta, DType: first.DType}, f, nil
}

// sameSchema says how b (format bf) differs from a (format af): the format,
// the columns, or the metadata outside drop.
func sameSchema(a, b Schema, bf, af Format, drop map[string]bool) error {
	if af != bf {
		return fmt.Errorf("format %s, want %s", bf, af)
	}
	if a.DType.orDefault() != b.DType.orDefault() {
		return fmt.Errorf("dtype %s, want %s (merge outputs written with one --dtype)", b.DType.orDefault(), a.DType.orDefault())
	}
	if !slices.Equal(a.Columns, b.Columns) {
		return fmt.Errorf("columns %s, want %s", columnsString(b.Columns), columnsString(a.Columns))
	}
	keys := map[string]bool{}
	for k := range a.Metadata {
		keys[k] = true
	}
	for k := range b.Metadata {
		keys[k] = true
	}
	var diffs []string
	for k := range keys {
		if drop[k] {
			continue
		}
		va, oka := a.Metadata[k]
		vb, okb := b.Metadata[k]
		switch {
		case !oka:
			diffs = append(diffs, fmt.Sprintf("%s = %s only here", quote(k), quote(vb)))
		case !okb:
			diffs = append(diffs, fmt.Sprintf("%s missing (source 0: %s)", quote(k), quote(va)))
		case va != vb:
			diffs = append(diffs, fmt.Sprintf("%s = %s, source 0: %s", quote(k), quote(vb), quote(va)))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	more := ""
	if len(diffs) > 10 {
		more = fmt.Sprintf("; and %d more", len(diffs)-10)
		diffs = diffs[:10]
	}
	return fmt.Errorf("%w: %s%s", ErrMetadataDiffers, strings.Join(diffs, "; "), more)
}

// ErrMetadataDiffers is wrapped by Merge's error when the sources'
// metadata disagree outside MergeOptions.DropMeta (another model, options or
// input).
var ErrMetadataDiffers = errors.New("the sources' metadata differ")

func columnsString(cols []Column) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, c := range cols {
		if i == 10 {
			fmt.Fprintf(&b, " ... and %d more", len(cols)-10)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s %d", quote(c.Name), c.Kind, c.Dim)
	}
	b.WriteByte(']')
	return b.String()
}

// source appends the rows of source m.i to w.
func (m *merger) source(w Writer, schema Schema, rowPath bool) error {
	r, err := Open(m.src)
	if err != nil {
		return nest(fmt.Sprintf("source %d", m.i), err)
	}
	defer r.Close()
	// The source was checked before; check again in case it changed since.
	if err := sameSchema(Schema{Columns: schema.Columns, DType: schema.DType}, Schema{Columns: r.schema.Columns, DType: r.schema.DType}, r.format, w2format(w), nil); err != nil {
		return fmt.Errorf("source %d (%s) changed during the merge: %w", m.i, m.src, err)
	}
	switch w := w.(type) {
	case *npyWriter:
		if !rowPath {
			err = m.copyNPY(r, w)
			break
		}
		err = m.rows(r, w)
	case *parquetWriter:
		err = m.copyParquet(r, w, rowPath)
	default:
		err = m.rows(r, w)
	}
	if err != nil {
		return nest(fmt.Sprintf("source %d (%s)", m.i, m.src), err)
	}
	return nil
}

// nest puts where in front of err's message, without the "output: " an
// error of this package starts with, keeping err in the chain.
func nest(where string, err error) error {
	return &withinError{msg: where + ": " + strings.TrimPrefix(err.Error(), "output: "), err: err}
}

func w2format(w Writer) Format {
	if _, ok := w.(*npyWriter); ok {
		return NPY
	}
	return Parquet
}

// place applies the index policy to a row read from the current source.
// The caller writes the row, then calls count.
func (m *merger) place(row *Row) error {
	if m.opts.Renumber {
		row.Index = m.next
		m.next++
		return nil
	}
	if m.sum.Rows > 0 && row.Index <= m.last {
		return fmt.Errorf("record %d (%s): index %d is not after %d, the last index written before it (sources must hold increasing indices in the given order, as the shards of one run do)",
			m.sum.Rows-m.start, quote(row.ID), row.Index, m.last)
	}
	return nil
}

// tick checks for cancellation every 1024 rows.
func (m *merger) tick() error {
	if m.sum.Rows%1024 == 0 {
		return m.ctx.Err()
	}
	return nil
}

// rows decodes every row and writes it through the Writer.
func (m *merger) rows(r *Reader, w Writer) error {
	row := &m.row
	for {
		if err := m.tick(); err != nil {
			return err
		}
		err := r.Next(row)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := m.put(row, w); err != nil {
			return err
		}
	}
}

// put writes one row read row by row from a source: placed (renumbered,
// or checked to follow the rows before), written and counted.
func (m *merger) put(row *Row, w Writer) error {
	if err := m.place(row); err != nil {
		return err
	}
	if err := w.Write(row); err != nil {
		return err
	}
	m.count(row, false)
	return nil
}

func (m *merger) count(row *Row, copied bool) {
	m.sum.Rows++
	m.last = row.Index
	for _, v := range row.Values {
		m.sum.Bytes += 4 * int64(len(v))
	}
	if copied {
		m.sum.CopiedRows++
	}
}

// ---- npy: byte-level copy ----

// copyNPY appends source r (npy) to w without decoding its floats.
func (m *merger) copyNPY(r *Reader, w *npyWriter) error {
	s := r.npy
	row := &m.row
	for k := int64(0); k < r.n; k++ {
		if err := m.tick(); err != nil {
			return err
		}
		if err := s.head(row); err != nil {
			return fmt.Errorf("record %d: %w", k, err)
		}
		// The source's own order and the Writer's checks on the fields.
		if r.check.started && row.Index <= r.check.lastIndex {
			return fmt.Errorf("records.tsv line %d: index %d not after previous index %d", s.line, row.Index, r.check.lastIndex)
		}
		r.check.accept(row)
		srcIndex := row.Index
		if err := m.place(row); err != nil {
			return err
		}
		bytes, err := m.copyNPYRow(w, s, row, srcIndex)
		if err != nil {
			return err
		}
		r.read++
		m.sum.Rows++
		m.last = row.Index
		m.sum.Bytes += bytes
		m.sum.CopiedRows++
	}
	return s.finish()
}

// copyNPYRow copies one record's embeddings and writes its offsets and
// records.tsv line, as npyWriter.write does for a decoded row. srcIndex is
// the record's index in the source, for errors.
func (m *merger) copyNPYRow(w *npyWriter, s *npySource, row *Row, srcIndex int64) (int64, error) {
	var bytes int64
	for i := range s.cols {
		sc, dc := &s.cols[i], &w.cols[i]
		n := int64(sc.col.Dim)
		if sc.col.Kind == Matrix {
			n *= int64(row.Length)
		}
		bad, x, err := copyFinite(dc.data.bw, sc.dataR, n, s.schema.DType)
		if err != nil {
			return 0, fmt.Errorf("record %d (%s): %s: %w", srcIndex, quote(row.ID), sc.data.name, err)
		}
		if bad >= 0 {
			where := fmt.Sprintf("element %d", bad)
			if sc.col.Kind == Matrix {
				where = fmt.Sprintf("residue %d, element %d", bad/int64(sc.col.Dim)+1, bad%int64(sc.col.Dim))
			}
			return 0, fmt.Errorf("record %d (%s) column %s: %w: %v at %s", srcIndex, quote(row.ID), sc.col.Name, ErrNonFinite, x, where)
		}
		bytes += 4 * n
		if sc.col.Kind == Vector {
			dc.data.rows++
			continue
		}
		dc.data.rows += int64(row.Length)
		if err := dc.offsets.writeInt64(dc.data.rows); err != nil {
			return 0, err
		}
		dc.offsets.rows++
	}
	if err := w.writeRecord(row); err != nil {
		return 0, err
	}
	w.check.accept(row)
	w.n++
	return bytes, nil
}

// copyFinite copies n little-endian values of dtype d from src to dst and
// returns the element index and value of the first NaN or Inf (nothing of
// that block is written), or -1.
func copyFinite(dst *bufio.Writer, src *bufio.Reader, n int64, d DType) (int64, float32, error) {
	size := int64(d.size())
	n *= size // bytes
	for done := int64(0); done < n; {
		k := int(min(n-done, int64(src.Size())/size*size))
		b, err := src.Peek(k)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return -1, 0, err
		}
		if size == 2 {
			if j := d.firstNonFinite16(b); j >= 0 {
				var x [1]float32
				d.decode16(x[:], b[2*j:])
				return done/2 + int64(j), x[0], nil
			}
		} else if j := firstNonFiniteLE(b); j >= 0 {
			return done/4 + int64(j), math.Float32frombits(binary.LittleEndian.Uint32(b[4*j:])), nil
		}
		if _, err := dst.Write(b); err != nil {
			return -1, 0, err
		}
		src.Discard(k)
		done += int64(k)
	}
	return -1, 0, nil
}

// firstNonFiniteLE is firstNonFinite over little-endian float32 bytes.
func firstNonFiniteLE(b []byte) int {
	const exp = 0x7f800000
	le := binary.LittleEndian
	i := 0
	for ; i+32 <= len(b); i += 32 {
		w := b[i : i+32 : i+32]
		if le.Uint32(w[0:])&exp == exp || le.Uint32(w[4:])&exp == exp ||
			le.Uint32(w[8:])&exp == exp || le.Uint32(w[12:])&exp == exp ||
			le.Uint32(w[16:])&exp == exp || le.Uint32(w[20:])&exp == exp ||
			le.Uint32(w[24:])&exp == exp || le.Uint32(w[28:])&exp == exp {
			break
		}
	}
	for ; i+4 <= len(b); i += 4 {
		if le.Uint32(b[i:])&exp == exp {
			return i / 4
		}
	}
	return -1
}

// ---- parquet: row-group copy ----

// copyParquet appends source r (parquet) to w. A large row group is
// checked column by column and, if every check passes and its indices are
// the ones to write, copied verbatim; any other group is read row by row,
// each row checked and written through the Writer.
func (m *merger) copyParquet(r *Reader, w *parquetWriter, rowPath bool) error {
	s := r.pq
	row := &m.row
	for s.g < len(s.groups) {
		if err := m.ctx.Err(); err != nil {
			return err
		}
		rg := s.groups[s.g]
		meta := &s.pf.Metadata().RowGroups[s.g]
		n := rg.NumRows()
		if !rowPath && n > 0 && (n >= mergeCopyRows || meta.TotalByteSize >= mergeCopyBytes) {
			err := m.copyGroup(r, w)
			if err == nil {
				continue
			}
			var fatal *fatalCopyError
			if errors.As(err, &fatal) {
				return err
			}
			m.notCopied(s.g, err)
		}
		if err := s.openGroup(); err != nil {
			return err
		}
		for {
			ok, err := s.readRow(row)
			if err != nil {
				return fmt.Errorf("record %d: %w", r.read, err)
			}
			if !ok {
				break
			}
			if err := r.accept(row); err != nil {
				return err
			}
			if err := m.put(row, w); err != nil {
				return err
			}
			if err := m.tick(); err != nil {
				return err
			}
		}
		if err := s.closeGroup(); err != nil {
			return err
		}
	}
	if err := r.Next(row); err != io.EOF {
		if err == nil {
			err = errors.New("more rows than declared")
		}
		return err
	}
	return nil
}

// copyGroup checks the current row group of r column by column and copies
// it verbatim to w. Any error leaves w and r as they were (nothing is
// written before every check has passed); the caller then reads the group
// row by row, which reports a bad row precisely.
func (m *merger) copyGroup(r *Reader, w *parquetWriter) error {
	s := r.pq
	rg := s.groups[s.g]
	n := rg.NumRows()
	locs, err := s.loadIndexes(s.g)
	if err != nil {
		return err
	}
	if err := s.checkGroupPages(locs); err != nil {
		return err
	}
	gc, err := s.checkGroupColumns(s.g)
	if err != nil {
		return err
	}
	if r.check.started && gc.first <= r.check.lastIndex {
		return fmt.Errorf("index %d not after the source's previous %d", gc.first, r.check.lastIndex)
	}
	if m.opts.Renumber {
		// Strictly increasing from next to next+n-1: exactly the new
		// numbers, so the index column can be copied as it is.
		if gc.first != m.next || gc.last != m.next+n-1 {
			return errors.New("renumbering changes the indices")
		}
	} else if m.sum.Rows > 0 && gc.first <= m.last {
		return fmt.Errorf("index %d not after %d", gc.first, m.last)
	}
	// The rows the Writer holds become row groups of their own first
	// (WriteRowGroup would flush only those parquet-go holds), then this
	// one is spliced in.
	if err := w.flushGroups(); err != nil {
		return &fatalCopyError{err}
	}
	// The source's schema as parquet-go read it lacks the FLOAT16
	// annotation of float16 leaves (read.go), which the destination's has;
	// open checked the footer's annotations, so the group is offered under
	// the destination's schema.
	src := parquet.RowGroup(sameSchemaGroup{rg, w.pw.Schema()})
	if fg, ok := rg.(*parquet.FileRowGroup); ok {
		// Keeps the file row group's type visible to WriteRowGroup, which
		// then copies the column chunks verbatim instead of re-encoding
		// every value through rows (about 9 MB/s for per-token columns).
		src = &sameSchemaFileGroup{fg, w.pw.Schema()}
	}
	if err := guard(func() error { _, err := w.pw.WriteRowGroup(src); return err }); err != nil {
		// The Writer may hold part of the group now: not recoverable.
		return &fatalCopyError{fmt.Errorf("copy row group %d: %w", s.g, err)}
	}
	w.groupRows, w.groupBytes = 0, 0
	w.check.lastIndex, w.check.started = gc.last, true
	r.check.lastIndex, r.check.started = gc.last, true
	r.read += n
	if m.opts.Renumber {
		m.next += n
	}
	m.last = gc.last
	m.sum.Rows += n
	m.sum.CopiedRows += n
	m.sum.Bytes += gc.bytes
	s.g++
	return nil
}

// sameSchemaGroup is a row group reporting another, equivalent schema.
type sameSchemaGroup struct {
	parquet.RowGroup
	schema *parquet.Schema
}

func (g sameSchemaGroup) Schema() *parquet.Schema { return g.schema }

// sameSchemaFileGroup is a file's row group reporting another, equivalent
// schema; embedding *parquet.FileRowGroup is what tells
// Writer.WriteRowGroup that its column chunks may be copied verbatim.
type sameSchemaFileGroup struct {
	*parquet.FileRowGroup
	schema *parquet.Schema
}

func (g *sameSchemaFileGroup) Schema() *parquet.Schema { return g.schema }

// fatalCopyError: a row-group copy failed after it started writing.
type fatalCopyError struct{ err error }

func (e *fatalCopyError) Error() string { return e.err.Error() }
func (e *fatalCopyError) Unwrap() error { return e.err }

// notCopied reports why a large row group is read row by row instead of
// copied: a bad row (then reported precisely by the row path), Renumber,
// or a page index the copy cannot trust.
func (m *merger) notCopied(g int, err error) {
	if m.opts.Log != nil {
		m.opts.Log.Debug("row group not copied verbatim; reading it row by row", "source", m.src, "row_group", g, "reason", err)
	}
}
