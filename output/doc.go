// Package output writes ESM2 embeddings to parquet or npy, one row per FASTA
// record in input order, and publishes the result atomically at Close: until
// Close returns nil, nothing exists at the final path.
//
// Shapes: N = records, L = residues embedded in one record (after
// truncation), R = sum of L over all records, D = a column's embedding width.
// A Vector column (mean_33, bos_33) holds (D,) per record; a Matrix column
// (per_tok_33) holds (L, D) per record.
//
// # Parquet: one file
//
// Columns, in this order:
//
//	id         string (UTF-8; invalid bytes become U+FFFD, tabs/newlines spaces)
//	index      int64   position in the input FASTA
//	length     int32   L
//	truncated  bool
//	<vector>   list<float32>        (D,)  per record
//	<matrix>   list<list<float32>>  (L, D) per record, one inner list per residue
//
// With Schema.DType float16 the element is FIXED_LEN_BYTE_ARRAY(2) with
// parquet's FLOAT16 logical type (pyarrow >= 15 reads it as halffloat); with
// bfloat16, FIXED_LEN_BYTE_ARRAY(2) without a logical type (see dtype.go).
//
// Lists use the standard three-level LIST encoding with required elements;
// a record with L = 0 has an empty outer list. The fixed columns are snappy
// compressed; embedding values are stored uncompressed, without statistics:
// they are close to incompressible (snappy wrote 1.002 bytes per raw byte,
// zstd no better on Gaussian-like floats) and nothing filters on their
// min or max. Row groups hold at most 10,000 records or 64 MiB of float
// payload, so memory stays flat however many records are written.
//
// Embedding columns are written page by page as records arrive and each
// row group's column chunks are copied into the file by parquet-go
// (parquet_columns.go, parquet_pages.go); the bytes are those parquet-go's
// own row-based Writer writes from the same rows. Writing costs about what
// npy costs (BenchmarkWritePerTok: within 1.3x CPU per byte). Memory: up
// to 5 row groups' pages plus 64 MiB of reused page buffers. Merge copies
// large row groups verbatim (merge.go).
//
// Key-value metadata: every Schema.Metadata entry as given, plus
// "esm2go.output" = {"layout_version":1,"columns":[{"name","kind","dim"}...]}
// (layout_version 2 and "dtype" for float16 and bfloat16).
//
// Reading with pandas / pyarrow:
//
//	import pandas as pd, numpy as np
//	df = pd.read_parquet("emb.parquet")
//	X = np.stack(df["mean_33"])                           # (N, D) float32
//	T = np.stack(df["per_tok_33"][0])                     # (L, D) for record 0
//	import pyarrow.parquet as pq
//	meta = pq.read_schema("emb.parquet").metadata          # {b"esm2go.output": ..., b"model": ...}
//
// # npy: a directory
//
//	<vector>.npy          float32 '<f4' C order, (N, D); row i is record i
//	<matrix>.npy          float32 '<f4' C order, (R, D); all residues, records concatenated
//	                      (float16: '<f2'; bfloat16: '|V2', raw bfloat16 bits)
//	<matrix>.offsets.npy  int64 '<i8', (N+1,); record i is rows offsets[i]:offsets[i+1]
//	records.tsv           header "index\tid\tlength\ttruncated", one line per record,
//	                      truncated as true/false, tabs/newlines in ids replaced by spaces
//	metadata.json         {"layout_version", "format": "npy", "records": N, "dtype" (not float32),
//	                       "columns": [{"name","kind","dim","file","offsets"}...],
//	                       "metadata": Schema.Metadata}
//
// Arrays are NPY format 1.0 with a fixed 128-byte header (a multiple of 64,
// room for any 2-D shape); the data streams to disk and the header is
// rewritten with the final shape at Close.
//
// Reading with numpy:
//
//	import csv, numpy as np, pandas as pd
//	X = np.load(d + "/mean_33.npy", mmap_mode="r")               # (N, D)
//	T, off = np.load(d + "/per_tok_33.npy", mmap_mode="r"), np.load(d + "/per_tok_33.offsets.npy")
//	t_i = T[off[i]:off[i+1]]                                     # (L_i, D) for record i
//	rec = pd.read_csv(d + "/records.tsv", sep="\t", quoting=csv.QUOTE_NONE,  # index, id, length, truncated
//	                  dtype={"id": str}, keep_default_na=False)    # plain TSV: ids as written
//
// # Publishing and ownership
//
// Everything is written under ".<base>.tmp-<random>" beside the final path,
// fsynced (files, then the temporary directory for npy), renamed to the final
// path (RENAME_NOREPLACE: a path that appeared meanwhile is never clobbered),
// and the parent directory fsynced. A crash leaves at most a dot-prefixed
// temporary, which the next writer of the same output removes.
//
// Create (and Check, for callers that want to fail early) refuse an existing
// final path unless Options.Overwrite; with it, only a regular file that is
// not in Options.Keep, or an npy output directory this package wrote, may be
// replaced (ErrNotReplaceable otherwise). A writer holds a flock on
// ".<base>.lock" until Close or Abort (ErrLocked for a second writer). Details in guard.go and
// publish.go. A resumable run writes its rows in chunks through Parts
// (parts.go), straight into the file that becomes the output
// (parts_data.go); Merge (merge.go) joins complete outputs (shards).
package output
