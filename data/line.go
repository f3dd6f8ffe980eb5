package data

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// lineKey names the part of a file before a shard's range.
type lineKey struct {
	source string
	from   int64
}

// lineCount is a cached count of line breaks, or why it could not be had.
type lineCount struct {
	n   int
	err error
}

// Line returns rec's 1-based line in its file. A record of a shard's part
// of a file counts its line from where that part starts (Record.LineFrom);
// Line then counts the line breaks before it, reading that earlier part of
// the file once per file and keeping the count, so that only a run that
// reports a record's line pays for the read. If the count cannot be had
// (the file changed or cannot be read), err says why and line is the line
// within the shard's part. Safe for concurrent use.
func (r *Reader) Line(rec *Record) (line int, err error) {
	if rec.LineFrom <= 0 {
		return rec.Line, nil
	}
	k := lineKey{rec.Source, rec.LineFrom}
	r.linesMu.Lock()
	defer r.linesMu.Unlock()
	c, ok := r.linesBefore[k]
	if !ok {
		c.n, c.err = linesBefore(rec.Source, rec.LineFrom)
		if r.linesBefore == nil {
			r.linesBefore = map[lineKey]lineCount{}
		}
		r.linesBefore[k] = c
	}
	if c.err != nil {
		return rec.Line, c.err
	}
	return c.n + rec.Line, nil
}

// linesBefore counts the line breaks (LF, CRLF or a lone CR, as the parser
// counts them) in the first n bytes of the file at path.
func linesBefore(path string, n int64) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("data: counting lines of %s: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	lines, pos := 0, int64(0)
	pendingCR := false // the previous piece ended with a CR
	for pos < n {
		k, err := f.Read(buf[:min(int64(len(buf)), n-pos)])
		if k > 0 {
			p := buf[:k]
			if pendingCR && p[0] != '\n' {
				lines++ // that CR was a lone one
			}
			pendingCR = p[k-1] == '\r'
			end := k
			if pendingCR {
				end = k - 1 // decided by the next piece (or by the byte at n)
			}
			lines += countBreaks(p, 0, end, true)
			pos += int64(k)
		}
		if err == io.EOF {
			return 0, fmt.Errorf("data: counting lines of %s: it is shorter than %d bytes now", path, n)
		}
		if err != nil {
			return 0, fmt.Errorf("data: counting lines of %s: %w", path, err)
		}
	}
	if pendingCR {
		// A CR just before n: a lone CR is a break before n; the CR of a
		// CRLF is not, since its LF at n is counted with the lines from n.
		var b [1]byte
		_, err := f.ReadAt(b[:], n)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("data: counting lines of %s: %w", path, err)
		}
		if err != nil || b[0] != '\n' {
			lines++
		}
	}
	return lines, nil
}
