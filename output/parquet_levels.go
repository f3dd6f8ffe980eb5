package output

import (
	"encoding/binary"
)

// A page's repetition and definition levels, as runs of one level each,
// encoded without writing out a byte per value: an embedding record of
// L×D values has the level pattern of its shape (parquet_pages.go), so a
// page of per-token rows is a few runs per residue, while its values are
// hundreds of thousands of bytes of levels. encodeLevelRuns gives the
// bytes parquet-go's RLE/bit-packed hybrid encoder (rle.Encoding's
// EncodeLevels, the encoder of the pages parquet-go writes) gives for the
// same levels written out (TestEncodeLevelRunsMatchesParquet): that
// encoder reads the levels 8 at a time; a word of 8 equal levels starts
// or extends a run-length run, any other word starts a bit-packed run that
// lasts until a word equals 8 copies of its predecessor's first level;
// the last len%8 levels are run-length runs of equal levels.

// levelRun is count copies of one level.
type levelRun struct {
	level byte
	count int
}

// levelRuns is a sequence of levels as runs; adjacent runs of the same
// level are merged as they are added.
type levelRuns struct {
	runs []levelRun
	n    int // levels in all
}

func (r *levelRuns) add(level byte, count int) {
	if count <= 0 {
		return
	}
	r.n += count
	if k := len(r.runs) - 1; k >= 0 && r.runs[k].level == level {
		r.runs[k].count += count
		return
	}
	r.runs = append(r.runs, levelRun{level, count})
}

func (r *levelRuns) reset() { r.runs, r.n = r.runs[:0], 0 }

// levelCursor reads a levelRuns' levels by position, moving forward.
type levelCursor struct {
	runs  []levelRun
	i     int // run holding position pos
	start int // position of runs[i]'s first level
}

// seek moves to the run holding position p (p at or after the current
// run's start).
func (c *levelCursor) seek(p int) {
	for p >= c.start+c.runs[c.i].count {
		c.start += c.runs[c.i].count
		c.i++
	}
}

// word returns the 8 levels from position 8k as parquet-go reads them: a
// little-endian uint64.
func (c *levelCursor) word(k int) uint64 {
	c.seek(8 * k)
	d := *c // the word's later levels, without moving c past its start
	var w uint64
	for b := range 8 {
		d.seek(8*k + b)
		w |= uint64(d.runs[d.i].level) << (8 * b)
	}
	return w
}

// uniformEnd returns the end of the words from k on that are 8 copies of
// position 8k's level: k itself when word k is not.
func (c *levelCursor) uniformEnd(k int) int {
	c.seek(8 * k)
	return max(k, (c.start+c.runs[c.i].count)/8)
}

func broadcastLevel(w uint64) uint64 { return (w & 0xff) * 0x0101010101010101 }

// encodeLevelRuns appends the RLE/bit-packed hybrid encoding of r's levels
// at bit width w (1 to 8) to dst, as parquet-go's EncodeLevels encodes
// them written out.
func encodeLevelRuns(dst []byte, r *levelRuns, w uint, scratch []uint64) ([]byte, []uint64) {
	if r.n == 0 {
		return dst, scratch
	}
	c := levelCursor{runs: r.runs}
	words := r.n / 8
	for i := 0; i < words; {
		if j := c.uniformEnd(i); j > i {
			dst = appendRLERun(dst, 8*(j-i), byte(c.word(i)))
			i = j
			continue
		}
		scratch = append(scratch[:0], c.word(i))
		j := i + 1
		for j < words {
			wj := c.word(j)
			if wj == broadcastLevel(scratch[len(scratch)-1]) {
				break
			}
			scratch = append(scratch, wj)
			j++
		}
		dst = appendBitPacked(dst, scratch, w)
		i = j
	}
	// The last r.n % 8 levels: a run-length run per stretch of equal levels.
	if p := 8 * words; p < r.n {
		c.seek(p)
		for i, start := c.i, c.start; i < len(r.runs); i++ {
			end := start + r.runs[i].count
			dst = appendRLERun(dst, end-max(p, start), r.runs[i].level)
			start = end
		}
	}
	return dst, scratch
}

func appendRLERun(dst []byte, count int, level byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(count)<<1)
	return append(dst, level)
}

// appendBitPacked appends one bit-packed run of the words' levels, w bits
// each, least significant first.
func appendBitPacked(dst []byte, words []uint64, w uint) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(words))<<1|1)
	mask := uint64(1)<<w - 1
	for _, word := range words {
		var packed uint64
		for b := uint(0); b < 8; b++ {
			packed |= ((word >> (8 * b)) & mask) << (b * w)
		}
		for b := uint(0); b < w; b++ {
			dst = append(dst, byte(packed>>(8*b)))
		}
	}
	return dst
}
