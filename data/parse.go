package data

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"slices"
	"unicode"
	"unicode/utf8"
)

// Byte-level FASTA scanning. A line break is '\n', or '\r' not followed by
// '\n' (so CRLF counts once); a line starts after a break or at the start of
// the input.

// isBlank reports the horizontal blanks: space, tab, vertical tab, form feed.
func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\v' || c == '\f'
}

// keepTable[c] is 0 for ASCII whitespace (blanks, CR, LF), 1 otherwise.
var keepTable = func() (t [256]byte) {
	for i := range t {
		t[i] = 1
	}
	for _, c := range []byte(" \t\v\f\r\n") {
		t[c] = 0
	}
	return t
}()

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
	lows  = 0x7f7f7f7f7f7f7f7f
)

// compactTo copies the bytes of src that are not ASCII whitespace to dst
// (len(dst) >= len(src), no overlap) and returns how many it copied. Words of
// 8 bytes without any byte below '!' (the usual case in sequence lines) are
// moved whole.
func compactTo(dst, src []byte) int {
	n, i := 0, 0
	for ; i+8 <= len(src); i += 8 {
		x := binary.LittleEndian.Uint64(src[i:])
		if (x-'!'*ones)&^x&highs == 0 { // no byte < '!': nothing to remove
			binary.LittleEndian.PutUint64(dst[n:], x) // n <= i <= len(dst)-8
			n += 8
			continue
		}
		for k := 0; k < 64; k += 8 {
			c := byte(x >> k)
			dst[n] = c
			n += int(keepTable[c])
		}
	}
	for ; i < len(src); i++ {
		c := src[i]
		dst[n] = c
		n += int(keepTable[c])
	}
	return n
}

// whitespace8 returns 0x80 in each byte of x that is ASCII whitespace
// (9..13 or 32), 0 elsewhere. Every step works on 7-bit lanes, so no carry
// crosses a byte.
func whitespace8(x uint64) uint64 {
	z := x & lows
	ge9 := (z + (0x80-9)*ones) & highs // lane >= 9
	ge14 := (z + (0x80-14)*ones) & highs
	y := z ^ (' ' * ones)
	sp := ^((y + lows) | y) & highs // lane == ' '
	return (ge9&^ge14 | sp) &^ x    // a byte >= 0x80 is never whitespace
}

// countResidues returns how many bytes of b are not ASCII whitespace.
func countResidues(b []byte) int {
	ws, i := 0, 0
	for ; i+32 <= len(b); i += 32 {
		x0 := binary.LittleEndian.Uint64(b[i:])
		x1 := binary.LittleEndian.Uint64(b[i+8:])
		x2 := binary.LittleEndian.Uint64(b[i+16:])
		x3 := binary.LittleEndian.Uint64(b[i+24:])
		const lt = '!' * ones
		if ((x0-lt)&^x0|(x1-lt)&^x1|(x2-lt)&^x2|(x3-lt)&^x3)&highs == 0 {
			continue // no byte < '!': no whitespace
		}
		ws += bits.OnesCount64(whitespace8(x0)) + bits.OnesCount64(whitespace8(x1)) +
			bits.OnesCount64(whitespace8(x2)) + bits.OnesCount64(whitespace8(x3))
	}
	for ; i+8 <= len(b); i += 8 {
		ws += bits.OnesCount64(whitespace8(binary.LittleEndian.Uint64(b[i:])))
	}
	for ; i < len(b); i++ {
		ws += int(1 - keepTable[b[i]])
	}
	return len(b) - ws
}

// skipBlanks returns the position of the first byte at or after i in b
// that is not a blank, or len(b).
func skipBlanks(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		nl, cr := x^('\n'*ones), x^('\r'*ones)
		isNL := ^((nl&lows + lows) | nl) & highs // lane == '\n'
		isCR := ^((cr&lows + lows) | cr) & highs
		if whitespace8(x)&^isNL&^isCR != highs {
			break
		}
	}
	for i < len(b) && isBlank(b[i]) {
		i++
	}
	return i
}

// appendResidues appends the bytes of src that are not ASCII whitespace to
// dst, at most room of them (room < 0: all), and returns dst and how many
// src holds in all. dst grows past its result by at most
// max(room, residuePiece) bytes of scratch, never by len(src), when room is
// smaller than len(src).
func appendResidues(dst, src []byte, room int) ([]byte, int) {
	if room < 0 || room >= len(src) { // everything fits: compaction only shrinks
		old := len(dst)
		dst = slices.Grow(dst, len(src))[:old+len(src)]
		n := compactTo(dst[old:], src)
		return dst[:old+n], n
	}
	total := 0
	for room > 0 && len(src) > 0 {
		piece := src[:min(len(src), max(room, residuePiece))]
		src = src[len(piece):]
		old := len(dst)
		dst = slices.Grow(dst, len(piece))[:old+len(piece)]
		n := compactTo(dst[old:], piece)
		keep := min(n, room)
		dst = dst[:old+keep]
		room -= keep
		total += n
	}
	return dst, total + countResidues(src)
}

// residuePiece bounds the scratch appendResidues uses while a record nears
// its limit (pieces smaller than this would make a long whitespace run slow).
const residuePiece = 4096

// countBreaks counts line breaks at positions [a, b) of buf; buf beyond b is
// used only to tell CRLF from a lone CR (a CR at the end of buf is a break).
func countBreaks(buf []byte, a, b int, cr bool) int {
	n := bytes.Count(buf[a:b], []byte{'\n'})
	if cr {
		for i := a; i < b; {
			j := bytes.IndexByte(buf[i:b], '\r')
			if j < 0 {
				break
			}
			p := i + j
			if p+1 >= len(buf) || buf[p+1] != '\n' {
				n++
			}
			i = p + 1
		}
	}
	return n
}

// nextHeader returns the start of the first header line of b that starts
// after from, or -1. Position from itself is not a line start (the caller
// knows: it is inside a line, or at a break).
func nextHeader(b []byte, from int) int {
	for i := from; i < len(b); {
		j := bytes.IndexByte(b[i:], '>')
		if j < 0 {
			return -1
		}
		q := i + j
		k := q
		for k > from && isBlank(b[k-1]) {
			k--
		}
		if k > from && (b[k-1] == '\n' || b[k-1] == '\r') {
			return k
		}
		i = q + 1
	}
	return -1
}

// pstate is where the parser is in the FASTA grammar.
type pstate uint8

const (
	stSkip     pstate = iota // tail of a record whose header line starts before this byte range: looking for the next header
	stPreamble               // before the first header of a file
	stHeader                 // inside a header line
	stSeq                    // in the sequence lines of a record
)

// event says why feed returned.
type event uint8

const (
	evMore event = iota // the chunk is consumed; feed more, or finish at the end of the input
	evStop              // a header line starts at or after stop (or, in stSkip, none can start before it any more)
	evFull              // a header line starts while the block holds maxRecs records
)

type span struct{ a, b int }

// parser turns FASTA bytes, fed in chunks of any size, into the records of
// a block. Memory is bounded by the block, not by the input: a record keeps
// at most maxRes residue bytes (the rest is counted in Total), a header at
// most maxHeader bytes (the rest counted in HeaderCut), the text before the
// first header at most maxPreamble bytes. Nothing else grows with a record,
// a line or a run of blanks.
type parser struct {
	source      string
	maxRes      int // residue bytes kept per record; <= 0: all
	maxHeader   int
	maxPreamble int
	maxRecs     int // records per block
	seqHint     int // initial capacity of a block's residue arena

	st     pstate
	bol    bool  // at a line start, and only blanks read on this line since
	bolPos int64 // input offset of that line start
	cr     bool  // the last byte read was a '\r', counted as a break: a '\n' now belongs to it
	lead   bool  // stHeader: still skipping the blanks after '>'
	pos    int64 // input offset of the next byte
	line   int   // line breaks read since the block started
	open   bool  // recs[len(recs)-1] is still being read

	// The block being built. hdrs[i] and seqs[i] locate record i's header
	// and residues in hdr and seq until take.
	recs []Record
	hdrs []span
	seqs []span
	hdr  []byte
	seq  []byte

	// Positions of the next '\n' and '\r' at or after the last search, in
	// the chunk being fed (-1: not searched), so that finding line ends stays
	// linear in files without one of them.
	nl, crp int
}

func newParser(source string, o Options) *parser {
	return &parser{
		source:      source,
		maxRes:      o.MaxResidues,
		maxHeader:   o.maxHeader,
		maxPreamble: o.maxPreamble,
		maxRecs:     blockRecords(o.BlockBytes),
		seqHint:     min(o.BlockBytes+o.BlockBytes/8, 4<<20),
		st:          stPreamble,
		bol:         true,
	}
}

// utf8BOM is the byte order mark some editors write at the start of a UTF-8
// file; at a file's start it is not text (a header on the first line stays
// a header).
var utf8BOM = []byte("\xef\xbb\xbf")

// skipBOM sets a parser at a file's start to read on after its UTF-8 byte
// order mark, which the caller has left out of what it feeds.
func (p *parser) skipBOM() {
	p.pos = int64(len(utf8BOM))
	p.bolPos = p.pos
}

// blockRecords is the most records a block holds: a Record costs ~150 bytes
// whatever the input, so a block of tiny records (">\n" is two bytes) would
// otherwise cost ~75 times its input.
func blockRecords(blockBytes int) int { return max(blockBytes/64, 64) }

// startRange sets the parser to read a byte range starting at off inside a
// file, where prev is the byte before it.
func (p *parser) startRange(off int64, prev byte) {
	p.st = stSkip
	p.bol = prev == '\n' || prev == '\r'
	p.bolPos = off
	p.pos = off
}

// feed parses b, the input from offset p.pos on. It returns how many bytes
// it consumed and why it returned: evMore when all of b is consumed; evStop
// or evFull at the '>' of a header line (the record before it is complete),
// which the next call starts with.
func (p *parser) feed(b []byte, stop int64) (int, event) {
	base := p.pos
	p.nl, p.crp = -1, -1
	hasCR := bytes.IndexByte(b, '\r') >= 0
	i := 0
	for i < len(b) {
		if p.cr {
			p.cr = false
			if b[i] == '\n' {
				i++
				p.bolPos = base + int64(i)
				continue
			}
		}
		if p.st == stHeader {
			i = p.header(b, i, base, hasCR)
			continue
		}
		if p.bol {
			i = skipBlanks(b, i)
			if i == len(b) {
				break
			}
			if b[i] == '>' {
				p.close()
				if p.bolPos >= stop {
					p.pos = base + int64(i)
					return i, evStop
				}
				if len(p.recs) >= p.maxRecs {
					p.pos = base + int64(i)
					return i, evFull
				}
				p.startRecord()
				i++
				continue
			}
			p.bol = false
		}
		if p.st == stSkip && base+int64(i) >= stop {
			// Inside a line that is no header, at or past stop: no header
			// line can start before stop any more.
			p.pos = base + int64(i)
			return i, evStop
		}
		h := nextHeader(b, i)
		end := h
		if h < 0 {
			end = len(b)
		}
		p.body(b, i, end, hasCR)
		if h >= 0 {
			p.bol, p.bolPos = true, base+int64(h)
			i = h
			continue
		}
		// The chunk ends inside a line: it may be a line start followed by
		// blanks only, which a '>' in the next chunk makes a header.
		k := end
		for k > i && isBlank(b[k-1]) {
			k--
		}
		if k > i && (b[k-1] == '\n' || b[k-1] == '\r') {
			p.bol, p.bolPos = true, base+int64(k)
		}
		p.cr = b[end-1] == '\r'
		i = end
	}
	p.pos = base + int64(len(b))
	if p.st == stSkip && p.pos >= stop && !(p.bol && p.bolPos < stop) {
		return len(b), evStop
	}
	return len(b), evMore
}

// finish ends the input: the open record, if any, is complete.
func (p *parser) finish() {
	p.close()
}

// body reads b[i:end], which holds no header line start: line breaks and,
// by state, residues of the open record or of the text before the first
// header.
func (p *parser) body(b []byte, i, end int, hasCR bool) {
	if p.st == stSkip {
		p.line += countBreaks(b, i, end, hasCR)
		return
	}
	if p.st == stPreamble && !p.open {
		f := i
		for f < end && keepTable[b[f]] == 0 {
			f++
		}
		p.line += countBreaks(b, i, f, hasCR)
		if f == end {
			return
		}
		p.recs = append(p.recs, Record{Source: p.source, Line: p.line, Problem: ProblemBeforeHeader})
		p.hdrs = append(p.hdrs, span{len(p.hdr), len(p.hdr)})
		p.seqs = append(p.seqs, span{len(p.seq), len(p.seq)})
		p.open = true
		i = f
	}
	p.line += countBreaks(b, i, end, hasCR)
	last := len(p.recs) - 1
	room := -1
	if limit := p.maxRes; p.st == stPreamble {
		room = p.maxPreamble - (len(p.seq) - p.seqs[last].a)
	} else if limit > 0 {
		room = limit - (len(p.seq) - p.seqs[last].a)
	}
	if p.seq == nil {
		p.seq = make([]byte, 0, p.seqHint)
	}
	var n int
	p.seq, n = appendResidues(p.seq, b[i:end], room)
	p.recs[last].Total += int64(n)
}

// startRecord opens a record at a header line whose '>' is next.
func (p *parser) startRecord() {
	p.recs = append(p.recs, Record{Source: p.source, Line: p.line})
	p.hdrs = append(p.hdrs, span{len(p.hdr), len(p.hdr)})
	p.seqs = append(p.seqs, span{len(p.seq), len(p.seq)})
	p.open = true
	p.st, p.lead, p.bol = stHeader, true, false
}

// header reads header text from b[i:] up to the line break, which it
// consumes too; it returns where it stopped.
func (p *parser) header(b []byte, i int, base int64, hasCR bool) int {
	if p.lead {
		i = skipBlanks(b, i)
		if i == len(b) {
			return i
		}
		p.lead = false
	}
	e := p.lineEnd(b, i, hasCR)
	last := len(p.recs) - 1
	room := max(p.maxHeader-(len(p.hdr)-p.hdrs[last].a), 0)
	keep := min(e-i, room)
	p.hdr = append(p.hdr, b[i:i+keep]...)
	p.recs[last].HeaderCut += int64(e - i - keep)
	if e == len(b) {
		return e
	}
	p.endHeader()
	p.line++
	if b[e] == '\r' {
		switch {
		case e+1 == len(b):
			p.cr = true
		case b[e+1] == '\n':
			e++
		}
	}
	e++
	p.bol, p.bolPos = true, base+int64(e)
	return e
}

// lineEnd returns the position of the first '\n' or '\r' at or after i in
// b, or len(b).
func (p *parser) lineEnd(b []byte, i int, hasCR bool) int {
	if p.nl < i {
		p.nl = len(b)
		if j := bytes.IndexByte(b[i:], '\n'); j >= 0 {
			p.nl = i + j
		}
	}
	e := p.nl
	if hasCR {
		if p.crp < i {
			p.crp = len(b)
			if j := bytes.IndexByte(b[i:], '\r'); j >= 0 {
				p.crp = i + j
			}
		}
		e = min(e, p.crp)
	}
	return e
}

// endHeader completes the open record's header: trailing blanks trimmed,
// invalid UTF-8 replaced.
func (p *parser) endHeader() {
	last := len(p.recs) - 1
	a := p.hdrs[last].a
	h := p.hdr[a:]
	for len(h) > 0 && isBlank(h[len(h)-1]) {
		h = h[:len(h)-1]
	}
	p.hdr = p.hdr[:a+len(h)]
	if !utf8.Valid(h) {
		p.hdr = append(p.hdr[:a], bytes.ToValidUTF8(h, []byte("\uFFFD"))...)
	}
	p.hdrs[last].b = len(p.hdr)
	p.st = stSeq
}

// close completes the open record, if any.
func (p *parser) close() {
	if !p.open {
		return
	}
	if p.st == stHeader {
		p.endHeader()
	}
	p.seqs[len(p.seqs)-1].b = len(p.seq)
	p.open = false
}

// firstWord returns the first word of a header: words are separated by
// blanks and Unicode white space (unicode.IsSpace: U+00A0, U+2000-U+200A,
// U+3000, ...), which is skipped before the first word too.
func firstWord(h string) string {
	start := -1
	for i := 0; i < len(h); {
		c, size := h[i], 1
		space := isBlank(c)
		if c >= utf8.RuneSelf {
			var r rune
			r, size = utf8.DecodeRuneInString(h[i:])
			space = unicode.IsSpace(r)
		}
		switch {
		case space && start >= 0:
			return h[start:i]
		case !space && start < 0:
			start = i
		}
		i += size
	}
	if start < 0 {
		return ""
	}
	return h[start:]
}

// take returns the records completed so far as a block, with the line
// breaks read since the previous take, and starts a new block. No record
// may be open.
func (p *parser) take() *Block {
	s := string(p.hdr)
	for i := range p.recs {
		r := &p.recs[i]
		r.Header = s[p.hdrs[i].a:p.hdrs[i].b]
		r.ID = firstWord(r.Header)
		a, b := p.seqs[i].a, p.seqs[i].b
		r.Seq = p.seq[a:b:b]
	}
	blk := &Block{Records: p.recs, breaks: p.line}
	p.recs = make([]Record, 0, min(len(p.recs)+len(p.recs)/4+1, p.maxRecs))
	p.hdrs, p.seqs, p.hdr = p.hdrs[:0], p.seqs[:0], p.hdr[:0]
	p.seq = nil
	p.line = 0
	return blk
}
