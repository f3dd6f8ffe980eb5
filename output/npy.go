package output

import (
	"bufio"
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
	"unsafe"
)

// npyHeaderLen is the fixed size of every NPY v1.0 header this package
// writes: magic (6) + version (2) + header length (2) + the dict padded with
// spaces and a final '\n'. 128 bytes hold a 2-D shape of two 20-digit
// numbers, so the header is rewritten in place at Close with the final shape.
const npyHeaderLen = 128

// npyHeader returns the header for a C-order array of descr ('<f4', '<i8').
func npyHeader(descr string, shape ...int64) ([]byte, error) {
	dims := make([]string, len(shape))
	for i, s := range shape {
		dims[i] = strconv.FormatInt(s, 10)
	}
	sh := strings.Join(dims, ", ")
	if len(shape) == 1 {
		sh += ","
	}
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, sh)
	const prefix = 10
	if prefix+len(dict)+1 > npyHeaderLen {
		return nil, fmt.Errorf("npy header for shape %v too long", shape)
	}
	h := make([]byte, npyHeaderLen)
	copy(h, "\x93NUMPY\x01\x00")
	binary.LittleEndian.PutUint16(h[8:], npyHeaderLen-prefix)
	n := copy(h[prefix:], dict)
	for i := prefix + n; i < npyHeaderLen-1; i++ {
		h[i] = ' '
	}
	h[npyHeaderLen-1] = '\n'
	return h, nil
}

// npyFile streams one array: a placeholder header, then data, then the final
// header written over the placeholder at finish.
type npyFile struct {
	path  string
	f     *os.File
	bw    *bufio.Writer
	df    *dataFile // instead of bw: a resumable run's shared file, which buffers itself
	descr string
	rows  int64 // first dimension so far
	cols  int64 // second dimension; 0 for a 1-D array
}

func createNPY(path, descr string, cols int64) (*npyFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	a := &npyFile{path: path, f: f, bw: bufio.NewWriterSize(f, 1<<20), descr: descr, cols: cols}
	if _, err := a.bw.Write(make([]byte, npyHeaderLen)); err != nil {
		f.Close()
		return nil, err
	}
	return a, nil
}

func (a *npyFile) shape() []int64 {
	if a.cols == 0 {
		return []int64{a.rows}
	}
	return []int64{a.rows, a.cols}
}

// writeValues appends vals stored as d: little-endian float32, float16 or
// bfloat16.
func (a *npyFile) writeValues(vals []float32, d DType) error {
	size := d.size()
	if a.df != nil {
		return writeValuesTo(a.df, vals, d)
	}
	if size == 4 && nativeLittleEndian {
		// '<f4' is the little-endian bits: one copy into the buffer (the
		// loop below measured at a third of the speed in parquet_pages.go).
		_, err := a.bw.Write(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(vals))), 4*len(vals)))
		return err
	}
	var buf [4096]byte
	for len(vals) > 0 {
		n := min(len(vals), len(buf)/size)
		if size == 4 {
			for i, v := range vals[:n] {
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
			}
		} else {
			d.encode16(buf[:2*n], vals[:n])
		}
		if _, err := a.bw.Write(buf[:size*n]); err != nil {
			return err
		}
		vals = vals[n:]
	}
	return nil
}

func (a *npyFile) writeInt64(v int64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(v))
	_, err := a.bw.Write(b[:])
	return err
}

// sharedNPY is an array's data written to w, which the caller owns: no
// file, no header (a resumable run's column data, parts.go). A w that
// buffers (a dataFile) takes the values directly.
func sharedNPY(name string, w io.Writer, descr string, cols int64) *npyFile {
	if df, ok := w.(*dataFile); ok {
		return &npyFile{path: name, df: df, descr: descr, cols: cols}
	}
	return &npyFile{path: name, bw: bufio.NewWriterSize(w, 1<<20), descr: descr, cols: cols}
}

// finish flushes, writes the final header, fsyncs and closes; a shared
// array's data is only flushed.
func (a *npyFile) finish() error {
	var err error
	if a.df != nil {
		err = a.df.Flush()
	} else {
		err = a.bw.Flush()
	}
	if a.f == nil {
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(a.path), err)
		}
		return nil
	}
	if err == nil {
		var h []byte
		if h, err = npyHeader(a.descr, a.shape()...); err == nil {
			_, err = a.f.WriteAt(h, 0)
		}
	}
	if err == nil {
		err = a.f.Sync()
	}
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(a.path), err)
	}
	return nil
}

type npyColumn struct {
	col     Column
	data    *npyFile // Vector: (N, D); Matrix: (total residues, D)
	offsets *npyFile // Matrix only: (N+1,) int64
}

type npyWriter struct {
	owner
	tmp     string // temporary directory
	meta    map[string]string
	check   rowChecker
	cols    []npyColumn
	records *os.File
	rec     *bufio.Writer
	n       int64

	err    error
	closed bool
}

func newNPYWriter(own owner, schema Schema) (_ *npyWriter, err error) {
	return newNPYWriterShared(own, schema, nil)
}

// newNPYWriterShared is newNPYWriter writing column i's data array to
// data[i] (see sharedNPY) when data is not nil: the directory it publishes
// holds the offsets, records.tsv and metadata.json, without the data.
func newNPYWriterShared(own owner, schema Schema, data []io.Writer) (_ *npyWriter, err error) {
	final := own.final
	dir, pattern := tempPattern(final)
	tmp, err := os.MkdirTemp(dir, pattern)
	if err != nil {
		return nil, fmt.Errorf("output: create temporary for %s: %w", final, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes 0700
		os.Remove(tmp)
		return nil, fmt.Errorf("output: %s: %w", final, err)
	}
	w := &npyWriter{owner: own, tmp: tmp, meta: schema.Metadata, check: rowChecker{cols: schema.Columns, dtype: schema.DType.orDefault()}}
	defer func() {
		if err != nil {
			w.Abort()
		}
	}()
	for i, c := range schema.Columns {
		nc := npyColumn{col: c}
		if data != nil {
			nc.data = sharedNPY(c.Name+".npy", data[i], schema.DType.npyDescr(), int64(c.Dim))
		} else if nc.data, err = createNPY(filepath.Join(tmp, c.Name+".npy"), schema.DType.npyDescr(), int64(c.Dim)); err != nil {
			return nil, fmt.Errorf("output: %s: %w", final, err)
		}
		w.cols = append(w.cols, nc) // appended before offsets so Abort closes it
		if c.Kind == Matrix {
			off, err := createNPY(filepath.Join(tmp, c.Name+".offsets.npy"), "<i8", 0)
			if err != nil {
				return nil, fmt.Errorf("output: %s: %w", final, err)
			}
			w.cols[len(w.cols)-1].offsets = off
			if err := off.writeInt64(0); err != nil {
				return nil, fmt.Errorf("output: %s: %w", final, err)
			}
			off.rows = 1
		}
	}
	if w.records, err = os.OpenFile(filepath.Join(tmp, "records.tsv"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err != nil {
		return nil, fmt.Errorf("output: %s: %w", final, err)
	}
	w.rec = bufio.NewWriterSize(w.records, 64<<10)
	w.rec.WriteString("index\tid\tlength\ttruncated\n")
	return w, nil
}

func (w *npyWriter) Write(r *Row) error {
	if w.closed {
		return fmt.Errorf("output: %s: write after Close or Abort", w.final)
	}
	if w.err != nil {
		return w.err
	}
	if err := w.check.check(r); err != nil {
		return err
	}
	if err := w.write(r); err != nil {
		w.err = fmt.Errorf("output: %s: record %q: %w", w.final, r.ID, err)
		return w.err
	}
	w.check.accept(r)
	w.n++
	return nil
}

func (w *npyWriter) write(r *Row) error {
	for i := range w.cols {
		c := &w.cols[i]
		if err := c.data.writeValues(r.Values[i], w.check.dtype); err != nil {
			return err
		}
		if c.col.Kind == Vector {
			c.data.rows++
			continue
		}
		c.data.rows += int64(r.Length)
		if err := c.offsets.writeInt64(c.data.rows); err != nil {
			return err
		}
		c.offsets.rows++
	}
	return w.writeRecord(r)
}

// writeRecord appends r's line to records.tsv (index, id, length,
// truncated); Write and merge's byte copy share it.
func (w *npyWriter) writeRecord(r *Row) error {
	line := strconv.AppendInt(nil, r.Index, 10)
	line = append(line, '\t')
	line = append(line, sanitizeID(r.ID)...)
	line = append(line, '\t')
	line = strconv.AppendInt(line, int64(r.Length), 10)
	line = append(line, '\t')
	line = strconv.AppendBool(line, r.Truncated)
	line = append(line, '\n')
	_, err := w.rec.Write(line)
	return err
}

func (w *npyWriter) Close() error {
	if w.closed {
		return fmt.Errorf("output: %s: already closed", w.final)
	}
	if w.err != nil {
		err := w.err
		w.Abort()
		return err
	}
	if err := w.finish(); err != nil {
		w.Abort()
		return fmt.Errorf("output: %s: %w", w.final, err)
	}
	defer w.done()
	w.closed = true
	if err := w.owner.publish(w.tmp); err != nil {
		os.RemoveAll(w.tmp)
		return fmt.Errorf("output: %s: %w", w.final, err)
	}
	return nil
}

func (w *npyWriter) finish() error {
	for i := range w.cols {
		c := &w.cols[i]
		f := c.data
		c.data = nil
		if err := f.finish(); err != nil {
			return err
		}
		if c.offsets != nil {
			f := c.offsets
			c.offsets = nil
			if err := f.finish(); err != nil {
				return err
			}
		}
	}
	err := w.rec.Flush()
	if err == nil {
		err = w.records.Sync()
	}
	if cerr := w.records.Close(); err == nil {
		err = cerr
	}
	w.records = nil
	if err != nil {
		return fmt.Errorf("records.tsv: %w", err)
	}

	meta := w.meta
	if meta == nil {
		meta = map[string]string{}
	}
	if err := writeNPYMetadata(w.tmp, w.n, w.check.cols, w.check.dtype, meta); err != nil {
		return err
	}
	return syncDir(w.tmp)
}

// writeNPYMetadata writes an npy output's metadata.json into dir (fsynced).
func writeNPYMetadata(dir string, records int64, cols []Column, dtype DType, meta map[string]string) error {
	js, err := json.MarshalIndent(struct {
		LayoutVersion int               `json:"layout_version"`
		Format        Format            `json:"format"`
		Records       int64             `json:"records"`
		Columns       []columnMeta      `json:"columns"`
		DType         DType             `json:"dtype,omitempty"`
		Metadata      map[string]string `json:"metadata"`
	}{layoutVersionOf(dtype), NPY, records, columnsMeta(cols, true), dtypeMeta(dtype), meta}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileSync(filepath.Join(dir, "metadata.json"), append(js, '\n'))
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (w *npyWriter) Abort() error {
	if w.closed {
		return nil
	}
	defer w.done()
	w.closed = true
	for _, c := range w.cols {
		if c.data != nil && c.data.f != nil {
			c.data.f.Close()
		}
		if c.offsets != nil {
			c.offsets.f.Close()
		}
	}
	if w.records != nil {
		w.records.Close()
	}
	if err := os.RemoveAll(w.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("output: %s: remove temporary: %w", w.final, err)
	}
	return nil
}
