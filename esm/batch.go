package esm

import (
	"fmt"

	"github.com/esm2go/esm2go/attention"
)

// Batch is a packed varlen batch: sequences concatenated with no padding.
// Each sequence is <cls> residues <eos>; positions restart at 0 per sequence.
type Batch struct {
	Tokens  []int32           // (T) int32
	Seqlens attention.Seqlens // (nseq+1) int32 cu_seqlens
	Scales  []float32         // (nseq) token-dropout scale per sequence
}

// Reset empties the batch, keeping its storage.
func (b *Batch) Reset() {
	b.Tokens = b.Tokens[:0]
	b.Seqlens.Cu = append(b.Seqlens.Cu[:0], 0)
	b.Scales = b.Scales[:0]
}

// Append adds one tokenized sequence (with BOS and EOS) and its mask count.
func (b *Batch) Append(tokens []int32, masks int) {
	if len(b.Seqlens.Cu) == 0 {
		b.Seqlens.Cu = append(b.Seqlens.Cu, 0)
	}
	b.Tokens = append(b.Tokens, tokens...)
	b.Seqlens.Cu = append(b.Seqlens.Cu, int32(len(b.Tokens)))
	b.Scales = append(b.Scales, TokenDropoutScale(masks, len(tokens)))
}

// NumSeqs is the number of sequences.
func (b *Batch) NumSeqs() int { return len(b.Scales) }

// MaxToken is the highest token id in the batch (0 when it is empty): an
// embedding table needs that row. Backends keep it from SetBatch.
func (b *Batch) MaxToken() int32 {
	var top int32
	for _, t := range b.Tokens {
		top = max(top, t)
	}
	return top
}

// Check validates the batch's invariants.
func (b *Batch) Check() error {
	if err := b.Seqlens.Validate(len(b.Tokens)); err != nil {
		return fmt.Errorf("esm: batch: %w", err)
	}
	if len(b.Scales) != b.Seqlens.N() {
		return fmt.Errorf("esm: batch has %d scales for %d sequences", len(b.Scales), b.Seqlens.N())
	}
	for i, t := range b.Tokens {
		if t < 0 || t >= VocabSize {
			return fmt.Errorf("esm: batch token %d has id %d outside the alphabet", i, t)
		}
	}
	for i := 0; i < b.Seqlens.N(); i++ {
		if b.Seqlens.Len(i) < 3 {
			return fmt.Errorf("esm: batch sequence %d has %d tokens; every sequence needs BOS, >=1 residue, EOS", i, b.Seqlens.Len(i))
		}
	}
	return nil
}
