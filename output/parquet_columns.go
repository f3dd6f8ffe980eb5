package output

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// Row groups are encoded column by column, not through parquet-go's
// row-based Writer, which takes every float as a 24-byte parquet.Value
// (BenchmarkWritePerTok measured about 50 MB of float32 per CPU-second
// that way, against 500 for npy). Each column of a group is written as the
// one column of a small parquet file in memory: the fixed columns by
// parquet-go's typed writer (GenericWriter[pqFixed]), each embedding
// column by chunkWriter (parquet_pages.go), under the schema node the
// output's column has (same physical type, levels, codec, encoding, page
// size and statistics options). The group's column chunks are then
// spliced into the output by Writer.WriteRowGroup, which copies such
// chunks verbatim (pages, page index and statistics). The bytes on disk
// are those the row-based Writer writes from the same rows
// (TestParquetColumnsSameBytes).

// pqFixed is the fixed leading columns of a record.
type pqFixed struct {
	ID        string `parquet:"id"`
	Index     int64  `parquet:"index"`
	Length    int32  `parquet:"length"`
	Truncated bool   `parquet:"truncated"`
}

// columnFileName is an embedding column's name inside its in-memory
// file; the output's name is the output schema's.
const columnFileName = "v"

// encodeColumns finishes a row group of the output, of records fixed (at
// least one) and embedding columns cols, stored as dtype (templates are
// their columnTemplate): the group's column chunks, in output order, each
// in its own in-memory parquet file, and the row group of the first (the
// fixed columns).
func encodeColumns(fixed []pqFixed, cols []*chunkWriter, dtype DType, templates []*format.FileMetaData) (*parquet.FileRowGroup, []parquet.ColumnChunk, error) {
	first, err := encodeColumnFile(fixed, parquetSchema(nil, dtype, false), 1<<16+64*int64(len(fixed)))
	if err != nil {
		return nil, nil, fmt.Errorf("fixed columns: %w", err)
	}
	chunks := append([]parquet.ColumnChunk(nil), first.ColumnChunks()...)
	for c, col := range cols {
		rg, err := col.finish(templates[c])
		if err != nil {
			return nil, nil, fmt.Errorf("column %s: %w", col.name, err)
		}
		if rg.NumRows() != first.NumRows() {
			return nil, nil, fmt.Errorf("column %s: %d rows, want %d", col.name, rg.NumRows(), first.NumRows())
		}
		chunks = append(chunks, rg.ColumnChunks()...)
	}
	return first, chunks, nil
}

// columnTemplate is the footer of an empty one-column file of col stored
// as dtype, as parquet-go writes it: the schema and column orders of the
// files chunkWriter writes.
func columnTemplate(col Column, dtype DType) (*format.FileMetaData, error) {
	// readBack: the FLOAT16 annotation is the output's, set by its own
	// schema; the chunks' bytes do not depend on it.
	schema := parquet.NewSchema("esm2go", parquet.Group{columnFileName: embeddingNode(col, dtype, true)})
	var buf bytes.Buffer
	var md *format.FileMetaData
	err := guard(func() error {
		w := parquet.NewWriter(&buf, schema)
		if err := w.Close(); err != nil {
			return err
		}
		f, err := parquet.OpenFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			return err
		}
		md = f.Metadata()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(md.Schema) == 0 || !md.Schema[len(md.Schema)-1].Type.Valid {
		return nil, errors.New("the parquet library wrote no leaf column")
	}
	return md, nil
}

// encodeColumnFile writes recs as a parquet file in memory, under schema
// (with the output's codec and page options plus opts), and returns its
// one row group. sizeHint is the file's expected size in bytes.
func encodeColumnFile[T any](recs []T, schema *parquet.Schema, sizeHint int64) (*parquet.FileRowGroup, error) {
	var buf bytes.Buffer
	buf.Grow(int(min(sizeHint, 1<<31)))
	var rg *parquet.FileRowGroup
	err := guard(func() error {
		w := parquet.NewGenericWriter[T](&buf, schema, parquet.Compression(parquetCodec))
		// One record per Write: a page ends at a record boundary once it
		// holds PageBufferSize bytes, as with the row-based Writer.
		for i := range recs {
			if _, err := w.Write(recs[i : i+1]); err != nil {
				return err
			}
		}
		if err := w.Close(); err != nil {
			return err
		}
		var err error
		rg, err = openOneGroup(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		return err
	})
	return rg, err
}

// splicedGroup is a row group made of column chunks from several
// in-memory files, under the output's schema. Embedding the first file's
// *FileRowGroup supplies NumRows and what tells Writer.WriteRowGroup it
// may copy the chunks verbatim (it reads them through ColumnChunks only).
type splicedGroup struct {
	*parquet.FileRowGroup
	schema *parquet.Schema
	chunks []parquet.ColumnChunk
}

func (g *splicedGroup) Schema() *parquet.Schema             { return g.schema }
func (g *splicedGroup) ColumnChunks() []parquet.ColumnChunk { return g.chunks }
func (g *splicedGroup) Rows() parquet.Rows                  { return parquet.NewRowGroupRowReader(g) }
