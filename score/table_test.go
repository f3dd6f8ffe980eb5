package score

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/internal/memcap"
)

func TestReadTable(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, in string
		comma    rune
		header   []string
		rows     [][]string
		lines    []int
		id       int
	}{
		{"csv", "mutant,DMS_score\nA1G,0.5\nK2R:A1G,-1\n", 0,
			[]string{"mutant", "DMS_score"}, [][]string{{"A1G", "0.5"}, {"K2R:A1G", "-1"}}, []int{2, 3}, -1},
		{"tsv sniffed", "id\tmutant\tnote\nP1\tA1G\ta,b\n", 0,
			[]string{"id", "mutant", "note"}, [][]string{{"P1", "A1G", "a,b"}}, []int{2}, 0},
		{"bom crlf quoted", "\xef\xbb\xbf,mutant\r\n0,\"A1G\"\r\n1,\"K2R\"\r\n", ',',
			[]string{"", "mutant"}, [][]string{{"0", "A1G"}, {"1", "K2R"}}, []int{2, 3}, -1},
		{"quoted newline", "mutant,note\nA1G,\"two\nlines\"\nK2R,x\n", ',',
			[]string{"mutant", "note"}, [][]string{{"A1G", "two\nlines"}, {"K2R", "x"}}, []int{2, 4}, -1},
		{"header only", "mutant\n", 0, []string{"mutant"}, nil, nil, -1},
	} {
		tb, err := ReadTable(strings.NewReader(c.in), "t.csv", TableOptions{Comma: c.comma})
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !slices.Equal(tb.Header, c.header) || len(tb.Rows) != len(c.rows) || !slices.Equal(tb.Lines, c.lines) || tb.ID != c.id {
			t.Errorf("%s: got %q %q lines %v id %d", c.name, tb.Header, tb.Rows, tb.Lines, tb.ID)
			continue
		}
		for i := range c.rows {
			if !slices.Equal(tb.Rows[i], c.rows[i]) {
				t.Errorf("%s: row %d = %q, want %q", c.name, i, tb.Rows[i], c.rows[i])
			}
		}
	}
}

func TestReadTableErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, in, want string
		opts           TableOptions
	}{
		{"empty", "", "t.csv: empty table", TableOptions{}},
		{"no mutant column", "id,score\nx,1\n", `t.csv: no column named "mutant" (columns: "id", "score")`, TableOptions{}},
		{"other column name", "mutant\nA1G\n", `no column named "variant"`, TableOptions{MutantColumn: "variant"}},
		{"duplicate column", "mutant,x,x\n", `columns 2 and 3 are both named "x"`, TableOptions{}},
		{"ragged row", "mutant,x\nA1G,1\nK2R\n", "t.csv: record on line 3: wrong number of fields", TableOptions{}},
		{"bad quote", "mutant,x\nA1G,\"1\n", "t.csv: parse error on line 2", TableOptions{}},
		{"long line", "mutant\n" + strings.Repeat("A", 300) + "\n", "line 2: line too long (more than 100 bytes)", TableOptions{MaxLineBytes: 100}},
		{"bad separator", "mutant\n", "separator ';' is not ',' or tab", TableOptions{Comma: ';'}},
		{"many columns", "a,b,c,d,e,f,g,h,i,j,k,l\n", `"j", ... and 2 more`, TableOptions{}},
	} {
		_, err := ReadTable(strings.NewReader(c.in), "t.csv", c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
	}
	_, err := ReadTable(strings.NewReader("mutant\n"+strings.Repeat("A", 300)), "t.csv", TableOptions{MaxLineBytes: 100})
	if !errors.Is(err, ErrLineTooLong) {
		t.Errorf("long last line: %v, want ErrLineTooLong", err)
	}
}

func TestTableVariants(t *testing.T) {
	t.Parallel()
	ids := []string{"P1", "P2", "P2"}
	seqs := []string{"MKTAY", "GAVLI", "GAVLI"}
	read := func(s string) *Table {
		tb, err := ReadTable(strings.NewReader(s), "m.csv", TableOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	v, err := read("id,mutant\nP1,K2R\nP1,M1A:Y5W\n").Variants("m.csv", ids, seqs, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 2 || v[1].WildType != 0 || !slices.Equal(v[1].Mutant, Mutant{{1, 'M', 'A'}, {5, 'Y', 'W'}}) {
		t.Errorf("variants %+v", v)
	}
	// One wild type and no id column: every row mutates it.
	v, err = read("mutant\nK12R\n").Variants("m.csv", ids[:1], seqs[:1], 11)
	if err != nil || v[0].Mutant[0].Pos != 2 {
		t.Errorf("offset 11: %+v, %v", v, err)
	}
	for _, c := range []struct {
		table, want string
		n           int
	}{
		{"id,mutant\nP1,K2R\nP1,A2R\n", `m.csv:3: mutant "A2R" of "P1": A2R: the wild type has K at position 2, not A`, 1},
		{"id,mutant\nP9,K2R\n", `m.csv:2: wild type "P9" is not in the FASTA input`, 1},
		{"id,mutant\nP2,G1A\n", `m.csv:2: wild type "P2" names several FASTA records`, 3},
		{"mutant\nK2R\n", `m.csv: no "id" column to say which of the 3 wild types`, 3},
		{"id,mutant\nP1,K2R\nP1,\n", "m.csv:3: empty mutant", 1},
		{"id,mutant\nP1,K6R\n", "m.csv:2: mutant \"K6R\" of \"P1\": K6R: position 6 is past the end of the wild type (5 residues, numbered 1..5)", 1},
	} {
		_, err := read(c.table).Variants("m.csv", ids[:c.n], seqs[:c.n], 1)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error containing %q", c.table, err, c.want)
		}
	}
}

// endless yields header then 'A' forever: one line with no end.
type endless struct{ head string }

func (e *endless) Read(p []byte) (int, error) {
	n := copy(p, e.head)
	e.head = e.head[n:]
	for i := n; i < len(p); i++ {
		p[i] = 'A'
	}
	return len(p), nil
}

// TestReadTableEndlessLineBoundedMemory: a line that never ends is an
// error after MaxLineBytes, in bounded memory (a 256 MiB address-space cap:
// the CSV reader alone would buffer the whole line).
func TestReadTableEndlessLineBoundedMemory(t *testing.T) {
	memcap.Run(t, 256<<20, func(t *testing.T) {
		_, err := ReadTable(&endless{head: "mutant,x\nA1G,"}, "endless.csv", TableOptions{})
		if !errors.Is(err, ErrLineTooLong) || !strings.Contains(err.Error(), "line 2") {
			t.Fatalf("endless line: %v, want ErrLineTooLong on line 2", err)
		}
	})
}
