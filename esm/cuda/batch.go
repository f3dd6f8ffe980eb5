package cuda

import (
	"fmt"

	"github.com/esm2go/esm2go/attention"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/internal/cuda"
)

// The host side of the data path: batches in (SetBatch), results out (Read).

// SetBatch implements esm.Backend: tokens, per-token sequence index and
// position, cu_seqlens and scales go through a pinned staging buffer (two,
// alternating) in one asynchronous copy on the compute stream.
func (b *Backend) SetBatch(batch *esm.Batch) error {
	if err := batch.Check(); err != nil {
		return err
	}
	T, nseq := len(batch.Tokens), batch.NumSeqs()
	words := 3*T + (nseq + 1) + nseq
	i := b.next
	b.next = 1 - b.next
	if err := b.stageEv[i].Synchronize(); err != nil { // its previous copy has run
		return err
	}
	if b.stage[i] == nil || len(b.stage[i].Bytes) < 4*words {
		if b.stage[i] != nil {
			b.stage[i].Free()
		}
		h, err := b.ctx.HostAlloc(4 * max(words, 1<<16))
		if err != nil {
			b.stage[i] = nil
			return fmt.Errorf("cuda: batch staging: %w", err)
		}
		b.stage[i] = h
	}
	w := b.stage[i].Int32()[:words]
	copy(w[:T], batch.Tokens)
	seqid, pos := w[T:2*T], w[2*T:3*T]
	for s := 0; s < nseq; s++ {
		st, n := batch.Seqlens.Start(s), batch.Seqlens.Len(s)
		for p := 0; p < n; p++ {
			seqid[st+p], pos[st+p] = int32(s), int32(p)
		}
	}
	copy(w[3*T:], batch.Seqlens.Cu)
	sc := b.stage[i].Float32()[3*T+nseq+1 : words]
	copy(sc, batch.Scales)
	dev, err := b.grow(&b.batch, 4*words)
	if err != nil {
		return fmt.Errorf("cuda: batch of %d tokens: %w", T, err)
	}
	if err := b.ctx.CopyHtoDAsync(dev.Ptr, b.stage[i].Bytes[:4*words], b.ctx.Stream()); err != nil {
		return err
	}
	if err := b.stageEv[i].Record(b.ctx.Stream()); err != nil {
		return err
	}
	b.T, b.nseq = T, nseq
	b.seqlens = attention.Seqlens{Cu: append(b.seqlens.Cu[:0], batch.Seqlens.Cu...)}
	b.tokens = dev.Ptr
	b.seqid = dev.Ptr.Add(4 * T)
	b.pos = dev.Ptr.Add(8 * T)
	b.cu = dev.Ptr.Add(12 * T)
	b.scales = dev.Ptr.Add(4 * (3*T + nseq + 1))
	return nil
}

// Read implements esm.Backend: after all queued work, converts src to fp32
// on the device when needed, copies through a pinned staging buffer and
// waits for the stream.
func (b *Backend) Read(dst []float32, src esm.Tensor) error {
	s := tens(src)
	n := len(dst)
	if s == nil || s.buf == nil || s.n < n {
		return fmt.Errorf("cuda: read %d elements from a smaller or freed tensor", n)
	}
	if n == 0 {
		return nil
	}
	p := s.buf.Ptr
	if s.dt != cuda.F32 {
		sc, err := b.grow(&b.readScratch, 4*n)
		if err != nil {
			return err
		}
		if err := b.k.convert(sc.Ptr, cuda.F32, p, s.dt, n); err != nil {
			return err
		}
		p = sc.Ptr
	}
	if b.readStage == nil || len(b.readStage.Bytes) < 4*n {
		if b.readStage != nil {
			if err := b.ctx.Stream().Synchronize(); err != nil {
				return err
			}
			b.readStage.Free()
			b.readStage = nil
		}
		h, err := b.ctx.HostAlloc(4 * max(n, 1<<20))
		if err != nil {
			return fmt.Errorf("cuda: read staging: %w", err)
		}
		b.readStage = h
	}
	if err := b.ctx.CopyDtoHAsync(b.readStage.Bytes[:4*n], p, b.ctx.Stream()); err != nil {
		return err
	}
	if err := b.ctx.Stream().Synchronize(); err != nil {
		return fmt.Errorf("cuda: read: %w", err)
	}
	copy(dst, b.readStage.Float32()[:n])
	return nil
}
