package output

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/parquet-go/parquet-go"
)

// Row groups are encoded column by column through parquet-go's typed
// writer (GenericWriter[T]): it copies a record's floats into a column
// buffer as a whole and writes its repetition and definition levels in
// runs, where the row-based Writer takes every float as a 24-byte
// parquet.Value (BenchmarkWritePerTok measured about 50 MB of float32 per
// CPU-second that way, against 500 for npy). The typed writer needs a Go
// type per column, and an output's columns are only known at run time, so
// each column of a group is written as the one column of a small in-memory
// parquet file, under the schema node the output's column has (same
// physical type, levels, codec, encoding, page size and statistics
// options), and the group's column chunks are then spliced into the output
// by Writer.WriteRowGroup, which copies such chunks verbatim (pages, page
// index and statistics). The bytes on disk are those the row-based Writer
// writes (TestParquetColumnsSameBytes).

// pqFixed is the fixed leading columns of a record.
type pqFixed struct {
	ID        string `parquet:"id"`
	Index     int64  `parquet:"index"`
	Length    int32  `parquet:"length"`
	Truncated bool   `parquet:"truncated"`
}

// One embedding column, by kind and stored width: a Vector is list<item>,
// (D,); a Matrix is list<list<item>>, (L, D). A 2-byte item is one
// float16 or bfloat16 value, little-endian.
type (
	pqVec32 struct {
		V []float32 `parquet:"v,list"`
	}
	pqMat32 struct {
		V [][]float32 `parquet:"v,list"`
	}
	pqVec16 struct {
		V [][2]byte `parquet:"v,list"`
	}
	pqMat16 struct {
		V [][][2]byte `parquet:"v,list"`
	}
)

// columnFileName is the column's name inside its in-memory file (the
// field name of the pq* types); the output's name is the schema's.
const columnFileName = "v"

// encodeColumns encodes rows (at least one) into a row group of the output
// whose columns are cols, stored as dtype: the group's column chunks, in
// output order, each in its own in-memory parquet file, and the row group
// of the first (the fixed columns).
func encodeColumns(rows []Row, cols []Column, dtype DType) (*parquet.FileRowGroup, []parquet.ColumnChunk, error) {
	fixed := make([]pqFixed, len(rows))
	for i := range rows {
		r := &rows[i]
		fixed[i] = pqFixed{ID: sanitizeID(r.ID), Index: r.Index, Length: int32(r.Length), Truncated: r.Truncated}
	}
	first, err := encodeColumnFile(fixed, parquetSchema(nil, dtype, false), nil, 1<<16+64*int64(len(rows)))
	if err != nil {
		return nil, nil, fmt.Errorf("fixed columns: %w", err)
	}
	chunks := append([]parquet.ColumnChunk(nil), first.ColumnChunks()...)
	for c, col := range cols {
		rg, err := encodeColumn(rows, c, col, dtype)
		if err != nil {
			return nil, nil, fmt.Errorf("column %s: %w", col.Name, err)
		}
		chunks = append(chunks, rg.ColumnChunks()...)
	}
	return first, chunks, nil
}

// encodeColumn encodes column c of rows into a one-column file.
func encodeColumn(rows []Row, c int, col Column, dtype DType) (*parquet.FileRowGroup, error) {
	// readBack: the Go types carry no FLOAT16 annotation, and the typed
	// writer takes its fast path only when the schema is the type's; the
	// output's own schema has the annotation (the chunks' bytes do not).
	schema := parquet.NewSchema("esm2go", parquet.Group{columnFileName: embeddingNode(col, dtype, true)})
	skip := leafPath(Column{Name: columnFileName, Kind: col.Kind})
	opts := []parquet.WriterOption{parquet.SkipPageStatistics(skip...), parquet.SkipPageBounds(skip...)}
	n := 0 // values in the column, all rows
	for i := range rows {
		n += len(rows[i].Values[c])
	}
	// The values, a few bytes of levels per list, page headers and the
	// footer.
	hint := int64(dtype.size())*int64(n) + 16*int64(n/col.Dim+len(rows)) + 1<<16
	if dtype.orDefault() == Float32 {
		if col.Kind == Vector {
			recs := make([]pqVec32, len(rows))
			for i := range rows {
				recs[i].V = rows[i].Values[c]
			}
			return encodeColumnFile(recs, schema, opts, hint)
		}
		recs := make([]pqMat32, len(rows))
		residues := make([][]float32, n/col.Dim)
		for i := range rows {
			vals := rows[i].Values[c]
			res := residues[:len(vals)/col.Dim]
			residues = residues[len(res):]
			for j := range res {
				res[j] = vals[j*col.Dim : (j+1)*col.Dim : (j+1)*col.Dim]
			}
			recs[i].V = res
		}
		return encodeColumnFile(recs, schema, opts, hint)
	}
	halves := make([][2]byte, n)
	if col.Kind == Vector {
		recs := make([]pqVec16, len(rows))
		for i := range rows {
			vals := rows[i].Values[c]
			recs[i].V = halves[:len(vals):len(vals)]
			halves = halves[len(vals):]
			dtype.encodeHalves(recs[i].V, vals)
		}
		return encodeColumnFile(recs, schema, opts, hint)
	}
	recs := make([]pqMat16, len(rows))
	residues := make([][][2]byte, n/col.Dim)
	for i := range rows {
		vals := rows[i].Values[c]
		h := halves[:len(vals):len(vals)]
		halves = halves[len(vals):]
		dtype.encodeHalves(h, vals)
		res := residues[:len(vals)/col.Dim]
		residues = residues[len(res):]
		for j := range res {
			res[j] = h[j*col.Dim : (j+1)*col.Dim : (j+1)*col.Dim]
		}
		recs[i].V = res
	}
	return encodeColumnFile(recs, schema, opts, hint)
}

// encodeColumnFile writes recs as a parquet file in memory, under schema
// (with the output's codec and page options plus opts), and returns its
// one row group. sizeHint is the file's expected size in bytes.
func encodeColumnFile[T any](recs []T, schema *parquet.Schema, opts []parquet.WriterOption, sizeHint int64) (*parquet.FileRowGroup, error) {
	var buf bytes.Buffer
	buf.Grow(int(min(sizeHint, 1<<31)))
	var rg *parquet.FileRowGroup
	err := guard(func() error {
		options := append([]parquet.WriterOption{schema, parquet.Compression(parquetCodec)}, opts...)
		w := parquet.NewGenericWriter[T](&buf, options...)
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
		f, err := parquet.OpenFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			return err
		}
		groups := f.RowGroups()
		if len(groups) != 1 {
			return fmt.Errorf("%d row groups, want 1", len(groups))
		}
		var ok bool
		if rg, ok = groups[0].(*parquet.FileRowGroup); !ok {
			return errors.New("the parquet library's row group is not a *FileRowGroup")
		}
		return nil
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

// encodeHalves converts vals into dst as d (Float16 or BFloat16), one
// little-endian 2-byte item per value. dst must hold len(vals) items.
func (d DType) encodeHalves(dst [][2]byte, vals []float32) {
	dst = dst[:len(vals)]
	if d == Float16 {
		for i, x := range vals {
			h := f32ToF16(x)
			dst[i] = [2]byte{byte(h), byte(h >> 8)}
		}
		return
	}
	for i, x := range vals {
		h := f32ToBF16(x)
		dst[i] = [2]byte{byte(h), byte(h >> 8)}
	}
}
