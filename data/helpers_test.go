package data

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// refParse is a plain line-by-line reading of the FASTA rules, the twin the
// concurrent reader is checked against, with the default caps.
func refParse(source string, data []byte, index int64) []Record {
	return refParseOpts(source, data, index, Options{})
}

// refParseOpts is refParse with the caps of o: it reads every record whole,
// then cuts Seq and Header as the rules say.
func refParseOpts(source string, data []byte, index int64, o Options) []Record {
	o = o.withDefaults()
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a file's byte order mark
	var lines [][]byte
	start := 0
	for i := 0; i < len(data); i++ {
		switch {
		case data[i] == '\n':
			l := data[start:i]
			if len(l) > 0 && l[len(l)-1] == '\r' {
				l = l[:len(l)-1]
			}
			lines = append(lines, l)
			start = i + 1
		case data[i] == '\r' && (i+1 >= len(data) || data[i+1] != '\n'):
			lines = append(lines, data[start:i])
			start = i + 1
		}
	}
	if start < len(data) {
		lines = append(lines, data[start:])
	}
	blank := func(r rune) bool { return r == ' ' || r == '\t' || r == '\v' || r == '\f' }
	var recs []Record
	cur := -1
	for n, l := range lines {
		t := bytes.TrimLeftFunc(l, blank)
		if len(t) > 0 && t[0] == '>' {
			raw := bytes.TrimLeftFunc(t[1:], blank)
			var cut int64
			if len(raw) > o.maxHeader {
				raw, cut = raw[:o.maxHeader], int64(len(raw)-o.maxHeader)
			}
			h := strings.ToValidUTF8(string(bytes.TrimRightFunc(raw, blank)), "\uFFFD")
			id := ""
			if f := strings.FieldsFunc(h, func(r rune) bool { return blank(r) || unicode.IsSpace(r) }); len(f) > 0 {
				id = f[0]
			}
			recs = append(recs, Record{Source: source, Line: n + 1, ID: id, Header: h, Seq: []byte{}, HeaderCut: cut})
			cur = len(recs) - 1
			continue
		}
		var seq []byte
		for _, c := range l {
			if !strings.ContainsRune(" \t\v\f\r\n", rune(c)) {
				seq = append(seq, c)
			}
		}
		if cur < 0 {
			if len(seq) == 0 {
				continue
			}
			recs = append(recs, Record{Source: source, Line: n + 1, Seq: []byte{}, Problem: ProblemBeforeHeader})
			cur = 0
		}
		recs[cur].Seq = append(recs[cur].Seq, seq...)
	}
	for i := range recs {
		r := &recs[i]
		r.Index = index + int64(i)
		r.Total = int64(len(r.Seq))
		keep := o.MaxResidues
		if r.Problem != "" {
			keep = o.maxPreamble
		}
		if keep > 0 && len(r.Seq) > keep {
			r.Seq = r.Seq[:keep]
		}
	}
	return recs
}

// readAll reads every record with the given options, copying Seq.
func readAll(t testing.TB, inputs []string, opts Options) ([]Record, error) {
	t.Helper()
	r, err := Open(context.Background(), inputs, opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var recs []Record
	last := int64(-1)
	for {
		b, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return recs, err
		}
		if len(b.Records) == 0 {
			t.Fatalf("Next returned an empty block")
		}
		for _, rec := range b.Records {
			if rec.Index != last+1 {
				t.Fatalf("Index %d after %d", rec.Index, last)
			}
			last = rec.Index
			rec.Seq = bytes.Clone(rec.Seq)
			recs = append(recs, rec)
		}
	}
}

func diffRecords(t testing.TB, what string, got, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if g.Source != w.Source || g.Line != w.Line || g.Index != w.Index || g.ID != w.ID ||
			g.Header != w.Header || !bytes.Equal(g.Seq, w.Seq) || g.Problem != w.Problem ||
			g.Total != w.Total || g.HeaderCut != w.HeaderCut {
			t.Fatalf("%s: record %d:\n got %s\nwant %s", what, i, fmtRecord(g), fmtRecord(w))
		}
		if !utf8.ValidString(g.ID) || !utf8.ValidString(g.Header) {
			t.Fatalf("%s: record %d: invalid UTF-8", what, i)
		}
	}
}

func fmtRecord(r Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s:%d", r.Index, r.Source, r.Line)
	if r.Problem != "" {
		fmt.Fprintf(&b, " problem=%q", r.Problem)
	}
	fmt.Fprintf(&b, " id=%q header=%q len=%d seq=%q", r.ID, r.Header, len(r.Seq), r.Seq)
	if r.Truncated() {
		fmt.Fprintf(&b, " total=%d", r.Total)
	}
	if r.HeaderCut != 0 {
		fmt.Fprintf(&b, " headercut=%d", r.HeaderCut)
	}
	return b.String()
}

// checkGoroutines fails the test if goroutines started during it are still
// running at its end.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("goroutines: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// synthFASTA writes records with lognormal lengths (median 300) over the 20
// standard residues in 60-column lines until about size bytes.
func synthFASTA(w io.Writer, size int64, seed uint64) (residues int64, err error) {
	const aa = "ACDEFGHIKLMNPQRSTVWY"
	rng := rand.New(rand.NewPCG(seed, 1))
	var buf bytes.Buffer
	var written int64
	for i := 0; written < size; i++ {
		n := max(1, int(math.Exp(math.Log(300)+0.8*rng.NormFloat64())))
		fmt.Fprintf(&buf, ">SYN%07d synthetic protein %d len=%d\n", i, i, n)
		for j := 0; j < n; j++ {
			buf.WriteByte(aa[rng.IntN(len(aa))])
			if j%60 == 59 || j == n-1 {
				buf.WriteByte('\n')
			}
		}
		residues += int64(n)
		written += int64(buf.Len())
		if _, err := w.Write(buf.Bytes()); err != nil {
			return residues, err
		}
		buf.Reset()
	}
	return residues, nil
}

// trickyFASTA is hand-written input with every rule the reader must keep;
// it holds a one-line record of 4*quads residues.
func trickyFASTA(quads int) []byte {
	var b bytes.Buffer
	b.WriteString("\n  \t\nstray TEXT before\r\nMORE\n\n")
	b.WriteString(">r1 first record\r\nACDE FG\tHI\r\n\r\nKLM\r\n")
	b.WriteString(" >r2 leading blank\rMNOP\rQR\r")
	b.WriteString(">\n>   \nAAA\n")
	b.WriteString("\t>r3\tdesc\xff\xfeend  \nA>B\n x>y\n")
	b.WriteString(">long\n")
	b.WriteString(strings.Repeat("LAGV", quads))
	b.WriteString("\n\n\n>nul\nAB\x00CD*\n")
	b.WriteString(strings.Repeat(" \t", 150) + ">blank-run\nAC" + strings.Repeat(" ", 200) + "DE\n")
	b.WriteString(">r1 duplicate\n\v\fXY\n>empty-last")
	return b.Bytes()
}

func writeFile(t testing.TB, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
