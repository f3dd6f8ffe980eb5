package data

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

// FuzzFASTA reads arbitrary bytes through the byte-range path, the stream path (stdin) and, compressed and cut short, the gzip
// path, with small blocks and several caps. The records must equal the
// line-by-line reference applying the same caps; no Seq is longer than its
// cap; the residue counts add up to no more than the input holds; errors name
// the file.
func FuzzFASTA(f *testing.F) {
	f.Add(trickyFASTA(300), uint16(7), uint16(1022), uint8(0))
	f.Add(trickyFASTA(50), uint16(13), uint16(5), uint8(0x35))
	f.Add([]byte(">a\nAC\r\n >b\rD\n\n>\nE"), uint16(1), uint16(1), uint8(1))
	f.Add([]byte("junk\n>x y\n\x00\xff"), uint16(3), uint16(0), uint8(3))
	f.Add([]byte(">h\xc3\xa9\xc3\xa9 d\n\t  \n  \t>"), uint16(2), uint16(2), uint8(0x13))
	f.Add([]byte("\x1f\x8b\x08\x00garbage"), uint16(9), uint16(3), uint8(0))
	f.Add([]byte(strings.Repeat(">\n", 300)), uint16(5), uint16(4), uint8(0))
	f.Add([]byte("A\rB\rC\r>x\rDE\r\r>y"), uint16(4), uint16(2), uint8(5))
	f.Add([]byte(">\u00a0P1\u00a0d\nMK\n>P2\u3000\u2003x\nA\n>\u00a0\nC\n>P3\xc2\n"), uint16(6), uint16(3), uint8(2))
	f.Add([]byte("\xef\xbb\xbf>a\r\nMK\n>b\nV\n\xef\xbb\xbf>c\n"), uint16(2), uint16(5), uint8(0)) // byte order marks
	junk, _ := os.ReadFile(filepath.Join("testdata", "pnnl_JunkTest.fasta"))
	f.Add(junk[:min(len(junk), 2048)], uint16(100), uint16(20), uint8(0x21))
	dir := f.TempDir() // one process runs one input at a time: files are reused
	f.Fuzz(func(t *testing.T, data []byte, bb uint16, maxRes uint16, caps uint8) {
		if len(data) > 2<<10 {
			t.Skip("large inputs make tiny blocks slow; the equivalence tests cover them")
		}
		o := Options{BlockBytes: int(bb%512) + 1, MaxResidues: int(maxRes % 1100)}
		if caps&1 != 0 {
			o.maxHeader = 1 + int(caps>>1&7)
			o.maxPreamble = 1 + int(caps>>4)
		}
		path := filepath.Join(dir, "f.fasta")
		writeFile(t, path, data)
		gz := len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b
		check := func(what string, got []Record, err error) {
			t.Helper()
			if err != nil {
				if !gz {
					t.Fatalf("%s: %v", what, err)
				}
				if !strings.Contains(err.Error(), path) && !strings.Contains(err.Error(), `reading -`) && !strings.Contains(err.Error(), `decompressing -`) {
					t.Fatalf("%s: error %q does not name the input", what, err)
				}
				return
			}
			checkInvariants(t, what, got, o, data, gz)
		}
		want := refParseOpts(path, data, 0, o)
		// Byte ranges are parsed alike whatever the number of workers (the
		// equivalence tests vary it); 2 keeps them concurrent.
		o.Workers = 2
		got, err := readAll(t, []string{path}, o)
		check(fmtCaps(o), got, err)
		if !gz {
			diffRecords(t, fmtCaps(o), got, want)
		}
		// Reads of a few bytes put the stream's chunk boundaries everywhere.
		o.Stdin = &shortReader{r: bytes.NewReader(data), n: 1 + int(bb>>9)%8}
		got, err = readAll(t, []string{"-"}, o)
		check("stdin "+fmtCaps(o), got, err)
		if !gz {
			for i := range want {
				want[i].Source = "-"
			}
			diffRecords(t, "stdin "+fmtCaps(o), got, want)
		}
		if len(data) > 0 {
			z := gzipBytes(t, data, 1)
			cut := writeFile(t, filepath.Join(dir, "cut.gz"), z[:len(z)-1]) // the trailer's last byte missing
			_, err := readAll(t, []string{cut}, o)
			if err == nil || !strings.Contains(err.Error(), cut) {
				t.Fatalf("truncated gzip: %v, want an error naming %s", err, cut)
			}
		}
	})
}

// checkInvariants checks what holds for any input, whatever the reference
// says: caps respected, counts consistent, indexes in order, valid UTF-8.
func checkInvariants(t *testing.T, what string, recs []Record, o Options, data []byte, gz bool) {
	t.Helper()
	o = o.withDefaults()
	var total int64
	for i, r := range recs {
		keep := o.MaxResidues
		if r.Problem != "" {
			keep = o.maxPreamble
		}
		if keep > 0 && len(r.Seq) > keep {
			t.Fatalf("%s: record %d: %d residue bytes kept, cap %d", what, i, len(r.Seq), keep)
		}
		if r.Total < int64(len(r.Seq)) || (keep <= 0 && r.Total != int64(len(r.Seq))) {
			t.Fatalf("%s: record %d: Total %d with %d kept (cap %d)", what, i, r.Total, len(r.Seq), keep)
		}
		if bytes.ContainsAny(r.Seq, " \t\v\f\r\n") {
			t.Fatalf("%s: record %d: whitespace in Seq %q", what, i, r.Seq)
		}
		// Invalid UTF-8 becomes U+FFFD (3 bytes) per run of invalid bytes: at
		// most 3 bytes per kept byte.
		if len(r.Header) > 3*o.maxHeader || r.HeaderCut < 0 || !strings.Contains(r.Header, r.ID) ||
			strings.IndexFunc(r.ID, unicode.IsSpace) >= 0 || (r.ID == "" && strings.TrimFunc(r.Header, unicode.IsSpace) != "") {
			t.Fatalf("%s: record %d: header %q (cut %d), id %q, cap %d", what, i, r.Header, r.HeaderCut, r.ID, o.maxHeader)
		}
		if r.Index != int64(i) || r.Line < 1 {
			t.Fatalf("%s: record %d: %s", what, i, fmtRecord(r))
		}
		total += r.Total
	}
	if !gz && total > int64(countResidues(data)) {
		t.Fatalf("%s: %d residue bytes counted, the input holds %d non-blank bytes", what, total, countResidues(data))
	}
}
