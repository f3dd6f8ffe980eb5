package data

import (
	"bytes"
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
// length.
func compact(b []byte) int {
	n := 0
	for i := 0; i < len(b); i++ {
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
	line += countBreaks(buf, from, h, cr)

	if recs == nil {
		recs = make([]Record, 0, bytes.Count(buf[h:], []byte{'>'}))
	}
	// Headers go into one arena string per chunk: spans[i] locates record
	// first+i's header and the length of its ID.
	type span struct{ a, b, id int }
	first := len(recs)
	var spans []span
	var arena []byte
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
		hdr := buf[ha:hb]
		a := len(arena)
		if utf8.Valid(hdr) {
			arena = append(arena, hdr...)
		} else {
			arena = append(arena, bytes.ToValidUTF8(hdr, []byte("\uFFFD"))...)
		}
		id := len(arena) - a
		for k := a; k < len(arena); k++ {
			if isBlank(arena[k]) {
				id = k - a
				break
			}
		}
		spans = append(spans, span{a, len(arena), id})

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
	s := string(arena)
	for i, sp := range spans {
		r := &recs[first+i]
		r.Header = s[sp.a:sp.b]
		r.ID = s[sp.a : sp.a+sp.id]
	}
	return recs
}
