package score

import (
	"strings"
	"testing"
)

// FuzzParseMutant: any string gives an error or a well-formed mutant that
// writes back as the same string (the syntax has one spelling per mutant).
func FuzzParseMutant(f *testing.F) {
	for _, s := range []string{"A23G", "A23G:K45R", "K45R:A23G", "A1A", "X7C", "A0G", "A03G", "a23g", "A23*",
		"A-1G", "A+1G", "A 1G", "A23G:", ":A23G", "A23G::K4R", "A3G:A3C", "A99999999999G", "A2147483648G",
		"M1\xffA", "A23G;K45R", "A23G,K45R", "p.Ala23Gly", "_wt", "WT", "", ":", "AG", "A1G\n"} {
		f.Add(s, 1)
		f.Add(s, 0)
		f.Add(s, 24)
	}
	f.Add("A5G", -MaxOffset)
	f.Add("A5G", MaxOffset+1)
	f.Fuzz(func(t *testing.T, s string, offset int) {
		m, err := ParseMutant(s, offset)
		if err != nil {
			// At most two quotes of user text (each QuoteBytes bytes,
			// 4 characters per byte once escaped) and fixed text.
			if len(err.Error()) > 2*(4*QuoteBytes+5)+300 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if len(m) == 0 || len(m) > MaxSubstitutions {
			t.Fatalf("%q: %d substitutions", s, len(m))
		}
		seen := map[int]bool{}
		for _, sub := range m {
			if sub.Pos < 1 || !isResidue(sub.WT) || !isResidue(sub.MT) || seen[sub.Pos] {
				t.Fatalf("%q: bad substitution %+v", s, sub)
			}
			seen[sub.Pos] = true
		}
		if got := m.Format(offset); got != s {
			t.Fatalf("%q (offset %d) formats back as %q", s, offset, got)
		}
		// Against a sequence: Check errs or the positions are inside.
		seq := strings.Repeat("ACDEFGHIKLMNPQRSTVWY", 3)
		if m.Check(seq, offset) == nil {
			if mt := m.Apply(seq); len(mt) != len(seq) {
				t.Fatalf("Apply changed the length")
			}
		}
	})
}

// FuzzReadTable: any input gives an error or a table whose rows all have
// the header's width, lines increasing, and whose variants resolve or fail
// cleanly.
func FuzzReadTable(f *testing.F) {
	for _, s := range []string{
		"mutant,DMS_score\nA1G,0.5\nK2R:A1G,-1\n",
		"id\tmutant\nw\tC1A\n",
		"\xef\xbb\xbf,mutant\r\n0,\"A1G\"\r\n",
		"mutant,note\nA1G,\"two\nlines\"\n",
		"mutant\n", "", "\n", "mutant,x\nA1G\n", "mutant,mutant\n", "\"", "mutant\n\"A1G",
		"id,mutant\nw,A1G\nv,C2D\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tb, err := ReadTable(strings.NewReader(s), "f.csv", TableOptions{MaxLineBytes: 4096})
		if err != nil {
			return
		}
		if tb.Mutant < 0 || tb.Mutant >= len(tb.Header) || tb.ID >= len(tb.Header) || len(tb.Lines) != len(tb.Rows) {
			t.Fatalf("bad table %+v", tb)
		}
		for i, r := range tb.Rows {
			if len(r) != len(tb.Header) {
				t.Fatalf("row %d has %d cells, header %d", i, len(r), len(tb.Header))
			}
			if i > 0 && tb.Lines[i] <= tb.Lines[i-1] {
				t.Fatalf("lines %v not increasing", tb.Lines)
			}
		}
		v, err := tb.Variants("f.csv", []string{"w"}, []string{"ACDEFGHIKLMNPQRSTVWY"}, 1)
		if err == nil && len(v) != len(tb.Rows) {
			t.Fatalf("%d variants for %d rows", len(v), len(tb.Rows))
		}
	})
}
