package embed

import (
	"context"
	"fmt"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/output"
)

// waitingBufsKept bounds the bytes of written rows' copies the writer
// keeps for later waiting rows (rowBufs): about 170 rows of 300 residues
// of the 650M model's per-token embeddings.
const waitingBufsKept = 256 << 20

// waiting is a row that waits for an earlier index; lent: its values
// are rowBufs' buffers, given back once it is written.
type waiting struct {
	row  *output.Row
	lent bool
}

// write is the writer goroutine: it restores input order (batches arrive
// length-sorted, skipped records as notices), writes rows and hands result
// buffers back at once (rows that must wait are copied out), so the compute
// stage waits for the writer only when all result buffers are full.
func (p *pipeline) write(ctx context.Context) error {
	var (
		next    = p.resume
		pending = map[int64]waiting{} // rows waiting for an earlier index
		skipped = map[int64]bool{}
		row     output.Row
		failed  error
		asm     = newAssembler(p.cols) // long records' windows, until the last arrives
		bufs    = newRowBufs(waitingBufsKept)
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
				if w.lent {
					for _, v := range w.row.Values {
						bufs.release(v)
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
			for c, v := range row.Values {
				cp.Values[c] = bufs.clone(v)
			}
			pending[rec.index] = waiting{row: cp, lent: true}
		}
		p.results <- res
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
