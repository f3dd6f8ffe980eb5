package embed

// rowBufs lends the writer goroutine the buffers it copies waiting rows
// into (a row that arrives before an earlier record is written must leave
// its result buffer, which the compute stage reuses): a row's copy goes
// back once the row is written, so a run allocates (and the runtime
// zeroes) such buffers only until it has enough of each size, instead of
// once per waiting row. Writer goroutine only.
type rowBufs struct {
	free  map[int][][]float32 // by capacity class
	bytes int64               // held in free
	limit int64               // most bytes kept in free; more are left to the GC
}

// rowClass rounds n floats up to a multiple of 64 Ki floats (256 KiB),
// so rows of similar lengths share buffers, wasting at most 256 KiB each.
func rowClass(n int) int { return (n + 1<<16 - 1) &^ (1<<16 - 1) }

func newRowBufs(limit int64) *rowBufs {
	return &rowBufs{free: map[int][][]float32{}, limit: limit}
}

// clone returns a copy of v in a lent buffer (nil for an empty v).
func (b *rowBufs) clone(v []float32) []float32 {
	if len(v) == 0 {
		return nil
	}
	c := rowClass(len(v))
	if l := b.free[c]; len(l) > 0 {
		buf := l[len(l)-1]
		b.free[c] = l[:len(l)-1]
		b.bytes -= 4 * int64(cap(buf))
		return append(buf[:0], v...)
	}
	buf := make([]float32, len(v), c)
	copy(buf, v)
	return buf
}

// release takes back a buffer clone returned, once its row is written.
func (b *rowBufs) release(v []float32) {
	if cap(v) == 0 || cap(v) != rowClass(cap(v)) || b.bytes+4*int64(cap(v)) > b.limit {
		return
	}
	b.free[cap(v)] = append(b.free[cap(v)], v[:0])
	b.bytes += 4 * int64(cap(v))
}
