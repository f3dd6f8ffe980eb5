package data

import (
	"bytes"
	"encoding/binary"
	"strings"
	"unicode/utf8"
)

// Byte-level FASTA scanning. All functions work on one buffer in place: no
// per-line allocation. A line break is '\n', or '\r' not followed by '\n'
// (so CRLF counts once); a line starts at index 0 of a buffer that starts at a
// line start, or after a break.

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

// compact removes all ASCII whitespace from b in place and returns the new
// length. Words of 8 bytes without any byte below '!' (the usual case in
// sequence lines) are moved whole.
func compact(b []byte) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	n, i := 0, 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		if (x-'!'*ones)&^x&highs == 0 { // no byte < '!': nothing to remove
			binary.LittleEndian.PutUint64(b[n:], x) // n <= i: never past what was read
			n += 8
			continue
		}
		for k := 0; k < 64; k += 8 {
			c := byte(x >> k)
			b[n] = c
			n += int(keepTable[c])
		}
	}
	for ; i < len(b); i++ {
		c := b[i]
		b[n] = c
		n += int(keepTable[c])
	}
	return n
}

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

// findHeader returns the start of the first header line of buf that starts at
// or after minStart, looking for its '>' from index from (minStart <= from),
// or -1. Index 0 counts as a line start.
func findHeader(buf []byte, minStart, from int) int {
	for i := from; i < len(buf); {
		j := bytes.IndexByte(buf[i:], '>')
		if j < 0 {
			return -1
		}
		q := i + j
		k := q
		for k > minStart && isBlank(buf[k-1]) {
			k--
		}
		if k >= minStart && (k == 0 || buf[k-1] == '\n' || buf[k-1] == '\r') {
			return k
		}
		i = q + 1
	}
	return -1
}

// lineEnd returns the end of the content of the line starting at h (without
// its break) and the start of the next line (len(buf) at the end).
func lineEnd(buf []byte, h int, cr bool) (end, next int) {
	nl := bytes.IndexByte(buf[h:], '\n')
	if nl < 0 {
		nl = len(buf)
	} else {
		nl += h
	}
	end, next = nl, min(nl+1, len(buf))
	if cr {
		if r := bytes.IndexByte(buf[h:nl], '\r'); r >= 0 {
			r += h
			end = r
			if r+1 != nl { // lone CR
				next = r + 1
			}
		}
	}
	return end, next
}

// parseChunk parses the records whose header lines start in [from, len(buf))
// of buf, which must end at a header line start or at the end of the input.
// Text between from and the first header is a problem record when preamble is
// set (buf starts at the start of a file) and is skipped otherwise (it is the
// tail of a record parsed by the previous chunk). Record.Line is set to the
// number of line breaks between origin and the record's first line; Source,
// Index and the 1-based line are completed by the caller. Seq slices are
// compacted in place inside buf.
func parseChunk(buf []byte, origin, from int, preamble bool, cr bool, source string) []Record {
	h := findHeader(buf, from, from)
	if h < 0 {
		h = len(buf)
	}
	line := countBreaks(buf, origin, from, cr)
	skipped := countBreaks(buf, from, h, cr) // before compact destroys the breaks
	var recs []Record
	if preamble {
		i := from
		for i < h && keepTable[buf[i]] == 0 {
			i++
		}
		if i < h {
			ln := line + countBreaks(buf, from, i, cr)
			n := compact(buf[i:h])
			recs = append(recs, Record{Source: source, Line: ln, Seq: buf[i : i+n : i+n], Problem: ProblemBeforeHeader})
		}
	}
	if h == len(buf) {
		return recs
	}
	line += skipped

	if recs == nil {
		recs = make([]Record, 0, bytes.Count(buf[h:], []byte{'>'}))
	}
	// Headers are copied into one string per chunk; spans[i] locates record
	// first+i's header in buf until then (bytes before next are never
	// compacted).
	type span struct{ a, b int }
	first := len(recs)
	spans := make([]span, 0, cap(recs)-first)
	total := 0
	for h < len(buf) {
		end, next := lineEnd(buf, h, cr)
		j := h
		for buf[j] != '>' {
			j++
		}
		ha, hb := j+1, end
		for ha < hb && isBlank(buf[ha]) {
			ha++
		}
		for hb > ha && isBlank(buf[hb-1]) {
			hb--
		}
		spans = append(spans, span{ha, hb})
		total += hb - ha

		h2 := findHeader(buf, next, next)
		if h2 < 0 {
			h2 = len(buf)
		}
		breaks := countBreaks(buf, h, h2, cr) // before compact destroys the breaks
		n := compact(buf[next:h2])
		recs = append(recs, Record{Source: source, Line: line, Seq: buf[next : next+n : next+n]})
		line += breaks
		h = h2
	}
	var arena strings.Builder
	arena.Grow(total)
	for i, sp := range spans {
		hdr := buf[sp.a:sp.b]
		a := arena.Len()
		if utf8.Valid(hdr) {
			arena.Write(hdr)
		} else {
			arena.Write(bytes.ToValidUTF8(hdr, []byte("\uFFFD")))
		}
		spans[i] = span{a, arena.Len()} // now in the arena
	}
	s := arena.String() // no copy
	for i, c := range spans {
		r := &recs[first+i]
		r.Header = s[c.a:c.b]
		r.ID = r.Header
		for k := 0; k < len(r.Header); k++ {
			if isBlank(r.Header[k]) {
				r.ID = r.Header[:k]
				break
			}
		}
	}
	return recs
}
