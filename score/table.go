package score

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// Table is a mutations table as read: a header row and string cells.
type Table struct {
	Header []string
	Rows   [][]string // each len(Header)
	Lines  []int      // 1-based line where each row starts
	Mutant int        // index of the mutant column
	ID     int        // index of the wild-type id column, -1 when absent
	IDName string     // the id column's name (TableOptions.IDColumn)
}

// TableOptions configures ReadTable. The zero value gives the defaults.
type TableOptions struct {
	// Comma separates cells: '\t' or ','; 0 decides from the header line
	// (a tab in it means TSV, else CSV).
	Comma rune
	// MutantColumn names the column holding mutants ("mutant", as in the
	// DMS tables of ESM's examples and ProteinGym).
	MutantColumn string
	// IDColumn names the column saying which wild type (FASTA id) a row
	// mutates ("id"); the column may be absent.
	IDColumn string
	// MaxLineBytes caps one line (1 MiB when 0).
	MaxLineBytes int
}

// DefaultMaxLineBytes is TableOptions.MaxLineBytes's default.
const DefaultMaxLineBytes = 1 << 20

// CommaFor is the separator a table file's name implies: '\t' for .tsv and
// .tab, ',' for .csv, 0 (decide from the header) otherwise.
func CommaFor(name string) rune {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".tsv", ".tab":
		return '\t'
	case ".csv":
		return ','
	}
	return 0
}

// ReadTable reads a mutations table (CSV or TSV with a header row, quoted
// cells as in RFC 4180, a UTF-8 byte-order mark ignored). Every row must
// have as many cells as the header; column names must be distinct and
// MutantColumn must be one of them. name is used in errors only.
func ReadTable(r io.Reader, name string, opts TableOptions) (*Table, error) {
	if opts.MutantColumn == "" {
		opts.MutantColumn = "mutant"
	}
	if opts.IDColumn == "" {
		opts.IDColumn = "id"
	}
	if opts.MaxLineBytes <= 0 {
		opts.MaxLineBytes = DefaultMaxLineBytes
	}
	br := bufio.NewReaderSize(&lineLimit{r: r, max: opts.MaxLineBytes}, 64<<10)
	if b, err := br.Peek(3); err == nil && bytes.Equal(b, []byte("\xef\xbb\xbf")) {
		br.Discard(3)
	}
	comma := opts.Comma
	if comma == 0 {
		comma = ','
		if sniffTab(br) {
			comma = '\t'
		}
	}
	if comma != ',' && comma != '\t' {
		return nil, fmt.Errorf("%s: separator %q is not ',' or tab", name, comma)
	}
	cr := csv.NewReader(br)
	cr.Comma = comma
	cr.ReuseRecord = false
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: empty table (want a header row with a %q column)", name, opts.MutantColumn)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", name, err)
	}
	t := &Table{Header: header, Mutant: -1, ID: -1, IDName: opts.IDColumn}
	seen := map[string]int{}
	for i, h := range header {
		if j, dup := seen[h]; dup {
			return nil, fmt.Errorf("%s: header: columns %d and %d are both named %s", name, j+1, i+1, quote(h))
		}
		seen[h] = i
		switch h {
		case opts.MutantColumn:
			t.Mutant = i
		case opts.IDColumn:
			t.ID = i
		}
	}
	if t.Mutant < 0 {
		return nil, fmt.Errorf("%s: no column named %s (columns: %s)", name, quote(opts.MutantColumn), listQuoted(header, 10))
	}
	cr.FieldsPerRecord = len(header)
	for {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return nil, fmt.Errorf("%s: after line %d: %w", name, lastLine(t), err)
		}
		line, _ := cr.FieldPos(0)
		t.Rows = append(t.Rows, row)
		t.Lines = append(t.Lines, line)
	}
	return t, nil
}

func lastLine(t *Table) int {
	if len(t.Lines) == 0 {
		return 1
	}
	return t.Lines[len(t.Lines)-1]
}

// sniffTab reports whether the first line holds a tab.
func sniffTab(br *bufio.Reader) bool {
	for n := 512; ; n *= 2 {
		b, err := br.Peek(n)
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			return bytes.IndexByte(b[:i], '\t') >= 0
		}
		if err != nil || n >= br.Size() {
			return bytes.IndexByte(b, '\t') >= 0
		}
	}
}

// listQuoted quotes the first max names, then says how many more.
func listQuoted(names []string, max int) string {
	var parts []string
	for i, n := range names {
		if i == max {
			parts = append(parts, fmt.Sprintf("... and %d more", len(names)-max))
			break
		}
		parts = append(parts, quote(n))
	}
	return strings.Join(parts, ", ")
}

// ErrLineTooLong is returned (wrapped) for a table line over the limit.
var ErrLineTooLong = errors.New("line too long")

// lineLimit fails a read once a line exceeds max bytes, so that one huge
// line cannot make the CSV reader buffer all of it.
type lineLimit struct {
	r    io.Reader
	max  int
	run  int // bytes since the last '\n'
	line int // line breaks seen
	err  error
}

func (l *lineLimit) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err // sticky: a bufio.Reader hands an error out only once
	}
	n, err := l.r.Read(p)
	for i := 0; i < n; i++ {
		if p[i] == '\n' {
			l.run = 0
			l.line++
			continue
		}
		l.run++
		if l.run > l.max {
			l.err = fmt.Errorf("line %d: %w (more than %d bytes)", l.line+1, ErrLineTooLong, l.max)
			return 0, l.err
		}
	}
	return n, err
}

// Variants resolves every row of t against the wild types (ids are their
// FASTA ids, seqs their CheckWildType sequences): the row's wild type is
// the record its ID cell names, or the only wild type when t has no ID
// column; its mutant is parsed (ParseMutant with offset) and checked
// against that sequence. The first bad row is an error naming name and
// its line.
func (t *Table) Variants(name string, ids, seqs []string, offset int) ([]Variant, error) {
	if len(ids) != len(seqs) {
		return nil, fmt.Errorf("score: %d ids for %d sequences", len(ids), len(seqs))
	}
	if len(seqs) == 0 {
		return nil, errors.New("no wild-type sequences")
	}
	byID := map[string]int{}
	for i, id := range ids {
		if _, dup := byID[id]; dup {
			byID[id] = -1 // ambiguous: an error only if a row names it
			continue
		}
		byID[id] = i
	}
	if t.ID < 0 && len(seqs) > 1 {
		return nil, fmt.Errorf("%s: no %s column to say which of the %d wild types each row mutates (add one, or give one wild type)",
			name, quote(t.IDName), len(seqs))
	}
	vars := make([]Variant, len(t.Rows))
	for r, row := range t.Rows {
		w := 0
		if t.ID >= 0 {
			id := row[t.ID]
			i, ok := byID[id]
			switch {
			case !ok:
				return nil, fmt.Errorf("%s:%d: wild type %s is not in the FASTA input", name, t.Lines[r], quote(id))
			case i < 0:
				return nil, fmt.Errorf("%s:%d: wild type %s names several FASTA records", name, t.Lines[r], quote(id))
			}
			w = i
		}
		m, err := ParseMutant(row[t.Mutant], offset)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, t.Lines[r], err)
		}
		if err := m.Check(seqs[w], offset); err != nil {
			return nil, fmt.Errorf("%s:%d: mutant %s of %s: %w", name, t.Lines[r], quote(row[t.Mutant]), quote(ids[w]), err)
		}
		vars[r] = Variant{WildType: w, Mutant: m}
	}
	return vars, nil
}
