// Package attention is the varlen (unpadded) multi-head attention op of esm2go:
// the Seqlens (cu_seqlens) type and its validation, and a plain Go reference
// over concatenated sequences that every accelerated kernel is checked against.
// It is pure Go; the CUDA kernels live with the CUDA backend (esm/cuda, attention.cu).
package attention
