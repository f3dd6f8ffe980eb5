// Package output writes ESM2 embeddings to parquet or npy, one row per FASTA
// record in input order, and publishes the result atomically at Close.
package output
