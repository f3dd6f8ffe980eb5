package output

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// Reading outputs back: Open returns a Reader over either layout, which
// yields the rows in order with the same checks the Writer applies (indices
// strictly increasing, shapes matching the schema, no NaN or Inf).
//
// The reader treats its input as hostile: every length read from a file is
// checked against what the file holds before anything is allocated from it.
//
//   - npy: metadata.json is read up to maxMetadataJSON bytes; array headers
//     are NPY 1.0-3.0 with at most maxNPYHeader bytes of dict, parsed by a
//     strict literal parser; an array's shape times its item size must equal
//     the bytes after the header exactly; records.tsv lines are at most
//     maxRecordLine bytes; offsets start at 0, never decrease, end at the
//     residue count and agree with each record's length.
//   - parquet: the footer (at most maxParquetFooter bytes) and, for row-group
//     copies, the page indexes are walked without allocating before
//     parquet-go decodes them, refusing any list longer than the bytes left
//     and any footer whose decoding could allocate more than
//     maxThriftDecode plus thriftDecodePerByte per byte; each column chunk must lie inside the file, and every
//     page header in it is walked the same way before parquet-go reads the
//     chunk: page sizes must fit the chunk, the uncompressed size must be
//     possible for the compressed one (snappy expands at most 22-fold,
//     maxPageBytes at most), value counts are bounded, and only uncompressed
//     and snappy chunks are accepted (esm2go writes snappy).

// Limits on what the reader accepts. Each is far above what esm2go writes.
const (
	// maxRecordLine bounds one records.tsv line: an ID is at most
	// data.MaxHeaderBytes (64 KiB), up to 3x longer after invalid bytes
	// become U+FFFD, plus three numbers.
	maxRecordLine = 256 << 10
	// maxNPYHeader bounds the dict of an .npy header (this package writes
	// 118 bytes; numpy refuses more than 10,000 by default).
	maxNPYHeader = 64 << 10
	// maxColumnDim bounds a column's D (ESM2 15B has 5120).
	maxColumnDim = 1 << 20
	// maxParquetFooter bounds the footer of a parquet file (a 7-column
	// output with 1,000 row groups has a footer of about 1 MiB).
	maxParquetFooter = 64 << 20
	// maxThriftDecode and thriftDecodePerByte bound what decoding one
	// thrift structure (the footer, a page index) of n bytes may allocate,
	// as estimated by thriftWalk: maxThriftDecode + thriftDecodePerByte*n.
	// An esm2go footer estimates ~25 bytes per byte (1.1 KB and ~43
	// structures per row group of 7 columns); a hostile one up to 640.
	maxThriftDecode     = 256 << 20
	thriftDecodePerByte = 48
	// maxPageHeader bounds one page header (statistics included).
	maxPageHeader = 1 << 20
	// maxPageBytes bounds a page's uncompressed size: one row of a Matrix
	// column must fit in a page (35,000 residues of D=5120 is 717 MB).
	maxPageBytes = 1 << 30
	// snappyMaxExpansion: a snappy block decodes to at most ~21.3 times its
	// size (a 3-byte copy op yields at most 64 bytes; literals expand by 1).
	snappyMaxExpansion = 22
)

// Reader reads an esm2go output's rows in order. It is not safe for
// concurrent use.
type Reader struct {
	path   string
	format Format
	schema Schema
	n      int64 // rows the output declares
	read   int64 // rows returned so far
	check  rowChecker
	npy    *npySource
	pq     *parquetSource
	err    error // sticky: a reader that failed stays failed
	closed bool
}

// Open opens the esm2go output at path: a directory is read as the npy
// layout, a file as parquet. Open checks the layout's metadata and the sizes
// of every array or column chunk it can without reading the rows; Next checks
// each row.
func Open(path string) (_ *Reader, err error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("output: open %w", err)
	}
	r := &Reader{path: path}
	if info.IsDir() {
		r.format = NPY
		r.npy, err = openNPYSource(path)
		if err == nil {
			r.schema, r.n = r.npy.schema, r.npy.n
		}
	} else if info.Mode().IsRegular() {
		r.format = Parquet
		r.pq, err = openParquetSource(path, false)
		if err == nil {
			r.schema, r.n = r.pq.schema, r.pq.n
		}
	} else {
		return nil, fmt.Errorf("output: open %s: %s, not an esm2go output", path, describe(path, info))
	}
	if err != nil {
		return nil, fmt.Errorf("output: open %s: %w", path, err)
	}
	r.check = rowChecker{cols: r.schema.Columns, dtype: r.schema.DType.orDefault()}
	return r, nil
}

// readSchema reads only the format, columns and metadata of the esm2go
// output at path (the parquet footer, or the npy metadata and array
// headers), not checking every column chunk as Open does: what the checks
// before a run need, at the cost of a few small reads.
func readSchema(path string) (Schema, Format, error) {
	info, err := os.Stat(path)
	if err != nil {
		return Schema{}, "", err
	}
	if info.IsDir() {
		s, err := openNPYSource(path)
		if err != nil {
			return Schema{}, "", err
		}
		defer s.close()
		return s.schema, NPY, nil
	}
	if !info.Mode().IsRegular() {
		return Schema{}, "", fmt.Errorf("%s: %s, not an esm2go output", path, describe(path, info))
	}
	s, err := openParquetSource(path, true)
	if err != nil {
		return Schema{}, "", err
	}
	defer s.close()
	return s.schema, Parquet, nil
}

// Format is the output's layout.
func (r *Reader) Format() Format { return r.format }

// Schema returns the output's columns and its metadata (without the
// reserved layout key). The result is a copy.
func (r *Reader) Schema() Schema {
	s := Schema{Columns: append([]Column(nil), r.schema.Columns...), Metadata: make(map[string]string, len(r.schema.Metadata)), DType: r.schema.DType}
	for k, v := range r.schema.Metadata {
		s.Metadata[k] = v
	}
	return s
}

// Len is the number of rows the output declares; Next returns exactly that
// many before io.EOF, or an error.
func (r *Reader) Len() int64 { return r.n }

// Next reads the next row into row, reusing row.Values' memory where it is
// large enough, and returns io.EOF after the last row. A row that fails the
// Writer's checks, or any inconsistency in the files, is an error naming the
// file and the record; after an error, Next keeps returning it.
func (r *Reader) Next(row *Row) error {
	if r.closed {
		return fmt.Errorf("output: read %s: reader is closed", r.path)
	}
	if r.err != nil {
		return r.err
	}
	if err := r.next(row); err != nil {
		if err != io.EOF {
			r.err = err
		}
		return err
	}
	return nil
}

func (r *Reader) next(row *Row) error {
	if r.read == r.n {
		var err error
		if r.npy != nil {
			err = r.npy.finish()
		} else {
			err = r.pq.finish()
		}
		if err != nil {
			return fmt.Errorf("output: read %s: %w", r.path, err)
		}
		return io.EOF
	}
	var err error
	if r.npy != nil {
		err = r.npy.next(row)
	} else {
		err = r.pq.next(row)
	}
	if err != nil {
		return fmt.Errorf("output: read %s: record %d: %w", r.path, r.read, err)
	}
	return r.accept(row)
}

// accept applies the Writer's row checks to a row just read.
func (r *Reader) accept(row *Row) error {
	if err := r.check.check(row); err != nil {
		return within("read "+r.path, err)
	}
	r.check.accept(row)
	r.read++
	return nil
}

// Close releases the reader's files.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.npy != nil {
		return r.npy.close()
	}
	return r.pq.close()
}

// withinError puts a location in front of an error produced elsewhere in
// this package, keeping the original in the chain for errors.Is.
type withinError struct {
	msg string
	err error
}

func (e *withinError) Error() string { return e.msg }
func (e *withinError) Unwrap() error { return e.err }

func within(where string, err error) error { return nest("output: "+where, err) }

// parseColumns turns the layout metadata's columns into a Schema's columns,
// checking names, kinds, dims and (npy) file names.
func parseColumns(cms []columnMeta, npy bool) ([]Column, error) {
	cols := make([]Column, 0, len(cms))
	for i, cm := range cms {
		c := Column{Name: cm.Name, Dim: cm.Dim}
		switch cm.Kind {
		case "vector":
			c.Kind = Vector
		case "matrix":
			c.Kind = Matrix
		default:
			return nil, fmt.Errorf("column %d (%s): unknown kind %s", i, quote(cm.Name), quote(cm.Kind))
		}
		if c.Dim <= 0 || c.Dim > maxColumnDim {
			return nil, fmt.Errorf("column %d (%s): dim %d outside [1, %d]", i, quote(cm.Name), c.Dim, maxColumnDim)
		}
		if npy {
			wantOff := ""
			if c.Kind == Matrix {
				wantOff = c.Name + ".offsets.npy"
			}
			if cm.File != c.Name+".npy" || cm.Offsets != wantOff {
				return nil, fmt.Errorf("column %d (%s): files %s, %s are not the layout's %q, %q", i, quote(cm.Name), quote(cm.File), quote(cm.Offsets), c.Name+".npy", wantOff)
			}
		}
		cols = append(cols, c)
	}
	s := Schema{Columns: cols}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return cols, nil
}

// ---- npy ----

// npyArray is one validated .npy file: a C-order array of rows x cols items
// (cols 0 for a 1-D array) starting at byte start.
type npyArray struct {
	f     *os.File
	name  string // base name, for errors
	start int64
	rows  int64
	cols  int64
}

// openNPYArray opens and checks an array this layout expects: descr is
// '<f4', '<f2', '|V2' (bfloat16) or '<i8', ndim 2 (with cols as the second dimension) or 1.
func openNPYArray(path, descr string, ndim int, cols int64) (*npyArray, error) {
	name := filepath.Base(path)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	a, err := checkNPYArray(f, name, descr, ndim, cols)
	if err != nil {
		f.Close()
		return nil, err
	}
	return a, nil
}

func checkNPYArray(f *os.File, name, descr string, ndim int, cols int64) (*npyArray, error) {
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	size := info.Size()
	var pre [12]byte
	if size < 10 {
		return nil, fmt.Errorf("%s: %d bytes, too short for an NPY header", name, size)
	}
	if _, err := f.ReadAt(pre[:10], 0); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if string(pre[:6]) != "\x93NUMPY" {
		return nil, fmt.Errorf("%s: not an NPY file (bad magic)", name)
	}
	var hl, prefix int64
	switch major := pre[6]; major {
	case 1:
		hl, prefix = int64(binary.LittleEndian.Uint16(pre[8:])), 10
	case 2, 3:
		if size < 12 {
			return nil, fmt.Errorf("%s: %d bytes, too short for an NPY %d.0 header", name, size, major)
		}
		if _, err := f.ReadAt(pre[:12], 0); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		hl, prefix = int64(binary.LittleEndian.Uint32(pre[8:])), 12
	default:
		return nil, fmt.Errorf("%s: NPY version %d.%d not supported", name, pre[6], pre[7])
	}
	if hl > maxNPYHeader {
		return nil, fmt.Errorf("%s: NPY header of %d bytes (more than %d)", name, hl, maxNPYHeader)
	}
	if prefix+hl > size {
		return nil, fmt.Errorf("%s: NPY header of %d bytes but the file has %d", name, hl, size)
	}
	h := make([]byte, hl)
	if _, err := f.ReadAt(h, prefix); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	d, fortran, shape, err := parseNPYDict(string(h))
	if err != nil {
		return nil, fmt.Errorf("%s: NPY header: %w", name, err)
	}
	if d != descr {
		return nil, fmt.Errorf("%s: dtype %s, want %s", name, quote(d), descr)
	}
	if fortran {
		return nil, fmt.Errorf("%s: Fortran order, want C order", name)
	}
	if len(shape) != ndim {
		return nil, fmt.Errorf("%s: shape %v has %d dimensions, want %d", name, shape, len(shape), ndim)
	}
	a := &npyArray{f: f, name: name, start: prefix + hl, rows: shape[0]}
	items := shape[0]
	if ndim == 2 {
		if shape[1] != cols {
			return nil, fmt.Errorf("%s: shape %v, want (rows, %d)", name, shape, cols)
		}
		a.cols = cols
		if items > math.MaxInt64/max(cols, 1) {
			return nil, fmt.Errorf("%s: shape %v is too large", name, shape)
		}
		items *= cols
	}
	isz := int64(4) // '<f4'
	switch descr {
	case "<i8":
		isz = 8
	case "<f2", "|V2":
		isz = 2
	}
	if items > math.MaxInt64/isz {
		return nil, fmt.Errorf("%s: shape %v is too large", name, shape)
	}
	if want := items * isz; want != size-a.start {
		return nil, fmt.Errorf("%s: shape %v needs %d data bytes but the file holds %d (truncated or corrupt)", name, shape, want, size-a.start)
	}
	return a, nil
}

// parseNPYDict parses the Python literal dict of an NPY header, e.g.
// "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }" followed by
// spaces and a newline. It accepts exactly those three keys.
func parseNPYDict(h string) (descr string, fortran bool, shape []int64, err error) {
	p := pyLit{s: strings.TrimRight(h, " \n\x00")}
	if !p.eat('{') {
		return "", false, nil, errors.New("not a dict")
	}
	seen := map[string]bool{}
	for {
		p.space()
		if p.eat('}') {
			break
		}
		key, err := p.str()
		if err != nil {
			return "", false, nil, err
		}
		if seen[key] {
			return "", false, nil, fmt.Errorf("duplicate key %s", quote(key))
		}
		seen[key] = true
		p.space()
		if !p.eat(':') {
			return "", false, nil, fmt.Errorf("no ':' after key %s", quote(key))
		}
		p.space()
		switch key {
		case "descr":
			descr, err = p.str()
		case "fortran_order":
			fortran, err = p.boolean()
		case "shape":
			shape, err = p.tuple()
		default:
			err = fmt.Errorf("unknown key %s", quote(key))
		}
		if err != nil {
			return "", false, nil, err
		}
		p.space()
		if p.eat('}') {
			break
		}
		if !p.eat(',') {
			return "", false, nil, fmt.Errorf("no ',' after %s", key)
		}
	}
	if p.i != len(p.s) {
		return "", false, nil, errors.New("text after the dict")
	}
	if !seen["descr"] || !seen["fortran_order"] || !seen["shape"] {
		return "", false, nil, errors.New("want keys 'descr', 'fortran_order' and 'shape'")
	}
	return descr, fortran, shape, nil
}

// pyLit scans the small subset of Python literals an NPY header uses.
type pyLit struct {
	s string
	i int
}

func (p *pyLit) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n') {
		p.i++
	}
}

func (p *pyLit) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *pyLit) str() (string, error) {
	if p.i >= len(p.s) || (p.s[p.i] != '\'' && p.s[p.i] != '"') {
		return "", fmt.Errorf("want a string at byte %d", p.i)
	}
	q := p.s[p.i]
	j := strings.IndexByte(p.s[p.i+1:], q)
	if j < 0 || j > 64 {
		return "", fmt.Errorf("unterminated or long string at byte %d", p.i)
	}
	v := p.s[p.i+1 : p.i+1+j]
	if strings.ContainsAny(v, "\\\n") {
		return "", fmt.Errorf("escapes in string at byte %d", p.i)
	}
	p.i += j + 2
	return v, nil
}

func (p *pyLit) boolean() (bool, error) {
	switch {
	case strings.HasPrefix(p.s[p.i:], "False"):
		p.i += 5
		return false, nil
	case strings.HasPrefix(p.s[p.i:], "True"):
		p.i += 4
		return true, nil
	}
	return false, fmt.Errorf("want True or False at byte %d", p.i)
}

// tuple parses "(a, b)", "(a,)" or "()" of non-negative integers.
func (p *pyLit) tuple() ([]int64, error) {
	if !p.eat('(') {
		return nil, fmt.Errorf("want a tuple at byte %d", p.i)
	}
	var out []int64
	for {
		p.space()
		if p.eat(')') {
			return out, nil
		}
		if len(out) == 32 {
			return nil, errors.New("shape has more than 32 dimensions")
		}
		j := p.i
		for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
			j++
		}
		v, err := strconv.ParseInt(p.s[p.i:j], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad dimension at byte %d", p.i)
		}
		p.i = j
		out = append(out, v)
		p.space()
		if p.eat(')') {
			return out, nil
		}
		if !p.eat(',') {
			return nil, fmt.Errorf("want ',' or ')' at byte %d", p.i)
		}
	}
}

// npyColumn is one column's arrays being read.
type npyReadColumn struct {
	col   Column
	data  *npyArray
	dataR *bufio.Reader
	off   *npyArray // Matrix only
	offR  *bufio.Reader
	prev  int64 // last offset read
}

// npySource reads the npy layout row by row. head reads a record's fields
// and offsets; values then reads its embeddings (or the merge copies them).
type npySource struct {
	dir    string
	schema Schema
	n      int64
	cols   []npyReadColumn
	rec    *os.File
	recR   *bufio.Reader
	line   int64 // records.tsv lines read, the header included
	buf    []byte
}

// npyMeta is metadata.json as this package writes it.
type npyMeta struct {
	LayoutVersion int               `json:"layout_version"`
	Format        Format            `json:"format"`
	Records       int64             `json:"records"`
	Columns       []columnMeta      `json:"columns"`
	DType         DType             `json:"dtype"`
	Metadata      map[string]string `json:"metadata"`
}

func openNPYSource(dir string) (_ *npySource, err error) {
	s := &npySource{dir: dir}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	f, err := os.Open(filepath.Join(dir, "metadata.json"))
	if err != nil {
		return nil, fmt.Errorf("not an esm2go npy output: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxMetadataJSON+1))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("metadata.json: %w", err)
	}
	if len(b) > maxMetadataJSON {
		return nil, fmt.Errorf("metadata.json: larger than %d bytes", maxMetadataJSON)
	}
	var m npyMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("metadata.json: %w", err)
	}
	if m.Format != NPY {
		return nil, fmt.Errorf("metadata.json: format %s, want %q", quote(string(m.Format)), NPY)
	}
	if m.LayoutVersion < 1 || m.LayoutVersion > layoutVersion {
		return nil, fmt.Errorf("metadata.json: layout_version %d, this esm2go reads 1 to %d", m.LayoutVersion, layoutVersion)
	}
	if m.Records < 0 {
		return nil, fmt.Errorf("metadata.json: negative record count %d", m.Records)
	}
	cols, err := parseColumns(m.Columns, true)
	if err != nil {
		return nil, fmt.Errorf("metadata.json: %w", err)
	}
	if err := checkDType(m.DType, m.LayoutVersion); err != nil {
		return nil, fmt.Errorf("metadata.json: %w", err)
	}
	if _, ok := m.Metadata[metaKey]; ok {
		return nil, fmt.Errorf("metadata.json: metadata key %q is reserved", metaKey)
	}
	if m.Metadata == nil {
		m.Metadata = map[string]string{}
	}
	s.schema = Schema{Columns: cols, Metadata: m.Metadata, DType: m.DType.orDefault()}
	s.n = m.Records

	for _, c := range cols {
		rc := npyReadColumn{col: c}
		rc.data, err = openNPYArray(filepath.Join(dir, c.Name+".npy"), s.schema.DType.npyDescr(), 2, int64(c.Dim))
		if err != nil {
			return nil, err
		}
		s.cols = append(s.cols, rc) // before the offsets, so close sees it
		p := &s.cols[len(s.cols)-1]
		if c.Kind == Vector {
			if p.data.rows != s.n {
				return nil, fmt.Errorf("%s: %d rows, metadata.json says %d records", p.data.name, p.data.rows, s.n)
			}
		} else {
			if p.off, err = openNPYArray(filepath.Join(dir, c.Name+".offsets.npy"), "<i8", 1, 0); err != nil {
				return nil, err
			}
			if p.off.rows != s.n+1 {
				return nil, fmt.Errorf("%s: %d offsets, want %d (records + 1)", p.off.name, p.off.rows, s.n+1)
			}
			// The last offset must be the residue count; checked now so a
			// truncated or mismatched pair fails at Open.
			var last [8]byte
			if _, err := p.off.f.ReadAt(last[:], p.off.start+8*s.n); err != nil {
				return nil, fmt.Errorf("%s: %w", p.off.name, err)
			}
			if v := int64(binary.LittleEndian.Uint64(last[:])); v != p.data.rows {
				return nil, fmt.Errorf("%s: last offset %d, but %s has %d rows", p.off.name, v, p.data.name, p.data.rows)
			}
			p.offR = bufio.NewReaderSize(io.NewSectionReader(p.off.f, p.off.start, 8*(s.n+1)), 64<<10)
			var first int64
			if err := binary.Read(p.offR, binary.LittleEndian, &first); err != nil {
				return nil, fmt.Errorf("%s: %w", p.off.name, err)
			}
			if first != 0 {
				return nil, fmt.Errorf("%s: first offset %d, want 0", p.off.name, first)
			}
		}
		p.dataR = bufio.NewReaderSize(io.NewSectionReader(p.data.f, p.data.start, int64(s.schema.DType.size())*p.data.rows*p.data.cols), 1<<20)
	}

	if s.rec, err = os.Open(filepath.Join(dir, "records.tsv")); err != nil {
		return nil, err
	}
	s.recR = bufio.NewReaderSize(s.rec, maxRecordLine)
	hdr, err := s.readLine()
	if err == io.EOF {
		err = errors.New("empty file")
	}
	if err != nil {
		return nil, fmt.Errorf("records.tsv: %w", err)
	}
	if string(hdr) != "index\tid\tlength\ttruncated" {
		return nil, fmt.Errorf("records.tsv: header %s, want %q", quote(string(hdr)), "index\tid\tlength\ttruncated")
	}
	return s, nil
}

// readLine returns the next records.tsv line without its newline, valid
// until the next call; io.EOF at the end.
func (s *npySource) readLine() ([]byte, error) {
	b, err := s.recR.ReadSlice('\n')
	switch {
	case err == nil:
		s.line++
		return b[:len(b)-1], nil
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, fmt.Errorf("line %d: longer than %d bytes", s.line+1, maxRecordLine)
	case err == io.EOF && len(b) > 0:
		return nil, fmt.Errorf("line %d: no final newline (truncated?)", s.line+1)
	}
	return nil, err
}

// head reads the next record's ID, index, length and truncated flag, and
// the next offset of every Matrix column, which must agree with the length.
// It leaves row.Values alone.
func (s *npySource) head(row *Row) error {
	line, err := s.readLine()
	if err == io.EOF {
		return fmt.Errorf("records.tsv: %d records, metadata.json says %d", s.line-1, s.n)
	}
	if err != nil {
		return fmt.Errorf("records.tsv: %w", err)
	}
	if err := parseRecordLine(line, row); err != nil {
		return fmt.Errorf("records.tsv line %d: %w", s.line, err)
	}
	for i := range s.cols {
		c := &s.cols[i]
		if c.off == nil {
			continue
		}
		var b [8]byte
		if _, err := io.ReadFull(c.offR, b[:]); err != nil {
			return fmt.Errorf("%s: %w", c.off.name, err)
		}
		v := int64(binary.LittleEndian.Uint64(b[:]))
		if v < c.prev || v > c.data.rows {
			return fmt.Errorf("%s: offset %d after %d is outside [%d, %d]", c.off.name, v, c.prev, c.prev, c.data.rows)
		}
		if v-c.prev != int64(row.Length) {
			return fmt.Errorf("%s: record %s has %d residues, records.tsv line %d says length %d", c.off.name, quote(row.ID), v-c.prev, s.line, row.Length)
		}
		c.prev = v
	}
	return nil
}

// parseRecordLine parses "index\tid\tlength\ttruncated".
func parseRecordLine(line []byte, row *Row) error {
	f := strings.Split(string(line), "\t")
	if len(f) != 4 {
		return fmt.Errorf("%d tab-separated fields, want 4", len(f))
	}
	idx, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || idx < 0 {
		return fmt.Errorf("index %s is not a non-negative integer", quote(f[0]))
	}
	n, err := strconv.ParseInt(f[2], 10, 32)
	if err != nil || n < 0 {
		return fmt.Errorf("length %s is not a non-negative 32-bit integer", quote(f[2]))
	}
	tr, err := strconv.ParseBool(f[3])
	if err != nil || (f[3] != "true" && f[3] != "false") {
		return fmt.Errorf("truncated %s is not true or false", quote(f[3]))
	}
	row.Index, row.ID, row.Length, row.Truncated = idx, f[1], int(n), tr
	return nil
}

// values reads the embeddings of the record head just read.
func (s *npySource) values(row *Row) error {
	if cap(row.Values) < len(s.cols) {
		row.Values = make([][]float32, len(s.cols))
	}
	row.Values = row.Values[:len(s.cols)]
	for i := range s.cols {
		c := &s.cols[i]
		n := c.col.Dim
		if c.col.Kind == Matrix {
			n *= row.Length // bounded: offsets fit the array, checked in head
		}
		v := row.Values[i]
		if cap(v) < n {
			v = make([]float32, n)
		}
		v = v[:n]
		if err := s.readFloats(c, v); err != nil {
			return err
		}
		row.Values[i] = v
	}
	return nil
}

func (s *npySource) readFloats(c *npyReadColumn, v []float32) error {
	if s.buf == nil {
		s.buf = make([]byte, 64<<10)
	}
	d := s.schema.DType
	size := d.size()
	for len(v) > 0 {
		k := min(len(v), len(s.buf)/size)
		b := s.buf[:size*k]
		if _, err := io.ReadFull(c.dataR, b); err != nil {
			return fmt.Errorf("%s: %w", c.data.name, err)
		}
		if size == 2 {
			d.decode16(v[:k], b)
		} else {
			for j := range k {
				v[j] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*j:]))
			}
		}
		v = v[k:]
	}
	return nil
}

func (s *npySource) next(row *Row) error {
	if err := s.head(row); err != nil {
		return err
	}
	return s.values(row)
}

// finish checks that records.tsv ends after the declared records.
func (s *npySource) finish() error {
	if _, err := s.readLine(); err != io.EOF {
		if err != nil {
			return fmt.Errorf("records.tsv: %w", err)
		}
		return fmt.Errorf("records.tsv: more than the %d records metadata.json declares", s.n)
	}
	return nil
}

func (s *npySource) close() error {
	for _, c := range s.cols {
		c.data.f.Close()
		if c.off != nil {
			c.off.f.Close()
		}
	}
	s.cols = nil
	if s.rec != nil {
		s.rec.Close()
		s.rec = nil
	}
	return nil
}

// ---- parquet ----

// parquetSource reads a parquet output one row group at a time.
type parquetSource struct {
	f      *os.File
	size   int64
	end    int64 // where the footer starts: column chunks and indexes lie before it
	pf     *parquet.File
	schema Schema
	n      int64
	groups []parquet.RowGroup
	// headOnly skips the page-by-page checks of every column chunk: for
	// readSchema, which reads only the footer's schema and metadata.
	headOnly bool

	g       int           // current row group
	rows    parquet.Rows  // of group g while open
	inGroup int64         // rows read from group g
	buf     []parquet.Row // one row
}

func openParquetSource(path string, headOnly bool) (_ *parquetSource, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	s := &parquetSource{f: f, headOnly: headOnly}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	s.size = info.Size()
	if err := s.checkFooter(); err != nil {
		return nil, err
	}
	if err := guard(s.open); err != nil {
		return nil, err
	}
	s.buf = make([]parquet.Row, 1)
	return s, nil
}

// open opens the parquet file (its footer checked) and checks it holds
// this layout.
func (s *parquetSource) open() (err error) {
	s.pf, err = parquet.OpenFile(s.f, s.size,
		parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true),
		parquet.OptimisticRead(false), parquet.FileReadMode(parquet.ReadModeSync))
	if err != nil {
		return fmt.Errorf("parquet: %w", err)
	}
	meta := s.pf.Metadata()
	layout, ok := "", false
	s.schema.Metadata = map[string]string{}
	for _, kv := range meta.KeyValueMetadata {
		if kv.Key == metaKey {
			layout, ok = kv.Value, true
			continue
		}
		if _, dup := s.schema.Metadata[kv.Key]; dup {
			return fmt.Errorf("metadata key %s appears twice", quote(kv.Key))
		}
		s.schema.Metadata[kv.Key] = kv.Value
	}
	if !ok {
		return fmt.Errorf("not an esm2go output: no %q metadata", metaKey)
	}
	var lm struct {
		LayoutVersion int          `json:"layout_version"`
		Columns       []columnMeta `json:"columns"`
		DType         DType        `json:"dtype"`
	}
	if err := json.Unmarshal([]byte(layout), &lm); err != nil {
		return fmt.Errorf("%s metadata: %w", metaKey, err)
	}
	if lm.LayoutVersion < 1 || lm.LayoutVersion > layoutVersion {
		return fmt.Errorf("%s metadata: layout_version %d, this esm2go reads 1 to %d", metaKey, lm.LayoutVersion, layoutVersion)
	}
	if s.schema.Columns, err = parseColumns(lm.Columns, false); err != nil {
		return fmt.Errorf("%s metadata: %w", metaKey, err)
	}
	if err := checkDType(lm.DType, lm.LayoutVersion); err != nil {
		return fmt.Errorf("%s metadata: %w", metaKey, err)
	}
	s.schema.DType = lm.DType.orDefault()
	want := parquetSchema(s.schema.Columns, s.schema.DType, true)
	if !parquet.EqualNodes(want, s.pf.Schema()) || !samePaths(want.Columns(), s.pf.Schema().Columns()) {
		return fmt.Errorf("parquet schema does not match its %s metadata:\n%s\nwant:\n%s", metaKey, cut(s.pf.Schema().String(), 2000), want)
	}
	if err := checkFloat16Annotations(meta.Schema, s.schema.DType); err != nil {
		return err
	}
	s.groups = s.pf.RowGroups()
	if len(s.groups) != len(meta.RowGroups) {
		return fmt.Errorf("parquet: %d row groups, footer lists %d", len(s.groups), len(meta.RowGroups))
	}
	for g, rg := range meta.RowGroups {
		if rg.NumRows < 0 {
			return fmt.Errorf("row group %d: negative row count %d", g, rg.NumRows)
		}
		if s.n > math.MaxInt64-rg.NumRows {
			return fmt.Errorf("row group %d: row count overflows", g)
		}
		s.n += rg.NumRows
		if len(rg.Columns) != parquetFixedCols+len(s.schema.Columns) {
			return fmt.Errorf("row group %d: %d column chunks, schema has %d columns", g, len(rg.Columns), parquetFixedCols+len(s.schema.Columns))
		}
		for c := range rg.Columns {
			if s.headOnly {
				break
			}
			if err := s.checkChunk(g, c); err != nil {
				return err
			}
		}
	}
	if s.n != meta.NumRows {
		return fmt.Errorf("row groups hold %d rows, footer says %d", s.n, meta.NumRows)
	}
	return nil
}

// checkDType checks a layout's dtype: absent (float32) in version 1.
func checkDType(d DType, version int) error {
	if !d.valid() {
		return fmt.Errorf("unknown dtype %s", quote(string(d)))
	}
	if version < 2 && d != "" {
		return fmt.Errorf("dtype %s in a layout_version %d output (dtypes came with version 2)", quote(string(d)), version)
	}
	return nil
}

// checkFloat16Annotations checks that the 2-byte leaves of the file's
// schema carry parquet's FLOAT16 logical type for float16, and none for
// bfloat16 (parquet-go does not keep the annotation in the schema it reads
// back, so the footer's elements are checked here).
func checkFloat16Annotations(elems []format.SchemaElement, d DType) error {
	for i := range elems {
		e := &elems[i]
		if !e.Type.Valid || e.Type.V != format.FixedLenByteArray {
			continue
		}
		_, f16 := e.LogicalType.Value.(*format.Float16Type)
		if f16 != (d == Float16) {
			return fmt.Errorf("column %s: parquet FLOAT16 annotation %v, but the %s metadata says dtype %s", quote(e.Name), f16, metaKey, d)
		}
	}
	return nil
}

func samePaths(a, b [][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.Join(a[i], ".") != strings.Join(b[i], ".") {
			return false
		}
	}
	return true
}

// cut shortens s to n bytes for an error message.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("... (%d bytes)", len(s))
}

// checkFooter validates the parquet magic and the footer's length, then
// walks the footer's thrift encoding so parquet-go never allocates from an
// unchecked length while decoding it.
func (s *parquetSource) checkFooter() error {
	if s.size < 12 {
		return fmt.Errorf("%d bytes, too short for a parquet file", s.size)
	}
	var head [4]byte
	var tail [8]byte
	if _, err := s.f.ReadAt(head[:], 0); err != nil {
		return err
	}
	if _, err := s.f.ReadAt(tail[:], s.size-8); err != nil {
		return err
	}
	if string(head[:]) != "PAR1" || string(tail[4:]) != "PAR1" {
		return errors.New("not a parquet file (bad magic; encrypted files are not supported)")
	}
	n := int64(binary.LittleEndian.Uint32(tail[:4]))
	if n > s.size-12 || n > maxParquetFooter {
		return fmt.Errorf("parquet footer of %d bytes in a file of %d (at most %d)", n, s.size, maxParquetFooter)
	}
	s.end = s.size - 8 - n
	footer := make([]byte, n)
	if _, err := s.f.ReadAt(footer, s.end); err != nil {
		return err
	}
	if _, err := thriftWalk(footer, nil); err != nil {
		return fmt.Errorf("parquet footer: %w", err)
	}
	return nil
}

// chunkRange is where parquet-go reads a column chunk's pages.
func chunkRange(cc *format.ColumnChunk) (start, end int64) {
	md := &cc.MetaData
	start = md.DataPageOffset
	if md.DictionaryPageOffset != 0 {
		start = md.DictionaryPageOffset
	}
	return start, start + md.TotalCompressedSize
}

// checkChunk checks what the footer says about a column chunk against the
// file before anything reads it.
func (s *parquetSource) checkChunk(g, c int) error {
	cc := &s.pf.Metadata().RowGroups[g].Columns[c]
	md := &cc.MetaData
	where := fmt.Sprintf("row group %d column %d", g, c)
	if cc.FilePath != "" {
		return fmt.Errorf("%s: data in another file (%s) is not supported", where, quote(cc.FilePath))
	}
	if len(cc.EncryptedColumnMetadata) > 0 {
		return fmt.Errorf("%s: encrypted columns are not supported", where)
	}
	switch md.Codec {
	case format.Uncompressed, format.Snappy:
	default:
		return fmt.Errorf("%s: compression %s not supported (esm2go writes snappy)", where, md.Codec)
	}
	start, end := chunkRange(cc)
	if md.TotalCompressedSize <= 0 || start < 4 || start > s.end || md.TotalCompressedSize > s.end-start {
		return fmt.Errorf("%s: chunk at %d of %d bytes is outside the file's data (%d bytes)", where, start, md.TotalCompressedSize, s.end)
	}
	if md.DictionaryPageOffset != 0 && (md.DictionaryPageOffset > md.DataPageOffset || md.DataPageOffset >= end) {
		return fmt.Errorf("%s: dictionary at %d, data at %d outside the chunk", where, md.DictionaryPageOffset, md.DataPageOffset)
	}
	if md.NumValues < 0 {
		return fmt.Errorf("%s: negative value count %d", where, md.NumValues)
	}
	return nil
}

// pageLocator checks, while the pages of a chunk are walked, that the offset
// index lists exactly those data pages.
type pageLocator struct {
	locs []format.PageLocation
	i    int
	rows int64
}

// checkPages walks the page headers of column chunk c of group g, checking
// each page's sizes and counts before parquet-go reads it. With loc, the
// data pages must be version 2 and match the offset index.
func (s *parquetSource) checkPages(g, c int, loc *pageLocator) error {
	cc := &s.pf.Metadata().RowGroups[g].Columns[c]
	codec := cc.MetaData.Codec
	where := fmt.Sprintf("row group %d column %d", g, c)
	pos, end := chunkRange(cc)
	var hdr []byte
	for pos < end {
		var p pageFields
		n := min(end-pos, 4<<10)
		for {
			if int64(cap(hdr)) < n {
				hdr = make([]byte, n)
			}
			hdr = hdr[:n]
			if _, err := s.f.ReadAt(hdr, pos); err != nil {
				return fmt.Errorf("%s: page at %d: %w", where, pos, err)
			}
			p = pageFields{numRows: -1, isCompressed: -1}
			used, err := thriftWalk(hdr, p.set)
			if err == nil {
				p.headerLen = int64(used)
				break
			}
			if !errors.Is(err, errThriftShort) || n == min(end-pos, maxPageHeader) {
				return fmt.Errorf("%s: page header at %d: %w", where, pos, err)
			}
			n = min(end-pos, maxPageHeader, 16*n)
		}
		body := pos + p.headerLen
		if err := p.check(codec, end-body); err != nil {
			return fmt.Errorf("%s: page at %d: %w", where, pos, err)
		}
		if codec == format.Snappy && p.compressedValues() {
			// The snappy block states its decoded length; the decoder
			// allocates it, so it must not exceed the page's.
			skip := int64(0)
			if p.typ == int64(format.DataPageV2) {
				skip = p.repLen + p.defLen
			}
			var vb [binary.MaxVarintLen64]byte
			k := min(int64(len(vb)), p.compressed-skip)
			if k > 0 {
				if _, err := s.f.ReadAt(vb[:k], body+skip); err != nil {
					return fmt.Errorf("%s: page at %d: %w", where, pos, err)
				}
				dl, m := binary.Uvarint(vb[:k])
				if m <= 0 || dl > uint64(p.uncompressed) {
					return fmt.Errorf("%s: page at %d: snappy block declares %d bytes, the page %d", where, pos, dl, p.uncompressed)
				}
			}
		}
		if loc != nil && p.typ != int64(format.DictionaryPage) {
			if err := loc.next(pos, p); err != nil {
				return fmt.Errorf("%s: page at %d: %w", where, pos, err)
			}
		}
		pos = body + p.compressed
	}
	if pos != end {
		return fmt.Errorf("%s: pages end at %d, the chunk at %d", where, pos, end)
	}
	if loc != nil && loc.i != len(loc.locs) {
		return fmt.Errorf("%s: %d data pages, the offset index lists %d", where, loc.i, len(loc.locs))
	}
	return nil
}

func (l *pageLocator) next(pos int64, p pageFields) error {
	if p.typ != int64(format.DataPageV2) {
		return errors.New("not a version 2 data page, cannot be copied")
	}
	if l.i >= len(l.locs) {
		return errors.New("a data page the offset index does not list")
	}
	want := l.locs[l.i]
	if want.Offset != pos || int64(want.CompressedPageSize) != p.headerLen+p.compressed || want.FirstRowIndex != l.rows {
		return fmt.Errorf("offset index entry %d (offset %d, size %d, first row %d) does not match the page (offset %d, size %d, first row %d)",
			l.i, want.Offset, want.CompressedPageSize, want.FirstRowIndex, pos, p.headerLen+p.compressed, l.rows)
	}
	l.i++
	l.rows += p.numRows
	return nil
}

// pageFields collects what checkPages needs from a PageHeader.
type pageFields struct {
	typ, uncompressed, compressed int64
	numValues, numNulls, numRows  int64
	repLen, defLen                int64
	isCompressed                  int64 // -1 unset (true), 0 false, 1 true
	headerLen                     int64
	nValueFields                  int
}

// set receives the PageHeader's integer fields from thriftWalk by path of
// field ids: 1 type, 2 uncompressed size, 3 compressed size; 5, 7, 8 the
// data page, dictionary page and data page v2 headers, whose field 1 is the
// value count; v2 also has 2 nulls, 3 rows, 5 and 6 the level lengths and
// 7 is_compressed.
func (p *pageFields) set(path []int16, v int64) {
	switch {
	case len(path) == 1 && path[0] == 1:
		p.typ = v
	case len(path) == 1 && path[0] == 2:
		p.uncompressed = v
	case len(path) == 1 && path[0] == 3:
		p.compressed = v
	case len(path) == 2 && (path[0] == 5 || path[0] == 7 || path[0] == 8) && path[1] == 1:
		p.numValues = v
		p.nValueFields++
	case len(path) == 2 && path[0] == 8:
		switch path[1] {
		case 2:
			p.numNulls = v
		case 3:
			p.numRows = v
		case 5:
			p.defLen = v
		case 6:
			p.repLen = v
		case 7:
			p.isCompressed = v
		}
	}
}

func (p *pageFields) compressedValues() bool {
	return p.typ != int64(format.DataPageV2) || p.isCompressed != 0
}

// check validates one page header against the room left in its chunk.
func (p *pageFields) check(codec format.CompressionCodec, room int64) error {
	switch format.PageType(p.typ) {
	case format.DataPage, format.DictionaryPage, format.DataPageV2:
	default:
		return fmt.Errorf("page type %d not supported", p.typ)
	}
	if p.nValueFields != 1 {
		return errors.New("page header without exactly one page-type header")
	}
	if p.compressed < 0 || p.compressed > room {
		return fmt.Errorf("compressed size %d, %d bytes left in the chunk", p.compressed, room)
	}
	maxUnc := p.compressed
	if codec == format.Snappy {
		maxUnc = snappyMaxExpansion*p.compressed + 64
	}
	if p.uncompressed < 0 || p.uncompressed > min(maxUnc, maxPageBytes) {
		return fmt.Errorf("uncompressed size %d impossible for %d compressed bytes", p.uncompressed, p.compressed)
	}
	// Levels are run-length encoded, so a page may hold more values than
	// bytes (empty lists are nulls); 1<<16 extra covers a 10,000-row group
	// of empty records, and bounds the level buffers parquet-go allocates.
	if p.numValues < 0 || p.numValues > 8*p.uncompressed+1<<16 {
		return fmt.Errorf("%d values in %d bytes", p.numValues, p.uncompressed)
	}
	if format.PageType(p.typ) == format.DataPageV2 {
		if p.numNulls < 0 || p.numNulls > p.numValues || p.numRows < 0 || p.numRows > p.numValues {
			return fmt.Errorf("v2 page counts: %d values, %d nulls, %d rows", p.numValues, p.numNulls, p.numRows)
		}
		if p.repLen < 0 || p.defLen < 0 || p.repLen+p.defLen > p.compressed || p.repLen+p.defLen > p.uncompressed {
			return fmt.Errorf("v2 level lengths %d+%d in a page of %d bytes", p.repLen, p.defLen, p.compressed)
		}
	}
	return nil
}

// loadIndexes reads the page indexes of group g's column chunks for a
// verbatim copy, walking each before parquet-go decodes it, and returns the
// offset index of each chunk.
func (s *parquetSource) loadIndexes(g int) ([][]format.PageLocation, error) {
	rg := s.groups[g]
	chunks := rg.ColumnChunks()
	meta := &s.pf.Metadata().RowGroups[g]
	out := make([][]format.PageLocation, len(chunks))
	for c, ch := range chunks {
		cc := &meta.Columns[c]
		for _, ix := range []struct {
			off int64
			n   int32
		}{{cc.ColumnIndexOffset, cc.ColumnIndexLength}, {cc.OffsetIndexOffset, cc.OffsetIndexLength}} {
			if ix.off <= 0 || ix.n <= 0 || ix.off > s.end || int64(ix.n) > s.end-ix.off {
				return nil, fmt.Errorf("row group %d column %d: no page index inside the file", g, c)
			}
			b := make([]byte, ix.n) // bounded by the file, checked above
			if _, err := s.f.ReadAt(b, ix.off); err != nil {
				return nil, err
			}
			if _, err := thriftWalk(b, nil); err != nil {
				return nil, fmt.Errorf("row group %d column %d: page index: %w", g, c, err)
			}
		}
		fc, ok := ch.(*parquet.FileColumnChunk)
		if !ok {
			return nil, fmt.Errorf("row group %d column %d: not a file column chunk", g, c)
		}
		var oi parquet.OffsetIndex
		err := guard(func() error {
			if _, err := fc.ColumnIndex(); err != nil {
				return err
			}
			var err error
			oi, err = fc.OffsetIndex()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("row group %d column %d: %w", g, c, err)
		}
		locs := make([]format.PageLocation, oi.NumPages())
		for i := range locs {
			locs[i] = format.PageLocation{Offset: oi.Offset(i), CompressedPageSize: int32(oi.CompressedPageSize(i)), FirstRowIndex: oi.FirstRowIndex(i)}
		}
		out[c] = locs
	}
	return out, nil
}

// checkGroupPages checks the pages of every chunk of group g. With locs
// (from loadIndexes), the pages must match the offset indexes, as a
// verbatim copy requires.
func (s *parquetSource) checkGroupPages(locs [][]format.PageLocation) error {
	cols := len(s.groups[s.g].ColumnChunks())
	for c := range cols {
		var loc *pageLocator
		if locs != nil {
			loc = &pageLocator{locs: locs[c]}
		}
		if err := s.checkPages(s.g, c, loc); err != nil {
			return err
		}
	}
	return nil
}

// openGroup checks the pages of group g and starts reading its rows.
func (s *parquetSource) openGroup() error {
	if err := s.checkGroupPages(nil); err != nil {
		return err
	}
	s.inGroup = 0
	return guard(func() error {
		s.rows = s.groups[s.g].Rows()
		return nil
	})
}

// readRow reads the next row of the open group into row; false at the
// group's end, once its row count has been checked.
func (s *parquetSource) readRow(row *Row) (bool, error) {
	var n int
	err := guard(func() (err error) {
		n, err = s.rows.ReadRows(s.buf[:1])
		return err
	})
	if err != nil && err != io.EOF {
		return false, fmt.Errorf("row group %d: %w", s.g, err)
	}
	if n == 1 {
		s.inGroup++
		if want := s.groups[s.g].NumRows(); s.inGroup > want {
			return false, fmt.Errorf("row group %d: more rows than the %d it declares", s.g, want)
		}
		if err := s.rowFromParquet(s.buf[0], row); err != nil {
			return false, fmt.Errorf("row group %d row %d: %w", s.g, s.inGroup-1, err)
		}
		return true, nil
	}
	if err == nil {
		return false, fmt.Errorf("row group %d: reader returned no row and no error", s.g)
	}
	if want := s.groups[s.g].NumRows(); s.inGroup != want {
		return false, fmt.Errorf("row group %d: %d rows, it declares %d", s.g, s.inGroup, want)
	}
	return false, nil
}

// closeGroup ends group g and moves to the next.
func (s *parquetSource) closeGroup() error {
	err := guard(s.rows.Close)
	s.rows = nil
	s.g++
	return err
}

func (s *parquetSource) next(row *Row) error {
	for {
		if s.rows == nil {
			if s.g >= len(s.groups) {
				return errors.New("fewer rows than the footer declares")
			}
			if err := s.openGroup(); err != nil {
				return err
			}
		}
		ok, err := s.readRow(row)
		if err != nil || ok {
			return err
		}
		if err := s.closeGroup(); err != nil {
			return err
		}
	}
}

// finish checks the last group was read to its end.
func (s *parquetSource) finish() error {
	var probe Row
	for s.g < len(s.groups) {
		if s.rows == nil {
			if s.groups[s.g].NumRows() != 0 {
				return errors.New("row groups left after the declared rows")
			}
			if err := s.openGroup(); err != nil {
				return err
			}
		}
		ok, err := s.readRow(&probe)
		if err != nil {
			return err
		}
		if ok {
			return errors.New("more rows than the footer declares")
		}
		if err := s.closeGroup(); err != nil {
			return err
		}
	}
	return nil
}

// rowFromParquet converts one parquet row of this layout into row, checking
// the list structure: a Vector column is one list of D values; a Matrix
// column is Length lists of D values, or one null (an empty outer list)
// when Length is 0. Values come grouped by column, columns in order.
func (s *parquetSource) rowFromParquet(pr parquet.Row, row *Row) error {
	cols := s.schema.Columns
	if cap(row.Values) < len(cols) {
		row.Values = make([][]float32, len(cols))
	}
	row.Values = row.Values[:len(cols)]
	c := 0
	for i := 0; i < len(pr); c++ {
		if got := pr[i].Column(); got != c {
			return fmt.Errorf("a value of column %d where column %d was expected", got, c)
		}
		j := i + 1
		for j < len(pr) && pr[j].Column() == c {
			j++
		}
		vals := pr[i:j]
		i = j
		if c < parquetFixedCols {
			v := vals[0]
			if len(vals) != 1 || v.IsNull() || v.RepetitionLevel() != 0 {
				return fmt.Errorf("column %d: not exactly one value", c)
			}
			switch c {
			case colID:
				row.ID = string(v.ByteArray())
			case colIndex:
				row.Index = v.Int64()
			case colLength:
				if v.Int32() < 0 {
					return fmt.Errorf("negative length %d", v.Int32())
				}
				row.Length = int(v.Int32())
			case colTruncated:
				row.Truncated = v.Boolean()
			}
			continue
		}
		ci := c - parquetFixedCols
		if ci >= len(cols) {
			return fmt.Errorf("a value of column %d, the schema has %d", c, parquetFixedCols+len(cols))
		}
		col := cols[ci]
		out := row.Values[ci][:0]
		switch {
		case col.Kind == Vector:
			if len(vals) != col.Dim {
				return fmt.Errorf("column %s: %d values, want %d", col.Name, len(vals), col.Dim)
			}
			for k, v := range vals {
				if v.DefinitionLevel() != 1 || v.RepetitionLevel() != min(k, 1) {
					return fmt.Errorf("column %s: bad list levels (rep %d, def %d) at element %d", col.Name, v.RepetitionLevel(), v.DefinitionLevel(), k)
				}
			}
		case len(vals) == 1 && vals[0].DefinitionLevel() == 0: // an empty outer list
			if row.Length != 0 {
				return fmt.Errorf("column %s: no residues, want %d", col.Name, row.Length)
			}
			vals = vals[:0]
		default:
			if len(vals) != row.Length*col.Dim {
				return fmt.Errorf("column %s: %d values, want %d residues of %d", col.Name, len(vals), row.Length, col.Dim)
			}
			for k, v := range vals {
				want := 2 // within a residue
				if k == 0 {
					want = 0 // the record's first value
				} else if k%col.Dim == 0 {
					want = 1 // a residue's first value
				}
				if v.DefinitionLevel() != 2 || v.RepetitionLevel() != want {
					return fmt.Errorf("column %s: bad list levels (rep %d, def %d) at residue %d, element %d", col.Name, v.RepetitionLevel(), v.DefinitionLevel(), k/col.Dim+1, k%col.Dim)
				}
			}
		}
		if cap(out) < len(vals) {
			out = make([]float32, len(vals))
		}
		out = out[:len(vals)]
		if d := s.schema.DType; d != Float32 {
			for k, v := range vals {
				b := v.ByteArray()
				if len(b) != 2 {
					return fmt.Errorf("column %s: a %d-byte value, want 2 (%s)", col.Name, len(b), d)
				}
				d.decode16(out[k:k+1], b)
			}
		} else {
			for k, v := range vals {
				out[k] = v.Float()
			}
		}
		row.Values[ci] = out
	}
	if c != parquetFixedCols+len(cols) {
		return fmt.Errorf("no values for column %d", c)
	}
	return nil
}

// groupCheck is what checkGroupColumns found in a row group.
type groupCheck struct {
	first, last int64 // indices of the first and last rows
	bytes       int64 // embedding payload
}

// checkGroupColumns checks group g column by column, without assembling
// rows: every check Next makes (the list structure, lengths, indices
// strictly increasing, no NaN or Inf), except that an error only says
// which column failed; the caller then reads the group row by row for the
// precise error. The pages must already have passed checkPages.
func (s *parquetSource) checkGroupColumns(g int) (gc groupCheck, err error) {
	err = guard(func() error {
		gc, err = s.checkColumns(g)
		return err
	})
	return gc, err
}

func (s *parquetSource) checkColumns(g int) (groupCheck, error) {
	rg := s.groups[g]
	nrows := rg.NumRows()
	var gc groupCheck
	var lengths []int32
	for c, ch := range rg.ColumnChunks() {
		var lc *levelCheck
		if c >= parquetFixedCols {
			col := s.schema.Columns[c-parquetFixedCols]
			lc = newLevelCheck(col, lengths)
		}
		var n int64 // values of a fixed column
		pages := ch.Pages()
		err := func() error {
			for {
				p, err := pages.ReadPage()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				err = func() error {
					defer parquet.Release(p)
					if lc != nil {
						if err := lc.page(p.RepetitionLevels(), p.DefinitionLevels()); err != nil {
							return err
						}
						data := p.Data()
						n, bad := 0, -1
						if d := s.schema.DType; d != Float32 {
							b, size := data.FixedLenByteArray()
							if size != 2 {
								return fmt.Errorf("%d-byte values, want 2 (%s)", size, d)
							}
							n, bad = len(b)/2, d.firstNonFinite16(b)
						} else {
							v := data.Float()
							n, bad = len(v), firstNonFinite(v)
						}
						if int64(n) != p.NumValues()-p.NumNulls() {
							return fmt.Errorf("%d values for %d non-null values", n, p.NumValues()-p.NumNulls())
						}
						if bad >= 0 {
							return ErrNonFinite
						}
						gc.bytes += 4 * int64(n) // the float32 payload, as MergeSummary.Bytes counts
						return nil
					}
					if p.NumNulls() != 0 || len(p.RepetitionLevels()) != 0 {
						return errors.New("nulls or lists in a required column")
					}
					switch c {
					case colIndex:
						data := p.Data()
						for _, x := range data.Int64() {
							if x < 0 || (n > 0 && x <= gc.last) {
								return fmt.Errorf("index %d after %d", x, gc.last)
							}
							if n == 0 {
								gc.first = x
							}
							gc.last = x
							n++
						}
						return nil
					case colLength:
						data := p.Data()
						for _, x := range data.Int32() {
							if x < 0 {
								return fmt.Errorf("negative length %d", x)
							}
							lengths = append(lengths, x) // bounded by the decoded page
						}
					}
					n += p.NumValues()
					return nil
				}()
				if err != nil {
					return err
				}
			}
		}()
		if cerr := pages.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			if lc != nil {
				err = lc.end(nrows)
			} else if n != nrows {
				err = fmt.Errorf("%d values for %d rows", n, nrows)
			}
		}
		if err != nil {
			return groupCheck{}, fmt.Errorf("row group %d column %d: %w", g, c, err)
		}
	}
	return gc, nil
}

// levelCheck follows the repetition and definition levels of one embedding
// column across the pages of a row group.
type levelCheck struct {
	col     Column
	lengths []int32 // per row, from the length column
	row     int     // current row; -1 before the first
	k       int     // values of the current row so far; -1 after an empty list

	// The levels of one well-formed residue (Matrix) or vector, to compare
	// whole rows at memcmp speed: rep of the row's first and later D-value
	// blocks, and def of any block.
	rep0, rep1, def []byte
}

func newLevelCheck(col Column, lengths []int32) *levelCheck {
	l := &levelCheck{col: col, lengths: lengths, row: -1}
	d := col.Dim // at most maxColumnDim
	l.rep0, l.rep1, l.def = make([]byte, d), make([]byte, d), make([]byte, d)
	within, def := byte(1), byte(1) // Vector: list<float>
	if col.Kind == Matrix {
		within, def = 2, 2 // list<list<float>>
	}
	for i := range d {
		l.rep0[i], l.rep1[i], l.def[i] = within, within, def
	}
	l.rep0[0], l.rep1[0] = 0, 1
	return l
}

// wholeRow reports whether rep, def at i start with one complete,
// well-formed row (rep[i] is 0), and its length in values.
func (l *levelCheck) wholeRow(rep, def []byte, i int) (int, bool) {
	d := l.col.Dim
	if l.row+1 >= len(l.lengths) {
		return 0, false
	}
	blocks := 1
	if l.col.Kind == Matrix {
		blocks = int(l.lengths[l.row+1])
		if blocks == 0 {
			return 1, def[i] == 0
		}
	}
	if int64(len(rep)-i) < int64(blocks)*int64(d) {
		return 0, false
	}
	for b := range blocks {
		want := l.rep1
		if b == 0 {
			want = l.rep0
		}
		j := i + b*d
		if !bytes.Equal(rep[j:j+d], want) || !bytes.Equal(def[j:j+d], l.def) {
			return 0, false
		}
	}
	return blocks * d, true
}

func (l *levelCheck) page(rep, def []byte) error {
	if len(rep) != len(def) {
		return fmt.Errorf("%d repetition levels, %d definition levels", len(rep), len(def))
	}
	d := l.col.Dim
	for i := 0; i < len(rep); {
		r := rep[i]
		if r == 0 {
			if err := l.endRow(); err != nil {
				return err
			}
			if n, ok := l.wholeRow(rep, def, i); ok {
				l.row++
				l.k = n
				if l.col.Kind == Matrix && l.lengths[l.row] == 0 {
					l.k = -1
				}
				i += n
				continue
			}
			l.row++
			l.k = 0
			if l.row >= len(l.lengths) {
				return fmt.Errorf("more rows than lengths (%d)", len(l.lengths))
			}
		} else if l.row < 0 {
			return errors.New("a page starts inside a row")
		}
		if l.col.Kind == Vector {
			if def[i] != 1 || int(r) != min(l.k, 1) || l.k >= d {
				return fmt.Errorf("row %d: bad list levels (rep %d, def %d) at element %d", l.row, r, def[i], l.k)
			}
			l.k++
			i++
			continue
		}
		if l.lengths[l.row] == 0 {
			if def[i] != 0 || r != 0 {
				return fmt.Errorf("row %d: length 0 but values", l.row)
			}
			l.k = -1
			i++
			continue
		}
		want := byte(2)
		if l.k == 0 {
			want = 0
		} else if l.k%d == 0 {
			want = 1
		}
		if def[i] != 2 || r != want || l.k < 0 || l.k >= int(l.lengths[l.row])*d {
			return fmt.Errorf("row %d: bad list levels (rep %d, def %d) at value %d", l.row, r, def[i], l.k)
		}
		l.k++
		i++
	}
	return nil
}

// endRow checks the current row is complete.
func (l *levelCheck) endRow() error {
	if l.row < 0 {
		return nil
	}
	want := l.col.Dim
	if l.col.Kind == Matrix {
		want = int(l.lengths[l.row]) * l.col.Dim
		if want == 0 {
			want = -1 // the empty list's null
		}
	}
	if l.k != want {
		return fmt.Errorf("row %d: %d values, want %d", l.row, l.k, want)
	}
	return nil
}

func (l *levelCheck) end(nrows int64) error {
	if err := l.endRow(); err != nil {
		return err
	}
	if int64(l.row+1) != nrows || int64(len(l.lengths)) != nrows {
		return fmt.Errorf("%d rows, %d lengths, the group has %d", l.row+1, len(l.lengths), nrows)
	}
	return nil
}

func (s *parquetSource) close() error {
	if s.rows != nil {
		guard(s.rows.Close)
		s.rows = nil
	}
	return s.f.Close()
}

// guard calls f, which calls parquet-go on data from a file, and turns a
// panic into an error: parquet-go v0.32 panics on some malformed files
// (FuzzOpenParquet found a schema element with a negative child count).
// The Reader that saw it stays failed.
func guard(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed parquet file (the parquet library failed: %v)", p)
		}
	}()
	return f()
}

// ---- thrift ----

// errThriftShort: the bytes end inside the structure.
var errThriftShort = errors.New("thrift structure runs past its bytes")

// maxThriftDepth bounds nesting; parquet's structures are at most ~8 deep.
const maxThriftDepth = 64

// thriftStructSize bounds the Go size of any parquet-go format struct a
// thrift decoder may allocate per struct value (format.ColumnChunk, the
// largest, is 560 bytes in parquet-go v0.32; a test keeps this current).
const thriftStructSize = 640

// thriftWalk walks one compact-protocol struct at the start of b without
// allocating from any length in it. It refuses lists longer than the bytes
// left, nesting beyond maxThriftDepth, and structures whose decoding into
// Go values could allocate more than maxThriftDecode+thriftDecodePerByte*n
// for n bytes, and returns the
// struct's length in bytes. ints, if set, receives every integer field with
// the field ids leading to it.
func thriftWalk(b []byte, ints func(path []int16, v int64)) (int, error) {
	type frame struct {
		list    bool
		remain  int64 // list: elements left (maps count keys and values)
		elem    byte  // list element type; maps alternate key, value
		elem2   byte
		lastID  int16
		fieldID int16 // the field id this struct or list was reached by
	}
	pos := 0
	var structs, scalars int64
	stack := make([]frame, 1, 8)
	path := make([]int16, 0, maxThriftDepth+1)
	structs++

	uvarint := func() (uint64, error) {
		v, n := binary.Uvarint(b[pos:])
		if n == 0 {
			return 0, errThriftShort
		}
		if n < 0 {
			return 0, errors.New("varint overflows 64 bits")
		}
		pos += n
		return v, nil
	}
	skip := func(n uint64) error {
		if n > uint64(len(b)-pos) {
			return errThriftShort
		}
		pos += int(n)
		return nil
	}
	// value consumes one value of type t; for containers it pushes a frame.
	value := func(t byte, inList bool, id int16) error {
		switch t {
		case 1, 2: // bool: in the field header, or one byte in a list
			if inList {
				return skip(1)
			}
			if ints != nil {
				ints(append(path, id), int64(2-t))
			}
			return nil
		case 3:
			return skip(1)
		case 4, 5, 6:
			u, err := uvarint()
			if err != nil {
				return err
			}
			if ints != nil && !inList {
				ints(append(path, id), int64(u>>1)^-int64(u&1))
			}
			return nil
		case 7:
			return skip(8)
		case 8:
			n, err := uvarint()
			if err != nil {
				return err
			}
			return skip(n)
		case 9, 10, 11:
			var n uint64
			var et, et2 byte
			if t == 11 { // map: size varint, then key and value types
				var err error
				if n, err = uvarint(); err != nil {
					return err
				}
				if n > 0 {
					if pos >= len(b) {
						return errThriftShort
					}
					et, et2 = b[pos]>>4, b[pos]&0x0f
					pos++
				}
				n *= 2
			} else {
				if pos >= len(b) {
					return errThriftShort
				}
				h := b[pos]
				pos++
				n, et = uint64(h>>4), h&0x0f
				et2 = et
				if n == 15 {
					var err error
					if n, err = uvarint(); err != nil {
						return err
					}
				}
			}
			// Every element takes at least one byte.
			if n > uint64(len(b)-pos) {
				return fmt.Errorf("list of %d elements in %d bytes: %w", n, len(b)-pos, errThriftShort)
			}
			if len(stack) >= maxThriftDepth {
				return errors.New("nested too deeply")
			}
			if et == 12 || et2 == 12 {
				structs += int64(n)
			} else {
				scalars += int64(n)
			}
			stack = append(stack, frame{list: true, remain: int64(n), elem: et, elem2: et2, fieldID: id})
			path = append(path, id)
			return nil
		case 12:
			if len(stack) >= maxThriftDepth {
				return errors.New("nested too deeply")
			}
			if !inList {
				structs++
			}
			stack = append(stack, frame{fieldID: id})
			path = append(path, id)
			return nil
		}
		return fmt.Errorf("unknown thrift type %d", t)
	}

	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if top.list {
			if top.remain == 0 {
				stack = stack[:len(stack)-1]
				path = path[:len(path)-1]
				continue
			}
			top.remain--
			t := top.elem
			if top.elem != top.elem2 && top.remain%2 == 0 {
				t = top.elem2 // map: keys at odd remainders, values at even
			}
			if err := value(t, true, -1); err != nil {
				return 0, err
			}
			continue
		}
		if pos >= len(b) {
			return 0, errThriftShort
		}
		h := b[pos]
		pos++
		if h == 0 { // stop: the struct ends
			stack = stack[:len(stack)-1]
			if len(path) > 0 && len(stack) > 0 {
				path = path[:len(path)-1]
			}
			continue
		}
		t, delta := h&0x0f, int16(h>>4)
		id := top.lastID + delta
		if delta == 0 {
			u, err := uvarint()
			if err != nil {
				return 0, err
			}
			if u>>1 > math.MaxInt16 {
				return 0, errors.New("field id out of range")
			}
			id = int16(int64(u>>1) ^ -int64(u&1))
		}
		top.lastID = id
		if err := value(t, false, id); err != nil {
			return 0, err
		}
	}
	limit := maxThriftDecode + thriftDecodePerByte*int64(len(b))
	if est := structs*thriftStructSize + scalars*24 + int64(len(b)); est > limit {
		return 0, fmt.Errorf("%d structures and %d list items in %d bytes would take about %d MiB to decode (at most %d)", structs, scalars, len(b), est>>20, limit>>20)
	}
	return pos, nil
}
