package data

import (
	"path/filepath"
	"testing"
)

// TestHeaderID checks how a header line gives the record's ID: the first
// word, words separated by ASCII blanks and by Unicode white space
// (esm2go-fasta/3), empty headers giving "".
func TestHeaderID(t *testing.T) {
	for _, tc := range []struct {
		line, header, id string
	}{
		{">sp|P1|X desc", "sp|P1|X desc", "sp|P1|X"},
		{">P1\tdesc", "P1\tdesc", "P1"},
		{">P1\u00a0desc here", "P1\u00a0desc here", "P1"},       // no-break space
		{">\u00a0P1 desc", "\u00a0P1 desc", "P1"},               // leading no-break space
		{">P1\u2003desc", "P1\u2003desc", "P1"},                 // em space
		{">P1\u3000desc", "P1\u3000desc", "P1"},                 // ideographic space
		{">P1\u202fdesc", "P1\u202fdesc", "P1"},                 // narrow no-break space
		{">P1\u0085desc", "P1\u0085desc", "P1"},                 // next line (NEL)
		{">P1\u200bdesc", "P1\u200bdesc", "P1\u200bdesc"},       // zero-width space is not white space
		{">Pé1\u00a0x", "Pé1\u00a0x", "Pé1"},                    // other non-ASCII letters stay in the ID
		{">\u00a0\u2003", "\u00a0\u2003", ""},                   // only Unicode spaces
		{">", "", ""},                                           // empty header
		{">   ", "", ""},                                        // blanks only
		{"> desc", "desc", "desc"},                              // blanks after '>' are trimmed
		{">P1\xa0desc", "P1\ufffddesc", "P1\ufffddesc"},         // a lone 0xA0 byte is invalid UTF-8, not a space
		{">P1\xc2\xa0\xc2\xa0desc", "P1\u00a0\u00a0desc", "P1"}, // two no-break spaces
	} {
		path := writeFile(t, filepath.Join(t.TempDir(), "h.fa"), []byte(tc.line+"\nMKV\n"))
		recs, err := readAll(t, []string{path}, Options{})
		if err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		if len(recs) != 1 {
			t.Fatalf("%q: %d records, want 1", tc.line, len(recs))
		}
		if recs[0].Header != tc.header || recs[0].ID != tc.id {
			t.Errorf("%q: header %q, id %q; want header %q, id %q", tc.line, recs[0].Header, recs[0].ID, tc.header, tc.id)
		}
		if got := firstWord(tc.header); got != tc.id {
			t.Errorf("firstWord(%q) = %q, want %q", tc.header, got, tc.id)
		}
	}
}

func BenchmarkFirstWord(b *testing.B) {
	h := "sp|P69905|HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens OX=9606 GN=HBA1 PE=1 SV=2"
	for b.Loop() {
		if firstWord(h) != "sp|P69905|HBA_HUMAN" {
			b.Fatal("wrong id")
		}
	}
}
