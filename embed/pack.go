package embed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/esm"
)

// item is one tokenized record waiting in the bucketing window.
type item struct {
	meta  recMeta
	toks  []int32 // (n) with BOS/EOS, a view into the window's arena
	masks int
}

// pack is the main stage: it tokenizes every record once, skips (or, with
// Strict, rejects) what cannot be embedded, sorts a window of records by
// length and cuts it into varlen batches under the token budget.
func (p *pipeline) pack(ctx context.Context) error {
	tok := esm.NewTokenizer(p.o.MaxResidues)
	var (
		window     []item
		arena      []int32
		scratch    []int32 // a long record's tokens while its windows are cut
		windowToks int
		seen       = map[uint64]struct{}{} // FNV-1a of ids, bounded by MaxTrackedIDs
		// First input index of the current and the previous window: a
		// window is emitted only once the writer is past the one before the
		// previous, so at most two windows of rows wait for a slow device.
		winFirst, prevFirst int64 = -1, -1
	)
	// flush emits the window, which ends before input index end. Records
	// an earlier run committed go through the same tokenizing and window
	// accounting, so windows, and therefore batches, are the same as in an
	// uninterrupted run: windows before the replay point are dropped here;
	// the window the earlier run stopped in is computed again whole (the
	// writer drops the rows already committed), so its batches are the
	// same too.
	flush := func(end int64) error {
		if prevFirst >= 0 {
			if err := p.waitWritten(ctx, prevFirst); err != nil {
				return err
			}
		}
		window = slices.DeleteFunc(window, func(it item) bool { return it.meta.index < p.replay })
		if err := p.emit(ctx, window); err != nil {
			return err
		}
		if end > p.resume {
			p.addBoundary(end)
		}
		window, arena, windowToks = window[:0], arena[:0], 0
		if winFirst >= 0 {
			prevFirst = winFirst
		}
		winFirst = -1
		return nil
	}
	for {
		blk, err := p.rd.Next(ctx)
		p.c.readerQueue.Store(int64(p.rd.QueueDepth()))
		if errors.Is(err, io.EOF) {
			return flush(-1)
		}
		if err != nil {
			return fmt.Errorf("embed: reading input: %w", err)
		}
		p.c.recordsRead.Add(int64(len(blk.Records)))
		for i := range blk.Records {
			r := &blk.Records[i]
			p.c.records.Add(1)
			resumed := r.Index < p.resume // committed by an earlier run
			if resumed {
				p.c.resumed.Add(1)
			} else if winFirst < 0 {
				winFirst = r.Index
			}
			if r.Problem != "" {
				if resumed {
					continue
				}
				if err := p.skip(ctx, r, r.Problem); err != nil {
					return err
				}
				continue
			}
			seq := r.Seq
			if r.Truncated() {
				if p.o.Windowing.On() {
					if resumed {
						continue
					}
					if err := p.skip(ctx, r, windowTooLong(fmt.Sprintf("more than %d residue bytes", len(r.Seq)))); err != nil {
						return err
					}
					continue
				}
				if p.o.MaxResidues <= 0 {
					if resumed {
						continue
					}
					reason := fmt.Sprintf("%d residues, longer than the %d the device can embed whole (truncation is off)", r.Total, p.maxWhole)
					if err := p.skip(ctx, r, reason); err != nil {
						return err
					}
					continue
				}
				seq = dropCutToken(seq)
			}
			if arena == nil {
				arena = make([]int32, 0, p.o.Window+2*p.o.ToksPerBatch)
			}
			n0 := len(arena)
			toks, e, terr := tok.Encode(arena, seq)
			if terr != nil {
				if resumed {
					continue
				}
				if err := p.skip(ctx, r, terr.Error()); err != nil {
					return err
				}
				continue
			}
			if p.o.Windowing.On() && e.Kept > MaxWindowedResidues {
				if resumed {
					continue
				}
				if err := p.skip(ctx, r, windowTooLong(fmt.Sprintf("%d residues", e.Kept))); err != nil {
					return err
				}
				continue
			}
			// A grown arena leaves earlier items on the old array, which stays
			// valid; the batch copies tokens, so the arena is reused after a flush.
			arena = toks
			switch {
			case resumed:
				// counted by the run that embedded it
			case r.ID == "":
				p.c.emptyIDs.Add(1)
			default:
				if h := idHash(r.ID); len(seen) < MaxTrackedIDs {
					if _, dup := seen[h]; dup {
						p.c.dupIDs.Add(1)
					} else {
						seen[h] = struct{}{}
					}
				}
			}
			if e.Truncated && !resumed {
				p.c.truncated.Add(1)
			}
			if e.Unknown > 0 && !resumed {
				p.c.unknown.Add(1)
			}
			meta := recMeta{index: r.Index, id: r.ID, length: e.Kept, truncated: e.Truncated || r.Truncated()}
			if p.o.Windowing.Count(e.Kept) > 1 {
				// Cut into windows, written over the record's tokens in the
				// arena: they are copied out first.
				scratch = append(scratch[:0], toks[n0:]...)
				var added int
				arena, window, added = p.windowItems(toks[:n0], window, scratch, meta)
				windowToks += added
				if !resumed {
					p.c.windowed.Add(1)
				}
			} else {
				window = append(window, item{meta: meta, toks: toks[n0:len(toks):len(toks)], masks: e.Masks})
				windowToks += len(toks) - n0
			}
			if windowToks >= p.o.Window {
				if err := flush(r.Index + 1); err != nil {
					return err
				}
			}
		}
	}
}

// addBoundary records that the window before input index end has been
// emitted: the writer may commit there (a resumed run starting at a window
// boundary forms the same windows and batches as an uninterrupted run).
func (p *pipeline) addBoundary(end int64) {
	p.bmu.Lock()
	p.bounds = append(p.bounds, end)
	p.bmu.Unlock()
}

// boundaryBefore returns the largest window boundary at or before next
// (the replay point when none was passed yet), forgetting older ones.
// Called by the writer; next only grows.
func (p *pipeline) boundaryBefore(next int64) int64 {
	p.bmu.Lock()
	defer p.bmu.Unlock()
	for len(p.bounds) > 0 && p.bounds[0] <= next {
		p.lastBound = p.bounds[0]
		p.bounds = p.bounds[1:]
	}
	return p.lastBound
}

// dropCutToken removes an unfinished "<...>" token (a literal <mask> or
// <unk> the reader's limit cut in two) from the end of a cut sequence.
func dropCutToken(seq []byte) []byte {
	for i := len(seq) - 1; i >= 0 && i >= len(seq)-6; i-- {
		switch seq[i] {
		case '>':
			return seq
		case '<':
			return seq[:i]
		}
	}
	return seq
}

// waitWritten blocks until the writer has written (or skipped) every record
// before index.
func (p *pipeline) waitWritten(ctx context.Context, index int64) error {
	for p.nextIndex.Load() < index {
		select {
		case <-p.advanced:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// MaxTrackedIDs bounds the duplicate-id count's memory (~40 bytes an id):
// ids after the first 4M are not checked. A 64-bit hash collision could count
// a unique id as a duplicate; at 4M ids that chance is below 1e-6.
const MaxTrackedIDs = 4 << 20

// idHash is 64-bit FNV-1a, computed in place (no allocation per record).
func idHash(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return h
}

// skip reports a record that cannot be embedded and tells the writer.
func (p *pipeline) skip(ctx context.Context, r *data.Record, reason string) error {
	id := r.ID
	if id == "" {
		id = "(no id)"
	}
	line, lerr := p.rd.Line(r) // in a sharded run, counted from the file's start
	if lerr != nil {
		p.o.Log.Warn("a skipped record's line is counted from its shard's part of the file", "file", r.Source, "from_byte", r.LineFrom, "err", lerr)
	}
	if p.o.Strict {
		return fmt.Errorf("embed: %s:%d: record %s cannot be embedded: %s (strict)", r.Source, line, data.Quote(id), reason)
	}
	p.c.skipped.Add(1)
	p.o.Log.Warn("record skipped", "file", r.Source, "line", line, "id", logID(id), "reason", reason)
	select {
	case p.wch <- writerMsg{skip: r.Index, res: nil}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// emit sorts the window by length (longest first) and packs it greedily into
// batches of at most ToksPerBatch tokens; a sequence longer than the budget
// goes alone.
func (p *pipeline) emit(ctx context.Context, window []item) error {
	slices.SortStableFunc(window, func(a, b item) int { return len(b.toks) - len(a.toks) })
	budget := int(p.budget.Load())
	var j *job
	send := func() error {
		if j == nil {
			return nil
		}
		select {
		case p.ready <- j:
			j = nil
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, it := range window {
		if j != nil && len(j.batch.Tokens)+len(it.toks) > budget {
			if err := send(); err != nil {
				return err
			}
		}
		if j == nil {
			select {
			case j = <-p.free:
			case <-ctx.Done():
				return ctx.Err()
			}
			j.batch.Reset()
			j.recs = j.recs[:0]
			j.perTok = false
		}
		j.batch.Append(it.toks, it.masks)
		j.recs = append(j.recs, it.meta)
		j.perTok = j.perTok || it.meta.windowed()
	}
	return send()
}

// logID is an id as a log field: the handler quotes and escapes it (text)
// or encodes it (JSON), so it goes in as it is, cut to data.QuoteBytes.
func logID(id string) string {
	if len(id) <= data.QuoteBytes {
		return id
	}
	n := data.QuoteBytes
	for n > 0 && !utf8.RuneStart(id[n]) {
		n--
	}
	return fmt.Sprintf("%s... (%d more bytes)", id[:n], len(id)-n)
}
