//go:build cgo

package cuda

import (
	"errors"
	"fmt"

	"github.com/esm2go/esm2go/attention"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/internal/cudadrv"
)

// The host side of the data path: batches in (SetBatch, on a copy stream),
// results out (Read, and ReadAsync/Fence/HostAlloc in async.go, on the
// compute stream).
//
// Batches in. A batch is packed into one of two pinned staging buffers
// (b.stage[i]) and copied on the copy stream into that slot's device buffer
// (dp.dev[i]); b.stageEv[i] is recorded after the copy, and the compute
// stream waits on it before the batch's first kernel. So the copy of batch
// n+1 overlaps the kernels of batch n. Two events guard the reuse of slot i:
//   - host staging: SetBatch waits (on the host) for b.stageEv[i], the
//     slot's previous copy, before packing into b.stage[i];
//   - device buffer: dp.free[i] is recorded on the compute stream when the
//     next batch is set, i.e. after the last kernel that reads slot i; the
//     copy stream waits on it before overwriting dp.dev[i].
//
// A device buffer newly allocated for a slot may be a cached block that
// queued compute work still uses (the caching allocator is not
// stream-ordered), so then the copy waits for everything queued on the
// compute stream so far.

// dataPath is the state of the asynchronous data path (a field of Backend).
// Its CUDA objects are created at first use and destroyed with the context
// (Backend.Close).
type dataPath struct {
	copy    *cudadrv.Stream    // H2D copies of batches
	dev     [2]*cudadrv.Buffer // per staging slot: tokens(T) | seqid(T) | pos(T) | cu(nseq+1) int32 | scales(nseq) f32
	free    [2]*cudadrv.Event  // compute stream: done with dev[i]
	freeRec [2]bool            // free[i] has been recorded
	cur     int                // slot of the current batch, -1 before the first

	fences []*cudadrv.Event // unused fence events (async.go)
}

// init creates the copy stream and events at first use.
func (dp *dataPath) init(ctx *cudadrv.Context) error {
	if dp.copy != nil {
		return nil
	}
	for i := range dp.free {
		if dp.free[i] == nil {
			ev, err := ctx.NewEvent(false)
			if err != nil {
				return fmt.Errorf("cuda: data path: %w", err)
			}
			dp.free[i] = ev
		}
	}
	s, err := ctx.NewStream()
	if err != nil {
		return fmt.Errorf("cuda: data path copy stream: %w", err)
	}
	dp.copy, dp.cur = s, -1
	return nil
}

// oom marks a device allocation failure for the model's split-and-retry.
func oom(err error) error {
	if errors.Is(err, cudadrv.ErrOutOfMemory) && !errors.Is(err, esm.ErrOutOfMemory) {
		return errors.Join(esm.ErrOutOfMemory, err)
	}
	return err
}

// SetBatch implements esm.Backend: tokens, per-token sequence index and
// position, cu_seqlens and scales are packed into a pinned staging buffer
// (two, alternating) and copied in one asynchronous copy on the copy stream;
// the compute stream waits for the copy (see the top of this file).
func (b *Backend) SetBatch(batch *esm.Batch) error {
	// Checked again although esm.Model checks every batch: the kernels
	// index device memory with cu_seqlens, and backends are also driven
	// directly (esm/backendtest); an out-of-bounds batch must not reach them.
	if err := batch.Check(); err != nil {
		return err
	}
	dp := &b.dp
	if err := dp.init(b.ctx); err != nil {
		return err
	}
	compute := b.ctx.Stream()
	if dp.cur >= 0 { // all kernels of the current batch are queued
		if err := dp.free[dp.cur].Record(compute); err != nil {
			return fmt.Errorf("cuda: batch: %w", err)
		}
		dp.freeRec[dp.cur] = true
	}
	T, nseq := len(batch.Tokens), batch.NumSeqs()
	words := 3*T + (nseq + 1) + nseq
	i := 0
	if dp.cur == 0 {
		i = 1
	}
	if err := b.stageEv[i].Synchronize(); err != nil { // its previous copy has run
		return fmt.Errorf("cuda: batch staging: %w", err)
	}
	if b.stage[i] == nil || len(b.stage[i].Bytes) < 4*words {
		// The old buffer is not freed here: cuMemFreeHost waits for the
		// whole device, which would drain the queue of the batch in flight
		// at every new largest batch. It is left to the context, which
		// frees every pinned buffer at Close; growing by half again keeps
		// what is left below twice the largest buffer.
		h, err := b.ctx.HostAlloc(4 * max(words+words/2, 1<<16))
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

	fresh := dp.dev[i] == nil || dp.dev[i].Size < 4*words
	dev := dp.dev[i]
	if fresh { // with the staging buffer's headroom, so that it is rarely fresh
		var err error
		if dev, err = b.grow(&dp.dev[i], 4*(words+words/2)); err != nil {
			return fmt.Errorf("cuda: batch of %d tokens: %w", T, oom(err))
		}
	}
	if fresh { // possibly a block that queued compute work still uses
		if err := dp.free[i].Record(compute); err != nil {
			return fmt.Errorf("cuda: batch: %w", err)
		}
		dp.freeRec[i] = true
	}
	if dp.freeRec[i] {
		if err := dp.copy.WaitEvent(dp.free[i]); err != nil {
			return fmt.Errorf("cuda: batch: %w", err)
		}
	}
	if err := b.ctx.CopyHtoDAsync(dev.Ptr, b.stage[i].Bytes[:4*words], dp.copy); err != nil {
		return fmt.Errorf("cuda: batch of %d tokens: %w", T, err)
	}
	if err := b.stageEv[i].Record(dp.copy); err != nil {
		return fmt.Errorf("cuda: batch: %w", err)
	}
	if err := compute.WaitEvent(b.stageEv[i]); err != nil {
		return fmt.Errorf("cuda: batch: %w", err)
	}
	dp.cur = i
	b.T, b.nseq = T, nseq
	b.topToken = batch.MaxToken()
	b.seqlens = attention.Seqlens{Cu: append(b.seqlens.Cu[:0], batch.Seqlens.Cu...)}
	b.tokens = dev.Ptr
	b.seqid = dev.Ptr.Add(4 * T)
	b.pos = dev.Ptr.Add(8 * T)
	b.cu = dev.Ptr.Add(12 * T)
	b.scales = dev.Ptr.Add(4 * (3*T + nseq + 1))
	return nil
}

// Read implements esm.Backend: ReadAsync into a pinned staging buffer, then
// wait for the compute stream and copy to dst.
func (b *Backend) Read(dst []float32, src esm.Tensor) error {
	n := len(dst)
	if err := b.checkRead(n, src); err != nil || n == 0 {
		return err
	}
	if b.readStage == nil || len(b.readStage.Bytes) < 4*n {
		if b.readStage != nil {
			if err := b.ctx.Stream().Synchronize(); err != nil { // a copy may still target it
				return fmt.Errorf("cuda: read: %w", err)
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
	stage := b.readStage.Float32()[:n]
	if err := b.ReadAsync(stage, src); err != nil {
		return err
	}
	if err := b.ctx.Stream().Synchronize(); err != nil {
		return fmt.Errorf("cuda: read: %w", err)
	}
	copy(dst, stage)
	return nil
}

func (b *Backend) checkRead(n int, src esm.Tensor) error {
	s, ok := src.(*tensor)
	if !ok || s == nil || s.buf == nil || s.n < n {
		return fmt.Errorf("cuda: read %d elements from a smaller, freed or foreign tensor", n)
	}
	return nil
}
