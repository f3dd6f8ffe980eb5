package embed

import (
	"context"
	"fmt"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/output"
)

// waiting is a row that waits for an earlier index; res, if not nil, is
// the result buffer its values are in, kept until the row is written.
type waiting struct {
	row *output.Row
	res *result
}

// write is the writer goroutine: it restores input order (batches arrive
// length-sorted, skipped records as notices), writes rows and hands a
// result buffer back for each one it receives, so the compute stage waits
// for the writer only when all result buffers are full. Rows that must
// wait stay where they are: their result buffer is kept until the last
// of them is written, and another (one kept earlier whose rows are all
// written, or a new one) goes back in its place. Nothing is copied, and
// the memory held is what copies of the waiting rows would take, in
// whole batches.
func (p *pipeline) write(ctx context.Context) error {
	var (
		next    = p.resume
		pending = map[int64]waiting{} // rows waiting for an earlier index
		skipped = map[int64]bool{}
		row     output.Row
		failed  error
		asm     = newAssembler(p.cols) // long records' windows, until the last arrives
		held    = map[*result]int{}    // kept result buffers: their rows still waiting
		spare   []*result              // kept buffers whose rows are all written
		cur     *result                // the buffer being read
	)
	row.Values = make([][]float32, len(p.cols))
	emit := func(r *output.Row) {
		if failed != nil {
			return
		}
		if err := p.parts.Write(r); err != nil {
			failed = fmt.Errorf("embed: writing record %d (%s): %w", r.Index, data.Quote(r.ID), err)
			p.cancel() // stop the other stages; this loop keeps draining
			return
		}
		p.written++
		p.c.embedded.Add(1)
		p.c.residues.Add(int64(r.Length))
		next++
	}
	// advance tells the packer how far the output has come, and commits a
	// chunk when one is due.
	advance := func() {
		if failed == nil && p.parts.Due() {
			if err := p.parts.Commit(next, p.boundaryBefore(next)); err != nil {
				failed = fmt.Errorf("embed: %w", err)
				p.cancel()
			}
		}
		p.nextIndex.Store(next)
		select {
		case p.advanced <- struct{}{}:
		default:
		}
	}
	drain := func() {
		defer advance()
		for failed == nil {
			if skipped[next] {
				delete(skipped, next)
				next++
			} else if w, ok := pending[next]; ok {
				delete(pending, next)
				emit(w.row)
				if w.res != nil {
					if held[w.res]--; held[w.res] == 0 {
						delete(held, w.res)
						// The buffer being read goes back when it is read
						// (giveBack); an earlier one is free now.
						if w.res != cur && len(spare) < cap(p.results) {
							spare = append(spare, w.res)
						}
					}
				}
			} else {
				return
			}
		}
	}
	for msg := range p.wch {
		if failed != nil {
			if msg.res != nil {
				p.results <- msg.res
			}
			continue // keep draining so no sender blocks
		}
		if msg.res == nil {
			skipped[msg.skip] = true
			drain()
			continue
		}
		res := msg.res
		cur = res
		offs := make([]int, len(p.cols))
		for _, rec := range res.recs {
			if rec.index < p.resume {
				// Replayed to form the same batches; committed earlier.
				for c, col := range p.cols {
					offs[c] += colSize(col, &rec)
				}
				continue
			}
			row.ID, row.Index, row.Length, row.Truncated = rec.id, rec.index, rec.length, rec.truncated
			for c, col := range p.cols {
				n := colSize(col, &rec)
				row.Values[c] = res.vals[c][offs[c] : offs[c]+n]
				offs[c] += n
			}
			if rec.windowed() {
				whole, err := asm.add(&rec, row.Values)
				switch {
				case err != nil:
					if failed == nil {
						failed = err
						p.cancel()
					}
				case whole == nil:
					// windows of this record are still missing
				case whole.Index == next:
					emit(whole)
					drain()
				default:
					pending[whole.Index] = waiting{row: whole}
				}
				continue
			}
			if rec.index == next {
				emit(&row)
				drain()
				continue
			}
			cp := &output.Row{ID: row.ID, Index: row.Index, Length: row.Length, Truncated: row.Truncated, Values: make([][]float32, len(row.Values))}
			copy(cp.Values, row.Values) // slices of res.vals: res is kept
			pending[rec.index] = waiting{row: cp, res: res}
			held[res]++
		}
		p.results <- p.giveBack(res, held, &spare)
	}
	if failed != nil {
		return failed
	}
	if (len(pending) > 0 || asm.pending() > 0) && ctx.Err() == nil {
		return fmt.Errorf("embed: internal error: %d rows never reached the writer in order, %d records with windows missing (next index %d)",
			len(pending), asm.pending(), next)
	}
	return nil
}

// giveBack returns the result buffer to hand back after res: res itself
// when none of its rows waits (its rows may have been written while it
// was read, held no longer counts it), else a spare one, else a new one.
func (p *pipeline) giveBack(res *result, held map[*result]int, spare *[]*result) *result {
	if held[res] == 0 {
		delete(held, res)
		return res
	}
	if n := len(*spare); n > 0 {
		r := (*spare)[n-1]
		*spare = (*spare)[:n-1]
		return r
	}
	return &result{vals: make([][]float32, len(p.cols))}
}
