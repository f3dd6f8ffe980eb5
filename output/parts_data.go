package output

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"

	"github.com/esm2go/esm2go/internal/ctxio"
)

// A resumable run writes every value once. The embedding values, which
// are nearly all of an output's bytes, go straight into the files that
// become the output: <out>.parts/output.parquet (parquet), or
// <out>.parts/output.npy.d/<column>.npy (npy). A chunk is a byte range
// (a segment) of each of these files:
//
//   - parquet: each chunk is a complete parquet file of its rows, written
//     at the end of output.parquet. Finish appends one footer listing
//     every chunk's row groups at their place in the file (offsets
//     shifted, offset indexes rewritten) and renames output.parquet to
//     the output. The chunks' own footers stay in the file, unreferenced
//     (a few KiB per chunk), as parquet allows.
//   - npy: each column's values are appended to its .npy file, after a
//     128-byte header that Finish writes with the final shape; the chunk's
//     offsets and records.tsv are a small directory chunk-NNNNNN.d,
//     which Finish joins (offsets shifted) into output.npy.d before
//     renaming it to the output.
//
// The bytes reach each file through its sink (fast_sink.go), a goroutine
// that checksums and writes them and starts their writeback, so the
// goroutine producing rows does not wait in write(2). A commit waits for
// the sinks, fsyncs the files and records each segment's offset, size and
// CRC-32C (computed on the bytes as they were written) in the manifest. Resuming
// checks the listed segments, keeps the longest intact prefix of chunks
// and truncates each file after it: what a killed run wrote after its last
// commit is cut off.

// dataParquet and dataNPY name the shared files in a parts directory.
const (
	dataParquet = "output.parquet"
	dataNPY     = "output.npy.d"
)

// segment is a chunk's bytes in one shared file.
type segment struct {
	File   string `json:"file"` // relative to the parts directory
	Offset int64  `json:"offset"`
	Bytes  int64  `json:"bytes"`
	CRC32C uint32 `json:"crc32c"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// dataFile is a shared file being appended to: the chunk being written
// goes to its end through Write, which counts the bytes; its sink
// (fast_sink.go) checksums and writes them on a goroutine of its own.
type dataFile struct {
	rel   string // relative to the parts directory
	f     *os.File
	sink  *fastSink
	start int64 // where the chunk being written starts
	n     int64 // its bytes so far
}

func (d *dataFile) Write(b []byte) (int, error) {
	n, err := d.sink.Write(b)
	d.n += int64(n)
	return n, err
}

// ReadFrom reads r to its end straight into the sink's buffers: a
// bufio.Writer over the dataFile (parquet-go's, copying a row group's
// pages in) hands its reads here instead of copying them once more.
func (d *dataFile) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if err := d.sink.failed(); err != nil {
			return total, err
		}
		k, err := r.Read(d.room())
		d.fill(k)
		total += int64(k)
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// room and fill let a writer put bytes straight into the sink's buffer
// (see fastSink.room).
func (d *dataFile) room() []byte { return d.sink.room() }
func (d *dataFile) fill(k int) {
	d.sink.fill(k)
	d.n += int64(k)
}

// Flush is a no-op: the bytes given are the sink's to write (syncData
// waits for them). It lets a dataFile stand for a bufio.Writer.
func (d *dataFile) Flush() error { return d.sink.failed() }

// begin starts a chunk at the file's end, once every byte given is
// written.
func (d *dataFile) begin() error {
	if err := d.sink.reset(); err != nil {
		return err
	}
	d.start += d.n
	d.n = 0
	return nil
}

// segment is the chunk's bytes so far, once they are written.
func (d *dataFile) segment() (segment, error) {
	n, crc, err := d.sink.sum()
	if err == nil && n != d.n {
		err = fmt.Errorf("%s: %d bytes written of %d", d.rel, n, d.n)
	}
	return segment{File: d.rel, Offset: d.start, Bytes: d.n, CRC32C: crc}, err
}

// dataBase is where a shared file's first chunk starts: npy arrays keep
// room for their header.
func dataBase(f Format) int64 {
	if f == NPY {
		return npyHeaderLen
	}
	return 0
}

// dataFiles lists the shared files of a run, relative to its parts
// directory.
func dataFiles(f Format, s Schema) []string {
	if f == Parquet {
		return []string{dataParquet}
	}
	out := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		out[i] = filepath.Join(dataNPY, c.Name+".npy")
	}
	return out
}

// openData opens the shared files for appending after the committed
// chunks (truncating whatever follows them), creating them if need be.
func (p *Parts) openData() error {
	ends := p.dataEnds()
	if p.format == NPY {
		if err := p.cleanNPYDir(); err != nil {
			return err
		}
	}
	for _, rel := range dataFiles(p.format, p.schema) {
		path := filepath.Join(p.dir, rel)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			p.closeData()
			return fmt.Errorf("output: %w", err)
		}
		end := ends[rel]
		if p.format == NPY && end == npyHeaderLen {
			// A new array: the header's room (written at Finish).
			if err = f.Truncate(0); err == nil {
				_, err = f.WriteAt(make([]byte, npyHeaderLen), 0)
			}
		}
		if err == nil {
			err = f.Truncate(end)
		}
		if err == nil {
			_, err = f.Seek(end, io.SeekStart)
		}
		if err != nil {
			f.Close()
			p.closeData()
			return fmt.Errorf("output: %s: %w", path, err)
		}
		p.data = append(p.data, &dataFile{rel: rel, f: f, sink: newFastSink(f, path, end), start: end})
	}
	// The new files' names are durable before a commit lists them (npy:
	// the arrays are entries of output.npy.d, not of the parts directory).
	if p.format == NPY {
		if err := syncDir(filepath.Join(p.dir, dataNPY)); err != nil {
			p.closeData()
			return fmt.Errorf("output: %w", err)
		}
	}
	if err := syncDir(p.dir); err != nil {
		p.closeData()
		return fmt.Errorf("output: %w", err)
	}
	return nil
}

// cleanNPYDir makes output.npy.d hold nothing but the column arrays (an
// interrupted Finish may have left offsets, records.tsv, metadata.json).
// Anything else there was not written by esm2go: it is left alone and the
// run refused.
func (p *Parts) cleanNPYDir() error {
	dir := filepath.Join(p.dir, dataNPY)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("output: %w", err)
	}
	switch foreign, err := foreignNPY(p.dir); {
	case err != nil:
		return fmt.Errorf("output: %w", err)
	case len(foreign) > 0:
		return fmt.Errorf("output: %s holds %s, which esm2go did not write: move it away to resume: %w", p.dir, listQuoted(foreign, 5), ErrNotReplaceable)
	}
	keep := map[string]bool{}
	for _, rel := range dataFiles(NPY, p.schema) {
		keep[filepath.Base(rel)] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	for _, e := range ents {
		if !keep[e.Name()] {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("output: %w", err)
			}
		}
	}
	return nil
}

// dataStarts is where each shared file's first chunk starts.
func (p *Parts) dataStarts() map[string]int64 {
	starts := map[string]int64{}
	for _, rel := range dataFiles(p.format, p.schema) {
		starts[rel] = dataBase(p.format)
	}
	return starts
}

// dataEnds is where each shared file's committed chunks end.
func (p *Parts) dataEnds() map[string]int64 {
	ends := p.dataStarts()
	for _, c := range p.man.Chunks {
		for _, s := range c.Data {
			ends[s.File] = s.Offset + s.Bytes
		}
	}
	return ends
}

func (p *Parts) closeData() {
	for _, d := range p.data {
		d.sink.close()
		d.f.Close()
	}
	p.data = nil
}

// dataWriters are the shared files as the chunk writers take them.
func (p *Parts) dataWriters() []io.Writer {
	out := make([]io.Writer, len(p.data))
	for i, d := range p.data {
		out[i] = d
	}
	return out
}

// checkSegments checks that chunk c's segments follow the earlier chunks'
// (ends) in the files and hold the bytes it lists, and advances ends.
func (p *Parts) checkSegments(ctx context.Context, c chunkMeta, ends map[string]int64) error {
	files := dataFiles(p.format, p.schema)
	if len(c.Data) != len(files) {
		return damagef("%d data segments, want %d", len(c.Data), len(files))
	}
	for i, s := range c.Data {
		if s.File != files[i] || s.Offset != ends[s.File] {
			return damagef("segment %d (%s at %d) does not follow the chunk before", i, quote(s.File), s.Offset)
		}
		f, err := os.Open(filepath.Join(p.dir, s.File))
		if err != nil {
			return err
		}
		err = checkSegment(ctx, f, s, p.format)
		f.Close()
		if err == nil && p.format == NPY {
			err = p.checkNPYRows(c, p.schema.Columns[i], s)
		}
		if err != nil {
			return err
		}
		ends[s.File] = s.Offset + s.Bytes
	}
	return nil
}

// checkNPYRows checks that npy chunk c's segment s of column col holds the
// rows c lists (a vector: Rows rows; a matrix: as many as its offsets
// end at), as Finish will require.
func (p *Parts) checkNPYRows(c chunkMeta, col Column, s segment) error {
	rowBytes := int64(p.schema.DType.size()) * int64(col.Dim)
	if col.Kind != Matrix {
		if c.Rows > math.MaxInt64/rowBytes || s.Bytes != c.Rows*rowBytes {
			return damagef("%s: %d bytes for %d rows of %d bytes", s.File, s.Bytes, c.Rows, rowBytes)
		}
		return nil
	}
	path := filepath.Join(p.dir, c.Name, col.Name+".offsets.npy")
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if c.Rows > (math.MaxInt64-npyHeaderLen)/8-1 || info.Size() != npyHeaderLen+8*(c.Rows+1) {
		return damagef("%s: %d bytes for %d records", path, info.Size(), c.Rows)
	}
	var b [8]byte
	if _, err := f.ReadAt(b[:], info.Size()-8); err != nil {
		return err
	}
	last := int64(binary.LittleEndian.Uint64(b[:]))
	if last < 0 || last > math.MaxInt64/rowBytes || last*rowBytes != s.Bytes {
		return damagef("%s: %d bytes, its offsets end at row %d of %d bytes", s.File, s.Bytes, last, rowBytes)
	}
	return nil
}

// checkSegment checks that f holds segment s. A parquet chunk must also
// be one Finish can list: its footer and page index are read, and a
// failure there (bytes that match the manifest but are no parquet file)
// is damage too, not a Finish failing run after run.
func checkSegment(ctx context.Context, f *os.File, s segment, format Format) error {
	h := crc32.New(castagnoli)
	n, err := io.Copy(h, ctxio.Reader(ctx, io.NewSectionReader(f, s.Offset, s.Bytes)))
	if err != nil {
		return fmt.Errorf("%s: %w", s.File, err)
	}
	if n != s.Bytes || h.Sum32() != s.CRC32C {
		return damagef("%s: %d bytes at %d with CRC-32C %08x, the manifest says %d bytes, %08x", s.File, n, s.Offset, h.Sum32(), s.Bytes, s.CRC32C)
	}
	if format != Parquet {
		return nil
	}
	_, _, _, err = chunkFooter(f, s.Offset, s.Bytes)
	var pe *fs.PathError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pe):
		return fmt.Errorf("%s: %w", s.File, err) // reading, not the bytes read
	default:
		return damagef("%s: the chunk at %d is no parquet file esm2go can complete: %w", s.File, s.Offset, err)
	}
}

// syncData writes what the shared files' sinks hold and fsyncs the
// files.
func (p *Parts) syncData() error {
	for _, d := range p.data {
		if err := d.sink.flush(); err != nil {
			return fmt.Errorf("output: %w", err)
		}
		if err := d.f.Sync(); err != nil {
			return fmt.Errorf("output: %s: %w", filepath.Join(p.dir, d.rel), err)
		}
	}
	return nil
}

// ---- Finish: parquet ----

// finishParquet appends to output.parquet one footer listing the row
// groups of every chunk (each a parquet file at its segment's offset) and
// fsyncs it; it is then the output.
func (p *Parts) finishParquet(meta map[string]string) error {
	d := p.data[0]
	var all format.FileMetaData
	var indexes []format.OffsetIndex
	var colIndexes [][]byte
	end := d.start + d.n
	for i, c := range p.man.Chunks {
		s := c.Data[0]
		md, ci, oi, err := chunkFooter(d.f, s.Offset, s.Bytes)
		if err != nil {
			return fmt.Errorf("chunk %d (%s at %d): %w", i, s.File, s.Offset, err)
		}
		if i == 0 {
			all.Version, all.Schema, all.CreatedBy, all.ColumnOrders = md.Version, md.Schema, md.CreatedBy, md.ColumnOrders
			for _, kv := range md.KeyValueMetadata {
				if kv.Key == metaKey {
					all.KeyValueMetadata = append(all.KeyValueMetadata, kv)
				}
			}
		} else if len(md.Schema) != len(all.Schema) {
			return fmt.Errorf("chunk %d has %d schema elements, chunk 0 %d", i, len(md.Schema), len(all.Schema))
		}
		all.NumRows += md.NumRows
		for g := range md.RowGroups {
			rg := md.RowGroups[g]
			rg.FileOffset += s.Offset
			rg.Ordinal = int16(len(all.RowGroups)) // as parquet-go's Writer numbers them
			rg.Columns = slices.Clone(rg.Columns)
			for k := range rg.Columns {
				cc := &rg.Columns[k]
				if cc.FileOffset != 0 { // deprecated; parquet-go's Writer leaves it 0
					cc.FileOffset += s.Offset
				}
				m := &cc.MetaData
				m.DataPageOffset += s.Offset
				if m.IndexPageOffset != 0 {
					m.IndexPageOffset += s.Offset
				}
				if m.DictionaryPageOffset != 0 {
					m.DictionaryPageOffset += s.Offset
				}
				if m.BloomFilterOffset != 0 {
					m.BloomFilterOffset += s.Offset
				}
				cc.ColumnIndexOffset, cc.ColumnIndexLength = 0, 0
				if b := ci[g][k]; b != nil {
					colIndexes = append(colIndexes, b)
					cc.ColumnIndexLength = -int32(len(colIndexes))
				}
				cc.OffsetIndexOffset, cc.OffsetIndexLength = 0, 0
				if idx := oi[g][k]; idx != nil {
					idx.PageLocations = slices.Clone(idx.PageLocations)
					for j := range idx.PageLocations {
						idx.PageLocations[j].Offset += s.Offset
					}
					indexes = append(indexes, *idx)
					// Offsets filled in below, once the index is placed.
					cc.OffsetIndexLength = -int32(len(indexes))
				}
			}
			all.RowGroups = append(all.RowGroups, rg)
		}
	}
	if len(all.RowGroups) > math.MaxInt16+1 {
		// Ordinals past int16 would wrap to negative values, which
		// parquet-go's reader refuses ("does not match its position"): all
		// 0 reads as unset, and readers number the row groups themselves.
		for g := range all.RowGroups {
			all.RowGroups[g].Ordinal = 0
		}
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		if k != metaKey {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		all.KeyValueMetadata = append(all.KeyValueMetadata, format.KeyValue{Key: k, Value: meta[k]})
	}

	// The page index after the last chunk, as parquet-go's Writer lays it
	// out (and its reader expects): every column index, in row group and
	// column order, then every offset index; then the footer.
	bw := bufio.NewWriterSize(d.f, 1<<20)
	pos := end
	var proto thrift.CompactProtocol
	placedCI := make([][2]int64, len(colIndexes))
	for i, b := range colIndexes {
		if _, err := bw.Write(b); err != nil {
			return err
		}
		placedCI[i] = [2]int64{pos, int64(len(b))}
		pos += int64(len(b))
	}
	placed := make([][2]int64, len(indexes)) // offset, length
	for i := range indexes {
		b, err := thrift.Marshal(&proto, &indexes[i])
		if err != nil {
			return err
		}
		if _, err := bw.Write(b); err != nil {
			return err
		}
		placed[i] = [2]int64{pos, int64(len(b))}
		pos += int64(len(b))
	}
	for g := range all.RowGroups {
		for k := range all.RowGroups[g].Columns {
			cc := &all.RowGroups[g].Columns[k]
			if cc.OffsetIndexLength < 0 {
				pl := placed[-cc.OffsetIndexLength-1]
				cc.OffsetIndexOffset, cc.OffsetIndexLength = pl[0], int32(pl[1])
			}
			if cc.ColumnIndexLength < 0 {
				pl := placedCI[-cc.ColumnIndexLength-1]
				cc.ColumnIndexOffset, cc.ColumnIndexLength = pl[0], int32(pl[1])
			}
		}
	}
	footer, err := thrift.Marshal(&proto, &all)
	if err != nil {
		return err
	}
	var tail [8]byte
	binary.LittleEndian.PutUint32(tail[:4], uint32(len(footer)))
	copy(tail[4:], "PAR1")
	if _, err := bw.Write(footer); err != nil {
		return err
	}
	if _, err := bw.Write(tail[:]); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return d.f.Sync()
}

// maxFooter bounds a chunk's footer as read back: a footer lists the
// chunk's row groups (a few KiB each).
const maxFooter = 256 << 20

// chunkFooter reads the footer and page index of the parquet file at
// [off, off+size) of f: ci[g][k] is row group g's column k's column index
// as stored, oi[g][k] its offset index decoded; nil where there is none.
func chunkFooter(f *os.File, off, size int64) (md *format.FileMetaData, ci [][][]byte, oi [][]*format.OffsetIndex, err error) {
	if size < 12 {
		return nil, nil, nil, fmt.Errorf("%d bytes is no parquet file", size)
	}
	var tail [8]byte
	if _, err := f.ReadAt(tail[:], off+size-8); err != nil {
		return nil, nil, nil, err
	}
	n := int64(binary.LittleEndian.Uint32(tail[:4]))
	if string(tail[4:]) != "PAR1" || n > size-12 || n > maxFooter {
		return nil, nil, nil, errors.New("no parquet footer at its end")
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off+size-8-n); err != nil {
		return nil, nil, nil, err
	}
	var proto thrift.CompactProtocol
	md = new(format.FileMetaData)
	if err := thrift.Unmarshal(&proto, buf, md); err != nil {
		return nil, nil, nil, fmt.Errorf("footer: %w", err)
	}
	// The page index lies between the last column chunk and the footer:
	// read in one piece where it is no larger than a footer may be, not
	// with two reads per column chunk.
	lo, hi := size, int64(0)
	for _, rg := range md.RowGroups {
		for _, cc := range rg.Columns {
			for _, ix := range [][2]int64{{cc.ColumnIndexOffset, int64(cc.ColumnIndexLength)}, {cc.OffsetIndexOffset, int64(cc.OffsetIndexLength)}} {
				if ix[1] > 0 && ix[0] >= 0 && ix[0] <= size-ix[1] {
					lo, hi = min(lo, ix[0]), max(hi, ix[0]+ix[1])
				}
			}
		}
	}
	var region []byte
	if lo < hi && hi-lo <= maxFooter {
		region = make([]byte, hi-lo)
		if _, err := f.ReadAt(region, off+lo); err != nil {
			return nil, nil, nil, err
		}
	}
	read := func(g, k int, what string, at int64, length int32) ([]byte, error) {
		if at < 0 || length < 0 || at > size-int64(length) {
			return nil, fmt.Errorf("row group %d column %d: %s outside the chunk", g, k, what)
		}
		if region != nil && at >= lo && at+int64(length) <= hi {
			return region[at-lo : at-lo+int64(length) : at-lo+int64(length)], nil
		}
		b := make([]byte, length)
		_, err := f.ReadAt(b, off+at)
		return b, err
	}
	ci = make([][][]byte, len(md.RowGroups))
	oi = make([][]*format.OffsetIndex, len(md.RowGroups))
	for g, rg := range md.RowGroups {
		ci[g] = make([][]byte, len(rg.Columns))
		oi[g] = make([]*format.OffsetIndex, len(rg.Columns))
		for k, cc := range rg.Columns {
			if cc.ColumnIndexLength > 0 {
				b, err := read(g, k, "column index", cc.ColumnIndexOffset, cc.ColumnIndexLength)
				if err != nil {
					return nil, nil, nil, err
				}
				ci[g][k] = slices.Clone(b) // kept until Finish writes it: not the whole region
			}
			if cc.OffsetIndexLength <= 0 {
				continue
			}
			b, err := read(g, k, "offset index", cc.OffsetIndexOffset, cc.OffsetIndexLength)
			if err != nil {
				return nil, nil, nil, err
			}
			idx := new(format.OffsetIndex)
			if err := thrift.Unmarshal(&proto, b, idx); err != nil {
				return nil, nil, nil, fmt.Errorf("row group %d column %d: offset index: %w", g, k, err)
			}
			oi[g][k] = idx
		}
	}
	return md, ci, oi, nil
}

// ---- Finish: npy ----

// finishNPY completes output.npy.d: each array's header, the offsets and
// records.tsv joined from the chunks' directories, metadata.json; all
// fsynced. It is then the output.
func (p *Parts) finishNPY(meta map[string]string) error {
	dir := filepath.Join(p.dir, dataNPY)
	if err := p.cleanNPYDir(); err != nil {
		return err
	}
	descr := p.schema.DType.npyDescr()
	size := int64(p.schema.DType.size())
	records := p.Rows()
	for i, col := range p.schema.Columns {
		d := p.data[i]
		rows := (d.start + d.n - npyHeaderLen) / (size * int64(col.Dim))
		h, err := npyHeader(descr, rows, int64(col.Dim))
		if err != nil {
			return err
		}
		if _, err := d.f.WriteAt(h, 0); err != nil {
			return err
		}
		if err := d.f.Sync(); err != nil {
			return err
		}
		if col.Kind != Matrix {
			if rows != records {
				return fmt.Errorf("%s holds %d rows for %d records", col.Name, rows, records)
			}
			continue
		}
		if err := p.joinOffsets(filepath.Join(dir, col.Name+".offsets.npy"), col.Name, records, rows); err != nil {
			return err
		}
	}
	if err := p.joinRecords(filepath.Join(dir, "records.tsv")); err != nil {
		return err
	}
	if err := writeNPYMetadata(dir, records, p.schema.Columns, p.schema.DType, meta); err != nil {
		return err
	}
	return syncDir(dir)
}

// joinOffsets writes column name's offsets array (records+1 values) from
// the chunks' offsets, each shifted by the rows of the chunks before it;
// the last must be rows, the array's length.
func (p *Parts) joinOffsets(path, name string, records, rows int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	h, err := npyHeader("<i8", records+1)
	if err != nil {
		return err
	}
	bw.Write(h)
	var b [8]byte
	bw.Write(b[:]) // offsets[0] = 0
	var base int64
	for _, c := range p.man.Chunks {
		src := filepath.Join(p.dir, c.Name, name+".offsets.npy")
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		br := bufio.NewReaderSize(in, 1<<20)
		_, err = br.Discard(npyHeaderLen + 8) // header, offsets[0] = 0
		var last int64
		for k := int64(0); err == nil && k < c.Rows; k++ {
			if _, err = io.ReadFull(br, b[:]); err == nil {
				last = int64(binary.LittleEndian.Uint64(b[:]))
				binary.LittleEndian.PutUint64(b[:], uint64(base+last))
				_, err = bw.Write(b[:])
			}
		}
		in.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		base += last
	}
	if base != rows {
		return fmt.Errorf("%s: the chunks' offsets end at %d, the array holds %d rows", name, base, rows)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// joinRecords writes records.tsv: the header, then each chunk's lines.
func (p *Parts) joinRecords(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	const header = "index\tid\tlength\ttruncated\n"
	bw.WriteString(header)
	for _, c := range p.man.Chunks {
		src := filepath.Join(p.dir, c.Name, "records.tsv")
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		br := bufio.NewReaderSize(in, 64<<10)
		_, err = br.Discard(len(header))
		var lines int64
		for err == nil {
			var line []byte
			line, err = br.ReadSlice('\n')
			if len(line) > 0 {
				lines++
				if _, werr := bw.Write(line); werr != nil {
					err = werr
				}
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				lines-- // the rest of the same line follows
				err = nil
			}
		}
		in.Close()
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: %w", src, err)
		}
		if lines != c.Rows {
			return fmt.Errorf("%s: %d records, the manifest says %d", src, lines, c.Rows)
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// chunkName is the name of chunk i's own file or directory ("" for
// parquet, whose chunks are wholly in output.parquet).
func chunkName(f Format, i int) string {
	if f == Parquet {
		return ""
	}
	return fmt.Sprintf("chunk-%06d.d", i)
}

// migrateV1 converts the parts of an earlier esm2go (manifest version 1:
// each chunk a complete output of its own) to this layout, keeping the
// longest intact prefix of its chunks: their values are copied into the
// shared files (a parquet chunk whole; an npy chunk's arrays without
// their headers, its other files into a new chunk directory), then the
// new manifest replaces the old. Until that rename the old parts are
// untouched, so a kill during the conversion loses nothing, nor does an
// error that shows no damage (a full disk: the conversion fails and a
// later run tries again); the old chunks are removed afterwards
// (removeUnlisted).
func (p *Parts) migrateV1() error {
	old := p.man.Chunks
	p.man.Version, p.man.Chunks = partsVersion, nil
	if err := p.openData(); err != nil {
		return err
	}
	defer p.closeData()
	for i, c := range old {
		name := c.Name
		src := filepath.Join(p.dir, name)
		size, crc, err := checksum(src)
		if err == nil && (size != c.Bytes || crc != c.CRC32C) {
			err = damagef("%d bytes with CRC-32C %08x, the manifest says %d bytes, %08x", size, crc, c.Bytes, c.CRC32C)
		}
		if err == nil {
			c, err = p.convertV1(i, c, src)
		}
		if err != nil && !isDamage(err) {
			// Not damage (a full disk, an unreadable file): the old
			// manifest and chunks stay as they are for a later run.
			return fmt.Errorf("chunk %d (%s): %w; the parts were left as they were", i, quote(name), err)
		}
		if err != nil {
			p.opts.Log.Warn("a committed chunk is damaged: resuming before it", "chunk", name, "err", err, "next_record", c.First)
			break
		}
		p.man.Chunks = append(p.man.Chunks, c)
	}
	if err := p.syncData(); err != nil {
		return err
	}
	if err := p.writeManifest(); err != nil {
		return err
	}
	for _, c := range old {
		os.RemoveAll(filepath.Join(p.dir, c.Name)) // converted, or dropped as damaged; removeUnlisted retries
	}
	p.opts.Log.Info("converted the parts of an earlier esm2go", "parts", p.dir, "chunks", len(p.man.Chunks))
	return nil
}

// convertV1 appends version-1 chunk c (at src) to the shared files and
// returns its new listing.
func (p *Parts) convertV1(i int, c chunkMeta, src string) (chunkMeta, error) {
	appendFile := func(d *dataFile, path string, skip int64) error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Seek(skip, io.SeekStart); err != nil {
			return err
		}
		_, err = io.Copy(d, f)
		return err
	}
	for _, d := range p.data {
		if err := d.begin(); err != nil {
			return c, err
		}
	}
	c.Name, c.Bytes, c.CRC32C = "", 0, 0
	if p.format == Parquet {
		if err := appendFile(p.data[0], src, 0); err != nil {
			return c, err
		}
	} else {
		for k, col := range p.schema.Columns {
			if err := appendFile(p.data[k], filepath.Join(src, col.Name+".npy"), npyHeaderLen); err != nil {
				return c, err
			}
		}
		c.Name = chunkName(NPY, i)
		dst := filepath.Join(p.dir, c.Name)
		if err := os.RemoveAll(dst); err != nil {
			return c, err
		}
		if err := os.Mkdir(dst, 0o755); err != nil {
			return c, err
		}
		names := []string{"records.tsv", "metadata.json"}
		for _, col := range p.schema.Columns {
			if col.Kind == Matrix {
				names = append(names, col.Name+".offsets.npy")
			}
		}
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join(src, n))
			if err == nil {
				err = writeFileSync(filepath.Join(dst, n), b)
			}
			if err != nil {
				return c, err
			}
		}
		if err := syncDir(dst); err != nil {
			return c, err
		}
		var err error
		if c.Bytes, c.CRC32C, err = checksum(dst); err != nil {
			return c, err
		}
	}
	c.Data = make([]segment, len(p.data))
	for k, d := range p.data {
		var err error
		if c.Data[k], err = d.segment(); err != nil {
			return c, err
		}
	}
	return c, nil
}
