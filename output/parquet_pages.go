package output

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/bits"
	"sort"
	"sync"
	"unsafe"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
)

// An embedding column's chunk of a row group is written here, page by
// page, as the one column of a small parquet file in memory, which
// encodeColumns then hands to parquet-go to splice into the output
// verbatim. parquet-go's own writers go through a column buffer (the
// typed writer) or a 24-byte parquet.Value per float (the row writer);
// here a record's values go once into the page, as PLAIN little-endian
// items, and its levels are written in bulk. The pages, page index and
// statistics are those parquet-go's Writer writes for the same column and
// options (TestParquetColumnsSameBytes checks this byte for byte):
//
//   - data pages v2, uncompressed, PLAIN values, with a CRC-32 of the
//     levels and values;
//   - levels in parquet-go's RLE/bit-packed encoding (its rle package);
//   - a page ends after the record that brings it to pageBufferSize
//     bytes, counted as parquet-go's column buffer counts them;
//   - no value statistics (SkipPageStatistics, SkipPageBounds), null
//     counts, and level histograms (size statistics).
//
// Levels: list<item> (Vector) has max repetition and definition 1;
// list<list<item>> (Matrix) has 2 and 2. A record's first value repeats
// at level 0, the first of an inner list at 1, the others at the max; an
// empty outer list (a Matrix of Length 0) is one null at definition 0.

// pageBufferSize is parquet-go's page flush threshold:
// DefaultPageBufferSize less 2% (the writer's bufferSize, 256901 bytes).
const pageBufferSize = parquet.DefaultPageBufferSize * 98 / 100

// chunkWriter writes the pages of one embedding column for one row group.
type chunkWriter struct {
	name   string // the output's column name, for errors
	kind   Kind
	dim    int
	dtype  DType
	maxLvl byte // max repetition level = max definition level

	// The file so far ("PAR1", then the pages): pieces, in order, the
	// values of each page one piece, not copied again.
	file segments

	// The page being filled: its levels, one per value or null, as runs
	// (parquet_levels.go), and its values.
	rep, def        levelRuns
	levelScratch    []uint64
	vals            []byte
	pageRows        int
	pageNulls       int
	pageRepHist     []int64 // (maxLvl+1,) levels per value of each
	pageDefHist     []int64
	repEnc, defEnc  []byte // the page's levels, encoded
	rows, numValues int64  // the chunk so far
	nulls           int64

	sealed   []sealedPage // pages filled, in order (flushPage), until finish writes them
	locs     []format.PageLocation
	index    parquet.ColumnIndexer
	repHists []int64 // pages' histograms, one after the other
	defHists []int64
	repHist  []int64 // the chunk's
	defHist  []int64
	err      error // sticky

	pool *pagePool // where values buffers come from
	bufs [][]byte  // the values buffers of the pages written
}

func newChunkWriter(col Column, dtype DType, pool *pagePool) *chunkWriter {
	c := &chunkWriter{name: col.Name, kind: col.Kind, dim: col.Dim, dtype: dtype.orDefault(), maxLvl: 1, pool: pool}
	if col.Kind == Matrix {
		c.maxLvl = 2
	}
	c.file.add([]byte("PAR1"))
	c.index = parquetLeaf(dtype, true).NewColumnIndexer(parquet.DefaultColumnIndexSizeLimit)
	n := int(c.maxLvl) + 1
	c.pageRepHist, c.pageDefHist = make([]int64, n), make([]int64, n)
	c.repHist, c.defHist = make([]int64, n), make([]int64, n)
	return c
}

// add appends one record's values: (D,) for a Vector, (L, D) for a Matrix.
func (c *chunkWriter) add(vals []float32) {
	if len(vals) == 0 {
		c.rep.add(0, 1)
		c.def.add(0, 1)
		c.pageRepHist[0]++
		c.pageDefHist[0]++
		c.pageNulls++
	} else {
		n := len(vals)
		c.def.add(c.maxLvl, n)
		starts := 1 // inner lists (residues) of the record
		if c.kind == Matrix {
			// the record's first value at 0, each residue's first at 1
			for j := 0; j < n; j += c.dim {
				first := byte(1)
				if j == 0 {
					first = 0
				}
				c.rep.add(first, 1)
				c.rep.add(c.maxLvl, min(c.dim, n-j)-1)
			}
			starts = (n + c.dim - 1) / c.dim
		} else {
			c.rep.add(0, 1)
			c.rep.add(c.maxLvl, n-1)
		}
		c.pageRepHist[0]++
		c.pageRepHist[1] += int64(starts - 1)
		c.pageRepHist[c.maxLvl] += int64(n - starts)
		c.pageDefHist[c.maxLvl] += int64(n)
		c.appendValues(vals)
	}
	c.pageRows++
	// parquet-go's repeatedColumnBuffer.Size: 8 bytes per row, a byte per
	// level of each kind, and the values.
	if 8*c.pageRows+c.rep.n+c.def.n+len(c.vals) >= pageBufferSize {
		c.flushPage()
	}
}

// appendValues appends vals to the page's values as PLAIN items of the
// chunk's dtype.
func (c *chunkWriter) appendValues(vals []float32) {
	need := c.dtype.size() * len(vals)
	if cap(c.vals)-len(c.vals) < need {
		// Another buffer: the page's values become a piece of the file
		// as they are, so a buffer serves one page (and comes back to
		// the pool once the group is in the output file). Most pages
		// end near pageBufferSize; a longer record is a page of its own.
		b := c.pool.get(max(len(c.vals)+need, pageBufferSize+pageBufferSize/8))[:len(c.vals)]
		copy(b, c.vals)
		if c.vals != nil {
			c.pool.put(c.vals)
		}
		c.vals = b
	}
	start := len(c.vals)
	c.vals = c.vals[:start+need]
	dst := c.vals[start:]
	if c.dtype == Float32 {
		if nativeLittleEndian {
			// PLAIN FLOAT is the little-endian bits: a memmove (the
			// loop below measured at a third of its speed), split over
			// the CPUs for a large record (one goroutine copying a
			// per-token row held the writer at about 3 GB/s).
			src := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(vals))), need)
			parallelDo(len(vals), func(lo, hi int) { copy(dst[4*lo:4*hi], src[4*lo:4*hi]) })
			return
		}
		for i, v := range vals {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
		return
	}
	c.dtype.encode16Parallel(dst, vals)
}

// flushPage writes the page being filled, if any.
func (c *chunkWriter) flushPage() {
	if c.rep.n == 0 || c.err != nil {
		return
	}
	w := uint(bits.Len8(c.maxLvl))
	c.repEnc, c.levelScratch = encodeLevelRuns(c.repEnc[:0], &c.rep, w, c.levelScratch)
	c.defEnc, c.levelScratch = encodeLevelRuns(c.defEnc[:0], &c.def, w, c.levelScratch)
	size := len(c.repEnc) + len(c.defEnc) + len(c.vals)
	// A page's sizes and counts are int32 in parquet (as parquet-go's
	// Writer, refuse a page over 2 GiB: one record that large).
	if size > math.MaxInt32-1<<10 || c.rep.n > math.MaxInt32 {
		c.err = fmt.Errorf("a page of %d bytes, %d values: over parquet's 2 GiB page limit", size, c.rep.n)
		return
	}
	numValues := c.rep.n
	// The page's CRC and header are made by finish, on an encoder's
	// goroutine: the levels and values wait there as they are.
	levels := make([]byte, 0, len(c.repEnc)+len(c.defEnc))
	levels = append(append(levels, c.repEnc...), c.defEnc...)
	c.sealed = append(c.sealed, sealedPage{levels: levels, repLen: len(c.repEnc), vals: c.vals,
		numValues: numValues, nulls: c.pageNulls, rows: c.pageRows, firstRow: c.rows})
	c.bufs = append(c.bufs, c.vals)
	c.index.IndexPage(int64(numValues), int64(c.pageNulls), parquet.Value{}, parquet.Value{})
	c.repHists = append(c.repHists, c.pageRepHist...)
	c.defHists = append(c.defHists, c.pageDefHist...)
	for i := range c.pageRepHist {
		c.repHist[i] += c.pageRepHist[i]
		c.defHist[i] += c.pageDefHist[i]
	}
	clear(c.pageRepHist)
	clear(c.pageDefHist)
	c.rows += int64(c.pageRows)
	c.numValues += int64(numValues)
	c.nulls += int64(c.pageNulls)
	c.pageRows, c.pageNulls = 0, 0
	c.rep.reset()
	c.def.reset()
	c.vals = nil
}

// sealedPage is a page whose levels are encoded, waiting for its CRC and
// header (writePages).
type sealedPage struct {
	levels      []byte // repetition then definition levels, encoded
	repLen      int    // bytes of repetition levels
	vals        []byte
	numValues   int
	nulls, rows int
	firstRow    int64
}

// writePages puts each sealed page into the file: its header, with the
// CRC-32 of its levels and values, then the levels and the values.
func (c *chunkWriter) writePages() error {
	proto := new(thrift.CompactProtocol)
	for _, pg := range c.sealed {
		crc := crc32.Update(0, crc32.IEEETable, pg.levels)
		crc = crc32.Update(crc, crc32.IEEETable, pg.vals)
		size := len(pg.levels) + len(pg.vals)
		header := format.PageHeader{
			Type:                 format.DataPageV2,
			UncompressedPageSize: int32(size),
			CompressedPageSize:   int32(size),
			CRC:                  int32(crc),
			DataPageHeaderV2: thrift.New(format.DataPageHeaderV2{
				NumValues:                  int32(pg.numValues),
				NumNulls:                   int32(pg.nulls),
				NumRows:                    int32(pg.rows),
				Encoding:                   format.Plain,
				DefinitionLevelsByteLength: int32(len(pg.levels) - pg.repLen),
				RepetitionLevelsByteLength: int32(pg.repLen),
				IsCompressed:               thrift.New(false),
			}),
		}
		h, err := thrift.Marshal(proto, &header)
		if err != nil {
			return err
		}
		offset := c.file.size
		c.file.add(h)
		c.file.add(pg.levels)
		c.file.add(pg.vals)
		c.locs = append(c.locs, format.PageLocation{Offset: offset, CompressedPageSize: int32(c.file.size - offset), FirstRowIndex: pg.firstRow})
	}
	c.sealed = nil
	return nil
}

// finish writes the last page, the page index and the footer, and returns
// the file's row group. template is the metadata of an empty file of the
// same column (its schema and column orders).
func (c *chunkWriter) finish(template *format.FileMetaData) (*parquet.FileRowGroup, error) {
	c.flushPage()
	if c.err != nil {
		return nil, c.err
	}
	if err := c.writePages(); err != nil {
		return nil, err
	}
	dataSize := c.file.size - 4
	ci := c.index.ColumnIndex()
	ci.RepetitionLevelHistogram = c.repHists
	ci.DefinitionLevelHistogram = c.defHists
	proto := new(thrift.CompactProtocol)
	cib, err := thrift.Marshal(proto, &ci)
	if err != nil {
		return nil, err
	}
	oib, err := thrift.Marshal(proto, &format.OffsetIndex{PageLocations: c.locs})
	if err != nil {
		return nil, err
	}
	ciOffset := c.file.size
	c.file.add(cib)
	oiOffset := c.file.size
	c.file.add(oib)
	leaf := &template.Schema[len(template.Schema)-1]
	path := []string{columnFileName, "list", "element"}
	if c.kind == Matrix {
		path = append(path, "list", "element")
	}
	md := format.FileMetaData{
		Version: template.Version,
		Schema:  template.Schema,
		NumRows: c.rows,
		RowGroups: []format.RowGroup{{
			Columns: []format.ColumnChunk{{
				MetaData: format.ColumnMetaData{
					Type:                  leaf.Type.V,
					Encoding:              []format.Encoding{format.Plain, format.RLE},
					PathInSchema:          path,
					Codec:                 format.Uncompressed,
					NumValues:             c.numValues,
					TotalUncompressedSize: dataSize,
					TotalCompressedSize:   dataSize,
					DataPageOffset:        4,
					Statistics:            format.Statistics{NullCount: c.nulls},
					EncodingStats:         []format.PageEncodingStats{{PageType: format.DataPageV2, Encoding: format.Plain, Count: int32(len(c.locs))}},
					SizeStatistics: format.SizeStatistics{
						RepetitionLevelHistogram: c.repHist,
						DefinitionLevelHistogram: c.defHist,
					},
				},
				OffsetIndexOffset: oiOffset,
				OffsetIndexLength: int32(len(oib)),
				ColumnIndexOffset: ciOffset,
				ColumnIndexLength: int32(len(cib)),
			}},
			TotalByteSize:       dataSize,
			NumRows:             c.rows,
			FileOffset:          4,
			TotalCompressedSize: dataSize,
		}},
		CreatedBy:    template.CreatedBy,
		ColumnOrders: template.ColumnOrders,
	}
	footer, err := thrift.Marshal(proto, &md)
	if err != nil {
		return nil, err
	}
	footer = binary.LittleEndian.AppendUint32(footer, uint32(len(footer)))
	c.file.add(append(footer, "PAR1"...))
	return openOneGroup(&c.file, c.file.size)
}

// openOneGroup opens the parquet file r of size bytes, which must hold one
// row group.
func openOneGroup(r io.ReaderAt, size int64) (*parquet.FileRowGroup, error) {
	f, err := parquet.OpenFile(r, size)
	if err != nil {
		return nil, err
	}
	groups := f.RowGroups()
	if len(groups) != 1 {
		return nil, fmt.Errorf("%d row groups, want 1", len(groups))
	}
	rg, ok := groups[0].(*parquet.FileRowGroup)
	if !ok {
		return nil, errors.New("the parquet library's row group is not a *FileRowGroup")
	}
	return rg, nil
}

// nativeLittleEndian is true on the usual hosts, where float32 values are
// copied as they are.
var nativeLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// segments is a file in memory made of pieces, read with ReadAt.
type segments struct {
	pieces [][]byte
	starts []int64 // offset of each piece
	size   int64
}

func (s *segments) add(b []byte) {
	if len(b) == 0 {
		return
	}
	s.pieces = append(s.pieces, b)
	s.starts = append(s.starts, s.size)
	s.size += int64(len(b))
}

func (s *segments) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= s.size {
		return 0, io.EOF
	}
	i := sort.Search(len(s.starts), func(i int) bool { return s.starts[i] > off }) - 1
	n := 0
	for ; n < len(p) && i < len(s.pieces); i++ {
		n += copy(p[n:], s.pieces[i][off+int64(n)-s.starts[i]:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// pagePool keeps the values buffers of pages already copied into the
// output, for new pages: a fresh buffer costs clearing it and, often,
// faulting its memory in (BenchmarkWritePerTok measured about a tenth of
// the writer's CPU). It is used on the writer's goroutine only.
// newPagePool holds up to a row group's worth of buffers.
func newPagePool() *pagePool { return &pagePool{limit: parquetMaxGroupBytes} }

type pagePool struct {
	mu    sync.Mutex // get on the writer's goroutine, put on its committer's
	free  [][]byte
	bytes int // capacity held in free
	limit int // most capacity held
}

// get returns a buffer of capacity n or more: the smallest free one that
// is not more than twice n, or a new one.
func (p *pagePool) get(n int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	best := -1
	for i, b := range p.free {
		if c := cap(b); c >= n && c <= 2*n && (best < 0 || c < cap(p.free[best])) {
			best = i
		}
	}
	if best < 0 {
		return make([]byte, 0, n)
	}
	b := p.free[best]
	last := len(p.free) - 1
	p.free[best] = p.free[last]
	p.free[last] = nil
	p.free = p.free[:last]
	p.bytes -= cap(b)
	return b[:0]
}

// put gives back b, which nothing uses any more.
func (p *pagePool) put(b []byte) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes+cap(b) > p.limit {
		return
	}
	p.free = append(p.free, b[:0])
	p.bytes += cap(b)
}
